"""Every tool the engine gives agents: the built-ins of `coro.tools` and the campaign
tools, which need the engine's coordinator."""

from __future__ import annotations

from coro.engine.campaigns import tools as campaign_tools
from coro.tools import ToolRegistry, builtin_tools


def engine_tools() -> ToolRegistry:
    registry = builtin_tools()
    campaign_tools.register(registry)
    return registry
