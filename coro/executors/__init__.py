"""LLM executors: the `Executor` protocol and the registry of the configured ones.

Every executor, the built-in `script` one included, is a plugin of the catalog
(`coro.extensions` lists the built-ins); none is known here by name.
"""

from __future__ import annotations

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
    ValidatesParams,
)
from coro.plugins.manifest import PluginLoadError
from coro.plugins.registry import PluginSlots


class PluginNotFound(LookupError):
    def __init__(self, plugin_id: str) -> None:
        super().__init__(f"Plugin not found: {plugin_id}")


class ExecutorRegistry(PluginSlots[Executor]):
    """The enabled executors by id (`PluginSlots.build` from the catalog, or registered
    one by one)."""

    def __init__(self, kind: str = "executor", title: str = "executor") -> None:
        super().__init__(kind, title)

    def register(self, executor: Executor) -> None:
        self.add(executor.id, executor)

    async def aclose(self) -> None:
        """Release the executors' connection pools (runner shutdown, reloads)."""
        for executor in self.loaded.values():
            await close_executor(executor)


async def close_executor(executor: Executor) -> None:
    close = getattr(executor, "aclose", None)  # optional: not every executor holds a pool
    if close is not None:
        await close()


__all__ = [
    "Executor",
    "ExecutorError",
    "ExecutorEvent",
    "ExecutorRegistry",
    "Health",
    "ModelInfo",
    "PhaseRequest",
    "PluginLoadError",
    "PluginNotFound",
    "PromptEvent",
    "RateLimited",
    "SessionEvent",
    "TextEvent",
    "ThinkingEvent",
    "UsageEvent",
    "ValidatesParams",
    "close_executor",
]
