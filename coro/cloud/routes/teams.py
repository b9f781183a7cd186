"""`/teams`: create, list, get and update teams; members and their roles.

Every route under `/teams/{teamId}` first reads the caller's membership from the
database: a team the caller is not a member of is 404, like one that does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from coro.cloud.deps import PathId, PrincipalDep, ServicesDep, TeamAccessDep, errors
from coro.cloud.models import (
    AddMemberBody,
    CreateTeamBody,
    MemberOut,
    RoleBody,
    TeamDetailOut,
    TeamOut,
    UpdateTeamBody,
)
from coro.cloud.teams import Member, Team

router = APIRouter(prefix="/teams", tags=["teams"])


def _team(team: Team) -> TeamOut:
    return TeamOut.model_validate(team, from_attributes=True)


def _member(member: Member) -> MemberOut:
    return MemberOut.model_validate(member, from_attributes=True)


@router.post("", status_code=201, response_model=TeamOut, responses=errors(400, 401, 409, 413))
async def create_team(body: CreateTeamBody, caller: PrincipalDep, found: ServicesDep) -> TeamOut:
    """A new team; the caller is its first admin."""
    return _team(await found.teams.create(caller.user.id, body.name, body.slug))


@router.get("", response_model=list[TeamOut], responses=errors(401))
async def list_teams(caller: PrincipalDep, found: ServicesDep) -> list[TeamOut]:
    return [_team(t) for t in await found.teams.list_for(caller.user.id)]


@router.get("/{team_id}", response_model=TeamDetailOut, responses=errors(400, 401, 404))
async def get_team(access: TeamAccessDep, found: ServicesDep) -> TeamDetailOut:
    team, members = await found.teams.get(access)
    return TeamDetailOut(**_team(team).model_dump(), members=[_member(m) for m in members])


@router.patch("/{team_id}", response_model=TeamOut, responses=errors(400, 401, 403, 404, 409, 413))
async def update_team(body: UpdateTeamBody, access: TeamAccessDep, found: ServicesDep) -> TeamOut:
    """Rename the team or change its slug (admins); fields left out stay as they are."""
    return _team(await found.teams.update(access, name=body.name, slug=body.slug))


@router.post(
    "/{team_id}/members",
    status_code=201,
    response_model=MemberOut,
    responses=errors(400, 401, 403, 404, 409, 413),
)
async def add_member(body: AddMemberBody, access: TeamAccessDep, found: ServicesDep) -> MemberOut:
    """Add an existing user by email (admins)."""
    return _member(await found.teams.add_member(access, body.email, body.role))


@router.patch(
    "/{team_id}/members/{user_id}",
    response_model=MemberOut,
    responses=errors(400, 401, 403, 404, 409, 413),
)
async def set_role(
    user_id: PathId, body: RoleBody, access: TeamAccessDep, found: ServicesDep
) -> MemberOut:
    """Change a member's role (admins); the last admin cannot be demoted (409)."""
    return _member(await found.teams.set_role(access, user_id, body.role))


@router.delete(
    "/{team_id}/members/{user_id}", status_code=204, responses=errors(400, 401, 403, 404, 409)
)
async def remove_member(user_id: PathId, access: TeamAccessDep, found: ServicesDep) -> Response:
    """Remove a member (admins), or leave the team (anyone, for themselves); the last
    admin cannot leave (409)."""
    await found.teams.remove_member(access, user_id)
    return Response(status_code=204)
