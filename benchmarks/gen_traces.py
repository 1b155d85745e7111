"""Realistic OTLP traces at any size, in every file form the collectors read.

    python -m benchmarks.gen_traces --spans 1000000 --out DIR [--seed N]

writes `DIR/traces-N.pb` (one ExportTraceServiceRequest), `traces-N.binpb` (the Collector file
exporter's `proto` format: each batch preceded by a 4-byte big-endian length), `traces-N.jsonl`
(OTLP/JSON, one batch per line), each also as `.gz`, and `traces-N.manifest.json`.

The simulated system: gateways take requests and fan out over HTTP to backend services arranged in
levels (a DAG, so trees are finite); backends query their own PostgreSQL or MySQL database (some
endpoints with an N+1 loop), read through a Redis cache, publish to Kafka topics that worker
services consume, and run internal spans (some with `code.*`). Each service picks a language and
old, new or duplicated semantic-convention names, as real fleets mid-migration do. Latencies are
lognormal with a rare heavy tail, and a few requests fail with a 500 and an exception event.

Speed: the trees are built by a plain Python walk (a few random draws per span), everything
per-span afterwards is numpy (ids, timestamps, batching) and the wire bytes are assembled from
pre-encoded pieces rather than through protobuf objects (building upb messages field by field costs
~9 us/span). The hand-assembled bytes are canonical (equal to `SerializeToString` of the parsed
message, asserted in tests/test_gen_traces.py). JSON lines are the project's own encoder,
`collectors.otlp_json.to_otlp_json_line`, on the parsed batch; `--json-encoder reference` uses the
`MessageToDict` path it is byte-identical to (tests/test_otlp_json.py), ~3x slower.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import queue
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collectors.otlp_json import reference_json_line, to_otlp_json_line

# Fixed epoch so a seed gives the same bytes on any day: 2026-11-23T00:00:00Z.
EPOCH_NS = 1_795_392_000 * 1_000_000_000
FORMATS = ("pb", "binpb", "jsonl")

INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 1, 2, 3, 4, 5
UNSET, ERROR = 0, 2
TAIL_P = 0.003  # per latency draw: a lock wait, GC pause or retransmit multiplies it by 10-60


# --------------------------------------------------------------------------- protobuf wire pieces


def _varint_slow(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_varint_slow(i) for i in range(1 << 14)]


def _varint(n: int) -> bytes:
    return _VARINTS[n] if n < 16384 else _varint_slow(n)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


AttrValue = str | int | bool


def _pb_any(value: AttrValue) -> bytes:
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    return _ld(b"\x0a", value.encode())


def _pb_kv(tag: bytes, key: str, value: AttrValue) -> bytes:
    return _ld(tag, _ld(b"\x0a", key.encode()) + _ld(b"\x12", _pb_any(value)))


_STATUS_PB = {UNSET: b"\x7a\x00", ERROR: b"\x7a\x02\x18\x02"}
# SpanFlags as the SDK exporters set them: HAS_IS_REMOTE, plus IS_REMOTE for a remote parent.
_FLAGS_PB = (b"\x85\x01\x00\x01\x00\x00", b"\x85\x01\x00\x03\x00\x00")


# --------------------------------------------------------------------------- the simulated system


@dataclass(frozen=True)
class _Lang:
    sdk_version: str
    runtime: str
    runtime_version: str
    scopes: dict[str, tuple[str, str]]  # role -> (instrumentation scope name, version)


_PY, _JV = "0.66b1", "2.18.0-alpha"
LANGS: dict[str, _Lang] = {
    "python": _Lang("1.45.1", "CPython", "3.12.7", {
        "server": ("opentelemetry.instrumentation.fastapi", _PY),
        "client": ("opentelemetry.instrumentation.requests", _PY),
        "postgresql": ("opentelemetry.instrumentation.psycopg2", _PY),
        "mysql": ("opentelemetry.instrumentation.pymysql", _PY),
        "redis": ("opentelemetry.instrumentation.redis", _PY),
        "kafka": ("opentelemetry.instrumentation.kafka", _PY)}),
    "java": _Lang("1.52.0", "OpenJDK Runtime Environment", "21.0.5+11-LTS", {
        "server": ("io.opentelemetry.tomcat-10.0", _JV),
        "client": ("io.opentelemetry.java-http-client", _JV),
        "postgresql": ("io.opentelemetry.jdbc", _JV),
        "mysql": ("io.opentelemetry.jdbc", _JV),
        "redis": ("io.opentelemetry.lettuce-5.1", _JV),
        "kafka": ("io.opentelemetry.kafka-clients-2.6", _JV)}),
    "go": _Lang("1.38.0", "go", "go1.24.4", {
        "server": ("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.63.0"),
        "client": ("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.63.0"),
        "postgresql": ("github.com/XSAM/otelsql", "0.40.0"),
        "mysql": ("github.com/XSAM/otelsql", "0.40.0"),
        "redis": ("github.com/redis/go-redis/extra/redisotel", "9.12.0"),
        "kafka": ("github.com/IBM/sarama/otelsarama", "0.43.0")}),
    "nodejs": _Lang("2.1.0", "nodejs", "22.11.0", {
        "server": ("@opentelemetry/instrumentation-http", "0.204.0"),
        "client": ("@opentelemetry/instrumentation-http", "0.204.0"),
        "postgresql": ("@opentelemetry/instrumentation-pg", "0.57.0"),
        "mysql": ("@opentelemetry/instrumentation-mysql2", "0.51.0"),
        "redis": ("@opentelemetry/instrumentation-ioredis", "0.52.0"),
        "kafka": ("@opentelemetry/instrumentation-kafkajs", "0.14.0")}),
    "dotnet": _Lang("1.12.0", ".NET", "8.0.11", {
        "server": ("Microsoft.AspNetCore", ""),
        "client": ("System.Net.Http", ""),
        "postgresql": ("Npgsql", "9.0.3"),
        "mysql": ("MySqlConnector", "2.4.0"),
        "redis": ("OpenTelemetry.Instrumentation.StackExchangeRedis", "1.12.0-beta.2"),
        "kafka": ("Confluent.Kafka.Extensions.OpenTelemetry", "0.4.0")}),
}
_LANG_WEIGHTS = {"java": 3, "go": 3, "python": 3, "nodejs": 2, "dotnet": 1}

_BACKENDS = (
    "users auth orders cart catalog inventory pricing payments billing shipping search "
    "recommendations reviews notifications accounts profiles promotions coupons tax fraud ledger "
    "invoices media ratings wishlist sessions geo currency fulfillment warehouse returns loyalty "
    "subscriptions checkout content feature-flags identity quotes"
).split()
_GATEWAYS = ("api-gateway", "web-bff", "mobile-bff")
_WORKERS = ("email-worker", "search-indexer", "audit-consumer", "analytics-ingest",
            "webhook-dispatcher", "ledger-consumer")
_TABLES = ("orders order_items customers products inventory payments invoices shipments carts "
           "cart_items reviews prices coupons accounts sessions addresses notifications events "
           "audit_log users").split()
_EXCEPTIONS = (("TimeoutError", "timed out waiting for a connection from the pool"),
               ("ValueError", "invalid state transition: shipped -> pending"),
               ("ConnectionResetError", "connection reset by peer"))
_CPU_WORK = ("validate_request", "serialize_response", "render_template", "apply_discounts",
             "compute_scores", "encode_payload", "check_permissions", "build_query")


@dataclass
class _Service:
    idx: int
    name: str
    role: str  # gateway | backend | worker
    level: int
    lang: str
    flavor: str  # semconv names: old | new | dup (both, as OTEL_SEMCONV_STABILITY_OPT_IN=*/dup)
    first_inst: int
    n_inst: int
    batch_size: int
    db: tuple[str, str, int, str] | None = None  # (system, host, port, database)
    cache_host: str | None = None
    sanitize: bool = False  # statement literals replaced by ? (JDBC/psycopg default in some setups)
    endpoints: list[int] = field(default_factory=list)
    scope: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Template:
    """What spans of one kind at one place share; only the dynamic attribute values vary."""

    name: str
    kind: int
    scope: int
    static: tuple[tuple[str, AttrValue], ...]
    dyn: tuple[tuple[str, str, int], ...]  # (key, "s"|"i", slot in the span's value tuple)


@dataclass
class _Endpoint:
    service: int
    method: str
    path_fmt: str  # with "{}" where the id goes
    server_tpl: int
    plan: list[tuple] = field(default_factory=list)
    pre: tuple[float, float] = (0.0, 0.5)  # lognormal (mu, sigma) of ns of self time before...
    post: tuple[float, float] = (0.0, 0.5)  # ...and after the children
    error_rate: float = 0.002


def _ln_ms(median_ms: float) -> float:
    return math.log(median_ms * 1e6)


class _Topology:
    """Services, their endpoints and call plans, and the span templates they emit."""

    def __init__(self, rng: random.Random, n_services: int):
        self.rng = rng
        self.services: list[_Service] = []
        self.endpoints: list[_Endpoint] = []
        self.templates: list[_Template] = []
        self.scopes: list[tuple[str, str]] = []
        self.resources: list[tuple[tuple[str, AttrValue], ...]] = []  # per instance
        self.topics: list[tuple[str, int]] = []  # (topic, consumer endpoint)
        self._tpl_ids: dict[_Template, int] = {}
        self._scope_ids: dict[tuple[str, str], int] = {}
        self._client_tpl: dict[tuple[int, int], int] = {}
        self._build(max(4, n_services))

    # ---- registries
    def tpl(self, t: _Template) -> int:
        if t not in self._tpl_ids:
            self._tpl_ids[t] = len(self.templates)
            self.templates.append(t)
        return self._tpl_ids[t]

    def _scope(self, key: tuple[str, str]) -> int:
        if key not in self._scope_ids:
            self._scope_ids[key] = len(self.scopes)
            self.scopes.append(key)
        return self._scope_ids[key]

    # ---- construction
    def _build(self, n: int) -> None:
        rng = self.rng
        n_gw = 1 if n < 20 else 2
        n_wk = max(1, min(len(_WORKERS), n // 8))
        n_be = n - n_gw - n_wk
        backends = rng.sample(_BACKENDS, min(n_be, len(_BACKENDS)))
        backends += [f"svc-{i:02d}" for i in range(n_be - len(backends))]
        roles = ([(g, "gateway", 0) for g in _GATEWAYS[:n_gw]]
                 + [(b, "backend", 1 + min(2, i * 3 // max(1, n_be))) for i, b in enumerate(backends)]
                 + [(w, "worker", 4) for w in _WORKERS[:n_wk]])
        langs, weights = zip(*_LANG_WEIGHTS.items())
        for name, role, level in roles:
            lang = rng.choices(langs, weights)[0]
            flavor = rng.choices(("old", "new", "dup"), (0.45, 0.4, 0.15))[0]
            svc = _Service(len(self.services), name, role, level, lang, flavor,
                           first_inst=len(self.resources), n_inst=rng.randint(1, 3),
                           batch_size=rng.choice((512, 512, 1024, 2048)),
                           sanitize=rng.random() < 0.2)
            if role != "gateway" and rng.random() < 0.85:
                system = rng.choice(("postgresql", "postgresql", "mysql"))
                svc.db = (system, f"{name}-db.internal", 5432 if system == "postgresql" else 3306,
                          name.replace("-", "_"))
            if role == "backend" and rng.random() < 0.5:
                svc.cache_host = f"{name}-redis.internal"
            for role_key, scope in LANGS[lang].scopes.items():
                svc.scope[role_key] = self._scope(scope)
            svc.scope["app"] = self._scope((f"shop.{name}", "1.0.0"))
            for i in range(svc.n_inst):
                self.resources.append(self._resource(svc, i))
            self.services.append(svc)
        by_level: dict[int, list[_Service]] = {}
        for svc in self.services:
            by_level.setdefault(svc.level, []).append(svc)
        # Endpoints first (callers need callees), deepest level first.
        for svc in sorted(self.services, key=lambda s: -s.level):
            n_ep = 1 if svc.role == "worker" else rng.randint(4, 8) if svc.role == "gateway" else rng.randint(2, 5)
            for _ in range(n_ep):
                self._endpoint(svc)
        for svc in sorted(self.services, key=lambda s: -s.level):
            for ep_idx in svc.endpoints:
                self.endpoints[ep_idx].plan = self._plan(svc, by_level)
        # Every worker consumes one topic; producers are backends whose plan publishes to it.
        # (Topics are bound in _plan; a worker without a producer is simply idle.)

    def _resource(self, svc: _Service, i: int) -> tuple[tuple[str, AttrValue], ...]:
        lang = LANGS[svc.lang]
        h = self.rng.getrandbits(64)
        return (("service.name", svc.name), ("service.namespace", "shop"),
                ("service.version", f"1.{self.rng.randint(0, 40)}.{self.rng.randint(0, 9)}"),
                ("service.instance.id", f"{h:016x}"),
                ("host.name", f"ip-10-0-{h % 250}-{(h >> 8) % 250}"),
                ("process.pid", 1 + (h >> 16) % 60000),
                ("deployment.environment.name", "production"),
                ("process.runtime.name", lang.runtime),
                ("process.runtime.version", lang.runtime_version),
                ("telemetry.sdk.name", "opentelemetry"),
                ("telemetry.sdk.language", svc.lang),
                ("telemetry.sdk.version", lang.sdk_version))

    def _endpoint(self, svc: _Service) -> None:
        rng = self.rng
        if svc.role == "worker":
            return self._worker_endpoint(svc)
        noun = svc.name.replace("-", "_") if svc.role == "backend" else rng.choice(_BACKENDS)
        method, path = rng.choice((
            ("GET", f"/api/{noun}/{{}}"), ("GET", f"/api/{noun}"), ("POST", f"/api/{noun}"),
            ("PUT", f"/api/{noun}/{{}}"), ("GET", f"/api/{noun}/{{}}/items"),
            ("GET", f"/api/{noun}/search")))
        if any(self.endpoints[e].method == method and self.endpoints[e].path_fmt == path
               for e in svc.endpoints):
            path += f"/v{len(svc.endpoints) + 1}"
        route = path.replace("{}", "{id}")
        fl = svc.flavor
        static: list[tuple[str, AttrValue]] = []
        dyn: list[tuple[str, str, int]] = []
        if fl in ("old", "dup"):
            static += [("http.method", method), ("http.scheme", "http"), ("http.route", route),
                       ("net.host.name", svc.name), ("net.host.port", 8080), ("http.flavor", "1.1")]
            dyn += [("http.target", "s", 0), ("http.status_code", "i", 1)]
        if fl in ("new", "dup"):
            static += [("http.request.method", method), ("url.scheme", "http"),
                       ("http.route", route), ("server.address", svc.name), ("server.port", 8080),
                       ("network.protocol.version", "1.1")]
            dyn += [("url.path", "s", 0), ("http.response.status_code", "i", 1)]
        static = list(dict(static).items())  # dup repeats http.route once
        t = self.tpl(_Template(f"{method} {route}", SERVER, svc.scope["server"], tuple(static),
                               tuple(dyn)))
        self.endpoints.append(_Endpoint(svc.idx, method, path, t,
                                        pre=(_ln_ms(rng.uniform(0.05, 0.6)), 0.6),
                                        post=(_ln_ms(rng.uniform(0.05, 0.4)), 0.6),
                                        error_rate=rng.choice((0.0005, 0.002, 0.01))))
        svc.endpoints.append(len(self.endpoints) - 1)

    def _worker_endpoint(self, svc: _Service) -> None:
        topic = f"{svc.name.split('-')[0]}.events"
        t = self._messaging_tpl(svc, topic, CONSUMER)
        self.endpoints.append(_Endpoint(svc.idx, "", "", t, pre=(_ln_ms(0.1), 0.5),
                                        post=(_ln_ms(0.2), 0.5), error_rate=0.001))
        svc.endpoints.append(len(self.endpoints) - 1)
        self.topics.append((topic, len(self.endpoints) - 1))

    def _messaging_tpl(self, svc: _Service, topic: str, kind: int) -> int:
        old, new = svc.flavor in ("old", "dup"), svc.flavor in ("new", "dup")
        produce = kind == PRODUCER
        static: list[tuple[str, AttrValue]] = [("messaging.system", "kafka"),
                                               ("messaging.destination.name", topic)]
        dyn: list[tuple[str, str, int]] = []
        if old:
            static += [("messaging.operation", "publish" if produce else "process")]
            if not produce:
                static += [("messaging.kafka.consumer.group", svc.name)]
            dyn += [("messaging.kafka.message.offset", "i", 0)]
        if new:
            static += [("messaging.operation.type", "send" if produce else "process"),
                       ("messaging.operation.name", "send" if produce else "process")]
            if not produce:
                static += [("messaging.consumer.group.name", svc.name)]
            dyn += [("messaging.kafka.offset", "i", 0)]
        op = ("publish" if produce else "process") if old and not new else ("send" if produce
                                                                              else "process")
        name = f"{topic} {op}" if svc.flavor == "old" else f"{op} {topic}"
        return self.tpl(_Template(name, kind, svc.scope["kafka"], tuple(static), tuple(dyn)))

    def client_tpl(self, caller: int, ep_idx: int) -> int:
        key = (caller, ep_idx)
        if key not in self._client_tpl:
            svc, ep = self.services[caller], self.endpoints[ep_idx]
            host = self.services[ep.service].name
            static: list[tuple[str, AttrValue]] = []
            dyn: list[tuple[str, str, int]] = []
            if svc.flavor in ("old", "dup"):
                static += [("http.method", ep.method), ("net.peer.name", host),
                           ("net.peer.port", 8080)]
                dyn += [("http.url", "s", 0), ("http.status_code", "i", 1)]
            if svc.flavor in ("new", "dup"):
                static += [("http.request.method", ep.method), ("server.address", host),
                           ("server.port", 8080), ("network.protocol.version", "1.1")]
                dyn += [("url.full", "s", 0), ("http.response.status_code", "i", 1)]
            name = f"HTTP {ep.method}" if svc.flavor == "old" else ep.method
            self._client_tpl[key] = self.tpl(_Template(name, CLIENT, svc.scope["client"],
                                                       tuple(static), tuple(dyn)))
        return self._client_tpl[key]

    def _db_tpl(self, svc: _Service, op: str, table: str) -> int:
        assert svc.db is not None
        system, host, port, dbname = svc.db
        static: list[tuple[str, AttrValue]] = []
        dyn: list[tuple[str, str, int]] = []
        if svc.flavor in ("old", "dup"):
            static += [("db.system", system), ("db.name", dbname), ("db.user", "app"),
                       ("db.operation", op), ("db.sql.table", table), ("net.peer.name", host),
                       ("net.peer.port", port)]
            dyn += [("db.statement", "s", 0)]
        if svc.flavor in ("new", "dup"):
            static += [("db.system.name", system), ("db.namespace", dbname),
                       ("db.operation.name", op), ("db.collection.name", table),
                       ("server.address", host), ("server.port", port)]
            dyn += [("db.query.text", "s", 0)]
        name = f"{op} {dbname}.{table}" if svc.flavor == "old" else f"{op} {table}"
        return self.tpl(_Template(name, CLIENT, svc.scope[system], tuple(static), tuple(dyn)))

    def _redis_tpl(self, svc: _Service, cmd: str) -> int:
        static: list[tuple[str, AttrValue]] = []
        dyn: list[tuple[str, str, int]] = []
        if svc.flavor in ("old", "dup"):
            static += [("db.system", "redis"), ("db.redis.database_index", 0),
                       ("net.peer.name", svc.cache_host or ""), ("net.peer.port", 6379),
                       ("net.transport", "ip_tcp"), ("db.redis.args_length", 2 if cmd == "GET" else 4)]
            dyn += [("db.statement", "s", 0)]
        if svc.flavor in ("new", "dup"):
            static += [("db.system.name", "redis"), ("db.namespace", "0"),
                       ("db.operation.name", cmd), ("server.address", svc.cache_host or ""),
                       ("server.port", 6379)]
            dyn += [("db.query.text", "s", 0)]
        return self.tpl(_Template(cmd, CLIENT, svc.scope["redis"], tuple(static), tuple(dyn)))

    def _internal_tpl(self, svc: _Service, work: str) -> int:
        static: list[tuple[str, AttrValue]] = []
        if self.rng.random() < 0.7:  # only some code is annotated with code.* attributes
            ext = {"python": "py", "java": "java", "go": "go", "nodejs": "js", "dotnet": "cs"}[svc.lang]
            path = f"/app/src/{svc.name.replace('-', '_')}/handlers.{ext}"
            line = self.rng.randint(20, 900)
            if svc.flavor in ("old", "dup"):
                static += [("code.function", work), ("code.namespace", f"{svc.name}.handlers"),
                           ("code.filepath", path), ("code.lineno", line)]
            if svc.flavor in ("new", "dup"):
                static += [("code.function.name", f"{svc.name}.handlers.{work}"),
                           ("code.file.path", path), ("code.line.number", line)]
        return self.tpl(_Template(work, INTERNAL, svc.scope["app"], tuple(static), ()))

    def _query(self, svc: _Service, kind: str) -> tuple:
        """(template, statement format, mu, sigma): a statement shape with its latency."""
        rng = self.rng
        table = rng.choice(_TABLES)
        q = "?" if svc.sanitize else "{}"
        op, sql, median = {
            "by_id": ("SELECT", f"SELECT id, status, total_cents, updated_at FROM {table} WHERE id = {q}", 0.6),
            "list": ("SELECT", f"SELECT * FROM {table} WHERE customer_id = {q} ORDER BY created_at DESC LIMIT 50", 2.5),
            "join": ("SELECT", f"SELECT t.id, p.name, p.price_cents FROM {table} t JOIN products p ON p.id = t.product_id WHERE t.owner_id = {q}", 4.0),
            "update": ("UPDATE", f"UPDATE {table} SET status = 'processed', updated_at = now() WHERE id = {q}", 1.5),
            "insert": ("INSERT", f"INSERT INTO {table} (owner_id, status, created_at) VALUES ({q}, 'new', now())", 1.2),
            "report": ("SELECT", f"SELECT date_trunc('day', created_at), count(*), sum(total_cents) FROM {table} WHERE tenant_id = {q} GROUP BY 1", 35.0),
        }[kind]
        if svc.db and svc.db[0] == "mysql":
            sql = sql.replace("now()", "NOW()").replace("date_trunc('day', created_at)", "DATE(created_at)")
        return (self._db_tpl(svc, op, table), sql, _ln_ms(median * rng.uniform(0.5, 2.0)),
                rng.uniform(0.4, 0.9))

    def _plan(self, svc: _Service, by_level: dict[int, list[_Service]]) -> list[tuple[float, tuple]]:
        """Steps with the probability that a request takes each one."""
        rng = self.rng
        steps = self._steps(svc, by_level)
        maybe = (1.0, 1.0, 0.8, 0.5, 0.25)
        first_call = next((i for i, s in enumerate(steps) if s[0] in ("call", "par")), -1)
        return [(0.6 if s[0] == "n1" else 1.0 if s[0] == "cache" or i == 0 or
                 (svc.role == "gateway" and i == first_call) else rng.choice(maybe), s)
                for i, s in enumerate(steps)]

    def _steps(self, svc: _Service, by_level: dict[int, list[_Service]]) -> list[tuple]:
        rng = self.rng
        plan: list[tuple] = []
        deeper = [e for lvl, ss in by_level.items() if svc.level < lvl <= 3
                  for s in ss for e in s.endpoints]
        if rng.random() < 0.5:
            w = rng.choice(_CPU_WORK)
            plan.append(("cpu", self._internal_tpl(svc, w), _ln_ms(rng.uniform(0.2, 3.0)), 0.8))
        if svc.role == "gateway":
            targets = rng.sample(deeper, min(len(deeper), rng.randint(1, 3)))
            if targets:
                plan.append(("call", targets[0]))  # e.g. auth before the fan-out
            if len(targets) > 2:
                plan.append(("par", targets[1:]))
            elif len(targets) == 2:
                plan.append(("call", targets[1]))
            return plan
        if svc.db:
            if svc.cache_host and rng.random() < 0.6:
                plan.append(("cache", self._redis_tpl(svc, "GET"), self._redis_tpl(svc, "SET"),
                             rng.choice(("user", "session", "product", "cart", "price")),
                             rng.uniform(0.3, 0.95), self._query(svc, "by_id")))
            else:
                plan.append(("sql", self._query(svc, rng.choice(("by_id", "list", "join")))))
            if rng.random() < 0.12:  # the N+1 the detectors must find
                plan.append(("n1", self._query(svc, "by_id"), 5, 40))
            if rng.random() < 0.08:
                plan.append(("sql", self._query(svc, "report")))
        calls = rng.sample(deeper, min(len(deeper), rng.choice((0, 0, 0, 1, 1, 2))))
        if len(calls) == 2 and rng.random() < 0.5:
            plan.append(("par", calls))
        else:
            plan += [("call", c) for c in calls]
        if svc.db and rng.random() < 0.35:
            plan.append(("sql", self._query(svc, rng.choice(("update", "insert")))))
        if svc.role == "backend" and self.topics and rng.random() < 0.25:
            topic, _ = self.topics[rng.randrange(len(self.topics))]
            plan.append(("produce", self._messaging_tpl(svc, topic, PRODUCER), topic))
        if rng.random() < 0.3:
            w = rng.choice(_CPU_WORK)
            plan.append(("cpu", self._internal_tpl(svc, w), _ln_ms(rng.uniform(0.3, 12.0)), 0.9))
        return plan


# --------------------------------------------------------------------------- trace trees


class _Builder:
    """Walks the call plans with random draws, appending one row per span in pre-order.

    Pre-order (parent row before its children) lets the last trace be cut to an exact span count
    while every kept span still has its parent.
    """

    def __init__(self, topo: _Topology, rng: random.Random):
        self.topo, self.rng = topo, rng
        self.trace: list[int] = []
        self.parent: list[int] = []
        self.inst: list[int] = []
        self.tpl: list[int] = []
        self.start: list[int] = []
        self.end: list[int] = []
        self.status: list[int] = []
        self.dyn: list[tuple | None] = []
        self.events: dict[int, tuple[int, str, str]] = {}
        self._ti = 0
        self.topic_consumer = dict(topo.topics)
        gws = [e for s in topo.services if s.role == "gateway" for e in s.endpoints]
        self.entry_eps = gws or [e for s in topo.services for e in s.endpoints]
        self.entry_w = [1.0 / (1 + i) for i in range(len(self.entry_eps))]  # a few hot routes

    def lat(self, mu: float, sigma: float) -> int:
        d = self.rng.lognormvariate(mu, sigma)
        if self.rng.random() < TAIL_P:
            d *= self.rng.uniform(10.0, 60.0)
        return int(d)

    def open(self, parent: int, inst: int, tpl: int, start: int) -> int:
        self.trace.append(self._ti)
        self.parent.append(parent)
        self.inst.append(inst)
        self.tpl.append(tpl)
        self.start.append(start)
        self.end.append(start)
        self.status.append(UNSET)
        self.dyn.append(None)
        return len(self.trace) - 1

    def add_trace(self) -> None:
        ep = self.rng.choices(self.entry_eps, self.entry_w)[0]
        self._server(ep, -1, 0, self._path(ep))
        self._ti += 1

    def _path(self, ep_idx: int) -> str:
        return self.topo.endpoints[ep_idx].path_fmt.format(self.rng.randint(1, 999_999))

    def _server(self, ep_idx: int, parent: int, start: int, path: str) -> tuple[int, bool]:
        ep = self.topo.endpoints[ep_idx]
        svc = self.topo.services[ep.service]
        inst = svc.first_inst + self.rng.randrange(svc.n_inst)
        row = self.open(parent, inst, ep.server_tpl, start)
        t = start + self.lat(*ep.pre)
        failed = False
        for p, step in ep.plan:
            if p >= 1.0 or self.rng.random() < p:  # branches: not every request takes every path
                t, f = self._step(step, svc, inst, row, t)
                failed |= f
        if self.rng.random() < ep.error_rate:  # the failure starts here: record the exception
            failed = True
            self.events[row] = (t, *self.rng.choice(_EXCEPTIONS))
        end = t + self.lat(*ep.post)
        self.end[row] = end
        if failed:
            self.status[row] = ERROR
        self.dyn[row] = (path, 500 if failed else 200) if ep.path_fmt else (
            self.rng.randint(0, 10_000_000),)
        return end, failed

    def _step(self, step: tuple, svc: _Service, inst: int, parent: int, t: int) -> tuple[int, bool]:
        kind, rng = step[0], self.rng
        if kind == "sql":
            return self._sql(step[1], inst, parent, t), False
        if kind == "n1":
            q, lo, hi = step[1:]
            for _ in range(rng.randint(lo, hi)):
                t = self._sql(q, inst, parent, t) + self.lat(_ln_ms(0.03), 0.5)
            return t, False
        if kind == "cache":
            get, set_, prefix, hit, q = step[1:]
            key = f"{prefix}:{rng.randint(1, 99_999)}"
            t = self._leaf(get, inst, parent, t, _ln_ms(0.3), f"GET {key}" if not svc.sanitize else "GET ?")
            if rng.random() > hit:
                t = self._sql(q, inst, parent, t)
                stmt = f"SET {key} ?" if svc.sanitize else f"SET {key} {{...}} EX 300"
                t = self._leaf(set_, inst, parent, t, _ln_ms(0.35), stmt)
            return t, False
        if kind == "call":
            return self._call(svc, inst, parent, t, step[1])
        if kind == "par":
            ends, failed = [], False
            for ep in step[1]:
                e, f = self._call(svc, inst, parent, t + self.lat(_ln_ms(0.03), 0.5), ep)
                ends.append(e)
                failed |= f
            return max(ends), failed
        if kind == "produce":
            tpl, topic = step[1], step[2]
            row = self.open(parent, inst, tpl, t)
            end = t + self.lat(_ln_ms(1.5), 0.6)
            self.end[row] = end
            self.dyn[row] = (rng.randint(0, 50_000_000),)
            consumer = self.topic_consumer.get(topic)
            if consumer is not None:  # consumed later, in the same trace (context propagated)
                self._server(consumer, row, end + self.lat(_ln_ms(25.0), 1.2), "")
            return end, False
        if kind == "cpu":
            row = self.open(parent, inst, step[1], t)
            self.end[row] = t + self.lat(step[2], step[3])
            return self.end[row], False
        raise ValueError(kind)

    def _leaf(self, tpl: int, inst: int, parent: int, t: int, mu: float, stmt: str) -> int:
        row = self.open(parent, inst, tpl, t)
        self.end[row] = end = t + self.lat(mu, 0.5)
        self.dyn[row] = (stmt,)
        return end

    def _sql(self, q: tuple, inst: int, parent: int, t: int) -> int:
        tpl, sql, mu, sigma = q
        row = self.open(parent, inst, tpl, t)
        self.end[row] = end = t + self.lat(mu, sigma)
        self.dyn[row] = (sql.format(self.rng.randint(1, 999_999)),)
        return end + self.lat(_ln_ms(0.02), 0.5)

    def _call(self, svc: _Service, inst: int, parent: int, t: int, ep_idx: int) -> tuple[int, bool]:
        path = self._path(ep_idx)
        row = self.open(parent, inst, self.topo.client_tpl(svc.idx, ep_idx), t)
        s_end, failed = self._server(ep_idx, row, t + self.lat(_ln_ms(0.35), 0.5), path)
        self.end[row] = end = s_end + self.lat(_ln_ms(0.3), 0.5)
        host = self.topo.services[self.topo.endpoints[ep_idx].service].name
        self.dyn[row] = (f"http://{host}:8080{path}", 500 if failed else 200)
        if failed:
            self.status[row] = ERROR
        return end, failed


# --------------------------------------------------------------------------- columns, batches, encoders


@dataclass
class GeneratedTraces:
    """Generated spans as columns, cut into export batches; encodes each batch on demand."""

    topo: _Topology
    seed: int
    trace: np.ndarray  # int32 trace number
    parent: np.ndarray  # int32 row of the parent, -1 for roots
    inst: np.ndarray  # int32 resource (service instance)
    tpl: np.ndarray  # int32 template
    start: np.ndarray  # int64 unix ns
    end: np.ndarray  # int64 unix ns
    status: np.ndarray  # int8
    trace_ids: bytes  # 16 bytes per trace
    span_ids: np.ndarray  # uint64, the 8-byte span id read big-endian
    dyn: list[tuple | None]
    events: dict[int, tuple[int, str, str]]  # row -> (unix ns, exception type, message)
    batches: list[np.ndarray]  # rows of each export request, in the order they would be sent

    @property
    def n_spans(self) -> int:
        return len(self.trace)

    @property
    def n_traces(self) -> int:
        return len(self.trace_ids) // 16

    def __post_init__(self) -> None:
        n = self.n_spans
        has_parent = self.parent >= 0
        sid = self.span_ids.astype(">u8").view(np.uint8).reshape(n, 8)
        tid = np.frombuffer(self.trace_ids, np.uint8).reshape(-1, 16)
        ids = np.zeros((n, 38), np.uint8)  # trace_id(1), span_id(2), parent_span_id(4) fields
        ids[:, 0:2] = (0x0A, 16)
        ids[:, 2:18] = tid[self.trace]
        ids[:, 18:20] = (0x12, 8)
        ids[:, 20:28] = sid
        ids[:, 28:30] = (0x22, 8)
        ids[has_parent, 30:38] = sid[self.parent[has_parent]]
        self._ids = ids.tobytes()
        self._id_len = np.where(has_parent, 38, 28).tolist()
        times = np.zeros((n, 18), np.uint8)  # start(7) and end(8), fixed64 little-endian
        times[:, 0] = 0x39
        times[:, 1:9] = self.start.astype("<u8").view(np.uint8).reshape(n, 8)
        times[:, 9] = 0x41
        times[:, 10:18] = self.end.astype("<u8").view(np.uint8).reshape(n, 8)
        self._times = times.tobytes()
        kinds = np.array([t.kind for t in self.topo.templates], np.int8)[self.tpl]
        self._remote = (has_parent & ((kinds == SERVER) | (kinds == CONSUMER))).astype(np.int8)
        self._pre_encode()

    def _pre_encode(self) -> None:
        topo = self.topo
        self._t_pb_head, self._t_pb_static = [], []
        self._t_dyn: list[list[tuple[bytes, bool, int]]] = []
        for t in topo.templates:
            self._t_pb_head.append(_ld(b"\x2a", t.name.encode()) + b"\x30" + _varint(t.kind))
            self._t_pb_static.append(b"".join(_pb_kv(b"\x4a", k, v) for k, v in t.static))
            self._t_dyn.append([(_ld(b"\x0a", k.encode()), typ == "s", slot) for k, typ, slot in t.dyn])
        self._scope_pb = [_ld(b"\x0a", _ld(b"\x0a", n.encode()) + (_ld(b"\x12", v.encode()) if v else b""))
                          for n, v in topo.scopes]
        self._res_pb = [_ld(b"\x0a", b"".join(_pb_kv(b"\x0a", k, v) for k, v in attrs))
                        for attrs in topo.resources]
        self._scope_of_tpl = np.array([t.scope for t in topo.templates], np.int32)

    def _groups(self, rows: np.ndarray) -> list[tuple[int, list[int]]]:
        """A batch's rows per instrumentation scope, as the SDK exporter groups them."""
        scopes = self._scope_of_tpl[self.tpl[rows]]
        order = np.argsort(scopes, kind="stable")
        rows, scopes = rows[order], scopes[order]
        cuts = np.flatnonzero(np.diff(scopes)) + 1
        return [(int(s[0]), r.tolist()) for s, r in zip(np.split(scopes, cuts), np.split(rows, cuts))]

    def protobuf_batch(self, b: int) -> bytes:
        """Batch `b` as a serialized ExportTraceServiceRequest (one ResourceSpans)."""
        rows = self.batches[b]
        ids, id_len, times, tpl = self._ids, self._id_len, self._times, self.tpl
        heads, statics, dyns = self._t_pb_head, self._t_pb_static, self._t_dyn
        status, remote, dyn, events = self.status, self._remote, self.dyn, self.events
        rs = [self._res_pb[int(self.inst[rows[0]])]]
        for scope, srows in self._groups(rows):
            ss = [self._scope_pb[scope]]
            for i in srows:
                t = tpl[i]
                parts = [ids[i * 38:i * 38 + id_len[i]], heads[t], times[i * 18:i * 18 + 18], statics[t]]
                values = dyn[i]
                for prefix, is_str, slot in (dyns[t] if values is not None else ()):
                    v = values[slot]
                    av = _ld(b"\x0a", v.encode()) if is_str else b"\x18" + _varint(v)
                    parts.append(_ld(b"\x4a", prefix + _ld(b"\x12", av)))
                if i in events:
                    parts.append(self._pb_event(i))
                parts.append(_STATUS_PB[status[i]])
                parts.append(_FLAGS_PB[remote[i]])
                ss.append(_ld(b"\x12", b"".join(parts)))
            rs.append(_ld(b"\x12", b"".join(ss)))
        return _ld(b"\x0a", b"".join(rs))

    def _pb_event(self, i: int) -> bytes:
        ts, typ, msg = self.events[i]
        body = (b"\x09" + int(ts).to_bytes(8, "little") + _ld(b"\x12", b"exception")
                + _pb_kv(b"\x1a", "exception.type", typ) + _pb_kv(b"\x1a", "exception.message", msg))
        return _ld(b"\x5a", body)

    def json_line(self, b: int) -> str:
        """Batch `b` as one OTLP/JSON line (no newline), by the project's encoder."""
        return to_otlp_json_line(ExportTraceServiceRequest.FromString(self.protobuf_batch(b)))

    def protobuf_batches(self) -> Iterator[bytes]:
        return (self.protobuf_batch(b) for b in range(len(self.batches)))

    def json_lines(self) -> Iterator[str]:
        return (self.json_line(b) for b in range(len(self.batches)))

    def requests(self) -> Iterator[ExportTraceServiceRequest]:
        return (ExportTraceServiceRequest.FromString(b) for b in self.protobuf_batches())


