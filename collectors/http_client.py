"""Bounded HTTP for the collectors: every request ends, every answer fits, no secret leaks.

A query API (Prometheus, a trace store, ClickHouse) is a server we do not control. Against it
each request gets:

- a **total deadline** (`Limits.deadline_s`), from connecting to the last body byte: a watchdog
  shuts the socket down when it passes, so a body trickled one byte at a time or headers that
  never end cannot hold a run (a socket timeout alone only bounds each read);
- a **size cap** on the decoded body (`Limits.max_bytes`, checked against Content-Length first
  and then as it streams), so a 500 MB or endless answer costs at most the cap in memory;
- **retries** with exponential backoff on connection failures, timeouts, 429 and 5xx, honouring a
  short Retry-After; not on a body over the cap (it would be as large again);
- **redirects** followed by hand (at most 5), keeping the method and body, and dropping every
  credential (Authorization, Cookie, basic auth, configured headers) when the target is another
  origin (scheme, host or port);
- **redaction** of every configured secret from every message it produces (`Redactor`), since
  servers echo request headers in error bodies.

`HttpClient.request` returns the final `Response` whatever its status (the caller decides what
a 4xx means) and raises `TransportError` when there is no usable answer.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_RETRY_AFTER_S = 30.0
_CHUNK = 256 * 1024
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class Limits:
    """How long and how large one request may be, and how often it is tried."""

    deadline_s: float = 30.0  # per attempt: connect, send, headers and the whole body
    max_bytes: int = 256 * 1024 * 1024  # decoded body
    retries: int = 3  # extra attempts after a connection failure, timeout, 429 or 5xx
    backoff_s: float = 0.5  # wait before retry k: backoff_s * 2**(k-1), plus up to 10% jitter

    def __post_init__(self) -> None:
        if not self.deadline_s > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {self.deadline_s!r}")
        if not self.max_bytes > 0:
            raise ValueError(f"the response size limit must be positive, not {self.max_bytes!r}")
        if self.retries < 0 or not self.backoff_s >= 0:
            raise ValueError("retries and backoff must not be negative")


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str  # after redirects, redacted


class TransportError(Exception):
    """No usable answer: `kind` is connect | tls | deadline | too_large | protocol.

    The message is one line, already redacted, and does not repeat the URL (callers name it
    and say how to raise a limit, by `kind`).
    """

    def __init__(self, kind: str, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.kind, self.message, self.attempts = kind, message, attempts


class Redactor:
    """Replaces each secret (and its URL- and base64-encoded forms) by [REDACTED]."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for s in secrets:
            s = s.strip()
            if len(s) < 4:  # too short to redact without garbling ordinary text
                continue
            # as sent, URL-encoded (query or path style), and inside a JSON string
            forms.update({s, quote(s, safe=""), quote(s, safe="/"), quote(s, safe="+"), quote_plus(s),
                          json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1]})
        # Longest first, so a secret containing another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def __bool__(self) -> bool:
        return bool(self._forms)


# Credentials as headers. Values of these (and of configured headers not known to be harmless
# routing keys) count as secrets.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
NON_SECRET_HEADERS = frozenset({"x-scope-orgid", "thanos-tenant", "x-thanos-tenant", "accountid", "projectid",
                                "user-agent", "accept", "content-type"})


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The secret parts of request headers: whole values, and the credential after a scheme word
    (`Bearer abc` -> also `abc`), and the user:password inside Basic."""
    out: list[str] = []
    for name, value in headers.items():
        if name.lower() in NON_SECRET_HEADERS:
            continue
        out.append(value)
        scheme, _, cred = value.partition(" ")
        if cred:
            out.append(cred)
            if scheme.lower() == "basic":
                with contextlib.suppress(ValueError):
                    out.extend(base64.b64decode(cred, validate=True).decode("utf-8", "replace").split(":", 1))
        if name.lower() == "cookie":
            out.extend(part.partition("=")[2] for part in value.split(";"))
    return out


def basic_secrets(user: str, password: str) -> list[str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [password, token, f"{user}:{password}"]


# -- the deadline watchdog --------------------------------------------------------------------

_current = threading.local()


class _Deadline:
    """Shuts down every socket used by one request attempt when its time is up."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if self.expired:
                _shutdown(sock)
            else:
                self._socks.append(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._socks:
                _shutdown(sock)

    def __enter__(self) -> _Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()
        _current.deadline = None


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the TLS-level shutdown would change the
    # SSL object under the thread reading from it. Shutting the TCP socket wakes that read.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched:
    """Mixin for urllib3 connections: hand the socket to the current deadline before waiting
    for the answer (covers reused keep-alive connections too)."""

    sock: socket.socket | None

    def getresponse(self, *args: object, **kw: object):  # type: ignore[no-untyped-def]
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(self.sock)
        return super().getresponse(*args, **kw)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: object, **kw: object) -> None:
        super().init_poolmanager(*args, **kw)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = _POOLS  # type: ignore[assignment]

    def proxy_manager_for(self, proxy: str, **kw: object):  # type: ignore[no-untyped-def]
        manager = super().proxy_manager_for(proxy, **kw)
        manager.pool_classes_by_scheme = _POOLS
        return manager


# -- the client -------------------------------------------------------------------------------


