// Two kinds of CPU work, about half the time each: a recursive fib (own code) and JSON encoding.
function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
function buildRecords(n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push({ id: i, sku: "SKU-" + i, tags: ["a", "b", String(i % 7)], stock: { eu: i % 13, us: i % 17 } });
  return out;
}
function encodeReport(records) { return JSON.stringify({ items: records, count: records.length }); }
const records = buildRecords(2000);
const seconds = Number(process.argv[2] || 3);
const end = Date.now() + seconds * 1000;
let n = 0;
while (Date.now() < end) {
  const t0 = Date.now(); while (Date.now() - t0 < 20) fib(18);
  const t1 = Date.now(); while (Date.now() - t1 < 20) n += encodeReport(records).length;
}
console.log(n > 0 ? "done" : "none");
