"""The `Executor` protocol: how a phase is handed to an agent and what comes back.

An executor turns a `PhaseRequest` into an async stream of `ExecutorEvent`s. It acts
only through `request.call_tool`, the one tool path shared by every executor, and it
stops promptly once `request.stop_requested` is true (a tool raised a phase signal, or
the developer cancelled / paused / interrupted the job).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from coro.config import ToolCalling
from coro.domain.models import ConversationMessage
from coro.tools.registry import PhaseSignals, Tool, ToolResult


@dataclass(frozen=True)
class TextEvent:
    text: str


@dataclass(frozen=True)
class ThinkingEvent:
    text: str


@dataclass(frozen=True)
class UsageEvent:
    """Incremental usage of one provider round-trip (not cumulative)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None
    turns: int = 0


@dataclass(frozen=True)
class SessionEvent:
    """The provider's session id, kept so a resumed phase continues the same session."""

    session_id: str


@dataclass(frozen=True)
class PromptEvent:
    """A developer message the executor delivered to the model mid-turn."""

    text: str


@dataclass(frozen=True)
class NothingToDo:
    """The executor had nothing to run for the phase (the job log warns, with `reason`)."""

    reason: str


ExecutorEvent = TextEvent | ThinkingEvent | UsageEvent | SessionEvent | PromptEvent | NothingToDo


class ExecutorError(Exception):
    """The executor could not run the phase; the message is shown to the developer.

    `escalate` marks problems only a developer can fix (bad key, unknown model, context
    overflow): the job escalates with the message instead of failing.
    """

    def __init__(self, message: str, *, escalate: bool = False) -> None:
        super().__init__(message)
        self.escalate = escalate


class ContextOverflow(ExecutorError):
    """The provider refused the conversation as too long for the model's context window.

    Executors with a `request.condense` callback condense once and retry; past that it
    escalates like any other `ExecutorError(escalate=True)`."""

    def __init__(self, message: str) -> None:
        super().__init__(message, escalate=True)


class RateLimited(ExecutorError):
    """The provider asked us to wait (`rate-limit`) or kept failing (`overloaded`): the
    job parks and resumes by itself after `retry_after` seconds."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        provider: str,
        kind: Literal["rate-limit", "overloaded"] = "rate-limit",
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.provider = provider
        self.kind = kind


ToolCaller = Callable[[str, dict[str, Any], str | None], Awaitable[ToolResult]]

#: Condense once the conversation fills this share of the context window.
CONDENSE_AT = 0.8
#: A rough size of text in tokens when the provider reported none (or not yet).
CHARS_PER_TOKEN = 4


class Condense(Protocol):
    """The phase loop's condensation of the conversation (see `coro.engine.condense`).

    Summarises the older part of the phase's provider-neutral history into one message
    and returns the whole new history (this turn's task prompt included, so the executor
    rebuilds its wire messages from it alone), or None when nothing could be condensed.
    `overflow`: the provider refused the conversation, so keep less of it verbatim.
    """

    async def __call__(
        self, *, reason: str, context_window: int | None, overflow: bool = False
    ) -> list[ConversationMessage] | None: ...


def estimate_tokens(payload: Any) -> int:
    """A rough token count of a request payload (JSON-encoded), for servers that report
    no usage and for what was appended since the last reported count."""
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    return len(text) // CHARS_PER_TOKEN


def nearly_full(used_tokens: int, context_window: int | None) -> bool:
    return context_window is not None and used_tokens >= CONDENSE_AT * context_window


@dataclass
class PhaseRequest:
    job_id: str
    phase: str
    visit: int  # 1 for the first run of this phase, counting resumes
    system_prompt: str
    prompt: str
    history: list[ConversationMessage]
    model: str | None
    provider: str
    params: dict[str, Any]
    workdir: Path
    tools: list[Tool[Any]]
    call_tool: ToolCaller  # (name, input, call_id) -> result; logs and records the call
    signals: PhaseSignals
    interrupt: asyncio.Event
    developer_messages: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    max_turns: int = 200
    session_id: str | None = None  # the provider session to resume, when it keeps one
    allowed_tools: list[str] | None = None  # the phase's raw `tools` allow-list
    reasoning_effort: str | None = None  # low | medium | high, from the model alias
    #: the model alias's `contextWindow` (the executor falls back to its own setting,
    #: then the model catalogue)
    context_window: int | None = None
    #: the model alias's `toolCalling` (None: the executor's setting or default)
    tool_calling: ToolCalling | None = None
    #: shrinks the conversation when it nears the context window (None: never)
    condense: Condense | None = None

    @property
    def stop_requested(self) -> bool:
        return self.signals.any or self.interrupt.is_set()

    async def condense_after_overflow(
        self, reason: str, context_window: int | None, *, retrying: bool
    ) -> list[ConversationMessage] | None:
        """The condensed history after the provider found the conversation too long, or
        None when there is no condenser or this round trip was already condensed once
        (the caller then escalates as before)."""
        if self.condense is None or retrying:
            return None
        return await self.condense(reason=reason, context_window=context_window, overflow=True)

    def take_developer_messages(self) -> list[str]:
        """Messages the developer sent during this turn, for injection into the next call."""
        messages = []
        while not self.developer_messages.empty():
            messages.append(self.developer_messages.get_nowait())
        return messages


@dataclass(frozen=True)
class ChatDelta:
    """A piece of the assistant's reply in plan mode."""

    text: str


@dataclass(frozen=True)
class ChatUsage:
    """What the provider reported for one plan-mode turn."""

    input_tokens: int
    output_tokens: int


ChatEvent = ChatDelta | ChatUsage


class ChatCapable(Protocol):
    """Executors that can hold a plain conversation (plan mode): no tools, no session."""

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        system: str,
        model: str | None,
        max_tokens: int,
    ) -> AsyncGenerator[ChatEvent, None]: ...


@dataclass(frozen=True)
class ModelInfo:
    id: str
    display_name: str
    context_window: int | None = None
    pricing: dict[str, float] | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    message: str
    latency_ms: float = 0.0


class Executor(Protocol):
    id: str

    def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]: ...

    async def models(self) -> list[ModelInfo]: ...

    async def healthcheck(self) -> Health: ...


@runtime_checkable
class ValidatesParams(Protocol):
    """An executor that reads job parameters of its own (the `script` executor's
    `params.script`) checks them when a job that will use it is created."""

    def validate_params(self, params: dict[str, Any]) -> None:
        """Raise `ValueError` with a message naming the bad parameter."""


async def wait_interruptible(interrupt: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; return True if interrupted first."""
    try:
        await asyncio.wait_for(interrupt.wait(), timeout=max(seconds, 0))
    except TimeoutError:
        return False
    return True
