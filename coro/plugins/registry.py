"""The configured source-control and tracker plugins, and which one a job gets.

Built-ins are created from `plugins.installed.<id>.config` exactly as drop-ins will be.
The offline `local` SCM needs no configuration and is always there (unless disabled),
but never competes with a configured forge. Resolution never guesses between two
candidates: the explicit id, else `plugins.defaults.<kind>`, else the only one
configured, else `local` (for source control), else a clear error that lists what is
installed.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Literal

from coro.config import CoroConfig
from coro.plugins.context import PluginContext
from coro.plugins.errors import PluginConfigError

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


class PluginResolutionError(LookupError):
    """No plugin (or no single plugin) can serve a request; the message says what to do."""


def create_plugin(
    kind: PluginKind, plugin_id: str, settings: dict[str, Any], context: PluginContext
) -> Any:
    """A built-in plugin from settings; `PluginResolutionError` for an unknown id,
    `PluginConfigError` for invalid settings."""
    module_name = BUILTIN_MODULES[kind].get(plugin_id)
    if module_name is None:
        known = ", ".join(sorted(BUILTIN_MODULES[kind]))
        raise PluginResolutionError(
            f"{plugin_id!r} is not a {KIND_NAMES[kind]} plugin (built-in: {known})"
        )
    return importlib.import_module(module_name).create(settings, context)


class PluginSet:
    """The enabled SCM and tracker plugins of one config; broken ones are reported."""

    def __init__(self, config: CoroConfig, context: PluginContext) -> None:
        self.defaults = dict(config.plugins.defaults)
        self.loaded: dict[PluginKind, dict[str, Any]] = {"scm": {}, "tracker": {}}
        self.failed: dict[str, str] = {}
        slots = {pid: (slot.enabled, slot.config) for pid, slot in config.plugins.installed.items()}
        slots.setdefault(LOCAL_SCM, (True, {}))
        for plugin_id, (enabled, settings) in slots.items():
            kind = next((k for k, mods in BUILTIN_MODULES.items() if plugin_id in mods), None)
            if kind is None or not enabled:
                continue
            try:
                self.loaded[kind][plugin_id] = create_plugin(kind, plugin_id, settings, context)
            except (PluginConfigError, ImportError) as exc:
                logger.warning("%s plugin %s not loaded: %s", kind, plugin_id, exc)
                self.failed[plugin_id] = str(exc)

    def get(self, kind: PluginKind, plugin_id: str) -> Any | None:
        return self.loaded[kind].get(plugin_id)

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
        for plugins in self.loaded.values():
            for plugin in plugins.values():
                await plugin.aclose()
