"""Every extension point of Coro, and every built-in plugin, in one place (as Datasette's
hook specifications are).

A plugin is of one of seven kinds. Each kind is an `ExtensionPoint`: the Protocol its
plugins implement, and the factory that makes one from its settings (a
`plugins.installed.<id>.config` object) and a context:

| kind        | a plugin is (its Protocol)                  | its factory's context |
|-------------|---------------------------------------------|-----------------------|
| `executor`  | `coro.executors.base.Executor`              | `PluginContext`       |
| `scm`       | `coro.plugins.scm.base.ScmPlugin`           | `PluginContext`       |
| `tracker`   | `coro.plugins.trackers.base.TrackerPlugin`  | `PluginContext`       |
| `tools`     | a list of `coro.tools.registry.Tool`        | `PluginContext`       |
| `state`     | `coro.state.backend.StateBackend`           | `CoroHome`            |
| `transport` | `coro.engine.events.EventTransport`         | `TransportContext`    |
| `notifier`  | `coro.plugins.notifiers.base.Notifier`      | `NotifierContext`     |

Every factory is `create(settings: dict, context) -> <what the kind provides>`.

Optional hooks a plugin may also implement: an executor's `validate_params(params)`
(`ValidatesParams`: checks its own job parameters when a job is created) and `aclose()`;
an SCM plugin's `add_listener`/`remove_listener` (`ChangeNotifier`: the event transport
then hears of its changes at once).

A notifier is made per channel of `notifications` (`webhooks`, `slack`, `email`): the
built-in plugin of that id gets the channel's settings (`Extensions.notifiers`).

The built-ins below (`BUILTIN_PLUGINS`, Datasette's DEFAULT_PLUGINS) enter the catalog
exactly as drop-ins do (`PluginCatalog.register`): a drop-in is a distribution with a
`coro.plugins` entry point and a `MANIFEST` naming its kind (`coro.plugins.dropins`),
and may provide any kind. A plugin whose manifest says `enabledByDefault` is on without
a `plugins.installed` slot (the `script` executor, the `local` SCM, the tools, the
`sql` state backend, `polling`); one is chosen for `state` and `transport`:
`plugins.defaults.<kind>`, else the only one configured, else the one on by default.

This module sits above the layers it names (it is the composition's view of them);
each layer's registry stays typed on its own Protocol (`ExecutorRegistry`, `PluginSet`,
`ToolRegistry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coro.config import CoroConfig, CoroHome, PluginSlot, StateConfig
from coro.config.notifications import DEFAULT_EVENTS, NotificationsConfig
from coro.domain.errors import PluginConfigError
from coro.engine.events import EventTransport, TransportContext
from coro.engine.notifications import Channel
from coro.executors import Executor, ExecutorRegistry
from coro.plugins.context import PluginContext
from coro.plugins.dropins import SITE_DIRNAME, BuiltinPlugin, PluginCatalog, PluginEntry
from coro.plugins.manifest import PluginLoadError
from coro.plugins.notifiers.base import Notifier, NotifierContext
from coro.plugins.registry import (
    ExtensionPoint,
    PluginResolutionError,
    PluginSet,
    PluginSlots,
    unusable,
)
from coro.plugins.scm.base import ScmPlugin
from coro.plugins.trackers.base import TrackerPlugin
from coro.state.backend import StateBackend
from coro.state.factory import state_backend
from coro.state.prs import MemoryPullRequestStore
from coro.tools import ToolRegistry, ToolSet, as_tool_set, sync_tools
from coro.version import __version__

# --- the extension points -----------------------------------------------------------------

EXECUTOR: ExtensionPoint[Executor] = ExtensionPoint(
    "executor",
    "executor",
    Executor,
    "create(settings: dict, context: PluginContext) -> Executor",
    "runs the phases of jobs (llm.defaultProvider, a phase's provider or a model alias)",
)
SCM: ExtensionPoint[ScmPlugin] = ExtensionPoint(
    "scm",
    "source-control",
    ScmPlugin,
    "create(settings: dict, context: PluginContext) -> ScmPlugin",
    "repositories and pull requests: clones, PRs, reviews, merges, PR polling",
)
TRACKER: ExtensionPoint[TrackerPlugin] = ExtensionPoint(
    "tracker",
    "tracker",
    TrackerPlugin,
    "create(settings: dict, context: PluginContext) -> TrackerPlugin",
    "issues: a job's ticket, comments and transitions",
)
TOOLS: ExtensionPoint[ToolSet] = ExtensionPoint(
    "tools",
    "tools",
    list,
    "create(settings: dict, context: PluginContext) -> list[Tool]",
    "tools agents call (every executor and the MCP server share them)",
    convert=as_tool_set,
)
STATE: ExtensionPoint[StateBackend] = ExtensionPoint(
    "state",
    "state backend",
    StateBackend,
    "create(settings: dict, context: CoroHome) -> StateBackend",
    "where jobs, logs and the runner's other records are kept (settings get state.url)",
)
TRANSPORT: ExtensionPoint[EventTransport] = ExtensionPoint(
    "transport",
    "event transport",
    EventTransport,
    "create(settings: dict, context: TransportContext) -> EventTransport",
    "brings PR and ticket events to parked jobs",
)

NOTIFIER: ExtensionPoint[Notifier] = ExtensionPoint(
    "notifier",
    "notifier",
    Notifier,
    "create(settings: dict, context: NotifierContext) -> Notifier",
    "tells people that a job needs them (one per channel of the notifications section)",
)

EXTENSION_POINTS: tuple[ExtensionPoint[Any], ...] = (
    EXECUTOR,
    SCM,
    TRACKER,
    TOOLS,
    STATE,
    TRANSPORT,
    NOTIFIER,
)

# --- the built-in plugins -----------------------------------------------------------------

_SCM_CAPS = {"supportsPullRequests": True, "supportsMerge": True, "supportsReviewers": True}
_TRACKER_CAPS = {"supportsComments": True, "supportsTransitions": True}

BUILTIN_PLUGINS: tuple[BuiltinPlugin, ...] = (
    BuiltinPlugin(
        "script",
        "executor",
        "coro.executors.script:create",
        "Script",
        "Deterministic runs from params.script (tests, demos, workflow CI).",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "anthropic",
        "executor",
        "coro.executors.anthropic:create",
        "Anthropic",
        "Claude models through the Anthropic Messages API.",
        "AnthropicSettings",
        {"supportsChat": True, "supportsPromptCaching": True},
    ),
    BuiltinPlugin(
        "openai",
        "executor",
        "coro.executors.openai_chat:create",
        "OpenAI-compatible",
        "OpenAI, or any compatible server (Ollama, vLLM, …) as baseUrl.",
        "OpenAISettings",
        {"supportsChat": True},
    ),
    BuiltinPlugin(
        "claude-code",
        "executor",
        "coro.executors.claude_code:create",
        "Claude Code",
        "Claude Code through the claude-agent-sdk (optional extra).",
        "ClaudeCodeSettings",
        {"supportsNativeFileTools": True},
    ),
    BuiltinPlugin(
        "github",
        "scm",
        "coro.plugins.scm.github:create",
        "GitHub",
        "Repositories and pull requests on github.com or GitHub Enterprise (REST v3).",
        "GitHubSettings",
        _SCM_CAPS,
    ),
    BuiltinPlugin(
        "bitbucket",
        "scm",
        "coro.plugins.scm.bitbucket:create",
        "Bitbucket Cloud",
        "Repositories and pull requests on Bitbucket Cloud (REST 2.0).",
        "BitbucketSettings",
        _SCM_CAPS,
    ),
    BuiltinPlugin(
        "local",
        "scm",
        "coro.plugins.scm.local:create",
        "Local (offline)",
        "Bare git repositories under CORO_HOME; pull requests kept in the runner's database.",
        "LocalScmSettings",
        {**_SCM_CAPS, "offline": True},
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "jira",
        "tracker",
        "coro.plugins.trackers.jira:create",
        "Jira",
        "Jira Cloud or Server issues (REST v3/v2).",
        "JiraSettings",
        _TRACKER_CAPS,
    ),
    BuiltinPlugin(
        "github-issues",
        "tracker",
        "coro.plugins.trackers.github_issues:create",
        "GitHub Issues",
        "Issues of GitHub repositories.",
        "GitHubIssuesSettings",
        _TRACKER_CAPS,
    ),
    BuiltinPlugin(
        "job-control",
        "tools",
        "coro.tools:job_control_tools",
        "Job control tools",
        "Phase transitions, waiting for events, escalation, logging.",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "files",
        "tools",
        "coro.tools:file_tools",
        "File tools",
        "Reading, writing, editing and searching files of the job directory.",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "shell",
        "tools",
        "coro.tools:shell_tools",
        "Shell tool",
        "Commands in the job directory (sandboxed).",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "scm-tools",
        "tools",
        "coro.tools:scm_tools",
        "Source-control and tracker tools",
        "Pull requests, reviews and issues through the configured plugins.",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "intelligence",
        "tools",
        "coro.tools:intelligence_tools",
        "Intelligence tools",
        "Memory reads and proposals of changes to the intelligence layers.",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "campaigns",
        "tools",
        "coro.engine.toolset:campaign_tools",
        "Campaign tools",
        "Planning and controlling a campaign's child jobs.",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "sql",
        "state",
        "coro.extensions:sql_state",
        "SQL database",
        "SQLite (the default, $CORO_HOME/state.db) or PostgreSQL, from state.url.",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "polling",
        "transport",
        "coro.engine.polling:create",
        "PR polling",
        "Polls the open pull requests of parked jobs (settings: the polling section).",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "webhook",
        "notifier",
        "coro.plugins.notifiers.webhook:create",
        "Webhook notifications",
        "Signed JSON POSTs to a URL (notifications.webhooks).",
        "WebhookChannel",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "slack",
        "notifier",
        "coro.plugins.notifiers.slack:create",
        "Slack notifications",
        "Messages to a Slack incoming webhook (notifications.slack).",
        "SlackChannel",
        enabled_by_default=True,
    ),
    BuiltinPlugin(
        "email",
        "notifier",
        "coro.plugins.notifiers.email:create",
        "E-mail notifications",
        "Mail over SMTP (notifications.email).",
        "EmailChannel",
        enabled_by_default=True,
    ),
)


def sql_state(settings: dict[str, Any], context: CoroHome) -> StateBackend:
    """The built-in `sql` state plugin: `settings.url` is `state.url` (`state_backend`)."""
    return state_backend(context, CoroConfig(state=StateConfig(url=settings.get("url"))))


def plugin_catalog(home: CoroHome) -> PluginCatalog:
    """The built-ins and the drop-ins installed under `home` (discovered now)."""
    catalog = PluginCatalog(home.plugins_dir / SITE_DIRNAME, BUILTIN_PLUGINS)
    catalog.load()
    return catalog


class Extensions:
    """The plugins of one home, made into the typed registries the layers use."""

    def __init__(self, home: CoroHome, catalog: PluginCatalog | None = None) -> None:
        self.home = home
        self.catalog = catalog if catalog is not None else plugin_catalog(home)
        #: kind -> id of the plugin made for a kind there is one of (state, transport)
        self.chosen: dict[str, str] = {}

    def executors(
        self,
        config: CoroConfig,
        context: PluginContext,
        previous: ExecutorRegistry | None = None,
    ) -> ExecutorRegistry:
        return ExecutorRegistry.build(EXECUTOR, config, self.catalog, context, previous)

    def plugins(
        self, config: CoroConfig, context: PluginContext, previous: PluginSet | None = None
    ) -> PluginSet:
        """The enabled SCM and tracker plugins (`previous` lends unchanged ones)."""
        return PluginSet(
            config,
            PluginSlots.build(
                SCM, config, self.catalog, context, previous.scm if previous else None
            ),
            PluginSlots.build(
                TRACKER, config, self.catalog, context, previous.tracker if previous else None
            ),
            unusable(config, self.catalog),
        )

    def tools(
        self,
        config: CoroConfig,
        context: PluginContext,
        registry: ToolRegistry,
        previous: PluginSlots[ToolSet] | None = None,
    ) -> PluginSlots[ToolSet]:
        """The enabled tool plugins, their tools put into `registry` (in place of
        `previous`'s)."""
        slots = PluginSlots.build(TOOLS, config, self.catalog, context, previous)
        sync_tools(registry, slots, previous)
        return slots

    def state_backend(self, config: CoroConfig) -> StateBackend:
        """The state backend config.json asks for; its settings carry `state.url`."""
        entry, settings = self._chosen(STATE, config)
        if config.state.url is not None:
            settings.setdefault("url", config.state.url)
        return STATE.create(entry, settings, self.home)

    def transport(self, config: CoroConfig, context: TransportContext) -> EventTransport:
        entry, settings = self._chosen(TRANSPORT, config)
        return TRANSPORT.create(entry, settings, context)

    def notifiers(self, config: CoroConfig) -> tuple[list[Channel], dict[str, str]]:
        """A notifier per channel of `config.notifications` (the plugin whose id is the
        channel's kind), and the channels that have none, with why."""
        return notifier_channels(self.catalog, config.notifications, config.plugins.installed)

    def _chosen(
        self, point: ExtensionPoint[Any], config: CoroConfig
    ) -> tuple[PluginEntry, dict[str, Any]]:
        """The one plugin of a kind the runner has a single instance of, and its
        settings: `plugins.defaults.<kind>`, else the only one configured, else the one
        on by default."""
        installed = config.plugins.installed
        enabled = [
            e
            for e in self.catalog.entries
            if e.kind == point.kind
            and (installed[e.id].enabled if e.id in installed else e.enabled_by_default)
        ]
        configured = [e for e in enabled if e.id in installed]
        wanted = config.plugins.defaults.get(point.kind)
        if wanted is not None:
            chosen = [e for e in enabled if e.id == wanted]
        else:
            chosen = configured if configured else enabled
        if len(chosen) != 1:
            names = ", ".join(e.id for e in chosen or enabled) or "none"
            raise PluginResolutionError(
                f"no single {point.title} plugin to use ({names}): "
                f"set plugins.defaults.{point.kind} to an enabled one"
            )
        slot = installed.get(chosen[0].id)
        self.chosen[point.kind] = chosen[0].id
        return chosen[0], dict(slot.config) if slot is not None else {}


def notifier_channels(
    catalog: PluginCatalog,
    settings: NotificationsConfig,
    installed: Mapping[str, PluginSlot] | None = None,
) -> tuple[list[Channel], dict[str, str]]:
    """A notifier per channel of `settings` (the plugin of `catalog` whose id is the
    channel's kind, unless `installed` turns it off), and the channels that have none,
    with why (the runner's channels, and the team cloud's, `coro.cloud.notifications`)."""
    context = NotifierContext(settings.timeout_seconds, f"Coro/{__version__}")
    installed = installed or {}
    channels: list[Channel] = []
    failed: dict[str, str] = {}
    for kind, channel in settings.channels():
        assert channel.id is not None  # every channel has one once validated
        entry = catalog.get(kind)
        slot = installed.get(kind)
        if entry is None or entry.kind != NOTIFIER.kind:
            failed[channel.id] = f"no {kind} notifier plugin is installed"
            continue
        if slot is not None and not slot.enabled:
            failed[channel.id] = f"the {kind} notifier is off (plugins.installed.{kind})"
            continue
        raw = channel.model_dump(by_alias=True, exclude_none=True)
        try:
            notifier = NOTIFIER.create(entry, raw, context)
        except (PluginConfigError, PluginLoadError) as exc:
            failed[channel.id] = str(exc)
            continue
        events = tuple(channel.events if channel.events is not None else DEFAULT_EVENTS)
        channels.append(Channel(channel.id, kind, events, notifier))
    return channels, failed


def builtin_tools(home: CoroHome | None = None) -> ToolRegistry:
    """Every built-in tool, made by the built-in `tools` plugins (tests; `coro mcp`
    serves the configured ones through `Extensions.tools`)."""
    home = home if home is not None else CoroHome.from_env()
    registry = ToolRegistry()
    builtins = PluginCatalog(home.plugins_dir / SITE_DIRNAME, BUILTIN_PLUGINS)  # no drop-ins
    context = PluginContext(home, MemoryPullRequestStore())  # the tools keep no state
    Extensions(home, builtins).tools(CoroConfig(), context, registry)
    return registry
