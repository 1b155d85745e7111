"""A loopback HTTP server that misbehaves on purpose, for faults no real server produces on demand:
bodies trickled a byte at a time, endless bodies, echoed credentials, 5xx before success, redirects
to another origin. Each request is read fully, then `handler(request, sock)` writes whatever raw
bytes it likes to the socket. Requests are recorded; the server stops (by its own thread) on exit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("latin-1")).items()}


Handler = Callable[[Request, socket.socket], None]


def reply(sock: socket.socket, status: int, body: bytes, ctype: str = "application/json",
          extra: dict[str, str] | None = None) -> None:
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {ctype}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


@dataclass
class Misbehaving:
    handler: Handler
    seen: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Misbehaving:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self._thread.join(5)
        self._listener.close()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _serve(self) -> None:
        while not self._stop.is_set():
            conn, _ = self._listener.accept()
            if self._stop.is_set():
                conn.close()
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            need = int(headers.get("content-length", "0"))
            while len(body) < need:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            req = Request(method, path, headers, body)
            self.seen.append(req)
            self.handler(req, conn)
