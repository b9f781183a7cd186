"""LLM executors: the `Executor` protocol, the registry, and the built-in `script` executor."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from coro.config import CoroConfig
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
from coro.plugins.errors import PluginConfigError

logger = logging.getLogger(__name__)

#: Built-in executor plugins configurable under `plugins.installed.<id>`; each module
#: has `create(settings: dict) -> Executor` raising `PluginConfigError`.
BUILTIN_EXECUTOR_MODULES: dict[str, str] = {
    "anthropic": "coro.executors.anthropic",
    "openai": "coro.executors.openai_chat",
    "claude-code": "coro.executors.claude_code",
}


class PluginNotFound(LookupError):
    def __init__(self, plugin_id: str) -> None:
        super().__init__(f"Plugin not found: {plugin_id}")


class ExecutorRegistry:
    """Executors by id. Built-ins are registered exactly like drop-in plugins will be."""

    def __init__(self) -> None:
        self._executors: dict[str, Executor] = {}
        self.failed: dict[str, str] = {}  # plugin id -> why it could not be loaded

    def register(self, executor: Executor) -> None:
        self._executors[executor.id] = executor

    def get(self, executor_id: str) -> Executor | None:
        return self._executors.get(executor_id)

    def ids(self) -> list[str]:
        return sorted(self._executors)

    async def aclose(self) -> None:
        """Release the executors' connection pools (runner shutdown, reloads)."""
        for executor in self._executors.values():
            await close_executor(executor)


async def close_executor(executor: Executor) -> None:
    close = getattr(executor, "aclose", None)
    if close is not None:
        await close()


def create_executor(plugin_id: str, settings: dict[str, Any]) -> Executor:
    """A configured built-in executor; raises `PluginConfigError` or `LookupError`."""
    module_name = BUILTIN_EXECUTOR_MODULES.get(plugin_id)
    if module_name is None:
        raise PluginNotFound(plugin_id)
    module = importlib.import_module(module_name)
    executor: Executor = module.create(settings)
    return executor


def build_executors(config: CoroConfig) -> ExecutorRegistry:
    """The script executor plus every enabled built-in executor configured in config.json.

    A plugin whose settings are invalid is reported in `failed`; the runner keeps going.
    """
    registry = ExecutorRegistry()
    registry.register(ScriptExecutor())
    for plugin_id, slot in config.plugins.installed.items():
        if plugin_id not in BUILTIN_EXECUTOR_MODULES or not slot.enabled:
            continue
        try:
            registry.register(create_executor(plugin_id, slot.config))
        except (PluginConfigError, ImportError) as exc:
            logger.warning("executor plugin %s not loaded: %s", plugin_id, exc)
            registry.failed[plugin_id] = str(exc)
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
