"""The runner: composes state, intelligence, executors, tools and the dispatcher.

`Runner` is the composition root; `coro.api.server.serve()` puts its HTTP API on a
socket. Tests, the demo and `coro start` all go through these two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from coro.config import CoroConfig, CoroHome
from coro.engine.campaigns.controls import CampaignService
from coro.engine.cloud_commands import CloudCommands
from coro.engine.dispatcher import Dispatcher
from coro.engine.env import EngineEnv
from coro.engine.events import EventTransport, TransportContext
from coro.engine.intake import IntakeService
from coro.engine.notifications import Channel, Notifications
from coro.engine.service import JobService
from coro.engine.thread_replies import ThreadReplies
from coro.engine.triggers import TriggerLauncher, TriggerPoller
from coro.executors import ExecutorRegistry
from coro.extensions import Extensions
from coro.intelligence.layers import IntelligenceLayers
from coro.intelligence.proposals import import_disk_proposals
from coro.mcp.service import McpService
from coro.plugins.context import PluginContext
from coro.plugins.registry import PluginSlots
from coro.state.backend import StateBackend
from coro.state.cloud.backend import CloudStateBackend
from coro.state.cloud.link import CloudLink, LinkTimings, RunnerLoad
from coro.state.store import JobStore
from coro.tools import ToolRegistry, ToolSet
from coro.tools.sandbox import runner_policy
from coro.version import __version__

#: config.json keys a running runner cannot take over (they are read at start).
RESTART_REQUIRED_KEYS = (
    "host",
    "port",
    "paths",
    "mcpServers",
    "intelligence",
    "state",
    "cloud",
)
#: how long stopping waits for the cloud to acknowledge what is not replicated yet
CLOUD_FLUSH_ON_STOP_SECONDS = 10.0

logger = logging.getLogger(__name__)


@dataclass
class ReloadResult:
    """What a config reload changed: plugin ids added, rebuilt, removed, or failing."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "failed": self.failed,
            "restartRequired": self.restart_required,
        }


