"""The `script` executor: deterministic phases for tests, demos and workflow CI (SPEC §6).

`params.script` maps a phase name to a list of visits (each a list of steps) or to a
flat list of steps used on every visit. Visit n runs list n; past the end the last list
repeats. Steps go through the same tool path as a real LLM executor.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coro.executors.base import (
    ExecutorError,
    ExecutorEvent,
    Health,
    ModelInfo,
    NothingToDo,
    PhaseRequest,
    PromptEvent,
    RateLimited,
    TextEvent,
    UsageEvent,
    wait_interruptible,
)
from coro.plugins.context import PluginContext


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TextStep(_Step):
    text: str


class ToolStep(_Step):
    tool: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


class SleepStep(_Step):
    sleep: float = Field(ge=0, le=86_400)


class UsageCounts(_Step):
    input_tokens: int = Field(default=0, ge=0, alias="inputTokens")
    output_tokens: int = Field(default=0, ge=0, alias="outputTokens")
    cache_read_input_tokens: int = Field(default=0, ge=0, alias="cacheReadInputTokens")
    cache_creation_input_tokens: int = Field(default=0, ge=0, alias="cacheCreationInputTokens")
    cost_usd: float = Field(default=0.0, ge=0, alias="costUsd")


class UsageStep(_Step):
    usage: UsageCounts


class FailStep(_Step):
    fail: str


class RateLimitStep(_Step):
    """Simulates a provider 429: the job parks and resumes by itself after `seconds`."""

    rate_limit: float = Field(ge=0, le=86_400, alias="rateLimit")


Step = TextStep | ToolStep | SleepStep | UsageStep | FailStep | RateLimitStep
_STEP_KINDS: dict[str, type[Step]] = {
    "text": TextStep,
    "tool": ToolStep,
    "sleep": SleepStep,
    "usage": UsageStep,
    "fail": FailStep,
    "rateLimit": RateLimitStep,
}


class ScriptError(ValueError):
    pass


def parse_script(raw: Any) -> dict[str, list[list[Step]]]:
    """Validate `params.script`; every phase becomes a non-empty list of visits."""
    if not isinstance(raw, dict):
        raise ScriptError("params.script must be an object mapping phase names to steps")
    script: dict[str, list[list[Step]]] = {}
    for phase, value in raw.items():
        if not isinstance(value, list):
            raise ScriptError(f"params.script.{phase} must be a list of steps or of visits")
        nested = bool(value) and all(isinstance(v, list) for v in value)
        visits = value if nested else [value]
        script[phase] = [
            [
                _parse_step(
                    step, f"params.script.{phase}" + (f"[{v}]" if nested else "") + f"[{i}]"
                )
                for i, step in enumerate(visit)
            ]
            for v, visit in enumerate(visits)
        ]
    return script


def _parse_step(raw: Any, where: str) -> Step:
    kinds = [key for key in _STEP_KINDS if isinstance(raw, dict) and key in raw]
    if len(kinds) != 1:
        expected = ", ".join(_STEP_KINDS)
        raise ScriptError(f"{where}: a step is an object with exactly one of: {expected}")
    try:
        return _STEP_KINDS[kinds[0]].model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or kinds[0]
        raise ScriptError(f"{where}.{field}: {first['msg']}") from exc


class ScriptExecutor:
    id = "script"

    def validate_params(self, params: dict[str, Any]) -> None:
        """`params.script` is valid (checked when a job is created); `ScriptError`."""
        if "script" in params:
            parse_script(params["script"])

    async def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]:
        try:
            script = parse_script(request.params.get("script", {}))
        except ScriptError as exc:
            raise ExecutorError(str(exc)) from exc
        visits = script.get(request.phase)
        if not visits:
            yield NothingToDo(f"params.script has no steps for phase {request.phase!r}")
            return
        steps = visits[min(request.visit, len(visits)) - 1]
        for step in steps:
            for message in request.take_developer_messages():
                yield PromptEvent(message)
            if request.stop_requested:
                return
            if isinstance(step, TextStep):
                yield TextEvent(step.text)
            elif isinstance(step, ToolStep):
                await request.call_tool(step.tool, step.input, None)
            elif isinstance(step, SleepStep):
                if await wait_interruptible(request.interrupt, step.sleep):
                    return
            elif isinstance(step, UsageStep):
                u = step.usage
                yield UsageEvent(
                    input_tokens=u.input_tokens,
                    output_tokens=u.output_tokens,
                    cache_read_input_tokens=u.cache_read_input_tokens,
                    cache_creation_input_tokens=u.cache_creation_input_tokens,
                    cost_usd=u.cost_usd,
                    model="script",
                    turns=1,
                )
            elif isinstance(step, FailStep):
                raise ExecutorError(step.fail)
            elif isinstance(step, RateLimitStep):
                raise RateLimited(
                    f"script rate limit ({step.rate_limit:g}s)",
                    retry_after=step.rate_limit,
                    provider=self.id,
                )

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="script", display_name="Deterministic script")]

    async def healthcheck(self) -> Health:
        return Health(ok=True, message="script executor is always available")


def create(settings: dict[str, Any], context: PluginContext) -> ScriptExecutor:
    """The plugin factory: the script executor has no settings."""
    return ScriptExecutor()
