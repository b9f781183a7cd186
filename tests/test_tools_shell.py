"""The shell tool through `ToolRegistry.call`: exit codes, caps, timeouts, no orphans.

Each behaviour is checked unsandboxed and inside bubblewrap (the default); the two
tests that follow a background child by its PID run unsandboxed (inside the sandbox
the child's PID is its namespace's: tests/test_sandbox.py checks the sandbox's
teardown by namespace instead).
"""

# Blocking file-system calls are fine in tests: they set up and inspect the job dir.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import os
import select
import signal
from pathlib import Path
from typing import Any

import pytest

from coro.tools import shell
from coro.tools.registry import ToolContext, ToolRegistry
from coro.tools.sandbox import SandboxPolicy

UNSANDBOXED = SandboxPolicy(mode="off")


class FakeStore:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    async def log(self, job_id: str, text: str) -> None:
        self.lines.append((job_id, text))


@pytest.fixture
def registry() -> ToolRegistry:
    reg = ToolRegistry()
    shell.register(reg)
    return reg


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture(
    params=[pytest.param(UNSANDBOXED, id="unsandboxed"), pytest.param(SandboxPolicy(), id="bwrap")]
)
def policy(request: pytest.FixtureRequest) -> SandboxPolicy:
    return request.param  # type: ignore[no-any-return]


def make_ctx(
    workdir: Path, store: FakeStore, policy: SandboxPolicy, **overrides: Any
) -> ToolContext:
    return ToolContext(
        job_id="j1",
        phase="coding",
        workdir=workdir,
        store=store,  # type: ignore[arg-type]
        sandbox=policy,
        **overrides,
    )


@pytest.fixture
def ctx(workdir: Path, store: FakeStore, policy: SandboxPolicy) -> ToolContext:
    return make_ctx(workdir, store, policy)


@pytest.fixture
def unsandboxed(workdir: Path, store: FakeStore) -> ToolContext:
    return make_ctx(workdir, store, UNSANDBOXED)


async def run(registry: ToolRegistry, ctx: ToolContext, command: str, **extra: Any) -> Any:
    result = await registry.call("shell", {"command": command, **extra}, ctx)
    assert not result.is_error, result.output
    return result.output


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a killed child nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def ends(pid: int) -> bool:
    """Whether `pid` ends, waited for on its pidfd (bounded only as a safety net): a
    process just sent SIGKILL can still be seen running for a moment."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        exited, _, _ = await asyncio.to_thread(select.select, [pidfd], [], [], 60)
    finally:
        os.close(pidfd)
    return bool(exited) and not is_running(pid)


async def test_exit_code_and_output(registry: ToolRegistry, ctx: ToolContext) -> None:
    out = await run(registry, ctx, "echo hi; echo oops >&2; exit 3")
    assert out == {
        "exitCode": 3,
        "stdout": "hi\n",
        "stderr": "oops\n",
        "timedOut": False,
        "truncated": False,
    }


async def test_runs_in_the_job_directory(
    registry: ToolRegistry, ctx: ToolContext, workdir: Path
) -> None:
    out = await run(registry, ctx, "pwd; echo made > f.txt")
    assert out["stdout"] == f"{workdir.resolve()}\n"
    assert (workdir / "f.txt").read_text() == "made\n"


async def test_stdin_is_empty(registry: ToolRegistry, ctx: ToolContext) -> None:
    out = await run(registry, ctx, "cat; echo done")
    assert out["stdout"] == "done\n"
    assert out["exitCode"] == 0


async def test_timeout_kills_the_process_group(
    registry: ToolRegistry, unsandboxed: ToolContext, store: FakeStore
) -> None:
    # (the child would outlive the 60-s wait below unless its group is killed)
    out = await run(registry, unsandboxed, "sleep 300 & echo $!; sleep 30", timeoutSeconds=1)
    assert out["timedOut"] is True
    assert out["exitCode"] == 128 + 9
    child = int(out["stdout"].split()[0])
    assert await ends(child), "the background child survived the timeout"
    assert any("timed out" in text for _, text in store.lines)


async def test_timeout_is_capped_and_defaulted(
    registry: ToolRegistry, workdir: Path, store: FakeStore, policy: SandboxPolicy
) -> None:
    capped = make_ctx(workdir, store, policy, shell_timeout_max=1.0)
    out = await run(registry, capped, "sleep 30", timeoutSeconds=10_000)
    assert out["timedOut"] is True
    defaulted = make_ctx(workdir, store, policy, shell_timeout_default=1.0)
    out = await run(registry, defaulted, "sleep 30")
    assert out["timedOut"] is True


@pytest.mark.parametrize("seconds", [0, -1])
async def test_non_positive_timeout_is_refused(
    registry: ToolRegistry, ctx: ToolContext, seconds: float
) -> None:
    result = await registry.call("shell", {"command": "true", "timeoutSeconds": seconds}, ctx)
    assert result.is_error


async def test_cancellation_kills_the_process_group(
    registry: ToolRegistry, unsandboxed: ToolContext, tmp_path: Path
) -> None:
    # The background child does not hold the tool's pipes, so only killing the
    # process group ends it early; a pidfd tells when it has exited.
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    command = f"sleep 300 >/dev/null 2>&1 & echo $! > {fifo}; wait"
    task = asyncio.create_task(registry.call("shell", {"command": command}, unsandboxed))
    child = int(await asyncio.to_thread(fifo.read_text))  # blocks until the command writes
    pidfd = os.pidfd_open(child)
    try:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # wait for the child's exit (bounded only as a safety net: it would live 300 s)
        exited, _, _ = await asyncio.to_thread(select.select, [pidfd], [], [], 60)
        assert exited, "background child survived the cancellation"
        assert not is_running(child)
    finally:
        os.close(pidfd)
        if is_running(child):
            os.kill(child, signal.SIGKILL)


async def test_output_is_capped(
    registry: ToolRegistry, workdir: Path, store: FakeStore, policy: SandboxPolicy
) -> None:
    small = make_ctx(workdir, store, policy, output_cap_bytes=1000)
    out = await run(registry, small, "yes | head -c 200000; echo tail >&2")
    assert out["truncated"] is True
    assert len(out["stdout"]) == 1000
    assert out["stdout"].startswith("y\ny\n")
    assert out["stderr"] == "tail\n"
    assert out["exitCode"] == 0
    assert out["timedOut"] is False


async def test_secret_env_vars_are_hidden(
    registry: ToolRegistry, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_KEY", "sekrit1")
    monkeypatch.setenv("GITHUB_TOKEN", "sekrit2")
    monkeypatch.setenv("db_password", "sekrit3")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekrit4")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sekrit5")
    monkeypatch.setenv("CORO_API_TOKEN", "sekrit6")
    monkeypatch.setenv("DEPLOY_PRIVATE_KEY", "sekrit7")
    monkeypatch.setenv("CORO_HARMLESS", "visible")
    out = await run(registry, ctx, "env")
    assert "sekrit" not in out["stdout"]
    assert "CORO_HARMLESS=visible" in out["stdout"]
    out = await run(registry, ctx, 'printf %s "$HOME"')
    assert out["stdout"] == os.environ["HOME"]


async def test_unknown_input_keys_are_refused(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.call("shell", {"command": "true", "bogus": 1}, ctx)
    assert result.is_error
    assert "bogus" in result.output
