"""The engine's view of state: a `StateBackend`, which also announces what it stores on
its `LogBus` (`store.bus`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from coro.domain.models import Job, LogEntry, iso_now
from coro.state.backend import JobMutation, JobNotFound, StateBackend, StoredJob
from coro.state.logbus import LogBus


@dataclass(frozen=True)
class JobChange:
    """An update of a job this process wrote, as `JobStore.observers` see it."""

    before_status: str
    before_pr_count: int
    job: Job  # after the update (shared: read it, never change it)


JobObserver = Callable[[JobChange], None]


class JobStore:
    def __init__(self, backend: StateBackend) -> None:
        self.backend = backend
        #: called after every written update (not for another process's writes, which
        #: that process observes): the notifier watches status moves and new pull
        #: requests here. An observer must not block.
        self.observers: list[JobObserver] = []

    @property
    def bus(self) -> LogBus:
        """The backend's bus: live lines and status changes of jobs (SSE reads it)."""
        return self.backend.bus

    async def create(self, job: Job) -> None:
        await self.backend.create_job(job)

    async def find(self, job_id: str) -> Job | None:
        return await self.backend.get_job(job_id)

    async def get(self, job_id: str) -> Job:
        job = await self.backend.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def update(
        self,
        job_id: str,
        mutate: JobMutation,
        *,
        note: str | None = None,
        log: Sequence[str] = (),
    ) -> tuple[Job, bool]:
        """Atomic read-modify-write; subscribers hear about any status change.

        `note` (stamped now) and `log` (lines already stamped) are logged only if the
        mutation was written, in the same transaction and announced before the status
        change, so a stream that ends on the new status has already carried them.
        """
        lines = [*log, f"{iso_now()} {note}"] if note else list(log)
        if not self.observers:
            return await self.backend.update_job(job_id, mutate, log=lines)
        before: tuple[str, int] | None = None

        def observed(draft: Job) -> bool | None:
            nonlocal before  # the draft the write is made from (the last try's)
            before = (draft.status, len(draft.pr_mappings))
            return mutate(draft)

        job, changed = await self.backend.update_job(job_id, observed, log=lines)
        if changed and before is not None:
            change = JobChange(before[0], before[1], job)
            for observer in tuple(self.observers):
                observer(change)
        return job, changed

    async def mark_pr(
        self, job_id: str, pr_id: int, repo: str | None, state: Literal["merged", "declined"]
    ) -> bool:
        """Stamp a PR of the job merged or declined (idempotent); whether it changed."""

        def stamp(job: Job) -> bool:
            mapping = job.find_pr(pr_id, repo)
            if mapping is None or not mapping.is_open:
                return False
            if state == "merged":
                mapping.merged_at = iso_now()
            else:
                mapping.declined_at = iso_now()
            return True

        _, changed = await self.update(job_id, stamp)
        if changed:
            await self.log(job_id, f"[scm] PR #{pr_id} {state}")
        return changed

    async def stored(self, job_id: str) -> StoredJob:
        """The job's document and transcript as stored, read together (what
        `GET /jobs/:id` shows)."""
        stored = await self.backend.read_stored_job(job_id)
        if stored is None:
            raise JobNotFound(job_id)
        return stored

    async def log(self, job_id: str, text: str) -> LogEntry:
        entries = await self.log_many(job_id, [text])
        return entries[0]

    async def log_many(self, job_id: str, texts: list[str]) -> list[LogEntry]:
        stamp = iso_now()
        return await self.backend.append_logs(job_id, [f"{stamp} {t}" for t in texts])
