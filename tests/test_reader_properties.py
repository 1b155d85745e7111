"""Properties of the trace and metric file readers, over inputs hypothesis makes up: whatever the
bytes, a file is read or refused with `InputError`, never another exception; damage to a real
capture is counted, and what a part of the wrong type held is counted rather than lost silently.
"""

from __future__ import annotations

import copy
import gzip
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import zstandard
from hypothesis import HealthCheck, given, settings, strategies as st

from analyzer.model.arrays import PAD, hash_slices
from collectors.otlp_files import InputError
from collectors.otlp_metrics import signals_from_file
from collectors.otlp_traces import load_traces

CORPUS = Path(__file__).parent / "corpus"
GOOD = (CORPUS / "good.jsonl").read_bytes()  # a real SDK capture: two traces of 4 spans
GOOD_SPANS = 8
WORK = Path(tempfile.mkdtemp(prefix="reader-properties-"))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WRAPS = {
    "plain": lambda b: b,
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "zstd": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),
    "framed": lambda b: struct.pack(">I", len(b)) + b,
}


def _load(data: bytes, name: str = "f"):
    """(loaded traces, None) or (None, the InputError); any other exception fails the property."""
    path = WORK / name
    path.write_bytes(data)
    try:
        return load_traces([str(path)]), None
    except InputError as e:
        return None, e


@SETTINGS
@given(data=st.binary(max_size=4096), wrap=st.sampled_from(sorted(WRAPS)))
def test_any_bytes_are_read_or_refused(data, wrap):
    loaded, error = _load(WRAPS[wrap](data))
    assert error is not None or loaded is not None


@SETTINGS
@given(data=st.data(), wrap=st.sampled_from(["plain", "gzip", "zstd"]))
def test_damage_to_a_real_capture_never_raises_and_never_adds(data, wrap):
    raw = bytearray(WRAPS[wrap](GOOD))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= 1 << data.draw(st.integers(0, 7))
    loaded, _ = _load(bytes(raw))
    if loaded is not None:
        assert len(loaded.table) <= GOOD_SPANS


@SETTINGS
@given(data=st.data(), wrap=st.sampled_from(["gzip", "zstd"]))
def test_a_cut_compressed_capture_is_counted_as_damaged(data, wrap):
    raw = WRAPS[wrap](GOOD)
    cut = data.draw(st.integers(1, len(raw) - 1))
    loaded, error = _load(raw[:cut])
    assert error is not None or loaded.sources[0].skipped["damaged_files"] == 1


def _json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                        st.sampled_from(["\ud800", "SPAN_KIND_CLIENT", "ff" * 8, "ff" * 16, "1e400"]))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                        max_leaves=8)


def _one_span_doc() -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]},
        "scopeSpans": [{"scope": {"name": "s"}, "spans": [{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
            "parentSpanId": "00f067aa0ba902b7", "name": "SELECT", "kind": 3,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000",
            "status": {"code": 0},
            "attributes": [{"key": "db.system", "value": {"stringValue": "sqlite"}},
                           {"key": "db.statement", "value": {"stringValue": "SELECT 1"}},
                           {"key": "server.port", "value": {"intValue": "5432"}}]}]}]}]}


# Where a value of any type is put in a valid one-span request: the containers and the fields.
_PLACES = [
    ("resourceSpans",), ("resourceSpans", 0), ("resourceSpans", 0, "resource"),
    ("resourceSpans", 0, "resource", "attributes"), ("resourceSpans", 0, "resource", "attributes", 0, "key"),
    ("resourceSpans", 0, "resource", "attributes", 0, "value"), ("resourceSpans", 0, "scopeSpans"),
    ("resourceSpans", 0, "scopeSpans", 0), ("resourceSpans", 0, "scopeSpans", 0, "spans"),
    ("resourceSpans", 0, "scopeSpans", 0, "spans", 0),
] + [("resourceSpans", 0, "scopeSpans", 0, "spans", 0, k) for k in (
    "traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano", "status",
    "attributes")] + [("resourceSpans", 0, "scopeSpans", 0, "spans", 0, "attributes", i, k)
                      for i in range(3) for k in ("key", "value")]


_CONTAINERS = {("resourceSpans",): list, ("resourceSpans", 0): dict, ("resourceSpans", 0, "scopeSpans"): list,
               ("resourceSpans", 0, "scopeSpans", 0): dict, ("resourceSpans", 0, "scopeSpans", 0, "spans"): list}


@SETTINGS
@given(place=st.sampled_from(_PLACES), value=_json_values())
def test_a_value_of_any_type_anywhere_is_read_or_counted(place, value):
    doc = _one_span_doc()
    node = doc
    for step in place[:-1]:
        node = node[step]
    node[place[-1]] = value
    line = json.dumps(doc).encode() + b"\n"  # (non-finite floats as Infinity/NaN, as Python reads them)
    loaded, error = _load(line)
    assert error is None, error  # the document is OTLP: damage inside is counted, not refused
    stats = loaded.sources[0]
    # The span was read, or something was counted, or the value holds nothing: empty, or a
    # container of the type OTLP/JSON gives that place (whose members may be left out).
    legit_empty = not value or isinstance(value, _CONTAINERS.get(place, ()))
    assert stats.spans == 1 or sum(stats.skipped.values()) > 0 or legit_empty, (stats.skipped, value)
    json.dumps(loaded.table.names + loaded.table.services + loaded.table.statements).encode("utf-8")


@SETTINGS
@given(place=st.sampled_from([(), ("resourceMetrics",), ("resourceMetrics", 0), ("resourceMetrics", 0, "scopeMetrics"),
                              ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 0, "sum"),
                              ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 0, "sum", "dataPoints", 0)]),
       value=_json_values())
def test_a_metrics_file_with_a_value_of_any_type_is_read_or_refused(place, value):
    doc = {"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "a"}}]},
                                "scopeMetrics": [{"metrics": [{"name": "process.cpu.time", "unit": "s", "sum": {
                                    "aggregationTemporality": 2, "isMonotonic": True,
                                    "dataPoints": [{"asDouble": 1.0, "timeUnixNano": "1700000000000000000"}]}}]}]}]}
    if place:
        node = doc
        for step in place[:-1]:
            node = node[step]
        node[place[-1]] = copy.deepcopy(value)
    else:
        doc = value
    path = WORK / "metrics.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    try:
        signals_from_file(path)
    except InputError:
        pass


@SETTINGS
@given(texts=st.lists(st.binary(max_size=700), min_size=1, max_size=12), pad=st.integers(0, 9), data=st.data())
def test_a_string_hash_depends_on_its_bytes_alone(texts, pad, data):
    # Memos keep hashes across batches: where a string sits and what is beside it must not matter,
    # including strings long enough to be summed rather than chained (past 256 bytes).
    texts = texts + [data.draw(st.binary(min_size=257, max_size=3000))]
    order = data.draw(st.permutations(range(len(texts))))

    def hashes(items: list[bytes], gap: int) -> np.ndarray:
        blob = b"".join(b"\xaa" * gap + t for t in items)
        buf = np.zeros(len(blob) + PAD, np.uint8)
        buf[:len(blob)] = np.frombuffer(blob, np.uint8)
        lengths = np.array([len(t) for t in items], np.int64)
        starts = np.cumsum(lengths + gap) - lengths
        return hash_slices(buf, starts, lengths)

    alone = {t: int(hashes([t], 0)[0]) for t in texts}
    together = hashes([texts[i] for i in order], pad)
    assert [int(h) for h in together] == [alone[texts[i]] for i in order]
    assert len(set(alone.values())) == len(alone)  # distinct strings, distinct hashes
