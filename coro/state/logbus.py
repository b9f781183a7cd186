"""In-process pub/sub of log lines and status changes, per job.

SSE subscribers read from here instead of polling storage. Each subscriber has a
bounded buffer: a client that falls too far behind is cut off (it can resume with
Last-Event-ID) so it can never slow the job or other subscribers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from coro.domain.models import LogEntry

DEFAULT_BUFFER = 10_000


@dataclass(frozen=True)
class StatusChange:
    status: str


BusItem = LogEntry | StatusChange


class SubscriptionClosed(Exception):
    """The subscriber fell too far behind, or the runner is shutting down; a client
    reconnects and resumes from storage with Last-Event-ID."""


class Subscription:
    def __init__(self, bus: LogBus, job_id: str, max_buffer: int) -> None:
        self._bus = bus
        self.job_id = job_id
        self._queue: asyncio.Queue[BusItem] = asyncio.Queue(maxsize=max_buffer)
        self.closed = False

    def _offer(self, item: BusItem) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.cut_off()

    def cut_off(self) -> None:
        """Drop the backlog and wake a reader blocked on `get()`, which then raises."""
        self.closed = True
        self._bus._drop(self)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(StatusChange(""))

    async def get(self) -> BusItem:
        """The next item; raises `SubscriptionClosed` once the subscriber is cut off."""
        item = await self._queue.get()
        if self.closed:
            raise SubscriptionClosed(self.job_id)
        return item

    def close(self) -> None:
        self._bus._drop(self)

    async def __aiter__(self) -> AsyncIterator[BusItem]:
        while True:
            yield await self.get()


class LogBus:
    def __init__(self, max_buffer: int = DEFAULT_BUFFER) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._max_buffer = max_buffer

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(self, job_id, self._max_buffer)
        self._subs.setdefault(job_id, set()).add(sub)
        return sub

    def publish_lines(self, job_id: str, entries: list[LogEntry]) -> None:
        for sub in tuple(self._subs.get(job_id, ())):
            for entry in entries:
                sub._offer(entry)

    def publish_status(self, job_id: str, status: str) -> None:
        for sub in tuple(self._subs.get(job_id, ())):
            sub._offer(StatusChange(status))

    def close_all(self) -> None:
        """Shutdown: end every open stream so the HTTP server can stop promptly."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.cut_off()

    def subscriber_count(self, job_id: str) -> int:
        return len(self._subs.get(job_id, ()))

    def _drop(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.job_id]
