"""Request dependencies: the services, the signed-in caller, their standing in a team."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coro.cloud.auth import Auth, Principal
from coro.cloud.broker import Broker
from coro.cloud.commands import Commands
from coro.cloud.db import Database
from coro.cloud.errors import Unauthorized
from coro.cloud.gateway import Gateway
from coro.cloud.github import GitHubLogin
from coro.cloud.mirror import Mirror
from coro.cloud.models import ErrorBody
from coro.cloud.notifications import TeamNotifications
from coro.cloud.proposals import TeamProposals
from coro.cloud.runner_tokens import RunnerTokens
from coro.cloud.settings import CloudSettings
from coro.cloud.team_jobs import TeamJobs
from coro.cloud.teams import TeamAccess, Teams
from coro.cloud.webhook_secrets import WebhookSecrets

#: Ids in paths: ours are UUIDs; anything else is refused before it reaches a query.
ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
PathId = Annotated[str, Path(pattern=ID_PATTERN)]


@dataclass
class Services:
    """What the routes use, built once per app (`coro.cloud.app.create_app`)."""

    settings: CloudSettings
    db: Database
    auth: Auth
    teams: Teams
    runner_tokens: RunnerTokens
    webhook_secrets: WebhookSecrets
    github: GitHubLogin | None
    #: this process among the cloud's instances (`runner_sessions.instance_id`)
    instance_id: str
    broker: Broker
    mirror: Mirror
    commands: Commands
    gateway: Gateway
    team_jobs: TeamJobs
    proposals: TeamProposals
    #: the team notifier: it hears the mirror's moves (`coro.cloud.notifications`)
    notifications: TeamNotifications


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]

_bearer = HTTPBearer(auto_error=False, description="An access token from /auth/login")


async def principal(
    request: Request,
    found: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("Missing authorization header")
    caller = await found.auth.authenticate(credentials.credentials)
    request.state.user_id = caller.user.id
    return caller


PrincipalDep = Annotated[Principal, Depends(principal)]


async def team_access(team_id: PathId, caller: PrincipalDep, found: ServicesDep) -> TeamAccess:
    """The caller's membership of `team_id`, from the database; 404 if not a member."""
    return await found.teams.access(caller.user.id, team_id)


TeamAccessDep = Annotated[TeamAccess, Depends(team_access)]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer."""
    described = {
        400: "Invalid request",
        401: "Not signed in, or the token is invalid or expired",
        403: "Signed in, but not allowed (e.g. not a team admin)",
        404: "Not found (or not visible to the caller)",
        409: "Conflicts with the current state",
        413: "Request body too large",
        429: "Too many attempts; see Retry-After",
        502: "An upstream service (GitHub) failed",
        503: "The database is unavailable",
    }
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}
