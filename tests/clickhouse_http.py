"""A loopback ClickHouse HTTP interface whose queries run in the real engine (chDB).

No current clickhouse-server can be installed here (Debian's 18.16 predates the exporter's `Map`
and `DateTime64` columns; PyPI and npm ship no server binary), so `--clickhouse http://...` is
tested end to end through clickhouse-connect against this process: HTTP is this module's, every
query, parameter, setting, format and error is ClickHouse's own (chDB 26.x, the server's code
base). What it does as the server's HTTP handler does:

- `GET /ping` and `GET /` answer `Ok.`; queries come as `?query=` plus the body (POST or GET), or
  as a multipart form (`query` and `param_*` fields), a request body decoded by its
  Content-Encoding (gzip, deflate, zstd, lz4);
- `param_NAME` values bind `{NAME:Type}` placeholders server-side; every other URL parameter that
  is not one of the handler's own (`database`, `default_format`, `query_id`, `session_id`, ...)
  is a setting for this query only (an unknown one fails with UNKNOWN_SETTING, as on a server);
- users: Basic auth, `X-ClickHouse-User`/`X-ClickHouse-Key` or `?user=&password=`; anything but
  the configured user and password is `Code: 516 AUTHENTICATION_FAILED`;
- the result in the format the query names (`FORMAT ...`, else `default_format`, else
  TabSeparated), compressed per Accept-Encoding when `enable_http_compression=1`, sent chunked
  with `X-ClickHouse-Query-Id`, `-Format`, `-Timezone` and `-Summary` headers;
- errors: the engine's message (`Code: N. DB::Exception: ... (NAME) (version ...)`) with
  `X-ClickHouse-Exception-Code: N` and the HTTP status the server maps that code to.

Queries run one at a time (one chDB session per process); the client under test sends one at a
time too. Run as `python -m tests.clickhouse_http --path DB --port N [--user U --password-file F]
[--https-port M --tls-cert PEM --tls-key PEM]` (HTTPS beside HTTP, as a server's https_port);
it prints `ready` when it listens. A test stalls it for real with SIGSTOP to cause a read timeout.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import re
import sys
import threading
import uuid
import zlib
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.frame
import zstandard

# URL parameters the HTTP handler reads itself; any other one is a setting.
_HANDLER_PARAMS = {"query", "database", "default_format", "query_id", "session_id", "session_timeout",
                   "session_check", "compress", "decompress", "user", "password", "quota_key", "stacktrace",
                   "buffer_size", "wait_end_of_query", "role", "client_protocol_version", "close_session"}
# ClickHouse's exception code -> HTTP status (the server's HTTPHandler mapping, the codes met here).
_STATUS = {
    194: 401,  # REQUIRED_PASSWORD
    192: 403, 193: 403, 516: 403, 497: 403, 164: 403,  # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, ACCESS_DENIED, READONLY
    27: 400, 62: 400, 26: 400, 32: 400, 38: 400, 6: 400, 72: 400, 41: 400, 36: 400, 43: 400,  # parse, syntax, bad args
    60: 404, 46: 404, 47: 404, 50: 404, 81: 404, 115: 404, 73: 404, 63: 404,  # UNKNOWN_TABLE/FUNCTION/... /SETTING
    202: 429,  # TOO_MANY_SIMULTANEOUS_QUERIES
    159: 408,  # TIMEOUT_EXCEEDED
}
_CODE = re.compile(r"Code: (\d+)\.")
_DECODERS = {
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
    "lz4": lz4.frame.decompress,
}
_ENCODERS = {  # in the order a response encoding is chosen from Accept-Encoding
    "zstd": lambda b: zstandard.ZstdCompressor(level=1).compress(b),
    "lz4": lz4.frame.compress,
    "gzip": lambda b: gzip.compress(b, compresslevel=1),
    "deflate": zlib.compress,
}
CHUNK = 1 << 20


class Engine:
    """One chDB session, one query at a time, settings scoped to the query."""

    def __init__(self, path: str) -> None:
        from chdb import session

        self._session = session.Session(path)
        self._lock = threading.Lock()
        self.version = str(self._session.query("SELECT version()", "TabSeparated")).strip()

    def run(self, sql: str, fmt: str, params: dict[str, str], settings: dict[str, str], database: str | None):
        with self._lock:
            applied = []
            try:
                self._session.query(f"USE {_identifier(database or 'default')}")
                for name, value in settings.items():
                    self._session.query(f"SET {_identifier(name)} = {_literal(value)}")
                    applied.append(name)
                return self._session.query(sql, fmt, params=params)
            finally:
                for name in applied:
                    self._session.query(f"SET {_identifier(name)} = DEFAULT")


class Handler(BaseHTTPRequestHandler):
    server_version = "ClickHouse"
    protocol_version = "HTTP/1.1"
    engine: Engine
    user: str
    password: str

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/ping", "/") and "query=" not in self.path:
            self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        self._query(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else self._read_chunked()
        self._query(body)

    def _read_chunked(self) -> bytes:
        if "chunked" not in (self.headers.get("Transfer-Encoding") or ""):
            return b""
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if not size:
                self.rfile.readline()
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()

    def _query(self, body: bytes) -> None:
        url = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        try:
            encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
            if body and encoding and encoding != "identity":
                body = _DECODERS[encoding](body)
            fields = _form_fields(self.headers.get("Content-Type") or "", body)
            if fields is not None:
                url.update(fields)
                body = b""
            self._authenticate(url)
        except _Refused as e:
            self._error(e.code, e.message)
            return
        except (KeyError, ValueError, OSError) as e:
            self._error(27, f"Cannot read the request: {e}. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)")
            return
        sql = "\n".join(p for p in (url.get("query", ""), body.decode("utf-8", "replace")) if p.strip())
        params = {k[len("param_"):]: v for k, v in url.items() if k.startswith("param_")}
        settings = {k: v for k, v in url.items() if k not in _HANDLER_PARAMS and not k.startswith("param_")}
        fmt = url.get("default_format") or "TabSeparated"
        query_id = url.get("query_id") or str(uuid.uuid4())
        try:
            result = self.engine.run(sql, fmt, params, settings, url.get("database"))
        except Exception as e:  # the engine's own error: pass it on as the server does
            text = str(e).strip()
            m = _CODE.search(text)
            self._error(int(m.group(1)) if m else 1001, text[m.start() + len(m.group(0)):].strip() if m else text,
                        query_id=query_id)
            return
        data = result.bytes()
        headers = {
            "Content-Type": "application/octet-stream" if fmt not in ("TabSeparated", "JSON") else "text/plain; charset=UTF-8",
            "X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Format": _format_of(sql, fmt),
            "X-ClickHouse-Timezone": "UTC", "X-ClickHouse-Server-Display-Name": "profile-first-standin",
            "X-ClickHouse-Summary": json.dumps({"read_rows": str(result.rows_read()),
                                                "read_bytes": str(result.bytes_read()),
                                                "elapsed_ns": str(int(result.elapsed() * 1e9))}),
        }
        if settings.get("enable_http_compression") == "1":
            accepted = self.headers.get("Accept-Encoding") or ""
            chosen = next((name for name in _ENCODERS if name in accepted), None)
            if chosen:
                data = _ENCODERS[chosen](data)
                headers["Content-Encoding"] = chosen
        self._send(200, data, headers, chunked=True)

    def _authenticate(self, url: dict[str, str]) -> None:
        user, password = url.get("user"), url.get("password", "")
        if self.headers.get("X-ClickHouse-User"):
            user, password = self.headers["X-ClickHouse-User"], self.headers.get("X-ClickHouse-Key", "")
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
        user = user or "default"
        if (user, password) != (self.user, self.password):
            raise _Refused(516, f"{user}: Authentication failed: password is incorrect, or there is no user with such "
                                f"name. (AUTHENTICATION_FAILED)")

    def _error(self, code: int, message: str, query_id: str | None = None) -> None:
        body = f"Code: {code}. {message if message.startswith('DB::') else 'DB::Exception: ' + message} " \
               f"(version {self.engine.version} (official build))\n"
        headers = {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": str(code)}
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        self._send(_STATUS.get(code, 500), body.encode(), headers)

    def _send(self, status: int, data: bytes, headers: dict[str, str], chunked: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), CHUNK):
                piece = data[i:i + CHUNK]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that hung up: nothing to report
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"Code: {code}. DB::Exception: {message}")
        self.code, self.message = code, message


def _form_fields(content_type: str, body: bytes) -> dict[str, str] | None:
    """The fields of a multipart/form-data body, or None for a plain one (any other content type,
    `application/x-www-form-urlencoded` from `curl -d` included, is query text, as on a server)."""
    if content_type.startswith("multipart/form-data"):
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode("utf-8")
                for part in msg.iter_parts()}
    return None


def _format_of(sql: str, default: str) -> str:
    m = re.search(r"\bFORMAT\s+(\w+)\s*;?\s*$", sql, re.IGNORECASE)
    return m.group(1) if m else default


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise _Refused(62, f"Syntax error: bad identifier {name!r}. (SYNTAX_ERROR)")
    return name


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", required=True, help="chDB database directory to serve")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="default")
    ap.add_argument("--password-file", help="file holding the user's password (none: empty)")
    ap.add_argument("--https-port", type=int, help="also serve HTTPS here, with --tls-cert and --tls-key")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args(argv)
    password = open(args.password_file, encoding="utf-8").read().strip() if args.password_file else ""
    handler = type("BoundHandler", (Handler,), {"engine": Engine(args.path), "user": args.user, "password": password})
    servers = [_Server(("127.0.0.1", args.port), handler)]
    if args.https_port:
        import ssl

        tls = _Server(("127.0.0.1", args.https_port), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        tls.socket = context.wrap_socket(tls.socket, server_side=True)
        servers.append(tls)
    for extra in servers[1:]:
        threading.Thread(target=extra.serve_forever, daemon=True).start()
    print("ready", flush=True)
    try:
        servers[0].serve_forever()
    finally:
        for server in servers:
            server.server_close()


if __name__ == "__main__":
    sys.exit(main())
