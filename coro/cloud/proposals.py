"""A team's self-improvement proposals (`team_proposals`), SPEC §3 and §4.8.

Runners store the proposals their agents make (`proposal:create`, idempotent by id;
proposing again while pending replaces the content), list and update them
(`proposal:list`, `proposal:update`), always under their token's team. Team members
review them: approving a pending one (only a pending one: a decided proposal is
immutable, 409) sends `proposal:apply{proposalId, files}` to a runner of the team
through the durable command queue; the proposal becomes `applied` (with `appliedAt`)
once a runner acknowledges the apply, whether that answer comes while the approval
waits or later (`_settle` picks answered applies up on the next read).

Every file path is checked relative to the layer (no absolute path, no `..`) before it
is stored, so nothing that could escape the layer is ever sent to a runner.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from sqlalchemy import and_, cast, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.cloud.commands import Commands
from coro.cloud.db import Database
from coro.cloud.errors import BadRequest, Conflict, NotFound
from coro.cloud.schema import runner_commands, team_proposals
from coro.cloud.team_jobs import wait_seconds
from coro.domain.cloud_protocol import ProposalApply
from coro.domain.models import iso_now
from coro.domain.paths import check_relative_path

Status = Literal["pending", "approved", "rejected", "applied"]
STATUSES: tuple[str, ...] = ("pending", "approved", "rejected", "applied")

#: bounds on what a runner may store (a proposal is a handful of intelligence files)
MAX_FILES = 200
MAX_FILE_BYTES = 1024 * 1024

#: what `proposal:update` may change (the id, team, job and creation are its identity)
UPDATABLE = frozenset(
    {
        "phase",
        "type",
        "title",
        "rationale",
        "description",
        "status",
        "files",
        "targetLayer",
        "repo",
        "pluginId",
        "branch",
        "prUrl",
        "prId",
        "trackingJobId",
        "reviewedBy",
        "reviewNote",
        "decidedAt",
        "appliedAt",
    }
)


def _relative(path: str) -> str:
    return check_relative_path(path)


class ProposalFileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Annotated[str, Field(max_length=1000), AfterValidator(_relative)]
    content: Annotated[str, Field(max_length=MAX_FILE_BYTES)]


Text = Annotated[str, Field(max_length=100_000)]
Short = Annotated[str, Field(max_length=500)]


class TeamProposal(BaseModel):
    """A proposal as the cloud keeps it (the runner's shape, plus `applied`)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")]
    tenant_id: str = ""
    job_id: Annotated[str, Field(max_length=200)] | None = None
    phase: Short | None = None
    type: Annotated[str, Field(min_length=1, max_length=100)]
    title: Annotated[str, Field(max_length=1000)] = ""
    rationale: Text = ""
    description: Text = ""
    status: Status = "pending"
    files: Annotated[list[ProposalFileIn], Field(max_length=MAX_FILES)] = []
    target_layer: Literal["tenant", "repo"] | None = None
    repo: Short | None = None
    plugin_id: Short | None = None
    branch: Short | None = None
    pr_url: Annotated[str, Field(max_length=2000)] | None = None
    pr_id: int | None = None
    tracking_job_id: Short | None = None
    reviewed_by: Short | None = None
    review_note: Text | None = None
    decided_at: Short | None = None
    applied_at: Short | None = None
    #: the `proposal:apply` command sent on approval, and why it failed if it did
    apply_message_id: Short | None = None
    apply_error: Text | None = None
    created_at: Short = ""
    updated_at: Short = ""

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class Decision:
    """An approval and what became of its apply: `done` (applied), `failed` (the
    runner refused it: `error`), `queued` (no runner answered yet)."""

    proposal: TeamProposal
    apply_state: Literal["done", "failed", "queued", "cancelled"]
    command_id: int | None
    error: str | None


def _issues(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:5]
    ]
    return "; ".join(parts)


def _validate(doc: dict[str, Any]) -> TeamProposal:
    try:
        return TeamProposal.model_validate(doc)
    except ValidationError as exc:
        raise BadRequest(f"Invalid proposal: {_issues(exc)}") from None


