"""The `anthropic` executor: Claude over the Messages API with the official SDK.

One phase is a tool-use loop of streamed round trips. The request is built from the
phase's provider-neutral transcript (`request.history`) plus this turn's prompt, with
prompt-cache breakpoints on the system prompt, the tool definitions and the newest
message, so every round trip after the first reads the conversation from the cache.
Tools run only through `request.call_tool` (which logs, enforces the phase's
allow-list and records each call in the transcript), so a phase interrupted by a
restart, a pause or a rate limit continues the same conversation from the transcript
without repeating finished calls.

Provider errors: 429 → `RateLimited` (the job parks and resumes after `retry-after`);
overloaded, 5xx and connection failures → a few quick retries with exponential
backoff, then `RateLimited(kind="overloaded")` (park and retry later); a conversation
too long for the context window → `request.condense` once and a retry (the
conversation is also condensed before a round trip once it nears the window), then
escalation; a rejected key, an unknown model and other refused requests →
`ExecutorError(escalate=True)` with a readable message (`coro.executors.anthropic_errors`
classifies them, as for `claude-code`). The API key never appears in a message: every
text that leaves this module is scrubbed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import httpx2
from anthropic.types import ContentBlock, Message
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

from coro.executors import pricing
from coro.executors.anthropic_errors import (
    AnthropicErrors,
    KeyScrubber,
    classify,
    retry_after_seconds,
)
from coro.executors.anthropic_messages import (
    Block,
    Msg,
    append_blocks,
    assistant_blocks,
    build_messages,
    system_param,
    text_block,
    tool_params,
    tool_result_block,
    with_cache_breakpoint,
)
from coro.executors.base import (
    ChatDelta,
    ChatEvent,
    ChatUsage,
    ContextOverflow,
    ExecutorError,
    ExecutorEvent,
    Health,
    ModelInfo,
    PhaseRequest,
    PromptEvent,
    TextEvent,
    ThinkingEvent,
    UsageEvent,
    estimate_tokens,
    nearly_full,
    wait_interruptible,
)
from coro.executors.common import parse_settings, turn_limit_reached
from coro.plugins.context import PluginContext
from coro.plugins.http import display_url

logger = logging.getLogger(__name__)

PROVIDER = "anthropic"
ERRORS = AnthropicErrors(
    provider=PROVIDER,
    key_rejected="Anthropic rejected the API key",
    key_hint="Check plugins.installed.anthropic.config.apiKey.",
)
DEFAULT_MODEL = pricing.ANTHROPIC_DEFAULT_MODEL
BACKOFF_CAP_SECONDS = 8.0
HEALTHCHECK_TIMEOUT_SECONDS = 15.0


# --- settings -------------------------------------------------------------------------


class AnthropicSettings(BaseModel):
    """`plugins.installed.anthropic.config` (camelCase in config.json)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    api_key: SecretStr
    base_url: str | None = None
    default_model: str = Field(default=DEFAULT_MODEL, min_length=1)
    max_tokens: int = Field(default=8192, ge=1, le=128_000)
    timeout_seconds: float = Field(default=600.0, gt=0, le=3600)
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    max_turns: int | None = Field(default=None, ge=1, le=10_000)
    #: tokens the models take, where the catalogue says otherwise (or does not know)
    context_window: int | None = Field(default=None, ge=1_000, le=100_000_000)

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be blank")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


def create(settings: dict[str, Any], context: PluginContext | None = None) -> AnthropicExecutor:
    """The executor for `plugins.installed.anthropic.config`; `PluginConfigError` names
    the failing field, never its value."""
    return AnthropicExecutor(parse_settings(AnthropicSettings, settings))


# --- the executor ---------------------------------------------------------------------


@dataclass
class _RoundTrip:
    """What one streamed round trip produced (filled in by `_stream`)."""

    message: Message | None = None  # None: interrupted before the message completed
    partial: Message | None = None  # the snapshot so far, for usage of an interrupted call


@dataclass
class _Failure:
    error: ExecutorError
    retryable: bool = False
    summary: str = ""


@dataclass
class _Loop:
    """The client of one event loop (the SDK's connection pool belongs to its loop)."""

    loop: asyncio.AbstractEventLoop
    client: anthropic.AsyncAnthropic = field(repr=False)


