"""Typed plugins from the catalog: extension points, the enabled plugins of a kind, and
which source-control or tracker plugin a job gets.

An `ExtensionPoint[T]` (`coro.extensions` declares one per kind) turns what a catalog
entry's factory made into a `T`, checking that it has what the kind's Protocol asks for.
`PluginSlots[T]` are the enabled plugins of one kind: every `plugins.installed.<id>` of
that kind, plus the plugins whose manifest says `enabledByDefault` (the `script`
executor, the `local` SCM, the built-in tools, ...), built-ins and drop-ins alike.

Resolution never guesses between two candidates: the explicit id, else
`plugins.defaults.<kind>`, else the only one configured, else the only plugin that is on
by default (which never competes with a configured one: `local` with a forge), else a
clear error that lists what is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Self, TypeVar, cast, overload

from typing_extensions import get_protocol_members, is_protocol

from coro.config import CoroConfig
from coro.domain.errors import PluginConfigError
from coro.plugins.dropins import PluginCatalog, PluginEntry
from coro.plugins.manifest import PluginKindName, PluginLoadError
from coro.plugins.scm.base import ScmPlugin
from coro.plugins.trackers.base import TrackerPlugin

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The kinds a job resolves by id or default (`PluginSet`).
PluginKind = Literal["scm", "tracker"]


class PluginResolutionError(LookupError):
    """No plugin (or no single plugin) can serve a request; the message says what to do."""


@dataclass(frozen=True)
class ExtensionPoint(Generic[T]):
    """One kind of plugin: what its factory returns (a `T`) and what the runner does
    with it. `provides` is the Protocol (or class) `T` stands for."""

    kind: PluginKindName
    title: str  # "source-control", for messages
    provides: type
    #: the factory as a plugin author writes it
    factory: str
    purpose: str
    #: turns what a factory made into a `T`, or raises `PluginLoadError`; by default
    #: the members of the `provides` Protocol are checked (and an `id` must be the
    #: plugin's id)
    convert: Callable[[object, str], T] | None = None

    def conform(self, made: object, plugin_id: str) -> T:
        if self.convert is not None:
            return self.convert(made, plugin_id)
        if is_protocol(self.provides):
            members = get_protocol_members(self.provides)
            missing = sorted(m for m in members if not hasattr(made, m))
            if missing:
                raise PluginLoadError(
                    f"{plugin_id}: its factory made a {type(made).__name__}, which lacks "
                    f"{', '.join(missing)} ({self.title} plugins are {self.provides.__name__}s)"
                )
            made_id = getattr(made, "id", None)
            if "id" in members and made_id != plugin_id:
                raise PluginLoadError(
                    f"{plugin_id}: its factory made a plugin whose id is {made_id!r}, "
                    f"not {plugin_id!r}"
                )
        elif not isinstance(made, self.provides):
            raise PluginLoadError(
                f"{plugin_id}: its factory made a {type(made).__name__}, "
                f"not a {self.provides.__name__}"
            )
        return cast(T, made)

    def create(self, entry: PluginEntry, settings: dict[str, Any], context: Any) -> T:
        """`entry`'s plugin from `settings`; `PluginConfigError` or `PluginLoadError`."""
        return self.conform(entry.create(settings, context), entry.id)


class PluginSlots(Generic[T]):
    """The enabled plugins of one kind by id, and the ones that failed (with why)."""

    def __init__(self, kind: str, title: str) -> None:
        self.kind = kind
        self.title = title
        self.loaded: dict[str, T] = {}
        self.failed: dict[str, str] = {}
        #: plugin id -> (catalog entry serial, settings) it was created from
        self.sources: dict[str, tuple[int, dict[str, Any]]] = {}
        #: ids that are on by default: they serve only when nothing else is configured
        self.fallbacks: set[str] = set()
        #: every id the catalog has of this kind (for messages)
        self.installed: list[str] = []

    def add(self, plugin_id: str, plugin: T) -> None:
        self.loaded[plugin_id] = plugin

    def get(self, plugin_id: str) -> T | None:
        return self.loaded.get(plugin_id)

    def ids(self) -> list[str]:
        return sorted(self.loaded)

    def instances(self) -> dict[str, T]:
        return dict(self.loaded)

    @classmethod
    def build(
        cls,
        point: ExtensionPoint[T],
        config: CoroConfig,
        catalog: PluginCatalog,
        context: Any,
        previous: PluginSlots[T] | None = None,
    ) -> Self:
        """Every enabled plugin of `point`'s kind. `previous` (the slots a config reload
        replaces) lends its instances whose entry and settings did not change."""
        slots = cls(point.kind, point.title)
        slots.installed = sorted(e.id for e in catalog.entries if e.kind == point.kind)
        wanted: dict[str, tuple[bool, dict[str, Any]]] = {
            e.id: (True, {})
            for e in catalog.entries
            if e.kind == point.kind and e.enabled_by_default
        }
        slots.fallbacks = set(wanted)
        wanted |= {pid: (s.enabled, s.config) for pid, s in config.plugins.installed.items()}
        for plugin_id, (enabled, settings) in wanted.items():
            entry = catalog.get(plugin_id)
            if not enabled or entry is None or entry.kind != point.kind:
                continue  # another kind's, or not installed (`unusable` says so)
            if not entry.loaded:
                slots.failed[plugin_id] = f"{plugin_id} failed to load: {entry.error}"
                continue
            source = (entry.serial, settings)
            if previous is not None and previous.sources.get(plugin_id) == source:
                reused = previous.get(plugin_id)
                if reused is not None:
                    slots.add(plugin_id, reused)
                    slots.sources[plugin_id] = source
                    continue
            try:
                plugin = point.create(entry, settings, context)
            except (PluginConfigError, PluginLoadError) as exc:
                logger.warning("%s plugin %s not loaded: %s", point.kind, plugin_id, exc)
                slots.failed[plugin_id] = str(exc)
                continue
            slots.add(plugin_id, plugin)
            slots.sources[plugin_id] = source
        return slots

    def resolve(self, explicit: str | None = None, default: str | None = None) -> T:
        """The plugin a request gets (see the module docstring)."""
        wanted = explicit or default
        if wanted is not None:
            if wanted in self.loaded:
                return self.loaded[wanted]
            if wanted in self.failed:
                raise PluginResolutionError(f"{wanted} is not loaded: {self.failed[wanted]}")
            raise PluginResolutionError(
                f"{self.title.capitalize()} plugin {wanted!r} is not configured "
                f"(configured: {', '.join(sorted(self.loaded)) or 'none'})"
            )
        configured = {pid: p for pid, p in self.loaded.items() if pid not in self.fallbacks}
        standing_by = [p for pid, p in self.loaded.items() if pid in self.fallbacks]
        if len(configured) == 1:
            return next(iter(configured.values()))
        if not configured and len(standing_by) == 1:
            return standing_by[0]
        if not self.loaded:
            raise PluginResolutionError(
                f"No {self.title} plugin is configured: add one under plugins.installed "
                f"({', '.join(self.installed)})"
            )
        raise PluginResolutionError(
            f"Several {self.title} plugins are configured "
            f"({', '.join(sorted(configured or self.loaded))}): "
            f"set plugins.defaults.{self.kind} or name one"
        )


