"""An in-memory `StateBackend` for tests and benchmarks (nothing survives the process)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from coro.domain.models import ConversationMessage, Job, LogEntry, iso_now
from coro.state.backend import (
    JobExists,
    JobMutation,
    JobNotFound,
    JobQuery,
    StatusTotal,
    StoredJob,
)
from coro.state.logbus import LogBus
from coro.state.proposals import MemoryProposalStore
from coro.state.prs import MemoryPullRequestStore


class MemoryStateBackend:
    def __init__(self, bus: LogBus | None = None) -> None:
        self.bus = bus if bus is not None else LogBus()
        self.prs = MemoryPullRequestStore()
        self.proposals = MemoryProposalStore()
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []  # creation order
        self._logs: dict[str, list[str]] = {}
        self._transcripts: dict[str, list[ConversationMessage]] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create_job(self, job: Job) -> None:
        async with self._lock:
            if job.id in self._jobs:
                raise JobExists(job.id)
            self._jobs[job.id] = _stored(job)
            self._order.append(job.id)

    async def get_job(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return job.model_copy(deep=True) if job else None

    async def read_stored_job(self, job_id: str) -> StoredJob | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        # encoded as the SQL backends store them
        doc = job.model_dump_json(by_alias=True, exclude={"conversation_history"})
        messages = self._transcripts.get(job_id, [])
        return StoredJob(doc, tuple(m.model_dump_json(by_alias=True) for m in messages))

    async def update_job(
        self, job_id: str, mutate: JobMutation, *, log: Sequence[str] = ()
    ) -> tuple[Job, bool]:
        async with self._lock:
            stored = self._jobs.get(job_id)
            if stored is None:
                raise JobNotFound(job_id)
            draft = stored.model_copy(deep=True)
            if mutate(draft) is False:
                return stored.model_copy(deep=True), False
            draft.updated_at = iso_now()
            self._jobs[job_id] = _stored(draft)
            entries = self._append(job_id, log)
        self.bus.publish_lines(job_id, entries)
        if draft.status != stored.status:
            self.bus.publish_status(job_id, draft.status)
        return draft.model_copy(deep=True), True

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        matches = [self._jobs[i] for i in reversed(self._order) if _matches(self._jobs[i], query)]
        page = matches[query.offset : query.offset + query.limit]
        return [job.model_copy(deep=True) for job in page], len(matches)

    async def jobs_with_status(self, statuses: frozenset[str] | set[str]) -> list[Job]:
        return [
            self._jobs[i].model_copy(deep=True)
            for i in self._order
            if self._jobs[i].status in statuses
        ]

    async def status_totals(self) -> dict[str, StatusTotal]:
        totals: dict[str, StatusTotal] = {}
        for job in self._jobs.values():
            seen = totals.get(job.status, StatusTotal(0, 0.0))
            totals[job.status] = StatusTotal(
                seen.jobs + 1, seen.cost_usd + job.token_usage.total_cost_usd
            )
        return totals

    async def append_transcript(self, job_id: str, messages: list[ConversationMessage]) -> None:
        self._transcripts.setdefault(job_id, []).extend(m.model_copy(deep=True) for m in messages)

    async def read_transcript(self, job_id: str) -> list[ConversationMessage]:
        return [m.model_copy(deep=True) for m in self._transcripts.get(job_id, [])]

    async def clear_transcript(self, job_id: str) -> None:
        self._transcripts.pop(job_id, None)

    async def replace_transcript(self, job_id: str, messages: list[ConversationMessage]) -> None:
        self._transcripts[job_id] = [m.model_copy(deep=True) for m in messages]

    async def append_logs(self, job_id: str, lines: list[str]) -> list[LogEntry]:
        entries = self._append(job_id, lines)
        self.bus.publish_lines(job_id, entries)
        return entries

    def _append(self, job_id: str, lines: Sequence[str]) -> list[LogEntry]:
        if not lines:
            return []
        log = self._logs.setdefault(job_id, [])
        start = len(log)
        log.extend(lines)
        return [LogEntry(index=start + n, line=line) for n, line in enumerate(lines)]

    async def read_logs(
        self, job_id: str, after: int = -1, limit: int | None = None
    ) -> list[LogEntry]:
        log = self._logs.get(job_id, [])
        start = max(after + 1, 0)
        stop = len(log) if limit is None else min(len(log), start + limit)
        return [LogEntry(index=i, line=log[i]) for i in range(start, stop)]

    async def count_logs(self, job_id: str) -> int:
        return len(self._logs.get(job_id, []))


def _matches(job: Job, query: JobQuery) -> bool:
    if query.statuses and job.status not in query.statuses:
        return False
    if job.status in query.exclude_statuses:
        return False
    if query.type and job.type != query.type:
        return False
    if query.workflow_path and job.workflow_path != query.workflow_path:
        return False
    if query.campaign_parent_id and job.campaign_parent_id != query.campaign_parent_id:
        return False
    if query.text:
        needle = query.text.lower()
        haystack = " ".join(
            str(v) for v in (job.id, job.params.get("description"), job.params.get("repo")) if v
        ).lower()
        if needle not in haystack:
            return False
    return True


def _stored(job: Job) -> Job:
    """The job as kept: a copy without its transcript (that has its own store)."""
    return job.model_copy(deep=True, update={"conversation_history": []})
