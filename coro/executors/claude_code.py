"""The `claude-code` executor: a phase is a Claude Code session driven by `claude-agent-sdk`.

Each phase starts the Claude Code CLI (the one bundled with the SDK unless `cliPath`
says otherwise) as a streaming session with `cwd` = the job's directory, the phase's
system prompt and model, and Coro's tools served to it as an in-process SDK MCP server
named `coro`: the model sees `mcp__coro__<tool>` for every tool of `request.tools`, and
each call runs through `request.call_tool` — the one tool path shared by every executor,
which logs the call, enforces the phase's allow-list and records it in the transcript.

Tools. The session gets no Claude Code built-in at all (`tools=[]`): `Bash`, `Read`,
`Write`, `Edit`, `Glob`, `Grep`, `WebFetch` and the rest would run in the CLI's own
process, outside the shell sandbox, where `Read` could open `$CORO_HOME/config.json`
and `Bash` or `WebFetch` could reach the runner's API on 127.0.0.1. A phase's
capitalised allow-list entries stand for Coro's tools instead (`BUILTIN_ALIASES`:
`Bash`/`Bash(...)` → `shell`, `Read` → `file_read`, `Write` → `file_write`, `Edit` →
`file_edit`, `Glob` → `file_glob`, `Grep` → `file_grep`; the phase loop applies them),
which run sandboxed or confined to the job directory; other built-ins allow nothing.
Only Coro's tools are sent to the model (`tools`, `allowed_tools`, `strict_mcp_config`,
no settings files loaded), and a `PreToolUse` hook — which runs for every call, fails
closed, and also stops further calls once the phase is stopping — denies anything else.

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
after the CLI's own retries (`maxRetries`) → `RateLimited(kind="overloaded")`; a missing
CLI, one that cannot start or crashes → `ExecutorError` with the reason (and the tail of
its stderr). Every text that leaves this module is scrubbed of the API key.

Isolation: the CLI runs with telemetry, auto-updates, error reporting and other
non-essential traffic off, without tool search, auto-memory or background tasks, and —
when `apiKey` is configured — with its own config directory (`configDir`, default
`$CORO_HOME/claude-code`) so neither the developer's Claude Code settings nor their login
are touched. Without `apiKey` the CLI's usual credentials and config directory are used
(`ANTHROPIC_API_KEY` in the runner's environment or the developer's `claude` login).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
import warnings
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

from coro.config import CoroHome
from coro.domain.allowlist import BUILTIN_ALIASES, MCP_PREFIX
from coro.domain.errors import PluginConfigError
from coro.domain.models import ConversationMessage
from coro.executors import pricing
from coro.executors.base import (
    ExecutorError,
    ExecutorEvent,
    Health,
    ModelInfo,
    PhaseRequest,
    PromptEvent,
    RateLimited,
    SessionEvent,
    TextEvent,
    ThinkingEvent,
    UsageEvent,
)
from coro.executors.common import parse_settings
from coro.plugins.http import Scrubber, clamp_wait
from coro.tools.registry import Tool, ToolResult

if TYPE_CHECKING:
    from claude_agent_sdk import (
        ClaudeAgentOptions,
        ClaudeSDKClient,
        HookContext,
        HookInput,
        Message,
        PermissionResult,
        ResultMessage,
        SdkMcpTool,
        ToolPermissionContext,
    )
    from claude_agent_sdk.types import SyncHookJSONOutput

logger = logging.getLogger(__name__)

PROVIDER = "claude-code"
#: Claude Code runs Anthropic's models: prices and the model list come from that catalogue.
CATALOG_PROVIDER = "anthropic"
DEFAULT_MODEL = pricing.ANTHROPIC_DEFAULT_MODEL
SERVER_NAME = "coro"
INSTALL_HINT = "pip install 'coro-runner[claude-code]'"
CONFIG_PATH = "plugins.installed.claude-code.config"

#: How long an interrupted session may take to acknowledge and report its last usage.
INTERRUPT_GRACE_SECONDS = 5.0
CLI_VERSION_TIMEOUT_SECONDS = 30.0
HEALTHCHECK_TIMEOUT_SECONDS = 15.0
#: A rate limit the CLI reported without a reset time.
RATE_LIMIT_FALLBACK_SECONDS = 60.0
#: How long a job parks when the API stayed overloaded through the CLI's retries.
OVERLOADED_PARK_SECONDS = 30.0
#: Characters of the earlier transcript handed to a fresh session (the newest part).
TRANSCRIPT_LIMIT_CHARS = 60_000
TRANSCRIPT_RESULT_CHARS = 2_000
STDERR_TAIL_LINES = 20

#: The CLI's environment for an unattended, quiet, self-contained session.
QUIET_ENV: dict[str, str] = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    # Coro's tools are the point of the session: always send their definitions rather
    # than deferring them behind a tool-search tool.
    "ENABLE_TOOL_SEARCH": "false",
    "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",
    "CLAUDE_CODE_DISABLE_BACKGROUND_TASKS": "1",
}

_KEY_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_\-]{4,}")
_SYNTHETIC_MODEL = "<synthetic>"
#: How the SDK words "the CLI process is gone" when it notices on a write.
_DIED = re.compile(r"terminated process|exited|process stdin|exit code", re.IGNORECASE)

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


def create(settings: dict[str, Any]) -> ClaudeCodeExecutor:
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


# --- the tool policy --------------------------------------------------------------------


@dataclass(frozen=True)
class ToolPolicy:
    """What a phase's session may call: Coro's tools (by MCP name), never a Claude Code
    built-in (see the module docstring)."""

    phase: str
    coro_tools: tuple[str, ...]  # `mcp__coro__<name>`

    @classmethod
    def for_phase(cls, phase: str, tools: Sequence[Tool[Any]]) -> ToolPolicy:
        """`tools`: the phase's Coro tools, its allow-list already applied (built-in
        names included, as `BUILTIN_ALIASES`)."""
        return cls(phase, tuple(f"{MCP_PREFIX}{tool.name}" for tool in tools))

    @property
    def allowed_tools(self) -> list[str]:
        """Pre-approved tools: the session never stops to ask about them."""
        return list(self.coro_tools)

    def check(self, tool_name: str, tool_input: dict[str, Any]) -> str | None:
        """None if the call may go ahead, else why it may not (shown to the model)."""
        if tool_name in self.coro_tools:
            return None
        instead = BUILTIN_ALIASES.get(tool_name)
        if instead is not None and f"{MCP_PREFIX}{instead}" in self.coro_tools:
            return f"Tool {tool_name} is not available: use {MCP_PREFIX}{instead}"
        return f"Tool {tool_name} is not allowed in phase {self.phase}"


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


class _ToolCalls:
    """Runs the session's Coro tool calls through `request.call_tool`.

    A call runs to completion even when the session is torn down under it (the SDK
    cancels its handler; the call itself is shielded and awaited by the phase), and
    after a call that raised a phase signal the phase is told to stop.
    """

    def __init__(self, request: PhaseRequest, stop: asyncio.Event) -> None:
        self.request = request
        self.stop = stop
        self.running: set[asyncio.Future[ToolResult]] = set()

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        if self.request.stop_requested:
            self.stop.set()
            return ToolResult("This tool call was not run: the phase is stopping.", is_error=True)
        task = asyncio.ensure_future(self._run(name, arguments))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return await asyncio.shield(task)

    async def _run(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        try:
            result = await self.request.call_tool(name, arguments, None)
        except Exception as exc:  # a handler bug must not end the session
            logger.exception("claude-code: tool %s failed on job %s", name, self.request.job_id)
            result = ToolResult(f"Tool {name} failed: {type(exc).__name__}: {exc}", is_error=True)
        if self.request.stop_requested:
            self.stop.set()
        return result

    async def settle(self) -> None:
        """Wait for calls still running (their results are recorded by `call_tool`)."""
        while self.running:
            await asyncio.gather(*list(self.running), return_exceptions=True)


class ClaudeCodeExecutor:
    id = PROVIDER

    def __init__(self, settings: ClaudeCodeSettings, *, config_dir: Path | None = None) -> None:
        self.settings = settings
        self.config_dir = config_dir
        key = settings.api_key
        self._scrubber = Scrubber([key.get_secret_value()] if key is not None else [], min_length=1)

    def __repr__(self) -> str:
        return f"ClaudeCodeExecutor(base_url={self.settings.base_url!r})"

    async def aclose(self) -> None:
        """Nothing is pooled: each phase's session is closed by the phase that opened it."""

    def scrub(self, text: str) -> str:
        """`text` without the API key (nor anything shaped like an Anthropic key)."""
        return _KEY_PATTERN.sub("sk-ant-***", self._scrubber.scrub(text))

    # -- the CLI --

    def cli_path(self) -> str | None:
        """The Claude Code CLI to run: `cliPath`, else the SDK's bundled one, else `claude`
        on PATH (None: none found)."""
        if self.settings.cli_path is not None:
            return self.settings.cli_path
        return bundled_cli() or shutil.which("claude")

    def _require_cli(self) -> str:
        path = self.cli_path()
        if path is None:
            raise ExecutorError(
                "The Claude Code CLI was not found: claude-agent-sdk has no bundled CLI for "
                f"this platform and `claude` is not on PATH. Install Claude Code or set "
                f"{CONFIG_PATH}.cliPath.",
                escalate=True,
            )
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ExecutorError(
                f"The Claude Code CLI at {path} does not exist or is not executable. Check "
                f"{CONFIG_PATH}.cliPath.",
                escalate=True,
            )
        return path

    def cli_env(self) -> dict[str, str]:
        """Environment overrides for the CLI (merged over the runner's environment)."""
        env = dict(QUIET_ENV)
        env["CLAUDE_CODE_MAX_RETRIES"] = str(self.settings.max_retries)
        if self.settings.api_key is not None:
            env["ANTHROPIC_API_KEY"] = self.settings.api_key.get_secret_value()
            # The configured key wins over tokens inherited from the runner's environment.
            env["ANTHROPIC_AUTH_TOKEN"] = ""
            env["CLAUDE_CODE_OAUTH_TOKEN"] = ""
        if self.settings.base_url is not None:
            env["ANTHROPIC_BASE_URL"] = self.settings.base_url
        if self.config_dir is not None:
            env["CLAUDE_CONFIG_DIR"] = str(self.config_dir)
        return env

    def _claude_config_dir(self) -> Path:
        """Where the CLI keeps sessions for this executor."""
        if self.config_dir is not None:
            return self.config_dir
        inherited = os.environ.get("CLAUDE_CONFIG_DIR")
        return Path(inherited).expanduser() if inherited else Path.home() / ".claude"

    def resumable(self, request: PhaseRequest) -> str | None:
        """The job's Claude Code session, if its transcript is still there to resume."""
        session_id = request.session_id
        if not isinstance(session_id, str) or not re.fullmatch(
            r"[A-Za-z0-9_\-]{8,100}", session_id
        ):
            return None
        projects = self._claude_config_dir() / "projects"
        try:
            found = next(projects.glob(f"*/{session_id}.jsonl"), None)
        except OSError:
            found = None
        return session_id if found is not None else None

    # -- phases --

    async def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]:
        if request.stop_requested:
            return
        _import_sdk()
        import claude_agent_sdk as sdk

        cli = self._require_cli()
        model = request.model or self.settings.default_model
        policy = ToolPolicy.for_phase(request.phase, request.tools)
        resume = self.resumable(request)
        prompt = request.prompt if resume else with_transcript(request.history, request.prompt)
        stop = asyncio.Event()
        calls = _ToolCalls(request, stop)
        stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        if self.config_dir is not None:
            self.config_dir.mkdir(parents=True, exist_ok=True)
        options = self._options(request, policy, calls, stop, cli, model, resume, stderr)
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
        policy: ToolPolicy,
        calls: _ToolCalls,
        stop: asyncio.Event,
        cli: str,
        model: str,
        resume: str | None,
        stderr: deque[str],
    ) -> ClaudeAgentOptions:
        import claude_agent_sdk as sdk

        server = sdk.create_sdk_mcp_server(
            SERVER_NAME, tools=[_sdk_tool(tool, calls) for tool in request.tools]
        )
        cap = request.max_turns
        if self.settings.max_turns is not None:
            cap = min(cap, self.settings.max_turns)

        async def gate(
            data: HookInput, tool_use_id: str | None, context: HookContext
        ) -> SyncHookJSONOutput:
            fields = cast(dict[str, Any], data)
            name = str(fields.get("tool_name", ""))
            tool_input = fields.get("tool_input")
            try:
                if request.stop_requested:
                    stop.set()
                    reason: str | None = "The phase is stopping: no further tool calls."
                else:
                    reason = policy.check(name, tool_input if isinstance(tool_input, dict) else {})
            except Exception as exc:  # fail closed
                reason = f"Tool {name} could not be checked: {type(exc).__name__}"
            if reason is None:
                return {}
            logger.info("claude-code: denied %s in phase %s: %s", name, request.phase, reason)
            return {
                "hookSpecificOutput": {
                    "hookEventName": "PreToolUse",
                    "permissionDecision": "deny",
                    "permissionDecisionReason": reason,
                }
            }

        async def ask(
            tool_name: str, tool_input: dict[str, Any], context: ToolPermissionContext
        ) -> PermissionResult:
            # Only reached for calls the phase did not pre-approve: nobody is there to ask.
            return sdk.PermissionResultDeny(
                message=f"Tool {tool_name} is not allowed in phase {request.phase}"
            )

        def on_stderr(line: str) -> None:
            stderr.append(self.scrub(line))

        return sdk.ClaudeAgentOptions(
            tools=[],  # no built-in: they would run outside the sandbox
            allowed_tools=policy.allowed_tools,
            system_prompt={"type": "custom", "prompt": request.system_prompt, "snapshot": False},
            mcp_servers={SERVER_NAME: server},
            strict_mcp_config=True,
            permission_mode=self.settings.permission_mode,
            can_use_tool=ask,
            hooks={"PreToolUse": [sdk.HookMatcher(hooks=[gate], on_failure="block")]},
            resume=resume,
            max_turns=cap,
            model=model,
            cwd=str(request.workdir),
            cli_path=cli,
            env=self.cli_env(),
            setting_sources=[],
            stderr=on_stderr,
            client_app=f"coro/{_coro_version()}",
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
        calls: _ToolCalls,
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
        calls: _ToolCalls,
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
        model = turn.model
        if result.subtype == "error_max_turns":
            return ExecutorError(
                "Claude Code reached the phase's turn limit without finishing. Resume the job "
                "to let it continue, or split the phase.",
                escalate=True,
            )
        if result.subtype == "error_max_budget_usd":
            return ExecutorError(f"Claude Code stopped at its budget limit: {said}", escalate=True)
        if status == 429 or kind == "rate_limit":
            wait = RATE_LIMIT_FALLBACK_SECONDS
            if turn.rate_limit_reset is not None:
                wait = clamp_wait(turn.rate_limit_reset - time.time())
            return RateLimited(
                f"Anthropic rate limit ({label}) in Claude Code: {said}",
                retry_after=wait,
                provider=PROVIDER,
            )
        if (status is not None and status >= 500) or kind == "server_error":
            return RateLimited(
                f"Anthropic is overloaded or failing ({label}) — Claude Code gave up after "
                f"{self.settings.max_retries} retries: {said}",
                retry_after=OVERLOADED_PARK_SECONDS,
                provider=PROVIDER,
                kind="overloaded",
            )
        if status == 401 or kind == "authentication_failed":
            where = (
                f"Check {CONFIG_PATH}.apiKey."
                if self.settings.api_key is not None
                else f"Set {CONFIG_PATH}.apiKey or log in with the Claude Code CLI."
            )
            return ExecutorError(
                f"Claude Code could not authenticate with the Anthropic API ({label}): {said}. "
                + where,
                escalate=True,
            )
        if status == 403 or kind == "billing_error":
            return ExecutorError(
                f"The Anthropic API refused Claude Code's request ({label}): {said}. Check the "
                f"account's billing and that this key may use model {model}.",
                escalate=True,
            )
        if status == 404:
            return ExecutorError(
                f"The Anthropic API does not know the model {model!r} ({label}): {said}. Check "
                "the phase's model, the llm aliases or the plugin's defaultModel.",
                escalate=True,
            )
        if status is not None or kind == "invalid_request":
            return ExecutorError(
                f"The Anthropic API rejected Claude Code's request ({label}): {said}",
                escalate=True,
            )
        return ExecutorError(f"Claude Code failed ({label}): {said}")

    def _ended(self, end: _End, turn: _Turn, stderr: deque[str]) -> ExecutorError:
        if end.error is not None:
            return self._failure(end.error, stderr)
        return ExecutorError(
            "Claude Code ended the session before the phase finished" + _tail(stderr)
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
        if isinstance(exc, sdk.CLINotFoundError):
            return ExecutorError(
                f"The Claude Code CLI was not found: {detail}. Set {CONFIG_PATH}.cliPath or "
                f"reinstall: {INSTALL_HINT}",
                escalate=True,
            )
        exited = re.search(r"exit code:? ?(-?\d+)", detail)
        if isinstance(exc, sdk.ProcessError) or (
            isinstance(exc, sdk.CLIConnectionError) and _DIED.search(detail) is not None
        ):
            # The CLI died: which of the SDK's errors says so depends on who noticed first.
            number = getattr(exc, "exit_code", None)
            if number is None and exited is not None:
                number = int(exited.group(1))
            code = f" (exit code {number})" if number is not None else ""
            return ExecutorError(f"Claude Code exited unexpectedly{code}" + _tail(stderr))
        if isinstance(exc, sdk.CLIJSONDecodeError):
            return ExecutorError(f"Claude Code sent output that could not be read: {detail}")
        if isinstance(exc, sdk.CLIConnectionError):
            return ExecutorError(f"Could not run Claude Code: {detail}" + _tail(stderr))
        return ExecutorError(f"Claude Code failed: {type(exc).__name__}: {detail}" + _tail(stderr))

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
            _import_sdk()
            cli = self._require_cli()
        except ExecutorError as exc:
            return done(False, str(exc))
        version, problem = await self._cli_version(cli)
        if version is None:
            return done(False, problem)
        if self.settings.api_key is None:
            return done(
                True,
                f"Claude Code {version} is runnable ({cli}); no apiKey is configured, so it "
                "uses its own login or ANTHROPIC_API_KEY from the runner's environment",
            )
        where = _display_url(self.settings.base_url or "https://api.anthropic.com")
        refused = await self._check_key(where)
        if refused is not None:
            return done(False, f"Claude Code {version} is runnable, but {refused}")
        return done(
            True,
            f"Claude Code {version} is runnable ({cli}); the Anthropic API at {where} accepts "
            f"the API key (default model {self.settings.default_model})",
        )

    async def _cli_version(self, cli: str) -> tuple[str | None, str]:
        env = {**os.environ, **self.cli_env()}
        env.pop("CLAUDECODE", None)
        try:
            process = await asyncio.create_subprocess_exec(
                cli,
                "--version",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            return None, f"The Claude Code CLI at {cli} cannot be started: {self.scrub(str(exc))}"
        try:
            async with asyncio.timeout(CLI_VERSION_TIMEOUT_SECONDS):
                out, err = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return None, f"The Claude Code CLI at {cli} did not answer `--version`"
        text = self.scrub(out.decode(errors="replace").strip())
        if process.returncode != 0 or not text:
            said = self.scrub(err.decode(errors="replace").strip())[-500:]
            return None, (
                f"The Claude Code CLI at {cli} failed `--version` (exit code "
                f"{process.returncode}){': ' + said if said else ''}"
            )
        return text.splitlines()[0], ""

    async def _check_key(self, where: str) -> str | None:
        import anthropic
        import httpx2

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
            return self._key_problem(exc, where)
        return None

    def _key_problem(self, exc: Exception, where: str) -> str:
        import anthropic
        import httpx2

        if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
            cause = exc.__cause__ or exc.__context__
            detail = self.scrub(str(cause or exc)) or type(exc).__name__
            return f"the Anthropic API at {where} cannot be reached: {detail}"
        if isinstance(exc, anthropic.APIStatusError):
            said = self.scrub(exc.api_message or str(exc))
            if exc.status_code == 401:
                return (
                    f"the Anthropic API rejected the API key (401): {said}. "
                    f"Check {CONFIG_PATH}.apiKey."
                )
            if exc.status_code == 403:
                return f"the Anthropic API refused the API key (403): {said}"
            return f"the Anthropic API at {where} answered {exc.status_code}: {said}"
        return f"the Anthropic API check failed: {self.scrub(str(exc))}"


# --- helpers ------------------------------------------------------------------------------


def _import_sdk() -> None:
    """Check that claude-agent-sdk is importable (`ExecutorError` if not)."""
    try:
        import claude_agent_sdk
    except ImportError:
        raise ExecutorError(
            f"The claude-code executor needs the claude-agent-sdk package: {INSTALL_HINT}",
            escalate=True,
        ) from None
    # Our `can_use_tool` only denies what the allow-list did not pre-approve; that the
    # pre-approved tools never reach it is the point, not a mistake worth a warning.
    warnings.filterwarnings("ignore", category=claude_agent_sdk.CanUseToolShadowedWarning)


def bundled_cli() -> str | None:
    """The CLI shipped inside the claude-agent-sdk wheel, if any."""
    try:
        import claude_agent_sdk
    except ImportError:
        return None
    name = "claude.exe" if sys.platform == "win32" else "claude"
    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / name
    return str(path) if path.is_file() else None


def _sdk_tool(tool: Tool[Any], calls: _ToolCalls) -> SdkMcpTool[Any]:
    """A Coro tool as an SDK MCP tool whose handler runs it through `call_tool`."""
    import claude_agent_sdk as sdk

    schema = dict(tool.input_schema)
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})

    async def handler(arguments: dict[str, Any]) -> dict[str, Any]:
        result = await calls.call(tool.name, dict(arguments or {}))
        text = result.text()
        return {
            "content": [{"type": "text", "text": text if text.strip() else "(no output)"}],
            "is_error": result.is_error,
        }

    return sdk.tool(tool.name, tool.description, schema)(handler)


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
    client: ClaudeSDKClient, reader: asyncio.Task[None] | None, calls: _ToolCalls
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


def _tail(stderr: Iterable[str]) -> str:
    lines = [line for line in stderr if line.strip()]
    return (": " + " | ".join(lines[-5:])[-1000:]) if lines else ""


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _display_url(url: str) -> str:
    """A base URL without any credentials embedded in it."""
    return re.sub(r"//[^/@]*@", "//", url)


def _coro_version() -> str:
    from coro.version import __version__

    return __version__


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
