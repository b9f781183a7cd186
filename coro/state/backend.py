"""The `StateBackend` interface: where jobs and their logs are kept.

Implementations: `SqliteStateBackend` (the local runner), `MemoryStateBackend` (tests
and benchmarks); Postgres and cloud-over-WebSocket backends follow the same contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from coro.domain.models import ConversationMessage, Job, LogEntry
from coro.state.logbus import LogBus
from coro.state.proposals import ProposalStore
from coro.state.prs import PullRequestStore

#: A job mutation: change the job in place; return False to leave it unwritten.
#: Backends may call it more than once (optimistic retries), so it must not have
#: side effects beyond the job it is given.
JobMutation = Callable[[Job], bool | None]


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job not found: {job_id}")
        self.job_id = job_id


class JobExists(ValueError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job already exists: {job_id}")
        self.job_id = job_id


@dataclass
class JobQuery:
    """Filters of `GET /jobs`; every field optional, results newest first."""

    statuses: list[str] = field(default_factory=list)
    exclude_statuses: list[str] = field(default_factory=list)
    type: str | None = None
    workflow_path: str | None = None
    campaign_parent_id: str | None = None
    text: str | None = None  # substring over id / description / repo
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class StatusTotal:
    jobs: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A job as its backend keeps it, read in one go: its document and each message of
    its transcript (oldest first), as the JSON text stored. Equal texts are the same
    job, which lets `GET /jobs/:id` reuse the answer it encoded from them."""

    doc: str
    transcript: tuple[str, ...]

    def job(self) -> Job:
        """The job with its conversation filled in."""
        job = Job.model_validate_json(self.doc)
        job.conversation_history = [
            ConversationMessage.model_validate_json(message) for message in self.transcript
        ]
        return job


class StateBackend(Protocol):
    #: New log lines and status changes of jobs, for live subscribers (SSE): what
    #: `append_logs` and `update_job` store is published here once committed, and a
    #: backend shared by several processes publishes theirs too (see `coro.state.logbus`).
    #: Replace it, if at all, before `open`.
    bus: LogBus

    # The `local` SCM's pull requests, and the self-improvement proposals: there from
    # construction (plugins are given them before `open`), usable once open.
    @property
    def prs(self) -> PullRequestStore: ...

    @property
    def proposals(self) -> ProposalStore: ...

    async def open(self) -> None:
        """Create/migrate storage. Called once before any other method."""

    async def close(self) -> None: ...

    async def create_job(self, job: Job) -> None:
        """Insert a new job; raises `JobExists` on a duplicate id."""

    async def get_job(self, job_id: str) -> Job | None: ...

    async def read_stored_job(self, job_id: str) -> StoredJob | None:
        """The job's document and transcript as stored, read together (from one
        snapshot where the backend has them); None for an unknown job."""

    async def update_job(
        self, job_id: str, mutate: JobMutation, *, log: Sequence[str] = ()
    ) -> tuple[Job, bool]:
        """Atomically apply `mutate` to the stored job and stamp `updatedAt`.

        Returns the job as stored afterwards and whether it was written. Concurrent
        updates of one job never lose each other's fields. Raises `JobNotFound`.
        If written, the already-timestamped `log` lines are appended in the same
        transaction, then published on `bus`, then the new status if it changed: a
        stream that ends on that status has carried the lines (even in another
        process, which reads both at once).
        """

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        """A page of jobs matching `query` (newest first) and the total match count."""

    async def jobs_with_status(self, statuses: frozenset[str] | set[str]) -> list[Job]:
        """Every job whose status is in `statuses`, oldest first (used by recovery)."""

    async def status_totals(self) -> dict[str, StatusTotal]:
        """For each status in use: how many jobs have it and what they cost in all."""

    async def append_transcript(self, job_id: str, messages: list[ConversationMessage]) -> None:
        """Add messages at the end of the job's conversation (kept apart from the job:
        `get_job` returns it with an empty `conversationHistory`)."""

    async def read_transcript(self, job_id: str) -> list[ConversationMessage]: ...

    async def clear_transcript(self, job_id: str) -> None:
        """Forget the job's conversation (its next turn starts a fresh session)."""

    async def replace_transcript(self, job_id: str, messages: list[ConversationMessage]) -> None:
        """Store `messages` as the job's whole conversation, in one write (a condensed
        conversation replaces the long one: never neither, never both)."""

    async def append_logs(self, job_id: str, lines: list[str]) -> list[LogEntry]:
        """Durably append already-timestamped lines; returns them with their indexes,
        after publishing them on `bus`."""

    async def read_logs(
        self, job_id: str, after: int = -1, limit: int | None = None
    ) -> list[LogEntry]:
        """Lines with index > `after`, ascending, at most `limit`."""

    async def count_logs(self, job_id: str) -> int: ...