def generate_traces(n_spans: int, seed: int = 0, services: int | None = None,
                    window_s: float = 3600.0) -> GeneratedTraces:
    """Exactly `n_spans` spans of traces arriving uniformly over `window_s` seconds."""
    if n_spans < 1:
        raise ValueError("n_spans must be at least 1")
    rng = random.Random(seed)
    topo = _Topology(rng, services if services is not None else rng.randint(16, 40))
    builder = _Builder(topo, rng)
    while len(builder.trace) < n_spans:
        builder.add_trace()
    n_traces = builder.trace[n_spans - 1] + 1
    nrng = np.random.default_rng(seed)
    base = EPOCH_NS + np.sort(nrng.uniform(0, window_s * 1e9, n_traces)).astype(np.int64)
    trace = np.array(builder.trace[:n_spans], np.int32)
    offset = base[trace]
    events = {r: (int(offset[r]) + ts, typ, msg) for r, (ts, typ, msg) in builder.events.items()
              if r < n_spans}
    span_ids = nrng.integers(1, 2**64 - 1, n_spans, dtype=np.uint64, endpoint=True)
    while len(np.unique(span_ids)) < n_spans:  # a 64-bit collision is ~never; still keep ids unique
        _, first = np.unique(span_ids, return_index=True)
        dup = np.setdiff1d(np.arange(n_spans), first)
        span_ids[dup] = nrng.integers(1, 2**64 - 1, len(dup), dtype=np.uint64, endpoint=True)
    gen = dict(
        trace=trace, parent=np.array(builder.parent[:n_spans], np.int32),
        inst=np.array(builder.inst[:n_spans], np.int32), tpl=np.array(builder.tpl[:n_spans], np.int32),
        start=offset + np.array(builder.start[:n_spans], np.int64),
        end=offset + np.array(builder.end[:n_spans], np.int64),
        status=np.array(builder.status[:n_spans], np.int8),
    )
    batch_size = np.array([s.batch_size for s in topo.services for _ in range(s.n_inst)])
    return GeneratedTraces(topo=topo, seed=seed, trace_ids=nrng.bytes(16 * n_traces),
                           span_ids=span_ids, dyn=builder.dyn[:n_spans], events=events,
                           batches=_batches(gen["inst"], gen["end"], batch_size), **gen)


