"""The local runner's event source: it polls the pull requests of parked jobs (SPEC §4.4).

Every cycle looks at each open PR (`prMappings` entry neither merged nor declined, or a
legacy `awaitingPrId`) of every job parked waiting for events (not paused), asks its SCM
plugin for the PR's status (`poll_pr`, which uses ETags where the forge has them and
answers None for "unchanged"), and compares it with what was last seen:

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

All events of one cycle are handed to the dispatcher together: a job parked on a PR
wakes once with every change in one prompt. `poll_soon()` asks for an early cycle: the
transport subscribes it to every SCM plugin that announces its changes
(`ChangeNotifier`: the `local` SCM, after an approval, a comment or a merge).

The built-in `polling` transport plugin (`create`); `reconfigure` takes the plugins and
`polling` settings of a config reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coro.config import CoroConfig
from coro.domain.errors import PluginError, PluginRateLimited
from coro.domain.models import WAITING_FOR_EVENTS, ExternalRef, Job, PrMapping, PrSeen
from coro.engine.events import EventHandler, InboundEvent, TransportContext
from coro.plugins.registry import PluginResolutionError, PluginSet
from coro.plugins.scm.base import ChangeNotifier, PrStatus, ScmPlugin
from coro.state.store import JobStore

logger = logging.getLogger(__name__)

_COLD_START_WORDS = {
    "pullrequest:approved": ("approv",),
    "pullrequest:fulfilled": ("merge", "fulfil"),
    "pullrequest:rejected": ("declin", "reject"),
}


@dataclass(frozen=True)
class _Target:
    job: Job
    ref: ExternalRef
    plugin: ScmPlugin
    mapping: PrMapping | None  # None: a legacy `awaitingPrId` without a mapping


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
        self._failures: dict[str, int] = {}
        self._cold: dict[str, PrSeen] = {}  # legacy PRs without a mapping to store it on
        self._rate_limited_until: dict[str, float] = {}
        self._notifiers: list[ChangeNotifier] = []
        self._subscribe(plugins)

    # --- EventTransport ---------------------------------------------------------------

    async def connect(self, handler: EventHandler) -> None:
        self._handler = handler
        self._task = asyncio.create_task(self._loop(), name="pr-poller")

    async def disconnect(self) -> None:
        self._handler = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
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

    # --- scheduling -------------------------------------------------------------------

    def poll_soon(self) -> None:
        """Poll after the change delay (repeated calls within it make one poll)."""
        if self._handler is None or self._soon is not None:
            return
        loop = asyncio.get_running_loop()
        self._soon = loop.call_later(self.change_delay, self._poll_now)

    def _poll_now(self) -> None:
        self._soon = None
        self._wakeup.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # a bug in one cycle must not stop polling for good
                logger.exception("PR polling cycle failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.interval)
            self._wakeup.clear()

    # --- one cycle --------------------------------------------------------------------

    async def poll_once(self) -> list[InboundEvent]:
        """Poll every open PR of every parked job once; deliver and return the events."""
        async with self._lock:
            events: list[InboundEvent] = []
            # Only jobs an event would wake: for the others (paused, escalated, failed,
            # out of budget) what changed stays unseen until they wait on their PRs again.
            for job in await self.store.backend.jobs_with_status(WAITING_FOR_EVENTS):
                if job.paused:
                    continue
                for target in self._targets(job):
                    events.extend(await self._poll(target))
            if events and self._handler is not None:
                await self._handler(events)
            return events

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