class Runner:
    def __init__(
        self,
        home: CoroHome,
        config: CoroConfig | None = None,
        *,
        backend: StateBackend | None = None,
        executors: ExecutorRegistry | None = None,
        tools: ToolRegistry | None = None,
        transport: EventTransport | None = None,
        link_timings: LinkTimings | None = None,
    ) -> None:
        self.home = home
        self.config = config if config is not None else home.load_config()
        #: every plugin: the built-ins, and the drop-ins under `$CORO_HOME/plugins/site`
        self.extensions = Extensions(home)
        self.catalog = self.extensions.catalog
        backend = backend or self.extensions.state_backend(self.config)
        #: the team cloud's link in hybrid mode (`cloud.url` and `cloud.token` set)
        self.link: CloudLink | None = None
        self.cloud_backend: CloudStateBackend | None = None
        cloud = self.config.cloud
        if cloud.enabled:
            assert cloud.url is not None and cloud.token is not None
            self.link = CloudLink(
                cloud.url,
                cloud.token,
                cloud_dir=home.root / "cloud",
                runner_id=cloud.runner_id,
                load=self._load,
                timings=link_timings,
            )
            backend = self.cloud_backend = CloudStateBackend(
                backend, self.link, home.root / "cloud"
            )
        self.backend = backend
        self.store = JobStore(self.backend)
        #: what plugins and executors are created with (the local SCM's pull requests
        #: live in the backend)
        self.plugin_context = PluginContext(home, prs=self.backend.prs)
        self.plugins = self.extensions.plugins(self.config, self.plugin_context)
        self._own_executors = executors is None
        #: the tool plugins whose tools are in the registry (none for an injected one)
        self.tool_plugins: PluginSlots[ToolSet] | None = None
        if tools is None:
            tools = ToolRegistry()
            self.tool_plugins = self.extensions.tools(self.config, self.plugin_context, tools)
        self.env = EngineEnv(
            store=self.store,
            layers=IntelligenceLayers.from_config(home, self.config),
            executors=executors or self.extensions.executors(self.config, self.plugin_context),
            tools=tools,
            config=self.config,
            work_root=home.work_dir(self.config),
            plugins=self.plugins,
            sandbox=runner_policy(home, self.config),
        )
        self.dispatcher = Dispatcher(self.env)
        self.jobs = JobService(self.env, self.dispatcher)
        self.campaigns = CampaignService(self.env, self.dispatcher, self.jobs)
        self.env.campaigns = self.campaigns
        self.dispatcher.on_run_end.append(self.campaigns.on_run_end)
        self.jobs.on_cancelled.append(self.campaigns.cancel_children)
        self.intake = IntakeService(self.env, self.config.intake)
        self.mcp = McpService(self.env)
        #: parked jobs' questions posted in the issue or PR they came from, answers read back
        #: (in hybrid mode, those of plugins whose webhooks reach the team come from them)
        self.thread_replies = ThreadReplies(self.env, self.jobs, webhooks=self._receives_webhooks)
        self.store.observers.append(self.thread_replies.observe)
        #: the cloud's commands (`use_api` is called by the API layer that serves us)
        self.cloud_commands = CloudCommands(
            self.env, self.jobs, self.dispatcher, self.thread_replies
        )
        if self.link is not None:
            self.link.handler = self.cloud_commands.handle
            self.dispatcher.on_run_end.append(self._slot_freed)
        self.transport = transport or self.extensions.transport(
            self.config,
            TransportContext(
                home, self.store, self.plugins, self.config, webhooks=self._receives_webhooks
            ),
        )
        #: tells people when a job needs them (the `notifications` channels, and the
        #: dashboard's live feed); it hears every update this process writes
        self.notifications = Notifications(self.store, self.config, self._notifiers(self.config))
        self.store.observers.append(self.notifications.observe)
        #: jobs started by tracker and PR events (`triggers.rules`), polled while rules exist
        self.triggers = TriggerPoller(
            TriggerLauncher(self.jobs, self.config, self.plugins),
            self.plugins,
            self.config,
            home.root / "triggers",
            webhooks=self._receives_webhooks,
        )
        self.version = __version__
        #: held by whoever reads, changes and reloads config.json (PUT /config, installs)
        self.config_lock = asyncio.Lock()
        #: plugins and executors replaced by a reload, with the runs still using them
        self._retired: list[tuple[set[str], list[Any]]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._tenant_refresh: asyncio.Task[None] | None = None
        self.dispatcher.on_run_end.append(self._run_ended)

    @property
    def mode(self) -> str:
        return "hybrid" if self.link is not None else "local"

    def _load(self) -> RunnerLoad:
        return RunnerLoad(
            capacity=self.config.jobs.max_concurrent, active_job_ids=self.dispatcher.running_ids
        )

    def _slot_freed(self, job_id: str) -> None:
        if self.link is not None:
            self.link.nudge()  # the cloud may send a queued dispatch now

    def _receives_webhooks(self, plugin_id: str) -> bool:
        return self.link is not None and self.link.receives_webhooks(plugin_id)

    def _notifiers(self, config: CoroConfig) -> list[Channel]:
        channels, failed = self.extensions.notifiers(config)
        for channel_id, error in failed.items():
            logger.warning("notification channel %s not loaded: %s", channel_id, error)
        return channels

    def cloud_status(self) -> dict[str, Any]:
        """The link's state for the dashboard (never the token)."""
        link = self.link
        return {
            "mode": self.mode,
            "url": self.config.cloud.url,
            "state": link.state if link is not None else "off",
            "teamId": link.team_id if link is not None else None,
            "teamName": link.team_name if link is not None else None,
            "runnerId": link.runner_id if link is not None else None,
            "lastError": link.last_error if link is not None else None,
            "webhookPlugins": sorted(link.webhook_plugins) if link is not None else [],
        }

    async def reload_config(self, new: CoroConfig) -> ReloadResult:
        """Take over `new` without a restart: config, plugins, executors and tools.

        Plugins and executors whose settings did not change are kept; the others are
        rebuilt. A phase already running keeps the executor and plugins it started with
        (they are closed once the runs using them end); the next phase gets the new ones.
        Never raises for a broken plugin: it is reported in `failed`. Callers that also
        change config.json hold `config_lock` around the change and the reload.
        """
        context = self.plugin_context
        old_config, old_plugins, old_executors = self.config, self.plugins, self.env.executors
        old_tools = self.tool_plugins
        plugins = self.extensions.plugins(new, context, previous=old_plugins)
        executors = old_executors  # an injected registry (tests) is kept as it is
        if self._own_executors:
            executors = self.extensions.executors(new, context, previous=old_executors)
        tools = old_tools
        if old_tools is not None:
            tools = self.extensions.tools(new, context, self.env.tools, previous=old_tools)
            self.tool_plugins = tools
        self.config = self.env.config = new
        self.plugins = self.env.plugins = plugins
        self.env.executors = executors
        self.intake.limits = new.intake
        self.mcp.http.contexts.plugins = plugins
        self.env.sandbox = self.mcp.http.contexts.sandbox = runner_policy(self.home, new)
        self.transport.reconfigure(plugins, new)
        self.triggers.reconfigure(plugins, new)
        self.notifications.reconfigure(new, self._notifiers(new))
        before: dict[str, Any] = {**old_plugins.instances(), **old_executors.instances()}
        after: dict[str, Any] = {**plugins.instances(), **executors.instances()}
        failures = {**plugins.failed, **executors.failed}
        if old_tools is not None and tools is not None:
            before |= old_tools.instances()
            after |= tools.instances()
            failures |= tools.failed
        old_json, new_json = old_config.to_json(), new.to_json()
        result = ReloadResult(
            added=sorted(after.keys() - before.keys()),
            updated=sorted(k for k in after.keys() & before.keys() if after[k] is not before[k]),
            removed=sorted(before.keys() - after.keys()),
            failed=[{"id": k, "error": v} for k, v in sorted(failures.items())],
            restart_required=[
                k for k in RESTART_REQUIRED_KEYS if old_json.get(k) != new_json.get(k)
            ],
        )
        kept = {id(obj) for obj in after.values()}
        await self._retire([obj for obj in before.values() if id(obj) not in kept])
        return result

    async def _retire(self, objects: list[Any]) -> None:
        """Close replaced plugins now, or when the runs that may still use them end."""
        busy = set(self.dispatcher.running_ids)
        if not objects:
            return
        if busy:
            self._retired.append((busy, objects))
        else:
            await _close_all(objects)

    def _run_ended(self, job_id: str) -> None:
        for busy, objects in list(self._retired):
            busy.discard(job_id)
            if not busy:
                self._retired.remove((busy, objects))
                task = asyncio.create_task(_close_all(objects))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def start(self) -> None:
        await asyncio.to_thread(self.home.ensure)
        await asyncio.to_thread(self.env.work_root.mkdir, parents=True, exist_ok=True)
        await self.backend.open()
        await self.notifications.start()
        # proposals an older runner kept as files join the others (once: they are renamed)
        await import_disk_proposals(self.backend.proposals, self.env.layers.tenant_dir)
        # A tenant remote's first clone starts now, in the background: the API is up at
        # once, and jobs (and job creation) wait for the clone rather than see no layer.
        self._tenant_refresh = asyncio.create_task(self.env.layers.refresh())
        await self.transport.connect(self.dispatcher.deliver)
        await self.mcp.start()  # external MCP tools, before any job runs
        self.mcp.http.contexts.campaigns = self.campaigns
        await self.dispatcher.recover()
        await self.campaigns.recover()
        await self.thread_replies.start()
        await self.triggers.start()
        if self.link is not None:
            await self.link.start()  # connects in the background: never waits for the cloud

    async def stop(self) -> None:
        if self._tenant_refresh is not None and not self._tenant_refresh.done():
            self._tenant_refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tenant_refresh
        await self.transport.disconnect()
        await self.triggers.stop()
        await self.thread_replies.stop()
        await self.dispatcher.close()
        await self.campaigns.close()
        await self.notifications.stop()  # no retry is waited for
        await self.mcp.stop()
        await self.env.executors.aclose()
        await self.plugins.aclose()
        retired, self._retired = self._retired, []
        await _close_all([obj for _, objects in retired for obj in objects])
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self.link is not None and self.cloud_backend is not None:
            if self.link.state == "connected":
                try:
                    await asyncio.wait_for(self.cloud_backend.flush(), CLOUD_FLUSH_ON_STOP_SECONDS)
                except TimeoutError:
                    logger.warning("stopping before the cloud acknowledged every change")
            await self.link.stop()
        await self.backend.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Runner]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


async def _close_all(objects: list[Any]) -> None:
    for obj in objects:
        close = getattr(obj, "aclose", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:
            logger.exception("closing a replaced plugin failed")
