"""Delivering a run's summary after its files are written: a webhook (Slack-compatible JSON) and
e-mail over SMTP, each with a timeout per attempt and retries with backoff.

A delivery never touches the report files: it reads what was rendered, and a failure is
returned as a one-line message (the caller logs it and exits 5). Secrets (the webhook URL,
the SMTP password) come from the environment variables the config names and never appear in
a message. Telemetry strings are escaped for each destination (analyzer/renderers/escape.py).
"""

from __future__ import annotations

import html
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage

import requests

from analyzer.renderers.escape import for_slack
from analyzer.renderers.run_notes import change_items

VERDICTS = ("recommended", "not_recommended", "insufficient_evidence")
MAX_CHANGES = 5
BACKOFF_SECONDS = 0.5


@dataclass(frozen=True)
class Published:
    """What was written, for the message: the week, the folder (or its URL) and each team's files."""

    week: str
    location: str  # the folder's URL when [outputs] url is set, else its path
    files: dict[str, list[str]]  # team -> file names


def counts(report: dict) -> dict[str, int]:
    tally = dict.fromkeys(VERDICTS, 0)
    for s in report["services"]:
        tally[s["verdict"]["rust_rewrite"]] += 1
    return tally


def subject(prefix: str, team: str, report: dict, week: str) -> str:
    c = counts(report)
    status = "" if (report.get("completeness") or {}).get("complete", True) else " (incomplete)"
    return (f"{prefix} {week} {team}: {c['recommended']} rewrite recommended, {c['not_recommended']} not, "
            f"{c['insufficient_evidence']} without evidence{status}")


def webhook_payload(reports: dict[str, dict], published: Published) -> dict:
    """Slack-compatible: `text` as the fallback, `blocks` with the verdict table and the biggest changes."""
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text",
                                                      "text": f"profile-first weekly report {published.week}"}}]
    for team, report in reports.items():
        lines = [f"*{for_slack(team)}* · window {report['window']['start'][:10]} → {report['window']['end'][:10]}"]
        for p in (report.get("completeness") or {}).get("problems", []):
            lines.append(f":warning: incomplete: {for_slack(p['message'])}")
        for s in report["services"]:
            v = s["verdict"]
            lines.append(f"• {for_slack(s['service'])}: {v['rust_rewrite'].replace('_', ' ')} "
                         f"(cause {for_slack(v['cause'])})")
        changes = change_items(report)[:MAX_CHANGES]
        if changes:
            lines.append("Biggest changes since the previous run:")
            lines += [f"• {for_slack(c.line())}" for _, c in changes]
        where = ", ".join(f"{published.location}/{name}" for name in published.files.get(team, ()))
        lines.append(f"Report: {html.escape(where, quote=False)}")  # our own path or URL: entities only
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
    text = "; ".join(f"{team}: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts(r).items())
                     for team, r in reports.items())
    return {"text": f"profile-first weekly report {published.week}: {text}", "blocks": blocks}


def post_webhook(url: str, payload: dict, timeout: float, retries: int) -> str | None:
    """POST `payload`; None on success, else why it failed (without the URL, which is a secret)."""
    def attempt() -> str | None:
        r = requests.post(url, json=payload, timeout=timeout, allow_redirects=False)
        if r.status_code < 300:
            return None
        raise _Retryable(f"HTTP {r.status_code}") if r.status_code in (429,) or r.status_code >= 500 \
            else _Final(f"HTTP {r.status_code}")

    return _with_retries("webhook", attempt, retries, (requests.RequestException,))


@dataclass(frozen=True)
class Mail:
    host: str
    port: int
    security: str  # starttls | ssl | none
    sender: str
    to: tuple[str, ...]
    user: str | None
    password: str | None
    timeout: float
    retries: int


def email_message(mail: Mail, subject_line: str, markdown: str, html_doc: str | None) -> EmailMessage:
    """The Markdown report as text/plain, the HTML report (when rendered) as its alternative."""
    msg = EmailMessage()
    msg["Subject"] = subject_line
    msg["From"] = mail.sender
    msg["To"] = ", ".join(mail.to)
    msg.set_content(markdown, subtype="plain", charset="utf-8")
    if html_doc is not None:
        msg.add_alternative(html_doc, subtype="html", charset="utf-8")
    return msg


def send_email(mail: Mail, msg: EmailMessage) -> str | None:
    """Send `msg`; None on success, else why it failed."""
    def attempt() -> str | None:
        context = ssl.create_default_context()
        cls = smtplib.SMTP_SSL if mail.security == "ssl" else smtplib.SMTP
        kwargs = {"context": context} if mail.security == "ssl" else {}
        with cls(mail.host, mail.port, timeout=mail.timeout, **kwargs) as smtp:
            if mail.security == "starttls":
                smtp.starttls(context=context)
            if mail.user:
                smtp.login(mail.user, mail.password or "")
            refused = smtp.send_message(msg)
        if refused:
            raise _Final(f"refused recipients: {', '.join(sorted(refused))}")
        return None

    return _with_retries(f"e-mail via {mail.host}:{mail.port}", attempt, mail.retries,
                         (OSError, smtplib.SMTPException))


class _Retryable(Exception):
    pass


class _Final(Exception):
    pass


def _with_retries(what: str, attempt: Callable[[], str | None], retries: int,
                  transient: tuple[type[BaseException], ...]) -> str | None:
    last = ""
    for n in range(retries + 1):
        if n:
            time.sleep(BACKOFF_SECONDS * 2 ** (n - 1))
        try:
            return attempt()
        except _Final as e:
            return f"{what} failed: {e}"
        except smtplib.SMTPAuthenticationError as e:
            return f"{what} failed: authentication refused ({e.smtp_code})"
        except _Retryable as e:
            last = str(e)
        except transient as e:
            last = type(e).__name__ + (f": {e.strerror}" if isinstance(e, OSError) and e.strerror else "")
    return f"{what} failed after {retries + 1} attempts: {last}"
