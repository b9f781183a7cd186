"""Notifications (issue #14): the configured channels and how their deliveries went
(`GET /notifications`), a test message to one channel (`POST /notifications/test`),
and every notification from now on as Server-Sent Events (`GET
/notifications/stream`, the dashboard's desktop notifications). The channels
themselves are configured in config.json's `notifications` (`GET`/`PUT /config`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Literal

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sse_starlette import EventSourceResponse, ServerSentEvent

from coro.api.deps import RunnerDep
from coro.api.errors import error_response, errors
from coro.api.openapi import SSE_OK
from coro.api.sse import HEARTBEAT_SECONDS
from coro.engine.notifications import ChannelReport, NotificationFeed, Outcome

router = APIRouter(tags=["notifications"])

#: how long a stream may take to end once the server stops
SHUTDOWN_GRACE_SECONDS = 1.0

EventName = Literal[
    "job.awaiting", "job.escalated", "job.failed", "job.completed", "pr.opened", "test"
]


def _omitted_when_none(value: object) -> bool:
    return value is None


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class NotificationDelivery(_Model):
    """How one delivery to the channel ended (its retries included)."""

    at: str = Field(description="When it ended (ISO 8601, UTC)")
    event: EventName
    ok: bool
    status: int | None = Field(
        default=None,
        description="The receiver's HTTP status or SMTP reply code (absent without one)",
        exclude_if=_omitted_when_none,
    )
    error: str | None = Field(
        default=None,
        description="Why it failed (absent when delivered)",
        exclude_if=_omitted_when_none,
    )
    attempts: int = Field(ge=1)
    delivery_id: str = Field(description="The notification's `deliveryId` (X-Coro-Delivery)")

    @classmethod
    def of(cls, outcome: Outcome) -> NotificationDelivery:
        return cls(
            at=outcome.at,
            event=outcome.event,
            ok=outcome.ok,
            status=outcome.status,
            error=outcome.error,
            attempts=outcome.attempts,
            delivery_id=outcome.delivery_id,
        )


class NotificationChannel(_Model):
    id: str
    kind: Literal["webhook", "slack", "email"]
    events: list[EventName] = Field(description="The events it is sent")
    target: str = Field(
        description="Where it sends, secrets masked: a webhook's host and path, a Slack "
        "URL masked, an e-mail channel's recipients"
    )
    last_delivery: NotificationDelivery | None
    recent_failures: list[NotificationDelivery] = Field(description="Newest first, at most 10")

    @classmethod
    def of(cls, report: ChannelReport) -> NotificationChannel:
        channel = report.channel
        return cls(
            id=channel.id,
            kind=channel.kind,
            events=list(channel.events),
            target=channel.notifier.target,
            last_delivery=NotificationDelivery.of(report.last) if report.last else None,
            recent_failures=[NotificationDelivery.of(o) for o in report.recent_failures],
        )


class NotificationChannels(_Model):
    channels: list[NotificationChannel]


class NotificationTestBody(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    channel: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="A channel's id")


class NotificationTestResult(_Model):
    channel: str
    ok: bool
    status: int | None = Field(default=None, exclude_if=_omitted_when_none)
    error: str | None = Field(default=None, exclude_if=_omitted_when_none)


@router.get("/notifications", response_model=NotificationChannels)
async def list_channels(runner: RunnerDep) -> NotificationChannels:
    return NotificationChannels(
        channels=[NotificationChannel.of(r) for r in runner.notifications.channels()]
    )


@router.post("/notifications/test", response_model=NotificationTestResult, responses=errors(404))
async def test_channel(
    runner: RunnerDep, body: NotificationTestBody
) -> NotificationTestResult | JSONResponse:
    """Send one test notification (event `test`, a made-up job) to the channel, without
    retries; its outcome is also the channel's `lastDelivery`."""
    outcome = await runner.notifications.test(body.channel)
    if outcome is None:
        return error_response(404, f"No notification channel {body.channel!r}")
    return NotificationTestResult(
        channel=body.channel, ok=outcome.ok, status=outcome.status, error=outcome.error
    )


@router.get(
    "/notifications/stream",
    response_model=None,
    response_class=EventSourceResponse,
    responses=SSE_OK,
)
async def notification_stream(runner: RunnerDep) -> EventSourceResponse:
    """`event: notification` with the payload as `data:` for every notification from
    now on (nothing is replayed), and a `: heartbeat` comment every 15 s."""
    feed = runner.notifications.subscribe()  # now: nothing falls before the first frame
    shutdown = anyio.Event()  # set by sse-starlette when the server stops
    return EventSourceResponse(
        _frames(feed, shutdown),
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        ping=HEARTBEAT_SECONDS,
        ping_message_factory=lambda: ServerSentEvent(comment="heartbeat", sep="\n"),
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _frames(feed: NotificationFeed, shutdown: anyio.Event) -> AsyncIterator[ServerSentEvent]:
    async def close_on_shutdown() -> None:
        await shutdown.wait()
        feed.close()  # the stream then ends as a finished response, not a cancelled one

    watcher = asyncio.create_task(close_on_shutdown())
    try:
        async for notification in feed:
            data = json.dumps(notification.payload(), ensure_ascii=False)
            yield ServerSentEvent(data=data, event="notification", sep="\n")
    finally:
        watcher.cancel()
        feed.close()
