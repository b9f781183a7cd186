"""A job's log as Server-Sent Events (SPEC §2.2), over any store of its lines.

The runner's `GET /jobs/:jobId/stream` and the cloud's team stream both answer with
`log_stream`; what differs is only where the lines live (`LogSource`).

Subscribe first, then replay from storage, then forward live lines from the bus (which
carries lines other processes append too); the 0-based line index is the event id, so
replay and live lines join without gaps or duplicates and a client can resume with
Last-Event-ID. A stopped status ends the stream with `event: done`, `data: <status>`.

Replayed lines go out in chunks of up to `CHUNK_BYTES` (one send, one write per chunk
rather than per line: a long log is replayed at a fraction of the cost). Each send
waits while the client's connection does not drain, so a client that stops reading
holds at most a chunk and the server's write buffer; the server aborts its
connection once writing has been blocked for its send timeout
(`coro.api.slow_clients`), which ends the stream as a client disconnect.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Protocol

from fastapi import Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from coro.domain.models import LogEntry, is_stopped
from coro.state.logbus import StatusChange, Subscription, SubscriptionClosed

HEARTBEAT_SECONDS = 15
#: lines read from storage at a time (a stalled client holds one page)
REPLAY_PAGE = 200
#: replayed frames are sent together up to about this many bytes
CHUNK_BYTES = 64 * 1024
#: the line index a client may resume after: -1 (before the first line) or at most 18
#: digits (indexes are stored as 64-bit integers; a pattern cannot say 2^63 - 1 itself),
#: as the OpenAPI documents declare it
LAST_EVENT_ID_PATTERN = r"^(-1|[0-9]{1,18})$"
_LAST_EVENT_ID = re.compile(LAST_EVENT_ID_PATTERN)


def last_event_id_schema(schema: dict[str, Any]) -> None:
    """The parameters' schema (`json_schema_extra`): a string of that pattern, never
    null (left out is how a client says "from the start"). Declared, not enforced by
    FastAPI: `last_event_id` says what is wrong in words."""
    schema.clear()
    schema.update({"type": "string", "pattern": LAST_EVENT_ID_PATTERN})


#: The two ways a client names it, as stream routes take them (runner and cloud).
LastEventIdQuery = Annotated[
    str | None, Query(alias="lastEventId", json_schema_extra=last_event_id_schema)
]
LastEventIdHeader = Annotated[
    str | None, Header(alias="Last-Event-ID", json_schema_extra=last_event_id_schema)
]


logger = logging.getLogger(__name__)

#: what splits a line into several `data:` lines (as sse-starlette splits them)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


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
    """The line index a client resumes after (the header wins over `?lastEventId=`; each
    one given must be a line index)."""
    for raw in (header, query):
        if raw is not None and not _LAST_EVENT_ID.fullmatch(raw):
            raise InvalidLastEventId(
                "Last-Event-ID must be a line index: -1, or 0 to 999999999999999999"
            )
    raw = header if header is not None else query
    return None if raw is None else int(raw)


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
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _frame(entry: LogEntry) -> bytes:
    """`ServerSentEvent(data=entry.line, id=str(entry.index), sep="\n").encode()`,
    written out: this runs for every line of every replay."""
    line = entry.line
    if "\n" in line or "\r" in line:
        data = "".join(f"data: {part}\n" for part in _LINE_BREAK.split(line))
    else:
        data = f"data: {line}\n"
    return f"id: {entry.index}\n{data}\n".encode()


def _done(status: str) -> bytes:
    return ServerSentEvent(data=status, event="done", sep="\n").encode()


class _Cursor:
    """The last line index sent to the client."""

    def __init__(self, sent: int) -> None:
        self.sent = sent


async def _replay(
    source: LogSource, cursor: _Cursor, before: int | None = None
) -> AsyncIterator[bytes]:
    """Stored lines after `cursor.sent` (below `before`, if given) in chunks of frames;
    `cursor` advances as each chunk is handed over."""
    while True:
        batch = await source.read_logs(cursor.sent, REPLAY_PAGE)
        frames: list[bytes] = []
        size = 0
        last = cursor.sent
        for entry in batch:
            if before is not None and entry.index >= before:
                batch = []  # the rest is live
                break
            frame = _frame(entry)
            frames.append(frame)
            size += len(frame)
            last = entry.index
            if size >= CHUNK_BYTES:
                cursor.sent = last
                yield b"".join(frames)
                frames, size = [], 0
        if frames:
            cursor.sent = last
            yield b"".join(frames)
        if len(batch) < REPLAY_PAGE:
            return


async def _events(
    source: LogSource, subscription: Subscription, last_seen: int | None, tail: int | None
) -> AsyncIterator[bytes]:
    try:
        if last_seen is not None:
            cursor = _Cursor(last_seen)
        elif tail is not None:
            cursor = _Cursor(await source.count_logs() - tail - 1)
        else:
            cursor = _Cursor(-1)
        async for chunk in _replay(source, cursor):
            yield chunk
        status = await source.status()
        if status is None:
            return
        if is_stopped(status):
            async for chunk in _replay(source, cursor):
                yield chunk
            yield _done(status)
            return
        # From here on live lines come from the bus, other processes' lines too (the
        # source's catch-up brings this subscriber up from `sent` when it hears of them).
        subscription.replayed(cursor.sent)
        while True:
            item = await subscription.get()
            if isinstance(item, LogEntry):
                if item.index <= cursor.sent:
                    continue
                if item.index > cursor.sent + 1:  # fell between replay and subscribe
                    async for chunk in _replay(source, cursor, before=item.index):
                        yield chunk
                yield _frame(item)
                cursor.sent = item.index
            elif isinstance(item, StatusChange) and is_stopped(item.status):
                async for chunk in _replay(source, cursor):
                    yield chunk
                yield _done(item.status)
                return
    except SubscriptionClosed:
        # it fell too far behind, or the runner is stopping: the client reconnects with
        # Last-Event-ID and catches up from storage
        logger.info(
            "ended a live log stream of job %s at line %d", subscription.job_id, cursor.sent
        )
        return
    finally:
        subscription.close()
