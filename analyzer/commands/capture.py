"""`profile-first capture`: receive OTLP traces and metrics for a window and write them to files.

    profile-first capture --duration 10m                      # capture.binpb.zst
    profile-first capture --duration 10m --output capture.otlp.jsonl.gz

Applications point their OTLP exporters at http://127.0.0.1:4318 (HTTP) or 127.0.0.1:4317
(gRPC). By default traces are written as the Collector file exporter's framed protobuf with
zstd (`capture.binpb.zst`), which keeps up with receiving; any name not ending in .binpb/.pb
(`capture.otlp.jsonl.gz`) writes OTLP/JSON lines instead, one export request per line. Metrics
go beside the traces (`capture.metrics.binpb.zst`); `profile-first analyze` reads all of them.

Ctrl-C or SIGTERM ends the window early and still writes. During the write a second one only
says where the received data is; a third stops, keeping the data in its spool for
`capture --recover SPOOL`. The next capture in the same directory reports such spools.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from analyzer.cliutil import UserError, parse_duration
from analyzer.output import OutputError, check_output
from collectors.capture import (
    DEFAULT_BUFFER_SPANS,
    Capture,
    CaptureResult,
    ProgressLine,
    WriteInterrupted,
    capture_window,
    metrics_path_for,
    output_for_spool,
    recover,
    stale_files,
)
from collectors.receiver import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_REQUEST_BYTES,
    OtlpReceiver,
    ReceiverConfig,
    is_loopback,
)

TOKEN_ENV = "PROFILE_FIRST_RECEIVER_TOKEN"
DEFAULT_OUTPUT = "capture.binpb.zst"


def read_token(token_file: Path | None) -> str | None:
    """The bearer token from a file, else from $PROFILE_FIRST_RECEIVER_TOKEN; never from argv,
    where other users of the machine could read it in the process list."""
    if token_file is not None:
        token = token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise UserError(f"token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def receiver_config(
    bind: str = "127.0.0.1",
    http_port: int | None = DEFAULT_HTTP_PORT,
    grpc_port: int | None = DEFAULT_GRPC_PORT,
    allow_remote: bool = False,
    token: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> ReceiverConfig:
    """A checked ReceiverConfig for `capture` and `analyze --listen`; a UserError (exit 2) tells the
    user what to change, and a warning on stderr when it listens beyond loopback without a token."""
    config = ReceiverConfig(bind, http_port, grpc_port, allow_remote, token, max_request_bytes,
                            max(4 * max_request_bytes, 64 * 1024 * 1024))
    try:
        config.check()
    except ValueError as e:
        raise UserError(str(e)) from None
    if not is_loopback(bind) and token is None:
        click.echo(f"profile-first: warning: listening on {bind} without a token; anyone who can reach it can send data",
                   err=True)
    return config


@click.command("capture")
@click.option("--duration", default="10m", show_default=True, help="Capture window, e.g. 30s, 10m, 1h.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path(DEFAULT_OUTPUT),
              show_default=True, help="Traces file: framed protobuf for a .binpb/.pb name (as fast as receiving), "
              "OTLP/JSON lines for any other (e.g. capture.otlp.jsonl.gz; 15 to 100x slower to write); .gz/.zst compress. "
              "Metrics go beside it as NAME.metrics.*")
@click.option("--recover", "recover_spool", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="SPOOL", help="Write the spool an interrupted capture left (its path was printed) to --output "
              "(default: the name it was meant for), instead of capturing.")
@click.option("--http-port", type=click.IntRange(0, 65535), default=DEFAULT_HTTP_PORT, show_default=True,
              help="OTLP/HTTP port (0: any free port).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=DEFAULT_GRPC_PORT, show_default=True,
              help="OTLP/gRPC port (0: any free port).")
@click.option("--no-grpc", is_flag=True, help="Do not listen for OTLP/gRPC.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --bind (set a token too).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"File holding the bearer token clients must send (or set ${TOKEN_ENV}).")
@click.option("--max-request-bytes", type=click.IntRange(1024), default=DEFAULT_MAX_REQUEST_BYTES, show_default=True,
              help="Largest request body accepted, as sent (compressed).")
@click.option("--buffer-spans", type=click.IntRange(1), default=DEFAULT_BUFFER_SPANS, show_default=True,
              help="Spans held in memory before clients are told to retry.")
@click.pass_context
def capture(ctx: click.Context, duration: str, output: Path, recover_spool: Path | None, http_port: int,
            grpc_port: int, no_grpc: bool, bind: str, allow_remote: bool, token_file: Path | None,
            max_request_bytes: int, buffer_spans: int) -> None:
    """Receive OTLP traces and metrics for a window and write them to a file `analyze` reads."""
    if recover_spool is not None:
        named = ctx.get_parameter_source("output") is not click.core.ParameterSource.DEFAULT
        click.echo(recover_summary(recover_spool, output if named else None))
        return
    seconds = parse_duration(duration)
    check_output(output)
    try:
        check_output(metrics_path_for(output))
    except OutputError as e:
        raise UserError(f"{e.message}; capture writes the metrics beside the traces, so name a file in a "
                        "writable directory") from None
    token = read_token(token_file)
    config = receiver_config(bind, http_port, None if no_grpc else grpc_port, allow_remote, token, max_request_bytes)

    result = run_capture(seconds, output, config, buffer_spans)
    click.echo(summary(result))


def recover_summary(spool: Path, output: Path | None) -> str:
    target = output or output_for_spool(spool)
    if output is None and target.exists():
        raise UserError(f"{target} already exists; name where the recovered capture goes with --output")
    check_output(target)
    try:
        done = recover(spool, target)
    except OSError as e:
        raise UserError(f"cannot recover {spool}: {e}") from None
    note = (f"\nthe last {done.cut_bytes:,} bytes of the spool were an unfinished record (the process died while "
            "appending it) and were skipped") if done.cut_bytes else ""
    return summary(done.result) + note


def run_capture(seconds: float, output: Path, config: ReceiverConfig,
                buffer_spans: int = DEFAULT_BUFFER_SPANS) -> CaptureResult:
    """A capture window with the progress line on stderr; Ctrl-C and SIGTERM end it early, and
    during the write phase a second one is only noted (see `signals_while_writing`)."""
    for message in stale_files(output.parent):
        click.echo(f"profile-first: {message}", err=True)

    def listening(r: OtlpReceiver) -> None:
        where = [f"OTLP/HTTP {r.http_endpoint}"] + ([f"OTLP/gRPC {r.grpc_endpoint}"] if r.grpc_port else [])
        click.echo(f"capturing for {seconds:g} s on {', '.join(where)} (Ctrl-C to stop early)", err=True)

    try:
        with term_as_interrupt(), signals_while_writing() as writing:
            return capture_window(seconds, output, config, buffer_spans=buffer_spans, on_progress=ProgressLine(),
                                  on_listening=listening, on_writing=writing)
    except WriteInterrupted as e:
        if isinstance(e.cause, KeyboardInterrupt):
            click.echo(f"profile-first: {e}", err=True)
            raise click.exceptions.Exit(130) from None
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"{e}; is another receiver (an OpenTelemetry Collector?) using the port? "
                        "Pick another with --http-port/--grpc-port") from None


@contextlib.contextmanager
def term_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, `timeout`, a container stop) ends the window like Ctrl-C: what arrived is
    still written instead of being lost with the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_while_writing() -> Iterator[Callable[[Capture], None]]:
    """Yields the `on_writing` hook: from then on the first Ctrl-C/SIGTERM only says where the
    data is, and the next one stops the write (the capture keeps its spool and says so)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda capture: None
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def install(capture: Capture) -> None:
        warned = False

        def second(signum: int, frame: object) -> None:
            nonlocal warned
            if warned:
                raise KeyboardInterrupt
            warned = True
            sys.stderr.write(f"\nprofile-first: still writing {capture.output}; what was received is safe in "
                             f"{capture.spool_path}. Press Ctrl-C again to stop now and keep it there "
                             f"(then: profile-first capture --recover {capture.spool_path})\n")
            sys.stderr.flush()

        for sig in previous:
            signal.signal(sig, second)

    try:
        yield install
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def summary(result: CaptureResult) -> str:
    lines = [f"{result.spans:,} spans in {result.trace_requests:,} requests → {result.traces_path}"]
    if result.metrics_path is not None:
        lines.append(f"{result.points:,} metric points in {result.metric_requests:,} requests → {result.metrics_path}")
    else:
        lines.append("no metrics received")
    if result.interrupted:
        lines.append(f"stopped early after {result.duration_s:.0f}s")
    if result.refused_full:
        lines.append(f"{result.refused_full:,} requests were told to retry (buffer full); raise --buffer-spans if frequent")
    return "\n".join(lines)
