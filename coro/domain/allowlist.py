"""Which tools a phase's allow-list lets an agent call.

An entry is a Coro tool name or glob (`file_*`), bare or with the `mcp__coro__` prefix
Claude Code gives them, or one of Claude Code's built-in tool names, which stands for the
Coro tool that does the same job (sandboxed, confined to the job directory).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

MCP_PREFIX = "mcp__coro__"
#: Claude Code's built-in tools named in a phase allow-list stand for the Coro tools that
#: do the same (sandboxed, confined to the job directory): `Bash`, `Bash(git:*)` → `shell`.
BUILTIN_ALIASES: dict[str, str] = {
    "Bash": "shell",
    "Read": "file_read",
    "Write": "file_write",
    "Edit": "file_edit",
    "MultiEdit": "file_edit",
    "Glob": "file_glob",
    "Grep": "file_grep",
}
_BUILTIN_ENTRY = re.compile(r"^([A-Z][A-Za-z0-9]*)(\(.*\))?$")


def is_allowed(tool_name: str, allow_list: Iterable[str] | None) -> bool:
    """Allow-list entries are tool names or globs, bare or with the `mcp__coro__` prefix,
    or Claude Code built-ins (`BUILTIN_ALIASES`; other built-ins allow nothing)."""
    if allow_list is None:
        return True
    return any(fnmatch.fnmatchcase(tool_name, allow_pattern(p)) for p in allow_list)


def allow_pattern(entry: str) -> str:
    """The Coro tool name or glob an allow-list entry stands for."""
    bare = entry.strip().removeprefix(MCP_PREFIX)
    builtin = _BUILTIN_ENTRY.match(bare)
    if builtin is None:
        return bare
    # a permission rule's argument (`git:*`) is not a boundary: the sandbox is
    return BUILTIN_ALIASES.get(builtin.group(1), bare)
