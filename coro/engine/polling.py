"""The local runner's event source: it polls the pull requests of parked jobs (SPEC §4.4).

A poll looks at an open PR (`prMappings` entry neither merged nor declined, or a legacy
`awaitingPrId`) of a job parked waiting for events (not paused), asks its SCM plugin
for the PR's status (`poll_pr`, which uses ETags where the forge has them and answers
None for "unchanged"), and compares it with what was last seen:

* state changed → `pullrequest:fulfilled` (merged), `pullrequest:rejected` (declined)
  or `pullrequest:updated`;
* more approvals → `pullrequest:approved`;
* each comment not seen before → `pullrequest:comment_created`.

What was seen is stored on the PR mapping (`seen`), so a restart neither repeats nor
loses a change; a PR the job opened starts from "open, no approvals, no comments", and
the agent's own comments are recorded as seen when it posts them. A PR never seen
before (cold start) yields at most one event, and only if it is what the job is
waiting for (its `awaitingEvent` mentions approval, merge or decline).

After `failure_threshold` consecutive failed polls of one PR the job is woken with
`pullrequest:rejected` (`state: NOT_FOUND`) so the agent can decide; rate-limited
plugins are skipped until their wait is over.

What wakes the poller (and nothing else does: an idle runner's poller sleeps)
-----------------------------------------------------------------------------
The poller keeps an index of the parked jobs that have open PRs (job id → the SCM
plugins its PRs name), so no cycle lists jobs:

* **Start**: after `connect`, in the background, `poll_once()` reads every job waiting
  for events from the store, a page at a time (`coro.state.scan.walk_jobs`: the
  documents are not kept), indexes those with open PRs and polls each of their open
  PRs once, on every plugin (what changed while the runner was down, or just before it
  stopped). Updates written meanwhile keep the index right (next point).
* **Job updates** (`JobStore.observers`, every update this process writes) keep the
  index: a job that parks with open PRs goes in, one that wakes, pauses, ends or has
  no open PR left goes out. No I/O, no cycle. (A job that another process sharing the
  store parks is indexed at this runner's next start; that process polls it.)
* **The timer** is armed only while an indexed job has an open PR on a plugin that
  does not announce its changes (GitHub, Bitbucket, drop-ins): every
  `interval_seconds` it polls those PRs, and only those jobs are read. A job that
  parks on such a plugin arms it if it is not armed: it is polled at the next cycle.
  With no such job there is no timer at all. PRs of plugins whose webhooks reach the
  runner now (a hybrid runner, `webhooks`) are skipped without reading their job; the
  timer still fires while such jobs wait, since the link may drop at any moment.
* **Change announcements**: an SCM plugin that announces its changes
  (`ChangeNotifier`: the `local` SCM, after an approval, a comment or a merge) calls
  `poll_soon()`; after the change delay (repeated calls within it make one cycle) the
  open PRs on announcing plugins are polled. They are never polled on the timer.

All events of one cycle are handed to the dispatcher together: a job parked on a PR
wakes once with every change in one prompt.

The built-in `polling` transport plugin (`create`); `reconfigure` takes the plugins and
`polling` settings of a config reload (and re-sorts the index: which plugin a job's PR
is on, and whether it announces its changes, may have changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from coro.config import CoroConfig
from coro.domain.errors import PluginError, PluginRateLimited
from coro.domain.models import WAITING_FOR_EVENTS, ExternalRef, Job, PrMapping, PrSeen
from coro.engine.events import EventHandler, InboundEvent, TransportContext
from coro.plugins.registry import PluginResolutionError, PluginSet
from coro.plugins.scm.base import ChangeNotifier, PrStatus, ScmPlugin
from coro.state.scan import walk_jobs
from coro.state.store import JobChange, JobStore

logger = logging.getLogger(__name__)

_COLD_START_WORDS = {
    "pullrequest:approved": ("approv",),
    "pullrequest:fulfilled": ("merge", "fulfil"),
    "pullrequest:rejected": ("declin", "reject"),
}

#: Which PRs a cycle polls, by their plugin.
Wanted = Callable[[ScmPlugin], bool]


@dataclass(frozen=True)
class _Target:
    job: Job
    ref: ExternalRef
    plugin: ScmPlugin
    mapping: PrMapping | None  # None: a legacy `awaitingPrId` without a mapping


@dataclass(eq=False)
class _Parked:
    """An indexed job. A new object whenever the job is indexed again, so a cycle that
    read the job meanwhile can tell whether what it read is still the latest word."""

    #: the SCM plugins its open PRs name (None: the default one), see `Job.scm_plugin_id`
    plugins: frozenset[str | None]
    #: whether some of them are polled on the timer / announce their changes
    timed: bool
    notified: bool


def pr_plugins(job: Job) -> frozenset[str | None]:
    """The SCM plugins (as the job names them) of the PRs an event would wake `job` for:
    none unless it is parked waiting for events and not paused."""
    if job.status not in WAITING_FOR_EVENTS or job.paused:
        return frozenset()
    names = {job.scm_plugin_id(mapping.plugin_id) for mapping in job.open_prs()}
    repo = job.params.get("repo")
    legacy = job.awaiting_pr_id is not None and job.find_pr(job.awaiting_pr_id) is None
    if legacy and isinstance(repo, str) and repo:
        names.add(job.scm_plugin_id(None))
    return frozenset(names)


def _announces(plugin: ScmPlugin) -> bool:
    return isinstance(plugin, ChangeNotifier)


def _timed(plugin: ScmPlugin) -> bool:
    return not isinstance(plugin, ChangeNotifier)


def _any(plugin: ScmPlugin) -> bool:
    return True


class PollingTransport:
    def __init__(
        self,
        store: JobStore,
        plugins: PluginSet,
        *,
        interval_seconds: float = 60.0,
        failure_threshold: int = 5,
        change_delay_seconds: float = 1.0,
        webhooks: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.plugins = plugins
        #: plugins whose events arrive as webhooks now: their PRs are not polled
        self.webhooks = webhooks or (lambda plugin_id: False)
        self.interval = interval_seconds
        self.failure_threshold = failure_threshold
        self.change_delay = change_delay_seconds
        self._handler: EventHandler | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._soon: asyncio.TimerHandle | None = None
        #: the next timed cycle, armed only while `_timed_jobs` is not empty
        self._timer: asyncio.TimerHandle | None = None
        #: which cycles are due when `_wakeup` is set
        self._due_timed = False
        self._due_notified = False
        #: cleared from `connect` until the start-up polls are done
        self._started = asyncio.Event()
        self._started.set()
        #: the index: parked jobs with open PRs, and those with some on a timed plugin
        self._parked: dict[str, _Parked] = {}
        self._timed_jobs: set[str] = set()
        self._failures: dict[str, int] = {}
        self._cold: dict[str, PrSeen] = {}  # legacy PRs without a mapping to store it on
        self._rate_limited_until: dict[str, float] = {}
        self._notifiers: list[ChangeNotifier] = []
        self._subscribe(plugins)

    # --- EventTransport ---------------------------------------------------------------

    async def connect(self, handler: EventHandler) -> None:
        self._handler = handler
        self.store.observers.append(self._observe)  # before the scan: nothing is missed
        self._started.clear()
        self._task = asyncio.create_task(self._loop(), name="pr-poller")

    async def disconnect(self) -> None:
        self._handler = None
        with contextlib.suppress(ValueError):
            self.store.observers.remove(self._observe)
        for handle in (self._soon, self._timer):
            if handle is not None:
                handle.cancel()
        self._soon = self._timer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._started.set()
        self._parked.clear()
        self._timed_jobs.clear()
        self._failures.clear()
        self._cold.clear()
        self._rate_limited_until.clear()

    @property
    def is_connected(self) -> bool:
        return self._handler is not None

    def reconfigure(self, plugins: PluginSet, config: CoroConfig) -> None:
        polling = config.polling
        self.interval = polling.interval_seconds
        self.failure_threshold = polling.failure_threshold
        self.change_delay = polling.local_change_delay_seconds
        self.plugins = plugins
        self._subscribe(plugins)
        # which plugin each PR is on, and whether it announces changes, may differ now
        for job_id, entry in list(self._parked.items()):
            self._put(job_id, entry.plugins)
        self._schedule()

    def _subscribe(self, plugins: PluginSet) -> None:
        """Listen to the SCM plugins of `plugins` that announce changes (only those)."""
        now: list[ChangeNotifier] = [
            p for p in plugins.scm.instances().values() if isinstance(p, ChangeNotifier)
        ]
        for old in self._notifiers:
            if not any(old is plugin for plugin in now):
                old.remove_listener(self.poll_soon)
        for plugin in now:
            if not any(plugin is old for old in self._notifiers):
                plugin.add_listener(self.poll_soon)
        self._notifiers = now

    # --- the index ----------------------------------------------------------------------

    @property
    def indexed_jobs(self) -> frozenset[str]:
        """The parked jobs with open PRs the poller knows of."""
        return frozenset(self._parked)

    @property
    def timer_armed(self) -> bool:
        """Whether a timed cycle is scheduled (only while a job waits on a polled PR)."""
        return self._timer is not None

    def _observe(self, change: JobChange) -> None:
        """`JobStore` observer: every update this process writes re-indexes its job."""
        self._index(change.job)
        self._schedule()

    def _index(self, job: Job) -> None:
        self._put(job.id, pr_plugins(job))

    def _put(self, job_id: str, names: frozenset[str | None]) -> None:
        if not names:
            self._parked.pop(job_id, None)
            self._timed_jobs.discard(job_id)
            return
        plugins = [p for p in (self._resolve(name) for name in names) if p is not None]
        entry = _Parked(names, any(map(_timed, plugins)), any(map(_announces, plugins)))
        self._parked[job_id] = entry
        if entry.timed:
            self._timed_jobs.add(job_id)
        else:
            self._timed_jobs.discard(job_id)

    def _resolve(self, name: str | None) -> ScmPlugin | None:
        try:
            plugin: ScmPlugin = self.plugins.resolve("scm", name)
        except PluginResolutionError:
            return None  # a full cycle (`_targets`) says why
        return plugin

    async def _rescan(self) -> None:
        """Index every parked job with open PRs the store has (a page at a time)."""
        before = dict(self._parked)
        found: set[str] = set()
        async for job in walk_jobs(self.store.backend, WAITING_FOR_EVENTS):
            found.add(job.id)
            if self._parked.get(job.id) is before.get(job.id):  # not updated meanwhile
                self._index(job)
        for job_id, entry in before.items():
            if job_id not in found and self._parked.get(job_id) is entry:
                self._put(job_id, frozenset())  # not parked any more

    # --- scheduling -------------------------------------------------------------------

    def poll_soon(self) -> None:
        """Poll the PRs on announcing plugins after the change delay (repeated calls
        within it make one cycle)."""
        if self._handler is None or self._soon is not None:
            return
        loop = asyncio.get_running_loop()
        self._soon = loop.call_later(self.change_delay, self._soon_due)

    def _soon_due(self) -> None:
        self._soon = None
        self._due_notified = True
        self._wakeup.set()

    def _schedule(self) -> None:
        """Keep the timer armed exactly while a job waits on a polled PR (connected)."""
        if self._timer is not None and not self._timed_jobs:
            self._timer.cancel()  # nothing left for it to poll
            self._timer = None
        elif self._timer is None and self._timed_jobs and self._handler is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self._timer_due)

    def _timer_due(self) -> None:
        self._timer = None
        self._due_timed = True
        self._wakeup.set()

    async def _loop(self) -> None:
        # the index, and what changed while the runner was down: every open PR, once
        await self._cycle(self.poll_once())
        self._started.set()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            timed, notified = self._due_timed, self._due_notified
            self._due_timed = self._due_notified = False
            await self._cycle(self.poll_indexed(timed=timed, notified=notified))

    async def _cycle(self, work: Awaitable[list[InboundEvent]]) -> None:
        try:
            await work
        except Exception:  # a bug in one cycle must not stop polling for good
            logger.exception("PR polling cycle failed")
        self._schedule()

    # --- cycles -------------------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Until the start-up polls are done and no cycle runs (tests, benchmarks)."""
        await self._started.wait()
        async with self._lock:
            pass

    async def poll_once(self) -> list[InboundEvent]:
        """A full cycle: find every parked job in the store again, and poll every open PR
        of those that have some, on every plugin (at start; tests and benchmarks)."""
        async with self._lock:
            await self._rescan()
            return await self._poll_jobs(list(self._parked), _any)

    async def poll_indexed(self, *, timed: bool, notified: bool) -> list[InboundEvent]:
        """A cycle over the index, no listing: the open PRs of indexed jobs on plugins
        polled on the timer (`timed`) and/or on plugins that announce their changes."""
        async with self._lock:
            if timed and notified:
                ids = [i for i, e in self._parked.items() if e.timed or e.notified]
                return await self._poll_jobs(ids, _any)
            if timed:
                return await self._poll_jobs(list(self._timed_jobs), _timed)
            if notified:
                ids = [i for i, e in self._parked.items() if e.notified]
                return await self._poll_jobs(ids, _announces)
            return []

    async def _poll_jobs(self, job_ids: Iterable[str], wanted: Wanted) -> list[InboundEvent]:
        """Poll the open PRs on `wanted` plugins of the indexed jobs `job_ids` (each job
        read once, when it has any such PR not served by webhooks); deliver the events."""
        events: list[InboundEvent] = []
        # Only jobs an event would wake: for the others (paused, escalated, failed, out
        # of budget) what changed stays unseen until they wait on their PRs again.
        for job_id in job_ids:
            entry = self._parked.get(job_id)
            if entry is None or not self._worth_reading(entry, wanted):
                continue
            job = await self.store.find(job_id)
            names = pr_plugins(job) if job is not None else frozenset()
            if self._parked.get(job_id) is entry and names != entry.plugins:
                self._put(job_id, names)  # changed by another process: what it is now
            if job is None or not names:
                continue
            for target in self._targets(job):
                if wanted(target.plugin):
                    events.extend(await self._poll(target))
        if events and self._handler is not None:
            await self._handler(events)
        return events

    def _worth_reading(self, entry: _Parked, wanted: Wanted) -> bool:
        if wanted is _any:
            return True  # every PR: unresolvable plugins too, so `_targets` says why
        for name in entry.plugins:
            plugin = self._resolve(name)
            if plugin is not None and wanted(plugin) and not self.webhooks(plugin.id):
                return True
        return False

    def _targets(self, job: Job) -> list[_Target]:
        targets = []
        for mapping in job.open_prs():
            plugin = self._plugin(job, mapping.plugin_id)
            if plugin is None or self.webhooks(plugin.id):
                continue
            ref = ExternalRef(
                kind="pull_request",
                plugin_id=plugin.id,
                repo_key=mapping.repo_slug,
                external_id=str(mapping.pr_id),
                url=mapping.url,
            )
            targets.append(_Target(job, ref, plugin, mapping))
        pr_id = job.awaiting_pr_id
        if pr_id is not None and job.find_pr(pr_id) is None:
            repo = job.params.get("repo")
            plugin = self._plugin(job, None)
            if (
                isinstance(repo, str)
                and repo
                and plugin is not None
                and not self.webhooks(plugin.id)
            ):
                ref = ExternalRef(
                    kind="pull_request", plugin_id=plugin.id, repo_key=repo, external_id=str(pr_id)
                )
                targets.append(_Target(job, ref, plugin, None))
        return targets

    def _plugin(self, job: Job, plugin_id: str | None) -> ScmPlugin | None:
        try:
            plugin: ScmPlugin = self.plugins.resolve("scm", job.scm_plugin_id(plugin_id))
        except PluginResolutionError as exc:
            logger.warning("job %s: cannot poll its PRs: %s", job.id, exc)
            return None
        return plugin

    async def _poll(self, target: _Target) -> list[InboundEvent]:
        ref = target.ref
        key = f"{ref.plugin_id}:{ref.repo_key}:{ref.external_id}"
        if self._rate_limited_until.get(ref.plugin_id, 0.0) > time.monotonic():
            return []
        pr_id = int(ref.external_id)
        assert ref.repo_key is not None
        try:
            status = await target.plugin.poll_pr(ref.repo_key, pr_id)
        except PluginRateLimited as exc:
            self._rate_limited_until[ref.plugin_id] = time.monotonic() + exc.retry_after
            return []
        except PluginError as exc:
            return self._failed(target, key, str(exc), exc.status)
        self._failures.pop(key, None)
        if status is None:  # unchanged since the last poll (304)
            return []
        seen = target.mapping.seen if target.mapping is not None else self._cold.get(key)
        now_seen = PrSeen(
            state=status.pull_request.state,
            approval_count=status.approval_count,
            comment_ids=[c.id for c in status.comments],
        )
        if seen is None:
            events = self._cold_start(target, status)
        else:
            events = self._changes(target, seen, status)
        if seen != now_seen:
            await self._remember(target, key, now_seen)
        return events

    def _failed(
        self, target: _Target, key: str, reason: str, status_code: int | None
    ) -> list[InboundEvent]:
        count = self._failures.get(key, 0) + 1
        logger.warning("polling %s failed (%d in a row): %s", key, count, reason)
        if count < self.failure_threshold:
            self._failures[key] = count
            return []
        self._failures.pop(key, None)
        self._cold.pop(key, None)
        payload = {"state": "NOT_FOUND", "reason": reason, "statusCode": status_code}
        return [self._event(target, "pullrequest:rejected", payload, "NOT_FOUND")]

    def _cold_start(self, target: _Target, status: PrStatus) -> list[InboundEvent]:
        state = status.pull_request.state
        payload: dict[str, Any]
        if state == "merged":
            key, payload = "pullrequest:fulfilled", {"state": "MERGED"}
        elif state == "declined":
            key, payload = "pullrequest:rejected", {"state": "DECLINED"}
        elif status.approval_count > 0:
            key, payload = "pullrequest:approved", {"approvalCount": status.approval_count}
        else:
            return []
        label = (target.job.awaiting_event or "").lower()
        if not any(word in label for word in _COLD_START_WORDS[key]):
            return []
        return [self._event(target, key, payload, state.upper())]

    def _changes(self, target: _Target, seen: PrSeen, status: PrStatus) -> list[InboundEvent]:
        events = []
        pr = status.pull_request
        state = pr.state.upper()
        if pr.state != seen.state:
            key = {"merged": "pullrequest:fulfilled", "declined": "pullrequest:rejected"}.get(
                pr.state, "pullrequest:updated"
            )
            events.append(self._event(target, key, {"state": state}, state))
        if status.approval_count > seen.approval_count:
            payload = {"approvalCount": status.approval_count, "approvedBy": status.approved_by}
            events.append(self._event(target, "pullrequest:approved", payload, state))
        known = set(seen.comment_ids)
        for comment in status.comments:
            if comment.id in known:
                continue
            payload = {
                "comment": {
                    "id": comment.id,
                    "content": {"raw": comment.body},
                    "user": {"display_name": comment.author},
                    "created_on": comment.created_at,
                    "inReplyTo": comment.in_reply_to,
                    "path": comment.path,
                }
            }
            events.append(self._event(target, "pullrequest:comment_created", payload, state))
        return events

    def _event(
        self, target: _Target, key: str, payload: dict[str, Any], state: str
    ) -> InboundEvent:
        pr_id = int(target.ref.external_id)
        return InboundEvent(
            job_id=target.job.id,
            event_key=key,
            payload={**payload, "prId": pr_id, "pullrequest": {"id": pr_id, "state": state}},
            plugin_id=target.ref.plugin_id,
            ref=target.ref,
        )

    async def _remember(self, target: _Target, key: str, now_seen: PrSeen) -> None:
        if target.mapping is None:
            self._cold[key] = now_seen
            return
        pr_id, repo = target.mapping.pr_id, target.mapping.repo_slug

        def store_seen(job: Job) -> bool:
            mapping = job.find_pr(pr_id, repo)
            if mapping is None:
                return False
            # Keep comments recorded meanwhile (the agent's own, posted after a wake).
            earlier = mapping.seen.comment_ids if mapping.seen is not None else []
            ids = list(dict.fromkeys([*earlier, *now_seen.comment_ids]))
            mapping.seen = now_seen.model_copy(update={"comment_ids": ids})
            return True

        await self.store.update(target.job.id, store_seen)


def create(settings: dict[str, Any], context: TransportContext) -> PollingTransport:
    """The `polling` transport plugin; it takes its settings from `config.polling`."""
    transport = PollingTransport(context.store, context.plugins, webhooks=context.webhooks)
    transport.reconfigure(context.plugins, context.config)
    return transport
