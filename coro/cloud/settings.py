"""The cloud's settings, read from the environment once at start (SPEC §3).

- `DATABASE_URL`: PostgreSQL (`postgresql://`, `postgres://`, `postgresql+asyncpg://`),
  required.
- `JWT_SECRET`: the HS256 key of access tokens, at least 32 characters, required.
- `CLOUD_HOST`, `CLOUD_PORT`: the bind address, default `0.0.0.0:4000` (port 0: any).
- `CLOUD_PUBLIC_URL`: the URL users reach the cloud at (OAuth redirects); default: the
  request's own.
- `REDIS_URL`: optional: the broker between several instances (Redis pub/sub); without
  it the cloud runs as one instance. `REDIS_CHANNEL_PREFIX`: the prefix of its channel
  names, default `coro:` (several clouds on one Redis keep apart by it).
- `JWT_ISSUER`, `JWT_ACCESS_TTL_SECONDS`, `JWT_REFRESH_TTL_SECONDS`: default
  `coro-cloud`, 900 (15 min), 604800 (7 days).
- `LOGIN_MAX_FAILURES_PER_ACCOUNT`, `LOGIN_MAX_FAILURES_PER_IP`,
  `LOGIN_THROTTLE_WINDOW_SECONDS`: default 10, 100, 900; `SIGNUPS_MAX_PER_IP`: sign-ups
  per client address in that window, default 20.
- `GITHUB_CLIENT_ID`, `GITHUB_CLIENT_SECRET`: enable GitHub login (both or neither);
  `GITHUB_AUTHORIZE_URL`, `GITHUB_TOKEN_URL`, `GITHUB_API_URL`: GitHub's endpoints, for
  GitHub Enterprise (or a test fake).
- `CLOUD_SMTP_URL`, `CLOUD_SMTP_FROM`: the SMTP server members' own notification
  e-mails go through (`GET/PUT /teams/:teamId/notifications/me`; without it they are not
  offered): `smtp://[user[:password]@]host[:port]` (STARTTLS, port 587) or `smtps://…`
  (TLS, port 465), and the sender's address. `CLOUD_SMTP_SECURITY`: `starttls`, `tls` or
  `none` (in the clear: a relay on the same machine), overriding the scheme's.

Secrets (the JWT secret, passwords inside URLs, the OAuth client secret, the SMTP
password) are kept out of `repr` and out of every error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

from coro.domain.cloud_protocol import HEARTBEAT_TIMEOUT_SECONDS

MIN_JWT_SECRET = 32


class SettingsError(ValueError):
    """The environment does not describe a cloud that can start; lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class GitHubOAuth:
    client_id: str
    client_secret: str = field(repr=False)
    authorize_url: str = "https://github.com/login/oauth/authorize"
    token_url: str = "https://github.com/login/oauth/access_token"
    api_url: str = "https://api.github.com"


@dataclass(frozen=True)
class LoginThrottle:
    """What one window allows: failed logins per account and per client address, and
    sign-ups per client address."""

    max_account_failures: int = 10
    max_ip_failures: int = 100
    window_seconds: int = 900
    max_ip_signups: int = 20


SmtpSecurity = Literal["starttls", "tls", "none"]
#: each way of securing SMTP (as `CLOUD_SMTP_SECURITY` names it), and its port when the
#: URL names none
SMTP_SECURITY: dict[str, tuple[SmtpSecurity, int]] = {
    "starttls": ("starttls", 587),
    "tls": ("tls", 465),
    "none": ("none", 25),
}


