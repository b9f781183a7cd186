"""LLM executors: the `Executor` protocol, the registry, and the built-in `script` executor."""

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
)
from coro.executors.script import ScriptExecutor


class ExecutorRegistry:
    """Executors by id. Built-ins are registered exactly like drop-in plugins will be."""

    def __init__(self) -> None:
        self._executors: dict[str, Executor] = {}

    def register(self, executor: Executor) -> None:
        self._executors[executor.id] = executor

    def get(self, executor_id: str) -> Executor | None:
        return self._executors.get(executor_id)

    def ids(self) -> list[str]:
        return sorted(self._executors)


def builtin_executors() -> ExecutorRegistry:
    registry = ExecutorRegistry()
    registry.register(ScriptExecutor())
    return registry


__all__ = [
    "Executor",
    "ExecutorError",
    "ExecutorEvent",
    "ExecutorRegistry",
    "Health",
    "ModelInfo",
    "PhaseRequest",
    "PromptEvent",
    "RateLimited",
    "ScriptExecutor",
    "SessionEvent",
    "TextEvent",
    "ThinkingEvent",
    "UsageEvent",
    "builtin_executors",
]
