"""MCP servers configured for Claude Code, for optional inheritance (SPEC §2.6).

Where Claude Code keeps them:
- `~/.claude.json`: `mcpServers` (user scope, every project) and
  `projects.<absolute path>.mcpServers` (local scope: one project, one user);
- `<project>/.mcp.json`: `mcpServers` (project scope, checked into the repository).

Entries: `type` is `stdio`, `http` or `sse`; no `type` with a `command` means stdio.
Invalid entries are skipped; unreadable files are reported as warnings. Secrets are
masked in what this returns: every `env` and `headers` value, passwords and query values
of URLs, and command-line values of flags that look like credentials.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coro.secrets import mask_secret, mask_url, mask_values

USER_FILE = ".claude.json"
PROJECT_FILE = ".mcp.json"
SECRET_FLAG = re.compile(r"(token|secret|password|passwd|api[-_]?key|auth|credential)", re.I)


@dataclass
class Discovery:
    servers: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"servers": self.servers, "sources": self.sources, "warnings": self.warnings}


def discover(home: Path, project_dir: Path) -> Discovery:
    """Every server Claude Code would know of for `project_dir`, with secrets masked."""
    found = Discovery()
    user_file = home / USER_FILE
    user = _read(user_file, found)
    if user is not None:
        _collect(found, user.get("mcpServers"), user_file, source="user")
        projects = user.get("projects")
        if isinstance(projects, dict):
            for project_path in sorted(projects):
                entry = projects[project_path]
                if isinstance(entry, dict):
                    _collect(
                        found,
                        entry.get("mcpServers"),
                        user_file,
                        source="local",
                        project_path=project_path,
                    )
    project_file = project_dir / PROJECT_FILE
    project = _read(project_file, found)
    if project is not None:
        _collect(found, project.get("mcpServers"), project_file, source="project")
    return found


def _read(path: Path, found: Discovery) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        found.warnings.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        found.warnings.append(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}")
        return None
    if not isinstance(data, dict):
        found.warnings.append(f"{path}: expected a JSON object")
        return None
    return data


def _collect(
    found: Discovery,
    servers: Any,
    path: Path,
    *,
    source: str,
    project_path: str | None = None,
) -> None:
    if not isinstance(servers, dict):
        return
    added = False
    for server_id, raw in servers.items():
        entry = _entry(str(server_id), raw)
        if entry is None:
            continue
        entry["source"] = source
        entry["path"] = str(path)
        if project_path is not None:
            entry["projectPath"] = project_path
        found.servers.append(entry)
        added = True
    if added and str(path) not in found.sources:
        found.sources.append(str(path))


def _entry(server_id: str, raw: Any) -> dict[str, Any] | None:
    """One server with its secrets masked, or None when it is not a usable entry."""
    if not isinstance(raw, dict):
        return None
    kind = raw.get("type")
    if kind is None and isinstance(raw.get("command"), str):
        kind = "stdio"
    env = _strings(raw.get("env"))
    headers = _strings(raw.get("headers"))
    entry: dict[str, Any] = {"id": server_id, "type": kind}
    if kind == "stdio":
        command = raw.get("command")
        if not isinstance(command, str) or not command.strip():
            return None
        args = [a for a in raw.get("args") or [] if isinstance(a, str)]
        entry["command"] = command
        entry["args"] = mask_args(args)
    elif kind in ("http", "sse"):
        url = raw.get("url")
        if not isinstance(url, str) or not url.strip():
            return None
        entry["url"] = mask_url(url)
    else:
        return None
    entry["env"] = mask_values(env)
    entry["headers"] = mask_values(headers)
    return entry


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}


def mask_args(args: list[str]) -> list[str]:
    """Arguments with the values of credential-looking flags masked.

    `--api-key=VALUE` and `--token VALUE` both hide VALUE; other arguments are kept.
    """
    masked: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next and not arg.startswith("-"):
            masked.append(mask_secret(arg))
            hide_next = False
            continue
        hide_next = False
        if arg.startswith("-"):
            flag, eq, value = arg.partition("=")
            if SECRET_FLAG.search(flag):
                if eq:
                    masked.append(f"{flag}={mask_secret(value)}")
                    continue
                hide_next = True
        masked.append(arg)
    return masked
