"""The Claude Code CLI a `claude-code` executor runs: which one, its environment and
config directory, the sessions it keeps there, and its version.

Isolation: the CLI runs with telemetry, auto-updates, error reporting and other
non-essential traffic off, without tool search, auto-memory or background tasks, and —
when `apiKey` is configured — with its own config directory (`configDir`, default
`$CORO_HOME/claude-code`) so neither the developer's Claude Code settings nor their login
are touched. Without `apiKey` the CLI's usual credentials and config directory are used
(`ANTHROPIC_API_KEY` in the runner's environment or the developer's `claude` login).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from coro.executors.base import ExecutorError
from coro.system.process import run_process

INSTALL_HINT = "pip install 'coro-runner[claude-code]'"
CONFIG_PATH = "plugins.installed.claude-code.config"
VERSION_TIMEOUT_SECONDS = 30.0
VERSION_OUTPUT_BYTES = 64 * 1024

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

_SESSION_ID = re.compile(r"[A-Za-z0-9_\-]{8,100}")
#: How the SDK words "the CLI process is gone" when it notices on a write.
_DIED = re.compile(r"terminated process|exited|process stdin|exit code", re.IGNORECASE)


@dataclass(frozen=True)
class ClaudeCodeCli:
    #: `cliPath`: None for the SDK's bundled CLI, else `claude` on PATH
    configured_path: str | None
    api_key: SecretStr | None = field(repr=False)
    base_url: str | None
    #: the CLI's own retries of overloaded / rate-limited API calls
    max_retries: int
    #: None: the CLI's own config directory (and the developer's login)
    config_dir: Path | None

    def path(self) -> str | None:
        """The CLI to run: `cliPath`, else the SDK's bundled one, else `claude` on PATH
        (None: none found)."""
        if self.configured_path is not None:
            return self.configured_path
        return bundled_cli() or shutil.which("claude")

    def require(self) -> str:
        """The CLI's path, or an `ExecutorError` that says how to get one."""
        path = self.path()
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

    def env(self) -> dict[str, str]:
        """Environment overrides for the CLI (merged over the runner's environment)."""
        env = dict(QUIET_ENV)
        env["CLAUDE_CODE_MAX_RETRIES"] = str(self.max_retries)
        if self.api_key is not None:
            env["ANTHROPIC_API_KEY"] = self.api_key.get_secret_value()
            # The configured key wins over tokens inherited from the runner's environment.
            env["ANTHROPIC_AUTH_TOKEN"] = ""
            env["CLAUDE_CODE_OAUTH_TOKEN"] = ""
        if self.base_url is not None:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        if self.config_dir is not None:
            env["CLAUDE_CONFIG_DIR"] = str(self.config_dir)
        return env

    def sessions_home(self) -> Path:
        """The config directory the CLI keeps its sessions in."""
        if self.config_dir is not None:
            return self.config_dir
        inherited = os.environ.get("CLAUDE_CONFIG_DIR")
        return Path(inherited).expanduser() if inherited else Path.home() / ".claude"

    async def resumable(self, session_id: object) -> str | None:
        """`session_id`, if the CLI still has that session's transcript to resume."""
        if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            return None
        projects = self.sessions_home() / "projects"

        def find() -> Path | None:
            try:
                return next(projects.glob(f"*/{session_id}.jsonl"), None)
            except OSError:
                return None

        return session_id if await asyncio.to_thread(find) is not None else None

    async def version(self, path: str, scrub: Callable[[str], str]) -> tuple[str | None, str]:
        """What `<path> --version` says (None and why not, if it says nothing useful)."""
        env = {**os.environ, **self.env()}
        env.pop("CLAUDECODE", None)
        try:
            result = await run_process(
                [path, "--version"],
                timeout_seconds=VERSION_TIMEOUT_SECONDS,
                env=env,
                output_cap=VERSION_OUTPUT_BYTES,
            )
        except OSError as exc:
            return None, f"The Claude Code CLI at {path} cannot be started: {scrub(str(exc))}"
        if result.timed_out:
            return None, f"The Claude Code CLI at {path} did not answer `--version`"
        text = scrub(result.stdout.strip())
        if result.returncode != 0 or not text:
            said = scrub(result.stderr.strip())[-500:]
            return None, (
                f"The Claude Code CLI at {path} failed `--version` (exit code "
                f"{result.returncode}){': ' + said if said else ''}"
            )
        return text.splitlines()[0], ""


def cli_failure(exc: BaseException, detail: str, stderr: Iterable[str]) -> ExecutorError:
    """A readable `ExecutorError` for a failure of the CLI itself (not found, died,
    unreadable output), with the tail of its `stderr`; `detail`: `exc`'s scrubbed text."""
    import claude_agent_sdk as sdk

    if isinstance(exc, sdk.CLINotFoundError):
        return ExecutorError(
            f"The Claude Code CLI was not found: {detail}. Set {CONFIG_PATH}.cliPath or "
            f"reinstall: {INSTALL_HINT}",
            escalate=True,
        )
    tail = stderr_tail(stderr)
    exited = re.search(r"exit code:? ?(-?\d+)", detail)
    if isinstance(exc, sdk.ProcessError) or (
        isinstance(exc, sdk.CLIConnectionError) and _DIED.search(detail) is not None
    ):
        # The CLI died: which of the SDK's errors says so depends on who noticed first.
        number = getattr(exc, "exit_code", None)
        if number is None and exited is not None:
            number = int(exited.group(1))
        code = f" (exit code {number})" if number is not None else ""
        return ExecutorError(f"Claude Code exited unexpectedly{code}" + tail)
    if isinstance(exc, sdk.CLIJSONDecodeError):
        return ExecutorError(f"Claude Code sent output that could not be read: {detail}")
    if isinstance(exc, sdk.CLIConnectionError):
        return ExecutorError(f"Could not run Claude Code: {detail}" + tail)
    return ExecutorError(f"Claude Code failed: {type(exc).__name__}: {detail}" + tail)


def stderr_tail(stderr: Iterable[str]) -> str:
    """The last lines the CLI wrote to stderr, to end an error message with."""
    lines = [line for line in stderr if line.strip()]
    return (": " + " | ".join(lines[-5:])[-1000:]) if lines else ""


def import_sdk() -> None:
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
