"""LLM executors: the `Executor` protocol, the registry, and the built-in `script` executor."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from coro.config import CoroConfig
from coro.domain.errors import PluginConfigError
from coro.executors.base import (
    Executor,
    ExecutorError,
    ExecutorEvent,
    Health,
    ModelInfo,
    PhaseRequest,
    PromptEvent,
    RateLimited,
    SessionEvent,
    TextEvent,
    ThinkingEvent,
    UsageEvent,
)
from coro.executors.script import ScriptExecutor
from coro.plugins.context import PluginContext
from coro.plugins.dropins import DropinCatalog
from coro.plugins.manifest import PluginLoadError

logger = logging.getLogger(__name__)

#: Built-in executor plugins configurable under `plugins.installed.<id>`; each module
#: has `create(settings: dict) -> Executor` raising `PluginConfigError`. Drop-in
#: executors (`coro.plugins.dropins`) have `create(settings, context)`.
BUILTIN_EXECUTOR_MODULES: dict[str, str] = {
    "anthropic": "coro.executors.anthropic",
    "openai": "coro.executors.openai_chat",
    "claude-code": "coro.executors.claude_code",
}


class PluginNotFound(LookupError):
    def __init__(self, plugin_id: str) -> None:
        super().__init__(f"Plugin not found: {plugin_id}")


class ExecutorRegistry:
    """Executors by id. Built-ins and drop-ins are registered alike."""

    def __init__(self) -> None:
        self._executors: dict[str, Executor] = {}
        self.failed: dict[str, str] = {}  # plugin id -> why it could not be loaded
        #: plugin id -> (source, settings) it was created from (reuse across reloads)
        self.sources: dict[str, tuple[Any, dict[str, Any]]] = {}

    def register(self, executor: Executor) -> None:
        self._executors[executor.id] = executor

    def get(self, executor_id: str) -> Executor | None:
        return self._executors.get(executor_id)

    def ids(self) -> list[str]:
        return sorted(self._executors)

    def instances(self) -> dict[str, Executor]:
        return dict(self._executors)

    async def aclose(self) -> None:
        """Release the executors' connection pools (runner shutdown, reloads)."""
        for executor in self._executors.values():
            await close_executor(executor)


async def close_executor(executor: Executor) -> None:
    close = getattr(executor, "aclose", None)
    if close is not None:
        await close()


def create_executor(
    plugin_id: str,
    settings: dict[str, Any],
    *,
    catalog: DropinCatalog | None = None,
    context: PluginContext | None = None,
) -> Executor:
    """A configured built-in (or, given the catalog, drop-in) executor; raises
    `PluginConfigError`, `PluginLoadError` or `LookupError`."""
    module_name = BUILTIN_EXECUTOR_MODULES.get(plugin_id)
    if module_name is None:
        dropin = catalog.get(plugin_id) if catalog is not None else None
        if dropin is None or dropin.kind != "executor":
            raise PluginNotFound(plugin_id)
        made: Executor = dropin.create(settings, context)
        return made
    module = importlib.import_module(module_name)
    executor: Executor = module.create(settings)
    return executor


def build_executors(
    config: CoroConfig,
    *,
    catalog: DropinCatalog | None = None,
    context: PluginContext | None = None,
    previous: ExecutorRegistry | None = None,
) -> ExecutorRegistry:
    """The script executor plus every enabled built-in (and drop-in, given the catalog)
    executor configured in config.json.

    A plugin whose settings are invalid is reported in `failed`; the runner keeps going.
    `previous` lends its executors whose settings did not change (config reloads).
    """
    registry = ExecutorRegistry()
    script = previous.get(ScriptExecutor.id) if previous is not None else None
    registry.register(script or ScriptExecutor())
    for plugin_id, slot in config.plugins.installed.items():
        if not slot.enabled:
            continue
        source: Any = BUILTIN_EXECUTOR_MODULES.get(plugin_id)
        if source is None:
            dropin = catalog.get(plugin_id) if catalog is not None else None
            if dropin is None or dropin.kind != "executor":
                continue  # not an executor (or not installed: the plugin set says so)
            if not dropin.loaded:
                registry.failed[plugin_id] = f"{plugin_id} failed to load: {dropin.error}"
                continue
            source = dropin.serial
        reused = previous.get(plugin_id) if previous is not None else None
        if (
            reused is not None
            and previous is not None
            and (previous.sources.get(plugin_id) == (source, slot.config))
        ):
            registry.register(reused)
            registry.sources[plugin_id] = (source, slot.config)
            continue
        try:
            executor = create_executor(plugin_id, slot.config, catalog=catalog, context=context)
        except (PluginConfigError, PluginLoadError, ImportError) as exc:
            logger.warning("executor plugin %s not loaded: %s", plugin_id, exc)
            registry.failed[plugin_id] = str(exc)
            continue
        registry.register(executor)
        registry.sources[plugin_id] = (source, slot.config)
    return registry


__all__ = [
    "Executor",
    "ExecutorError",
    "ExecutorEvent",
    "ExecutorRegistry",
    "Health",
    "ModelInfo",
    "PhaseRequest",
    "PluginConfigError",
    "PluginLoadError",
    "PluginNotFound",
    "PromptEvent",
    "RateLimited",
    "ScriptExecutor",
    "SessionEvent",
    "TextEvent",
    "ThinkingEvent",
    "UsageEvent",
    "build_executors",
    "close_executor",
    "create_executor",
]
