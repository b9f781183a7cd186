"""The interface of a notification channel: the `notifier` plugin kind.

A notifier is made for one configured channel (an entry of `notifications.webhooks`,
`.slack` or `.email`) from that entry's settings. `send` makes one attempt and says how
it went (`Delivery`); the engine (`coro.engine.notifications`) decides about retries,
backs off, and keeps the outcomes. Nothing a notifier returns may carry a secret of its
settings (the webhook secret, the Slack URL, the SMTP password).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from coro.config.notifications import NotificationEvent
from coro.plugins.http import Scrubber, parse_retry_after, short_text

#: What a notification is about: a configured event, or `test` (`POST /notifications/test`).
NotificationKind = Literal[NotificationEvent, "test"]

#: How each event reads in a subject line or a heading.
EVENT_HEADLINES: dict[str, str] = {
    "job.awaiting": "Waiting for you",
    "job.escalated": "Escalated",
    "job.failed": "Failed",
    "job.completed": "Completed",
    "pr.opened": "Pull request opened",
    "test": "Test notification",
}

#: Statuses worth another try besides 5xx: a request timeout and a rate limit.
RETRYABLE_STATUSES = frozenset({408, 429})


class _HiddenInRequestLog(logging.Filter):
    """httpx logs each request's URL (at INFO): the parts of channel URLs that are
    credentials (a Slack webhook's path, a token in a query) are masked in it."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets and isinstance(record.args, tuple):
            record.args = tuple(self._masked(arg) for arg in record.args)
        return True

    def _masked(self, arg: object) -> object:
        if not isinstance(arg, (str, httpx.URL)):
            return arg
        text = str(arg)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


_REQUEST_LOG = _HiddenInRequestLog()
logging.getLogger("httpx").addFilter(_REQUEST_LOG)


def hide_in_request_log(*secrets: str) -> None:
    """Mask `secrets` wherever httpx's request log would show them."""
    _REQUEST_LOG.secrets.update(s for s in secrets if len(s) >= 4)


@dataclass(frozen=True)
class Notification:
    """One event of one job, as every channel is told it (the webhook's JSON payload)."""

    event: NotificationKind
    #: the same on every channel and on every retry (`X-Coro-Delivery`)
    delivery_id: str
    job_id: str
    title: str  # the job's human name (its description, work item or repository)
    status: str
    reason: str  # why someone is needed, or what happened
    phase: str
    at: str  # ISO 8601, UTC
    dashboard_url: str  # the run on the dashboard
    pull_request_url: str | None = None  # the job's newest pull request
    question: str | None = None  # what the job asks, while it waits for input

    @property
    def headline(self) -> str:
        return EVENT_HEADLINES[self.event]

    def payload(self) -> dict[str, Any]:
        """`{event, deliveryId, jobId, title, status, reason, phase, question?, at,
        links: {dashboard, pullRequest?}}`."""
        body: dict[str, Any] = {
            "event": self.event,
            "deliveryId": self.delivery_id,
            "jobId": self.job_id,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "phase": self.phase,
        }
        if self.question is not None:
            body["question"] = self.question
        links = {"dashboard": self.dashboard_url}
        if self.pull_request_url is not None:
            links["pullRequest"] = self.pull_request_url
        return {**body, "at": self.at, "links": links}

    def body(self) -> bytes:
        """The payload as sent (and signed): compact UTF-8 JSON."""
        text = json.dumps(self.payload(), ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8")


@dataclass(frozen=True)
class Delivery:
    """How one attempt went."""

    ok: bool
    #: the HTTP status or the SMTP reply code, when there was an answer
    status: int | None = None
    #: why it failed, for people (never a secret)
    error: str | None = None
    #: whether another attempt may go differently (a 5xx, a timeout, a lost connection)
    retryable: bool = False
    #: seconds the receiver asked to wait (`Retry-After`)
    retry_after: float | None = None


@dataclass(frozen=True)
class NotifierContext:
    """What a notifier is made with besides its channel's settings."""

    #: the limit of one attempt (connecting, sending, the answer)
    timeout_seconds: float
    user_agent: str  # `Coro/<version>`


class Notifier(Protocol):
    #: where it sends, for people, secrets masked (`GET /notifications`)
    target: str

    async def send(self, notification: Notification) -> Delivery:
        """One attempt; never raises for a failed delivery (the `Delivery` says it)."""
        ...


async def post_json(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_seconds: float,
    scrubber: Scrubber,
) -> Delivery:
    """POST `body` (JSON) to `url`, once, without following redirects. Errors are
    scrubbed of the channel's secrets: httpx names the URL in some of them."""
    try:
        async with httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False) as client:
            response = await client.post(
                url, content=body, headers={"Content-Type": "application/json", **headers}
            )
    except httpx.TimeoutException:
        return Delivery(False, error=f"timed out after {timeout_seconds:g} s", retryable=True)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        said = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return Delivery(False, error=scrubber.scrub(short_text(said)), retryable=True)
    return http_delivery(response, scrubber)


def http_delivery(response: httpx.Response, scrubber: Scrubber) -> Delivery:
    """A receiver's answer as a `Delivery`: 2xx is delivered; 408, 429 and 5xx may go
    through later (with the `Retry-After` they name); anything else will not."""
    status = response.status_code
    if 200 <= status < 300:
        return Delivery(True, status=status)
    # Slack says what is wrong in a word (`no_service`, `invalid_payload`), whatever the
    # content type; an HTML page says nothing useful
    text = response.text.strip()
    excerpt = "" if text.startswith("<") else short_text(text)
    error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    wait = parse_retry_after(response.headers.get("retry-after"), time.time())
    if wait is not None and not wait >= 0:  # NaN, or a date in the past
        wait = None
    return Delivery(
        False,
        status=status,
        error=scrubber.scrub(error),
        retryable=retryable,
        retry_after=wait if retryable else None,
    )
