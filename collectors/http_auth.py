"""Transport settings and credentials for Prometheus-compatible APIs.

Secrets come from the environment or from files, never from command-line arguments (those end
up in shell history and in `ps` output). Every secret in play (token, password, token file
content, credential header values) goes into the client's `Redactor`, so no message, report or
log line repeats one, even when a server echoes it back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from collectors.http_client import HttpClient, Limits, Redactor, basic_secrets, header_secrets

ENV_TOKEN = "PROFILE_FIRST_PROM_TOKEN"
ENV_TOKEN_FILE = "PROFILE_FIRST_PROM_TOKEN_FILE"
ENV_USER = "PROFILE_FIRST_PROM_USER"
ENV_PASSWORD = "PROFILE_FIRST_PROM_PASSWORD"
ENV_PASSWORD_FILE = "PROFILE_FIRST_PROM_PASSWORD_FILE"


@dataclass
class Transport:
    """How to talk to the server. Every field is safe to keep in a config file (no secrets)."""

    timeout: float = 30.0  # seconds per request, start to last byte; also the server's query timeout
    retries: int = 3  # extra attempts after a 429/5xx, a failed connection or a timeout
    backoff: float = 0.5  # seconds; the k-th retry waits backoff * 2**(k-1)
    ca_bundle: str | None = None  # PEM file of CAs to trust instead of the system store
    insecure_skip_verify: bool = False  # opt-in only: disables TLS certificate checks
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"X-Scope-OrgID": "tenant-1"}
    token_file: str | None = None  # bearer token file (e.g. a Kubernetes service-account token)
    password_file: str | None = None  # basic-auth password file; the user is $PROFILE_FIRST_PROM_USER
    max_response_mb: float = 128.0  # largest decoded answer to one request


def _read_secret(path: str, what: str) -> str:
    try:
        secret = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read the {what} file {path}: {reason}") from None
    if not secret:
        raise ValueError(f"the {what} file {path} is empty")
    return secret


def credentials(t: Transport, env: dict[str, str] | None = None,
                prefix: str = "PROFILE_FIRST_PROM") -> tuple[dict[str, str], tuple[str, str] | None]:
    """(extra headers, basic-auth tuple) from the environment and the configured files.
    Raises ValueError (one line, no secret) for an unreadable file or conflicting settings.
    `prefix` names the variables: $PREFIX_TOKEN(_FILE), $PREFIX_USER, $PREFIX_PASSWORD(_FILE)
    (trace stores read PROFILE_FIRST_TRACES_*)."""
    env = dict(os.environ) if env is None else env
    if prefix != "PROFILE_FIRST_PROM":  # the same rules under the other names
        env = {k.replace(prefix, "PROFILE_FIRST_PROM", 1): v for k, v in env.items() if k.startswith(prefix + "_")}
    token = env.get(ENV_TOKEN) or ""
    token_file = t.token_file or env.get(ENV_TOKEN_FILE)
    if not token and token_file:
        token = _read_secret(token_file, "token")
    user = env.get(ENV_USER) or ""
    password = env.get(ENV_PASSWORD) or ""
    password_file = t.password_file or env.get(ENV_PASSWORD_FILE)
    if user and not password and password_file:
        password = _read_secret(password_file, "password")
    if token and user:
        raise ValueError(f"both a bearer token and basic auth are set; unset ${prefix}_TOKEN or ${prefix}_USER")
    if token:
        return {"Authorization": f"Bearer {token}"}, None
    if user:
        return {}, (user, password)
    return {}, None


def limits(t: Transport) -> Limits:
    if not t.max_response_mb > 0:
        raise ValueError(f"max_response_mb must be positive, not {t.max_response_mb!r}")
    return Limits(deadline_s=float(t.timeout), max_bytes=int(t.max_response_mb * 2**20), retries=int(t.retries),
                  backoff_s=float(t.backoff))


def connect(url: str, t: Transport, prefix: str = "PROFILE_FIRST_PROM", env: dict[str, str] | None = None) -> HttpClient:
    """A bounded client for `url` with our credentials (from $PREFIX_* in `env`, default the
    process environment), headers and TLS settings."""
    auth_headers, basic = credentials(t, env=env, prefix=prefix)
    headers = {**t.headers, **auth_headers}
    secrets = header_secrets(headers) + (basic_secrets(*basic) if basic else [])
    url_password = urlsplit(url).password  # requests sends user:password@ as basic auth
    if url_password:
        secrets.append(url_password)
    return HttpClient(url, limits(t), headers=headers, auth=basic,
                      verify=False if t.insecure_skip_verify else (t.ca_bundle or True), redact=Redactor(secrets))
