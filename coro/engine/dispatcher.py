"""The dispatcher: which job runs when (SPEC §4.4).

- one run per job at a time; a job submitted while running re-runs right after;
- a global cap (`jobs.maxConcurrent`) with a FIFO queue of jobs waiting for a slot;
- events for a running job are queued and delivered as one batched prompt when its
  turn ends; a parked job wakes on the first event;
- rate-limited jobs wake on a timer; after a restart `recover()` re-arms the timers and
  resumes every job that was running or queued.

What wakes it: a submit, a run's end, delivered events, and one timer per rate-limited
job, due when its wait is over; nothing else. Parked jobs cost it nothing: `recover()`
reads only the rate-limited jobs and those that were running or queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from coro.domain.models import (
    AWAITING_RATE_LIMIT,
    PARKING,
    QUEUED,
    TERMINAL,
    WAITING_FOR_EVENTS,
    Job,
    is_running,
    is_terminal,
)
from coro.engine import prompts
from coro.engine.env import EngineEnv
from coro.engine.events import InboundEvent
from coro.engine.phase_loop import PhaseLoop, RunHandle
from coro.state.backend import JobNotFound, JobQuery

logger = logging.getLogger(__name__)

RECOVERY_LIMIT = 1_000_000


class Dispatcher:
    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self.store = env.store
        self._active: dict[str, RunHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: deque[str] = deque()
        self._rerun_after: set[str] = set()
        self._events: dict[str, list[InboundEvent]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.on_run_end: list[Callable[[str], None]] = []

    # --- scheduling -----------------------------------------------------------------

    @property
    def max_concurrent(self) -> int:
        return self.env.config.jobs.max_concurrent

    @property
    def running_ids(self) -> list[str]:
        return list(self._active)

    def is_active(self, job_id: str) -> bool:
        return job_id in self._active

    def handle(self, job_id: str) -> RunHandle | None:
        return self._active.get(job_id)

    def submit(self, job_id: str) -> None:
        """Run the job as soon as a slot is free (it must already be in a running status)."""
        if self._closing:
            return
        if job_id in self._active:
            self._rerun_after.add(job_id)
        elif job_id in self._waiting:
            return
        elif len(self._active) < self.max_concurrent:
            self._start(job_id)
        else:
            self._waiting.append(job_id)

    def withdraw(self, job_id: str) -> None:
        """Forget a job that no longer wants to run (cancelled or paused while queued)."""
        if job_id in self._waiting:
            self._waiting.remove(job_id)
        self._rerun_after.discard(job_id)
        self.cancel_timer(job_id)

    def interrupt(self, job_id: str) -> None:
        handle = self._active.get(job_id)
        if handle is not None:
            handle.interrupt.set()

    def _start(self, job_id: str) -> None:
        handle = RunHandle()
        self._active[job_id] = handle
        self._idle.clear()
        task = asyncio.create_task(self._run(job_id, handle), name=f"job:{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: str, handle: RunHandle) -> None:
        last: Job | None = None
        try:
            last = await PhaseLoop(self.env, job_id, handle).run()
        finally:
            del self._active[job_id]
            try:
                await self._after_run(job_id, last)
            except Exception:
                logger.exception("after-run handling failed for %s", job_id)
            for callback in self.on_run_end:
                callback(job_id)
            self._fill_slots()
            if not self._active and not self._waiting:
                self._idle.set()

    async def _after_run(self, job_id: str, last: Job | None) -> None:
        """What follows a run; `last` is the job as the loop last read or wrote it. That
        will do unless the job's current state is needed: events are held for it, or it
        was submitted while it ran (a control that wakes a job submits it). Any other
        control written since stops the job, and a rate-limit timer armed from `last`
        then finds nothing to resume."""
        if self._closing:
            return
        job = last
        if job is None or job_id in self._rerun_after or self._events.get(job_id):
            job = await self.store.find(job_id)
        if job is None:
            return
        if job.status == AWAITING_RATE_LIMIT:
            self._arm_timer(job)
        if job.status in TERMINAL:
            self._events.pop(job_id, None)
        elif self._events.get(job_id) and job.status in WAITING_FOR_EVENTS and not job.paused:
            await self._wake_with_events(job_id)
            return
        if job_id in self._rerun_after:
            self._rerun_after.discard(job_id)
            if is_running(job.status):
                self.submit(job_id)

    def _fill_slots(self) -> None:
        while self._waiting and len(self._active) < self.max_concurrent and not self._closing:
            self._start(self._waiting.popleft())

    async def wait_idle(self) -> None:
        """Until no job is running or waiting for a slot (benchmarks, the demo, shutdown)."""
        await self._idle.wait()

    # --- waking parked jobs -----------------------------------------------------------

    async def wake(
        self,
        job_id: str,
        prompt: str | None,
        *,
        phase: str | None = None,
        fresh_session: bool = False,
        extra: Callable[[Job], None] | None = None,
    ) -> Job:
        """Move a non-terminal job back to `queued` (with an optional prompt) and submit it.

        Events held for the job (while it ran or was paused) are delivered in the same
        prompt, so nothing that arrived meanwhile is lost.
        """
        held = self._events.pop(job_id, [])
        if held:
            prompt = prompts.append_prompt(prompt, prompts.batched_events(held))

        def apply(j: Job) -> bool:
            if is_terminal(j.status):
                return False
            j.status = QUEUED
            j.clear_wait()
            if prompt:
                j.pending_prompt = prompts.append_prompt(j.pending_prompt, prompt)
            if phase is not None:
                j.phase = phase
            if fresh_session:
                j.session_id = None
            if extra is not None:
                extra(j)
            return True

        job, woken = await self.store.update(job_id, apply)
        if woken and fresh_session:
            await self.store.backend.clear_transcript(job_id)
        if woken:
            self.cancel_timer(job_id)
            self.submit(job_id)
        return job

    async def deliver(self, events: Sequence[InboundEvent]) -> None:
        """Route inbound events observed together. A job parked waiting for an event
        wakes with all of its events in one prompt; for a running, paused, escalated
        or otherwise parked job they are held and delivered with its next wake."""
        by_job: dict[str, list[InboundEvent]] = {}
        for event in events:
            by_job.setdefault(event.job_id, []).append(event)
        for job_id, batch in by_job.items():
            job = await self.store.find(job_id)
            if job is None or is_terminal(job.status):
                continue
            for event in batch:
                outcome = event.pr_outcome()
                if outcome is not None and event.pr_id is not None:
                    repo = event.ref.repo_key if event.ref is not None else None
                    await self.store.mark_pr(job_id, event.pr_id, repo, outcome)
            self._events.setdefault(job_id, []).extend(batch)
            if job_id in self._active or job.paused or job.status not in WAITING_FOR_EVENTS:
                continue
            await self._wake_with_events(job_id)

    async def _wake_with_events(self, job_id: str) -> None:
        events = self._events.get(job_id, [])
        if not events:
            return
        keys = ", ".join(e.event_key for e in events)
        noun = "event" if len(events) == 1 else f"{len(events)} events"
        await self.store.log(job_id, f"[event] Received {noun}: {keys}")
        await self.wake(job_id, None)

    def drop_events(self, job_id: str) -> None:
        self._events.pop(job_id, None)

    # --- rate-limit timers ------------------------------------------------------------

    def _arm_timer(self, job: Job) -> None:
        if job.rate_limit_info is None:
            return
        self.cancel_timer(job.id)
        delay = max(0.0, job.rate_limit_info.resume_at / 1000 - time.time())
        loop = asyncio.get_running_loop()
        self._timers[job.id] = loop.call_later(delay, self._timer_fired, job.id)

    def cancel_timer(self, job_id: str) -> None:
        timer = self._timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()

    def _timer_fired(self, job_id: str) -> None:
        self._timers.pop(job_id, None)
        task = asyncio.create_task(self._resume_after_rate_limit(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resume_after_rate_limit(self, job_id: str) -> None:
        try:
            job = await self.store.get(job_id)
        except JobNotFound:
            return
        if job.status != AWAITING_RATE_LIMIT or job_id in self._active:
            return
        await self.store.log(job_id, "[rate-limit] Wait over — resuming the phase")

        def keep_info(j: Job) -> None:
            j.rate_limit_info = job.rate_limit_info  # keeps the attempt count

        await self.wake(job_id, None, extra=keep_info)

    # --- lifecycle --------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """After a restart: re-arm rate-limit timers and resume jobs that were running."""
        for job in await self.store.backend.jobs_with_status({AWAITING_RATE_LIMIT}):
            self._arm_timer(job)
        query = JobQuery(exclude_statuses=sorted(PARKING | TERMINAL), limit=RECOVERY_LIMIT)
        running, _ = await self.store.backend.list_jobs(query)
        resumed = []
        for job in reversed(running):  # oldest first keeps the queue's FIFO order
            await self.store.log(
                job.id, f"[recovery] Runner restarted — resuming phase {job.phase}"
            )
            self.submit(job.id)
            resumed.append(job.id)
        return resumed

    async def close(self) -> None:
        """Stop scheduling and cancel running loops; their jobs resume on the next start."""
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
