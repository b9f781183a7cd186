"""`/teams/{teamId}/triggers`: the team's trigger rules (`coro.cloud.triggers`). Members
read them; admins replace the whole list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from coro.cloud.deps import TeamAccessDep, errors
from coro.cloud.errors import Conflict
from coro.cloud.models import Wire
from coro.cloud.routes.ingress import IngressDep
from coro.cloud.triggers import MAX_RULES, TeamTriggerRule

router = APIRouter(prefix="/teams/{team_id}/triggers", tags=["trigger rules"])


class TriggerRulesBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    rules: Annotated[list[TeamTriggerRule], Field(max_length=MAX_RULES)]


class TriggerRulesOut(Wire):
    """The team's rules, in order: each a `triggers.rules[]` entry of config.json."""

    rules: list[TeamTriggerRule]


@router.get("", response_model=TriggerRulesOut, responses=errors(400, 401, 404))
async def get_triggers(access: TeamAccessDep, hub: IngressDep) -> TriggerRulesOut:
    return TriggerRulesOut(rules=await hub.triggers.rules(access.team_id))


@router.put(
    "",
    response_model=TriggerRulesOut,
    responses={
        **errors(400, 401, 403, 404, 413),
        409: {**errors(409)[409], "description": "Two rules share an id"},
    },
)
async def put_triggers(
    body: TriggerRulesBody, access: TeamAccessDep, hub: IngressDep
) -> TriggerRulesOut:
    """Replace the team's rules (admins). A rule watches `github-issues` (GitHub's
    `issues`, `issue_comment` and `pull_request_review_comment` deliveries, to its own
    webhook URL or the `github` plugin's) or `jira` (`jira:issue_updated`,
    `comment_created`); jobs start from the deliveries that arrive from then on."""
    access.require_admin("change trigger rules")
    seen: set[str] = set()
    for rule in body.rules:
        if rule.id in seen:
            raise Conflict(f"Two rules have the id {rule.id!r}; rule ids must be unique")
        seen.add(rule.id)
    return TriggerRulesOut(rules=await hub.triggers.replace(access, body.rules))
