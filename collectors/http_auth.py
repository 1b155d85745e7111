"""Transport for Prometheus-compatible APIs: credentials, TLS, headers, timeout and retries.

Secrets come from the environment or from files, never from command-line arguments (those end
up in shell history and in `ps` output). Retries cover what a busy Thanos or Mimir returns
under load (429, 5xx) and read timeouts, with exponential backoff.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

ENV_TOKEN = "PROFILE_FIRST_PROM_TOKEN"
ENV_TOKEN_FILE = "PROFILE_FIRST_PROM_TOKEN_FILE"
ENV_USER = "PROFILE_FIRST_PROM_USER"
ENV_PASSWORD = "PROFILE_FIRST_PROM_PASSWORD"
ENV_PASSWORD_FILE = "PROFILE_FIRST_PROM_PASSWORD_FILE"

RETRY_STATUS = (429, 500, 502, 503, 504)


@dataclass
class Transport:
    """How to talk to the server. Every field is safe to keep in a config file (no secrets)."""

    timeout: float = 30.0  # seconds per request, also sent to the server as the query timeout
    retries: int = 3  # extra attempts after a 429/5xx, a reset connection or a read timeout
    backoff: float = 0.5  # seconds; urllib3 waits backoff * 2**(attempt-1) between attempts
    ca_bundle: str | None = None  # PEM file of CAs to trust instead of the system store
    insecure_skip_verify: bool = False  # opt-in only: disables TLS certificate checks
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"X-Scope-OrgID": "tenant-1"}
    token_file: str | None = None  # bearer token file (e.g. a Kubernetes service-account token)
    password_file: str | None = None  # basic-auth password file; the user is $PROFILE_FIRST_PROM_USER


def _read_secret(path: str) -> str:
    return Path(path).expanduser().read_text(encoding="utf-8").strip()


def credentials(t: Transport, env: dict[str, str] | None = None) -> tuple[dict[str, str], tuple[str, str] | None]:
    """(extra headers, basic-auth tuple) from the environment and the configured files."""
    env = dict(os.environ) if env is None else env
    token = env.get(ENV_TOKEN) or ""
    token_file = t.token_file or env.get(ENV_TOKEN_FILE)
    if not token and token_file:
        token = _read_secret(token_file)
    user = env.get(ENV_USER) or ""
    password = env.get(ENV_PASSWORD) or ""
    password_file = t.password_file or env.get(ENV_PASSWORD_FILE)
    if user and not password and password_file:
        password = _read_secret(password_file)
    if token and user:
        raise ValueError(f"both a bearer token and basic auth are set; unset {ENV_TOKEN} or {ENV_USER}")
    if token:
        return {"Authorization": f"Bearer {token}"}, None
    if user:
        return {}, (user, password)
    return {}, None


def connect(url: str, t: Transport) -> PrometheusConnect:
    """A PrometheusConnect with our session, retries and credentials."""
    auth_headers, basic = credentials(t)
    session = requests.Session()
    # PrometheusConnect ignores disable_ssl when given a session, so set verify here.
    session.verify = False if t.insecure_skip_verify else (t.ca_bundle or True)
    retry = Retry(
        total=t.retries,
        connect=t.retries,
        read=t.retries,
        status=t.retries,
        other=0,
        backoff_factor=t.backoff,
        status_forcelist=RETRY_STATUS,
        allowed_methods=None,  # queries are reads; POST retries are safe too
        raise_on_status=False,  # hand the last 5xx to the caller with its body
        respect_retry_after_header=True,
    )
    headers = {**t.headers, **auth_headers}
    return PrometheusConnect(url=url.rstrip("/"), headers=headers or None, retry=retry, auth=basic,
                             session=session, timeout=t.timeout)  # type: ignore[arg-type]
