"""OTLP protobuf trace requests into SpanTable batches, without per-span Python work.

Requests are gathered into chunks of about `CHUNK_BYTES`, one numpy buffer each: large enough
that the fixed cost of an array operation is paid per thousands of spans, small enough that a
chunk's arrays stay in the CPU's L2 cache. A request larger than a chunk is cut into its
ResourceSpans first. The request and ResourceSpans framing is walked in Python, down to the
first span of each ScopeSpans; where every span starts is found for the whole chunk with numpy
(`protowire.field_runs`, span by span in Python where that does not apply), and the spans
themselves are read with numpy (`span_wire`), up to `SPAN_GROUP` at a time.

What the attributes decide is derived once per distinct value, never per span:
- the attributes that repeat (db system, host, port, code location...) are hashed per span into
  a signature (`_signatures`); `derive_base` runs once per new signature;
- statements and URLs carry per-request literals: each distinct one is normalized once, and
  SQL statements that differ only in their numbers are normalized once for all of them
  (`analyzer.model.statement.shape_keys`);
- names are hashed and interned once per distinct name.

Damage: a request or ResourceSpans whose framing does not decode is skipped and counted
(`invalid_messages`); a span that does not decode is skipped alone (`invalid_spans`); ids are
checked as in the JSON reader (`bad_ids`, `bad_parent_id`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from google.protobuf.message import DecodeError
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from analyzer.model import semconv as sc
from analyzer.model.arrays import PAD, dense_ranks, hash_slices, mix
from analyzer.model.spans import Kind, SpanClass
from analyzer.model.statement import shape_keys
from analyzer.model.table import Batch
from collectors import protowire as pw
from collectors import span_wire as sw
from collectors.otlp_files import SourceStats, strings_cut
from collectors.wire_keys import KeyTable

if TYPE_CHECKING:
    from collectors.otlp_traces import TraceDecoder

CHUNK_BYTES = 4 << 20
SPAN_GROUP = 1 << 14
_RESOURCE_SPANS, _RESOURCE, _SCOPE_SPANS, _SPANS = 1, 1, 2, 2
_SPAN_TAG = (_SPANS << 3) | pw.LEN
_SPAN_HEAD = 0x100A  # a span as encoders write it starts with its trace id: bytes 0A 10, as a little-endian uint16
_ENTRY = (int(Kind.SERVER), int(Kind.CONSUMER))
NO_PEER = -2  # derive_base's peer when no host attribute names it: look at the URL
MEMO_LIMIT = 1 << 20  # distinct names, statements, URLs and signatures remembered across chunks

# The attribute keys the analysis reads, each with an index, and which of them carry per-request
# values (read by value) rather than repeating ones (hashed into the span's signature).
KEYS = sorted(sc.SPAN_KEYS)
_KEY_INDEX = {k: i for i, k in enumerate(KEYS)}
_STATEMENT_KEYS = [_KEY_INDEX[k] for k in sc.DB_STATEMENT]  # preferred first
_URL_KEYS = [_KEY_INDEX[k] for k in sc.URL]
_VOLATILE = np.zeros(len(KEYS), dtype=bool)
_VOLATILE[_STATEMENT_KEYS + _URL_KEYS] = True
_KEY_SALT = mix(np.arange(1, len(KEYS) + 1, dtype=np.uint64) * np.uint64(0xD6E8FEB86659FD93))


_KEY_TABLE = KeyTable([k.encode() for k in KEYS])


_RESOURCE_KEYS = frozenset((sc.SERVICE_NAME, sc.PROCESS_RUNTIME_NAME, sc.TELEMETRY_SDK_LANGUAGE,
                            *sc.DEPLOYMENT_ENVIRONMENT))

_WANTED_LEN = np.zeros(256, dtype=bool)
_WANTED_LEN[[len(k.encode()) for k in KEYS]] = True


class ProtoTraces:
    """Gathers requests of one source into chunks and decodes each into the decoder's builder."""

    def __init__(self, decoder: TraceDecoder) -> None:
        self.d = decoder
        self._pending: list[bytes] = []  # requests, or pieces of a large one
        self._numbers: list[int] = []  # the number of the message each came from, for notes
        self._pending_bytes = 0
        self._stats: SourceStats | None = None
        self._resources: dict[bytes, tuple[int, int]] = {}
        self._buffer: np.ndarray | None = None  # the chunk buffer, reused
        self._names = _Memo(1)
        self._signatures = _Memo(1)  # -> index in _bases
        self._bases: list[tuple] = []  # (class, db system, summary code, peer, code location, port)
        self._statements = _Memo(2)  # -> (statement code, cache key code)
        self._urls = _Memo(1)  # (URL, signature) -> peer code

    def add(self, data: bytes, stats: SourceStats) -> None:
        if stats is not self._stats:
            self.flush()
            self._stats = stats
        bounds = _resource_spans_pieces(data) if len(data) > CHUNK_BYTES else [(0, len(data))]
        if bounds is None:
            stats.skipped["invalid_messages"] += 1
            stats.note(f"message {stats.messages}: not a valid ExportTraceServiceRequest (its framing does not decode)")
            return
        for begin, end in bounds:
            piece = data if end - begin == len(data) else data[begin:end]  # copied a chunk at a time
            self._pending.append(piece)
            self._numbers.append(stats.messages)
            self._pending_bytes += len(piece)
            if self._pending_bytes >= CHUNK_BYTES:
                self.flush()

    def flush(self) -> None:
        """Decode what has been gathered (call at the end of each source)."""
        if not self._pending:
            return
        messages, numbers, stats = self._pending, self._numbers, self._stats
        self._pending, self._numbers, self._pending_bytes = [], [], 0
        assert stats is not None
        size = sum(map(len, messages)) + PAD
        if size <= 2 * CHUNK_BYTES and (self._buffer is None or self._buffer.shape[0] < size):
            self._buffer = np.empty(2 * CHUNK_BYTES, np.uint8)  # kept for the chunks to come
        buf, offsets = pw.padded(messages, self._buffer)
        starts, services, environments = self._frame(buf, messages, numbers, offsets.tolist(), stats)
        lengths = pw.lengths_before(buf, starts)
        del messages
        for a in range(0, starts.shape[0], SPAN_GROUP):
            s = starts[a:a + SPAN_GROUP]
            self._spans(buf, s, s + lengths[a:a + SPAN_GROUP], services[a:a + SPAN_GROUP],
                        environments[a:a + SPAN_GROUP], stats)

    # -- framing ----------------------------------------------------------------------
    def _frame(self, buf: np.ndarray, messages: list[bytes], numbers: list[int], offsets: list[int],
               stats: SourceStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each span starts in the chunk `buf`, its service code and its environment code.

        The requests, ResourceSpans and the fields of each ScopeSpans before its first span are
        walked in Python; the spans of every ScopeSpans are found at once with numpy
        (`protowire.field_runs`), and those of a ScopeSpans laid out otherwise one by one."""
        firsts: list[int] = []  # per ScopeSpans with spans: where its first span field starts in `buf`
        ends: list[int] = []  # where it ends
        plan = []
        for m, base in zip(messages, offsets):
            top = pw.walk(m, 0, len(m), (_RESOURCE_SPANS,))
            plan.append(None if top is None else
                        [_scopes(m, at, at + length, base, firsts, ends) for _, _, at, length in top])
        size = offsets[-1] + len(messages[-1])
        found, region, tiled, run_end = pw.field_runs(buf, size, _SPAN_TAG, _SPAN_HEAD, np.array(firsts, np.int64),
                                                      np.array(ends, np.int64))
        bounds = np.searchsorted(region, np.arange(len(firsts) + 1)).tolist()
        runs = [found[i:j] if ok else None for i, j, ok in zip(bounds[:-1], bounds[1:], tiled.tolist())]
        run_ends = run_end.tolist()
        parts: list[np.ndarray] = []
        per_resource: list[int] = []
        codes: list[tuple[int, int]] = []
        for m, base, number, resources in zip(messages, offsets, numbers, plan):
            if resources is None:
                stats.skipped["invalid_messages"] += 1
                stats.note(f"message {number}: not a valid ExportTraceServiceRequest (its framing does not decode)")
                continue
            for scopes in resources:
                spans = None if scopes is None else _scope_spans(m, base, scopes[1], firsts, ends, runs, run_ends)
                service = None if spans is None else self._service(scopes[0])
                if service is None:
                    stats.skipped["invalid_messages"] += 1
                    stats.note(f"message {number}: a resource_spans does not decode; its spans skipped")
                    continue
                parts.extend(spans)
                per_resource.append(sum(x.shape[0] for x in spans))
                codes.append(service)
        resources = np.array(codes, dtype=np.int32).reshape(-1, 2)
        starts = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return starts, np.repeat(resources[:, 0], per_resource), np.repeat(resources[:, 1], per_resource)

    def _service(self, raw: bytes) -> tuple[int, int] | None:
        code = self._resources.get(raw)
        if code is None:
            try:
                res = Resource.FromString(raw)
            except DecodeError:
                return None
            code = self.d.resource({kv.key: kv.value.string_value for kv in res.attributes if kv.key in _RESOURCE_KEYS})
            if len(self._resources) < MEMO_LIMIT:
                self._resources[raw] = code
        return code

    # -- spans ------------------------------------------------------------------------
    def _spans(self, buf: np.ndarray, s: np.ndarray, e: np.ndarray, service: np.ndarray, environment: np.ndarray,
               stats: SourceStats) -> None:
        sp = sw.read_spans(buf, s, e, skip_kinds=_ENTRY)
        unreadable = int((~sp.readable).sum())
        if unreadable:
            stats.skipped["invalid_spans"] += unreadable
            stats.note(f"{unreadable} span(s) whose bytes or status do not decode; skipped")
        bad_ids = int((sp.readable & ~sp.ids_ok).sum())
        if bad_ids:
            stats.skipped["bad_ids"] += bad_ids
            stats.note(f"{bad_ids} span(s) with a trace id or span id of the wrong length or all zero; skipped")
        keep = sp.readable & sp.ids_ok
        bad_parents = int((keep & ~sp.parent_ok).sum())
        if bad_parents:
            stats.repaired["bad_parent_id"] += bad_parents
        rows = np.flatnonzero(keep)
        n = rows.shape[0]
        if not n:
            return
        kind = sp.kind[rows]
        derived = self._derive(buf, sp, rows, kind, stats)
        self.d.b.add(Batch(
            service=service[rows], environment=environment[rows], trace_hi=sp.trace_hi[rows], trace_lo=sp.trace_lo[rows],
            span_id=sp.span_id[rows], parent_id=sp.parent_id[rows],
            name=self._name_codes(buf, sp.name_start[rows], self._kept(sp.name_len[rows], stats)).astype(np.int32),
            kind=kind.astype(np.int8),
            start=sp.start[rows], end=sp.end[rows], status=sp.status[rows].astype(np.int8), **derived))
        stats.spans += n

    def _kept(self, length: np.ndarray, stats: SourceStats) -> np.ndarray:
        """String lengths cut to the string limit (counted, `truncated_strings`)."""
        cap = self.d.limits.string
        over = int(np.count_nonzero(length > cap))
        if not over:
            return length
        strings_cut(stats, over, self.d.limits)
        return np.minimum(length, cap)

    def _name_codes(self, buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        names = self.d.b.names
        return self._names.resolve(hash_slices(buf, start, length),
                                   lambda rows: [names.code(t) for t in _texts(buf, start[rows], length[rows])])[:, 0]

    # -- what the attributes decide ------------------------------------------------------
    def _derive(self, buf: np.ndarray, sp: sw.Spans, rows: np.ndarray, kind: np.ndarray, stats: SourceStats
                ) -> dict[str, np.ndarray]:
        """The derived columns (span class, db system, statement, peer, code location, cache key)
        of the spans `rows`; entry spans (SERVER, CONSUMER) are not looked into."""
        n = rows.shape[0]
        out = {"span_class": np.full(n, int(SpanClass.INTERNAL), np.int8)}
        for name in ("db_system", "statement", "peer", "code_location", "cache_key"):
            out[name] = np.full(n, -1, np.int32)
        entry = np.isin(kind, _ENTRY)
        inner = np.flatnonzero(~entry)
        if not inner.shape[0]:
            return out
        row, key, at, length, value_at = self._attributes(buf, sp, rows)
        volatile = _VOLATILE[key]
        r = np.flatnonzero(~volatile)  # the repeating attributes, which decide the base
        repeating = row[r], key[r], at[r], length[r]
        sig = _signatures(buf, *repeating, value_at[r], n, kind)
        base = self._signatures.resolve(sig[inner], lambda reps: self._new_bases(buf, repeating, inner[reps], kind))[:, 0]
        table = np.array([b[:5] for b in self._bases], dtype=np.int32).reshape(-1, 5)
        out["span_class"][inner] = table[base, 0]
        out["db_system"][inner] = table[base, 1]
        out["statement"][inner] = table[base, 2]  # the summary; a statement attribute replaces it below
        out["peer"][inner] = table[base, 3]
        out["code_location"][inner] = table[base, 4]

        # Statements and URLs are read by value.
        v = np.flatnonzero(volatile)
        vkind, vs, vl, vint = _values(buf, at[v], length[v])
        values = vkind, vs, self._kept(vl, stats), vint
        self._statements_into(out, buf, row[v], key[v], values)
        self._url_peers_into(out, buf, row[v], key[v], values, inner, base)
        return out

    def _statements_into(self, out: dict[str, np.ndarray], buf: np.ndarray, a_row: np.ndarray, key: np.ndarray,
                         values: tuple[np.ndarray, ...]) -> None:
        """Statement and cache key codes of the spans with a statement attribute (over their summary),
        from their statement and URL attributes (`a_row`: each one's span, `key`: its key index, and
        `values`)."""
        vkind, vs, vl, vint = values
        stmt = _chosen(a_row, key, _STATEMENT_KEYS, out["statement"].shape[0], vkind != sw.NONE)
        has = np.flatnonzero(stmt >= 0)
        if not has.shape[0]:
            return
        r = stmt[has]
        is_cache = out["span_class"][has] == int(SpanClass.CACHE)
        # Cache commands by their exact text (the key is part of what is derived); SQL by its
        # shape key, so statements differing only in numbers are normalized once.
        is_sql = ~is_cache & (vkind[r] == sw.STRING)
        h = np.empty(r.shape[0], np.uint64)
        sql, other = np.flatnonzero(is_sql), np.flatnonzero(~is_sql)
        h[sql] = shape_keys(buf, vs[r[sql]], vl[r[sql]]) ^ _SQL_SALT
        h[other] = _value_hashes(buf, vkind[r[other]], vs[r[other]], vl[r[other]], vint[r[other]])

        def derive(firsts: np.ndarray) -> list[tuple[int, int]]:
            texts = _value_texts(buf, values, r[firsts])
            return [self.d.new_statement_codes(t, c) for t, c in zip(texts, is_cache[firsts].tolist())]

        codes = self._statements.resolve(h, derive)
        out["statement"][has] = codes[:, 0]
        out["cache_key"][has] = codes[:, 1]

    def _url_peers_into(self, out: dict[str, np.ndarray], buf: np.ndarray, a_row: np.ndarray, key: np.ndarray,
                        values: tuple[np.ndarray, ...], inner: np.ndarray, base: np.ndarray) -> None:
        """Peers from the URL, for the spans whose attributes name no host (`NO_PEER`), from their
        statement and URL attributes as for `_statements_into`."""
        vkind, vs, vl, _ = values
        no_peer = inner[out["peer"][inner] == NO_PEER]
        out["peer"][no_peer] = -1
        url = _chosen(a_row, key, _URL_KEYS, out["peer"].shape[0], vkind == sw.STRING)
        has = no_peer[url[no_peer] >= 0]
        if not has.shape[0]:
            return
        r = url[has]
        base_of = base[np.searchsorted(inner, has)]  # each span's base, for its port
        pairs = mix(hash_slices(buf, vs[r], vl[r]) ^ mix(base_of.astype(np.uint64) + np.uint64(1)))

        def derive(firsts: np.ndarray) -> list[int]:
            urls = _texts(buf, vs[r[firsts]], vl[r[firsts]])
            return [self.d.peer_of_url(u, self._bases[b][5]) for u, b in zip(urls, base_of[firsts].tolist())]

        out["peer"][has] = self._urls.resolve(pairs, derive)[:, 0]

    def _attributes(self, buf: np.ndarray, sp: sw.Spans, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """The attributes the analysis reads, of the non-entry spans among `rows`, in reading order:
        per attribute (row, key index, where its KeyValue starts, its length, where its value field
        starts in it when the key comes first as encoders write it, else 0)."""
        if rows.shape[0] == sp.kind.shape[0]:  # every span kept (read_spans reports no entry span's attributes)
            a_row, s, length = sp.attr_span, sp.attr_start, sp.attr_len
        else:
            pos = np.full(sp.kind.shape[0], -1, np.int64)
            pos[rows] = np.arange(rows.shape[0])
            a_row = pos[sp.attr_span]
            sel = np.flatnonzero(a_row >= 0)
            a_row, s, length = a_row[sel], sp.attr_start[sel], sp.attr_len[sel]
        # A KeyValue as encoders write it starts `0A <key length> key`.
        key_len = buf[s + 1]
        plain = (buf[s] == 0x0A) & (key_len < 0x80) & (length >= key_len + 2)
        cand = np.flatnonzero(plain & _WANTED_LEN[key_len])
        key_len = key_len[cand]
        key = _KEY_TABLE.find(buf, s[cand] + 2, key_len)
        hit = key >= 0
        which, key, value_at = cand[hit], key[hit], key_len[hit].astype(np.int64) + 2
        odd = np.flatnonzero(~plain)
        if odd.shape[0]:  # any other layout (value first, keys of 128 bytes or more): field by field
            kv = sw.read_key_values(buf, s[odd], length[odd])
            k = np.full(odd.shape[0], -1, np.int64)
            known = np.flatnonzero(kv.readable & _WANTED_LEN[np.minimum(kv.key_len, 255)])
            k[known] = _KEY_TABLE.find(buf, kv.key_start[known], kv.key_len[known])
            which = np.concatenate([which, odd[k >= 0]])
            key = np.concatenate([key, k[k >= 0]])
            value_at = np.concatenate([value_at, np.zeros(int(np.count_nonzero(k >= 0)), np.int64)])
            order = np.argsort(which, kind="stable")  # reading order: of a key given twice, the last counts
            which, key, value_at = which[order], key[order], value_at[order]
        return a_row[which], key, s[which], length[which], value_at

    def _new_bases(self, buf: np.ndarray, repeating: tuple[np.ndarray, ...], reps: np.ndarray,
                   kind: np.ndarray) -> list[int]:
        """Derive the base of each span in `reps` (one per signature not seen before) from its
        `repeating` attributes (span, key index, KeyValue start and length); their indices in `_bases`."""
        a_row, key, kv_start, kv_len = repeating
        found: dict[int, dict[str, object]] = {int(r): {} for r in reps.tolist()}
        is_rep = np.zeros(kind.shape[0], dtype=bool)
        is_rep[reps] = True
        b = np.flatnonzero(is_rep[a_row])
        vkind, vs, vl, vint = _values(buf, kv_start[b], kv_len[b])
        for row, k, vk, text, number in zip(a_row[b].tolist(), key[b].tolist(), vkind.tolist(), _texts(buf, vs, vl),
                                            vint.tolist()):
            if vk != sw.NONE:
                found[row][KEYS[k]] = text if vk == sw.STRING else number
        out = []
        for rep in reps.tolist():
            cls, db_system, summary, peer, port, location = self.d.base_of(int(kind[rep]), found[rep])
            out.append(len(self._bases))
            self._bases.append((cls, db_system, self.d.b.statements.code(summary) if summary else -1, peer, location,
                                port))
        return out


def _resource_spans_pieces(data: bytes) -> list[tuple[int, int]] | None:
    """Where to cut a large request into requests of one ResourceSpans each (a run of whole
    fields is a request too), so that it is decoded in chunks like many small ones. None when its
    framing does not decode."""
    fields = pw.walk(data, 0, len(data), (_RESOURCE_SPANS,))
    if fields is None:
        return None
    bounds, begin = [], 0
    for number, wire, at, length in fields:
        if number == _RESOURCE_SPANS and wire == pw.LEN:
            bounds.append((begin, at + length))
            begin = at + length
    if begin < len(data):
        bounds.append((begin, len(data)))
    return bounds


def _scopes(m: bytes, a: int, b: int, base: int, firsts: list[int], ends: list[int]
            ) -> tuple[bytes, list[int]] | None:
    """The resource of the ResourceSpans `m[a:b]` and, appended to `firsts` and `ends` (at `base`
    in the chunk), where the spans of each of its ScopeSpans begin and end: their indices there.
    None when its framing, or that of a ScopeSpans before its first span, does not decode."""
    fields = pw.walk(m, a, b, (_RESOURCE, _SCOPE_SPANS))
    if fields is None:
        return None
    resource = b""
    regions = []
    for number, _, at, length in fields:
        if number == _RESOURCE:
            resource = m[at:at + length]
            continue
        first = pw.first_field(m, at, at + length, _SPANS)
        if first is None:
            return None
        if first < at + length:
            regions.append(len(firsts))
            firsts.append(base + first)
            ends.append(base + at + length)
    return resource, regions


def _scope_spans(m: bytes, base: int, regions: list[int], firsts: list[int], ends: list[int],
                 runs: list[np.ndarray | None], run_ends: list[int]) -> list[np.ndarray] | None:
    """Where the spans of the ScopeSpans `regions` start in the chunk: the run `field_runs` found,
    then what follows it read field by field (all of it where no run was found). None when a
    ScopeSpans does not decode."""
    out = []
    for r in regions:
        run = runs[r]
        at = firsts[r] if run is None else run_ends[r]
        if run is not None:
            out.append(run)
        if at < ends[r]:
            rest: list[int] = []
            if not pw.len_fields(m, at - base, ends[r] - base, _SPANS, rest):
                return None
            out.append(np.array(rest, dtype=np.int64) + base)
    return out


class _Memo:
    """What was derived for a hash before: a batch of hashes is looked up with searchsorted, and
    `make` runs once per distinct hash not seen before.

    The hashes are kept in sorted levels, each more than twice the size of the next: a batch's new
    hashes become the last level, merged with those before it while they are not more than twice
    its size. One sorted array would be copied whole for every batch with a new hash: the
    statements of a 10M-span input (300k distinct cache commands) then cost 16x their 1M time.
    With levels each hash is copied a logarithmic number of times."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.levels: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, their codes), largest first
        self.size = 0

    def resolve(self, h: np.ndarray, make) -> np.ndarray:
        """Codes (n, width) of hashes `h`. `make(rows)` gets the first row of each new distinct
        hash, in order of appearance, and returns their codes."""
        out = np.empty((h.shape[0], self.width), np.int64)
        miss = np.arange(h.shape[0])
        for keys, codes in self.levels:
            if not miss.shape[0]:
                break
            q = h[miss]
            at = np.minimum(np.searchsorted(keys, q), keys.shape[0] - 1)
            hit = keys[at] == q
            out[miss[hit]] = codes[at[hit]]
            miss = miss[~hit]
        if miss.shape[0]:
            rank, first = _distinct(h[miss])
            new = np.array(make(miss[first]), dtype=np.int64).reshape(first.shape[0], -1)
            out[miss] = new[rank]
            if self.size < MEMO_LIMIT:
                self._remember(h[miss[first]], new)
        return out

    def _remember(self, keys: np.ndarray, codes: np.ndarray) -> None:
        self.size += keys.shape[0]
        order = np.argsort(keys)
        keys, codes = keys[order], codes[order]
        while self.levels and self.levels[-1][0].shape[0] <= 2 * keys.shape[0]:
            last_keys, last_codes = self.levels.pop()
            keys, codes = np.concatenate([last_keys, keys]), np.concatenate([last_codes, codes])
            order = np.argsort(keys, kind="stable")  # two sorted runs: merged in linear time
            keys, codes = keys[order], codes[order]
        self.levels.append((keys, codes))


_SQL_SALT = np.uint64(0x8CB92BA72F3D8DD7)  # keeps shape keys apart from exact-text hashes
_KIND_SALT = 0x5851F42D4C957F2D
_INT_SALT = np.uint64(0x2545F4914F6CDD1D)


def _value_hashes(buf: np.ndarray, vkind: np.ndarray, vs: np.ndarray, vl: np.ndarray, vint: np.ndarray) -> np.ndarray:
    """A hash per attribute value: of the string's bytes, or of the integer."""
    h = mix(vint.view(np.uint64) ^ _INT_SALT)
    s = np.flatnonzero(vkind == sw.STRING)
    h[s] = hash_slices(buf, vs[s], vl[s])
    return h


def _distinct(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's distinct value, numbered in order of first appearance, and the row where each
    first appears."""
    rank, k = dense_ranks(h)
    first = np.full(k, -1, np.int64)
    first[rank[::-1]] = np.arange(rank.shape[0] - 1, -1, -1)
    order = np.argsort(first)
    renumber = np.empty(k, np.int64)
    renumber[order] = np.arange(k)
    return renumber[rank], first[order]


def _chosen(a_row: np.ndarray, key: np.ndarray, keys: list[int], n: int, usable: np.ndarray) -> np.ndarray:
    """Per span, the attribute (index) holding the first of `keys` it has, -1 if none; of a key
    given twice, the later one (as a dict built from the attributes would keep)."""
    out = np.full(n, -1, np.int64)
    for k in reversed(keys):
        r = np.flatnonzero((key == k) & usable)
        out[a_row[r]] = r
    return out


def _texts(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> list[str]:
    """The UTF-8 strings at `buf[start:start+length]` (undecodable bytes replaced)."""
    view = memoryview(buf)
    return [str(view[a:a + n], "utf-8", "replace") for a, n in zip(start.tolist(), length.tolist())]


def _signatures(buf: np.ndarray, a_row: np.ndarray, key: np.ndarray, kv_start: np.ndarray, kv_len: np.ndarray,
                value_at: np.ndarray, n: int, kind: np.ndarray) -> np.ndarray:
    """Per span, a hash of its kind and of the bytes of its repeating attributes (span `a_row`,
    key index `key`, KeyValue at `kv_start` of `kv_len` bytes, its value field at `value_at` in it
    or 0), whatever their order: spans with equal signatures derive the same class, system, peer
    and location. Where the key comes first, the value field is hashed, salted by the key."""
    h = hash_slices(buf, kv_start + value_at, kv_len - value_at) ^ np.where(value_at > 0, _KEY_SALT[key], np.uint64(0))
    sig = np.zeros(n, np.uint64)
    np.add.at(sig, a_row, mix(h))
    return mix(sig ^ mix(kind.astype(np.uint64) + np.uint64(_KIND_SALT)))


def _values(buf: np.ndarray, s: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, ...]:
    """(kind, string start, string length, integer) of the values of KeyValues at `buf[s:s+length]`
    (`span_wire.read_values`), usually laid out `0A <key length> key 12 <value length> value`."""
    key_len = buf[s + 1]
    v = np.minimum(s + 2 + key_len, s + length)  # (a key length byte of another layout can point past it)
    vlen, vstart, short = sw.length_at(buf, v)
    plain = (buf[s] == 0x0A) & (key_len < 0x80) & (buf[v] == 0x12) & short & (vstart + vlen == s + length)
    odd = np.flatnonzero(~plain)
    if odd.shape[0]:
        kv = sw.read_key_values(buf, s[odd], length[odd])
        vstart[odd] = np.where(kv.readable, kv.value_start, 0)
        vlen[odd] = np.where(kv.readable, kv.value_len, 0)
    return sw.read_values(buf, vstart, vlen)


def _value_texts(buf: np.ndarray, values: tuple[np.ndarray, ...], rows: np.ndarray) -> list[str]:
    """The values of attributes `rows` as the text a statement is read from (an integer in decimal)."""
    vkind, vs, vl, vint = values
    texts = _texts(buf, vs[rows], vl[rows])
    return [t if k == sw.STRING else str(i) for t, k, i in zip(texts, vkind[rows].tolist(), vint[rows].tolist())]
