"""Whose code a profile frame is: the service's own, a library's (third-party or the standard
library), or the runtime's (GC, allocation, interpreter, JIT, native glue).

Profilers name frames differently: py-spy writes paths relative to `sys.path` (`json/encoder.py`,
`myapp/views.py`), Go writes package-qualified names (`encoding/json.Marshal`,
`github.com/x/y.F`, `main.handler`), V8 writes URLs (`file:///app/node_modules/x/i.js`,
`node:internal/...`) and pseudo-frames (`(garbage collector)`), async-profiler writes
`java/util/HashMap.get` and JVM-internal names (`G1ParScanThreadState::...`, `Interpreter`).
What cannot be told apart this way is the service's own code, unless `[profiles] own` or
`library` prefixes in the config say otherwise.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from analyzer.model.profile import Frame

OWN, LIBRARY, RUNTIME = "own", "library", "runtime"

_PY_STDLIB = frozenset(sys.stdlib_module_names) | {"<frozen importlib._bootstrap>",
                                                    "<frozen importlib._bootstrap_external>"}
_LIBRARY_PATH = re.compile(r"(site-packages|dist-packages|node_modules|/vendor/|/go/pkg/mod/|/usr/lib/|"
                           r"/usr/local/lib/|/jdk|\.jar!|^jar:)")
# runtime sub-kinds, by name: the first pattern that matches wins.
_RUNTIME_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("gc", re.compile(r"^\(garbage collector\)$|^runtime\.(gc|bgsweep|sweepone|markroot|scanobject|scanblock|"
                      r"greyobject|bgscavenge|wbBuf|gcDrain|gcBgMarkWorker)|"
                      r"^(G1|ZGC|Shenandoah|PS|ParNew|CMS|Serial|GC|Gen|Mark|Copy)[A-Za-z]*(::|Thread| )|"
                      r"GCTaskThread|^VM_G1|^gc_collect|^_PyGC_|^gc_collect_main|^collect$")),
    ("alloc", re.compile(r"^runtime\.(mallocgc|newobject|makeslice|growslice|mapassign|newarray|memclr)|"
                         r"^(_?PyObject_Malloc|pymalloc|_PyObject_GC_New)|^Allocat|^MemAllocator")),
    ("jit", re.compile(r"^(C1|C2)Compiler|CompileBroker|^\(program\)$|^Compile::|^JIT")),
    ("interpreter", re.compile(r"^Interpreter$|^_PyEval_|^PyEval_|^\(root\)$|^runtime\.(mcall|schedule|park|"
                               r"findrunnable|goexit|morestack|asyncPreempt|systemstack)")),
)


@dataclass(frozen=True)
class FrameRules:
    """Path or name prefixes the config marks as own code or as library code."""

    own: Sequence[str] = ()
    library: Sequence[str] = ()


def classify(frame: Frame, rules: FrameRules = FrameRules()) -> tuple[str, str]:
    """(owner, kind): owner is own | library | runtime; kind names the runtime part or the package."""
    name, file = frame.name, frame.file
    for prefixes, owner in ((rules.library, LIBRARY), (rules.own, OWN)):
        if any(file.startswith(p) or name.startswith(p) for p in prefixes):
            return owner, package_of(frame)
    for kind, pattern in _RUNTIME_KINDS:
        if pattern.search(name):
            return RUNTIME, kind
    pkg = package_of(frame)
    lang = language(frame)
    if lang == "python":
        if file.startswith("<frozen"):
            return RUNTIME, "interpreter"
        return (LIBRARY if _LIBRARY_PATH.search(file) or pkg in _PY_STDLIB else OWN), pkg
    if lang == "js":
        if file.startswith("node:internal"):
            return RUNTIME, "interpreter"
        return (LIBRARY if _LIBRARY_PATH.search(file) or file.startswith("node:") else OWN), pkg
    if lang == "go":
        if pkg == "runtime":
            return RUNTIME, "interpreter"
        root = pkg.split("/", 1)[0]
        return (LIBRARY if "." in root or root in _GO_STDLIB_ROOTS or _LIBRARY_PATH.search(file) else OWN), pkg
    if lang == "jvm":
        return (LIBRARY if _JVM_LIBRARY.match(name) else OWN), pkg
    if not file and _NATIVE_SYMBOL.match(name):
        return RUNTIME, "native"
    return OWN, pkg


def language(frame: Frame) -> str:
    """python | js | go | jvm | native, from the frame's file or the shape of its name."""
    name, file = frame.name, frame.file
    if file.endswith(".py") or file.startswith("<frozen") or file.endswith(".pyx"):
        return "python"
    if file.startswith(("file://", "node:", "http://", "https://")) or file.endswith((".js", ".mjs", ".cjs", ".ts")):
        return "js"
    if file.endswith((".go", ".s")) or re.match(r"^[\w.\-/]+\.(\(\*?\w+\)\.)?\w+$", name) and (
            name.startswith("main.") or re.match(r"^[a-z0-9.\-]+\.[a-z]+/", name)):
        return "go"
    if re.match(r"^[a-zA-Z_][\w$]*(/[\w$]+)+\.[\w$<>]+$", name):
        return "jvm"
    return "native"


def package_of(frame: Frame) -> str:
    """The module or package a frame belongs to, for the per-package table."""
    name, file = frame.name, frame.file
    lang = language(frame)
    if lang == "go":  # github.com/x/y.(*T).F -> github.com/x/y; encoding/json.Marshal -> encoding/json
        head, _, tail = name.rpartition("/")
        return (head + "/" if head else "") + tail.split(".", 1)[0]
    if lang == "jvm":  # java/util/HashMap.get -> java/util
        return name.rsplit(".", 1)[0].rpartition("/")[0] or name
    if lang == "js":
        if "node_modules/" in file:
            rest = file.rsplit("node_modules/", 1)[1].split("/")
            return "/".join(rest[:2]) if rest[0].startswith("@") else rest[0]
        return file.split("/")[0] if file.startswith("node:") else file.rsplit("/", 1)[-1]
    if lang == "python":
        for marker in ("site-packages/", "dist-packages/"):
            if marker in file:
                return file.rsplit(marker, 1)[1].split("/")[0].removesuffix(".py")
        m = re.search(r"/python3(?:\.\d+)?/(?:lib-dynload/)?([^/]+)", file)
        if m:
            return m[1].removesuffix(".py")
        if file.startswith("/"):
            return file.rsplit("/", 1)[-1].removesuffix(".py")
        return file.split("/")[0].removesuffix(".py")
    return file.rsplit("/", 1)[-1] if file else name


_GO_STDLIB_ROOTS = frozenset("bufio bytes compress container context crypto database debug encoding errors expvar "
                             "flag fmt hash html image io log math mime net os path reflect regexp sort "
                             "strconv strings sync syscall testing text time unicode unsafe".split())
_JVM_LIBRARY = re.compile(r"^(java|javax|jdk|sun|com/sun|kotlin|scala|org/(apache|springframework|slf4j|hibernate|"
                          r"eclipse|jboss)|com/(fasterxml|google)|io/(netty|micrometer|opentelemetry)|ch/qos)/")
_NATIVE_SYMBOL = re.compile(r"^(_+[A-Za-z]|std::|operator|\[|0x)|@")
