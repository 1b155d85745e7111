"""Reading OTLP export files: format detection, framing, compression, directories.

Formats, told apart by content rather than file name:
- JSON lines, one Export*ServiceRequest per line, as the Collector's file exporter writes
  them (a pretty-printed single JSON document is accepted too);
- the file exporter's `proto` format: each message preceded by a 4-byte big-endian length;
- the same framing with each message zstd-compressed (the exporter's `compression: zstd`,
  which applies to JSON messages too);
- a single serialized Export*ServiceRequest;
- any of them gzip-compressed, or zstd-compressed as a whole stream.

`iter_messages` yields each message as ("proto", bytes) or ("json", dict) without holding
the file in memory (except a single unframed protobuf message, which has no framing to
stream by). Damaged messages are counted in the source's `SourceStats`, never raised.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from collectors.protowire import walk

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The largest frame we accept: the Collector's default gRPC limit is 4 MiB, 64 MiB is generous.
MAX_FRAME = 64 << 20
# A single unframed protobuf message or JSON document must fit in memory to be parsed at all.
MAX_SINGLE = 2 << 30


class InputError(Exception):
    """The input cannot be used at all (missing, unreadable, or not OTLP). One line, user-facing."""


@dataclass
class SourceStats:
    """What one file contributed, for the report's `input` section."""

    path: str
    format: str = "unknown"
    messages: int = 0
    spans: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> spans or messages skipped
    repaired: Counter = field(default_factory=Counter)  # reason -> spans repaired
    errors: list[str] = field(default_factory=list)  # first few messages about damage
    sampling: dict | None = None  # how the traces were sampled (collectors/sampling.py `Sample.report`)
    pushdown: dict | None = None  # what a store computed over the whole window (collectors/clickhouse_traces.py)

    def note(self, message: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(message)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "messages": self.messages,
            "spans": self.spans,
            "skipped": dict(self.skipped),
            "repaired": dict(self.repaired),
            "errors": list(self.errors),
            **({"sampling": self.sampling} if self.sampling is not None else {}),
            **({"pushdown": self.pushdown} if self.pushdown is not None else {}),
        }


