"""Child processes: started in their own process group, read to the end with output
caps, and killed group and all, with an environment that carries no secrets.

The `shell` tool and git both run their commands through these helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from asyncio.subprocess import Process
from typing import Any

#: names of environment variables never passed to commands
SECRET_ENV_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE
)
#: how long to wait for a killed process group to close its pipes and be reaped
KILL_GRACE_SECONDS = 5.0
_CHUNK = 64 * 1024


def command_env() -> dict[str, str]:
    """The runner's environment minus anything whose name looks like a secret."""
    return {k: v for k, v in os.environ.items() if not SECRET_ENV_NAME.search(k)}


class CappedReader:
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


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def exit_code(returncode: int | None) -> int | None:
    """Shell convention: killed by signal N → 128 + N; `None` if it never ended."""
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode


async def kill_and_reap(proc: Process, tasks: set[asyncio.Task[Any]]) -> None:
    """SIGKILL the command's process group, then give it a moment to close its pipes."""
    kill_group(proc.pid)
    waiting = tasks or {asyncio.create_task(proc.wait())}
    _, pending = await asyncio.wait(waiting, timeout=KILL_GRACE_SECONDS)
    for task in pending:  # something left the group and still holds a pipe: stop reading
        task.cancel()
