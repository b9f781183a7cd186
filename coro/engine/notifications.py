"""Notifications: telling people that a job needs them (issue #14).

`Notifications` is an observer of the job store (`JobStore.observers`): every update
this process writes is a `JobChange`, which it turns into at most one event —

- `job.awaiting`: the job parked waiting for someone: plan approval, an interactive
  checkpoint, a question (`await_event` with `developer-input: …`), a halted campaign,
  its budget (not a pause the developer made, nor a wait for a PR or a timer);
- `job.escalated`, `job.failed`, `job.completed`: the job moved into that status;
- `pr.opened`: the job has a pull request more than before.

A campaign's children notify only what needs someone there (awaiting, a PR): a child
that fails or escalates halts its campaign, and the campaign's own `job.awaiting` says
which child and why; the campaign's completion is the one `job.completed`.

`observe` only builds the notification (`notification_for`: `job_event` decides, the
team cloud's notifier decides with it too) and puts it on a bounded queue (full: it is
dropped and logged), so a job never waits for a channel. A worker hands each one to the
in-process subscribers (`subscribe`: the dashboard's live feed, `GET
/notifications/stream`) and starts a delivery per channel that wants the event, at
most `MAX_DELIVERIES` at a time. A delivery tries `notifications.attempts` times,
waiting `retryDelaySeconds`, then twice as long each time (at least what a
`Retry-After` asks, up to `RETRY_AFTER_CAP_SECONDS`); an answer that will not change
(a 4xx other than 408/429, an SMTP 5xx) ends it at once. Each try is bounded by
`timeoutSeconds`. A delivery that failed for good is logged once (the runner's log and
the job's), naming the channel, never a secret. The queue, the deliveries and their
retries are `DeliveryQueue`'s, which the team cloud's notifier
(`coro.cloud.notifications`) shares.

Per channel, the last outcome and the last `HISTORY` failures are kept in memory (a
restart forgets them). A config reload (`reconfigure`) takes effect at the next try of
a delivery already under way: a channel removed meanwhile gets no more tries.
Stopping gives deliveries in the middle of a try `STOP_GRACE_SECONDS` and cancels
the rest, backoffs included.

`test` (`POST /notifications/test`) sends a made-up job's notification (event `test`)
to one channel, once; it is kept as that channel's last outcome, and not broadcast to
the live feed (it says nothing about a run).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from coro.config import CoroConfig
from coro.config.notifications import ChannelKind, NotificationEvent
from coro.domain.models import (
    AWAITING_BUDGET,
    AWAITING_DEVELOPER_INPUT,
    AWAITING_PLAN_APPROVAL,
    CHECKPOINT_LABEL_PREFIX,
    COMPLETE,
    ESCALATED,
    FAILED,
    PAUSE_LABEL,
    Job,
    iso_now,
)
from coro.plugins.notifiers.base import Delivery, Notification, NotificationKind, Notifier
from coro.state.store import JobChange, JobStore

logger = logging.getLogger(__name__)

#: notifications waiting for the worker; beyond this they are dropped
QUEUE_SIZE = 1000
#: deliveries (one notification to one channel, retries included) under way at once
MAX_DELIVERIES = 100
#: failures kept per channel
HISTORY = 10
#: the longest wait a `Retry-After` gets, and the longest backoff
RETRY_AFTER_CAP_SECONDS = 600.0
BACKOFF_CAP_SECONDS = 3600.0
#: how long stopping lets a try in progress finish
STOP_GRACE_SECONDS = 2.0
#: notifications a live-feed subscriber may fall behind before it is cut off
FEED_BUFFER = 100
#: the longest title, reason and question a notification carries
TITLE_MAX = 120
TEXT_MAX = 10_000

#: how a job that waits names it, by status
AWAITING = frozenset({AWAITING_PLAN_APPROVAL, AWAITING_DEVELOPER_INPUT, AWAITING_BUDGET})


class RetryPolicy(Protocol):
    """How deliveries are tried (`notifications.attempts`, `retryDelaySeconds`,
    `timeoutSeconds` in config.json; the team cloud's own)."""

    @property
    def attempts(self) -> int: ...

    @property
    def retry_delay_seconds(self) -> float: ...

    @property
    def timeout_seconds(self) -> float: ...


@dataclass(frozen=True)
class Channel:
    """One configured channel and the notifier that sends to it."""

    id: str
    kind: ChannelKind
    events: tuple[NotificationEvent, ...]
    notifier: Notifier

    def wants(self, event: NotificationKind) -> bool:
        return event in self.events


@dataclass(frozen=True)
class Outcome:
    """How one delivery to one channel ended (`GET /notifications`)."""

    at: str
    event: NotificationKind
    ok: bool
    attempts: int
    delivery_id: str
    status: int | None = None
    error: str | None = None

    @classmethod
    def of(cls, notification: Notification, delivery: Delivery, attempts: int) -> Outcome:
        return cls(
            at=iso_now(),
            event=notification.event,
            ok=delivery.ok,
            attempts=attempts,
            delivery_id=notification.delivery_id,
            status=delivery.status,
            error=delivery.error,
        )


@dataclass
class ChannelState:
    last: Outcome | None = None
    failures: deque[Outcome] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def recent_failures(self) -> list[Outcome]:
        return list(reversed(self.failures))  # newest first


@dataclass(frozen=True)
class ChannelReport:
    channel: Channel
    last: Outcome | None
    recent_failures: list[Outcome]


# --- what a change of a job is worth telling ---------------------------------------------


def job_title(job: Job) -> str:
    """The job as people name it: its description's first line, else its work item,
    its repository or its workflow."""
    description = job.params.get("description")
    if isinstance(description, str) and description.strip():
        return _clip(description.strip().splitlines()[0].strip(), TITLE_MAX)
    repo = job.params.get("repo")
    for candidate in (job.current_work_item, repo if isinstance(repo, str) else None):
        if candidate and candidate.strip():
            return _clip(candidate.strip(), TITLE_MAX)
    return _clip(job.workflow_path, TITLE_MAX)


def job_event(change: JobChange) -> tuple[NotificationEvent, str, str | None] | None:
    """The event a change is, with why someone is needed and the job's question."""
    job = change.job
    child = job.campaign_parent_id is not None
    if change.before_status != job.status:
        if job.status in AWAITING:
            waiting = _awaiting(job)
            if waiting is not None:
                return "job.awaiting", *waiting
        elif job.status == ESCALATED and not child:
            return "job.escalated", job.escalation_message or "The job was escalated", None
        elif job.status == FAILED and not child:
            return "job.failed", job.escalation_message or "The job failed", None
        elif job.status == COMPLETE and not child:
            return "job.completed", "The job is complete", None
    if len(job.pr_mappings) > change.before_pr_count:
        pr = job.pr_mappings[-1]
        return "pr.opened", f"Pull request #{pr.pr_id} opened for {pr.work_item}", None
    return None


def _awaiting(job: Job) -> tuple[str, str | None] | None:
    """Why a parked job waits for someone, and its question; None when it waits for
    nobody (paused by the developer, or no longer waiting)."""
    if job.paused:
        return None
    if job.status == AWAITING_PLAN_APPROVAL:
        plans = [a for a in job.artifacts if a.kind == "plan"]
        return "Plan approval needed" + (f": {plans[-1].title}" if plans else ""), None
    if job.status == AWAITING_BUDGET:
        return _budget_reason(job), None
    label = job.awaiting_event or ""
    if label == PAUSE_LABEL or not label.startswith("developer-input"):
        return None
    if label.startswith(CHECKPOINT_LABEL_PREFIX):
        phase = label.removeprefix(CHECKPOINT_LABEL_PREFIX)
        return f"Approval needed: phase {phase} is done", None
    if job.escalation_message:  # a campaign halted or stalled, with what to do
        return job.escalation_message, None
    question = label.removeprefix("developer-input").lstrip(":").strip() or None
    if question is None:
        return "Waiting for developer input", None
    return f"Waiting for developer input: {question}", question


def _budget_reason(job: Job) -> str:
    budget, used = job.budget, job.token_usage
    if budget.max_cost_usd is not None and used.total_cost_usd >= budget.max_cost_usd:
        return f"Budget reached: {_usd(used.total_cost_usd)} of {_usd(budget.max_cost_usd)}"
    tokens = used.input_tokens + used.output_tokens
    if budget.max_tokens is not None and tokens >= budget.max_tokens:
        return f"Budget reached: {tokens:,} of {budget.max_tokens:,} tokens"
    return "Budget reached: " + (job.awaiting_event or "").removeprefix("budget: ")


def _usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_notification(
    job: Job, event: NotificationKind, reason: str, question: str | None, dashboard_url: str
) -> Notification:
    """The notification of `event` for `job`, linking to the run at `dashboard_url`."""
    newest = job.pr_mappings[-1] if job.pr_mappings else None
    return Notification(
        event=event,
        delivery_id=str(uuid.uuid4()),
        job_id=job.id,
        title=job_title(job),
        status=job.status,
        reason=_clip(reason, TEXT_MAX),
        phase=job.phase,
        at=iso_now(),
        dashboard_url=dashboard_url,
        pull_request_url=newest.url if newest is not None else None,
        question=_clip(question, TEXT_MAX) if question is not None else None,
    )


def notification_for(change: JobChange, link: Callable[[Job], str]) -> Notification | None:
    """What `change` is worth telling (`job_event`), with the run's link (`link(job)`);
    None when it is nothing. The runner and the team cloud decide by this alone."""
    found = job_event(change)
    if found is None:
        return None
    event, reason, question = found
    return build_notification(change.job, event, reason, question, link(change.job))


def dashboard_base(config: CoroConfig) -> str:
    """Where people reach the runner: `notifications.dashboardUrl`, else its own
    `http://host:port`."""
    configured = config.notifications.dashboard_url
    if configured:
        return configured.removesuffix("/dashboard")
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{config.port}"


# --- the live feed -----------------------------------------------------------------------


class NotificationFeed:
    """One subscriber's notifications, from when it subscribed; a subscriber that falls
    `FEED_BUFFER` behind is cut off (the dashboard's EventSource reconnects)."""

    def __init__(self, owner: Notifications) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[Notification | None] = asyncio.Queue(FEED_BUFFER + 1)
        self.closed = False

    def offer(self, notification: Notification) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= FEED_BUFFER:
            self.close()
            return
        self._queue.put_nowait(notification)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._owner._feeds.discard(self)
        self._queue.put_nowait(None)  # the one place kept free: wakes the reader

    async def __aiter__(self) -> AsyncIterator[Notification]:
        while (item := await self._queue.get()) is not None:
            yield item


# --- delivering: the queue, the deliveries, their retries --------------------------------

ItemT = TypeVar("ItemT")


def tries(attempts: int) -> str:
    return f"{attempts} attempt{'s' if attempts != 1 else ''}"


class DeliveryQueue(ABC, Generic[ItemT]):
    """A bounded queue of items (each a notification, or what one is made from), a
    worker that turns each into deliveries (`_route`: a channel and the notification for
    it), at most `MAX_DELIVERIES` under way at once, each tried with backoff under
    `policy` (read at every try). A subclass says where items go (`_route`), what a
    channel is at its next try (`_current`: None ends the delivery) and what becomes
    of an outcome (`_finished`)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._queue: asyncio.Queue[ItemT] = asyncio.Queue(QUEUE_SIZE)
        self._slots = asyncio.Semaphore(MAX_DELIVERIES)
        self._deliveries: set[asyncio.Task[None]] = set()
        self._backing_off: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0  # items the full queue turned away

    @abstractmethod
    async def _route(self, item: ItemT) -> Iterable[tuple[Channel, Notification]]:
        """The deliveries `item` makes (channels that do not want the event are skipped)."""

    def _current(self, channel: Channel) -> Channel | None:
        """`channel` as it is now, for its next try; None: no more tries."""
        return channel

    @abstractmethod
    async def _finished(
        self, channel: Channel, notification: Notification, outcome: Delivery, attempts: int
    ) -> None:
        """A delivery ended (delivered, or failed for good)."""

    def _enqueue(self, item: ItemT, what: str) -> None:
        """Queue `item` without waiting; when the queue is full it is dropped and logged
        (`what` names it)."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning(
                    "notification queue full: %s dropped (%d so far)", what, self.dropped
                )

    # --- running ---

    async def start(self) -> None:
        self._stopping = False
        self._worker = asyncio.create_task(self._run(), name="notifications")

    async def stop(self) -> None:
        """Stop quickly: tries in progress get `STOP_GRACE_SECONDS`, nothing is retried,
        and what is still queued is dropped."""
        self._stopping = True
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        left = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            left += 1
        if left:
            logger.info("stopping: %d queued notification(s) not sent", left)
        for task in list(self._backing_off):
            task.cancel()
        pending = set(self._deliveries)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def settled(self) -> None:
        """Wait until nothing is queued or being delivered (backoffs included)."""
        while True:
            await self._queue.join()
            if not self._deliveries:
                return
            await asyncio.wait(set(self._deliveries))

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                try:
                    routes = list(await self._route(item))
                except Exception:  # e.g. the team cloud's database: this one is lost
                    logger.exception("routing a notification failed")
                    continue
                for channel, notification in routes:
                    if channel.wants(notification.event):
                        await self._slots.acquire()
                        task = asyncio.create_task(self._deliver(channel, notification))
                        self._deliveries.add(task)
                        task.add_done_callback(self._delivered)
            finally:
                self._queue.task_done()

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slots.release()

    # --- delivering ---

    async def _deliver(self, channel: Channel, notification: Notification) -> None:
        attempts = 0
        while True:
            current = self._current(channel)
            if current is None or not current.wants(notification.event):
                return  # a reload removed it, or it no longer wants this event
            channel = current
            attempts += 1
            outcome = await self.attempt(channel, notification)
            if (
                outcome.ok
                or not outcome.retryable
                or attempts >= self.policy.attempts
                or self._stopping
            ):
                break
            task = asyncio.current_task()
            assert task is not None
            self._backing_off.add(task)
            try:
                await asyncio.sleep(self._backoff(attempts, outcome))
            finally:
                self._backing_off.discard(task)
        await self._finished(channel, notification, outcome, attempts)

    def _backoff(self, attempts: int, outcome: Delivery) -> float:
        delay = self.policy.retry_delay_seconds * 2 ** (attempts - 1)
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, RETRY_AFTER_CAP_SECONDS))
        return float(min(delay, BACKOFF_CAP_SECONDS))

    async def attempt(self, channel: Channel, notification: Notification) -> Delivery:
        """One try, bounded by `policy.timeout_seconds`; never raises."""
        seconds = self.policy.timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                return await channel.notifier.send(notification)
        except TimeoutError:
            return Delivery(False, error=f"timed out after {seconds:g} s", retryable=True)
        except Exception as exc:  # a notifier's bug: its message may hold a setting
            logger.warning("the %s notifier of channel %s raised", channel.kind, channel.id)
            error = f"the {channel.kind} notifier failed ({type(exc).__name__})"
            return Delivery(False, error=error, retryable=True)


