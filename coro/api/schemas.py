"""Request bodies of the runner API: camelCase on the wire, unknown fields refused."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from coro.domain.models import Budget, BudgetTokens, BudgetUsd, TriggerSource
from coro.engine.service import NewJob


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CreateJobBody(Body):
    workflow_path: str = Field(min_length=1, max_length=500)
    type: Literal["job", "self-update"] = "job"
    params: dict[str, Any] = Field(default_factory=dict)
    repo: str | None = Field(default=None, max_length=500)
    service_name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=100_000)
    reviewers: list[str] | None = Field(default=None, max_length=50)
    git_provider: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    jira_ticket_id: str | None = Field(default=None, max_length=100)
    interactive: bool | None = None
    trigger_source: TriggerSource | None = None
    budget: Budget | None = None

    def new_job(self, job_id: str | None = None) -> NewJob:
        """The job this body asks for (under `job_id` when the cloud chose it)."""
        return NewJob(**dict(self), job_id=job_id)


class ReasonBody(Body):
    reason: str | None = Field(default=None, max_length=10_000)


class MessageBody(Body):
    message: str = Field(min_length=1, max_length=100_000)


class ResumeBody(Body):
    from_phase: str | None = Field(default=None, min_length=1)
    clear_session: bool = False


class InteractiveBody(Body):
    interactive: bool


class PhaseOverrideBody(Body):
    phase: str = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)
    provider: str | None = Field(default=None, min_length=1)
    clear: bool = False


class RerunBody(Body):
    model: str | None = Field(default=None, min_length=1)
    provider: str | None = Field(default=None, min_length=1)


class BudgetBody(Body):
    max_cost_usd: BudgetUsd | None = None
    max_tokens: BudgetTokens | None = None


class IntakeMessage(Body):
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1, max_length=100_000)


class WorkflowChoice(Body):
    id: str = Field(max_length=200)
    name: str = Field(max_length=200)
    workflow_path: str = Field(max_length=500)
    description: str = Field(default="", max_length=2_000)


class IntakeContext(Body):
    recent_repos: list[str] = Field(default_factory=list, max_length=50)
    recent_reviewers: list[str] = Field(default_factory=list, max_length=50)
    available_workflows: list[WorkflowChoice] = Field(default_factory=list, max_length=50)
    user_locale: str | None = Field(default=None, max_length=35)


class IntakeBody(Body):
    session_id: str = Field(min_length=1, max_length=200)
    messages: list[IntakeMessage] = Field(min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    provider: str | None = Field(default=None, min_length=1, max_length=100)
    context: IntakeContext | None = None


class HealthcheckBody(Body):
    config: dict[str, Any] | None = None


class TestConnectionBody(Body):
    plugin_id: str | None = Field(default=None, min_length=1, max_length=100)
    config: dict[str, Any] | None = None


class TestLlmBody(Body):
    plugin_id: str | None = Field(default=None, min_length=1, max_length=100)
    config: dict[str, Any] | None = None


class ArtifactContentBody(Body):
    content: str
