"""Pub/sub of a job's new log lines and status changes, owned by its `StateBackend`.

Every backend has a `bus`: `append_logs` publishes the lines it stored, `update_job`
the status it changed. SSE streams subscribe here instead of polling storage.

* Each subscriber has a bounded buffer: one that falls too far behind is cut off (it
  resumes from storage with Last-Event-ID), so it never slows the job or the others.
* Delivery is deduplicated per subscriber: a `Subscription` remembers the highest line
  index it was offered (`position`) and is offered only higher ones, so a line
  published twice (by the local append, and by a catch-up after another process's
  notice) reaches it once. A subscriber can be offered a line above `position + 1`
  (a catch-up ran ahead of a slower publisher): it fills such a gap from storage, as
  the SSE route does. A status is offered once per change (per job).

Lines committed by other processes (the contract with backends)
---------------------------------------------------------------
A backend whose storage other processes write too (SQLite, PostgreSQL) publishes
their lines as well, once it hears of them:

1. A subscriber subscribes, replays the log from storage, then calls
   `Subscription.replayed(index)` with the last index it has. The bus then calls the
   backend's `on_follow(job_id)` hook.
2. In `on_follow` the backend makes sure it hears other processes' notices (binds its
   socket, LISTENs), *then* catches the job up: it reads the job's status, then the
   lines after `high_water(job_id)`, and publishes the lines, then the status
   (`publish_lines`, `publish_status`). Listening before reading is what closes the
   gap: whatever commits after that read sends a notice this backend receives.
3. On a notice that another process committed lines or a status change of a job in
   `watched_jobs()`, it does the same catch-up.

`CatchUp` does the reading and publishing of steps 2 and 3 for any backend.

Nothing here runs on a timer: a catch-up is a task started by a follow or a notice, and
ends when the job is caught up; a job nobody watches costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from coro.domain.models import LogEntry

DEFAULT_BUFFER = 10_000

#: Lines a catch-up reads from storage at a time.
CATCH_UP_PAGE = 1000

logger = logging.getLogger(__name__)


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
        #: the highest line index this subscriber has (offered, or replayed from
        #: storage); None until it has any
        self.position: int | None = None

    def replayed(self, index: int) -> None:
        """The subscriber has every line up to `index` from storage and now waits for
        live ones: a backend that hears other processes catches it up from here."""
        if self.position is None or index > self.position:
            self.position = index
        self._bus._follow(self.job_id)

    def _offer_lines(self, entries: list[LogEntry]) -> None:
        for entry in entries:
            if self.closed:
                return
            if self.position is not None and entry.index <= self.position:
                continue  # already offered (or replayed): deliver each line once
            self.position = entry.index
            self._put(entry)

    def _put(self, item: BusItem) -> None:
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
        # the last status offered per watched job (forgotten when it is unwatched)
        self._status: dict[str, str] = {}
        self._max_buffer = max_buffer
        #: Set by a backend that hears other processes: called with a job id when one
        #: of its subscribers has `replayed` storage (see the module docstring).
        self.on_follow: Callable[[str], None] | None = None

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(self, job_id, self._max_buffer)
        self._subs.setdefault(job_id, set()).add(sub)
        return sub

    def publish_lines(self, job_id: str, entries: list[LogEntry]) -> None:
        """Offer stored lines (ascending indexes) to the job's subscribers; each gets
        only those above its `position`."""
        for sub in tuple(self._subs.get(job_id, ())):
            sub._offer_lines(entries)

    def publish_status(self, job_id: str, status: str) -> None:
        """Offer the job's status to its subscribers, unless it is the last one offered."""
        subs = self._subs.get(job_id)
        if not subs or self._status.get(job_id) == status:
            return
        self._status[job_id] = status
        change = StatusChange(status)
        for sub in tuple(subs):
            sub._put(change)

    def watched_jobs(self) -> frozenset[str]:
        """The jobs that have subscribers now."""
        return frozenset(self._subs)

    def high_water(self, job_id: str) -> int | None:
        """Where a catch-up reads from: lines after this index may be missing for some
        subscriber of the job (the lowest `position` among those that have one; -1
        when a subscriber has replayed an empty log). None when no subscriber has a
        position yet: each one that `replayed` asks for its own catch-up."""
        positions = [s.position for s in self._subs.get(job_id, ()) if s.position is not None]
        return min(positions) if positions else None

    def close_all(self) -> None:
        """Shutdown: end every open stream so the HTTP server can stop promptly."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.cut_off()

    def subscriber_count(self, job_id: str) -> int:
        return len(self._subs.get(job_id, ()))

    def _follow(self, job_id: str) -> None:
        if self.on_follow is not None and job_id in self._subs:
            self.on_follow(job_id)

    def _drop(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.job_id]
                self._status.pop(sub.job_id, None)


#: `read_lines(job_id, after, limit)`: stored lines with index > after, ascending.
ReadLines = Callable[[str, int, int], Awaitable[list[LogEntry]]]
#: `read_status(job_id)`: the job's stored status (None if there is no such job).
ReadStatus = Callable[[str], Awaitable[str | None]]


class CatchUp:
    """Publishes on a bus what other processes committed to a job, when told they did.

    A backend calls `job_changed(job_id)` from `LogBus.on_follow` (after it listens)
    and on every notice that another process committed lines or a status change of
    the job. In a background task it reads the job's status and then the lines after
    `bus.high_water(job_id)`, and publishes the lines, then the status; notices that
    arrive while a job's read is under way make one more read, not one each. Jobs
    nobody watches are ignored.
    """

    def __init__(
        self,
        bus: LogBus,
        read_lines: ReadLines,
        read_status: ReadStatus,
        page: int = CATCH_UP_PAGE,
    ) -> None:
        self._bus = bus
        self._read_lines = read_lines
        self._read_status = read_status
        self._page = page
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def job_changed(self, job_id: str) -> None:
        if not self._bus.subscriber_count(job_id):
            return
        if job_id in self._running:
            self._again.add(job_id)
            return
        self._running[job_id] = asyncio.get_running_loop().create_task(self._run(job_id))

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, job_id: str) -> None:
        try:
            while True:
                self._again.discard(job_id)
                await self._catch_up(job_id)
                if job_id not in self._again:
                    return
        except Exception:  # storage trouble: the stream catches up on the next notice
            logger.exception("catching up the live log of job %s failed", job_id)
        finally:
            self._again.discard(job_id)
            del self._running[job_id]

    async def _catch_up(self, job_id: str) -> None:
        bus = self._bus
        # The status first: the lines read after it include every line committed with
        # or before it, so they are published before it, as they were written.
        status = await self._read_status(job_id)
        while bus.subscriber_count(job_id):
            after = bus.high_water(job_id)
            if after is None:
                break
            entries = await self._read_lines(job_id, after, self._page)
            bus.publish_lines(job_id, entries)
            if len(entries) < self._page:
                break
        if status is not None:
            bus.publish_status(job_id, status)