def unusable(config: CoroConfig, catalog: PluginCatalog) -> dict[str, str]:
    """Enabled `plugins.installed` ids no slots can take: not installed, or a drop-in
    that failed to load before saying what kind it is."""
    found: dict[str, str] = {}
    for plugin_id, slot in config.plugins.installed.items():
        if not slot.enabled:
            continue
        entry = catalog.get(plugin_id)
        if entry is None:
            found[plugin_id] = (
                f"no plugin with this id is installed (built-in, or in {catalog.site})"
            )
        elif entry.kind is None:
            found[plugin_id] = f"{plugin_id} failed to load: {entry.error}"
    return found


def create_plugin(
    point: ExtensionPoint[T],
    plugin_id: str,
    settings: dict[str, Any],
    context: Any,
    catalog: PluginCatalog,
) -> T:
    """A plugin of `point`'s kind from settings (a draft config, to test before saving);
    `PluginResolutionError` for an id of no such plugin, `PluginConfigError` for invalid
    settings, `PluginLoadError` for a plugin that cannot be created."""
    entry = catalog.get(plugin_id)
    if entry is None or entry.kind != point.kind:
        known = sorted(e.id for e in catalog.loaded(point.kind))
        raise PluginResolutionError(
            f"{plugin_id!r} is not a {point.title} plugin (installed: {', '.join(known)})"
        )
    return point.create(entry, settings, context)


class PluginSet:
    """The enabled source-control and tracker plugins of one config; broken ones are
    reported in `failed`."""

    def __init__(
        self,
        config: CoroConfig,
        scm: PluginSlots[ScmPlugin],
        tracker: PluginSlots[TrackerPlugin],
        unusable: dict[str, str] | None = None,
    ) -> None:
        self.defaults = dict(config.plugins.defaults)
        self.scm = scm
        self.tracker = tracker
        self.failed: dict[str, str] = {**(unusable or {}), **scm.failed, **tracker.failed}

    @overload
    def get(self, kind: Literal["scm"], plugin_id: str) -> ScmPlugin | None: ...
    @overload
    def get(self, kind: Literal["tracker"], plugin_id: str) -> TrackerPlugin | None: ...
    def get(self, kind: PluginKind, plugin_id: str) -> ScmPlugin | TrackerPlugin | None:
        return self.scm.get(plugin_id) if kind == "scm" else self.tracker.get(plugin_id)

    @overload
    def resolve(self, kind: Literal["scm"], explicit: str | None = None) -> ScmPlugin: ...
    @overload
    def resolve(self, kind: Literal["tracker"], explicit: str | None = None) -> TrackerPlugin: ...
    def resolve(self, kind: PluginKind, explicit: str | None = None) -> ScmPlugin | TrackerPlugin:
        default = self.defaults.get(kind)
        wanted = explicit or default
        if wanted is not None and wanted in self.failed:  # not installed, or not loaded
            raise PluginResolutionError(f"{wanted} is not loaded: {self.failed[wanted]}")
        if kind == "scm":
            return self.scm.resolve(explicit, default)
        return self.tracker.resolve(explicit, default)

    def instances(self) -> dict[str, ScmPlugin | TrackerPlugin]:
        """Every loaded plugin by id."""
        return {**self.scm.instances(), **self.tracker.instances()}

    async def aclose(self) -> None:
        for plugin_id, plugin in self.instances().items():
            try:
                await plugin.aclose()
            except Exception:
                logger.exception("closing plugin %s failed", plugin_id)
