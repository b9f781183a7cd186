"""The configured source-control and tracker plugins, and which one a job gets.

Built-ins are created from `plugins.installed.<id>.config` exactly as drop-ins are
(`coro.plugins.dropins`: distributions installed into `$CORO_HOME/plugins/site`).
The offline `local` SCM needs no configuration and is always there (unless disabled),
but never competes with a configured forge. Resolution never guesses between two
candidates: the explicit id, else `plugins.defaults.<kind>`, else the only one
configured, else `local` (for source control), else a clear error that lists what is
installed.

Every plugin has a manifest (`coro.plugins.manifest`); the built-ins' are made here from
their settings models, so their `configSchema` is always the schema they validate with.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from coro.config import CoroConfig, CoroHome
from coro.domain.errors import PluginConfigError
from coro.plugins.context import PluginContext
from coro.plugins.dropins import SITE_DIRNAME, DropinCatalog
from coro.plugins.manifest import (
    HOST_API_VERSION,
    PluginLoadError,
    PluginManifest,
    settings_schema,
)
from coro.version import __version__

logger = logging.getLogger(__name__)

PluginKind = Literal["scm", "tracker"]

#: Built-in plugins by kind; each module has `create(settings: dict)`.
BUILTIN_MODULES: dict[PluginKind, dict[str, str]] = {
    "scm": {
        "github": "coro.plugins.scm.github",
        "bitbucket": "coro.plugins.scm.bitbucket",
        "local": "coro.plugins.scm.local",
    },
    "tracker": {
        "jira": "coro.plugins.trackers.jira",
        "github-issues": "coro.plugins.trackers.github_issues",
    },
}
KIND_NAMES: dict[PluginKind, str] = {"scm": "source-control", "tracker": "tracker"}
#: The SCM that works with no configuration at all (bare repositories under CORO_HOME).
LOCAL_SCM = "local"


@dataclass(frozen=True)
class BuiltinPlugin:
    """What the registry knows of a built-in beyond its module: enough for a manifest."""

    id: str
    kind: Literal["executor", "scm", "tracker"]
    module: str
    settings_class: str | None  # the pydantic model of its config, in `module`
    display_name: str
    description: str
    capabilities: dict[str, bool] = field(default_factory=dict)


_SCM_CAPS = {"supportsPullRequests": True, "supportsMerge": True, "supportsReviewers": True}
_TRACKER_CAPS = {"supportsComments": True, "supportsTransitions": True}

BUILTINS: tuple[BuiltinPlugin, ...] = (
    BuiltinPlugin(
        "github",
        "scm",
        BUILTIN_MODULES["scm"]["github"],
        "GitHubSettings",
        "GitHub",
        "Repositories and pull requests on github.com or GitHub Enterprise (REST v3).",
        _SCM_CAPS,
    ),
    BuiltinPlugin(
        "bitbucket",
        "scm",
        BUILTIN_MODULES["scm"]["bitbucket"],
        "BitbucketSettings",
        "Bitbucket Cloud",
        "Repositories and pull requests on Bitbucket Cloud (REST 2.0).",
        _SCM_CAPS,
    ),
    BuiltinPlugin(
        "local",
        "scm",
        BUILTIN_MODULES["scm"]["local"],
        "LocalScmSettings",
        "Local (offline)",
        "Bare git repositories under CORO_HOME; pull requests kept in the runner's database.",
        {**_SCM_CAPS, "offline": True},
    ),
    BuiltinPlugin(
        "jira",
        "tracker",
        BUILTIN_MODULES["tracker"]["jira"],
        "JiraSettings",
        "Jira",
        "Jira Cloud or Server issues (REST v3/v2).",
        _TRACKER_CAPS,
    ),
    BuiltinPlugin(
        "github-issues",
        "tracker",
        BUILTIN_MODULES["tracker"]["github-issues"],
        "GitHubIssuesSettings",
        "GitHub Issues",
        "Issues of GitHub repositories.",
        _TRACKER_CAPS,
    ),
    BuiltinPlugin(
        "anthropic",
        "executor",
        "coro.executors.anthropic",
        "AnthropicSettings",
        "Anthropic",
        "Claude models through the Anthropic Messages API.",
        {"supportsChat": True, "supportsPromptCaching": True},
    ),
    BuiltinPlugin(
        "openai",
        "executor",
        "coro.executors.openai_chat",
        "OpenAISettings",
        "OpenAI-compatible",
        "OpenAI, or any compatible server (Ollama, vLLM, …) as baseUrl.",
        {"supportsChat": True},
    ),
    BuiltinPlugin(
        "claude-code",
        "executor",
        "coro.executors.claude_code",
        "ClaudeCodeSettings",
        "Claude Code",
        "Claude Code through the claude-agent-sdk (optional extra).",
        {"supportsNativeFileTools": True},
    ),
    BuiltinPlugin(
        "script",
        "executor",
        "coro.executors.script",
        None,
        "Script",
        "Deterministic runs from params.script (tests, demos, workflow CI).",
    ),
)
BUILTIN_IDS = frozenset(b.id for b in BUILTINS)


class PluginResolutionError(LookupError):
    """No plugin (or no single plugin) can serve a request; the message says what to do."""


@functools.cache
def builtin_manifest(plugin_id: str) -> PluginManifest:
    """The manifest of a built-in (its configSchema from its settings model)."""
    info = next(b for b in BUILTINS if b.id == plugin_id)
    module = importlib.import_module(info.module)
    schema: dict[str, Any] | None = {"type": "object", "properties": {}}
    if info.settings_class is not None:
        schema = settings_schema(getattr(module, info.settings_class))
    webhook = getattr(module, "WEBHOOK", None)
    return PluginManifest.model_validate(
        {
            "id": info.id,
            "kind": info.kind,
            "version": __version__,
            "displayName": info.display_name,
            "description": info.description,
            "hostCompatibility": f"^{HOST_API_VERSION}",
            "configSchema": schema,
            "capabilities": info.capabilities,
            "webhook": webhook,
        }
    )


def builtin_settings_issues(plugin_id: str, settings: dict[str, Any]) -> list[dict[str, str]]:
    """`[{path, message}]` of a built-in's settings (paths inside its config)."""
    from pydantic import ValidationError

    info = next((b for b in BUILTINS if b.id == plugin_id), None)
    if info is None or info.settings_class is None:
        return []
    model = getattr(importlib.import_module(info.module), info.settings_class)
    try:
        model.model_validate(settings)
    except ValidationError as exc:
        return [
            {"path": ".".join(str(p) for p in e["loc"]) or "(root)", "message": e["msg"]}
            for e in exc.errors()
        ]
    return []


