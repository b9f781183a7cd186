"""`/teams/{teamId}/proposals`: the team's self-improvement proposals (SPEC §3, §4.8):
list (`?status=`), get, approve (sends `proposal:apply` to a runner of the team; the
proposal becomes `applied` once a runner acknowledges it), reject. Only a pending
proposal can be decided (409 otherwise)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from coro.api.schemas import Body as RequestBody
from coro.cloud.deps import ServicesDep, TeamAccessDep, errors
from coro.cloud.models import Wire
from coro.cloud.proposals import TeamProposal, TeamProposals

router = APIRouter(prefix="/teams/{team_id}/proposals", tags=["proposals"])

ProposalId = Annotated[
    str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
]


def team_proposals(found: ServicesDep) -> TeamProposals:
    return found.proposals


ProposalsDep = Annotated[TeamProposals, Depends(team_proposals)]


class NoteBody(RequestBody):
    note: str | None = Field(default=None, max_length=10_000)


class ProposalOut(TeamProposal):
    model_config = ConfigDict(extra="allow")


class ApplyOut(Wire):
    state: Literal["done", "failed", "queued", "cancelled"] = Field(
        description="done: a runner applied the files; failed: it refused (error); "
        "queued: no runner answered yet (the proposal becomes applied when one does)"
    )
    command_id: int | None
    error: str | None = None


class ApprovedOut(ProposalOut):
    apply: ApplyOut


class ProposalListOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    team_id: str = Field(alias="teamId")
    count: int
    proposals: list[ProposalOut]


@router.get("", response_model=ProposalListOut, responses=errors(400, 401, 404, 503))
async def list_proposals(
    access: TeamAccessDep,
    proposals: ProposalsDep,
    status: Literal["pending", "approved", "rejected", "applied"] | None = None,
) -> dict[str, Any]:
    found = await proposals.list(access.team_id, status)
    return {"teamId": access.team_id, "count": len(found), "proposals": found}


@router.get("/{proposal_id}", response_model=ProposalOut, responses=errors(400, 401, 404, 503))
async def get_proposal(
    proposal_id: ProposalId, access: TeamAccessDep, proposals: ProposalsDep
) -> dict[str, Any]:
    return await proposals.get(access.team_id, proposal_id)


@router.post(
    "/{proposal_id}/approve",
    response_model=ApprovedOut,
    responses=errors(400, 401, 404, 409, 413, 503),
)
async def approve_proposal(
    proposal_id: ProposalId,
    access: TeamAccessDep,
    proposals: ProposalsDep,
    body: Annotated[NoteBody | None, Body()] = None,
) -> dict[str, Any]:
    """Approve a pending proposal (reviewedBy: the caller) and send its files to a runner
    of the team; `apply` says what became of that."""
    decision = await proposals.approve(
        access.team_id, proposal_id, access.user_id, (body or NoteBody()).note
    )
    return {
        **decision.proposal.to_wire(),
        "apply": {
            "state": decision.apply_state,
            "commandId": decision.command_id,
            "error": decision.error,
        },
    }


@router.post(
    "/{proposal_id}/reject",
    response_model=ProposalOut,
    responses=errors(400, 401, 404, 409, 413, 503),
)
async def reject_proposal(
    proposal_id: ProposalId,
    access: TeamAccessDep,
    proposals: ProposalsDep,
    body: Annotated[NoteBody | None, Body()] = None,
) -> dict[str, Any]:
    return await proposals.reject(
        access.team_id, proposal_id, access.user_id, (body or NoteBody()).note
    )
