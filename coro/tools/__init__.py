"""The tool registry shared by every executor and the MCP server, and the built-in tools."""

from __future__ import annotations

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


def builtin_tools() -> ToolRegistry:
    registry = ToolRegistry()
    job_control.register(registry)
    files.register(registry)
    shell.register(registry)
    scm.register(registry)
    intelligence.register(registry)
    return registry


__all__ = [
    "PhaseSignals",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolInput",
    "ToolRegistry",
    "ToolResult",
    "builtin_tools",
]
