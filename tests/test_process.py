"""`run_process`, the one way Coro starts a command (the shell tool's own behaviour —
timeouts, cancellation, caps — is checked through the tool in tests/test_tools_shell.py)."""

from __future__ import annotations

import asyncio
import os
import select
import signal
from pathlib import Path

import pytest

from coro.system.process import run_process

LIMIT = 60.0  # a guard against hangs, not a timing assertion


async def test_stdin_is_fed_and_output_comes_back_apart_or_merged() -> None:
    apart = await run_process(
        ["bash", "-c", "cat; echo oops >&2; exit 4"], timeout_seconds=LIMIT, stdin=b"in\n"
    )
    assert (apart.returncode, apart.stdout, apart.stderr) == (4, "in\n", "oops\n")
    assert not apart.timed_out and not apart.truncated
    merged = await run_process(
        ["bash", "-c", "echo out; echo err >&2"], timeout_seconds=LIMIT, merge_stderr=True
    )
    assert (merged.stdout, merged.stderr) == ("out\nerr\n", "")


async def test_stdin_the_command_never_reads_does_not_block_it() -> None:
    result = await run_process(["true"], timeout_seconds=LIMIT, stdin=b"x" * (1024 * 1024))
    assert result.returncode == 0 and not result.timed_out


async def test_the_cap_applies_to_each_stream() -> None:
    result = await run_process(
        ["bash", "-c", "head -c 5000 /dev/zero; echo short >&2"],
        timeout_seconds=LIMIT,
        output_cap=100,
    )
    assert len(result.stdout) == 100 and result.stdout_truncated
    assert result.stderr == "short\n" and not result.stderr_truncated
    assert result.truncated


async def test_a_program_that_cannot_start_raises_after_on_spawned(tmp_path: Path) -> None:
    seen: list[str] = []
    with pytest.raises(FileNotFoundError):
        await run_process(
            [str(tmp_path / "missing")], timeout_seconds=LIMIT, on_spawned=lambda: seen.append("x")
        )
    assert seen == ["x"]


async def test_a_failing_before_wait_kills_the_process_group(tmp_path: Path) -> None:
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    children: list[int] = []

    async def learn_the_child() -> None:
        children.append(int(await asyncio.to_thread(fifo.read_text)))
        raise RuntimeError("the sandbox did not come up")

    command = f"sleep 300 >/dev/null 2>&1 & echo $! > {fifo}; wait"
    with pytest.raises(RuntimeError, match="did not come up"):
        await run_process(
            ["bash", "-c", command], timeout_seconds=LIMIT, before_wait=learn_the_child
        )
    (child,) = children
    try:
        pidfd = os.pidfd_open(child)
    except ProcessLookupError:
        return  # already gone and reaped
    exited: list[int] = []
    try:
        exited, _, _ = await asyncio.to_thread(select.select, [pidfd], [], [], LIMIT)
        assert exited, "the command's background child survived"
    finally:
        if not exited:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)


async def test_a_timeout_kills_the_group_and_says_so() -> None:
    result = await run_process(["sleep", "300"], timeout_seconds=1)
    assert result.timed_out
    assert result.returncode == -signal.SIGKILL
