"""Delivery of the weekly report: a webhook that fails its first attempt, a real SMTP server
(aiosmtpd) on loopback, and failures that are logged and exit 5 without losing the files."""

from __future__ import annotations

import email
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from analyzer.delivery import Published, webhook_payload

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hook:
    """A loopback HTTP server answering each POST with the next status of `statuses` (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/secret-part"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Hook":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


def run_report(tmp_path: Path, traces: Path, config_text: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "weekly.toml"
    cfg.write_text(textwrap.dedent(config_text), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "analyzer", "report", "--config", str(cfg), "--traces", str(traces),
                           "--end", "now", "--window", "1d", "--no-history", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


WEBHOOK_CONFIG = """
    [credentials]
    webhook_url = "TEAM_HOOK"
    [delivery.webhook]
    timeout = 5
    retries = {retries}
    [outputs]
    formats = ["json", "md"]
"""


def test_the_webhook_is_retried_after_a_failed_attempt_and_carries_the_verdicts(tmp_path, orders_n_plus_one_jsonl):
    with Hook([500]) as hook:
        p = run_report(tmp_path, orders_n_plus_one_jsonl, WEBHOOK_CONFIG.format(retries=2), {"TEAM_HOOK": hook.url})
    assert p.returncode == 0, p.stderr
    assert len(hook.bodies) == 2 and hook.bodies[0] == hook.bodies[1]  # the first attempt got a 500
    payload = hook.bodies[1]
    assert payload["text"].startswith("profile-first weekly report ")
    section = payload["blocks"][1]["text"]
    assert section["type"] == "mrkdwn"
    assert "• orders: not recommended (cause database)" in section["text"]
    folder = next((tmp_path / "reports").iterdir())
    assert f"Report: {folder.resolve()}/report.json, {folder.resolve()}/report.md" in section["text"]


def test_the_second_weeks_webhook_names_the_biggest_changes(tmp_path, orders_batched_jsonl, orders_n_plus_one_jsonl):
    """Week 1: orders loads its items in 4 IN (...) queries; week 2: the N+1 loop shipped. The second
    summary says what got slower, naming the operation and the percentile."""
    cfg = tmp_path / "weekly.toml"
    cfg.write_text(textwrap.dedent(WEBHOOK_CONFIG.format(retries=0)), encoding="utf-8")
    with Hook([]) as hook:
        for traces in (orders_batched_jsonl, orders_n_plus_one_jsonl):
            p = subprocess.run([sys.executable, "-m", "analyzer", "report", "--config", str(cfg), "--traces",
                                str(traces), "--end", "now", "--window", "1d"], capture_output=True, text=True,
                               cwd=tmp_path, timeout=180,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "TEAM_HOOK": hook.url})
            assert p.returncode == 0, p.stderr
    first, second = (body["blocks"][1]["text"]["text"] for body in hook.bodies)
    assert "Biggest changes" not in first
    changes = second[second.index("Biggest changes since the previous run:"):].splitlines()
    slower = [line for line in changes[1:] if line.startswith("• orders GET /orders: slower, ")]
    # Each names its figure: total time in the window, or the p99 (whether the p99 also rose by more
    # than 10 % depends on how busy the host was when the two workloads were recorded).
    assert slower and {line.split(", ")[1].split(" ")[0] for line in slower} <= {"total", "p99"}, changes


def test_a_failed_webhook_is_logged_exit_5_and_keeps_the_files(tmp_path, orders_n_plus_one_jsonl):
    with Hook([500, 503]) as hook:
        p = run_report(tmp_path, orders_n_plus_one_jsonl, WEBHOOK_CONFIG.format(retries=1), {"TEAM_HOOK": hook.url})
    assert p.returncode == 5
    assert "webhook failed after 2 attempts: HTTP 503" in p.stderr
    assert "secret-part" not in p.stderr + p.stdout  # the URL is a secret
    folder = next((tmp_path / "reports").iterdir())
    assert sorted(f.name for f in folder.iterdir()) == ["report.json", "report.md"]
    json.loads((folder / "report.json").read_text())


def test_an_unset_webhook_variable_fails_before_the_run(tmp_path, orders_n_plus_one_jsonl):
    p = run_report(tmp_path, orders_n_plus_one_jsonl, WEBHOOK_CONFIG.format(retries=1), {"TEAM_HOOK": ""})
    assert p.returncode == 2 and "credentials.webhook_url names $TEAM_HOOK, which is not set" in p.stderr
    assert not (tmp_path / "reports").exists()


EMAIL_CONFIG = """
    [delivery.email]
    host = "127.0.0.1"
    port = {port}
    security = "none"
    from = "profile-first@example.com"
    to = ["sre@example.com", "lead@example.com"]
    timeout = 5
    retries = 1
    [outputs]
    formats = {formats}
