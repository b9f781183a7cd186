"""`GET /jobs/:jobId/stream`: the job log as Server-Sent Events (SPEC §2.2), from the
runner's state backend; the stream itself is `coro.api.sse`'s."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sse_starlette import EventSourceResponse

from coro.api import sse
from coro.api.deps import RunnerDep
from coro.domain.models import LogEntry
from coro.engine.service import InvalidRequest
from coro.state.backend import JobNotFound
from coro.state.logbus import Subscription
from coro.state.store import JobStore

router = APIRouter(tags=["jobs"])

HEARTBEAT_SECONDS = sse.HEARTBEAT_SECONDS


class _StoreLog:
    """One job's log in the runner's store."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self._store = store
        self._job_id = job_id

    def subscribe(self) -> Subscription:
        return self._store.bus.subscribe(self._job_id)

    async def read_logs(self, after: int, limit: int) -> list[LogEntry]:
        return await self._store.backend.read_logs(self._job_id, after=after, limit=limit)

    async def count_logs(self) -> int:
        return await self._store.backend.count_logs(self._job_id)

    async def status(self) -> str | None:
        try:
            return (await self._store.get(self._job_id)).status
        except JobNotFound:
            return None


@router.get("/jobs/{job_id}/stream", response_class=EventSourceResponse)
async def stream_job_log(
    runner: RunnerDep,
    job_id: str,
    tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    last_event_id_query: sse.LastEventIdQuery = None,
    last_event_id_header: sse.LastEventIdHeader = None,
) -> EventSourceResponse:
    await runner.jobs.get(job_id)  # 404 before any stream starts
    try:
        last_seen = sse.last_event_id(last_event_id_header, last_event_id_query)
    except sse.InvalidLastEventId as exc:
        raise InvalidRequest(str(exc)) from exc
    return sse.log_stream(
        _StoreLog(runner.store, job_id),
        last_seen=last_seen,
        tail=tail,
        heartbeat_seconds=HEARTBEAT_SECONDS,
    )
