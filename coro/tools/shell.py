"""The `shell` tool: `bash -c` in the job directory, sandboxed, with a timeout and caps.

The command runs inside bubblewrap (see `coro.tools.sandbox`: the job directory is the
only writable place, the runner's files and the user's secrets are not there, and there
is no network unless the phase has `network: true`), unless config.json says
`tools.shell.sandbox: "off"`.

The command runs in its own session (and so its own process group): a timeout, or the
cancellation of the task running the tool, kills the whole group with SIGKILL, so no
background child outlives it (inside the sandbox, bwrap's death takes its whole PID
namespace with it). stdout and stderr are read to the end even past the cap (the excess
is discarded) so the child never blocks on a full pipe. Environment variables whose
names look secret are not passed on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import Field

from coro.system.process import command_env, exit_code, run_process
from coro.tools import sandbox
from coro.tools.files import job_root
from coro.tools.registry import ToolContext, ToolError, ToolInput, ToolRegistry


class ShellInput(ToolInput):
    command: str = Field(min_length=1, description="Command line, run with `bash -c`.")
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Kill the command after this many seconds (default and maximum are "
        "set by the runner).",
    )


async def run_shell(ctx: ToolContext, args: ShellInput) -> dict[str, Any]:
    timeout = ctx.shell_timeout_default if args.timeout_seconds is None else args.timeout_seconds
    if not timeout > 0:
        raise ToolError("timeoutSeconds must be greater than 0")
    timeout = min(timeout, ctx.shell_timeout_max)
    cwd = await asyncio.to_thread(job_root, ctx)
    try:
        launch = await sandbox.prepare(
            ctx.sandbox, cwd, ["bash", "-c", args.command], network=ctx.network
        )
    except sandbox.SandboxError as exc:
        raise ToolError(str(exc)) from None
    try:
        return await _run(ctx, args, launch, cwd, timeout)
    except sandbox.SandboxError as exc:
        raise ToolError(str(exc)) from None
    finally:
        await launch.aclose()


async def _run(
    ctx: ToolContext, args: ShellInput, launch: sandbox.Launch, cwd: Path, limit: float
) -> dict[str, Any]:
    try:
        result = await run_process(
            launch.argv,
            timeout_seconds=limit,
            cwd=cwd,
            env=command_env(),
            output_cap=ctx.output_cap_bytes,
            pass_fds=launch.pass_fds,
            on_spawned=launch.spawned,
            before_wait=launch.connect,
        )
    except OSError as exc:
        raise ToolError(f"could not start {launch.argv[0]}: {exc}") from exc
    if result.timed_out:
        await ctx.log(
            f"[shell] timed out after {limit:g}s, process group killed: {_brief(args.command)}"
        )
    return {
        "exitCode": exit_code(result.returncode),
        "stdout": result.stdout,
        "stderr": result.stderr,
        "timedOut": result.timed_out,
        "truncated": result.truncated,
    }


def _brief(command: str, limit: int = 200) -> str:
    line = " ".join(command.split())
    return line if len(line) <= limit else line[:limit] + "…"


def register(registry: ToolRegistry) -> None:
    @registry.tool(
        "shell",
        "Run a command with `bash -c` in the job directory (stdin is empty). Returns "
        "{exitCode, stdout, stderr, timedOut, truncated}; a non-zero exit is a normal "
        "result. On timeout the command and all its child processes are killed. Output "
        "beyond the cap is dropped (`truncated`): redirect long output to a file and read "
        "parts of it. Background processes must redirect their output (`cmd > log 2>&1 &`) "
        "or the call waits for them.",
    )
    async def shell(ctx: ToolContext, args: ShellInput) -> Any:
        return await run_shell(ctx, args)
