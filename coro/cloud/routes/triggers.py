"""`/teams/{teamId}/triggers`: the team's trigger rules (`coro.cloud.triggers`). Members
read them; admins replace the whole list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from coro.api.errors import error_response
from coro.cloud.deps import TeamAccessDep, errors
from coro.cloud.models import Wire
from coro.cloud.routes.ingress import IngressDep
from coro.cloud.triggers import MAX_RULES
from coro.config.triggers import TriggerRule

router = APIRouter(prefix="/teams/{team_id}/triggers", tags=["trigger rules"])


class TriggerRulesBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    rules: Annotated[list[TriggerRule], Field(max_length=MAX_RULES)]

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, value: list[TriggerRule]) -> list[TriggerRule]:
        ids = [rule.id for rule in value]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique")
        return value


class TriggerRulesOut(Wire):
    """The team's rules, in order: each a `triggers.rules[]` entry of config.json."""

    rules: list[TriggerRule]


@router.get("", response_model=TriggerRulesOut, responses=errors(400, 401, 404))
async def get_triggers(access: TeamAccessDep, hub: IngressDep) -> TriggerRulesOut:
    return TriggerRulesOut(rules=await hub.triggers.rules(access.team_id))


@router.put(
    "",
    response_model=TriggerRulesOut,
    responses=errors(400, 401, 403, 404, 413),
)
async def put_triggers(
    body: TriggerRulesBody, access: TeamAccessDep, hub: IngressDep
) -> TriggerRulesOut | JSONResponse:
    """Replace the team's rules (admins). A rule watches a plugin whose webhooks reach
    the cloud with trigger events (`github-issues`: GitHub's `issues` and
    `issue_comment` deliveries, to its own URL or `github`'s; `jira`); jobs start from
    the deliveries that arrive from then on."""
    access.require_admin("change trigger rules")
    known = hub.trigger_plugins
    issues = [
        {
            "path": f"rules.{index}.plugin",
            "message": f"must be one of {', '.join(sorted(known))} (a plugin whose webhooks "
            "start jobs)",
        }
        for index, rule in enumerate(body.rules)
        if rule.plugin not in known
    ]
    if issues:
        summary = "; ".join(f"{i['path']}: {i['message']}" for i in issues[:5])
        return error_response(400, f"Invalid request: {summary}", issues=issues)
    return TriggerRulesOut(rules=await hub.triggers.replace(access, body.rules))
