"""The `claude-code` executor: a phase is a Claude Code session driven by `claude-agent-sdk`.

Each phase starts the Claude Code CLI (the one bundled with the SDK unless `cliPath`
says otherwise) as a streaming session with `cwd` = the job's directory, the phase's
system prompt and model. Its tools are Coro's, served as an in-process MCP server, and
never a Claude Code built-in (`coro.executors.claude_code_tools`).

Conversation. When the job carries a Claude Code session id (`request.session_id`, the
one this executor reported with a `SessionEvent`) and that session's transcript is in
the CLI's config directory, the session is resumed: Claude Code replays its exact
conversation, tool calls and prompt cache. Otherwise (a new job, a session cleared by
`request_new_session`, a job that ran under another executor, a lost config directory)
a fresh session starts and the job's provider-neutral transcript is given to it as a
summary ahead of the prompt, so finished tool calls are not repeated.

Developer messages are written into the live session as soon as they are seen (Claude
Code takes them in between model calls); the phase ends once every prompt sent has been
answered by a result. `request.interrupt` and phase signals (`goto_phase`, `await_event`,
`escalate`) interrupt the session after any tool call in flight has finished.

Errors: a rejected key, billing or permission problems, an unknown model, a request too
large → `ExecutorError(escalate=True)`; rate limits → `RateLimited`; overloaded / 5xx
after the CLI's own retries (`maxRetries`) → `RateLimited(kind="overloaded")` (the API's
errors are classified by `coro.executors.anthropic_errors`, as for `anthropic`); a missing
CLI, one that cannot start or crashes → `ExecutorError` with the reason (and the tail of
its stderr). Every text that leaves this module is scrubbed of the API key.

The CLI itself — which one, its environment and config directory — is
`coro.executors.claude_code_cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anthropic
import httpx2
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

from coro.config import CoroHome
from coro.domain.errors import PluginConfigError
from coro.domain.models import ConversationMessage
from coro.executors import pricing
from coro.executors.anthropic_errors import AnthropicErrors, KeyScrubber, classify
from coro.executors.base import (
    ExecutorError,
    ExecutorEvent,
    Health,
    ModelInfo,
    PhaseRequest,
    PromptEvent,
    SessionEvent,
    TextEvent,
    ThinkingEvent,
    UsageEvent,
)
from coro.executors.claude_code_cli import (
    CONFIG_PATH,
    INSTALL_HINT,
    ClaudeCodeCli,
    cli_failure,
    import_sdk,
    stderr_tail,
)
from coro.executors.claude_code_tools import ToolCalls, session_tools
from coro.executors.common import parse_settings
from coro.plugins.context import PluginContext
from coro.plugins.http import clamp_wait, display_url
from coro.version import __version__

if TYPE_CHECKING:
    from claude_agent_sdk import (
        ClaudeAgentOptions,
        ClaudeSDKClient,
        Message,
        ResultMessage,
    )

logger = logging.getLogger(__name__)

PROVIDER = "claude-code"
#: Claude Code runs Anthropic's models: prices and the model list come from that catalogue.
CATALOG_PROVIDER = "anthropic"
DEFAULT_MODEL = pricing.ANTHROPIC_DEFAULT_MODEL

#: How long an interrupted session may take to acknowledge and report its last usage.
INTERRUPT_GRACE_SECONDS = 5.0
HEALTHCHECK_TIMEOUT_SECONDS = 15.0
#: A rate limit the CLI reported without a reset time.
RATE_LIMIT_FALLBACK_SECONDS = 60.0
#: Characters of the earlier transcript handed to a fresh session (the newest part).
TRANSCRIPT_LIMIT_CHARS = 60_000
TRANSCRIPT_RESULT_CHARS = 2_000
STDERR_TAIL_LINES = 20

_SYNTHETIC_MODEL = "<synthetic>"

PermissionModeSetting = Literal["dontAsk", "acceptEdits", "default", "bypassPermissions"]


# --- settings -------------------------------------------------------------------------


class ClaudeCodeSettings(BaseModel):
    """`plugins.installed.claude-code.config` (camelCase in config.json)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    #: Optional: without it the CLI uses its own credentials (see the module docstring).
    api_key: SecretStr | None = None
    base_url: str | None = None
    default_model: str = Field(default=DEFAULT_MODEL, min_length=1)
    max_turns: int | None = Field(default=None, ge=1, le=10_000)
    cli_path: str | None = None
    #: `dontAsk`: never prompt, deny whatever the phase did not pre-approve.
    permission_mode: PermissionModeSetting = "dontAsk"
    #: Claude Code's config directory (sessions, settings); see the module docstring.
    config_dir: str | None = None
    #: The CLI's own retries of overloaded / rate-limited API calls.
    max_retries: int = Field(default=2, ge=0, le=10)

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        stripped = value.get_secret_value().strip()
        return SecretStr(stripped) if stripped else None  # blank: not configured

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("cli_path", "config_dir")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return str(Path(value.strip()).expanduser())


