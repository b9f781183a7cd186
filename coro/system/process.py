"""Child processes: started in their own session (so their own process group), read to
the end with output caps, and killed group and all, with an environment that carries
no secrets.

Commands that run to their end go through `run_process`: the `shell` tool, git, pip and
the Claude Code CLI's `--version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: names of environment variables never passed to commands
SECRET_ENV_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE
)
#: how long to wait for a killed process group to close its pipes and be reaped
KILL_GRACE_SECONDS = 5.0
#: the default cap of what is kept of each of stdout and stderr
OUTPUT_CAP_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024


def command_env() -> dict[str, str]:
    """The runner's environment minus anything whose name looks like a secret."""
    return {k: v for k, v in os.environ.items() if not SECRET_ENV_NAME.search(k)}


def exit_code(returncode: int | None) -> int | None:
    """Shell convention: killed by signal N → 128 + N; `None` if it never ended."""
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode


@dataclass(frozen=True)
class ProcessResult:
    #: None: killed, and not reaped within the grace period
    returncode: int | None
    stdout: str
    #: empty when stderr went to stdout (`merge_stderr`)
    stderr: str
    #: output beyond the cap was dropped
    stdout_truncated: bool
    stderr_truncated: bool
    #: the timeout ran out and the process group was killed
    timed_out: bool

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated


async def run_process(
    argv: Sequence[str],
    *,
    timeout_seconds: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    output_cap: int = OUTPUT_CAP_BYTES,
    merge_stderr: bool = False,
    pass_fds: Sequence[int] = (),
    on_spawned: Callable[[], None] | None = None,
    before_wait: Callable[[], Awaitable[None]] | None = None,
) -> ProcessResult:
    """Run `argv` in a new session to its end, or until `timeout_seconds` have passed
    (then its process group is killed and the result says `timed_out`).

    stdin is `stdin` (then closed) or empty; stdout and stderr are read to EOF, keeping
    the first `output_cap` bytes of each, so the child never blocks on a full pipe. A
    cancellation kills the process group too, even one arriving during the spawn.
    `on_spawned` runs right after the fork, whether or not it worked (e.g. to close the
    parent's copies of `pass_fds`); `before_wait` is awaited once the process runs,
    before anything waits on it (if it raises, the group is killed). Raises `OSError`
    when the process cannot be started.
    """
    spawn = asyncio.create_task(
        asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    )
    try:
        # shielded: the command runs as soon as it is forked, before this returns, so a
        # cancellation here must still get hold of the process to kill its group
        proc = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):
            await _kill_and_reap(await spawn, set())
        raise
    finally:
        if on_spawned is not None:
            on_spawned()

    if before_wait is not None:
        try:
            await before_wait()
        except BaseException:
            await _kill_and_reap(proc, set())
            raise

    out = _CappedReader(proc.stdout, output_cap)
    err = _CappedReader(proc.stderr, output_cap)
    # `Process.wait()` returns once the child has exited *and* every holder of its pipes
    # has closed them, like the two readers
    tasks: set[asyncio.Task[Any]] = {
        asyncio.create_task(proc.wait()),
        asyncio.create_task(out.drain()),
        asyncio.create_task(err.drain()),
    }
    if stdin is not None:
        tasks.add(asyncio.create_task(_feed(proc.stdin, stdin)))
    timed_out = False
    settled = False
    try:
        _, pending = await asyncio.wait(tasks, timeout=timeout_seconds)
        if pending:
            timed_out = True
            await _kill_and_reap(proc, pending)
        settled = True
    finally:
        if not settled:  # cancelled (or failed): take the process group down with us
            await _kill_and_reap(proc, tasks)
    return ProcessResult(
        returncode=proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        timed_out=timed_out,
    )


class _CappedReader:
    """Reads a stream to EOF, keeping the first `cap` bytes."""

    def __init__(self, stream: asyncio.StreamReader | None, cap: int) -> None:
        self._stream = stream
        self._cap = max(cap, 0)
        self._kept = bytearray()
        self.truncated = False

    async def drain(self) -> None:
        if self._stream is None:
            return
        while chunk := await self._stream.read(_CHUNK):
            room = self._cap - len(self._kept)
            if len(chunk) > room:
                self.truncated = True
                chunk = chunk[: max(room, 0)]
            self._kept += chunk

    def text(self) -> str:
        return self._kept.decode("utf-8", errors="replace")


async def _feed(pipe: asyncio.StreamWriter | None, data: bytes) -> None:
    if pipe is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        pipe.write(data)
        await pipe.drain()
    pipe.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _kill_and_reap(proc: Process, tasks: set[asyncio.Task[Any]]) -> None:
    """SIGKILL the command's process group, then give it a moment to close its pipes."""
    _kill_group(proc.pid)
    waiting = tasks or {asyncio.create_task(proc.wait())}
    _, pending = await asyncio.wait(waiting, timeout=KILL_GRACE_SECONDS)
    for task in pending:  # something left the group and still holds a pipe: stop reading
        task.cancel()