def expand_paths(paths: list[str]) -> list[tuple[Path, bool]]:
    """(file, found in a directory) for the files named and every regular file below named
    directories (rotated files included), sorted."""
    out: list[tuple[Path, bool]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            if not files:
                raise InputError(f"{raw}: directory holds no files")
            out.extend((f, True) for f in files)
        elif p.is_file():
            out.append((p, False))
        elif p.exists():
            raise InputError(f"{raw}: not a regular file")
        else:
            raise InputError(f"{raw}: no such file or directory")
    return out


def _open_decompressed(path: Path) -> BinaryIO:
    raw = open(path, "rb")
    head = raw.read(4)
    raw.seek(0)
    if head[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if head == ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    return raw


def iter_messages(path: Path, stats: SourceStats) -> Iterator[tuple[str, object]]:
    """Yield the messages of one OTLP file; raises InputError when it is not OTLP at all."""
    try:
        stream = _open_decompressed(path)
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror or e}") from e
    with stream:
        reader = io.BufferedReader(stream, buffer_size=1 << 20) if not isinstance(stream, io.BufferedReader) else stream
        try:
            head = reader.peek(16)[:16]
        except (OSError, EOFError, zstandard.ZstdError) as e:
            raise InputError(f"{path}: cannot decompress: {e}") from e
        if not head.strip():
            stats.format = "empty"
            stats.note("file is empty")
            return
        kind = _detect(head)
        if kind == "json":
            yield from _json_lines(reader, path, stats)
        elif kind == "framed":
            yield from _framed(reader, path, stats)
        elif kind == "proto":
            stats.format = "otlp-proto"
            data = reader.read(MAX_SINGLE + 1)
            if len(data) > MAX_SINGLE:
                raise InputError(f"{path}: a single protobuf message over {MAX_SINGLE >> 30} GiB; use the framed format")
            stats.messages += 1
            yield "proto", data
        else:
            raise InputError(f"{path}: not an OTLP file (neither OTLP JSON, framed OTLP protobuf nor an OTLP protobuf message)")


def _detect(head: bytes) -> str:
    first = head.lstrip()[:1]
    if first in (b"{", b"[") and (head[:1] != b"\n" or _json_object_start(head)):
        return "json"
    if len(head) >= 5:
        (length,) = struct.unpack(">I", head[:4])
        payload = head[4:]
        if 0 < length <= MAX_FRAME and (payload[:1] in (b"\x0a", b"{") or payload[:4] == ZSTD_MAGIC):
            return "framed"
    if head[:1] == b"\x0a":  # field 1 (resource_spans / resource_metrics), length-delimited
        return "proto"
    return "unknown"


def _json_lines(reader: BinaryIO, path: Path, stats: SourceStats) -> Iterator[tuple[str, object]]:
    stats.format = "otlp-json-lines"
    first = reader.readline()
    if first.strip() in (b"{", b"["):
        # A pretty-printed single document rather than one document per line.
        stats.format = "otlp-json"
        data = first + reader.read(MAX_SINGLE)
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise InputError(f"{path}: invalid JSON document ({e})") from e
        yield from _json_doc(doc, path, stats)
        return
    try:
        doc = json.loads(first)
    except ValueError:
        yield from _json_line(first, 1, stats)  # counts and notes the damaged line
    else:
        yield from _json_doc(doc, path, stats)
    for lineno, line in enumerate(reader, start=2):
        yield from _json_line(line, lineno, stats)


def _json_line(line: bytes, lineno: int, stats: SourceStats) -> Iterator[tuple[str, object]]:
    if not line or line.isspace():  # (not strip: it would copy every line)
        return
    try:
        doc = json.loads(line)
    except ValueError as e:
        stats.skipped["invalid_lines"] += 1
        stats.note(f"line {lineno}: invalid JSON ({e.msg}); line skipped")
        return
    if not isinstance(doc, dict):
        stats.skipped["invalid_lines"] += 1
        stats.note(f"line {lineno}: not a JSON object; line skipped")
        return
    stats.messages += 1
    yield "json", doc


def _json_doc(doc: object, path: Path, stats: SourceStats) -> Iterator[tuple[str, object]]:
    """The first (or only) document decides whether the file is OTLP at all."""
    if isinstance(doc, dict) and ("resourceSpans" in doc or "resourceMetrics" in doc or not doc):
        stats.messages += 1
        yield "json", doc
        return
    hint = ""
    if isinstance(doc, list):
        hint = " (a JSON array: Zipkin v2 JSON? convert it with the Collector's zipkin receiver)"
    elif isinstance(doc, dict) and "data" in doc:
        hint = " (Jaeger JSON? export OTLP from Jaeger's /api/v3 or through a Collector)"
    raise InputError(f"{path}: JSON but not OTLP: no resourceSpans{hint}")


def _framed(reader: BinaryIO, path: Path, stats: SourceStats) -> Iterator[tuple[str, object]]:
    stats.format = "otlp-proto-framed"
    dctx = zstandard.ZstdDecompressor()
    offset = 0
    while True:
        header = reader.read(4)
        if not header:
            return
        if len(header) < 4:
            stats.skipped["truncated_messages"] += 1
            stats.note(f"offset {offset}: truncated length prefix at end of file")
            return
        (length,) = struct.unpack(">I", header)
        if length > MAX_FRAME:
            stats.skipped["truncated_messages"] += 1
            stats.note(f"offset {offset}: frame length {length} is not plausible; rest of file skipped")
            return
        payload = reader.read(length)
        offset += 4 + length
        if len(payload) < length:
            stats.skipped["truncated_messages"] += 1
            stats.note(f"offset {offset - length - 4}: message truncated ({len(payload)} of {length} bytes)")
            return
        if payload[:4] == ZSTD_MAGIC:
            stats.format = "otlp-proto-framed-zstd"
            try:
                payload = dctx.decompress(payload, max_output_size=MAX_FRAME * 8)
            except zstandard.ZstdError as e:
                stats.skipped["invalid_messages"] += 1
                stats.note(f"offset {offset - length - 4}: zstd frame does not decompress ({e})")
                continue
        if _is_json(payload):
            try:
                doc = json.loads(payload)
            except ValueError as e:
                stats.skipped["invalid_messages"] += 1
                stats.note(f"offset {offset - length - 4}: invalid JSON message ({e})")
                continue
            stats.messages += 1
            yield "json", doc
        else:
            stats.messages += 1
            yield "proto", payload


def _json_object_start(head: bytes) -> bool:
    """Whether bytes that start with a newline then `{` go on as JSON does (a quoted key or the
    end of the object), not as a protobuf request whose first ResourceSpans is 123 bytes long
    (`0A 7B 0A ...`)."""
    rest = head.lstrip()[1:].lstrip()
    return rest[:1] in (b'"', b"}", b"{", b"")


def _is_json(payload: bytes) -> bool:
    """Whether a frame holds OTLP/JSON rather than protobuf. A protobuf request starts with 0x0A,
    which is also a newline: a newline then `{` is JSON only if the bytes do not frame as
    protobuf fields (a first ResourceSpans of 123 bytes starts `0A 7B`)."""
    first = payload[:1]
    if first == b"{" or first in (b" ", b"\t", b"\r"):
        return True
    return first == b"\n" and payload[:64].lstrip()[:1] == b"{" and walk(payload, 0, len(payload)) is None


def file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
