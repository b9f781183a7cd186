"""`triggers` in config.json: rules that start a job from something that happened in a
tracker or on a pull request (an issue labelled or assigned, a comment mentioning Coro's
handle, a Jira transition).

A local runner polls for these events every `pollIntervalSeconds`; a hybrid runner's team
cloud receives them as webhooks. Each rule names the workflow and parameters of the jobs
it starts; one event starts at most one job.

A rule watches what happens from the moment it is first seen on: a new rule (or a new
repository of a rule) starts no job for what happened before.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from coro.config.section import SPACE, ConfigSection

TriggerEvent = Literal["issue.labeled", "issue.assigned", "comment.mentioned", "issue.transitioned"]

#: the rule field each event needs, and what it means
_REQUIRED: dict[str, str] = {
    "issue.labeled": "label",
    "issue.assigned": "assignee",
    "comment.mentioned": "handle",
    "issue.transitioned": "toStatus",
}


#: a GitHub repository (`owner/name`) or a Jira project key: the characters both allow
RepositoryKey = Annotated[
    str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$")
]
HANDLE = rf"^@[^{SPACE}]+$"


class TriggerRule(ConfigSection):
    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    on: TriggerEvent
    #: the installed tracker plugin it watches (`github-issues`, `jira`: one whose events
    #: can be polled); a pull request's thread is its repository's SCM plugin's
    plugin: str = Field(min_length=1, max_length=100)
    #: what to watch: GitHub repositories (`owner/name`) or Jira project keys
    repos: list[RepositoryKey] = Field(min_length=1, max_length=100)
    label: str | None = Field(default=None, min_length=1, max_length=200)
    assignee: str | None = Field(default=None, min_length=1, max_length=200)
    #: e.g. `@coro`; the comment's text becomes the job's description
    handle: str | None = Field(default=None, min_length=2, max_length=100, pattern=HANDLE)
    to_status: str | None = Field(default=None, min_length=1, max_length=200)
    #: who may start a job (and answer its questions) by a comment; None: on GitHub the
    #: repository's owner, members and collaborators, on Jira anyone who can comment
    permitted_users: list[str] | None = Field(default=None, max_length=1000)
    workflow_path: str = Field(default="workflows/job/workflow.md", min_length=1, max_length=500)
    params: dict[str, Any] = Field(default_factory=dict)
    #: reply on the issue or PR with a link to the run, and post the job's questions there
    reply: bool = True

    @field_validator("permitted_users")
    @classmethod
    def _users(cls, value: list[str] | None) -> list[str] | None:
        for user in value or []:
            if not user.strip() or len(user) > 200:
                raise ValueError(f"{user!r} is not a user name")
        return value

    @model_validator(mode="after")
    def _has_what_its_event_needs(self) -> TriggerRule:
        needed = _REQUIRED[self.on]
        if getattr(self, "to_status" if needed == "toStatus" else needed) is None:
            raise ValueError(f"a rule on {self.on!r} needs {needed!r}")
        return self


class TriggersConfig(ConfigSection):
    poll_interval_seconds: float = Field(default=60.0, ge=1, le=86_400)
    rules: list[TriggerRule] = Field(default_factory=list, max_length=200)

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, value: list[TriggerRule]) -> list[TriggerRule]:
        ids = [rule.id for rule in value]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique")
        return value
