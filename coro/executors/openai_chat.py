"""The `openai` executor: Chat Completions on the official `openai` SDK (SPEC §4.6).

One executor for OpenAI itself and for every server that speaks the same API through a
configurable `baseUrl`: Ollama, vLLM, llama.cpp server, Azure OpenAI's v1 endpoint,
OpenRouter and friends. A phase is a tool loop: each round trip streams one assistant
message (text and, possibly, several tool calls whose JSON arguments arrive in
fragments); the calls go through `request.call_tool` in order, their results are sent
back as `role: tool` messages, and the loop continues while the model keeps calling
tools. The SDK's own retries are off: this module decides what a provider error means
for the job (retry, park on a rate limit, or escalate to the developer).

Models and servers without native tool calling get prompted tool calls
(`coro.executors.prompted`): `toolCalling: "prompted"` describes the tools in the system
prompt and reads the calls from the reply's text; `auto` (the default for a compatible
server) offers native tools, takes calls written as text when a reply has no native
ones, and turns prompted when the server refuses tools. Near the context window, or
when the server refuses the conversation as too long (once per round trip), the
phase's `request.condense` shortens the conversation and the request is rebuilt.

Secrets: the API key is held in memory only; every message built from a provider
response is scrubbed of it, and it is never part of an error or log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI, AsyncStream, Omit, omit
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)
from openai.types.shared import ReasoningEffort
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

from coro.config import ToolCalling
from coro.domain.errors import PluginConfigError
from coro.domain.models import ConversationMessage
from coro.executors import pricing
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
    RateLimited,
    TextEvent,
    ThinkingEvent,
    UsageEvent,
    nearly_full,
    wait_interruptible,
)
from coro.executors.common import parse_settings, turn_limit_reached
from coro.executors.openai_messages import (
    append_user,
    history_messages,
    parse_arguments,
    tool_message,
)
from coro.executors.openai_stream import Accumulator, Reply, RequestSize
from coro.executors.pricing import CatalogModel, Pricing, Tier, register_models
from coro.executors.prompted import (
    call_schema,
    convention,
    parse_calls,
    read_constrained,
    results_text,
)
from coro.plugins.context import PluginContext
from coro.plugins.http import Scrubber, parse_retry_after

OPENAI_API_URL = "https://api.openai.com/v1"
#: Sent as the bearer token to keyless servers (Ollama, llama.cpp…), which ignore it.
KEYLESS_PLACEHOLDER = "not-needed"
#: Park this long on a 429 that does not say when to come back.
RATE_LIMIT_FALLBACK_SECONDS = 30.0
#: Park this long once server errors outlast the retries.
OVERLOADED_BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 8.0
HEALTHCHECK_TIMEOUT_SECONDS = 15.0

_CONFIG_PATH = "plugins.installed.openai.config"
_CONTEXT_OVERFLOW = re.compile(
    r"maximum context length|context length|context window|too many tokens|"
    r"prompt is too long|exceeds the context|context size",
    re.IGNORECASE,
)
#: How servers (Ollama, vLLM, llama.cpp) say a model or the server has no tool calling.
_TOOLS_UNSUPPORTED = re.compile(
    r"does not support tools|tools? (is|are) not supported|tool calling is not supported|"
    r"requires --jinja|enable-auto-tool-choice",
    re.IGNORECASE,
)
T = TypeVar("T")


# --- settings -----------------------------------------------------------------------


class OpenAISettings(BaseModel):
    """`plugins.installed.openai.config` in config.json (camelCase)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    api_key: SecretStr | None = None
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    default_model: str | None = Field(default=None, min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    timeout_seconds: float = Field(default=600.0, gt=0, le=3600)
    max_retries: int = Field(default=3, ge=0, le=10)
    #: sampling temperature; unset leaves it to the server (0 makes a local model repeatable)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    #: penalises tokens already used (keeps a small model from repeating itself)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    #: tokens the models take, for models the catalogue does not know (a local model)
    context_window: int | None = Field(default=None, ge=1_000, le=100_000_000)
    #: "native" (the API's tools), "prompted" (tools described in the system prompt,
    #: calls read from the text), "constrained" (prompted, and the server must answer
    #: with a call: `response_format` with a JSON schema, for very small local models)
    #: or "auto" (native, plus calls written as text);
    #: default: auto for a compatible server, native for api.openai.com
    tool_calling: ToolCalling | None = None

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL (e.g. http://localhost:11434/v1)")
        return value.strip().rstrip("/")


def create(settings: dict[str, Any], context: PluginContext | None = None) -> OpenAIChatExecutor:
    """The executor for `plugins.installed.openai.config`; `PluginConfigError` names the
    failing field (never its value)."""
    parsed = parse_settings(OpenAISettings, settings)
    return OpenAIChatExecutor(parsed, api_key=_resolve_key(parsed))


def _is_official(base_url: str | None) -> bool:
    return base_url is None or urlsplit(base_url).hostname == "api.openai.com"


def _resolve_key(settings: OpenAISettings) -> str:
    """The configured key; for api.openai.com also `OPENAI_API_KEY`; a placeholder for
    compatible servers without one (the environment key is never sent to them)."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    if _is_official(settings.base_url):
        from_env = os.environ.get("OPENAI_API_KEY", "").strip()
        if from_env:
            return from_env
        raise PluginConfigError(
            "apiKey: required for api.openai.com (or set OPENAI_API_KEY); only a keyless "
            "OpenAI-compatible server given as baseUrl can do without one"
        )
    return KEYLESS_PLACEHOLDER


# --- price catalogue ----------------------------------------------------------------
# Rows for the shared catalogue in `coro.executors.pricing` (USD per million tokens,
# short-context Standard rates from developers.openai.com model pages, checked 2026-11;
# requests over 272K input tokens are billed higher by OpenAI and are not modelled).
# `cache_read=None` where no cached-input rate is published: the input rate is charged,
# never a guess below it. A model outside the catalogue (a local model) costs 0.

PROVIDER = "openai"
DEFAULT_MODEL = "gpt-5.4"

_M, _M105 = 1_000_000, 1_050_000
_OPENAI_ROWS: list[tuple[str, str, int | None, float, float, float | None, Tier | None]] = [
    # id, display name, context window, input, output, cached input, tier (default of it)
    ("gpt-6.2-astra", "GPT-6.2 Astra", _M105, 8, 40, None, None),
    ("gpt-6.2-sol", "GPT-6.2 Sol", _M105, 2, 10, 0.10, None),
    ("gpt-6.1-sol", "GPT-6.1 Sol", _M105, 2, 10, 0.10, None),
    ("gpt-6.1-terra", "GPT-6.1 Terra", None, 1, 5, None, None),
    ("gpt-6-astra", "GPT-6 Astra", _M105, 10, 50, None, None),
    ("gpt-6-sol", "GPT-6 Sol", _M105, 2, 10, 0.20, None),
    ("gpt-5.5", "GPT-5.5", _M, 5, 30, 0.50, "planning"),
    ("gpt-5.4", "GPT-5.4", _M, 2.5, 15, 0.25, "coding"),
    ("gpt-5.4-mini", "GPT-5.4 mini", 400_000, 0.75, 4.5, 0.075, "mini"),
    ("gpt-5.4-nano", "GPT-5.4 nano", 400_000, 0.20, 1.25, 0.02, None),
    ("gpt-5.2", "GPT-5.2", 400_000, 1.75, 14, 0.175, None),
    ("gpt-5.1", "GPT-5.1", 400_000, 1.25, 10, 0.125, None),
    ("gpt-5", "GPT-5", 400_000, 1.25, 10, 0.125, None),
    ("gpt-5-mini", "GPT-5 mini", 400_000, 0.25, 2, 0.025, None),
    ("gpt-5-nano", "GPT-5 nano", 400_000, 0.05, 0.40, 0.005, None),
    ("gpt-4.1", "GPT-4.1", 1_047_576, 2, 8, 0.50, None),
    ("gpt-4.1-mini", "GPT-4.1 mini", 1_047_576, 0.40, 1.60, 0.10, None),
    ("gpt-4.1-nano", "GPT-4.1 nano", 1_047_576, 0.10, 0.40, 0.025, None),
    ("gpt-4o", "GPT-4o", 128_000, 2.5, 10, 1.25, None),
    ("gpt-4o-mini", "GPT-4o mini", 128_000, 0.15, 0.60, 0.075, None),
    ("o3", "o3", 200_000, 2, 8, 0.50, None),
    ("o4-mini", "o4-mini", 200_000, 1.10, 4.40, 0.275, None),
]

register_models(
    *(
        CatalogModel(
            provider=PROVIDER,
            id=model_id,
            display_name=name,
            context_window=context,
            pricing=Pricing(rate_in, rate_out, cache_read=cached),
            tier=tier,
            is_default=tier is not None,
        )
        for model_id, name, context, rate_in, rate_out, cached, tier in _OPENAI_ROWS
    )
)


def round_trip_cost(model: str | None, input_tokens: int, cached: int, output: int) -> float:
    """USD for one round trip; `input_tokens` excludes the cached ones."""
    return pricing.cost_usd(
        PROVIDER,
        model,
        input_tokens=input_tokens,
        output_tokens=output,
        cache_read_input_tokens=cached,
    )


# --- errors -------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth retrying (5xx, connection trouble)."""


class _ToolsUnsupported(ExecutorError):
    """The server or model has no tool calling (`auto` then switches to prompted)."""


#: Replies in a row with the same unusable written calls before the job escalates (they
#: never reach the tools, so the phase loop's stuck detection cannot see them).
MALFORMED_LIMIT = 3
CONSTRAINED_NEXT = (
    "If the task is done, answer end_turn with a summary; otherwise call the next tool."
)


def _given(value: float | None) -> float | Omit:
    """A sampling setting, or nothing sent (the server's own default)."""
    return omit if value is None else value


def _with_convention(request: PhaseRequest, *, constrained: bool = False) -> str:
    """The system prompt with the prompted-tools section (tool list and convention)."""
    section = convention(request.tools, constrained=constrained)
    system = request.system_prompt
    return f"{system}\n\n{section}" if system.strip() else section


async def _race(work: Awaitable[T], interrupt: asyncio.Event) -> tuple[bool, T | None]:
    """Run `work` unless `interrupt` fires first: (finished, result)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(interrupt.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        return False, None
    return True, task.result()


class OpenAIChatExecutor:
    """Executor `openai`: Chat Completions with tools, streaming and usage accounting."""

    id = "openai"

    def __init__(self, settings: OpenAISettings, *, api_key: str) -> None:
        self.settings = settings
        self.official = _is_official(settings.base_url)
        self.base_url = settings.base_url or OPENAI_API_URL
        self._secrets = [api_key] if api_key != KEYLESS_PLACEHOLDER else []
        self._scrubber = Scrubber(self._secrets, min_length=1)
        #: models that refused `tools` in `auto` mode: their next phases start prompted
        self._refused_tools: set[str] = set()
        #: First retry delay; doubled per attempt (tests set it to 0).
        self.retry_base_seconds = 0.5
        self._client = AsyncOpenAI(
            api_key=api_key,
            base_url=self.base_url,
            organization=settings.organization,
            project=settings.project,
            timeout=settings.timeout_seconds,
            max_retries=0,
        )

    async def aclose(self) -> None:
        """Release the HTTP connection pool (call when the plugin is unloaded)."""
        await self._client.close()

    @property
    def endpoint(self) -> str:
        """The base URL as shown in messages: no credentials, query or fragment."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return f"{parts.scheme}://{host}{parts.path}"

    @property
    def _who(self) -> str:
        """Who answered, for the start of a sentence."""
        return "OpenAI" if self.official else f"The OpenAI-compatible endpoint {self.endpoint}"

    @property
    def _whom(self) -> str:
        """Who answered, inside a sentence."""
        return "OpenAI" if self.official else f"the OpenAI-compatible endpoint {self.endpoint}"

    def _scrub(self, text: str) -> str:
        return self._scrubber.scrub(text)

    def _model(self, requested: str | None) -> str:
        model = requested or self.settings.default_model
        if model:
            return model
        if self.official:
            return DEFAULT_MODEL
        raise ExecutorError(
            f"No model to run on {self.endpoint}: set {_CONFIG_PATH}.defaultModel "
            "(e.g. the name `ollama list` shows) or give the phase a model",
            escalate=True,
        )

    async def _create_stream(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        max_tokens: int | None,
        reasoning_effort: str | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> AsyncStream[ChatCompletionChunk]:
        # OpenAI's reasoning models only take `max_completion_tokens`; compatible
        # servers widely understand only the older `max_tokens`.
        limit: int | Omit = max_tokens if max_tokens is not None else omit
        return await self._client.chat.completions.create(
            model=model,
            messages=cast("list[ChatCompletionMessageParam]", messages),
            tools=cast("list[ChatCompletionFunctionToolParam]", tools) if tools else omit,
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=limit if self.official else omit,
            max_tokens=omit if self.official else limit,
            reasoning_effort=cast(ReasoningEffort, reasoning_effort) if reasoning_effort else omit,
            temperature=_given(self.settings.temperature),
            frequency_penalty=_given(self.settings.frequency_penalty),
            response_format=(
                {
                    "type": "json_schema",
                    "json_schema": {"name": "tool_call", "schema": response_schema},
                }
                if response_schema is not None
                else omit
            ),
        )

    # -- phases --

    def tool_calling(self, request: PhaseRequest) -> ToolCalling:
        """The alias's mode, else this plugin's, else `auto` for a compatible server (a
        local model may write its calls as text) and `native` for OpenAI."""
        default: ToolCalling = "native" if self.official else "auto"
        return request.tool_calling or self.settings.tool_calling or default

    def context_window(self, request: PhaseRequest, model: str) -> int | None:
        """The alias's `contextWindow`, else this plugin's, else the catalogue's."""
        if request.context_window or self.settings.context_window:
            return request.context_window or self.settings.context_window
        known = pricing.lookup(PROVIDER, model)
        return known.context_window if known else None

    async def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]:
        model = self._model(request.model)
        mode = self.tool_calling(request)
        refused = mode == "auto" and model in self._refused_tools
        prompted = (mode in ("prompted", "constrained") or refused) and bool(request.tools)
        constrained = prompted and mode == "constrained"
        window = self.context_window(request, model)
        system = (
            _with_convention(request, constrained=constrained)
            if prompted
            else request.system_prompt
        )

        def wire(history: Sequence[ConversationMessage]) -> list[dict[str, Any]]:
            return [
                {"role": "system", "content": system},
                *history_messages(history, prompted=prompted),
            ]

        messages = wire(request.history)
        append_user(messages, request.prompt)
        tools = (
            []
            if prompted
            else [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.input_schema,
                    },
                }
                for tool in request.tools
            ]
        )
        known = {tool.name for tool in request.tools}
        size = RequestSize()
        retrying = False  # after a context overflow: this round trip was condensed once
        round_trips = 0
        # replies in a row whose written calls were all unusable in the same way
        malformed, last_problems = 0, list[str]()
        early: list[str] = []  # developer messages delivered before the first reply
        while True:
            for text in request.take_developer_messages():
                append_user(messages, text)
                if not round_trips:
                    early.append(text)
                yield PromptEvent(text)
            if request.stop_requested:
                return
            if round_trips >= request.max_turns:
                raise turn_limit_reached(request.phase, request.max_turns)
            used = size.of(messages, tools)
            if request.condense is not None and not retrying and nearly_full(used, window):
                condensed = await request.condense(
                    reason=f"The conversation nears the context window ({used} of {window} tokens)",
                    context_window=window,
                )
                if condensed is not None:
                    messages, size = wire(condensed), RequestSize()
            round_trips += 1
            try:
                schema = None
                if constrained:  # a tool the agent was told to stop repeating is withdrawn
                    offered = [
                        t for t in request.tools if t.name not in request.signals.discouraged_tools
                    ]
                    schema = call_schema(offered)
                reply = await self._round_trip(request, model, messages, tools, schema)
            except ContextOverflow:
                condensed = await request.condense_after_overflow(
                    "The provider refused the conversation as too long", window, retrying=retrying
                )
                if condensed is None:
                    raise
                messages, size, retrying = wire(condensed), RequestSize(), True
                continue
            except _ToolsUnsupported:
                if mode != "auto" or prompted or round_trips > 1:
                    raise
                # `auto` on a server (or model) without tool calling: prompted from now on.
                self._refused_tools.add(model)
                prompted, system, tools, size = True, _with_convention(request), [], RequestSize()
                said = [request.prompt, *early]
                messages = wire(
                    [*request.history, *(ConversationMessage(role="user", content=t) for t in said)]
                )
                round_trips = 0
                continue
            retrying = False
            if reply is None:  # interrupted (cancel, pause)
                return
            if reply.reasoning:
                yield ThinkingEvent(reply.reasoning)
            parsed = None
            if constrained:
                parsed = read_constrained(reply.text, known)
            elif not reply.calls and mode != "native" and known and reply.text:
                parsed = parse_calls(reply.text, known, strict=prompted)
            written = parsed.calls if parsed is not None else []
            shown = parsed.text if parsed is not None else reply.text
            if shown:
                yield TextEvent(shown)
            cached = min(reply.cached_tokens, reply.prompt_tokens)
            uncached = reply.prompt_tokens - cached
            priced = reply.model if pricing.lookup(PROVIDER, reply.model or "") else model
            yield UsageEvent(
                input_tokens=uncached,
                output_tokens=reply.completion_tokens,
                cache_read_input_tokens=cached,
                cost_usd=round_trip_cost(priced, uncached, cached, reply.completion_tokens),
                model=model,
                turns=1,
            )
            messages.append(reply.message())
            size = RequestSize(reply.prompt_tokens + reply.completion_tokens, len(messages))
            if written:
                # Calls written as text: run in order, answered in one user message (a
                # server without tool calling refuses `role: tool`).
                problems = [c.problem for c in written if c.problem is not None]
                if len(problems) == len(written):
                    malformed = malformed + 1 if problems == last_problems else 1
                    last_problems = problems
                    if malformed >= MALFORMED_LIMIT:
                        raise ExecutorError(
                            f"The model wrote the same malformed tool call {malformed} times "
                            f"in a row in phase {request.phase}: {problems[-1]}",
                            escalate=True,
                        )
                else:
                    malformed, last_problems = 0, []
                results: list[tuple[str, str, bool]] = []
                for written_call in written:
                    if request.stop_requested:
                        return
                    if written_call.problem is not None:
                        results.append((written_call.name, written_call.problem, True))
                        continue
                    result = await request.call_tool(
                        written_call.name, written_call.arguments, None
                    )
                    results.append((written_call.name, result.text(), result.is_error))
                answer = results_text(results)
                if constrained:  # small models repeat a call unless reminded of the way out
                    answer += f"\n\n{CONSTRAINED_NEXT}"
                messages.append({"role": "user", "content": answer})
                continue
            # Tool calls continue the loop whatever `finish_reason` says: some compatible
            # servers report "stop" for a message that calls tools.
            if not reply.calls:
                return
            for call in reply.calls:
                if request.stop_requested:
                    return
                arguments, problem = parse_arguments(call.arguments)
                if arguments is None:
                    messages.append(
                        tool_message(
                            call.id,
                            f"the arguments of {call.name} were not usable: {problem}. "
                            "Call the tool again with a JSON object matching its schema.",
                            True,
                        )
                    )
                    continue
                result = await request.call_tool(call.name, arguments, call.id)
                messages.append(tool_message(call.id, result.text(), result.is_error))

    async def _round_trip(
        self,
        request: PhaseRequest,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        response_schema: dict[str, Any] | None = None,
    ) -> Reply | None:
        """One streamed completion with bounded retries; None once interrupted."""
        attempt = 0
        while True:
            try:
                finished, reply = await _race(
                    self._stream_reply(
                        model, messages, tools, request.reasoning_effort, response_schema
                    ),
                    request.interrupt,
                )
                return reply if finished else None
            except Exception as exc:
                failure = self._failure(exc, model)
            if not isinstance(failure, _Transient):
                raise failure
            if attempt >= self.settings.max_retries:
                raise self._gave_up(failure, attempt)
            delay = self._backoff(attempt)
            attempt += 1
            if await wait_interruptible(request.interrupt, delay):
                return None

    async def _stream_reply(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        reasoning_effort: str | None,
        response_schema: dict[str, Any] | None = None,
    ) -> Reply:
        stream = await self._create_stream(
            model, messages, tools, self.settings.max_tokens, reasoning_effort, response_schema
        )
        accumulator = Accumulator()
        async with stream:
            async for chunk in stream:
                accumulator.add(chunk)
        return accumulator.finish()

    def _backoff(self, attempt: int) -> float:
        return float(min(self.retry_base_seconds * (2**attempt), MAX_BACKOFF_SECONDS))

    def _gave_up(self, failure: _Transient, retries: int) -> RateLimited:
        return RateLimited(
            f"{failure} (still failing after {retries} retr{'y' if retries == 1 else 'ies'})",
            retry_after=OVERLOADED_BACKOFF_SECONDS,
            provider=self.id,
            kind="overloaded",
        )

    def _failure(self, exc: Exception, model: str) -> Exception:
        """What a provider exception means: `_Transient` (retry), `RateLimited`, or an
        `ExecutorError` (escalating when only the developer can fix it)."""
        if isinstance(exc, ExecutorError):
            return exc
        if isinstance(exc, openai.APIConnectionError):  # includes timeouts
            what = "timed out" if isinstance(exc, openai.APITimeoutError) else "is unreachable"
            return _Transient(f"{self._who} {what}")
        if isinstance(exc, openai.APIStatusError):
            return self._status_failure(exc, model)
        if isinstance(exc, openai.APIError):  # an error event in the middle of a stream
            return _Transient(f"{self._who} reported an error mid-stream: {self._api_message(exc)}")
        if isinstance(exc, openai.OpenAIError):
            return ExecutorError(f"{self._who} request failed: {self._scrub(str(exc))}")
        raise exc

    def _api_message(self, exc: openai.APIError) -> str:
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message:
            message = exc.message
        return self._scrub(message.strip())

    def _status_failure(self, exc: openai.APIStatusError, model: str) -> Exception:
        status = exc.status_code
        code = exc.code or ""
        message = self._api_message(exc)
        if status == 401:
            return ExecutorError(
                f"{self._who} rejected the API key (401 {code or 'unauthorized'}). "
                f"Check {_CONFIG_PATH}.apiKey.",
                escalate=True,
            )
        if status == 403:
            return ExecutorError(
                f"{self._who} refused the request (403): {message}. Check that the API key "
                f"may use model {model!r}.",
                escalate=True,
            )
        if status == 404:
            if code == "model_not_found" or "model" in message.lower():
                return ExecutorError(
                    f"Model {model!r} was not found at {self._whom} (404): {message}. "
                    "Choose another model for the phase or the alias.",
                    escalate=True,
                )
            return ExecutorError(
                f"{self._who} has no chat completions route (404): {message}. Check "
                f"{_CONFIG_PATH}.baseUrl (it usually ends in /v1).",
                escalate=True,
            )
        if status == 429:
            if code == "insufficient_quota" or exc.type == "insufficient_quota":
                return ExecutorError(
                    f"{self._who} says the account is out of quota (429 insufficient_quota): "
                    f"{message}",
                    escalate=True,
                )
            return RateLimited(
                f"{self._who} rate limit (429): {message}",
                retry_after=_retry_after(exc.response.headers),
                provider=self.id,
            )
        if status in (400, 422, 500, 501) and _TOOLS_UNSUPPORTED.search(message):
            return _ToolsUnsupported(
                f"{self._who} refused the tools ({status}): {message}. Set toolCalling to "
                f'"prompted" on the model alias or in {_CONFIG_PATH}.',
                escalate=True,
            )
        if status in (400, 413, 422):
            if code == "context_length_exceeded" or _CONTEXT_OVERFLOW.search(message):
                return ContextOverflow(
                    f"The conversation is too long for model {model!r} "
                    f"({status} context_length_exceeded): {message}. Re-run the phase "
                    "with a fresh session or choose a model with a larger context window."
                )
            return ExecutorError(
                f"{self._who} rejected the request ({status}): {message}", escalate=True
            )
        if status in (408, 409) or status >= 500:
            return _Transient(f"{self._who} failed ({status}): {message}")
        return ExecutorError(f"{self._who} failed ({status}): {message}")

    # -- plan mode --

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        system: str,
        model: str | None,
        max_tokens: int,
    ) -> AsyncGenerator[ChatEvent, None]:
        """A plain streamed conversation (no tools): text deltas, then usage."""
        chosen = self._model(model)
        wire: list[dict[str, Any]] = [{"role": "system", "content": system}]
        for message in messages:
            if message.get("role") in ("user", "assistant") and message.get("content"):
                wire.append({"role": message["role"], "content": message["content"]})
        attempt = 0
        while True:  # retries only before the first token: nothing has been shown yet
            try:
                stream = await self._create_stream(chosen, wire, [], max_tokens)
                break
            except Exception as exc:
                failure = self._failure(exc, chosen)
            if not isinstance(failure, _Transient):
                raise failure
            if attempt >= self.settings.max_retries:
                raise self._gave_up(failure, attempt)
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1
        accumulator = Accumulator()
        try:
            async with stream:
                async for chunk in stream:
                    piece = accumulator.add(chunk)
                    if piece:
                        yield ChatDelta(piece)
        except Exception as exc:
            failure = self._failure(exc, chosen)
            if isinstance(failure, _Transient):
                raise ExecutorError(str(failure)) from None
            raise failure from None
        reply = accumulator.finish()
        yield ChatUsage(input_tokens=reply.prompt_tokens, output_tokens=reply.completion_tokens)

    # -- diagnostics --

    async def models(self) -> list[ModelInfo]:
        """The price catalogue for OpenAI; a compatible server's own `GET /models`
        (enriched from the catalogue where ids match). Never raises: an unreachable
        server yields the configured default model, if any."""
        if self.official:
            return [model.info() for model in pricing.models_for(PROVIDER)]
        try:
            page = await self._client.with_options(
                timeout=HEALTHCHECK_TIMEOUT_SECONDS
            ).models.list()
            ids = sorted({m.id async for m in page})
        except openai.OpenAIError:
            ids = [self.settings.default_model] if self.settings.default_model else []
        infos = []
        for model_id in ids:
            known = pricing.lookup(PROVIDER, model_id)
            infos.append(
                ModelInfo(
                    id=model_id,
                    display_name=known.display_name if known else model_id,
                    context_window=known.context_window if known else None,
                    pricing=known.pricing.as_dict() if known and known.pricing else None,
                )
            )
        return infos

    async def healthcheck(self) -> Health:
        """A real, cheap request (`GET /models`) with a readable verdict."""
        started = time.monotonic()
        try:
            page = await self._client.with_options(
                timeout=HEALTHCHECK_TIMEOUT_SECONDS
            ).models.list()
            count = len([m async for m in page])
        except openai.APIStatusError as exc:
            latency = (time.monotonic() - started) * 1000
            if exc.status_code == 401:
                message = f"{self._who} rejected the API key (401). Check {_CONFIG_PATH}.apiKey."
            elif exc.status_code == 403:
                message = f"{self._who} refused the API key (403): {self._api_message(exc)}"
            elif exc.status_code == 404:
                message = (
                    f"{self._who} has no /models route (404). Check {_CONFIG_PATH}.baseUrl "
                    "(it usually ends in /v1)."
                )
            else:
                message = f"{self._who} answered {exc.status_code}: {self._api_message(exc)}"
            return Health(ok=False, message=message, latency_ms=latency)
        except openai.APIConnectionError as exc:
            latency = (time.monotonic() - started) * 1000
            what = "timed out" if isinstance(exc, openai.APITimeoutError) else "is unreachable"
            return Health(
                ok=False,
                message=f"{self._who} {what}. Is the server running, and is baseUrl right?",
                latency_ms=latency,
            )
        except openai.OpenAIError as exc:
            latency = (time.monotonic() - started) * 1000
            return Health(
                ok=False, message=f"{self._who}: {self._scrub(str(exc))}", latency_ms=latency
            )
        latency = (time.monotonic() - started) * 1000
        where = "OpenAI API" if self.official else f"OpenAI-compatible endpoint {self.endpoint}"
        return Health(
            ok=True, message=f"{where} reachable; {count} models available", latency_ms=latency
        )


def _retry_after(headers: Any) -> float:
    """Seconds to wait from `retry-after-ms` / `retry-after` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            return max(float(raw_ms) / 1000, 0.0)
    seconds = parse_retry_after(headers.get("retry-after"), time.time())
    if seconds is not None:
        return max(seconds, 0.0)
    return RATE_LIMIT_FALLBACK_SECONDS
