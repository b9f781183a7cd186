"""`/teams/{teamId}/runner-tokens`: mint (admins; the secret is shown once), list
(members; never the secrets), revoke (admins)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from coro.cloud.deps import PathId, ServicesDep, TeamAccessDep, errors
from coro.cloud.models import CreateRunnerTokenBody, MintedRunnerTokenOut, RunnerTokenOut

router = APIRouter(prefix="/teams/{team_id}/runner-tokens", tags=["runner tokens"])


@router.post(
    "",
    status_code=201,
    response_model=MintedRunnerTokenOut,
    responses=errors(400, 401, 403, 404, 409, 413),
)
async def mint(
    body: CreateRunnerTokenBody, access: TeamAccessDep, found: ServicesDep
) -> MintedRunnerTokenOut:
    token, secret = await found.runner_tokens.mint(access, body.name)
    return MintedRunnerTokenOut(
        **RunnerTokenOut.model_validate(token, from_attributes=True).model_dump(), token=secret
    )


@router.get("", response_model=list[RunnerTokenOut], responses=errors(400, 401, 404))
async def list_tokens(access: TeamAccessDep, found: ServicesDep) -> list[RunnerTokenOut]:
    tokens = await found.runner_tokens.of_team(access)
    return [RunnerTokenOut.model_validate(t, from_attributes=True) for t in tokens]


@router.delete("/{token_id}", status_code=204, responses=errors(400, 401, 403, 404))
async def revoke(token_id: PathId, access: TeamAccessDep, found: ServicesDep) -> Response:
    """Revoke at once: later checks refuse it and live runner connections are closed."""
    await found.runner_tokens.revoke(access, token_id)
    return Response(status_code=204)
