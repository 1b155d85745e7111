"""Semantic-convention names the analysis reads, old and new, as named constants.

Instrumentations still emit pre-1.26 names by default, so every attribute we derive
from is looked up under all of its names (see shared signals.md §4).
"""

from __future__ import annotations

SERVICE_NAME = "service.name"
PROCESS_RUNTIME_NAME = "process.runtime.name"
TELEMETRY_SDK_LANGUAGE = "telemetry.sdk.language"
# A resource's environment: the 1.27 name first, then the older one most SDKs still set.
DEPLOYMENT_ENVIRONMENT = ("deployment.environment.name", "deployment.environment")

# Each derived field -> the attribute keys that carry it, preferred first.
DB_SYSTEM = ("db.system.name", "db.system")
DB_STATEMENT = ("db.query.text", "db.statement")
DB_SUMMARY = ("db.query.summary", "db.operation.name", "db.operation")
PEER_HOST = ("server.address", "net.peer.name", "peer.service", "network.peer.address", "net.peer.ip")
PEER_PORT = ("server.port", "net.peer.port")
URL = ("url.full", "http.url")
HTTP_METHOD = ("http.request.method", "http.method")
RPC_SYSTEM = ("rpc.system.name", "rpc.system")
MESSAGING_SYSTEM = ("messaging.system",)
CODE_FUNCTION = ("code.function.name", "code.function")
CODE_NAMESPACE = ("code.namespace",)
CODE_FILE = ("code.file.path", "code.filepath")
CODE_LINE = ("code.line.number", "code.lineno")

# Every span attribute key any derived field reads: the decoders keep only these.
SPAN_KEYS = frozenset(
    DB_SYSTEM + DB_STATEMENT + DB_SUMMARY + PEER_HOST + PEER_PORT + URL + HTTP_METHOD
    + RPC_SYSTEM + MESSAGING_SYSTEM + CODE_FUNCTION + CODE_NAMESPACE + CODE_FILE + CODE_LINE
)

# db.system values that are caches. "intersystems.cache" is a database despite its name.
CACHE_SYSTEMS = frozenset({"redis", "memcached", "valkey", "hazelcast", "ignite", "coherence", "dragonfly", "keydb"})

RUNTIMES = ("python", "node", "go", "jvm", "dotnet", "native", "unknown")

_RUNTIME_BY_NAME = {
    "cpython": "python", "pypy": "python", "python": "python",
    "nodejs": "node", "node": "node", "node.js": "node", "js": "node", "webjs": "node",
    "go": "go", "gc": "go",
    "java": "jvm", "jvm": "jvm", "openjdk runtime environment": "jvm", "java(tm) se runtime environment": "jvm",
    "kotlin": "jvm", "scala": "jvm",
    "dotnet": "dotnet", ".net": "dotnet", ".net core": "dotnet", ".net framework": "dotnet",
    "rust": "native", "cpp": "native", "c++": "native", "c": "native", "swift": "native",
}


def runtime_of(process_runtime_name: str | None, sdk_language: str | None) -> str:
    """The report's runtime value from resource attributes; 'unknown' when neither says."""
    for raw in (process_runtime_name, sdk_language):
        if raw:
            key = raw.strip().lower()
            if key in _RUNTIME_BY_NAME:
                return _RUNTIME_BY_NAME[key]
            if "java" in key or "jdk" in key:
                return "jvm"
            if ".net" in key:
                return "dotnet"
    return "unknown"
