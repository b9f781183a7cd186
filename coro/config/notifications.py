"""`notifications` in config.json: where Coro tells people that a job needs them.

Each channel lists the events it wants (`events`, default `DEFAULT_EVENTS`). Channel ids
name them on the settings page and in `POST /notifications/test`; a channel without an
id gets `<kind>-<n>` (`webhook-1`, `slack-1`, `email-1`).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from coro.config.section import SPACE, ConfigSection, http_url

#: `job.awaiting`: parked waiting for someone (plan approval, developer input, budget);
#: `pr.opened`: the job opened a pull request.
NotificationEvent = Literal[
    "job.awaiting", "job.escalated", "job.failed", "job.completed", "pr.opened"
]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = (
    "job.awaiting",
    "job.escalated",
    "job.failed",
    "job.completed",
    "pr.opened",
)
#: what a channel gets when it does not say: everything but `job.completed`
DEFAULT_EVENTS: tuple[NotificationEvent, ...] = (
    "job.awaiting",
    "job.escalated",
    "job.failed",
    "pr.opened",
)

ChannelKind = Literal["webhook", "slack", "email"]


class Channel(ConfigSection):
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    events: list[NotificationEvent] | None = None

    def wants(self, event: NotificationEvent) -> bool:
        return event in (self.events if self.events is not None else DEFAULT_EVENTS)


class WebhookChannel(Channel):
    """A JSON POST signed with `secret` (`X-Coro-Signature-256`, as GitHub signs)."""

    url: str = Field(min_length=1, max_length=2000)
    secret: str = Field(min_length=1, max_length=4096)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)


class SlackChannel(Channel):
    """A Slack incoming webhook (its URL is the credential: masked like a secret)."""

    webhook_url: str = Field(min_length=1, max_length=2000)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)


class EmailChannel(Channel):
    """Mail over SMTP."""

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=587, ge=1, le=65535)
    #: `starttls` upgrades a plain connection; `tls` connects over TLS (port 465)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(default=None, min_length=1, max_length=255)
    password: str | None = Field(default=None, min_length=1, max_length=4096)
    sender: str = Field(alias="from", max_length=320, pattern=rf"^[^@{SPACE}]+@[^@{SPACE}]+$")
    to: list[str] = Field(min_length=1, max_length=100)

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            local, at, domain = address.partition("@")
            if not (local and at and domain) or any(c.isspace() for c in address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value


class NotificationsConfig(ConfigSection):
    #: where people reach the runner, for links (default: its own `http://host:port`):
    #: a run is `<dashboardUrl>/dashboard/#/runs/<jobId>` (a trailing `/dashboard` is fine)
    dashboard_url: str | None = Field(default=None, min_length=1, max_length=2000)
    webhooks: list[WebhookChannel] = Field(default_factory=list, max_length=50)
    slack: list[SlackChannel] = Field(default_factory=list, max_length=50)
    email: list[EmailChannel] = Field(default_factory=list, max_length=50)
    #: deliveries tried this many times in all, waiting `retryDelaySeconds`, then twice
    #: as long, ... between tries (at least a `Retry-After`'s wait); a 4xx other than
    #: 408/429, or an SMTP 5xx, is not tried again
    attempts: int = Field(default=5, ge=1, le=20)
    retry_delay_seconds: float = Field(default=2.0, ge=0.01, le=3600)
    #: the limit of one try (connecting, sending, the answer)
    timeout_seconds: float = Field(default=10.0, ge=0.1, le=300)

    @field_validator("dashboard_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = http_url(value)
        parts = urlsplit(value)
        if parts.query or parts.fragment:  # links append a path and the run's #/runs/<id>
            raise ValueError("must not have a query or fragment")
        return value

    @model_validator(mode="after")
    def _channel_ids(self) -> NotificationsConfig:
        channels = self.channels()
        taken = {channel.id for _, channel in channels if channel.id is not None}
        seen: set[str] = set()
        for kind, channel in channels:
            if channel.id is None:
                n = 1
                while f"{kind}-{n}" in taken:
                    n += 1
                channel.id = f"{kind}-{n}"
                taken.add(channel.id)
            elif channel.id in seen:
                raise ValueError(f"channel id {channel.id!r} is used twice")
            seen.add(channel.id)
        return self

    def channels(self) -> list[tuple[ChannelKind, Channel]]:
        found: list[tuple[ChannelKind, Channel]] = [("webhook", c) for c in self.webhooks]
        found += [("slack", c) for c in self.slack]
        found += [("email", c) for c in self.email]
        return found