@dataclass
class HttpClient:
    """One server's client. `headers` and `auth` are sent to the configured origin only."""

    base_url: str
    limits: Limits = field(default_factory=Limits)
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None  # basic auth
    verify: bool | str = True  # False, True (system CAs) or a CA bundle path
    redact: Redactor = field(default_factory=Redactor)
    attempts: int = 0  # HTTP requests sent so far, retries and redirects included

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._session = requests.Session()
        self._session.mount("http://", _Adapter())
        self._session.mount("https://", _Adapter())

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, form: Mapping[str, str] | None = None,
                params: Mapping[str, str] | None = None) -> Response:
        """`method` base_url + path; `form` is sent as an x-www-form-urlencoded body. Retries,
        then returns the last answer (even a 5xx) or raises TransportError."""
        url = self.base_url + path
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._follow(method, url, form, params)
            except TransportError as exc:
                if exc.kind == "too_large" or attempt > self.limits.retries:
                    exc.attempts = attempt
                    raise
                self._sleep(attempt, None)
                continue
            if resp.status in RETRY_STATUS and attempt <= self.limits.retries:
                self._sleep(attempt, resp.headers.get("retry-after"))
                continue
            return resp

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        wait = self.limits.backoff_s * 2 ** (attempt - 1)
        if retry_after:
            with contextlib.suppress(ValueError):
                wait = max(wait, min(float(retry_after), MAX_RETRY_AFTER_S))
        time.sleep(wait * (1 + 0.1 * random.random()))

    def _follow(self, method: str, url: str, form: Mapping[str, str] | None,
                params: Mapping[str, str] | None) -> Response:
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            same = _origin(url) == origin
            resp = self._once(method, url, form, params, credentials=same)
            if resp.status not in REDIRECT_STATUS or "location" not in resp.headers:
                return resp
            url = urljoin(url, resp.headers["location"])
            params = None  # the Location carries its own query
            if resp.status == 303:
                method, form = "GET", None
        raise TransportError("protocol", f"more than {MAX_REDIRECTS} redirects")

    def _once(self, method: str, url: str, form: Mapping[str, str] | None, params: Mapping[str, str] | None,
              credentials: bool) -> Response:
        lim = self.limits
        self.attempts += 1
        headers = dict(self.headers) if credentials else {}
        headers.setdefault("Accept-Encoding", "gzip")
        with _Deadline(lim.deadline_s) as deadline:
            try:
                r = self._session.request(
                    # verify per request: a session's verify loses to $REQUESTS_CA_BUNDLE
                    method, url, data=form, params=params, headers=headers, stream=True, allow_redirects=False,
                    verify=self.verify,
                    auth=self.auth if credentials else None, timeout=(min(lim.deadline_s, 10.0), lim.deadline_s))
                with contextlib.closing(r):
                    body = self._read(r)
                if deadline.expired:  # the shutdown can look like a normal end of headers or body
                    raise TimeoutError
                return Response(r.status_code, {k.lower(): v for k, v in r.headers.items()}, body,
                                    self.redact(_strip_userinfo(r.url)))
            except TransportError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure on the wire becomes one line
                if deadline.expired:
                    raise TransportError(
                        "deadline", f"timed out: no complete answer within the {lim.deadline_s:g} s deadline") from None
                raise self._wire_error(exc) from None

    def _read(self, r: requests.Response) -> bytes:
        cap = self.limits.max_bytes
        declared = r.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:  # compressed or not, decoded it is larger
            raise TransportError("too_large", _too_large(cap, f"declares {int(declared):,} bytes"))
        parts: list[bytes] = []
        size = 0
        for chunk in r.iter_content(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise TransportError("too_large", _too_large(cap, "was cut there"))
            parts.append(chunk)
        return b"".join(parts)

    def _wire_error(self, exc: Exception) -> TransportError:
        if isinstance(exc, requests.exceptions.SSLError):
            return TransportError("tls", self.redact(f"TLS error: {_innermost(exc)}"))
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return TransportError("connect", "timed out connecting")
        if isinstance(exc, requests.exceptions.Timeout):
            return TransportError("deadline", "timed out waiting for an answer")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return TransportError("connect", self.redact(f"connection failed: {_innermost(exc)}"))
        return TransportError("protocol", self.redact(f"{type(exc).__name__}: {_innermost(exc)}"))


def _too_large(cap: int, how: str) -> str:
    return f"the answer exceeds the {cap / 2**20:,.6g} MiB response limit and {how}"


def _innermost(exc: BaseException) -> str:
    """The most specific one-line reason in an exception chain, without URLs urllib3 adds."""
    seen: BaseException | None = exc
    reason = str(exc)
    for _ in range(8):
        inner = getattr(seen, "reason", None) or (seen.args[0] if seen and seen.args else None)
        if not isinstance(inner, BaseException):
            break
        seen, reason = inner, str(inner)
    text = reason.split("Failed to establish a new connection:", 1)[-1]
    text = text.split(" with url: ", 1)[0]
    return " ".join(text.split())[:300]


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme)
    return p.scheme, (p.hostname or "").lower(), port


def _strip_userinfo(url: str) -> str:
    p = urlsplit(url)
    if "@" not in p.netloc:
        return url
    return p._replace(netloc=p.netloc.rpartition("@")[2]).geturl()