def _values(team_id: str, proposal: TeamProposal) -> dict[str, Any]:
    return {
        "team_id": team_id,
        "id": proposal.id,
        "job_id": proposal.job_id,
        "status": proposal.status,
        "doc": json.dumps(proposal.to_wire()),
        "reviewed_by": proposal.reviewed_by,
        "review_note": proposal.review_note,
    }


class TeamProposals:
    def __init__(self, db: Database, commands: Commands) -> None:
        self.db = db
        self.commands = commands

    # --- the runner's RPCs (through the gateway, team = the runner token's) ------------

    async def create(self, team_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """`proposal:create`: store the runner's proposal; the same id again replaces the
        content of a pending one and leaves a decided one as it is. The stored
        proposal."""
        now = iso_now()
        proposal = _validate({**doc, "createdAt": doc.get("createdAt") or now, "updatedAt": now})
        proposal.tenant_id = team_id
        proposal.apply_message_id = proposal.apply_error = None
        values = _values(team_id, proposal)
        statement = insert(team_proposals).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[team_proposals.c.team_id, team_proposals.c.id],
            set_={
                "job_id": statement.excluded.job_id,
                "status": statement.excluded.status,
                "doc": statement.excluded.doc,
                "reviewed_by": statement.excluded.reviewed_by,
                "review_note": statement.excluded.review_note,
                "updated_at": statement.excluded.updated_at,
            },
            where=team_proposals.c.status == "pending",
        )
        async with self.db.begin() as connection:
            await connection.execute(statement)
            stored = await self._load(connection, team_id, proposal.id)
        assert stored is not None  # inserted or kept within this transaction
        return stored.to_wire()

    async def list(self, team_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """`proposal:list` and `GET /teams/:t/proposals`: newest first."""
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        await self._settle(team_id)
        query = select(team_proposals.c.doc).where(team_proposals.c.team_id == team_id)
        if status is not None:
            query = query.where(team_proposals.c.status == status)
        query = query.order_by(team_proposals.c.created_at.desc(), team_proposals.c.id.desc())
        async with self.db.begin() as connection:
            docs = (await connection.scalars(query)).all()
        return [TeamProposal.model_validate_json(doc).to_wire() for doc in docs]

    async def update(
        self, team_id: str, proposal_id: str, updates: dict[str, Any]
    ) -> dict[str, Any]:
        """`proposal:update`: set fields of the team's proposal (camelCase names from
        `UPDATABLE`); the stored proposal. 404 unknown id, 400 other fields."""
        unknown = sorted(set(updates) - UPDATABLE)
        if unknown:
            raise BadRequest(f"Proposal fields that cannot be updated: {', '.join(unknown)}")
        async with self.db.begin() as connection:
            current = await self._load(connection, team_id, proposal_id, lock=True)
            if current is None:
                raise NotFound(f"Proposal not found: {proposal_id}")
            changed = _validate({**current.to_wire(), **updates, "updatedAt": iso_now()})
            await self._write(connection, team_id, changed)
        return changed.to_wire()

    # --- team members (REST) --------------------------------------------------------------

    async def get(self, team_id: str, proposal_id: str) -> dict[str, Any]:
        await self._settle(team_id)
        async with self.db.begin() as connection:
            found = await self._load(connection, team_id, proposal_id)
        if found is None:
            raise NotFound(f"Proposal not found: {proposal_id}")
        return found.to_wire()

    async def approve(
        self, team_id: str, proposal_id: str, user_id: str, note: str | None
    ) -> Decision:
        """Approve a pending proposal and send its files to a runner of the team."""
        message_id = f"apply-{uuid.uuid4().hex}"
        now = iso_now()
        proposal = await self._decide(
            team_id,
            proposal_id,
            status="approved",
            reviewedBy=user_id,
            reviewNote=note,
            decidedAt=now,
            updatedAt=now,
            applyMessageId=message_id,
        )
        frame = ProposalApply(
            message_id=message_id,
            proposal_id=proposal.id,
            files=[{"path": f.path, "content": f.content} for f in proposal.files],
        )
        outcome = await self.commands.submit(
            team_id, frame, job_id=None, wait_seconds=await wait_seconds(self.db, team_id)
        )
        error = None
        if outcome.state == "done":
            proposal = await self._applied(team_id, proposal.id) or proposal
        elif outcome.state == "failed":
            response = outcome.response
            error = (response.error if response is not None else None) or "The apply failed"
            proposal = await self._apply_failed(team_id, proposal.id, error) or proposal
        return Decision(proposal, outcome.state, outcome.command_id, error)

    async def reject(
        self, team_id: str, proposal_id: str, user_id: str, note: str | None
    ) -> dict[str, Any]:
        now = iso_now()
        proposal = await self._decide(
            team_id,
            proposal_id,
            status="rejected",
            reviewedBy=user_id,
            reviewNote=note,
            decidedAt=now,
            updatedAt=now,
        )
        return proposal.to_wire()

    # --- storage ---------------------------------------------------------------------

    async def _load(
        self, connection: AsyncConnection, team_id: str, proposal_id: str, *, lock: bool = False
    ) -> TeamProposal | None:
        query = select(team_proposals.c.doc).where(
            team_proposals.c.team_id == team_id, team_proposals.c.id == proposal_id
        )
        if lock:
            query = query.with_for_update()
        doc = await connection.scalar(query)
        return None if doc is None else TeamProposal.model_validate_json(doc)

    async def _write(
        self,
        connection: AsyncConnection,
        team_id: str,
        proposal: TeamProposal,
        *,
        applied: bool = False,
    ) -> None:
        values = _values(team_id, proposal)
        changes = {k: v for k, v in values.items() if k not in ("team_id", "id")}
        if applied:
            changes["applied_at"] = func.now()
        await connection.execute(
            team_proposals.update()
            .where(team_proposals.c.team_id == team_id, team_proposals.c.id == proposal.id)
            .values(**changes, updated_at=func.now())
        )

    async def _decide(self, team_id: str, proposal_id: str, **changes: Any) -> TeamProposal:
        async with self.db.begin() as connection:
            current = await self._load(connection, team_id, proposal_id, lock=True)
            if current is None:
                raise NotFound(f"Proposal not found: {proposal_id}")
            if current.status != "pending":
                raise Conflict(f"Proposal {proposal_id} is already {current.status}")
            decided = _validate({**current.to_wire(), **changes})
            await self._write(connection, team_id, decided)
        return decided

    async def _applied(self, team_id: str, proposal_id: str) -> TeamProposal | None:
        """Mark an approved proposal applied (a runner acknowledged its apply)."""
        async with self.db.begin() as connection:
            current = await self._load(connection, team_id, proposal_id, lock=True)
            if current is None or current.status != "approved":
                return current
            now = iso_now()
            done = current.model_copy(
                update={"status": "applied", "applied_at": now, "updated_at": now}
            )
            await self._write(connection, team_id, done, applied=True)
        return done

    async def _apply_failed(
        self, team_id: str, proposal_id: str, error: str
    ) -> TeamProposal | None:
        async with self.db.begin() as connection:
            current = await self._load(connection, team_id, proposal_id, lock=True)
            if current is None or current.status != "approved":
                return current
            failed = current.model_copy(update={"apply_error": error, "updated_at": iso_now()})
            await self._write(connection, team_id, failed)
        return failed

    async def _settle(self, team_id: str) -> None:
        """Approved proposals whose apply a runner has acknowledged since become
        `applied` (the answer may come long after the approval stopped waiting)."""
        apply_id = cast(team_proposals.c.doc, JSONB)["applyMessageId"].astext
        answered = (
            select(team_proposals.c.id)
            .join(
                runner_commands,
                and_(
                    runner_commands.c.team_id == team_proposals.c.team_id,
                    runner_commands.c.message_id == apply_id,
                ),
            )
            .where(
                team_proposals.c.team_id == team_id,
                team_proposals.c.status == "approved",
                runner_commands.c.state == "done",
            )
        )
        async with self.db.begin() as connection:
            ids = (await connection.scalars(answered)).all()
        for proposal_id in ids:
            await self._applied(team_id, proposal_id)
