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
import stat
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from collectors.protowire import I32, I64, LEN, VARINT, walk

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DISCARD = 1 << 20  # bytes read at a time when stepping over something too large to keep


@dataclass(frozen=True)
class Limits:
    """What one file may make the reader hold or do; each limit hit is a counted skip naming it.

    `message` bounds everything held at once: a JSON line, a frame (compressed and decompressed),
    one ResourceSpans of a single protobuf request, a pretty-printed JSON document. The Collector
    sends at most 4 MiB per gRPC request by default; 64 MiB leaves room for configured larger ones.
    `ratio` bounds decompression: past `message` bytes of output, a stream may not produce more
    than `ratio` times the compressed bytes read (real OTLP compresses 5-40x; gzip cannot exceed
    ~1,030x, zstd can reach 30,000x). `string` is the length of a name, statement or URL kept."""

    message: int = 64 << 20
    ratio: int = 200
    string: int = 64 << 10


DEFAULT_LIMITS = Limits()


class LimitExceeded(Exception):
    """A stream went past one of the `Limits`: the rest of the file is skipped."""


class DamagedStream(Exception):
    """A compressed stream that is truncated or corrupt: the rest of the file is lost."""


class InputError(Exception):
    """The input cannot be used at all (missing, unreadable, or not OTLP). One line, user-facing.
    Inside a directory the file is skipped instead and counted under `skip`."""

    def __init__(self, message: str, skip: str = "files") -> None:
        super().__init__(message)
        self.skip = skip


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
    notices: list[str] = field(default_factory=list)  # facts about the format worth saying (base64 ids...)

    def note(self, message: str) -> None:
        if len(self.errors) < 5:
            # (a parser's message can quote the input at length)
            self.errors.append(message if len(message) <= 300 else message[:300] + "…")

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
            **({"notices": list(self.notices)} if self.notices else {}),
        }


@dataclass(frozen=True)
class Found:
    """A file to read, or an entry of a named directory that is not read (`skip` names the counter)."""

    path: Path
    in_directory: bool
    skip: str | None = None  # "unreadable" | "special_files"
    why: str = ""