@dataclass(frozen=True)
class CloudSmtp:
    """The SMTP server of members' own notification e-mails."""

    host: str
    port: int
    security: SmtpSecurity
    sender: str  # the From address
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NotificationRetries:
    """How the cloud tries each notification delivery: config.json's defaults for
    `notifications.attempts`, `retryDelaySeconds` and `timeoutSeconds`."""

    attempts: int = 5
    retry_delay_seconds: float = 2.0
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class CloudSettings:
    database_url: URL  # its repr hides the password
    jwt_secret: str = field(repr=False)
    host: str = "0.0.0.0"
    port: int = 4000
    public_url: str | None = None
    redis_url: str | None = field(default=None, repr=False)
    redis_channel_prefix: str = "coro:"
    jwt_issuer: str = "coro-cloud"
    access_ttl_seconds: int = 900
    refresh_ttl_seconds: int = 604_800
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    github: GitHubOAuth | None = None
    max_body_bytes: int = 1024 * 1024
    #: a runner socket without a heartbeat for this long is closed (tests shorten it)
    heartbeat_timeout_seconds: float = HEARTBEAT_TIMEOUT_SECONDS
    #: members' own notification e-mails go through it; None: they are not offered
    smtp: CloudSmtp | None = None
    #: how team notifications are tried (tests shorten the delay)
    notification_retries: NotificationRetries = field(default_factory=NotificationRetries)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CloudSettings:
        problems: list[str] = []

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, default: int, low: int, high: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be a whole number")
                return default
            if not low <= value <= high:
                problems.append(f"{name} must be between {low} and {high}")
                return default
            return value

        def http_url(name: str, default: str | None) -> str | None:
            raw = text(name)
            if raw is None:
                return default
            parts = urlsplit(raw)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(f"{name} must be an http(s) URL")
                return default
            return raw.rstrip("/")

        database_url = None
        raw_db = text("DATABASE_URL")
        if raw_db is None:
            problems.append("DATABASE_URL is required (a postgresql:// URL)")
        else:
            try:
                database_url = postgres_url(raw_db)
            except ValueError as exc:
                problems.append(str(exc))

        secret = env.get("JWT_SECRET", "")
        if not secret:
            problems.append(f"JWT_SECRET is required (at least {MIN_JWT_SECRET} characters)")
        elif len(secret) < MIN_JWT_SECRET:
            problems.append(
                f"JWT_SECRET is too short: {len(secret)} characters, at least "
                f"{MIN_JWT_SECRET} are required"
            )

        github = None
        client_id, client_secret = text("GITHUB_CLIENT_ID"), text("GITHUB_CLIENT_SECRET")
        if (client_id is None) != (client_secret is None):
            problems.append("GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET go together")
        elif client_id is not None and client_secret is not None:
            defaults = GitHubOAuth(client_id, client_secret)
            github = GitHubOAuth(
                client_id,
                client_secret,
                authorize_url=http_url("GITHUB_AUTHORIZE_URL", defaults.authorize_url)
                or defaults.authorize_url,
                token_url=http_url("GITHUB_TOKEN_URL", defaults.token_url) or defaults.token_url,
                api_url=http_url("GITHUB_API_URL", defaults.api_url) or defaults.api_url,
            )

        host = text("CLOUD_HOST") or "0.0.0.0"
        port = number("CLOUD_PORT", 4000, 0, 65535)
        public_url = http_url("CLOUD_PUBLIC_URL", None)
        redis_url = text("REDIS_URL")
        if redis_url is not None and urlsplit(redis_url).scheme not in ("redis", "rediss"):
            problems.append("REDIS_URL must be a redis:// or rediss:// URL")
        redis_prefix = env.get("REDIS_CHANNEL_PREFIX", "coro:")
        if len(redis_prefix) > 100 or not redis_prefix.isprintable() or " " in redis_prefix:
            problems.append("REDIS_CHANNEL_PREFIX must be at most 100 printable characters")
        access_ttl = number("JWT_ACCESS_TTL_SECONDS", 900, 1, 86_400)
        refresh_ttl = number("JWT_REFRESH_TTL_SECONDS", 604_800, 60, 31_536_000)
        throttle = LoginThrottle(
            max_account_failures=number("LOGIN_MAX_FAILURES_PER_ACCOUNT", 10, 1, 10_000),
            max_ip_failures=number("LOGIN_MAX_FAILURES_PER_IP", 100, 1, 1_000_000),
            window_seconds=number("LOGIN_THROTTLE_WINDOW_SECONDS", 900, 1, 86_400),
            max_ip_signups=number("SIGNUPS_MAX_PER_IP", 20, 1, 1_000_000),
        )
        smtp = None
        smtp_url, smtp_from = text("CLOUD_SMTP_URL"), text("CLOUD_SMTP_FROM")
        if (smtp_url is None) != (smtp_from is None):
            problems.append("CLOUD_SMTP_URL and CLOUD_SMTP_FROM go together")
        elif smtp_url is not None and smtp_from is not None:
            try:
                smtp = smtp_settings(smtp_url, smtp_from, text("CLOUD_SMTP_SECURITY"))
            except ValueError as exc:
                problems.append(str(exc))
        if problems or database_url is None:
            raise SettingsError(problems)
        return cls(
            database_url=database_url,
            jwt_secret=secret,
            host=host,
            port=port,
            public_url=public_url,
            redis_url=redis_url,
            redis_channel_prefix=redis_prefix,
            jwt_issuer=text("JWT_ISSUER") or "coro-cloud",
            access_ttl_seconds=access_ttl,
            refresh_ttl_seconds=refresh_ttl,
            throttle=throttle,
            github=github,
            smtp=smtp,
        )


def postgres_url(raw: str) -> URL:
    """`DATABASE_URL` as a `postgresql+asyncpg` URL; errors never repeat the URL."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ValueError("DATABASE_URL is not a valid postgresql:// URL") from None
    if url.drivername not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    if not url.database:
        raise ValueError("DATABASE_URL needs a database name (…/database)")
    return url.set(drivername="postgresql+asyncpg")


def smtp_settings(url: str, sender: str, security: str | None = None) -> CloudSmtp:
    """`CLOUD_SMTP_URL`, `CLOUD_SMTP_FROM` and `CLOUD_SMTP_SECURITY` as a `CloudSmtp`;
    errors never repeat the URL (it may hold a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("CLOUD_SMTP_URL is not a valid smtp:// URL") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("CLOUD_SMTP_URL must be an smtp:// or smtps:// URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("CLOUD_SMTP_URL takes no path, query or fragment")
    found = SMTP_SECURITY.get(security or ("tls" if parts.scheme == "smtps" else "starttls"))
    if found is None:
        raise ValueError("CLOUD_SMTP_SECURITY must be starttls, tls or none")
    chosen, default_port = found
    local, at, domain = sender.partition("@")
    if not (local and at and domain) or any(c.isspace() for c in sender) or len(sender) > 320:
        raise ValueError("CLOUD_SMTP_FROM must be an e-mail address")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return CloudSmtp(
        host=parts.hostname,
        port=port or default_port,
        security=chosen,
        sender=sender,
        username=username,
        password=password,
    )
