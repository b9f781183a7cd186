"""Each team's trigger rules (`/teams/:teamId/triggers`), and the team jobs the trigger
events of its webhooks start.

A rule is a `triggers.rules[]` entry of config.json (`coro.config.triggers.TriggerRule`,
the same schema; `TeamTriggerRule` only says in its JSON Schema what the config's
validators check, and names the plugins whose webhooks the cloud reads trigger events
from: `github-issues`, `jira`), kept per team in `team_triggers` in the order given.
Members read them; admins replace the whole list (`PUT`).

`TeamTriggers.start(team_id, events)`: each trigger event of a verified delivery
(`coro.cloud.ingress`) is matched against the team's rules with the runner's own rules
(`coro.engine.triggers.matches`: the event, the repository or project, who did it), and
each match becomes the job `job_for` describes — named after the rule and the event
(`trigger_job_id`), with its origin thread and the rule as it is now (`origin.rule`,
which the runner that takes the job answers by) — created as a team job
(`TeamJobs.start_triggered`): stored, then dispatched as any team job, queued while no
runner of the team is connected. The id is the job's key in `team_jobs`: a second
delivery of the event, under any delivery id, finds the job and starts nothing, and so
does an event a runner's poller already started a job for. The runner that takes the
job reads what a webhook does not carry (a pull request's branches) and replies in
the thread with the link to the run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, StrictBool, StringConstraints, ValidationError
from sqlalchemy import select

from coro.api.schemas import CreateJobBody
from coro.cloud.db import Database
from coro.cloud.schema import team_triggers
from coro.cloud.team_jobs import TeamJobs
from coro.cloud.teams import TeamAccess
from coro.config.section import SPACE
from coro.config.triggers import _REQUIRED, TriggerRule
from coro.engine.service import NewJob
from coro.engine.triggers import TriggerEvent, job_for, matches

logger = logging.getLogger(__name__)

#: as many as config.json's `triggers.rules` takes
MAX_RULES = 200
#: the plugins a team rule may watch: those whose manifests name a trigger parser
#: (`coro.cloud.ingress.builtin_webhook_plugins`)
TriggerPlugin = Literal["github-issues", "jira"]
TRIGGER_PLUGINS: tuple[str, ...] = get_args(TriggerPlugin)
#: the SCM plugin of a provider's pull requests (their threads), unless a rule's
#: `params.gitProvider` names another
FORGES = {"github": "github"}


def _event_needs(schema: dict[str, Any]) -> None:
    """Each event's own field is required and a string (the config's validator)."""
    variants = []
    for on, needed in _REQUIRED.items():
        options = schema["properties"][needed].get("anyOf", [])
        text = next(option for option in options if option.get("type") == "string")
        variants.append({"properties": {"on": {"const": on}, needed: text}, "required": [needed]})
    schema["oneOf"] = variants


class TeamTriggerRule(TriggerRule):
    """A team's trigger rule: a `triggers.rules[]` entry of config.json."""

    model_config = ConfigDict(json_schema_extra=_event_needs)

    plugin: TriggerPlugin
    permitted_users: (
        list[Annotated[str, StringConstraints(max_length=200, pattern=rf"[^{SPACE}]")]] | None
    ) = Field(default=None, max_length=1000)
    reply: StrictBool = True


def _stored(rule: TriggerRule) -> dict[str, Any]:
    return rule.model_dump(mode="json", by_alias=True, exclude_none=True)


def team_job(rule: TriggerRule, event: TriggerEvent) -> tuple[CreateJobBody, NewJob]:
    """The team job `event` starts by `rule`: the body of its create, and the job with
    its id and origin (the rule in it). `ValueError` when the job cannot be made."""
    pr_plugin = None
    if event.pull_request:
        named = rule.params.get("gitProvider")
        pr_plugin = named if isinstance(named, str) and named else FORGES.get(event.provider)
    new = job_for(rule, event, pr_plugin=pr_plugin)
    assert new.origin is not None  # job_for always gives one
    new.origin = new.origin.model_copy(update={"rule": _stored(rule)})
    given = {f.name: getattr(new, f.name) for f in fields(NewJob)}
    given = {k: v for k, v in given.items() if k not in ("job_id", "origin") and v is not None}
    try:
        body = CreateJobBody.model_validate(given)
    except ValidationError as exc:
        raise ValueError(str(exc.errors(include_input=False)[0]["msg"])) from None
    return body, new


class TeamTriggers:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def rules(self, team_id: str) -> list[TeamTriggerRule]:
        """The team's rules, in order (a stored rule this version cannot read is left
        out, and logged)."""
        t = team_triggers.c
        async with self.db.begin() as connection:
            rows = (
                await connection.execute(
                    select(t.id, t.rule).where(t.team_id == team_id).order_by(t.position)
                )
            ).all()
        rules = []
        for row in rows:
            try:
                rules.append(TeamTriggerRule.model_validate(json.loads(row.rule)))
            except (ValueError, ValidationError):
                logger.warning("team %s: trigger rule %s cannot be read; skipped", team_id, row.id)
        return rules

    async def replace(
        self, access: TeamAccess, rules: list[TeamTriggerRule]
    ) -> list[TeamTriggerRule]:
        """The team's rules from now on (admins), in the order given."""
        access.require_admin("change trigger rules")
        async with self.db.begin() as connection:
            await connection.execute(
                team_triggers.delete().where(team_triggers.c.team_id == access.team_id)
            )
            if rules:
                await connection.execute(
                    team_triggers.insert().values(
                        [
                            {
                                "team_id": access.team_id,
                                "id": rule.id,
                                "position": position,
                                "rule": json.dumps(_stored(rule)),
                                "updated_by": access.user_id,
                            }
                            for position, rule in enumerate(rules)
                        ]
                    )
                )
        return rules

    async def start(
        self, team_jobs: TeamJobs, team_id: str, events: list[TriggerEvent]
    ) -> list[str]:
        """The team jobs `events` start by the team's rules (see the module docstring):
        the ids of those created now."""
        rules = await self.rules(team_id) if events else []
        started: list[str] = []
        for event in events:
            for rule in rules:
                if not matches(rule, event):
                    continue
                try:
                    body, new = team_job(rule, event)
                except ValueError as exc:
                    logger.warning(
                        "team %s: rule %s cannot start a job for %s: %s",
                        team_id,
                        rule.id,
                        event.key,
                        exc,
                    )
                    continue
                assert new.job_id is not None and new.origin is not None
                if await team_jobs.start_triggered(team_id, body, new.job_id, new.origin):
                    logger.info(
                        "team %s: rule %s started job %s (%s on %s)",
                        team_id,
                        rule.id,
                        new.job_id,
                        event.kind,
                        event.key,
                    )
                    started.append(new.job_id)
        return started
