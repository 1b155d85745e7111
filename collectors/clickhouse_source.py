"""The two ways to reach an `otel_traces` table, behind one small interface.

- `--clickhouse https://host:8443` talks to a server's HTTP interface through clickhouse-connect.
  Credentials come only from `$PROFILE_FIRST_CLICKHOUSE_USER` and
  `$PROFILE_FIRST_CLICKHOUSE_PASSWORD` or `$PROFILE_FIRST_CLICKHOUSE_PASSWORD_FILE` (or the
  `password_file` setting), never from arguments, and never appear in an error message.
- `--clickhouse chdb:PATH` runs the same SQL in chDB, ClickHouse's engine in this process, over
  the database directory at PATH (a table exported from a cluster, or a laptop's own store).

Both return query results as a stream of Arrow record batches; queries always go with bound
parameters (`{name:Type}` placeholders), never with values pasted into the text. Both drivers are
optional (`pip install 'profile-first[clickhouse]'`) and imported only when a ClickHouse source is
used, so the CLI starts as fast without them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

ENV_USER = "PROFILE_FIRST_CLICKHOUSE_USER"
ENV_PASSWORD = "PROFILE_FIRST_CLICKHOUSE_PASSWORD"
ENV_PASSWORD_FILE = "PROFILE_FIRST_CLICKHOUSE_PASSWORD_FILE"
CHDB_PREFIX = "chdb:"
INSTALL_HINT = "install the ClickHouse extra: pip install 'profile-first[clickhouse]'"


class ClickHouseError(Exception):
    """The store cannot be reached or refused a query. One line, user-facing, no secrets."""


@dataclass(frozen=True)
class Transport:
    """HTTP settings (no secrets: those come from the environment or a file)."""

    timeout: float = 300.0  # seconds: the read timeout, and the server's max_execution_time
    connect_timeout: float = 10.0
    ca_bundle: str | None = None  # PEM file of CAs to trust instead of the system store
    insecure_skip_verify: bool = False  # opt-in only: disables TLS certificate checks
    password_file: str | None = None


class Source(Protocol):
    """A connection that runs one query at a time and streams its result."""

    engine: str  # "clickhouse" (a server over HTTP) or "chdb" (in process)
    where: str  # what to call it in messages and the report: the URL without credentials, or the path

    def batches(self, sql: str, params: dict[str, Any]) -> Iterator[Any]:
        """The result of `sql` as pyarrow RecordBatches, parameters bound by the engine."""

    def close(self) -> None: ...


def open_source(spec: str, transport: Transport = Transport()) -> Source:
    """A Source for `spec`: `chdb:PATH` or an http(s) URL."""
    if spec.startswith(CHDB_PREFIX):
        return ChdbSource(spec[len(CHDB_PREFIX):])
    return HttpSource(spec, transport)


class HttpSource:
    engine = "clickhouse"

    def __init__(self, url: str, t: Transport) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClickHouseError(f"--clickhouse {_redact_url(url)!r}: expected http(s)://HOST[:PORT] or chdb:PATH")
        if parts.username or parts.password:
            raise ClickHouseError(f"--clickhouse: credentials in the URL are not accepted (they end up in shell history "
                                  f"and `ps`); set ${ENV_USER} and ${ENV_PASSWORD} or ${ENV_PASSWORD_FILE}")
        self.where = _redact_url(url)
        user, password = credentials(t)
        try:
            import clickhouse_connect
        except ImportError as e:
            raise ClickHouseError(f"--clickhouse {self.where} needs clickhouse-connect: {INSTALL_HINT}") from e
        secure = parts.scheme == "https"
        self._secrets = [s for s in (password,) if s]
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname, port=parts.port or (8443 if secure else 8123), interface=parts.scheme,
                username=user or "default", password=password or "", secure=secure,
                verify=not t.insecure_skip_verify, ca_cert=t.ca_bundle, connect_timeout=t.connect_timeout,
                send_receive_timeout=t.timeout, autogenerate_session_id=False, compress=True,
                # Parameters (the sample's trace ids) in the request body, not the URL, whatever their size.
                form_encode_query_params=True,
            )
        except Exception as e:  # the driver raises its own and urllib3's errors
            raise ClickHouseError(f"ClickHouse at {self.where}: {self._clean(e)}") from None

    def batches(self, sql: str, params: dict[str, Any]) -> Iterator[Any]:
        try:
            with self._client.query_arrow_stream(sql, parameters=params) as stream:
                yield from stream
        except ClickHouseError:
            raise
        except Exception as e:
            raise ClickHouseError(f"ClickHouse at {self.where}: {self._clean(e)}") from None

    def close(self) -> None:
        self._client.close()

    def _clean(self, e: BaseException) -> str:
        text = " ".join(str(e).split())
        for s in self._secrets:
            text = text.replace(s, "[REDACTED]")
        return _first_line(text)


# chDB runs the queries in this process, so its memory is ours: aggregations and sorts past
# 256 MiB spill to disk instead of growing with the window (the per-trace grouping of the N+1
# figures is the one state that grows with it). No max_memory_usage: chDB's streaming queries
# count memory they have already freed towards it, and fail well below the real use.
CHDB_MEMORY_SETTINGS = {
    "max_bytes_before_external_group_by": 256 << 20,
    "max_bytes_before_external_sort": 256 << 20,
}


class ChdbSource:
    engine = "chdb"

    def __init__(self, path: str) -> None:
        if not path or not Path(path).is_dir():
            raise ClickHouseError(f"--clickhouse chdb:{path}: not a directory; give chDB's database directory "
                                  f"(where the exporter's table was created or restored)")
        self.where = str(path)
        try:
            from chdb import session
        except ImportError as e:
            raise ClickHouseError(f"--clickhouse chdb:{path} needs chDB: {INSTALL_HINT}") from e
        try:
            self._session = session.Session(str(path))
            for name, value in CHDB_MEMORY_SETTINGS.items():
                self._session.query(f"SET {name} = {value}")
        except Exception as e:
            raise ClickHouseError(f"chDB at {path}: {_first_line(str(e))}") from None

    def batches(self, sql: str, params: dict[str, Any]) -> Iterator[Any]:
        try:
            stream = self._session.send_query(sql, "Arrow", params={k: format_param(v) for k, v in params.items()})
            yield from stream.record_batch(rows_per_batch=65536)
        except Exception as e:
            raise ClickHouseError(f"chDB at {self.where}: {_first_line(str(e))}") from None

    def close(self) -> None:
        self._session.close()


def credentials(t: Transport, env: dict[str, str] | None = None) -> tuple[str, str]:
    env = dict(os.environ) if env is None else env
    user = env.get(ENV_USER) or ""
    password = env.get(ENV_PASSWORD) or ""
    path = t.password_file or env.get(ENV_PASSWORD_FILE)
    if not password and path:
        try:
            password = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ClickHouseError(f"ClickHouse password file {path}: {e.strerror or e}") from None
    return user, password


def format_param(value: object, top: bool = True) -> str:
    """A parameter value in the text form ClickHouse parses for `{name:Type}` (what the HTTP
    interface's `param_name=` carries): escaped, quoted inside arrays and tuples. chDB takes
    parameters as this text; clickhouse-connect formats the same way on its own."""
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        return escaped if top else "'" + escaped.replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(format_param(v, False) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ",".join(format_param(v, False) for v in value) + ")"
    raise TypeError(f"unsupported parameter type {type(value).__name__}")


def _redact_url(url: str) -> str:
    """The URL with any user:password@ and query string removed."""
    p = urlsplit(url)
    host = p.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if p.port:
        netloc += f":{p.port}"
    return f"{p.scheme}://{netloc}{p.path}" if p.scheme else re.sub(r"//[^@/]*@", "//", url)


def _first_line(text: str) -> str:
    text = text.strip()
    # Server exceptions carry a stack trace after the message; keep the message.
    line = text.splitlines()[0] if text else "unknown error"
    return line[:500]