def dropin_catalog(home: CoroHome) -> DropinCatalog:
    """The drop-ins installed under `home` (discovered now)."""
    catalog = DropinCatalog(home.plugins_dir / SITE_DIRNAME, reserved=BUILTIN_IDS)
    catalog.load()
    return catalog


def create_plugin(
    kind: PluginKind,
    plugin_id: str,
    settings: dict[str, Any],
    context: PluginContext,
    catalog: DropinCatalog | None = None,
) -> Any:
    """A built-in or drop-in plugin from settings; `PluginResolutionError` for an
    unknown id, `PluginConfigError` for invalid settings, `PluginLoadError` for a
    drop-in that cannot be created."""
    module_name = BUILTIN_MODULES[kind].get(plugin_id)
    if module_name is not None:
        return importlib.import_module(module_name).create(settings, context)
    dropin = catalog.get(plugin_id) if catalog is not None else None
    if dropin is not None and dropin.kind == kind:
        return dropin.create(settings, context)
    known = sorted(BUILTIN_MODULES[kind])
    if catalog is not None:
        known += sorted(d.id for d in catalog.loaded(kind))
    raise PluginResolutionError(
        f"{plugin_id!r} is not a {KIND_NAMES[kind]} plugin (installed: {', '.join(known)})"
    )


