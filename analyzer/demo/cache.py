"""A tiny cache server speaking the memcached text protocol, and a traced client for it.

The demo may not need anything installed, so instead of memcached itself it runs this server
(`python -m analyzer.demo.cache`, loopback only): `get`, `set` with an expiry, `delete`,
`version`, `quit`. The client makes one CLIENT span per command carrying the database/cache
semantic conventions a memcached instrumentation would (`db.system`, `db.operation`,
`db.statement` with the key hidden, `server.address`/`server.port`), so the analysis sees
real cache round trips on the wire.
"""

from __future__ import annotations

import argparse
import os
import socket
import socketserver
import sys
import threading
import time
from collections import OrderedDict

from opentelemetry.trace import SpanKind, Tracer

MAX_ITEMS = 100_000
MAX_VALUE_BYTES = 1 << 20
_MONTH_S = 30 * 24 * 3600  # memcached: larger expiries are absolute unix times


class _Store:
    def __init__(self) -> None:
        self._items: OrderedDict[bytes, tuple[float, int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> tuple[int, bytes] | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            expires, flags, value = item
            if expires and expires <= time.time():
                del self._items[key]
                return None
            return flags, value

    def set(self, key: bytes, flags: int, exptime: int, value: bytes) -> None:
        expires = 0.0 if exptime == 0 else (float(exptime) if exptime > _MONTH_S else time.time() + exptime)
        with self._lock:
            self._items[key] = (expires, flags, value)
            self._items.move_to_end(key)
            while len(self._items) > MAX_ITEMS:  # bounded: evict the oldest
                self._items.popitem(last=False)

    def delete(self, key: bytes) -> bool:
        with self._lock:
            return self._items.pop(key, None) is not None


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        store = self.server.store
        while line := self.rfile.readline(4096):
            parts = line.split()
            if not parts:
                continue
            cmd = parts[0].lower()
            if cmd == b"get" and len(parts) >= 2:
                out = []
                for key in parts[1:]:
                    hit = store.get(key)
                    if hit is not None:
                        out.append(b"VALUE %s %d %d\r\n%s\r\n" % (key, hit[0], len(hit[1]), hit[1]))
                self.wfile.write(b"".join(out) + b"END\r\n")
            elif cmd == b"set" and len(parts) in (5, 6):
                try:
                    flags, exptime, size = int(parts[2]), int(parts[3]), int(parts[4])
                except ValueError:
                    self.wfile.write(b"CLIENT_ERROR bad command line format\r\n")
                    continue
                if not 0 <= size <= MAX_VALUE_BYTES:
                    self.wfile.write(b"SERVER_ERROR object too large for cache\r\n")
                    return
                data = self.rfile.read(size + 2)
                if len(data) != size + 2 or data[-2:] != b"\r\n":
                    self.wfile.write(b"CLIENT_ERROR bad data chunk\r\n")
                    return
                store.set(parts[1], flags, exptime, data[:-2])
                if len(parts) == 5:  # the sixth word is "noreply"
                    self.wfile.write(b"STORED\r\n")
            elif cmd == b"delete" and len(parts) >= 2:
                self.wfile.write(b"DELETED\r\n" if store.delete(parts[1]) else b"NOT_FOUND\r\n")
            elif cmd == b"version":
                self.wfile.write(b"VERSION profile-first-demo-1\r\n")
            elif cmd == b"quit":
                return
            else:
                self.wfile.write(b"ERROR\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.store = _Store()


class CacheClient:
    """One connection to the cache server; each command is a CLIENT span of `tracer`.

    Not thread-safe: use one client per thread.
    """

    def __init__(self, host: str, port: int, tracer: Tracer) -> None:
        self.host, self.port = host, port
        self._tracer = tracer
        self._sock = socket.create_connection((host, port), timeout=5)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self._sock.makefile("rb")

    def _span(self, op: str, statement: str):  # noqa: ANN202 - a span context manager
        return self._tracer.start_as_current_span(op, kind=SpanKind.CLIENT, attributes={
            "db.system": "memcached",
            "db.operation": op,
            "db.statement": statement,
            "server.address": self.host,
            "server.port": self.port,
            "network.transport": "tcp",
        })

    def get(self, key: str) -> bytes | None:
        with self._span("get", "get ?") as span:
            self._sock.sendall(b"get %s\r\n" % key.encode())
            line = self._file.readline()
            value = None
            if line.startswith(b"VALUE "):
                size = int(line.split()[3])
                value = self._file.read(size + 2)[:-2]
                line = self._file.readline()
            if line != b"END\r\n":
                raise OSError(f"cache: unexpected reply {line!r}")
            span.set_attribute("db.response.returned_rows", 0 if value is None else 1)
            return value

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        with self._span("set", "set ? ? ? ?"):
            self._sock.sendall(b"set %s 0 %d %d\r\n%s\r\n" % (key.encode(), ttl_s, len(value), value))
            line = self._file.readline()
            if line != b"STORED\r\n":
                raise OSError(f"cache: unexpected reply {line!r}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Tiny memcached-text-protocol cache on 127.0.0.1 (profile-first demo).")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long, whatever happens")
    args = p.parse_args(argv)
    server = _Server(args.port)
    threading.Thread(target=server.serve_forever, name="cache", daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    parent = os.getppid()
    deadline = time.monotonic() + args.max_seconds
    # Stopped by SIGTERM from the demo; exits on its own if the demo died or overran.
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.5)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
