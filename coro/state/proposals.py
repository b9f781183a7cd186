"""Self-improvement proposals, kept by the state backend (`backend.proposals`).

The rules of what a proposal may contain (paths, kinds, sizes) and how an approved one
is applied live in `coro.intelligence.proposals`; a `ProposalStore` keeps the records
and the rules of their life:

- a job has at most one proposal per layer: proposing again while it is `pending`
  replaces its content (same id); once decided (`approved`/`rejected`) it is immutable;
- a decision holds the proposal (`deciding`): a second decider, in this process or
  another, gets `ProposalConflict` until the first one is done.

Implementations: `SqlProposalStore` (`coro.state.proposals_sql`, SQLite and PostgreSQL)
and `MemoryProposalStore` (below).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

from pydantic import Field

from coro.domain.models import CamelModel, iso_now

ProposalStatus = Literal["pending", "approved", "rejected"]
PROPOSAL_STATUSES: tuple[str, ...] = ("pending", "approved", "rejected")
Layer = Literal["tenant", "repo"]
LAYERS: tuple[str, ...] = ("tenant", "repo")

#: What proposing again replaces in a pending proposal (the rest is its identity).
CONTENT_FIELDS = ("phase", "type", "title", "rationale", "description", "files")

#: A decision not finished after this long is taken to have died with its process (a
#: repository approval clones, pushes and opens a pull request: give it time).
DECISION_EXPIRES_AFTER = timedelta(minutes=30)


class ProposalNotFound(LookupError):
    def __init__(self, proposal_id: str) -> None:
        super().__init__(f"Proposal not found: {proposal_id}")
        self.proposal_id = proposal_id


class ProposalConflict(RuntimeError):
    """The proposal's state does not allow this (already decided, being decided)."""


class ProposalFile(CamelModel):
    path: str
    content: str


class Proposal(CamelModel):
    id: str
    tenant_id: str
    job_id: str
    phase: str | None = None
    type: str
    title: str
    rationale: str = ""
    description: str = ""
    status: ProposalStatus = "pending"
    files: list[ProposalFile] = Field(default_factory=list)
    target_layer: Layer | None = None
    #: repo proposals: where the pull request went
    repo: str | None = None
    plugin_id: str | None = None
    branch: str | None = None
    pr_url: str | None = None
    pr_id: int | None = None
    tracking_job_id: str | None = None
    reviewed_by: str | None = None
    review_note: str | None = None
    decided_at: str | None = None
    #: tenant proposals: when the files were written into the layer
    applied_at: str | None = None
    created_at: str
    updated_at: str

    def summary(self) -> dict[str, Any]:
        data = self.to_json(
            include={
                "id",
                "job_id",
                "type",
                "title",
                "status",
                "target_layer",
                "pr_url",
                "branch",
                "created_at",
                "updated_at",
            }
        )
        data["fileCount"] = len(self.files)
        return data

    @property
    def layer(self) -> Layer:
        return self.target_layer or "tenant"


@dataclass(frozen=True)
class Proposed:
    proposal: Proposal
    #: an existing pending proposal was replaced (not a new one)
    updated: bool


class ProposalStore(Protocol):
    async def list(self, status: str | None = None, tenant_id: str | None = None) -> list[Proposal]:
        """Proposals newest first, optionally of one status and/or tenant."""

    async def get(self, proposal_id: str) -> Proposal | None: ...

    async def find(self, job_id: str, layer: Layer) -> Proposal | None:
        """The job's proposal for the layer, whatever its status."""

    async def propose(self, proposal: Proposal) -> Proposed:
        """Store `proposal` as its job's proposal for its layer: added if the job has
        none; if it has a pending one, that one's `CONTENT_FIELDS` become this one's
        (its id and creation stay). `ProposalConflict` if it is decided or being
        decided."""

    async def update(self, proposal_id: str, **changes: Any) -> Proposal:
        """Set fields of the stored proposal (by field name) and stamp `updatedAt`.
        `ProposalNotFound`."""

    def deciding(self, proposal_id: str) -> AbstractAsyncContextManager[Proposal]:
        """Hold the pending proposal while it is decided (`async with`): it must exist
        (`ProposalNotFound`) and be pending and not held (`ProposalConflict`); the hold
        ends with the block."""

    async def adopt(self, proposal: Proposal) -> bool:
        """Keep a proposal made elsewhere (an older runner's file) as it is, unless one
        with its id is kept already; whether it was added. If its job already has a
        proposal for the layer, both are kept and `find` keeps returning the first."""


