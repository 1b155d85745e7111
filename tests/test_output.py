"""`--output` writes to the path the user means (issue 10 §1).

Regular files are replaced atomically, through symlinks, keeping their mode; devices, FIFOs and
this process's descriptors are written as they are; every failure is one line, exit 2, with no
temporary file left. Full and read-only file systems are real small tmpfs mounts when the test
runs as root (as in CI); `/dev/full` and an injected rename failure cover the two write paths
everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from analyzer import output
from analyzer.output import OutputError, check_output, write_output

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "examples" / "orders-n-plus-one.otlp.jsonl"


def analyze(*args: str, umask: int = 0o022, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(TRACES), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120, preexec_fn=lambda: os.umask(umask))


def assert_one_line_exit_2(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    for needle in needles:
        assert needle in p.stderr


@contextlib.contextmanager
def tmpfs(where: Path, *options: str) -> Iterator[Path]:
    where.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}); /dev/full and the injected fault cover it")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_symlink_to_a_report_is_written_through_and_the_mode_kept(tmp_path):
    report = tmp_path / "reports" / "weekly.md"
    report.parent.mkdir()
    report.write_text("last week\n")
    report.chmod(0o640)
    link = tmp_path / "latest.md"
    link.symlink_to(report)
    p = analyze("--output", str(link))
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and link.resolve() == report
    assert report.read_text().startswith("# profile-first report")  # .md of the name given: Markdown
    assert stat.S_IMODE(report.stat().st_mode) == 0o640
    assert sorted(f.name for f in report.parent.iterdir()) == ["weekly.md"]


def test_a_new_report_gets_the_umask_mode_not_0600(tmp_path):
    assert analyze("--output", str(tmp_path / "r.json")).returncode == 0
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert analyze("--output", str(tmp_path / "private.json"), umask=0o077).returncode == 0
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("link_to", ["/proc/self/fd/1", "/dev/stdout", "/dev/fd/1"])
def test_a_link_to_stdout_writes_to_stdout_and_stays_a_link(tmp_path, link_to):
    link = tmp_path / "stdout"
    link.symlink_to(link_to)
    p = analyze("--output", str(link), "--format", "md")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("# profile-first report")
    assert link.is_symlink() and os.readlink(link) == link_to


def test_dev_stdout_redirected_to_a_file_appends_where_the_shell_put_it(tmp_path):
    log = tmp_path / "cron.log"
    log.write_text("earlier run\n")
    with open(log, "a") as f:
        p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(TRACES),
                            "--output", "/dev/stdout", "--format", "json"], stdout=f, stderr=subprocess.PIPE,
                           text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    text = log.read_text()
    assert text.startswith("earlier run\n{") and '"schema": "profile-first.report/v1"' in text
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cron.log"]


def test_a_fifo_is_written_to_not_replaced(tmp_path):
    fifo = tmp_path / "report.pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    p = analyze("--output", str(fifo), "--format", "md")
    reader.join(timeout=60)
    assert p.returncode == 0, p.stderr
    assert got and got[0].startswith(b"# profile-first report")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert [f.name for f in tmp_path.iterdir()] == ["report.pipe"]


def test_a_character_device_is_written_to_not_replaced(tmp_path):
    """/dev/full: a device the write reaches (and fails on, ENOSPC) — never replaced by a file."""
    before = os.stat("/dev/full")
    p = analyze("--output", "/dev/full", "--format", "json")
    assert_one_line_exit_2(p, "/dev/full", "no space left")
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


@pytest.mark.parametrize("target,needle", [
    ("missing-dir/r.md", "does not exist"),
    (".", "is a directory"),
    ("x" * 300 + ".md", "too long"),
    ("", "empty"),
])
def test_unwritable_targets_are_one_line_and_exit_2(tmp_path, target, needle):
    p = analyze("--output", target if target in ("", ".") else str(tmp_path / target), cwd=tmp_path)
    assert_one_line_exit_2(p, needle)
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_directory(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits: a read-only mount is what stops it
        with tmpfs(tmp_path / "ro", "ro", "size=64k") as ro:
            assert_one_line_exit_2(analyze("--output", str(ro / "r.md")), "read-only")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert_one_line_exit_2(analyze("--output", str(ro / "r.md")), "permission denied")


def test_a_full_disk_leaves_the_old_report_and_no_temp_file(tmp_path):
    with tmpfs(tmp_path / "small", "size=16k") as small:
        old = small / "r.json"
        old.write_text("{}\n")
        filler = small / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 1024)
                f.flush()
        p = analyze("--output", str(old))
        assert_one_line_exit_2(p, "no space left")
        assert old.read_text() == "{}\n"
        assert sorted(f.name for f in small.iterdir()) == ["filler", "r.json"]


def test_a_failed_rename_leaves_the_old_report_and_no_temp_file(tmp_path, monkeypatch):
    """The rename path's failure, injected (a full disk fails the write before it, above)."""
    old = tmp_path / "r.md"
    old.write_text("old\n")

    def refuse(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(output.os, "replace", refuse)
    with pytest.raises(OutputError, match="cross-device"):
        write_output(old, "new\n")
    assert old.read_text() == "old\n"
    assert [f.name for f in tmp_path.iterdir()] == ["r.md"]


def test_an_interrupted_write_leaves_no_temp_file(tmp_path):
    with pytest.raises(KeyboardInterrupt), output.open_output(tmp_path / "r.json") as f:
        f.write(b"{")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_check_output_refuses_before_a_long_run(tmp_path):
    """`analyze --listen --duration 10m --output …` fails in its first second, not after the capture."""
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "nope" / "r.md")
    with pytest.raises(OutputError, match="directory"):
        check_output(tmp_path)
    check_output(tmp_path / "fine.md")
    assert list(tmp_path.iterdir()) == []
    p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--listen", "--duration", "10m",
                        "--http-port", "0", "--grpc-port", "0", "--output", str(tmp_path / "nope" / "r.md")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert_one_line_exit_2(p, "does not exist")


def test_nothing_is_created_under_dev_and_capture_needs_a_directory_for_its_metrics(tmp_path):
    p = analyze("--output", "/dev/profile-first-nope.md")
    assert_one_line_exit_2(p, "does not exist")
    assert not os.path.exists("/dev/profile-first-nope.md")
    p = subprocess.run([sys.executable, "-m", "analyzer", "capture", "--duration", "1s", "--output", "/dev/stdout",
                        "--http-port", "0", "--grpc-port", "0"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert_one_line_exit_2(p, "metrics beside the traces")
    assert not [f for f in os.listdir("/dev") if f.startswith(("stdout.", ".stdout."))]
