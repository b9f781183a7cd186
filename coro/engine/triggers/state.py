"""Where the trigger poller is in each feed, kept across restarts:
`$CORO_HOME/triggers/cursors.json`, written atomically (a temporary file, then a rename).

* `watches[plugin][scope]`: the `since` of the next poll of that repository or project
  (the provider's time);
* `starts[rule][plugin][scope]`: when the rule began watching it. Events before that are
  not the rule's: a rule added to a repository another rule already watches starts no job
  for what happened there before it.

A watch or start no rule needs any more is dropped, so a rule removed and added again
starts afresh. An unreadable file is logged and replaced: every watch then starts at the
provider's "now" (events meanwhile are missed, none is repeated).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FILE_NAME = "cursors.json"
VERSION = 1


def scope_key(scope: str) -> str:
    """How a scope is kept (repositories and project keys ignore case)."""
    return scope.strip().removesuffix(".git").casefold()


@dataclass
class TriggerState:
    path: Path
    watches: dict[str, dict[str, str]] = field(default_factory=dict)
    starts: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> TriggerState:
        """The state kept in `directory` (blocking: call it in a thread)."""
        state = cls(directory / FILE_NAME)
        try:
            data = json.loads(state.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:
            logger.warning(
                "trigger cursors in %s unreadable (%s): starting afresh", state.path, exc
            )
            return state
        if isinstance(data, dict) and data.get("version") == VERSION:
            state.watches = _strings(data.get("watches"), depth=2)
            state.starts = _strings(data.get("starts"), depth=3)
        return state

    def since(self, plugin_id: str, scope: str) -> str | None:
        return self.watches.get(plugin_id, {}).get(scope_key(scope))

    def set_since(self, plugin_id: str, scope: str, since: str) -> None:
        self.watches.setdefault(plugin_id, {})[scope_key(scope)] = since

    def start(self, rule_id: str, plugin_id: str, scope: str) -> str | None:
        return self.starts.get(rule_id, {}).get(plugin_id, {}).get(scope_key(scope))

    def set_start(self, rule_id: str, plugin_id: str, scope: str, start: str) -> None:
        self.starts.setdefault(rule_id, {}).setdefault(plugin_id, {})[scope_key(scope)] = start

    def keep(self, wanted: set[tuple[str, str, str]]) -> bool:
        """Drop what no `(rule, plugin, scope)` of `wanted` needs; whether anything went."""
        watched = {(plugin, scope_key(scope)) for _, plugin, scope in wanted}
        rules = {(rule, plugin, scope_key(scope)) for rule, plugin, scope in wanted}
        before = (json.dumps(self.watches, sort_keys=True), json.dumps(self.starts, sort_keys=True))
        self.watches = {
            plugin: kept
            for plugin, scopes in self.watches.items()
            if (kept := {s: v for s, v in scopes.items() if (plugin, s) in watched})
        }
        self.starts = {
            rule: kept_plugins
            for rule, plugins in self.starts.items()
            if (
                kept_plugins := {
                    plugin: kept
                    for plugin, scopes in plugins.items()
                    if (kept := {s: v for s, v in scopes.items() if (rule, plugin, s) in rules})
                }
            )
        }
        after = (json.dumps(self.watches, sort_keys=True), json.dumps(self.starts, sort_keys=True))
        return before != after

    def save(self) -> None:
        """Write the state atomically (blocking: call it in a thread)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = json.dumps(
            {"version": VERSION, "watches": self.watches, "starts": self.starts}, indent=2
        )
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cursors-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _strings(value: Any, *, depth: int) -> Any:
    """`value` as nested dicts of strings `depth` levels deep; whatever else is dropped."""
    if depth == 0:
        return value if isinstance(value, str) else None
    if not isinstance(value, dict):
        return {}
    kept = {}
    for key, item in value.items():
        inner = _strings(item, depth=depth - 1)
        if isinstance(key, str) and inner:
            kept[key] = inner
    return kept
