"""The tool registry shared by every executor and the MCP server, and the built-in tool
sets: `tools` plugins (`coro.extensions`) like any drop-in's."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from coro.plugins.context import PluginContext
from coro.plugins.manifest import PluginLoadError
from coro.plugins.registry import PluginSlots
from coro.tools import files, intelligence, job_control, scm, shell
from coro.tools.registry import (
    PhaseSignals,
    Tool,
    ToolContext,
    ToolError,
    ToolInput,
    ToolRegistry,
    ToolResult,
)

#: What a `tools` plugin's factory returns.
ToolSet = list[Tool[Any]]
ToolSetFactory = Callable[[dict[str, Any], PluginContext], ToolSet]


def tool_set(register: Callable[[ToolRegistry], None]) -> ToolSetFactory:
    """A `tools` plugin factory from a module's `register(registry)`."""

    def create(settings: dict[str, Any], context: PluginContext) -> ToolSet:
        registry = ToolRegistry()
        register(registry)
        return registry.allowed(None)

    return create


job_control_tools = tool_set(job_control.register)
file_tools = tool_set(files.register)
shell_tools = tool_set(shell.register)
scm_tools = tool_set(scm.register)
intelligence_tools = tool_set(intelligence.register)


def as_tool_set(made: object, plugin_id: str) -> ToolSet:
    """What a `tools` factory made, checked: an iterable of `Tool`s."""
    if not isinstance(made, Iterable) or isinstance(made, (str, bytes, dict)):
        raise PluginLoadError(f"{plugin_id}: its factory must return a list of tools")
    tools = list(made)
    wrong = [type(t).__name__ for t in tools if not isinstance(t, Tool)]
    if wrong:
        raise PluginLoadError(
            f"{plugin_id}: its factory returned {', '.join(sorted(set(wrong)))}, not Tools"
        )
    return tools


def sync_tools(
    registry: ToolRegistry,
    plugins: PluginSlots[ToolSet],
    previous: PluginSlots[ToolSet] | None = None,
) -> None:
    """Make `registry` hold the tools of `plugins` instead of `previous`'s (other tools,
    an MCP server's, stay). A plugin whose tool names another already has is moved to
    `plugins.failed`."""
    kept = previous.loaded if previous is not None else {}
    for plugin_id, tools in kept.items():
        if plugins.get(plugin_id) is not tools:
            for tool in tools:
                registry.remove(tool.name)
    for plugin_id, tools in list(plugins.loaded.items()):
        if kept.get(plugin_id) is tools:
            continue
        taken = [t.name for t in tools if registry.get(t.name) is not None]
        if taken:
            plugins.failed[plugin_id] = f"{plugin_id}: tool {taken[0]} is already registered"
            del plugins.loaded[plugin_id]
            plugins.sources.pop(plugin_id, None)
            continue
        for tool in tools:
            registry.add(tool)


__all__ = [
    "PhaseSignals",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolInput",
    "ToolRegistry",
    "ToolResult",
    "ToolSet",
    "as_tool_set",
    "sync_tools",
    "tool_set",
]
