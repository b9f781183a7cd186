"""Deciding on self-improvement proposals (SPEC §4.8). `GET /proposals` (the listing)
lives with the other read-only intelligence endpoints.

- `GET /proposals/:id` → the proposal, files included.
- `POST /proposals/:id/approve` body `{reviewedBy?, note?}` → the proposal, `approved`:
  a `tenant` proposal's files are written into the tenant layer (all or none, `appliedAt`
  set); a `repo` proposal is pushed as a branch with its files under `.coro/` to the
  proposing job's repository, a pull request is opened (`branch`, `prUrl`, `prId`) and an
  internal `self-update` job tracks it (`trackingJobId`).
- `POST /proposals/:id/reject` body `{reason?, reviewedBy?}` → the proposal, `rejected`
  (`reviewNote` = reason); nothing is applied.

Unknown id → 404; already decided (or being decided) → 409; a stored proposal that no
longer validates → 422; git or the SCM provider failing → 502 (the proposal stays
pending and can be approved again).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from pydantic import Field

from coro.api.deps import RunnerDep
from coro.api.errors import errors
from coro.api.schemas import Body as BodyModel
from coro.engine.insights import ProposalService
from coro.intelligence.proposals import ProposalError
from coro.state.proposals import ProposalConflict, ProposalNotFound

router = APIRouter(tags=["proposals"])


class ApproveBody(BodyModel):
    reviewed_by: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, max_length=10_000)


class RejectBody(BodyModel):
    reason: str | None = Field(default=None, max_length=10_000)
    reviewed_by: str | None = Field(default=None, max_length=200)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ProposalNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except ProposalConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except ProposalError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


@router.get("/proposals/{proposal_id}", responses=errors(404))
async def get_proposal(runner: RunnerDep, proposal_id: str) -> dict[str, Any]:
    with _errors():
        proposal = await ProposalService(runner.env, runner.jobs).get(proposal_id)
    return proposal.to_json()


@router.post("/proposals/{proposal_id}/approve", responses=errors(404, 409, 422, 502))
async def approve_proposal(
    runner: RunnerDep,
    proposal_id: str,
    body: Annotated[ApproveBody | None, Body()] = None,
) -> dict[str, Any]:
    body = body or ApproveBody()
    with _errors():
        proposal = await ProposalService(runner.env, runner.jobs).approve(
            proposal_id, reviewer=body.reviewed_by, note=body.note
        )
    return proposal.to_json()


@router.post("/proposals/{proposal_id}/reject", responses=errors(404, 409, 422))
async def reject_proposal(
    runner: RunnerDep,
    proposal_id: str,
    body: Annotated[RejectBody | None, Body()] = None,
) -> dict[str, Any]:
    body = body or RejectBody()
    with _errors():
        proposal = await ProposalService(runner.env, runner.jobs).reject(
            proposal_id, reason=body.reason, reviewer=body.reviewed_by
        )
    return proposal.to_json()
