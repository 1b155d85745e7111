"""A capture window: buffer what the OTLP receiver accepts, then write OTLP/JSON lines files.

Converting protobuf to OTLP/JSON costs ~30 ms per 1,000 spans in Python, two orders of
magnitude more than accepting them, so it cannot happen on the request path. Accepted requests
sit in a bounded in-memory buffer; a spool thread appends them, still as protobuf, to a spool
file next to the output (disk appends release the GIL and keep up with the receiver); when the
window closes the spool is converted to the final files. The buffer bound is what produces
backpressure: when the spool falls behind, `has_room()` turns False and the receiver answers
503/UNAVAILABLE with a retry delay, so exporters retry instead of the capture dropping data.

Outputs are written to a temporary name and renamed into place, so a crash never leaves a
half-written capture; the spool itself is kept until the conversion succeeded.

Output format follows the name: the Collector file exporter's framed protobuf for `.binpb`/`.pb`
names (the CLI's default, `capture.binpb.zst`), a copy of the spool that keeps up with the
receiver, or OTLP/JSON lines for any other name (`capture.otlp.jsonl.gz`), which needs the slow
conversion.

Accepted data is never dropped: the spool is named after the output and the process
(`.NAME.PID.XXXXXXXX.spool`) and fsynced before the write phase; if that phase is stopped (a
second Ctrl-C, a full disk), `WriteInterrupted` says where the spool is, `recover()` writes it
later, and `stale_files()` tells the next capture in the same directory about leftovers.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import struct
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from analyzer.output import open_output
from collectors.otlp_ingest import METRICS, TRACES, accept_metric_request, accept_trace_request
from collectors.otlp_json import to_otlp_json_line
from collectors.receiver import OtlpReceiver, ReceiverConfig

DEFAULT_BUFFER_SPANS = 200_000
DEFAULT_BUFFER_BYTES = 256 * 1024 * 1024
_KIND = {TRACES: b"T", METRICS: b"M"}
_SIGNAL = {v: k for k, v in _KIND.items()}
SPOOL_SUFFIX = ".spool"
_STALE_TMP_S = 60.0  # a partial output not written to for this long belongs to a dead process
_REC = struct.Struct(">cI")
_BATCH_BYTES = 4 * 1024 * 1024  # protobuf bytes per conversion task
_PARALLEL_MIN_BYTES = 32 * 1024 * 1024  # below this, starting worker processes costs more than it saves  # kind, length: the Collector's proto file format plus a kind byte


@dataclass
class CaptureStats:
    """A snapshot of what the capture has taken so far (for progress lines)."""

    spans: int = 0
    points: int = 0
    trace_requests: int = 0
    metric_requests: int = 0
    buffered_items: int = 0  # accepted, not yet spooled
    refused_full: int = 0  # requests told to retry because the buffer was full
    elapsed_s: float = 0.0
    phase: str = "receiving"  # receiving | writing | done


@dataclass
class CaptureResult:
    traces_path: Path
    metrics_path: Path | None  # None when no metrics arrived
    spans: int
    points: int
    trace_requests: int
    metric_requests: int
    refused_full: int
    duration_s: float
    interrupted: bool = False
    endpoints: dict[str, str] = field(default_factory=dict)


def metrics_path_for(traces_path: str | Path) -> Path:
    """`capture.otlp.jsonl.gz` → `capture.metrics.otlp.jsonl.gz` (one signal per file)."""
    p = Path(traces_path)
    stem, dot, rest = p.name.partition(".")
    return p.with_name(f"{stem}.metrics.{rest}" if dot else f"{stem}.metrics.jsonl")


class Capture:
    """The receiver's sink for one capture window. Thread-safe; see the module doc."""

    def __init__(
        self,
        output: str | Path,
        buffer_spans: int = DEFAULT_BUFFER_SPANS,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        retry_after_s: int = 1,
    ) -> None:
        if buffer_spans <= 0 or buffer_bytes <= 0:
            raise ValueError("buffer_spans and buffer_bytes must be positive")
        self.output = Path(output)
        self.buffer_spans = buffer_spans
        self.buffer_bytes = buffer_bytes
        self._retry_after_s = max(1, int(retry_after_s))
        self._cond = threading.Condition()
        self._pending: deque[tuple[str, bytes, int]] = deque()
        self._pending_items = 0
        self._pending_bytes = 0
        self._stats = CaptureStats()
        self._t0 = time.monotonic()
        self._closed = False
        self._spooling = False
        self._spool_thread: threading.Thread | None = None
        self._spool_error: BaseException | None = None
        self.output.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.output.name}.{os.getpid()}.", suffix=SPOOL_SUFFIX,
                                    dir=self.output.parent)
        self._spool_path = Path(name)
        self._spool: IO[bytes] = os.fdopen(fd, "wb")

    # -- Sink protocol (called from receiver threads) ----------------------------------------

    def has_room(self) -> bool:
        """False when full; the receiver then refuses the request, which is counted here."""
        if not self._closed and self._pending_items < self.buffer_spans and self._pending_bytes < self.buffer_bytes:
            return True
        with self._cond:
            self._stats.refused_full += 1
        return False

    def offer(self, signal: str, payload: bytes, items: int) -> bool:
        with self._cond:
            if self._closed:
                return False
            # One request larger than the whole buffer is still taken into an empty buffer, or
            # it would be refused forever.
            over = self._pending_items + items > self.buffer_spans or self._pending_bytes + len(payload) > self.buffer_bytes
            if over and self._pending:
                self._stats.refused_full += 1
                return False
            self._pending.append((signal, payload, items))
            self._pending_items += items
            self._pending_bytes += len(payload)
            s = self._stats
            if signal == TRACES:
                s.spans += items
                s.trace_requests += 1
            else:
                s.points += items
                s.metric_requests += 1
            self._cond.notify()
        return True

    def retry_after_s(self) -> int:
        return self._retry_after_s

    # -- control -----------------------------------------------------------------------------

    def start(self) -> Capture:
        """Start draining the buffer to the spool (a capture that is never started only buffers)."""
        if self._spool_thread is None:
            self._spooling = True
            self._spool_thread = threading.Thread(target=self._spool_loop, name="capture-spool", daemon=True)
            self._spool_thread.start()
        return self

    def stats(self) -> CaptureStats:
        with self._cond:
            s = CaptureStats(**vars(self._stats))
            s.buffered_items = self._pending_items
        s.elapsed_s = time.monotonic() - self._t0
        return s

    def close(self, on_progress: Callable[[CaptureStats], None] | None = None, interrupted: bool = False) -> CaptureResult:
        """Stop accepting, spool what is buffered, and write the output files atomically."""
        self._stop_spooling()
        duration = time.monotonic() - self._t0
        stats = self.stats()
        if on_progress is not None:
            on_progress(replace(stats, phase="writing"))
        metrics_path = metrics_path_for(self.output) if stats.metric_requests else None
        try:
            _write_outputs(self._spool_path, self.output, metrics_path)
        except BaseException as exc:  # Ctrl-C again, a full disk: the spool keeps every accepted request
            raise WriteInterrupted(self._spool_path, self.output, stats.spans, stats.points, exc) from exc
        self._spool_path.unlink(missing_ok=True)
        if on_progress is not None:
            on_progress(replace(stats, phase="done"))
        return CaptureResult(
            traces_path=self.output,
            metrics_path=metrics_path,
            spans=stats.spans,
            points=stats.points,
            trace_requests=stats.trace_requests,
            metric_requests=stats.metric_requests,
            refused_full=stats.refused_full,
            duration_s=duration,
            interrupted=interrupted,
        )

    def discard(self) -> CaptureStats:
        """Stop and delete the spool without writing outputs (benchmarks, aborted runs)."""
        self._stop_spooling()
        self._spool_path.unlink(missing_ok=True)
        return self.stats()

    def flush_to_spool(self) -> None:
        """Stop accepting and put every accepted request in the spool, fsynced; write nothing."""
        self._stop_spooling()

    @property
    def spool_path(self) -> Path:
        return self._spool_path

    def requests(self, signal: str) -> Iterator[bytes]:
        """The spooled protobuf requests of one signal, in arrival order (after close)."""
        return _records(self._spool_path, signal)

    def _stop_spooling(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._spool_thread is None:
            self._spool_loop()  # never started: drain inline
        else:
            self._spool_thread.join()
        if not self._spool.closed:
            self._spool.flush()
            os.fsync(self._spool.fileno())  # acknowledged data must survive what happens next
            self._spool.close()
        if self._spool_error is not None:
            raise OSError(f"capture spool {self._spool_path} failed: {self._spool_error}") from self._spool_error

    def _spool_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closed:
                        self._cond.wait()
                    batch = list(self._pending)
                    if not batch and self._closed:
                        return
                # Write outside the lock; release buffer room only once the data is on disk.
                for signal, payload, _ in batch:
                    self._spool.write(_REC.pack(_KIND[signal], len(payload)))
                    self._spool.write(payload)
                self._spool.flush()
                with self._cond:
                    for _ in batch:
                        _, payload, items = self._pending.popleft()
                        self._pending_items -= items
                        self._pending_bytes -= len(payload)
        except BaseException as e:  # reported by close(); stop accepting so clients retry elsewhere
            self._spool_error = e
            self._closed = True


def _all_records(spool: Path) -> Iterator[tuple[bytes, bytes]]:
    """(kind, payload) per complete record; stops at a record cut short (the process died while
    appending it) or one that is not a record."""
    with open(spool, "rb") as f:
        while len(head := f.read(_REC.size)) == _REC.size:
            kind, n = _REC.unpack(head)
            if kind not in _SIGNAL:
                return
            payload = f.read(n)
            if len(payload) < n:
                return
            yield kind, payload


def _records(spool: Path, signal: str) -> Iterator[bytes]:
    want = _KIND[signal]
    return (payload for kind, payload in _all_records(spool) if kind == want)


def convert_batch(signal: str, payloads: list[bytes]) -> bytes:
    """OTLP/JSON lines (newline-terminated, UTF-8) for spooled requests; runs in worker processes."""
    cls: Any = ExportTraceServiceRequest if signal == TRACES else ExportMetricsServiceRequest
    return "".join(to_otlp_json_line(cls.FromString(p)) + "\n" for p in payloads).encode("utf-8")


def _batches(spool: Path, signal: str, max_bytes: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for payload in _records(spool, signal):
        batch.append(payload)
        size += len(payload)
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _json_blocks(spool: Path, signal: str) -> Iterator[bytes]:
    """The converted spool, in arrival order; on several cores when there is a lot of it.

    Conversion (~30-60 ms per 1,000 spans) dominates writing, so a large spool is converted by
    a pool of worker processes ("spawn": forking a process that ran gRPC threads is unsafe),
    with a bounded number of batches in flight so memory stays flat.
    """
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or spool.stat().st_size < _PARALLEL_MIN_BYTES:
        for batch in _batches(spool, signal, _BATCH_BYTES):
            yield convert_batch(signal, batch)
        return
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        in_flight: deque[Future[bytes]] = deque()
        for batch in _batches(spool, signal, _BATCH_BYTES):
            in_flight.append(pool.submit(convert_batch, signal, batch))
            if len(in_flight) >= 2 * workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def _framed_blocks(spool: Path, signal: str) -> Iterator[bytes]:
    """The Collector file exporter's `proto` format: each message after a 4-byte big-endian length."""
    for payload in _records(spool, signal):
        yield struct.pack(">I", len(payload)) + payload


def is_proto_output(name: str) -> bool:
    """Whether an output name asks for framed protobuf (`.binpb`/`.pb`, optionally .gz/.zst)."""
    base = name.removesuffix(".gz").removesuffix(".zst")
    return base.endswith((".binpb", ".pb"))


@contextlib.contextmanager
def compressing(raw: IO[bytes], name: str) -> Iterator[IO[bytes]]:
    """A writer into `raw` compressing by the suffix of `name`: .gz, .zst or none; `raw` stays open."""
    if name.endswith(".gz"):
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=5) as f:
            yield f  # type: ignore[misc]
    elif name.endswith(".zst"):
        import zstandard

        with zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as f:
            yield f  # type: ignore[misc]
    else:
        yield raw


def _write_outputs(spool: Path, traces: Path, metrics: Path | None) -> None:
    # Framed protobuf is a copy of the spool; OTLP/JSON needs the (slow) conversion.
    blocks = _framed_blocks if is_proto_output(traces.name) else _json_blocks
    _write_output(traces, blocks(spool, TRACES))
    if metrics is not None:
        _write_output(metrics, blocks(spool, METRICS))


def _write_output(path: Path, blocks: Iterator[bytes]) -> None:
    """Write `blocks` to `path` as analyzer.output does: atomically for a file, else directly."""
    with open_output(path) as raw, compressing(raw, path.name) as f:
        for block in blocks:
            f.write(block)


# -- nothing acknowledged is lost: interrupted writes, recovery, leftovers ----------------------


class WriteInterrupted(Exception):
    """The write phase stopped; every accepted request is still in `spool`. One-line message."""

    def __init__(self, spool: Path, output: Path, spans: int, points: int, cause: BaseException) -> None:
        self.spool, self.output, self.cause = spool, output, cause
        why = "interrupted" if isinstance(cause, KeyboardInterrupt) else f"failed ({cause})"
        super().__init__(
            f"writing {output} {why}: the {spans:,} spans and {points:,} metric points received are safe in "
            f"{spool}; write them with: profile-first capture --recover {spool} --output {output}")


def output_for_spool(spool: Path) -> Path:
    """The output a spool was meant for: `.capture.binpb.zst.123.ab_cd9x1.spool` -> `capture.binpb.zst`."""
    stem = spool.name.removeprefix(".").removesuffix(SPOOL_SUFFIX)
    parts = stem.rsplit(".", 2)
    base = parts[0] if len(parts) == 3 and parts[1].isdigit() else stem.rsplit(".", 1)[0]
    return spool.with_name(base)


def _spool_pid(spool: Path) -> int | None:
    parts = spool.name.removesuffix(SPOOL_SUFFIX).rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_files(directory: Path) -> list[str]:
    """Deal with what dead captures left in `directory`; one message per file.

    A spool that holds data is never deleted (it is acknowledged telemetry): the message says how
    to write it. Empty spools and partial outputs not written to for a minute are removed.
    """
    messages = []
    for spool in sorted(directory.glob(f".*{SPOOL_SUFFIX}")):
        pid = _spool_pid(spool)
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue  # a capture still running
        with contextlib.suppress(OSError):
            size = spool.stat().st_size
            if size == 0:
                spool.unlink()
                messages.append(f"removed {spool}, the empty spool of an earlier capture")
            else:
                messages.append(f"an earlier capture stopped before writing what it received: {spool} holds "
                                f"{size:,} bytes; write them with: profile-first capture --recover {spool}")
    now = time.time()
    for tmp in sorted(directory.glob(".*.tmp")):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > _STALE_TMP_S and _is_capture_output(tmp):
                tmp.unlink()
                messages.append(f"removed {tmp}, a partial output of an earlier run")
    return messages


_OUTPUT_TMP = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$")  # how analyzer.output names a partial file


def _is_capture_output(tmp: Path) -> bool:
    """A partial capture output (`.NAME.XXXXXXXX.tmp` for NAME a .binpb/.pb/.jsonl/.json file);
    other programs' temporary files are left alone."""
    m = _OUTPUT_TMP.match(tmp.name)
    base = m.group(1).removesuffix(".gz").removesuffix(".zst") if m else ""
    return base.endswith((".binpb", ".pb", ".jsonl", ".json"))


@dataclass
class Recovered:
    result: CaptureResult
    cut_bytes: int  # a record at the end the dead process had not finished appending


def recover(spool: Path, output: Path | None = None) -> Recovered:
    """Write a spool left by an interrupted capture to `output` (default: the name it was meant
    for) and its metrics beside it, then delete it. Raises OSError when the spool cannot be read."""
    output = output or output_for_spool(spool)
    spans = points = traces = metrics = 0
    end = 0
    for kind, payload in _all_records(spool):
        end += _REC.size + len(payload)
        if kind == _KIND[TRACES]:
            traces += 1
            spans += accept_trace_request(ExportTraceServiceRequest.FromString(payload), payload).items
        else:
            metrics += 1
            points += accept_metric_request(ExportMetricsServiceRequest.FromString(payload), payload).items
    cut = spool.stat().st_size - end
    metrics_path = metrics_path_for(output) if metrics else None
    t0 = time.monotonic()
    _write_outputs(spool, output, metrics_path)
    spool.unlink()
    return Recovered(CaptureResult(output, metrics_path, spans, points, traces, metrics, 0,
                                   time.monotonic() - t0), cut)


# -- a capture window for the CLI and `analyze --listen` --------------------------------------


def capture_window(
    duration_s: float,
    output: str | Path,
    config: ReceiverConfig | None = None,
    buffer_spans: int = DEFAULT_BUFFER_SPANS,
    on_progress: Callable[[CaptureStats], None] | None = None,
    stop: threading.Event | None = None,
    on_listening: Callable[[OtlpReceiver], None] | None = None,
    on_writing: Callable[[Capture], None] | None = None,
) -> CaptureResult:
    """Receive OTLP for `duration_s` seconds (or until `stop` is set or Ctrl-C), then write.

    Ctrl-C ends the window early; what arrived is still written and `interrupted` is set.
    """
    capture = Capture(output, buffer_spans=buffer_spans).start()
    try:
        receiver = OtlpReceiver(capture, config).start()
    except BaseException:
        capture.discard()
        raise
    endpoints = {}
    if receiver.http_port is not None:
        endpoints["http"] = receiver.http_endpoint
    if receiver.grpc_port is not None:
        endpoints["grpc"] = receiver.grpc_endpoint
    interrupted = False
    try:
        if on_listening is not None:
            on_listening(receiver)
        deadline = time.monotonic() + duration_s
        while (left := deadline - time.monotonic()) > 0:
            if stop is not None and stop.wait(min(0.5, left)):
                break
            if stop is None:
                time.sleep(min(0.5, left))
            if on_progress is not None:
                on_progress(capture.stats())
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # From here on what was acknowledged must reach the disk: the hook changes what further
        # signals do before the (up to ~1 s) receiver shutdown, where a double Ctrl-C lands.
        if on_writing is not None:
            on_writing(capture)
        try:
            receiver.stop()
        except BaseException as exc:  # stopped while stopping: spool what is buffered and say where
            capture.flush_to_spool()
            stats = capture.stats()
            raise WriteInterrupted(capture.spool_path, capture.output, stats.spans, stats.points, exc) from exc
    result = capture.close(on_progress=on_progress, interrupted=interrupted)
    result.endpoints = endpoints
    return result


class ProgressLine:
    """A one-line progress display on stderr; silent when stderr is not a terminal."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = (0.0, 0)

    def __call__(self, s: CaptureStats) -> None:
        if not self.enabled:
            return
        t0, n0 = self._last
        rate = (s.spans - n0) / (s.elapsed_s - t0) if s.elapsed_s > t0 else 0.0
        self._last = (s.elapsed_s, s.spans)
        text = (
            f"{s.phase}: {s.elapsed_s:6.0f}s  spans {s.spans:,} ({rate:,.0f}/s)  metric points {s.points:,}"
            f"  buffered {s.buffered_items:,}"
        )
        if s.refused_full:
            text += f"  told to retry {s.refused_full:,}"
        end = "\n" if s.phase == "done" else ""
        self.stream.write(f"\r\x1b[2K{text}{end}")
        self.stream.flush()