class AnthropicExecutor:
    id = PROVIDER

    def __init__(self, settings: AnthropicSettings) -> None:
        self.settings = settings
        self._bound: _Loop | None = None
        self._scrub = KeyScrubber(settings.api_key.get_secret_value())

    def __repr__(self) -> str:
        return f"AnthropicExecutor(base_url={self.settings.base_url!r})"

    # -- clients --

    def _new_client(self, timeout: float | None = None) -> anthropic.AsyncAnthropic:
        # Explicit api_key: the SDK then ignores credentials from the environment and
        # profiles. max_retries=0: the retry policy is ours (see `_round_trip`).
        return anthropic.AsyncAnthropic(
            api_key=self.settings.api_key.get_secret_value(),
            base_url=self.settings.base_url,
            max_retries=0,
            timeout=timeout or self.settings.timeout_seconds,
        )

    def _client(self) -> anthropic.AsyncAnthropic:
        loop = asyncio.get_running_loop()
        if self._bound is None or self._bound.loop is not loop:
            self._bound = _Loop(loop, self._new_client())
        return self._bound.client

    async def aclose(self) -> None:
        """Close the HTTP connection pool (at runner shutdown)."""
        bound, self._bound = self._bound, None
        if bound is not None and bound.loop is asyncio.get_running_loop():
            await bound.client.close()

    def scrub(self, text: str) -> str:
        """`text` without the API key (nor anything shaped like an Anthropic key)."""
        return self._scrub(text)

    # -- phases --

    def context_window(self, request: PhaseRequest, model: str) -> int | None:
        """The alias's `contextWindow`, else this plugin's, else the catalogue's."""
        if request.context_window or self.settings.context_window:
            return request.context_window or self.settings.context_window
        known = pricing.lookup(PROVIDER, model)
        return known.context_window if known else None

    async def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]:
        model = request.model or self.settings.default_model
        tools = tool_params(request.tools)
        system = system_param(request.system_prompt)
        messages = build_messages(request.history, request.prompt, tools_available=bool(tools))
        window = self.context_window(request, model)
        cap = request.max_turns
        if self.settings.max_turns is not None:
            cap = min(cap, self.settings.max_turns)
        client = self._client()
        reported = (0, 0)  # (tokens the API last counted, messages then)
        retrying = False  # after a context overflow: this round trip was condensed once
        turn = 0
        while True:
            for text in request.take_developer_messages():
                append_blocks(messages, "user", [text_block(text)])
                yield PromptEvent(text)
            if request.stop_requested:
                return
            if turn >= cap:
                raise turn_limit_reached(request.phase, cap)
            used = _size(reported, messages, system, tools)
            if request.condense is not None and not retrying and nearly_full(used, window):
                condensed = await request.condense(
                    reason=f"The conversation nears the context window ({used} of {window} tokens)",
                    context_window=window,
                )
                if condensed is not None:
                    messages = build_messages(condensed, "", tools_available=bool(tools))
                    reported = (0, 0)
            turn += 1
            outcome = _RoundTrip()
            params: dict[str, Any] = {
                "model": model,
                "max_tokens": self.settings.max_tokens,
                "messages": with_cache_breakpoint(messages),
            }
            if system:
                params["system"] = system
            if tools:
                params["tools"] = tools
            try:
                async for event in self._round_trip(client, params, request.interrupt, outcome):
                    yield event
            except ContextOverflow:
                condensed = await request.condense_after_overflow(
                    "The provider refused the conversation as too long", window, retrying=retrying
                )
                if condensed is None:
                    raise
                messages = build_messages(condensed, "", tools_available=bool(tools))
                reported, retrying = (0, 0), True
                continue
            if outcome.message is None:  # interrupted (cancel, pause) mid-call
                if outcome.partial is not None:
                    yield self._usage_event(outcome.partial, model)
                return
            message = outcome.message
            yield self._usage_event(message, model)
            append_blocks(messages, "assistant", assistant_blocks(message.content))
            if message.stop_reason == "model_context_window_exceeded":
                condensed = await request.condense_after_overflow(
                    "The reply filled the context window", window, retrying=retrying
                )
                if condensed is None:
                    raise ExecutorError(
                        f"The conversation is too long for model {model}: it filled the "
                        "context window. Start a new session for this phase or use a model "
                        "with a larger context window.",
                        escalate=True,
                    )
                # The cut-off reply is in the condensed history (as text); its tool calls,
                # if any, never ran.
                messages = build_messages(condensed, CUT_OFF_NOTE, tools_available=bool(tools))
                reported, retrying = (0, 0), True
                continue
            retrying = False
            reported = (_counted(message), len(messages))
            calls = [block for block in message.content if block.type == "tool_use"]
            if message.stop_reason != "tool_use" or not calls:
                return
            results: list[Block] = []
            for call in calls:
                if request.stop_requested:
                    return
                arguments = call.input if isinstance(call.input, dict) else {}
                result = await request.call_tool(call.name, dict(arguments), call.id)
                results.append(tool_result_block(call.id, result.text(), result.is_error))
            if request.stop_requested:
                return
            append_blocks(messages, "user", results)

    def _usage_event(self, message: Message, requested_model: str) -> UsageEvent:
        usage = message.usage
        model = message.model or requested_model
        counts = {
            "input_tokens": usage.input_tokens or 0,
            "output_tokens": usage.output_tokens or 0,
            "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
        }
        return UsageEvent(
            **counts, cost_usd=pricing.cost_usd(PROVIDER, model, **counts), model=model, turns=1
        )

    async def _round_trip(
        self,
        client: anthropic.AsyncAnthropic,
        params: dict[str, Any],
        interrupt: asyncio.Event,
        outcome: _RoundTrip,
    ) -> AsyncGenerator[ExecutorEvent, None]:
        """One model call with the retry policy; fills `outcome`."""
        attempt = 0
        while True:
            outcome.partial = None
            try:
                async for event in self._stream(client, params, interrupt, outcome):
                    yield event
                return
            except (anthropic.APIError, httpx2.TransportError) as exc:
                failure = self._classify(exc, str(params["model"]), attempt)
            except ValueError as exc:  # the SDK could not parse what the stream carried
                raise ExecutorError(
                    f"Anthropic sent a response that could not be read: {self.scrub(str(exc))}"
                ) from None
            if not failure.retryable or attempt >= self.settings.max_retries:
                raise failure.error
            delay = min(BACKOFF_CAP_SECONDS, self.settings.retry_backoff_seconds * 2**attempt)
            attempt += 1
            logger.warning(
                "anthropic: %s; retry %d/%d in %.1fs",
                failure.summary,
                attempt,
                self.settings.max_retries,
                delay,
            )
            if await wait_interruptible(interrupt, delay):
                return

    async def _stream(
        self,
        client: anthropic.AsyncAnthropic,
        params: dict[str, Any],
        interrupt: asyncio.Event,
        outcome: _RoundTrip,
    ) -> AsyncGenerator[ExecutorEvent, None]:
        """Stream one message, yielding each content block as it completes; returns
        early (leaving `outcome.message` None) as soon as `interrupt` is set."""
        completed: asyncio.Queue[ContentBlock] = asyncio.Queue()

        async def consume() -> Message:
            # One task owns the HTTP stream from start to close.
            async with client.messages.stream(**params) as stream:
                async for event in stream:
                    if event.type == "message_start":
                        outcome.partial = stream.current_message_snapshot
                    elif event.type == "content_block_stop":
                        completed.put_nowait(cast(ContentBlock, event.content_block))
                return await stream.get_final_message()

        reader = asyncio.create_task(consume(), name="anthropic-stream")
        stop = asyncio.create_task(interrupt.wait())
        getter: asyncio.Task[ContentBlock] | None = None
        try:
            while True:
                getter = asyncio.create_task(completed.get())
                done, _ = await asyncio.wait(
                    {getter, reader, stop}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    event = block_event(getter.result())
                    if event is not None:
                        yield event
                    continue
                getter.cancel()
                if reader in done:
                    while not completed.empty():
                        event = block_event(completed.get_nowait())
                        if event is not None:
                            yield event
                    outcome.message = reader.result()  # raises what the stream raised
                    return
                return  # interrupted: `finally` closes the HTTP stream
        finally:
            tasks = [task for task in (reader, stop, getter) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _classify(self, exc: Exception, model: str, attempt: int) -> _Failure:
        """Map an SDK/transport error to what the runner should do with it."""
        gave_up = f"gave up after {attempt + 1} attempt" + ("s" if attempt else "")
        if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
            cause = exc.__cause__ or exc.__context__
            detail = self.scrub(str(cause or exc)) or type(exc).__name__
            summary = f"cannot reach the Anthropic API ({detail})"
            return _Failure(ERRORS.overloaded(summary, gave_up), retryable=True, summary=summary)
        if not isinstance(exc, anthropic.APIStatusError):
            return _Failure(ExecutorError(f"Anthropic API error: {self.scrub(str(exc))}"))
        status = exc.status_code
        kind: str = exc.type or ""
        said = self.scrub(exc.api_message or str(exc))
        label = f"{status} {kind}".strip() if status != 200 else (kind or "stream error")
        problem = classify(status, kind, said) or "rejected"
        summary = ERRORS.describe(problem, label=label, said=said, model=model)
        wait = retry_after_seconds(exc.response.headers if status == 429 else {})
        return _Failure(
            ERRORS.error(problem, summary, wait=wait, gave_up=gave_up),
            retryable=problem == "overloaded",
            summary=summary,
        )

    # -- plan mode --

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        system: str,
        model: str | None,
        max_tokens: int,
    ) -> AsyncGenerator[ChatEvent, None]:
        """A plain conversation turn (no tools): text deltas, then the usage."""
        chosen = model or self.settings.default_model
        conversation: list[Msg] = []
        for entry in messages:
            role = "assistant" if entry.get("role") == "assistant" else "user"
            content = str(entry.get("content") or "")
            if content.strip():
                append_blocks(conversation, role, [text_block(content)])
        if not conversation or conversation[0]["role"] != "user":
            conversation.insert(0, {"role": "user", "content": [text_block("(start)")]})
        params: dict[str, Any] = {
            "model": chosen,
            "max_tokens": max_tokens,
            "messages": with_cache_breakpoint(conversation),
        }
        if system_blocks := system_param(system):
            params["system"] = system_blocks
        client = self._client()
        attempt = 0
        while True:
            streamed = False
            try:
                async with client.messages.stream(**params) as stream:
                    async for event in stream:
                        if event.type == "text" and event.text:
                            streamed = True
                            yield ChatDelta(event.text)
                    final = await stream.get_final_message()
            except (anthropic.APIError, httpx2.TransportError) as exc:
                failure = self._classify(exc, chosen, attempt)
            else:
                usage = final.usage
                prompt_tokens = (
                    (usage.input_tokens or 0)
                    + (usage.cache_read_input_tokens or 0)
                    + (usage.cache_creation_input_tokens or 0)
                )
                yield ChatUsage(input_tokens=prompt_tokens, output_tokens=usage.output_tokens or 0)
                return
            if streamed or not failure.retryable or attempt >= self.settings.max_retries:
                raise failure.error
            await asyncio.sleep(
                min(BACKOFF_CAP_SECONDS, self.settings.retry_backoff_seconds * 2**attempt)
            )
            attempt += 1

    # -- catalogue and health --

    async def models(self) -> list[ModelInfo]:
        return [model.info() for model in pricing.models_for(PROVIDER)]

    async def healthcheck(self) -> Health:
        """A cheap authenticated request (`GET /v1/models?limit=1`)."""
        where = display_url(self.settings.base_url or "https://api.anthropic.com")
        started = time.monotonic()
        timeout = min(self.settings.timeout_seconds, HEALTHCHECK_TIMEOUT_SECONDS)
        try:
            async with self._new_client(timeout=timeout) as client:
                await client.models.list(limit=1)
        except (anthropic.APIError, httpx2.TransportError) as exc:
            latency = (time.monotonic() - started) * 1000
            problem = ERRORS.key_check_problem(exc, where, self.scrub)
            return Health(ok=False, message=problem[0].upper() + problem[1:], latency_ms=latency)
        latency = (time.monotonic() - started) * 1000
        return Health(
            ok=True,
            message=(
                f"Anthropic API reachable at {where}; the API key is accepted "
                f"(default model {self.settings.default_model})"
            ),
            latency_ms=latency,
        )


# --- the conversation's size -------------------------------------------------------------

CUT_OFF_NOTE = (
    "(Your last reply was cut off because the context window was full; the conversation "
    "has been condensed. Continue from where you were.)"
)


def _counted(message: Message) -> int:
    """The tokens of the conversation as of this reply, as the API counted them."""
    usage = message.usage
    return (
        (usage.input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
        + (usage.output_tokens or 0)
    )


def _size(reported: tuple[int, int], messages: list[Msg], system: Any, tools: Any) -> int:
    """The API's last count plus an estimate of the messages added since; before any
    count, an estimate of the whole request."""
    tokens, at = reported
    if not tokens:
        return estimate_tokens([system, tools, messages])
    return tokens + estimate_tokens(messages[at:])


def block_event(block: ContentBlock) -> ExecutorEvent | None:
    """The log event for a completed content block (tool calls are logged by call_tool)."""
    if block.type == "text" and block.text.strip():
        return TextEvent(block.text)
    if block.type == "thinking" and block.thinking.strip():
        return ThinkingEvent(block.thinking)
    return None
