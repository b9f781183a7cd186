"""The tools of a `claude-code` session: Coro's, and never a Claude Code built-in.

Coro's tools are served to the session as an in-process SDK MCP server named `coro`:
the model sees `mcp__coro__<tool>` for every tool of `request.tools`, and each call runs
through `request.call_tool` — the one tool path shared by every executor, which logs the
call, enforces the phase's allow-list and records it in the transcript.

The session gets no Claude Code built-in at all (`tools=[]`): `Bash`, `Read`, `Write`,
`Edit`, `Glob`, `Grep`, `WebFetch` and the rest would run in the CLI's own process,
outside the shell sandbox, where `Read` could open `$CORO_HOME/config.json` and `Bash`
or `WebFetch` could reach the runner's API on 127.0.0.1. A phase's capitalised
allow-list entries stand for Coro's tools instead (`BUILTIN_ALIASES`: `Bash`/`Bash(...)`
→ `shell`, `Read` → `file_read`, `Write` → `file_write`, `Edit` → `file_edit`, `Glob` →
`file_glob`, `Grep` → `file_grep`; the phase loop applies them), which run sandboxed or
confined to the job directory; other built-ins allow nothing. Only Coro's tools are sent
to the model (`tools`, `allowed_tools`, `strict_mcp_config`, no settings files loaded),
and a `PreToolUse` hook — which runs for every call, fails closed, and also stops further
calls once the phase is stopping — denies anything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from coro.domain.allowlist import BUILTIN_ALIASES, MCP_PREFIX
from coro.executors.base import PhaseRequest
from coro.tools.registry import Tool, ToolResult

if TYPE_CHECKING:  # claude-agent-sdk is an optional extra: imported where it is used
    from claude_agent_sdk import (
        CanUseTool,
        HookContext,
        HookInput,
        HookMatcher,
        McpServerConfig,
        PermissionResult,
        SdkMcpTool,
        ToolPermissionContext,
    )
    from claude_agent_sdk.types import HookEvent, SyncHookJSONOutput

logger = logging.getLogger(__name__)

SERVER_NAME = "coro"


@dataclass(frozen=True)
class ToolPolicy:
    """What a phase's session may call: Coro's tools (by MCP name), never a Claude Code
    built-in."""

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


class ToolCalls:
    """Runs the session's Coro tool calls through `request.call_tool`.

    A call runs to completion even when the session is torn down under it (the SDK
    cancels its handler; the call itself is shielded and awaited by the phase), and
    after a call that raised a phase signal the phase is told to stop (`stop`).
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


@dataclass(frozen=True)
class SessionTools:
    """The tool options of one phase's `ClaudeAgentOptions` (with `tools=[]` and
    `strict_mcp_config=True`: no built-in, no other MCP server)."""

    allowed_tools: list[str]
    mcp_servers: dict[str, McpServerConfig]
    can_use_tool: CanUseTool
    hooks: dict[HookEvent, list[HookMatcher]]


def session_tools(request: PhaseRequest, calls: ToolCalls) -> SessionTools:
    """The `coro` MCP server with the phase's tools, pre-approved, and the `PreToolUse`
    gate that denies everything else."""
    import claude_agent_sdk as sdk

    policy = ToolPolicy.for_phase(request.phase, request.tools)
    server = sdk.create_sdk_mcp_server(
        SERVER_NAME, tools=[_sdk_tool(tool, calls) for tool in request.tools]
    )

    async def gate(
        data: HookInput, tool_use_id: str | None, context: HookContext
    ) -> SyncHookJSONOutput:
        fields = cast(dict[str, Any], data)
        name = str(fields.get("tool_name", ""))
        tool_input = fields.get("tool_input")
        try:
            if request.stop_requested:
                calls.stop.set()
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

    return SessionTools(
        allowed_tools=policy.allowed_tools,
        mcp_servers={SERVER_NAME: server},
        can_use_tool=ask,
        hooks={"PreToolUse": [sdk.HookMatcher(hooks=[gate], on_failure="block")]},
    )


def _sdk_tool(tool: Tool[Any], calls: ToolCalls) -> SdkMcpTool[Any]:
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
