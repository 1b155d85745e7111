// Allocation-heavy Node.js service: every request builds short-lived objects and keeps the
// last few requests' objects alive, so they survive scavenges and major mark-compacts run
// often on the single event-loop thread. prom-client's default metrics export the GC time
// (nodejs_gc_duration_seconds), event-loop lag and process CPU; requests are counted.
'use strict';
const http = require('http');
const client = require('prom-client');

client.collectDefaultMetrics({ eventLoopMonitoringPrecision: 10 });
const requests = new client.Counter({ name: 'http_requests_total', help: 'Requests served.' });

const KEEP = 4;            // requests whose objects stay alive (promoted to old space)
const OBJECTS = 30000;     // objects allocated per request
const kept = [];

function work() {
  const batch = new Array(OBJECTS);
  for (let i = 0; i < OBJECTS; i++) batch[i] = { id: i, tags: [i, i + 1] };
  kept.push(batch);
  if (kept.length > KEEP) kept.shift();
  return batch.length;
}

const server = http.createServer(async (req, res) => {
  if (req.url === '/metrics') {
    res.setHeader('Content-Type', client.register.contentType);
    res.end(await client.register.metrics());
    return;
  }
  const n = work();
  requests.inc();
  res.end(String(n));
});
server.listen(Number(process.argv[2]), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
