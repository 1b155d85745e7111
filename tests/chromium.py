"""Real headless Chromium, driven over the DevTools protocol on loopback.

`open_page(path)` starts Debian's `chromium` with a fresh profile and no network services, loads
a local file, and records what a person would see go wrong: console errors, uncaught
exceptions, log entries of level error (CSP violations, failed loads) and every request the
page made. The DevTools port is chosen by Chromium (`--remote-debugging-port=0`) and read from
the profile's DevToolsActivePort file, so parallel runs never collide.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import websocket

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-zygote", "--single-process",
         "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0")
START_TIMEOUT_S = 30.0


def chromium_binary() -> str:
    """Debian's chromium; missing is a failure (scripts/install-test-servers.sh installs it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise AssertionError("chromium is not installed: run `bash scripts/install-test-servers.sh`")
    return path


@dataclass
class Page:
    ws: websocket.WebSocket
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _next_id: int = 0

    def call(self, method: str, timeout_s: float = 30.0, **params: object) -> dict:
        """Send one command and wait for its answer, recording the events that arrive meanwhile."""
        self._next_id += 1
        my_id = self._next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)
        raise AssertionError(f"{method}: no answer in {timeout_s} s")

    def wait_for(self, event: str, timeout_s: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self._event(msg)
            if msg.get("method") == event:
                return msg.get("params", {})
        raise AssertionError(f"no {event} in {timeout_s} s")

    def evaluate(self, expression: str) -> object:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """The whole page, beyond the viewport, as PNG."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            self.errors.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description")))
                                                                   for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(f"exception: {p['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
            self.errors.append(f"log {p['entry']['level']}: {p['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(p["request"]["url"])


class Chromium:
    """`with Chromium() as browser: page = browser.open(path)`; the process is stopped on exit."""

    def __init__(self, window: tuple[int, int] = (1200, 900)) -> None:
        self.window = window
        self._profile = tempfile.TemporaryDirectory(prefix="pf-chromium-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._pages: list[Page] = []

    def __enter__(self) -> Chromium:
        profile = Path(self._profile.name)
        self.proc = subprocess.Popen(
            [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={self.window[0]},{self.window[1]}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (active.exists() and active.read_text().strip()):
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode} before DevTools was ready")
            if time.monotonic() > deadline:
                raise AssertionError(f"chromium's DevTools did not start in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        self.port = int(active.read_text().split()[0])
        return self

    def open(self, path: Path, timeout_s: float = 30.0) -> Page:
        """Load `path` in the first tab and wait for its load event."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            targets = [t for t in json.load(r) if t.get("type") == "page"]
        page = Page(websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=timeout_s,
                                                suppress_origin=True))
        self._pages.append(page)
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.call(f"{domain}.enable")
        page.call("Page.navigate", url=path.resolve().as_uri())
        page.wait_for("Page.loadEventFired", timeout_s)
        return page

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for page in self._pages:
            page.ws.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._profile.cleanup()
