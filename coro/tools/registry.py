"""One registry of tools (name, JSON schema, handler) shared by every executor and MCP.

A tool's input is a pydantic model: the same class gives the JSON schema sent to the
model and validates what comes back. Handlers raise `ToolError` for anything the agent
did wrong; the registry turns every failure into an error *result* so a bad tool call
never crashes a job.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from coro.domain.allowlist import MCP_PREFIX, is_allowed
from coro.domain.models import CampaignChild
from coro.intelligence.layers import IntelligenceLayers
from coro.plugins.registry import PluginSet
from coro.state.store import JobStore
from coro.tools.sandbox import SandboxPolicy


class CampaignControl(Protocol):
    """The runner's campaign coordinator, as the child-control tools use it."""

    async def skip(self, parent_id: str, name: str, reason: str | None = None) -> CampaignChild: ...

    async def rerun(
        self, parent_id: str, name: str, reason: str | None = None
    ) -> CampaignChild: ...

    async def cancel(
        self, parent_id: str, name: str, reason: str | None = None
    ) -> CampaignChild: ...


class ToolInput(BaseModel):
    """Base class of tool inputs: camelCase on the wire, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ToolError(Exception):
    """The agent's call was wrong or could not be carried out; returned to it as an error."""


@dataclass
class PhaseSignals:
    """What tool handlers ask of the phase loop; reset at each phase start."""

    next_phase: str | None = None
    awaiting_event: str | None = None
    awaiting_pr_id: int | None = None
    escalated: bool = False
    escalation_reason: str | None = None
    #: the next turn starts without this conversation (request_new_session, lane switch)
    new_session: bool = False
    #: tools the agent was told to stop repeating (a loop): an executor that constrains
    #: the model's output stops offering them for the rest of the turn
    discouraged_tools: set[str] = field(default_factory=set)

    @property
    def any(self) -> bool:
        return bool(self.next_phase or self.awaiting_event or self.escalated)


@dataclass
class ToolContext:
    """What a handler may touch: its job (through the store), its directory, its signals."""

    job_id: str
    phase: str
    workdir: Path
    store: JobStore
    signals: PhaseSignals = field(default_factory=PhaseSignals)
    phase_names: tuple[str, ...] = ()
    #: source-control and tracker plugins (the `scm_*` / `tracker_*` tools)
    plugins: PluginSet | None = None
    #: the intelligence layers (`read_memory`, `propose_change`)
    layers: IntelligenceLayers | None = None
    #: the campaign coordinator (`campaign_*_child` controls); None outside a runner
    campaigns: CampaignControl | None = None
    #: how `shell` confines commands (bubblewrap unless the runner's config says "off")
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    #: the phase's `network: true`: `shell` commands get outbound networking
    network: bool = False
    shell_timeout_default: float = 120.0
    shell_timeout_max: float = 600.0
    output_cap_bytes: int = 64 * 1024

    async def log(self, text: str) -> None:
        await self.store.log(self.job_id, text)


InputT = TypeVar("InputT", bound=ToolInput)
Handler = Callable[[ToolContext, InputT], Awaitable[Any]]


@dataclass(frozen=True)
class Tool(Generic[InputT]):
    name: str
    description: str
    input_model: type[InputT]
    handler: Handler[InputT]
    #: A raw JSON schema that replaces the input model's (an external MCP server's tool).
    schema: dict[str, Any] | None = None

    @property
    def input_schema(self) -> dict[str, Any]:
        if self.schema is not None:
            return self.schema
        return self.input_model.model_json_schema(by_alias=True)


@dataclass(frozen=True)
class ToolResult:
    output: Any
    is_error: bool = False

    def text(self) -> str:
        """The result as the agent sees it: strings verbatim, anything else as JSON."""
        if isinstance(self.output, str):
            return self.output
        return json.dumps(self.output, indent=2, ensure_ascii=False, default=str)


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool[Any]] = {}

    def add(self, tool: Tool[Any]) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool already registered: {tool.name}")
        self._tools[tool.name] = tool

    def tool(self, name: str, description: str) -> Callable[[Handler[InputT]], Handler[InputT]]:
        """Decorator registering a handler; its input model comes from its annotation."""

        def register(handler: Handler[InputT]) -> Handler[InputT]:
            model = _input_model_of(handler)
            self.add(Tool(name=name, description=description, input_model=model, handler=handler))
            return handler

        return register

    def remove(self, name: str) -> None:
        """Unregister a tool (external MCP tools leave when their server disconnects)."""
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool[Any] | None:
        return self._tools.get(name.removeprefix(MCP_PREFIX))

    def names(self) -> list[str]:
        return sorted(self._tools)

    def allowed(self, allow_list: Iterable[str] | None) -> list[Tool[Any]]:
        """Tools a phase may use; `None` means every tool."""
        return [t for t in self._tools.values() if is_allowed(t.name, allow_list)]

    async def call(
        self,
        name: str,
        raw_input: Any,
        ctx: ToolContext,
        allow_list: Iterable[str] | None = None,
    ) -> ToolResult:
        tool = self.get(name)
        if tool is None:
            return ToolResult(f"Unknown tool: {name}", is_error=True)
        if not is_allowed(tool.name, allow_list):
            return ToolResult(
                f"Tool {tool.name} is not allowed in phase {ctx.phase}", is_error=True
            )
        try:
            args = tool.input_model.model_validate(raw_input if raw_input is not None else {})
        except ValidationError as exc:
            return ToolResult(f"Invalid input for {tool.name}: {_brief(exc)}", is_error=True)
        try:
            return ToolResult(await tool.handler(ctx, args))
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True)


def _brief(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "input"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _input_model_of(handler: Callable[..., Any]) -> type[Any]:
    import inspect
    import typing

    hints = typing.get_type_hints(handler)
    params = list(inspect.signature(handler).parameters)
    if len(params) != 2 or params[1] not in hints:
        raise TypeError(f"{handler.__name__} must be (ctx, args: <ToolInput subclass>)")
    model = hints[params[1]]
    if not (isinstance(model, type) and issubclass(model, ToolInput)):
        raise TypeError(f"{handler.__name__}: input annotation must subclass ToolInput")
    return model
