"""uvicorn's `Server` without its tick, so an idle process sleeps.

uvicorn's `Server.main_loop` wakes the event loop ten times a second: to see whether it
should exit (`should_exit`, set by its signal handlers or by whoever stops it) and, every
tenth time, to date its default headers anew. `QuietServer` waits instead: setting
`should_exit` wakes it (also from a signal handler, through the loop's self-pipe), and
the `Date` header is made when a response asks for the default headers (from the clock,
to the second, as uvicorn's tick does). Nothing else changes: `limit_max_requests` and
the worker notification of `main_loop` are not used by Coro's servers.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import uvicorn
from uvicorn.server import ServerState


class _DatedState(ServerState):
    """uvicorn's state shared by every connection, whose `default_headers` are made when
    a response reads them."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._config = config
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []
        super().__init__()

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if now != self._second:
            date = formatdate(now, usegmt=True).encode()
            dated = [(b"date", date)] if self._config.date_header else []
            self._headers = dated + self._config.encoded_headers
            self._second = now
        return self._headers

    @default_headers.setter
    def default_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        """Only uvicorn's own start (an empty list) and its tick set them: ignored."""


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        self._should_exit = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit = asyncio.Event()
        super().__init__(config)
        self.server_state = _DatedState(config)

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        loop = self._loop
        if value and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._exit.set)  # safe from a signal handler too

    async def main_loop(self) -> None:
        await self.exit_requested()

    async def exit_requested(self) -> None:
        """Until the server is asked to stop (`should_exit`)."""
        self._loop = asyncio.get_running_loop()
        if not self._should_exit:
            await self._exit.wait()
