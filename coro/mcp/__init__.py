"""MCP (Model Context Protocol) on both sides, with the official `mcp` SDK.

- `server`: Coro's tool registry served to MCP clients, bound to one job — over stdio
  (`coro mcp --job <jobId>`) and over streamable HTTP inside the runner
  (`/mcp/<jobId>`, see `http`).
- `client`: the external servers of `mcpServers` in config.json, whose tools join the
  registry as `mcp__<serverId>__<toolName>`.
- `claude_code`: MCP servers configured for Claude Code, for optional inheritance.
- `service`: what the runner holds (start/stop of the above).

The SDK takes over a second to import, so nothing here imports it at module level:
a runner without MCP servers and without MCP clients never loads it.
"""