def create(settings: dict[str, Any], context: PluginContext | None = None) -> ClaudeCodeExecutor:
    """The executor for `plugins.installed.claude-code.config`; `PluginConfigError` names
    the failing field, never its value."""
    try:
        import claude_agent_sdk  # noqa: F401
    except ImportError:
        raise PluginConfigError(
            f"The claude-code executor needs the claude-agent-sdk package: {INSTALL_HINT}"
        ) from None
    parsed = parse_settings(ClaudeCodeSettings, settings)
    config_dir: Path | None = None
    if parsed.config_dir is not None:
        config_dir = Path(parsed.config_dir)
    elif parsed.api_key is not None:
        config_dir = CoroHome.from_env().root / "claude-code"
    return ClaudeCodeExecutor(parsed, config_dir=config_dir)


# --- the executor ---------------------------------------------------------------------


@dataclass
class _Turn:
    """What one phase's session has reported so far."""

    model: str
    session_id: str | None = None
    session_reported: bool = False
    pending: set[str] = field(default_factory=set)  # uuids of prompts not yet answered
    cost_seen: float | None = 0.0  # the CLI's running total (None: unknown baseline)
    answering_model: str | None = None
    error_kind: str | None = None  # `AssistantMessage.error` of the latest message
    rate_limit_reset: float | None = None  # unix time the CLI said the limit resets


