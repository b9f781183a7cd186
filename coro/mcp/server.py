"""Coro's tool registry as an MCP server bound to one job (SPEC §4.6, `coro mcp`).

The tools listed are exactly the registry's: name, description and the JSON input
schema of `Tool.input_schema`. A call goes through `ToolRegistry.call` — the path every
executor uses — so input validation, the allow-list and error handling are the same:
a failed call is an `isError` result whose text is the message, a successful one is
the result as text (strings verbatim, anything else as JSON).

Each call runs against the job *as it is now*: its current phase, its working
directory `<work root>/<jobId>`, its workflow's phase names. Calls are logged to the
job's log (`[mcp] → <tool> <input>`), so a developer watching the job sees them.

Phase signals (`goto_phase`, `await_event`, `escalate`) are only acted on by the phase
loop of a running executor; through this server they are answered and logged, and the
job is left for its runner to steer.

Transports: stdio here (`serve_stdio`, used by `coro mcp --job <jobId>`), streamable
HTTP inside the runner (`coro.mcp.http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coro.config import ConfigError, CoroConfig, CoroHome
from coro.domain.workflows import WorkflowError
from coro.extensions import Extensions
from coro.intelligence.layers import IntelligenceLayers, WorkflowNotFound
from coro.plugins.context import PluginContext
from coro.plugins.registry import PluginResolutionError, PluginSet
from coro.state.backend import JobNotFound
from coro.state.store import JobStore
from coro.tools.registry import CampaignControl, ToolContext, ToolRegistry, ToolResult
from coro.tools.sandbox import SandboxPolicy, runner_policy
from coro.version import __version__

if TYPE_CHECKING:
    import mcp_types
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel.server import Server

logger = logging.getLogger(__name__)

SERVER_NAME = "coro"
#: Characters of a call's input shown in the job log.
LOG_PREVIEW = 500

#: Finds the `ToolContext` of a call from the SDK's request context (which carries
#: the HTTP request on streamable HTTP; nothing on stdio). Raises `JobNotFound`.
ContextResolver = Callable[["ServerRequestContext[Any, Any]"], Awaitable[ToolContext]]


class JobContexts:
    """Builds the `ToolContext` of a call made through MCP: the job as it is now."""

    def __init__(
        self,
        store: JobStore,
        work_root: Path,
        layers: IntelligenceLayers | None = None,
        plugins: PluginSet | None = None,
        sandbox: SandboxPolicy | None = None,
    ) -> None:
        self.store = store
        self.work_root = work_root
        self.layers = layers
        self.plugins = plugins
        #: how `shell` confines commands (MCP calls never get a phase's `network: true`)
        self.sandbox = sandbox if sandbox is not None else SandboxPolicy()
        #: the runner's campaign coordinator, when served by a runner
        self.campaigns: CampaignControl | None = None

    async def __call__(self, job_id: str) -> ToolContext:
        job = await self.store.get(job_id)  # JobNotFound for an unknown id
        phase_names = tuple(p.name for p in job.workflow_phases)
        if not phase_names and self.layers is not None:
            # A job whose phase loop has not started yet: ask its workflow.
            with contextlib.suppress(WorkflowError, WorkflowNotFound, ValueError, OSError):
                workflow = await asyncio.to_thread(self.layers.load_workflow, job.workflow_path)
                phase_names = workflow.phase_names
        workdir = self.work_root / job_id
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        return ToolContext(
            job_id=job_id,
            phase=job.phase,
            workdir=workdir,
            store=self.store,
            phase_names=phase_names,
            plugins=self.plugins,
            layers=self.layers,
            campaigns=self.campaigns,
            sandbox=self.sandbox,
        )


def build_server(
    registry: ToolRegistry,
    resolve: ContextResolver,
    *,
    allow_list: Sequence[str] | None = None,
    log_calls: bool = True,
    name: str = SERVER_NAME,
) -> Server[Any]:
    """A low-level MCP server whose tools are `registry`'s (those `allow_list` permits).

    `resolve` gives each call its `ToolContext` (the job it acts on). Reusable by any
    executor that wants to hand Coro's tools to an MCP-speaking agent.
    """
    import mcp_types as types
    from mcp.server.lowlevel.server import Server

    allowed = list(allow_list) if allow_list is not None else None

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools = sorted(registry.allowed(allowed), key=lambda t: t.name)
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
                for t in tools
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments: dict[str, Any] = dict(params.arguments or {})
        try:
            tool_ctx = await resolve(ctx)
        except JobNotFound as exc:
            return _result(ToolResult(str(exc), is_error=True))
        if log_calls:
            shown = json.dumps(arguments, ensure_ascii=False, default=str)
            await tool_ctx.log(f"[mcp] → {params.name} {_clip(shown, LOG_PREVIEW)}")
        try:
            result = await registry.call(params.name, arguments, tool_ctx, allowed)
        except Exception as exc:  # a handler bug must not end the session
            logger.exception("MCP call of %s on job %s failed", params.name, tool_ctx.job_id)
            result = ToolResult(f"Tool {params.name} failed: {type(exc).__name__}: {exc}", True)
        if log_calls:
            if result.is_error:
                await tool_ctx.log(f"[mcp] [tool-error] {params.name}: {_clip(result.text(), 500)}")
            if tool_ctx.signals.any:
                await tool_ctx.log(
                    f"[mcp] {params.name}: phase signals are acted on by the job's own "
                    "executor; this MCP session only recorded the call"
                )
        return _result(result)

    return Server(
        name,
        version=__version__,
        instructions=(
            "Coro's tools for one job: files and shell confined to the job's working "
            "directory, and job control (work items, artefacts, insights)."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _result(result: ToolResult) -> mcp_types.CallToolResult:
    import mcp_types as types

    return types.CallToolResult(
        content=[types.TextContent(type="text", text=result.text())], is_error=result.is_error
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


# --------------------------------------------------------------------------- stdio


def serve_stdio(job_id: str, allow_list: Iterable[str] | None = None) -> int:
    """`coro mcp --job <jobId>`: serve the job's tools on stdin/stdout until stdin closes.

    Opens the state backend of config.json (`state.url`; `$CORO_HOME/state.db` by
    default) itself: a runner may be using it too, and hears of the lines this
    process logs (its open streams show them). Problems go to stderr with exit status
    1; stdout carries nothing but the protocol.
    """
    home = CoroHome.from_env()
    try:
        config = home.load_config()
    except ConfigError as exc:
        _fail(str(exc))
        return 1
    allowed = list(allow_list) if allow_list is not None else None
    return asyncio.run(_serve_stdio(home, config, job_id, allowed))


async def _serve_stdio(
    home: CoroHome, config: CoroConfig, job_id: str, allow_list: list[str] | None
) -> int:
    extensions = Extensions(home)
    try:
        backend = extensions.state_backend(config)
    except (ValueError, PluginResolutionError) as exc:
        _fail(str(exc))
        return 1
    plugins: PluginSet | None = None
    # Nothing but the protocol may reach stdout, not even a migration's chatter.
    with contextlib.redirect_stdout(sys.stderr):
        await backend.open()
    try:
        if await backend.get_job(job_id) is None:
            _fail(f"unknown job {job_id!r} (CORO_HOME={home.root})")
            return 1
        store = JobStore(backend)
        context = PluginContext(home, prs=backend.prs)
        plugins = extensions.plugins(config, context)
        tools = ToolRegistry()
        extensions.tools(config, context, tools)  # the runner's: drop-ins' too
        contexts = JobContexts(
            store,
            home.work_dir(config),
            IntelligenceLayers(home.intelligence_dir(config)),
            plugins,
            runner_policy(home, config),
        )

        async def resolve(_ctx: ServerRequestContext[Any, Any]) -> ToolContext:
            return await contexts(job_id)

        from mcp.server.stdio import stdio_server

        server = build_server(tools, resolve, allow_list=allow_list)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
        return 0
    finally:
        if plugins is not None:
            await plugins.aclose()
        await backend.close()


def _fail(message: str) -> None:
    print(f"coro mcp: {message}", file=sys.stderr)
