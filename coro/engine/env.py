"""What the engine runs with: state, intelligence, executors, tools and config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coro.config import CoroConfig, ModelAlias, ToolCalling
from coro.domain.models import Job
from coro.domain.workflows import Phase
from coro.executors import ExecutorRegistry
from coro.intelligence.layers import IntelligenceLayers
from coro.plugins.registry import PluginSet
from coro.state.store import JobStore
from coro.tools.registry import CampaignControl, ToolRegistry
from coro.tools.sandbox import SandboxPolicy


@dataclass
class EngineEnv:
    store: JobStore
    layers: IntelligenceLayers
    executors: ExecutorRegistry
    tools: ToolRegistry
    config: CoroConfig
    work_root: Path
    plugins: PluginSet
    #: set by the runner once built (tools reach the coordinator through it)
    campaigns: CampaignControl | None = None
    #: how the `shell` tool confines commands (the runner's: `runner_policy`)
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)

    def workdir(self, job_id: str) -> Path:
        return self.work_root / job_id


class NoExecutor(LookupError):
    """No executor can run a phase; the message says what to configure."""


@dataclass(frozen=True)
class ModelChoice:
    provider: str
    model: str | None
    source: str  # "override", "phase", "alias:<name>", "default"
    reasoning_effort: str | None = None  # from the alias, for providers that take it
    context_window: int | None = None  # the alias's `contextWindow`
    tool_calling: ToolCalling | None = None  # the alias's `toolCalling` (openai)


def select_model(job: Job, phase: Phase, env: EngineEnv) -> ModelChoice:
    """Phase override → phase `model` (alias or literal) → `tier:<tier>` alias → default."""
    llm = env.config.llm
    override = job.phase_model_overrides.get(phase.name)
    provider: str | None = phase.provider
    model: str | None = None
    chosen: ModelAlias | None = None
    source = "default"
    if override is not None:
        model, source = override.model, "override"
        provider = override.provider or provider
    elif phase.model:
        alias = llm.aliases.get(phase.model)
        if alias is not None:
            model, source = alias.model, f"alias:{phase.model}"
            provider, chosen = provider or alias.provider, alias
        else:
            model, source = phase.model, "phase"
    elif phase.tier:
        alias = llm.aliases.get(f"tier:{phase.tier}")
        if alias is not None:
            model, source = alias.model, f"alias:tier:{phase.tier}"
            provider, chosen = provider or alias.provider, alias
    provider = provider or llm.default_provider
    if provider is None:
        raise NoExecutor(
            f"phase {phase.name!r} has no executor: set llm.defaultProvider in config.json or "
            f"a provider on the phase (available: {', '.join(env.executors.ids())})"
        )
    if env.executors.get(provider) is None:
        raise NoExecutor(
            f"phase {phase.name!r} needs executor {provider!r}, which is not installed "
            f"(available: {', '.join(env.executors.ids())})"
        )
    return ModelChoice(
        provider=provider,
        model=model,
        source=source,
        reasoning_effort=chosen.reasoning_effort if chosen else None,
        context_window=chosen.context_window if chosen else None,
        tool_calling=chosen.tool_calling if chosen else None,
    )
