"""`GET /jobs/:jobId/stream`: the job log as Server-Sent Events (SPEC §2.2).

Subscribe first, then replay from storage, then forward live lines from the backend's
bus (which carries lines other processes append too); the 0-based line index is the
event id, so replay and live lines join without gaps or duplicates and a client can
resume with Last-Event-ID.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from coro.api.deps import RunnerDep
from coro.domain.models import LogEntry, is_stopped
from coro.engine.service import InvalidRequest
from coro.state.logbus import StatusChange, SubscriptionClosed

router = APIRouter(tags=["jobs"])

HEARTBEAT_SECONDS = 15
REPLAY_PAGE = 1000
SEND_TIMEOUT_SECONDS = 30


def _frame(entry: LogEntry) -> ServerSentEvent:
    return ServerSentEvent(data=entry.line, id=str(entry.index), sep="\n")


#: the largest line index a client may name (a 64-bit signed integer, as stored)
MAX_LINE_INDEX = 2**63 - 1


@router.get("/jobs/{job_id}/stream", response_class=EventSourceResponse)
async def stream_job_log(
    runner: RunnerDep,
    job_id: str,
    tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    last_event_id_query: Annotated[str | None, Query(alias="lastEventId")] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    await runner.jobs.get(job_id)  # 404 before any stream starts
    raw_last = last_event_id_header or last_event_id_query
    last_seen: int | None = None
    if raw_last is not None:
        try:
            last_seen = int(raw_last)
        except ValueError as exc:
            raise InvalidRequest("Last-Event-ID must be a line index") from exc
        if not -1 <= last_seen <= MAX_LINE_INDEX:  # the database's integers end there
            raise InvalidRequest(f"Last-Event-ID must be a line index from -1 to {MAX_LINE_INDEX}")
    store = runner.store
    subscription = store.bus.subscribe(job_id)

    async def replay(after: int) -> AsyncIterator[LogEntry]:
        while True:
            batch = await store.backend.read_logs(job_id, after=after, limit=REPLAY_PAGE)
            for entry in batch:
                yield entry
                after = entry.index
            if len(batch) < REPLAY_PAGE:
                return

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            if last_seen is not None:
                sent = last_seen
            elif tail is not None:
                sent = await store.backend.count_logs(job_id) - tail - 1
            else:
                sent = -1
            async for entry in replay(sent):
                yield _frame(entry)
                sent = entry.index
            job = await store.get(job_id)
            if is_stopped(job.status):
                async for entry in replay(sent):
                    yield _frame(entry)
                yield ServerSentEvent(data=job.status, event="done", sep="\n")
                return
            # From here on live lines come from the bus, other processes' lines too
            # (the backend catches this subscriber up from `sent` when it hears of them).
            subscription.replayed(sent)
            while True:
                item = await subscription.get()
                if isinstance(item, LogEntry):
                    if item.index <= sent:
                        continue
                    if item.index > sent + 1:  # fell between replay and subscribe
                        async for entry in replay(sent):
                            if entry.index >= item.index:
                                break
                            yield _frame(entry)
                            sent = entry.index
                    yield _frame(item)
                    sent = item.index
                elif isinstance(item, StatusChange) and is_stopped(item.status):
                    async for entry in replay(sent):
                        yield _frame(entry)
                    yield ServerSentEvent(data=item.status, event="done", sep="\n")
                    return
        except SubscriptionClosed:
            return  # the client reconnects with Last-Event-ID and catches up from storage
        finally:
            subscription.close()

    return EventSourceResponse(
        events(),
        ping=HEARTBEAT_SECONDS,
        ping_message_factory=lambda: ServerSentEvent(comment="heartbeat", sep="\n"),
        send_timeout=SEND_TIMEOUT_SECONDS,
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
