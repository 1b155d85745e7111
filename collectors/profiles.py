"""Reading CPU profiles from files: `--profile PATH` or `--profile SERVICE=PATH`, a file or a directory.

Formats are told apart by content: pprof (gzip-compressed protobuf, or plain), speedscope JSON,
V8 `.cpuprofile` JSON, and folded stacks. The service comes from `SERVICE=PATH`, else from the
profile's own labels (pprof `service_name`), else from the file name when its first part names a
traced service (`render.cpuprofile`, `render-2026-12-01.pprof.gz`). A file that cannot be read is
counted with its reason and skipped; the rest of the run goes on.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.model.profile import Profile
from collectors.profile_json import ProfileFormatError, is_cpuprofile, is_speedscope, read_cpuprofile, read_speedscope
from collectors.profile_pprof import PprofError, read_pprof
from collectors.profile_text import looks_folded, read_folded

# A profile is a summary (stacks x counts): even a long JVM profile is tens of MB. These bound
# what a hostile or mistaken file can make us allocate.
MAX_PROFILE_BYTES = 256 << 20  # on disk
MAX_DECOMPRESSED = 512 << 20
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ProfileSource:
    """What one profile file contributed, for the report's `input.profiles`."""

    path: str
    service: str | None = None
    format: str = "unknown"
    samples: float = 0.0
    unit: str = "samples"
    skipped: Counter = field(default_factory=Counter)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"path": self.path, "service": self.service, "format": self.format,
                "samples": round(self.samples, 6), "unit": self.unit, "skipped": dict(self.skipped),
                "error": self.error}


@dataclass
class LoadedProfiles:
    profiles: list[Profile] = field(default_factory=list)
    sources: list[ProfileSource] = field(default_factory=list)


def split_spec(spec: str) -> tuple[str | None, str]:
    """`SERVICE=PATH` -> (SERVICE, PATH); a plain path (even one holding '=' in a directory name) -> (None, PATH)."""
    service, sep, path = spec.partition("=")
    if sep and service and "/" not in service and not Path(spec).exists():
        return service, path
    return None, spec


def load_profiles(specs: list[str], known_services: list[str] | None = None) -> LoadedProfiles:
    out = LoadedProfiles()
    known = {s.lower(): s for s in known_services or []}
    for spec in specs:
        service, path = split_spec(spec)
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
        else:
            files = [p]
        for f in files:
            src = ProfileSource(str(f), service)
            out.sources.append(src)
            prof = _read_one(f, service, known, src)
            if prof is not None:
                out.profiles.append(prof)
    return out


def _read_one(path: Path, service: str | None, known: dict[str, str], src: ProfileSource) -> Profile | None:
    try:
        data = _read_bounded(path)
        prof, labelled = _parse(data, str(path), src)
    except (OSError, ValueError, EOFError, zlib.error, RecursionError) as err:
        src.error = f"{_reason(err)}"
        src.skipped["unreadable_profiles"] += 1
        return None
    prof.service = service or labelled or _service_from_name(path, known)
    src.service, src.format, src.samples, src.unit = prof.service, prof.format, prof.total, prof.unit
    if prof.service is None:
        src.error = ("no service for this profile: name it as SERVICE=PATH, e.g. "
                     f"--profile checkout={path}")
        src.skipped["no_service"] += 1
        return None
    if prof.n_stacks == 0:
        src.error = "no CPU samples in this profile"
        src.skipped["empty_profiles"] += 1
        return None
    return prof


def _reason(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, RecursionError):
        return "JSON nested too deeply"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


def _read_bounded(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_PROFILE_BYTES:
        raise ValueError(f"larger than the {MAX_PROFILE_BYTES >> 20} MiB profile limit")
    with path.open("rb") as fh:
        data = fh.read(MAX_PROFILE_BYTES + 1)
    if data[:2] == GZIP_MAGIC:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            data = gz.read(MAX_DECOMPRESSED + 1)
        if len(data) > MAX_DECOMPRESSED:
            raise ValueError(f"expands past the {MAX_DECOMPRESSED >> 20} MiB limit for a decompressed profile")
    return data


def _parse(data: bytes, source: str, src: ProfileSource) -> tuple[Profile, str | None]:
    head = data[:4096].lstrip()
    if head[:1] in (b"{", b"["):
        doc = json.loads(data.decode("utf-8", errors="replace"))
        if is_speedscope(doc):
            return read_speedscope(doc, source, None, src.skipped), _json_service(doc)
        if is_cpuprofile(doc):
            return read_cpuprofile(doc, source, None, src.skipped), None
        raise ProfileFormatError("JSON that is neither speedscope nor a V8 .cpuprofile")
    sample = data[:1 << 20]  # py-spy's lines with full file names run to tens of kB
    if b"\x00" not in sample and looks_folded(sample.decode("utf-8", errors="replace"), len(sample) == len(data)):
        lines = data.decode("utf-8", errors="replace").splitlines()
        return read_folded(lines, source, None, src.skipped), None
    try:
        return read_pprof(data, source, None)
    except PprofError as err:
        raise ValueError(f"not a CPU profile this tool reads (pprof, folded stacks, speedscope, "
                         f".cpuprofile): {err}") from None


def _json_service(doc: dict) -> str | None:
    name = doc.get("name")
    return None if not isinstance(name, str) else (name.split("=", 1)[1] if name.startswith("service=") else None)


def _service_from_name(path: Path, known: dict[str, str]) -> str | None:
    """The traced service a file name starts with (`render.cpuprofile`, `render-01.pprof.gz`)."""
    stem = path.name.lower()
    for name in sorted(known, key=len, reverse=True):
        if stem == name or re.match(re.escape(name) + r"[._\-]", stem):
            return known[name]
    return None