"""


def test_the_email_has_the_markdown_text_and_the_html_alternative(tmp_path, orders_n_plus_one_jsonl, smtp_server):
    port, inbox = smtp_server
    p = run_report(tmp_path, orders_n_plus_one_jsonl, EMAIL_CONFIG.format(port=port, formats='["md", "html"]'), {})
    assert p.returncode == 0, p.stderr
    (msg,) = inbox.messages
    assert msg["To"] == "sre@example.com, lead@example.com"
    assert msg["Subject"].endswith("report: 0 rewrite recommended, 1 not, 0 without evidence")
    assert msg.get_content_type() == "multipart/alternative"
    # SMTP carries lines ending in CRLF
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = msg.get_body(("html",)).get_content().replace("\r\n", "\n")
    folder = next((tmp_path / "reports").iterdir())
    assert text == (folder / "report.md").read_text()
    assert html == (folder / "report.html").read_text()


class BusyInbox(Inbox):
    """Answers the first message with a transient 451, as a server under load or greylisting does."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        if not getattr(self, "refused", False):
            self.refused = True
            return "451 4.3.0 try again later"
        return await super().handle_DATA(server, session, envelope)


def test_a_transient_smtp_refusal_is_retried(tmp_path, orders_n_plus_one_jsonl):
    inbox = BusyInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        p = run_report(tmp_path, orders_n_plus_one_jsonl,
                       EMAIL_CONFIG.format(port=controller.port, formats='["md"]'), {})
    finally:
        controller.stop()
    assert p.returncode == 0, p.stderr
    assert inbox.refused and len(inbox.messages) == 1


def test_without_html_the_email_is_the_markdown_alone(tmp_path, orders_n_plus_one_jsonl, smtp_server):
    port, inbox = smtp_server
    p = run_report(tmp_path, orders_n_plus_one_jsonl, EMAIL_CONFIG.format(port=port, formats='["json"]'), {})
    assert p.returncode == 0, p.stderr
    (msg,) = inbox.messages
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().startswith("# profile-first report")


def test_an_unreachable_smtp_server_is_exit_5_and_the_files_stay(tmp_path, orders_n_plus_one_jsonl):
    p = run_report(tmp_path, orders_n_plus_one_jsonl, EMAIL_CONFIG.format(port=free_port(), formats='["json"]'), {})
    assert p.returncode == 5
    assert "e-mail via 127.0.0.1" in p.stderr and "failed after 2 attempts: ConnectionRefusedError" in p.stderr
    folder = next((tmp_path / "reports").iterdir())
    assert [f.name for f in folder.iterdir()] == ["report.json"]


def test_telemetry_strings_cannot_mention_link_or_format_in_the_webhook():
    hostile = "<!channel> *URGENT* <https://evil.example|click>"
    report = {"window": {"start": "2026-11-23T00:00:00Z", "end": "2026-11-30T00:00:00Z"},
              "services": [{"service": hostile, "verdict": {"rust_rewrite": "recommended", "cause": "cpu_bound"}}]}
    payload = webhook_payload({"report": report}, Published("2026-W48", "/srv/reports/2026-W48", {"report": []}))
    text = payload["blocks"][1]["text"]["text"]
    assert "<!channel>" not in text and "<https://" not in text and "*URGENT*" not in text
    assert "&lt;!channel&gt; *\u200bURGENT*\u200b &lt;https://evil.example|click&gt;" in text