def refused(proposal: Proposal, *, proposing: bool = False) -> ProposalConflict:
    """Why `proposal`, decided or held by a decision, cannot be replaced or decided."""
    if proposal.status == "pending":
        return ProposalConflict(f"Proposal {proposal.id} is being decided right now")
    if proposing:
        return ProposalConflict(
            f"This job's {proposal.layer} proposal {proposal.id} is already "
            f"{proposal.status}; a job makes one proposal per layer"
        )
    return ProposalConflict(f"Proposal {proposal.id} is already {proposal.status}")


def replaced(existing: Proposal, new: Proposal) -> Proposal:
    """`existing` with the content of `new` (what proposing again changes)."""
    changes = {name: getattr(new, name) for name in CONTENT_FIELDS}
    return existing.model_copy(update={**changes, "updated_at": iso_now()})


def changed(proposal: Proposal, changes: dict[str, Any]) -> Proposal:
    """`proposal` with `changes` (field names) and a new `updatedAt`, validated."""
    return Proposal.model_validate({**proposal.model_dump(), **changes, "updated_at": iso_now()})


# --- in memory --------------------------------------------------------------------------


class MemoryProposalStore:
    """A `ProposalStore` in this process's memory (tests and benchmarks)."""

    def __init__(self) -> None:
        self._proposals: dict[str, Proposal] = {}
        #: (job id, layer) → the proposal `find` returns
        self._slots: dict[tuple[str, str], str] = {}
        self._held: set[str] = set()
        self._lock = asyncio.Lock()

    async def list(self, status: str | None = None, tenant_id: str | None = None) -> list[Proposal]:
        found = [
            p
            for p in self._proposals.values()
            if status in (None, p.status) and tenant_id in (None, p.tenant_id)
        ]
        found.sort(key=lambda p: (p.created_at, p.id), reverse=True)
        return [p.model_copy(deep=True) for p in found]

    async def get(self, proposal_id: str) -> Proposal | None:
        found = self._proposals.get(proposal_id)
        return found.model_copy(deep=True) if found is not None else None

    async def find(self, job_id: str, layer: Layer) -> Proposal | None:
        proposal_id = self._slots.get((job_id, layer))
        return await self.get(proposal_id) if proposal_id is not None else None

    async def propose(self, proposal: Proposal) -> Proposed:
        async with self._lock:
            slot = (proposal.job_id, proposal.layer)
            existing_id = self._slots.get(slot)
            if existing_id is None:
                self._slots[slot] = proposal.id
                self._proposals[proposal.id] = proposal.model_copy(deep=True)
                return Proposed(proposal.model_copy(deep=True), updated=False)
            existing = self._proposals[existing_id]
            held = existing_id in self._held
            if existing.status != "pending" or held:
                raise refused(existing, proposing=True)
            updated = replaced(existing, proposal)
            self._proposals[existing_id] = updated
            return Proposed(updated.model_copy(deep=True), updated=True)

    async def update(self, proposal_id: str, **changes: Any) -> Proposal:
        async with self._lock:
            stored = self._proposals.get(proposal_id)
            if stored is None:
                raise ProposalNotFound(proposal_id)
            updated = changed(stored, changes)
            self._proposals[proposal_id] = updated
            return updated.model_copy(deep=True)

    @contextlib.asynccontextmanager
    async def deciding(self, proposal_id: str) -> AsyncIterator[Proposal]:
        async with self._lock:
            stored = self._proposals.get(proposal_id)
            if stored is None:
                raise ProposalNotFound(proposal_id)
            held = proposal_id in self._held
            if stored.status != "pending" or held:
                raise refused(stored)
            self._held.add(proposal_id)
        try:
            yield stored.model_copy(deep=True)
        finally:
            self._held.discard(proposal_id)

    async def adopt(self, proposal: Proposal) -> bool:
        async with self._lock:
            if proposal.id in self._proposals:
                return False
            self._proposals[proposal.id] = proposal.model_copy(deep=True)
            self._slots.setdefault((proposal.job_id, proposal.layer), proposal.id)
            return True
