"""The campaign tools as a `tools` plugin (`coro.extensions`): they need the engine's
coordinator, so they live here rather than in `coro.tools`."""

from __future__ import annotations

from coro.engine.campaigns import tools
from coro.tools import tool_set

campaign_tools = tool_set(tools.register)