def shown(path: Path | str) -> str:
    """A path as text that is valid UTF-8 whatever bytes its name holds (an undecodable byte
    becomes `\\xNN`), for messages and the report."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def strings_cut(stats: SourceStats, n: int, limits: Limits) -> None:
    """Count `n` names, statements or URLs cut to the string limit."""
    stats.repaired["truncated_strings"] += n
    stats.note(f"{n} string(s) over the string limit ({limits.string} characters or bytes) cut to it")


def damage_summary(sources: list[SourceStats]) -> str:
    """What was skipped across `sources`, and the first note about it, for a one-line message."""
    skipped: Counter = Counter()
    for s in sources:
        skipped.update(s.skipped)
    if not skipped:
        return ""
    first = next((e for s in sources for e in s.errors), "")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))
    return f" (skipped: {counts}" + (f"; first: {first})" if first else ")")


def expand_paths(paths: list[str]) -> list[Found]:
    """The files named and every entry below named directories (rotated files included), sorted.
    Entries of a directory that cannot be read (unreadable subdirectories and files, FIFOs,
    sockets, devices) are returned with `skip` set: never opened, so never blocked on."""
    out: list[Found] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(_walk(p), key=lambda f: f.path)
            if not found:
                raise InputError(f"{shown(raw)}: directory holds no files")
            if not any(f.skip is None for f in found):
                what = "; ".join(f"{shown(f.path)}: {f.why}" for f in found[:3])
                raise InputError(f"{shown(raw)}: directory holds no readable files ({what})")
            out.extend(found)
        elif p.is_file():
            out.append(Found(p, False))
        elif p.exists():
            raise InputError(f"{shown(raw)}: not a regular file")
        else:
            raise InputError(f"{shown(raw)}: no such file or directory")
    return out


def _walk(top: Path) -> Iterator[Found]:
    seen: set[tuple[int, int]] = set()
    errors: list[OSError] = []
    for root, dirs, files in os.walk(top, onerror=errors.append, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:  # a symbolic link back up the tree
            dirs.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in files:
            if name.startswith("."):
                continue
            f = Path(root, name)
            try:
                mode = f.stat().st_mode
            except OSError as e:
                yield Found(f, True, "unreadable", e.strerror or str(e))
                continue
            if stat.S_ISREG(mode):
                yield Found(f, True)
            else:
                kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
                yield Found(f, True, "special_files", f"a {kind}, not a regular file; not opened")
    for e in errors:
        yield Found(Path(e.filename if e.filename is not None else top), True, "unreadable",
                    f"directory cannot be read ({e.strerror or e})")


class _Guarded(io.RawIOBase):
    """A decompressing stream that turns damage into `DamagedStream` and enforces the ratio limit."""

    def __init__(self, stream: BinaryIO, raw: BinaryIO, limits: Limits, what: str) -> None:
        self._raw, self._limits, self._what = raw, limits, what
        # One underlying read per call, so the data before a damaged spot is returned before the error.
        self._read = getattr(stream, "readinto1", None) or stream.readinto
        self._out = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001 - a writable buffer
        try:
            n = self._read(b)
        except EOFError:
            raise DamagedStream(f"{self._what} stream truncated after {self._out} bytes") from None
        except (OSError, zlib.error, zstandard.ZstdError) as e:
            raise DamagedStream(f"{self._what} stream damaged after {self._out} bytes ({e})") from None
        self._out += n
        lim = self._limits
        if self._out > lim.message and self._out > lim.ratio * max(self._raw.tell(), 1):
            raise LimitExceeded(f"decompression ratio limit: over {lim.ratio}x the compressed bytes read "
                                f"({self._out} from {self._raw.tell()}); the rest of the file is skipped")
        return n


class _ZstdFrames(io.RawIOBase):
    """zstd frames one after another, decompressed from small pieces of input, so that no piece can
    expand past ~32 MiB (a 4-byte block can stand for 128 KiB) and a truncated frame is noticed."""

    PIECE = 1 << 10

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._fed = False  # input went into the current frame
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        while not self._out:
            piece = self._raw.read(self.PIECE)
            if not piece:
                if self._fed:
                    raise EOFError("zstd frame truncated")
                return 0
            while piece:
                out = self._obj.decompress(piece)
                self._fed = True
                piece = b""
                if self._obj.eof:  # the frame ended: what follows starts the next one
                    piece = self._obj.unused_data
                    self._obj, self._fed = self._dctx.decompressobj(), False
                if out:
                    self._out = memoryview(out) if not self._out else memoryview(bytes(self._out) + out)
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


def _decompressed(raw: BinaryIO, limits: Limits) -> BinaryIO:
    head = raw.read(4)
    raw.seek(0)
    if head[:2] == GZIP_MAGIC:
        return io.BufferedReader(_Guarded(gzip.GzipFile(fileobj=raw), raw, limits, "gzip"), 1 << 20)  # type: ignore[arg-type]
    if head == ZSTD_MAGIC:
        return io.BufferedReader(_Guarded(_ZstdFrames(raw), raw, limits, "zstd"), 1 << 20)  # type: ignore[arg-type]
    return io.BufferedReader(raw, 1 << 20)  # type: ignore[arg-type]


def iter_messages(path: Path, stats: SourceStats, limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[str, object]]:
    """Yield the messages of one OTLP file; raises InputError when it is not OTLP at all.

    Damage inside the file (a truncated or corrupt compressed stream, a line or message over a
    limit) is counted in `stats` and reading goes on where it can; what was read before is kept."""
    name = shown(path)
    try:
        raw = open(path, "rb", buffering=0)
    except OSError as e:
        raise InputError(f"{name}: cannot open: {e.strerror or e}", skip="unreadable") from e
    with raw:
        try:
            reader = _decompressed(raw, limits)
            head = reader.peek(16)[:16]
        except (OSError, DamagedStream, LimitExceeded) as e:
            raise InputError(f"{name}: cannot decompress: {e}") from e
        if not head.strip():
            stats.format = "empty"
            stats.note("file is empty")
            return
        kind = _detect(head)
        try:
            if kind == "json":
                yield from _json_lines(reader, name, stats, limits)
            elif kind == "framed":
                yield from _framed(reader, stats, limits)
            elif kind == "proto":
                yield from _single_proto(reader, stats, limits)
            else:
                raise InputError(f"{name}: not an OTLP file (neither OTLP JSON, framed OTLP protobuf nor an OTLP "
                                 "protobuf message)")
        except DamagedStream as e:
            stats.skipped["damaged_files"] += 1
            stats.note(f"{e}: what came before is read, the rest of the file is lost")
        except LimitExceeded as e:
            stats.skipped["over_ratio_limit"] += 1
            stats.note(str(e))
        except OSError as e:
            stats.skipped["damaged_files"] += 1
            stats.note(f"read error ({e.strerror or e}): what came before is read, the rest of the file is lost")


# The framed format is told from a single protobuf request by its first 4 bytes: a request starts
# 0x0A, which read as a big-endian length is at least 160 MiB; any frame length below that is framed.
_FRAMED_MAX_LENGTH = 0x0A000000 - 1


def _detect(head: bytes) -> str:
    first = head.lstrip()[:1]
    if first in (b"{", b"[") and (head[:1] != b"\n" or _json_object_start(head)):
        return "json"
    if len(head) >= 5:
        (length,) = struct.unpack(">I", head[:4])
        payload = head[4:]
        if 0 < length <= _FRAMED_MAX_LENGTH and (payload[:1] in (b"\x0a", b"{") or payload[:4] == ZSTD_MAGIC):
            return "framed"
    if head[:1] == b"\x0a":  # field 1 (resource_spans / resource_metrics), length-delimited
        return "proto"
    return "unknown"


def _over_message_limit(stats: SourceStats, what: str, limits: Limits) -> None:
    stats.skipped["over_message_limit"] += 1
    stats.note(f"{what}: over the message size limit ({limits.message} bytes; raise it with --max-message); skipped")


def _json_lines(reader: BinaryIO, name: str, stats: SourceStats, limits: Limits) -> Iterator[tuple[str, object]]:
    stats.format = "otlp-json-lines"
    cap = limits.message
    first = reader.readline(cap + 1)
    if first.strip() in (b"{", b"["):
        # A pretty-printed single document rather than one document per line.
        stats.format = "otlp-json"
        data = first + reader.read(cap + 1 - len(first))
        if len(data) > cap:
            _over_message_limit(stats, f"the JSON document (over {cap} bytes)", limits)
            return
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:
            # JSON objects one after another: what the SDK's console exporter prints.
            doc = _concatenated(data)
            if doc is None:
                raise InputError(f"{name}: invalid JSON document ({_json_error(e)})") from e
        yield from _json_doc(doc, name, stats)
        return
    lineno = 1
    if not _skip_long(reader, first, lineno, stats, limits):
        try:
            doc = json.loads(first)
        except (ValueError, RecursionError):
            yield from _json_line(first, 1, stats)  # counts and notes the damaged line
        else:
            yield from _json_doc(doc, name, stats)
    readline = reader.readline
    while line := readline(cap + 1):
        lineno += 1
        if len(line) > cap and _skip_long(reader, line, lineno, stats, limits):
            continue
        yield from _json_line(line, lineno, stats)


def _skip_long(reader: BinaryIO, line: bytes, lineno: int, stats: SourceStats, limits: Limits) -> bool:
    """Whether `line` (read up to the limit) is longer than the limit; if so, the rest of it is read
    and dropped a piece at a time, and it is counted."""
    if len(line) <= limits.message or line.endswith(b"\n"):
        return False
    size = len(line)
    while (piece := reader.readline(_DISCARD)) and not piece.endswith(b"\n"):
        size += len(piece)
    _over_message_limit(stats, f"line {lineno} ({size + len(piece)} bytes)", limits)
    return True


def _json_error(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 at byte {e.start}"
    return getattr(e, "msg", None) or str(e)


def _json_line(line: bytes, lineno: int, stats: SourceStats) -> Iterator[tuple[str, object]]:
    if not line or line.isspace():  # (not strip: it would copy every line)
        return
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError) as e:
        stats.skipped["invalid_lines"] += 1
        stats.note(f"line {lineno}: invalid JSON ({_json_error(e)}); line skipped")
        return
    if not isinstance(doc, dict):
        stats.skipped["invalid_lines"] += 1
        stats.note(f"line {lineno}: not a JSON object; line skipped")
        return
    stats.messages += 1
    yield "json", doc


def _json_doc(doc: object, name: str, stats: SourceStats) -> Iterator[tuple[str, object]]:
    """The first (or only) document decides whether the file holds traces in a JSON format
    read here (collectors/trace_json.py: OTLP, wrapped OTLP, Jaeger, Zipkin, console output)."""
    from collectors.trace_json import recognize, refusal  # they build on this module

    if recognize(doc) is None:
        raise InputError(f"{name}: {refusal(doc)}")
    stats.messages += 1
    yield "json", doc


def _concatenated(data: bytes) -> list | None:
    from collectors.otel_console import split_objects

    try:
        docs = split_objects(data.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError):
        return None
    return docs if docs and len(docs) > 1 else None


def _step_over(reader: BinaryIO, length: int, what: str, stats: SourceStats, limits: Limits) -> bool:
    """Read and drop a message over the limit a piece at a time, and count it; False (counted as
    truncated) when the file ends first."""
    done = 0
    while done < length and (piece := reader.read(min(_DISCARD, length - done))):
        done += len(piece)
    if done < length:
        stats.skipped["truncated_messages"] += 1
        stats.note(f"{what} of {length} bytes runs past the end of the file ({done} read); rest of file skipped")
        return False
    _over_message_limit(stats, f"{what} ({length} bytes)", limits)
    return True


def _framed(reader: BinaryIO, stats: SourceStats, limits: Limits) -> Iterator[tuple[str, object]]:
    stats.format = "otlp-proto-framed"
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
        at, offset = offset, offset + 4 + length
        if length > limits.message:
            if not _step_over(reader, length, f"offset {at}: frame", stats, limits):
                return
            continue
        payload = reader.read(length)
        if len(payload) < length:
            stats.skipped["truncated_messages"] += 1
            stats.note(f"offset {at}: message truncated ({len(payload)} of {length} bytes)")
            return
        if payload[:4] == ZSTD_MAGIC:
            stats.format = "otlp-proto-framed-zstd"
            try:
                payload = _zstd_frame(payload, limits.message)
            except zstandard.ZstdError as e:
                stats.skipped["invalid_messages"] += 1
                stats.note(f"offset {at}: zstd frame does not decompress ({e})")
                continue
            except LimitExceeded as e:
                _over_message_limit(stats, f"offset {at}: zstd frame {e}", limits)
                continue
        if _is_json(payload):
            try:
                doc = json.loads(payload)
            except (ValueError, RecursionError) as e:
                stats.skipped["invalid_messages"] += 1
                stats.note(f"offset {at}: invalid JSON message ({_json_error(e)})")
                continue
            if not isinstance(doc, dict):
                stats.skipped["invalid_messages"] += 1
                stats.note(f"offset {at}: JSON message is not an object")
                continue
            stats.messages += 1
            yield "json", doc
        else:
            stats.messages += 1
            yield "proto", payload


def _zstd_frame(payload: bytes, cap: int) -> bytes:
    """One zstd-compressed frame, refused (`LimitExceeded`) as soon as it declares or produces more
    than `cap` bytes; ZstdError when it does not decompress, or stops short."""
    declared = zstandard.frame_content_size(payload)
    if declared > cap:
        raise LimitExceeded(f"declaring {declared} bytes")
    reader = _ZstdFrames(io.BytesIO(payload))
    out = bytearray()
    buf = bytearray(1 << 20)
    try:
        while n := reader.readinto(buf):
            out += buf[:n] if n < len(buf) else buf
            if len(out) > cap:
                raise LimitExceeded(f"decompressing to over {cap} bytes")
    except EOFError as e:
        raise zstandard.ZstdError(str(e)) from None
    return bytes(out)


def _single_proto(reader: BinaryIO, stats: SourceStats, limits: Limits) -> Iterator[tuple[str, object]]:
    """A single serialized Export*ServiceRequest, streamed by its top-level fields: each run of
    whole ResourceSpans (ResourceMetrics) of about `_PIECE` bytes is a request of its own, so the
    message is never held whole and a ResourceSpans over the limit is skipped alone."""
    stats.format = "otlp-proto"
    stats.messages += 1
    pieces: list[bytes] = []
    size = 0
    at = 0
    while True:
        try:
            head, number, wire, length = _read_field_head(reader)
        except ValueError as e:
            stats.skipped["invalid_messages"] += 1
            stats.note(f"offset {at}: the request's framing does not decode ({e}); rest of file skipped")
            break
        if not head:
            break
        if wire == LEN and length > limits.message:
            if not _step_over(reader, length, f"offset {at}: a resource_spans", stats, limits):
                break
        else:
            body = reader.read(length) if wire == LEN else _fixed_or_varint(reader, wire)
            if wire == LEN and len(body) < length:
                stats.skipped["truncated_messages"] += 1
                stats.note(f"offset {at}: message truncated ({len(body)} of {length} bytes)")
                break
            pieces.append(head)
            pieces.append(body)
            size += len(head) + len(body)
            length = len(body)
        at += len(head) + length
        if size >= _PIECE:
            yield "proto", b"".join(pieces)
            pieces, size = [], 0
    if pieces:
        yield "proto", b"".join(pieces)


_PIECE = 1 << 20


def _read_field_head(reader: BinaryIO) -> tuple[bytes, int, int, int]:
    """(the tag and length bytes, field number, wire type, length or 0) of the next top-level field
    of a stream; empty bytes at its end. ValueError when the bytes are no protobuf field."""
    head = bytearray()
    tag = _read_varint(reader, head)
    if tag is None:
        if head:
            raise ValueError("field cut short at the end of the file")
        return b"", 0, 0, 0
    number, wire = tag >> 3, tag & 7
    if number == 0 or wire not in (VARINT, I64, LEN, I32):
        raise ValueError(f"field {number} with wire type {wire}")
    if wire != LEN:
        return bytes(head), number, wire, 0
    length = _read_varint(reader, head)
    if length is None:
        raise ValueError("field cut short at the end of the file")
    return bytes(head), number, wire, length


def _read_varint(reader: BinaryIO, head: bytearray) -> int | None:
    value = shift = 0
    while b := reader.read(1):
        head += b
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
    return None


def _fixed_or_varint(reader: BinaryIO, wire: int) -> bytes:
    if wire == I64:
        return reader.read(8)
    if wire == I32:
        return reader.read(4)
    head = bytearray()
    _read_varint(reader, head)
    return bytes(head)


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