class _End:
    """The CLI's message stream ended (normally or with `error`)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class ClaudeCodeExecutor:
    id = PROVIDER

    def __init__(self, settings: ClaudeCodeSettings, *, config_dir: Path | None = None) -> None:
        self.settings = settings
        self.cli = ClaudeCodeCli(
            configured_path=settings.cli_path,
            api_key=settings.api_key,
            base_url=settings.base_url,
            max_retries=settings.max_retries,
            config_dir=config_dir,
        )
        key = settings.api_key
        self._scrub = KeyScrubber(key.get_secret_value() if key is not None else None)
        self._errors = AnthropicErrors(
            provider=PROVIDER,
            key_rejected="Claude Code could not authenticate with the Anthropic API",
            key_hint=(
                f"Check {CONFIG_PATH}.apiKey."
                if key is not None
                else f"Set {CONFIG_PATH}.apiKey or log in with the Claude Code CLI."
            ),
        )

    def __repr__(self) -> str:
        return f"ClaudeCodeExecutor(base_url={self.settings.base_url!r})"

    async def aclose(self) -> None:
        """Nothing is pooled: each phase's session is closed by the phase that opened it."""

    def scrub(self, text: str) -> str:
        """`text` without the API key (nor anything shaped like an Anthropic key)."""
        return self._scrub(text)

    # -- phases --

    async def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]:
        if request.stop_requested:
            return
        import_sdk()
        import claude_agent_sdk as sdk

        cli = self.cli.require()
        model = request.model or self.settings.default_model
        resume = await self.cli.resumable(request.session_id)
        prompt = request.prompt if resume else with_transcript(request.history, request.prompt)
        stop = asyncio.Event()
        calls = ToolCalls(request, stop)
        stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        if self.cli.config_dir is not None:
            await asyncio.to_thread(self.cli.config_dir.mkdir, parents=True, exist_ok=True)
        options = self._options(request, calls, cli, model, resume, stderr)
        turn = _Turn(model=model, cost_seen=None if resume else 0.0)
        client = sdk.ClaudeSDKClient(options)
        inbox: asyncio.Queue[Message | _End] = asyncio.Queue()
        reader: asyncio.Task[None] | None = None
        try:
            try:
                await client.connect()
                reader = asyncio.create_task(_read(client, inbox), name="claude-code-reader")
                await self._send(client, prompt, turn)
            except Exception as exc:
                raise self._failure(exc, stderr) from None
            async for event in self._converse(client, request, inbox, stop, calls, turn, stderr):
                yield event
        finally:
            # Shielded: a cancelled phase (runner shutdown) still closes its CLI process.
            await asyncio.shield(asyncio.ensure_future(_close(client, reader, calls)))

    def _options(
        self,
        request: PhaseRequest,
        calls: ToolCalls,
        cli: str,
        model: str,
        resume: str | None,
        stderr: deque[str],
    ) -> ClaudeAgentOptions:
        import claude_agent_sdk as sdk

        tools = session_tools(request, calls)
        cap = request.max_turns
        if self.settings.max_turns is not None:
            cap = min(cap, self.settings.max_turns)

        def on_stderr(line: str) -> None:
            stderr.append(self.scrub(line))

        return sdk.ClaudeAgentOptions(
            tools=[],  # no built-in: they would run outside the sandbox
            allowed_tools=tools.allowed_tools,
            system_prompt={"type": "custom", "prompt": request.system_prompt, "snapshot": False},
            mcp_servers=tools.mcp_servers,
            strict_mcp_config=True,
            permission_mode=self.settings.permission_mode,
            can_use_tool=tools.can_use_tool,
            hooks=tools.hooks,
            resume=resume,
            max_turns=cap,
            model=model,
            cwd=str(request.workdir),
            cli_path=cli,
            env=self.cli.env(),
            setting_sources=[],
            stderr=on_stderr,
            client_app=f"coro/{__version__}",
        )

    async def _send(self, client: ClaudeSDKClient, text: str, turn: _Turn) -> None:
        """Write a user message into the session; its uuid stays pending until a result
        says the session took it in."""
        message_id = str(uuid.uuid4())
        turn.pending.add(message_id)

        async def one() -> AsyncIterator[dict[str, Any]]:
            yield {
                "type": "user",
                "message": {"role": "user", "content": text},
                "parent_tool_use_id": None,
                "uuid": message_id,
            }

        await client.query(one())

    async def _converse(
        self,
        client: ClaudeSDKClient,
        request: PhaseRequest,
        inbox: asyncio.Queue[Message | _End],
        stop: asyncio.Event,
        calls: ToolCalls,
        turn: _Turn,
        stderr: deque[str],
    ) -> AsyncGenerator[ExecutorEvent, None]:
        import claude_agent_sdk as sdk

        interrupted = asyncio.ensure_future(request.interrupt.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while True:
                if interrupted.done() or stopped.done() or request.stop_requested:
                    last = await self._wind_down(client, inbox, calls, turn)
                    if last is not None:
                        yield self._usage(last, turn)
                    return
                getter = asyncio.ensure_future(inbox.get())
                await asyncio.wait(
                    {getter, interrupted, stopped}, return_when=asyncio.FIRST_COMPLETED
                )
                if not getter.done():
                    getter.cancel()
                    await asyncio.gather(getter, return_exceptions=True)
                    continue  # stopping: see the top of the loop
                message = getter.result()
                if isinstance(message, _End):
                    raise self._ended(message, turn, stderr)
                for event in self._events(message, turn):
                    yield event
                if isinstance(message, sdk.ResultMessage):
                    yield self._usage(message, turn)
                    if message.is_error and not _aborted(message):
                        raise self._result_failure(message, turn)
                    _answered(message, turn)
                if request.stop_requested:
                    continue  # wind down at the top of the loop
                for text in request.take_developer_messages():
                    try:
                        await self._send(client, text, turn)
                    except Exception as exc:
                        raise self._failure(exc, stderr) from None
                    yield PromptEvent(text)
                if isinstance(message, sdk.ResultMessage) and not turn.pending:
                    return
        finally:
            for waiter in (interrupted, stopped):
                waiter.cancel()
            await asyncio.gather(interrupted, stopped, return_exceptions=True)

    async def _wind_down(
        self,
        client: ClaudeSDKClient,
        inbox: asyncio.Queue[Message | _End],
        calls: ToolCalls,
        turn: _Turn,
    ) -> ResultMessage | None:
        """The phase is stopping: let a running tool call finish, interrupt the session,
        and return the interrupted turn's result if the CLI reports it in time."""
        import claude_agent_sdk as sdk

        await calls.settle()
        if not turn.pending:
            return None
        try:
            async with asyncio.timeout(INTERRUPT_GRACE_SECONDS):
                await client.interrupt()
                while True:
                    message = await inbox.get()
                    if isinstance(message, _End):
                        return None
                    if isinstance(message, sdk.ResultMessage):
                        return message
        except Exception as exc:  # the session is being abandoned anyway
            logger.debug("claude-code: interrupt not acknowledged: %s", self.scrub(str(exc)))
        return None

    def _events(self, message: Message, turn: _Turn) -> list[ExecutorEvent]:
        import claude_agent_sdk as sdk

        events: list[ExecutorEvent] = []
        session_id: str | None = None
        if isinstance(message, sdk.SystemMessage) and message.subtype == "init":
            raw = message.data.get("session_id")
            session_id = raw if isinstance(raw, str) else None
        elif isinstance(message, sdk.AssistantMessage):
            session_id = message.session_id
            if message.parent_tool_use_id is None:
                turn.error_kind = message.error
                if message.model and message.model != _SYNTHETIC_MODEL:
                    turn.answering_model = message.model
                if message.error is None:
                    for block in message.content:
                        if isinstance(block, sdk.TextBlock) and block.text.strip():
                            events.append(TextEvent(self.scrub(block.text)))
                        elif isinstance(block, sdk.ThinkingBlock) and block.thinking.strip():
                            events.append(ThinkingEvent(self.scrub(block.thinking)))
        elif isinstance(message, sdk.ResultMessage):
            session_id = message.session_id
        elif isinstance(message, sdk.RateLimitEvent):
            info = message.rate_limit_info
            if info.status == "rejected" and info.resets_at:
                turn.rate_limit_reset = float(info.resets_at)
        if session_id and session_id != turn.session_id:
            turn.session_id = session_id
            turn.session_reported = False
        if turn.session_id and not turn.session_reported:
            turn.session_reported = True
            events.insert(0, SessionEvent(turn.session_id))
        return events

    def _usage(self, result: ResultMessage, turn: _Turn) -> UsageEvent:
        """The tokens the CLI reported for this turn; the cost from Coro's price catalogue
        (as the `anthropic` executor prices), else from the CLI's running total."""
        usage = result.usage or {}
        counts = {
            "input_tokens": _int(usage.get("input_tokens")),
            "output_tokens": _int(usage.get("output_tokens")),
            "cache_read_input_tokens": _int(usage.get("cache_read_input_tokens")),
            "cache_creation_input_tokens": _int(usage.get("cache_creation_input_tokens")),
        }
        model = turn.answering_model or turn.model
        total = result.total_cost_usd
        if pricing.lookup(CATALOG_PROVIDER, model) is not None:
            cost = pricing.cost_usd(CATALOG_PROVIDER, model, **counts)
        elif total is not None and turn.cost_seen is not None:
            cost = max(float(total) - turn.cost_seen, 0.0)
        else:
            cost = 0.0  # a resumed session's running total starts from an unknown base
        if total is not None:
            turn.cost_seen = float(total)
        return UsageEvent(**counts, cost_usd=cost, model=model, turns=result.num_turns or 0)

    # -- errors --

    def _result_failure(self, result: ResultMessage, turn: _Turn) -> ExecutorError:
        status = result.api_error_status
        kind = turn.error_kind or ""
        said = self.scrub(_result_text(result))
        label = f"{status}" if status else (kind or result.subtype)
        if result.subtype == "error_max_turns":
            return ExecutorError(
                "Claude Code reached the phase's turn limit without finishing. Resume the job "
                "to let it continue, or split the phase.",
                escalate=True,
            )
        if result.subtype == "error_max_budget_usd":
            return ExecutorError(f"Claude Code stopped at its budget limit: {said}", escalate=True)
        problem = classify(status, kind, said)
        if problem is None:
            return ExecutorError(f"Claude Code failed ({label}): {said}")
        wait = RATE_LIMIT_FALLBACK_SECONDS
        if turn.rate_limit_reset is not None:
            wait = clamp_wait(turn.rate_limit_reset - time.time())
        return self._errors.error(
            problem,
            self._errors.describe(problem, label=label, said=said, model=turn.model),
            wait=wait,
            gave_up=f"Claude Code gave up after {self.settings.max_retries} retries",
        )

    def _ended(self, end: _End, turn: _Turn, stderr: deque[str]) -> ExecutorError:
        if end.error is not None:
            return self._failure(end.error, stderr)
        return ExecutorError(
            "Claude Code ended the session before the phase finished" + stderr_tail(stderr)
        )

    def _failure(self, exc: BaseException, stderr: deque[str]) -> ExecutorError:
        """A readable `ExecutorError` for what the SDK or the CLI raised."""
        import claude_agent_sdk as sdk

        if isinstance(exc, ExecutorError):
            return exc
        detail = self.scrub(str(exc)).strip() or type(exc).__name__
        if isinstance(exc, sdk.ResultError):
            return self._result_failure(
                _result_from_error(exc), _Turn(model=self.settings.default_model)
            )
        return cli_failure(exc, detail, stderr)

    # -- catalogue and health --

    async def models(self) -> list[ModelInfo]:
        return [model.info() for model in pricing.models_for(CATALOG_PROVIDER)]

    async def healthcheck(self) -> Health:
        """The CLI runs (`--version`); with an `apiKey`, the key is accepted by a cheap
        API request (`GET /v1/models?limit=1`) against `baseUrl`."""
        started = time.monotonic()

        def done(ok: bool, message: str) -> Health:
            return Health(ok=ok, message=message, latency_ms=(time.monotonic() - started) * 1000)

        try:
            import_sdk()
            cli = self.cli.require()
        except ExecutorError as exc:
            return done(False, str(exc))
        version, problem = await self.cli.version(cli, self.scrub)
        if version is None:
            return done(False, problem)
        if self.settings.api_key is None:
            return done(
                True,
                f"Claude Code {version} is runnable ({cli}); no apiKey is configured, so it "
                "uses its own login or ANTHROPIC_API_KEY from the runner's environment",
            )
        where = display_url(self.settings.base_url or "https://api.anthropic.com")
        refused = await self._check_key(where)
        if refused is not None:
            return done(False, f"Claude Code {version} is runnable, but {refused}")
        return done(
            True,
            f"Claude Code {version} is runnable ({cli}); the Anthropic API at {where} accepts "
            f"the API key (default model {self.settings.default_model})",
        )

    async def _check_key(self, where: str) -> str | None:
        assert self.settings.api_key is not None
        try:
            async with anthropic.AsyncAnthropic(
                api_key=self.settings.api_key.get_secret_value(),
                base_url=self.settings.base_url,
                max_retries=0,
                timeout=HEALTHCHECK_TIMEOUT_SECONDS,
            ) as client:
                await client.models.list(limit=1)
        except (anthropic.APIError, httpx2.TransportError) as exc:
            return self._errors.key_check_problem(exc, where, self.scrub)
        return None


# --- helpers ------------------------------------------------------------------------------


async def _read(client: ClaudeSDKClient, inbox: asyncio.Queue[Message | _End]) -> None:
    """Move the CLI's messages into `inbox` (so waiting for one can be abandoned safely)."""
    try:
        async for message in client.receive_messages():
            inbox.put_nowait(message)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        inbox.put_nowait(_End(exc))
        return
    inbox.put_nowait(_End())


async def _close(
    client: ClaudeSDKClient, reader: asyncio.Task[None] | None, calls: ToolCalls
) -> None:
    """End the session: stop the CLI, then wait for tool calls that were still running."""
    with contextlib.suppress(Exception):
        await client.disconnect()
    if reader is not None:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    await calls.settle()


def _answered(result: ResultMessage, turn: _Turn) -> None:
    """Forget the prompts a result says its turn took in."""
    taken = set(result.user_message_uuids or [])
    if result.user_message_uuid:
        taken.add(result.user_message_uuid)
    if not taken and result.user_message_uuids is None:
        taken = set(turn.pending)  # a CLI that does not report them: assume all answered
    turn.pending -= taken


def _aborted(result: ResultMessage) -> bool:
    return (result.terminal_reason or "").startswith("aborted")


def _result_text(result: ResultMessage) -> str:
    errors = [e.strip() for e in (result.errors or []) if isinstance(e, str) and e.strip()]
    if errors:
        return "; ".join(errors)
    if result.result and result.result.strip():
        return result.result.strip()
    if result.subtype and result.subtype != "success":
        return result.subtype
    return (
        f"API error (HTTP {result.api_error_status})"
        if result.api_error_status
        else "unknown error"
    )


def _result_from_error(exc: Any) -> ResultMessage:
    """The result a `ResultError` carries, as a `ResultMessage`."""
    import claude_agent_sdk as sdk

    data: dict[str, Any] = exc.data if isinstance(getattr(exc, "data", None), dict) else {}
    return sdk.ResultMessage(
        subtype=str(data.get("subtype") or "error"),
        duration_ms=0,
        duration_api_ms=0,
        is_error=True,
        num_turns=_int(data.get("num_turns")),
        session_id=str(data.get("session_id") or ""),
        result=data.get("result") if isinstance(data.get("result"), str) else None,
        errors=[e for e in data.get("errors") or [] if isinstance(e, str)],
        api_error_status=exc.api_error_status,
        terminal_reason=exc.terminal_reason,
    )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def with_transcript(history: Sequence[ConversationMessage], prompt: str) -> str:
    """The prompt for a fresh session of a job that already has a conversation: the
    transcript so far (its newest part, if long), then the prompt."""
    entries: list[str] = []
    for entry in history:
        if entry.role == "user" and entry.content.strip():
            entries.append(f"[user]\n{entry.content.strip()}")
        elif entry.role == "assistant":
            if entry.content.strip():
                entries.append(f"[assistant]\n{entry.content.strip()}")
            for call in entry.tool_calls:
                arguments = json.dumps(call.input, ensure_ascii=False, default=str)
                entries.append(f"[assistant called {call.name}] {arguments}")
        elif entry.role == "tool":
            for result in entry.tool_results:
                label = "tool error" if result.is_error else "tool result"
                output = result.output
                if len(output) > TRANSCRIPT_RESULT_CHARS:
                    output = output[:TRANSCRIPT_RESULT_CHARS] + " …(cut)"
                entries.append(f"[{label}] {output}")
    if not entries:
        return prompt
    text = "\n\n".join(entries)
    if len(text) > TRANSCRIPT_LIMIT_CHARS:
        text = "…(earlier conversation omitted)\n\n" + text[-TRANSCRIPT_LIMIT_CHARS:]
    return (
        "<coro-transcript>\nThe conversation of this job so far, oldest first. Tool calls "
        "shown here have already run: do not repeat them.\n\n"
        f"{text}\n</coro-transcript>\n\n{prompt}"
    )
