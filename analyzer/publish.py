"""Publishing a run's files as one dated folder, all or nothing.

The files are written into a hidden temporary folder beside the target and fsynced, then the
folder is renamed into place: a crash or a failed run leaves the previous folder (if any)
untouched and at most a `.NAME.tmp-*` folder, which the next run removes. A successful rerun
for the same week replaces the folder: the old one is renamed aside first and removed only
after the new one is in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

STALE_SECONDS = 3600  # a temporary folder this old is from a run that died


def publish(files: dict[str, str], target: Path) -> Path:
    """Write `files` (name -> text) as the folder `target`, atomically; returns `target`."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        for name, text in files.items():
            with open(tmp / name, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(parent)
    return target


def _swap_in(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale(parent: Path, name: str) -> None:
    now = time.time()
    for p in parent.glob(f".{name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