class PluginSet:
    """The enabled SCM and tracker plugins of one config; broken ones are reported.

    `previous` (a set being replaced by a config reload) lends its instances whose
    settings did not change, so a reload only rebuilds what it must.
    """

    def __init__(
        self,
        config: CoroConfig,
        context: PluginContext,
        catalog: DropinCatalog | None = None,
        previous: PluginSet | None = None,
    ) -> None:
        self.catalog = catalog if catalog is not None else dropin_catalog(context.home)
        self.defaults = dict(config.plugins.defaults)
        self.loaded: dict[PluginKind, dict[str, Any]] = {"scm": {}, "tracker": {}}
        self.failed: dict[str, str] = {}
        #: plugin id -> (source, settings) it was created from
        self.sources: dict[str, tuple[Any, dict[str, Any]]] = {}
        slots = {pid: (slot.enabled, slot.config) for pid, slot in config.plugins.installed.items()}
        slots.setdefault(LOCAL_SCM, (True, {}))
        for plugin_id, (enabled, settings) in slots.items():
            if not enabled:
                continue
            kind, source = self._kind_of(plugin_id)
            if kind is None:
                continue
            if previous is not None and previous.sources.get(plugin_id) == (source, settings):
                reused = previous.get(kind, plugin_id)
                if reused is not None:
                    self.loaded[kind][plugin_id] = reused
                    self.sources[plugin_id] = (source, settings)
                    continue
            try:
                plugin = create_plugin(kind, plugin_id, settings, context, self.catalog)
            except (PluginConfigError, PluginLoadError, ImportError) as exc:
                logger.warning("%s plugin %s not loaded: %s", kind, plugin_id, exc)
                self.failed[plugin_id] = str(exc)
                continue
            self.loaded[kind][plugin_id] = plugin
            self.sources[plugin_id] = (source, settings)

    def _kind_of(self, plugin_id: str) -> tuple[PluginKind | None, Any]:
        """The kind of a configured id and what it is built from; None: not this set's
        (an executor), or not installed (recorded in `failed`)."""
        for kind, modules in BUILTIN_MODULES.items():
            if plugin_id in modules:
                return kind, modules[plugin_id]
        if plugin_id in BUILTIN_IDS:
            return None, None  # a built-in executor
        dropin = self.catalog.get(plugin_id)
        if dropin is None:
            self.failed[plugin_id] = (
                f"no plugin with this id is installed (built-in, or in {self.catalog.site})"
            )
            return None, None
        if not dropin.loaded:
            if dropin.kind in ("scm", "tracker", None):
                self.failed[plugin_id] = f"{plugin_id} failed to load: {dropin.error}"
            return None, None
        if dropin.kind == "scm":
            return "scm", dropin.serial
        if dropin.kind == "tracker":
            return "tracker", dropin.serial
        return None, None  # a drop-in executor

    def get(self, kind: PluginKind, plugin_id: str) -> Any | None:
        return self.loaded[kind].get(plugin_id)

    def instances(self) -> dict[str, Any]:
        """Every loaded plugin by id."""
        return {pid: p for plugins in self.loaded.values() for pid, p in plugins.items()}

    def resolve(self, kind: PluginKind, explicit: str | None = None) -> Any:
        loaded = self.loaded[kind]
        wanted = explicit or self.defaults.get(kind)
        if wanted is not None:
            if wanted in loaded:
                return loaded[wanted]
            if wanted in self.failed:
                raise PluginResolutionError(f"{wanted} is not loaded: {self.failed[wanted]}")
            raise PluginResolutionError(
                f"{KIND_NAMES[kind].capitalize()} plugin {wanted!r} is not configured "
                f"(configured: {', '.join(sorted(loaded)) or 'none'})"
            )
        forges = {pid: p for pid, p in loaded.items() if pid != LOCAL_SCM}
        if len(forges) == 1:
            return next(iter(forges.values()))
        if not forges and LOCAL_SCM in loaded:
            return loaded[LOCAL_SCM]
        if not loaded:
            raise PluginResolutionError(
                f"No {KIND_NAMES[kind]} plugin is configured: add one under plugins.installed "
                f"({', '.join(sorted(BUILTIN_MODULES[kind]))})"
            )
        raise PluginResolutionError(
            f"Several {KIND_NAMES[kind]} plugins are configured "
            f"({', '.join(sorted(loaded))}): set plugins.defaults.{kind} or name one"
        )

    async def aclose(self) -> None:
        for plugin_id, plugin in self.instances().items():
            close = getattr(plugin, "aclose", None)  # optional for drop-ins
            if close is None:
                continue
            try:
                await close()
            except Exception:
                logger.exception("closing plugin %s failed", plugin_id)
