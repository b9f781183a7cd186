"""A job's log as Server-Sent Events (SPEC §2.2), over any store of its lines.

The runner's `GET /jobs/:jobId/stream` and the cloud's team stream both answer with
`log_stream`; what differs is only where the lines live (`LogSource`).

Subscribe first, then replay from storage, then forward live lines from the bus (which
carries lines other processes append too); the 0-based line index is the event id, so
replay and live lines join without gaps or duplicates and a client can resume with
Last-Event-ID. A stopped status ends the stream with `event: done`, `data: <status>`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from sse_starlette import EventSourceResponse, ServerSentEvent

from coro.domain.models import LogEntry, is_stopped
from coro.state.logbus import StatusChange, Subscription, SubscriptionClosed

HEARTBEAT_SECONDS = 15
REPLAY_PAGE = 1000
SEND_TIMEOUT_SECONDS = 30
#: the largest line index a client may name (a 64-bit signed integer, as stored)
MAX_LINE_INDEX = 2**63 - 1


class InvalidLastEventId(ValueError):
    """The client's Last-Event-ID is not a line index (HTTP 400)."""


class LogSource(Protocol):
    """One job's stored log and its live bus."""

    def subscribe(self) -> Subscription:
        """A subscription to the job's new lines and status changes."""
        ...

    async def read_logs(self, after: int, limit: int) -> list[LogEntry]:
        """Stored lines with index > `after`, ascending, at most `limit`."""
        ...

    async def count_logs(self) -> int: ...

    async def status(self) -> str | None:
        """The job's stored status; None once the job is gone (the stream then ends)."""
        ...


def last_event_id(header: str | None, query: str | None) -> int | None:
    """The line index a client resumes after (the header wins over `?lastEventId=`)."""
    raw = header or query
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidLastEventId("Last-Event-ID must be a line index") from exc
    if not -1 <= value <= MAX_LINE_INDEX:  # the database's integers end there
        raise InvalidLastEventId(f"Last-Event-ID must be a line index from -1 to {MAX_LINE_INDEX}")
    return value


def log_stream(
    source: LogSource,
    *,
    last_seen: int | None = None,
    tail: int | None = None,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> EventSourceResponse:
    """The SSE response: subscribes now (before any replay), so no line falls between
    the replay and the live ones."""
    return EventSourceResponse(
        _events(source, source.subscribe(), last_seen, tail),
        ping=heartbeat_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="heartbeat", sep="\n"),
        send_timeout=SEND_TIMEOUT_SECONDS,
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _frame(entry: LogEntry) -> ServerSentEvent:
    return ServerSentEvent(data=entry.line, id=str(entry.index), sep="\n")


def _done(status: str) -> ServerSentEvent:
    return ServerSentEvent(data=status, event="done", sep="\n")


async def _replay(source: LogSource, after: int) -> AsyncIterator[LogEntry]:
    while True:
        batch = await source.read_logs(after, REPLAY_PAGE)
        for entry in batch:
            yield entry
            after = entry.index
        if len(batch) < REPLAY_PAGE:
            return


async def _events(
    source: LogSource, subscription: Subscription, last_seen: int | None, tail: int | None
) -> AsyncIterator[ServerSentEvent]:
    try:
        if last_seen is not None:
            sent = last_seen
        elif tail is not None:
            sent = await source.count_logs() - tail - 1
        else:
            sent = -1
        async for entry in _replay(source, sent):
            yield _frame(entry)
            sent = entry.index
        status = await source.status()
        if status is None:
            return
        if is_stopped(status):
            async for entry in _replay(source, sent):
                yield _frame(entry)
            yield _done(status)
            return
        # From here on live lines come from the bus, other processes' lines too (the
        # source's catch-up brings this subscriber up from `sent` when it hears of them).
        subscription.replayed(sent)
        while True:
            item = await subscription.get()
            if isinstance(item, LogEntry):
                if item.index <= sent:
                    continue
                if item.index > sent + 1:  # fell between replay and subscribe
                    async for entry in _replay(source, sent):
                        if entry.index >= item.index:
                            break
                        yield _frame(entry)
                        sent = entry.index
                yield _frame(item)
                sent = item.index
            elif isinstance(item, StatusChange) and is_stopped(item.status):
                async for entry in _replay(source, sent):
                    yield _frame(entry)
                yield _done(item.status)
                return
    except SubscriptionClosed:
        return  # the client reconnects with Last-Event-ID and catches up from storage
    finally:
        subscription.close()