def _batches(inst: np.ndarray, end: np.ndarray, batch_size: np.ndarray) -> list[np.ndarray]:
    """Each instance's spans in the order they end, cut into max_export_batch_size chunks (a busy
    BatchSpanProcessor exports full batches), then all batches in the order they'd be sent."""
    order = np.lexsort((end, inst))
    cuts = np.flatnonzero(np.diff(inst[order])) + 1
    out: list[np.ndarray] = []
    for rows in np.split(order, cuts):
        size = int(batch_size[inst[rows[0]]])
        out += [rows[i:i + size] for i in range(0, len(rows), size)]
    out.sort(key=lambda r: int(end[r[-1]]))
    return out


def generate(n_spans: int, seed: int = 0) -> list[ExportTraceServiceRequest]:
    """The export requests a fleet's SDKs would send for `n_spans` spans."""
    return list(generate_traces(n_spans, seed).requests())


# --------------------------------------------------------------------------- writers


class _GzipSink:
    """Gzip in a thread: zlib releases the GIL, so compression overlaps with encoding."""

    def __init__(self, path: Path, level: int):
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._raw = open(path, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=level, mtime=0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._q.get()) is not None:
            self._gz.write(chunk)

    def write(self, data: bytes) -> None:
        self._q.put(data)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        self._gz.close()
        self._raw.close()


