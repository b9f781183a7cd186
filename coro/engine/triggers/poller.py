"""The local runner's source of trigger events: it polls the trackers the rules watch.

Every `triggers.pollIntervalSeconds` (the first cycle at once), for each (plugin,
repository or project) some rule watches — once, however many rules share it — the feed
(`TriggerFeed.feed_poll`) is asked what happened since the last poll; each event is
offered to the rules of that watch (`rules.matches`) that began watching before it
happened, and a match is started by `TriggerLauncher.launch` (once per event: the job's
id is the event's). The cursors are kept in `$CORO_HOME/triggers/cursors.json`
(`state.TriggerState`) after every poll, so a restart goes on where it stopped (events
seen again start nothing) and a new watch starts at the provider's "now" (no job for what
happened before the rule).

With no rule the poller has no task at all; `reconfigure` (a config reload) starts it
(or lets it end after its cycle), takes the new rules and plugins, and the new interval
at once (the next cycle is due that long after the last). A plugin that is not installed
or cannot be polled is logged once per configuration; a failing poll is logged once per
failure streak (and when it recovers) and tried again the next cycle; a rate-limited
plugin is left alone until its `retry_after`. In hybrid mode the plugins whose webhooks
reach the runner's team are not polled (their events come from the cloud).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from coro.config import CoroConfig
from coro.config.triggers import TriggerRule
from coro.domain.errors import PluginError, PluginRateLimited
from coro.engine.service import Conflict, InvalidRequest, PluginRequired, UpstreamFailed
from coro.engine.triggers.events import TriggerEvent, TriggerFeed, feed_time
from coro.engine.triggers.launch import Launched, TriggerLauncher
from coro.engine.triggers.rules import matches
from coro.engine.triggers.state import TriggerState, scope_key
from coro.plugins.registry import PluginSet

logger = logging.getLogger(__name__)

_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass
class _Watch:
    """One (plugin, scope) some rules watch."""

    plugin_id: str
    scope: str  # as the first rule wrote it
    rules: list[TriggerRule] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.plugin_id}:{self.scope}"


class TriggerPoller:
    def __init__(
        self,
        launcher: TriggerLauncher,
        plugins: PluginSet,
        config: CoroConfig,
        state_dir: Path,
        *,
        webhooks: Callable[[str], bool] | None = None,
    ) -> None:
        self.launcher = launcher
        self.plugins = plugins
        self.config = config
        self.state_dir = state_dir
        #: plugins whose events arrive as webhooks now: not polled
        self.webhooks = webhooks or (lambda plugin_id: False)
        self._state: TriggerState | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._failing: dict[str, str] = {}  # watch -> the error of its failure streak
        self._limited_until: dict[str, float] = {}  # plugin -> monotonic time
        self._unusable: set[str] = set()  # plugins already logged as not pollable

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        return self.config.triggers.poll_interval_seconds

    @property
    def is_polling(self) -> bool:
        """Whether the background loop runs (only while there are rules)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._running = True
        self._sync_task()

    async def stop(self) -> None:
        self._running = False
        await self._stop_task()

    def reconfigure(self, plugins: PluginSet, config: CoroConfig) -> None:
        """Take a reloaded config: its rules, interval and plugins (now, not next cycle)."""
        self.plugins = plugins
        self.config = config
        self.launcher.reconfigure(config, plugins)
        self._unusable.clear()
        self._limited_until.clear()  # a rebuilt plugin gets its own chance
        if self._running:
            self._sync_task()
            self._wakeup.set()

    def _sync_task(self) -> None:
        """A task while there are rules (and the poller runs): without rules the loop
        ends after its cycle (never cancelled halfway through starting a job)."""
        if self.config.triggers.rules and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._loop(), name="trigger-poller")

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        last: float | None = None
        while self.config.triggers.rules:
            if last is None or time.monotonic() >= last + self.interval:
                last = time.monotonic()
                try:
                    await self.poll_once()
                except Exception:  # a bug in one cycle must not stop the triggers for good
                    logger.exception("trigger polling cycle failed")
            # a reload wakes the loop: the next cycle is due by the new interval
            remaining = max(0.0, last + self.interval - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
            self._wakeup.clear()

    # --- one cycle ------------------------------------------------------------------------

    async def poll_once(self) -> list[Launched]:
        """Poll every watch once; what it launched (jobs created, and found existing)."""
        async with self._lock:
            state = await self._loaded()
            watches = self._watches()
            wanted = {
                (rule.id, watch.plugin_id, watch.scope) for watch in watches for rule in watch.rules
            }
            if state.keep(wanted):
                await asyncio.to_thread(state.save)
            launched: list[Launched] = []
            for watch in watches:
                feed = self._feed(watch)
                if feed is None:
                    continue
                launched.extend(await self._poll(state, watch, feed))
            return launched

    async def _loaded(self) -> TriggerState:
        if self._state is None:
            self._state = await asyncio.to_thread(TriggerState.load, self.state_dir)
        return self._state

    def _watches(self) -> list[_Watch]:
        found: dict[tuple[str, str], _Watch] = {}
        for rule in self.config.triggers.rules:
            for scope in dict.fromkeys(rule.repos):
                watch = found.setdefault(
                    (rule.plugin, scope_key(scope)), _Watch(rule.plugin, scope.strip())
                )
                if rule not in watch.rules:
                    watch.rules.append(rule)
        return list(found.values())

    def _feed(self, watch: _Watch) -> TriggerFeed | None:
        plugin_id = watch.plugin_id
        if self.webhooks(plugin_id):
            return None
        if self._limited_until.get(plugin_id, 0.0) > time.monotonic():
            return None
        plugin = self.plugins.get("tracker", plugin_id)
        if isinstance(plugin, TriggerFeed):
            return plugin
        if plugin_id not in self._unusable:
            self._unusable.add(plugin_id)
            rules = ", ".join(sorted({r.id for r in watch.rules}))
            if plugin_id in self.plugins.failed:
                why = self.plugins.failed[plugin_id]
            elif plugin is not None:
                why = "this tracker cannot be polled for events"
            elif self.plugins.get("scm", plugin_id) is not None:
                why = "a source-control plugin; rules watch a tracker (github-issues, jira)"
            else:
                why = "no such tracker is configured (plugins.installed)"
            logger.warning("trigger rule(s) %s: plugin %s: %s", rules, plugin_id, why)
        return None

    async def _poll(self, state: TriggerState, watch: _Watch, feed: TriggerFeed) -> list[Launched]:
        plugin_id, scope = watch.plugin_id, watch.scope
        try:
            since = state.since(plugin_id, scope)
            if since is None:  # a new watch: from now on
                start = await feed.feed_start(scope)
                state.set_since(plugin_id, scope, start)
                for rule in watch.rules:
                    state.set_start(rule.id, plugin_id, scope, start)
                await asyncio.to_thread(state.save)
                self._recovered(watch)
                return []
            for rule in watch.rules:
                if state.start(rule.id, plugin_id, scope) is None:  # a rule new to the watch
                    state.set_start(rule.id, plugin_id, scope, await feed.feed_start(scope))
            page = await feed.feed_poll(scope, since)
        except PluginRateLimited as exc:
            self._limited_until[plugin_id] = time.monotonic() + exc.retry_after
            logger.warning("trigger polling of %s rate-limited: %s", plugin_id, exc)
            return []
        except PluginError as exc:
            self._failed(watch, str(exc))
            return []
        self._recovered(watch)
        launched: list[Launched] = []
        for event in page.events:
            for rule in watch.rules:
                began = feed_time(state.start(rule.id, plugin_id, scope))
                if began is None or (feed_time(event.at) or _EPOCH) < began:
                    continue  # before the rule watched here
                if matches(rule, event):
                    done = await self._launch(rule, event, feed)
                    if done is not None:
                        launched.append(done)
        state.set_since(plugin_id, scope, page.since)
        await asyncio.to_thread(state.save)
        return launched

    async def _launch(
        self, rule: TriggerRule, event: TriggerEvent, feed: TriggerFeed
    ) -> Launched | None:
        try:
            done = await self.launcher.launch(rule, event, feed)
        except (InvalidRequest, PluginRequired, UpstreamFailed, Conflict, PluginError) as exc:
            # not retried: the event is past (a later event may start the job)
            logger.warning(
                "trigger rule %s: no job for %s (%s): %s", rule.id, event.event_key, event.key, exc
            )
            return None
        if done.created:
            logger.info("trigger rule %s started job %s (%s)", rule.id, done.job.id, event.key)
        return done

    def _failed(self, watch: _Watch, error: str) -> None:
        if watch.name not in self._failing:
            logger.warning(
                "trigger polling of %s failed (retried every cycle): %s", watch.name, error
            )
        self._failing[watch.name] = error

    def _recovered(self, watch: _Watch) -> None:
        if self._failing.pop(watch.name, None) is not None:
            logger.info("trigger polling of %s works again", watch.name)
