"""The engine's view of state: persist through a `StateBackend`, announce on the `LogBus`."""

from __future__ import annotations

from typing import Literal

from coro.domain.models import Job, LogEntry, iso_now
from coro.state.backend import JobMutation, JobNotFound, StateBackend
from coro.state.logbus import LogBus


class JobStore:
    def __init__(self, backend: StateBackend, bus: LogBus | None = None) -> None:
        self.backend = backend
        self.bus = bus or LogBus()

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
        self, job_id: str, mutate: JobMutation, *, note: str | None = None
    ) -> tuple[Job, bool]:
        """Atomic read-modify-write; subscribers hear about any status change.

        `note` is logged only if the mutation was written, and before the status change
        is announced, so a stream that ends on the new status has already carried it.
        """
        before: list[str] = []

        def tracked(job: Job) -> bool | None:
            before[:] = [job.status]
            return mutate(job)

        job, written = await self.backend.update_job(job_id, tracked)
        if written and note:
            await self.log(job_id, note)
        if written and before and before[0] != job.status:
            self.bus.publish_status(job_id, job.status)
        return job, written

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

    async def with_transcript(self, job_id: str) -> Job:
        """The job with its conversation filled in (what `GET /jobs/:id` shows)."""
        job = await self.get(job_id)
        job.conversation_history = await self.backend.read_transcript(job_id)
        return job

    async def log(self, job_id: str, text: str) -> LogEntry:
        entries = await self.log_many(job_id, [text])
        return entries[0]

    async def log_many(self, job_id: str, texts: list[str]) -> list[LogEntry]:
        stamp = iso_now()
        entries = await self.backend.append_logs(job_id, [f"{stamp} {t}" for t in texts])
        self.bus.publish_lines(job_id, entries)
        return entries
