"""`CloudStateBackend`: a hybrid runner's state — its local backend, replicated.

Every call goes to the local backend (SQLite by default), which stays the truth for the
jobs this runner runs; every committed change is noted for the `Replicator`, which sends
it to the team cloud over the `CloudLink`. Jobs keep running while the cloud is away:
the local store is the buffer, and a reconnect sends what the cloud lacks. Conversation
transcripts stay local; pull requests of the `local` SCM too. Proposals are kept locally
and also sent to the cloud (`proposal:create`), where the team reviews them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from coro.domain.cloud_protocol import LOG_BATCH_INTERVAL_SECONDS
from coro.domain.models import ConversationMessage, Job, LogEntry
from coro.state.backend import JobMutation, JobQuery, StateBackend, StatusTotal, StoredJob
from coro.state.cloud.link import CloudLink
from coro.state.cloud.replicator import DEFAULT_WORKERS, Replicator, SyncCursors
from coro.state.logbus import LogBus
from coro.state.proposals import Layer, Proposal, ProposalStore, Proposed
from coro.state.prs import PullRequestStore

SYNC_FILE = "sync.db"


class ReplicatedProposals:
    """The local proposal store; what it stores is noted for the replicator."""

    def __init__(self, inner: ProposalStore, replicator: Replicator) -> None:
        self.inner = inner
        self.replicator = replicator

    async def list(self, status: str | None = None, tenant_id: str | None = None) -> list[Proposal]:
        return await self.inner.list(status, tenant_id)

    async def get(self, proposal_id: str) -> Proposal | None:
        return await self.inner.get(proposal_id)

    async def find(self, job_id: str, layer: Layer) -> Proposal | None:
        return await self.inner.find(job_id, layer)

    async def propose(self, proposal: Proposal) -> Proposed:
        proposed = await self.inner.propose(proposal)
        self.replicator.proposal_changed(proposed.proposal.id)
        return proposed

    async def update(self, proposal_id: str, **changes: Any) -> Proposal:
        updated = await self.inner.update(proposal_id, **changes)
        self.replicator.proposal_changed(updated.id)
        return updated

    def deciding(self, proposal_id: str) -> AbstractAsyncContextManager[Proposal]:
        return self.inner.deciding(proposal_id)  # what a decision changes goes via update

    async def adopt(self, proposal: Proposal) -> bool:
        added = await self.inner.adopt(proposal)
        if added:
            self.replicator.proposal_changed(proposal.id)
        return added


class CloudStateBackend:
    """A `StateBackend` over `local`, replicating to the cloud through `link`.

    The link is started and stopped by its owner (the runner); `open` and `close` start
    and stop the replication, whose cursors live in `<cloud_dir>/sync.db`."""

    def __init__(
        self,
        local: StateBackend,
        link: CloudLink,
        cloud_dir: Path,
        *,
        batch_interval: float = LOG_BATCH_INTERVAL_SECONDS,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.local = local
        self.link = link
        self.replicator = Replicator(
            local,
            link,
            SyncCursors(cloud_dir / SYNC_FILE),
            batch_interval=batch_interval,
            workers=workers,
        )
        self._proposals = ReplicatedProposals(local.proposals, self.replicator)

    @property
    def bus(self) -> LogBus:
        return self.local.bus

    @bus.setter
    def bus(self, bus: LogBus) -> None:
        self.local.bus = bus

    @property
    def prs(self) -> PullRequestStore:
        return self.local.prs

    @property
    def proposals(self) -> ProposalStore:
        return self._proposals

    async def open(self) -> None:
        await self.local.open()
        await self.replicator.start()

    async def close(self) -> None:
        await self.replicator.stop()
        await self.local.close()

    async def flush(self) -> None:
        """Wait until every change committed so far is acknowledged by the cloud (bound
        it with a timeout: while the cloud is away this waits for it)."""
        await self.replicator.flush()

    # --- jobs ---------------------------------------------------------------------------

    async def create_job(self, job: Job) -> None:
        await self.local.create_job(job)
        self.replicator.job_changed(job.id)

    async def get_job(self, job_id: str) -> Job | None:
        return await self.local.get_job(job_id)

    async def read_stored_job(self, job_id: str) -> StoredJob | None:
        return await self.local.read_stored_job(job_id)

    async def update_job(
        self, job_id: str, mutate: JobMutation, *, log: Sequence[str] = ()
    ) -> tuple[Job, bool]:
        job, written = await self.local.update_job(job_id, mutate, log=log)
        if written:
            self.replicator.job_changed(job_id)
        return job, written

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        return await self.local.list_jobs(query)

    async def jobs_with_status(self, statuses: frozenset[str] | set[str]) -> list[Job]:
        return await self.local.jobs_with_status(statuses)

    async def status_totals(self) -> dict[str, StatusTotal]:
        return await self.local.status_totals()

    # --- transcripts (local only) -------------------------------------------------------

    async def append_transcript(self, job_id: str, messages: list[ConversationMessage]) -> None:
        await self.local.append_transcript(job_id, messages)

    async def read_transcript(self, job_id: str) -> list[ConversationMessage]:
        return await self.local.read_transcript(job_id)

    async def clear_transcript(self, job_id: str) -> None:
        await self.local.clear_transcript(job_id)

    async def replace_transcript(self, job_id: str, messages: list[ConversationMessage]) -> None:
        await self.local.replace_transcript(job_id, messages)

    # --- logs ---------------------------------------------------------------------------

    async def append_logs(self, job_id: str, lines: list[str]) -> list[LogEntry]:
        entries = await self.local.append_logs(job_id, lines)
        if entries:
            self.replicator.job_changed(job_id)
        return entries

    async def read_logs(
        self, job_id: str, after: int = -1, limit: int | None = None
    ) -> list[LogEntry]:
        return await self.local.read_logs(job_id, after, limit)

    async def count_logs(self, job_id: str) -> int:
        return await self.local.count_logs(job_id)