# --- the runner's notifier ---------------------------------------------------------------


class Notifications(DeliveryQueue[Notification]):
    def __init__(self, store: JobStore, config: CoroConfig, channels: Iterable[Channel]) -> None:
        super().__init__(config.notifications)
        self.store = store
        self._base = dashboard_base(config)
        self._channels = {c.id: c for c in channels}
        self._states: dict[str, ChannelState] = {c: ChannelState() for c in self._channels}
        self._feeds: set[NotificationFeed] = set()

    # --- configuration ---

    def reconfigure(self, config: CoroConfig, channels: Iterable[Channel]) -> None:
        """Take over a reloaded config; deliveries under way use it from their next try."""
        self.policy = config.notifications
        self._base = dashboard_base(config)
        self._channels = {c.id: c for c in channels}
        self._states = {c: self._states.get(c) or ChannelState() for c in self._channels}

    def kinds(self) -> set[str]:
        """The kinds of channel configured (which notifier plugins are in use)."""
        return {c.kind for c in self._channels.values()}

    def channels(self) -> list[ChannelReport]:
        """Every channel (in config order) with its last outcome and recent failures."""
        reports = []
        for channel in self._channels.values():
            state = self._states.setdefault(channel.id, ChannelState())
            reports.append(ChannelReport(channel, state.last, state.recent_failures()))
        return reports

    # --- observing jobs ---

    def observe(self, change: JobChange) -> None:
        """A `JobStore` observer: never blocks, never raises into the job's update."""
        if self._stopping or not (self._channels or self._feeds):
            return
        try:
            notification = notification_for(change, self._run_url)
        except Exception:
            logger.exception("building a notification for job %s failed", change.job.id)
            return
        if notification is not None:
            self._enqueue(notification, f"{notification.event} for job {change.job.id}")

    def _run_url(self, job: Job) -> str:
        return f"{self._base}/dashboard/#/runs/{job.id}"

    def subscribe(self) -> NotificationFeed:
        """The notifications from now on (`GET /notifications/stream`)."""
        feed = NotificationFeed(self)
        if self._stopping:
            feed.close()
        else:
            self._feeds.add(feed)
        return feed

    async def stop(self) -> None:
        await super().stop()
        for feed in list(self._feeds):
            feed.close()

    # --- delivering ---

    async def _route(self, item: Notification) -> list[tuple[Channel, Notification]]:
        for feed in list(self._feeds):
            feed.offer(item)
        return [(channel, item) for channel in self._channels.values()]

    def _current(self, channel: Channel) -> Channel | None:
        return self._channels.get(channel.id)

    async def _finished(
        self, channel: Channel, notification: Notification, outcome: Delivery, attempts: int
    ) -> None:
        self._record(channel.id, notification, outcome, attempts)
        if not outcome.ok:
            await self._report_failure(channel, notification, outcome, attempts)

    def _record(
        self, channel_id: str, notification: Notification, outcome: Delivery, attempts: int
    ) -> None:
        state = self._states.get(channel_id)
        if state is None:
            return  # removed by a reload meanwhile
        recorded = Outcome.of(notification, outcome, attempts)
        state.last = recorded
        if not outcome.ok:
            state.failures.append(recorded)

    async def _report_failure(
        self, channel: Channel, notification: Notification, outcome: Delivery, attempts: int
    ) -> None:
        """Once per delivery that failed for good: the runner's log and the job's."""
        logger.warning(
            "notification %s (%s, job %s) to channel %s failed after %s: %s",
            notification.delivery_id,
            notification.event,
            notification.job_id,
            channel.id,
            tries(attempts),
            outcome.error,
        )
        if notification.event == "test":
            return
        line = (
            f"[notify] {notification.event} not delivered to channel {channel.id} "
            f"after {tries(attempts)}: {outcome.error}"
        )
        try:
            await self.store.log(notification.job_id, line)
        except Exception:  # the job may be gone; the runner's log has it
            logger.debug("could not log a notification failure on job %s", notification.job_id)

    # --- testing a channel ---

    async def test(self, channel_id: str) -> Delivery | None:
        """Send a sample notification (event `test`) to one channel, once; None if
        there is no such channel. The outcome is kept like any delivery's."""
        channel = self._channels.get(channel_id)
        if channel is None:
            return None
        notification = sample_notification(f"{self._base}/dashboard/#/runs")
        outcome = await self.attempt(channel, notification)
        await self._finished(channel, notification, outcome, 1)
        return outcome


def sample_notification(dashboard_url: str) -> Notification:
    """What a channel's test sends: a made-up job waiting for an answer, linking to
    `dashboard_url` (the runs)."""
    return Notification(
        event="test",
        delivery_id=str(uuid.uuid4()),
        job_id="job-sample",
        title="Test notification from Coro",
        status=AWAITING_DEVELOPER_INPUT,
        reason="A test from Coro's settings: this channel works",
        phase="planning",
        at=iso_now(),
        dashboard_url=dashboard_url,
        question="Does this notification reach you?",
    )