def paths_for(out_dir: Path, n_spans: int) -> dict[str, Path]:
    """Where `write_files` puts each form: keys pb, binpb, jsonl, and those plus `.gz`."""
    stem = Path(out_dir) / f"traces-{n_spans}"
    out = {fmt: stem.with_name(f"{stem.name}.{fmt}") for fmt in FORMATS}
    out.update({f"{fmt}.gz": stem.with_name(f"{stem.name}.{fmt}.gz") for fmt in FORMATS})
    return out


def write_files(gen: GeneratedTraces, out_dir: Path, *, formats: Sequence[str] = FORMATS,
                gzip_level: int = 6, json_encoder: str = "fast") -> dict[str, Path]:
    """Write every form in one pass over the batches; returns the written paths by format key.

    `.pb` is the batches' concatenation: concatenated messages parse as one message whose repeated
    `resource_spans` holds them all.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: v for k, v in paths_for(out_dir, gen.n_spans).items() if k.split(".")[0] in formats}
    plain: dict[str, IO[bytes]] = {k: open(p, "wb") for k, p in paths.items() if not k.endswith(".gz")}
    gz = {k[:-3]: _GzipSink(p, gzip_level) for k, p in paths.items() if k.endswith(".gz")}
    try:
        for b in range(len(gen.batches)):
            chunks: dict[str, bytes] = {}
            if "pb" in formats or "binpb" in formats:
                pb = gen.protobuf_batch(b)
                chunks["pb"] = pb
                chunks["binpb"] = len(pb).to_bytes(4, "big") + pb
            if "jsonl" in formats:
                line = (gen.json_line(b) if json_encoder == "fast" else
                        reference_json_line(ExportTraceServiceRequest.FromString(gen.protobuf_batch(b))))
                chunks["jsonl"] = line.encode() + b"\n"
            for fmt in formats:
                plain[fmt].write(chunks[fmt])
                gz[fmt].write(chunks[fmt])
    finally:
        for f in plain.values():
            f.close()
        for s in gz.values():
            s.close()
    return paths


def iter_framed(data: bytes | memoryview) -> Iterator[memoryview]:
    """The messages of a length-delimited (4-byte big-endian length) file, without copying."""
    view = memoryview(data)
    off, n = 0, len(view)
    while off < n:
        if off + 4 > n:
            raise ValueError(f"truncated length prefix at byte {off}")
        size = int.from_bytes(view[off:off + 4], "big")
        off += 4
        if off + size > n:
            raise ValueError(f"message at byte {off} claims {size} bytes, {n - off} left")
        yield view[off:off + size]
        off += size


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gen_traces", description=__doc__.split("\n")[0])
    ap.add_argument("--spans", type=int, required=True, help="exact number of spans")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--services", type=int, default=None, help="number of services (default: 16-40 from the seed)")
    ap.add_argument("--window", type=float, default=3600.0, help="seconds the traces' start times span")
    ap.add_argument("--formats", default=",".join(FORMATS), help="comma list of pb,binpb,jsonl")
    ap.add_argument("--gzip-level", type=int, default=6)
    ap.add_argument("--json-encoder", choices=("fast", "reference"), default="fast",
                    help="reference = collectors.otlp_json.reference_json_line (same text, MessageToDict, ~3x slower)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    gen = generate_traces(args.spans, args.seed, args.services, args.window)
    t1 = time.perf_counter()
    formats = [f for f in args.formats.split(",") if f]
    paths = write_files(gen, args.out, formats=formats, gzip_level=args.gzip_level,
                        json_encoder=args.json_encoder)
    t2 = time.perf_counter()
    sizes = {k: p.stat().st_size for k, p in paths.items()}
    if sizes.get("pb", 0) >= 2**31:
        print("warning: the .pb file is over 2 GiB, which protobuf refuses to parse as one message")
    manifest = {"spans": gen.n_spans, "traces": gen.n_traces, "batches": len(gen.batches),
                "services": len(gen.topo.services), "seed": args.seed, "window_s": args.window,
                "files": {k: {"path": p.name, "bytes": sizes[k]} for k, p in paths.items()},
                "generate_s": round(t1 - t0, 3), "write_s": round(t2 - t1, 3)}
    manifest_path = Path(args.out) / f"traces-{gen.n_spans}.manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{gen.n_spans:,} spans in {gen.n_traces:,} traces, {len(gen.batches):,} batches, "
          f"{len(gen.topo.services)} services: generated in {t1 - t0:.2f} s, written in {t2 - t1:.2f} s")
    for k, p in paths.items():
        print(f"  {p}  {sizes[k]:,} bytes")


if __name__ == "__main__":
    main()
