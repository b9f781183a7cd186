"""A tracker whose issues live in its own config: `{project, token, issues: {KEY: title}}`.

Issue titles carry `project`, so a test sees a config change take effect.
"""

from __future__ import annotations

from typing import Any

from coro.domain.errors import PluginConfigError, PluginNotFoundError
from coro.plugins.scm.base import ConnectionCheck
from coro.plugins.trackers.base import Issue, TrackerComment, Transition

MANIFEST = {
    "id": "acme-tracker",
    "kind": "tracker",
    "version": "0.1.0",
    "displayName": "Acme Tracker",
    "description": "Issues kept in the plugin's own config.",
    "hostCompatibility": "^1.0.0",
    "configSchema": {
        "type": "object",
        "properties": {
            "project": {"type": "string", "minLength": 1},
            "token": {"type": "string", "writeOnly": True},
            "issues": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["project", "token"],
        "additionalProperties": False,
    },
    "capabilities": {"supportsComments": True, "supportsTransitions": True},
    "webhook": {"algorithm": "hmac-sha256", "header": "X-Acme-Signature", "format": "<hex>"},
}

TRANSITIONS = [Transition("1", "Start", "In Progress"), Transition("2", "Finish", "Done")]


class AcmeTracker:
    id = "acme-tracker"

    def __init__(self, settings: dict[str, Any]) -> None:
        self.project = settings["project"]
        self.issues: dict[str, str] = dict(settings.get("issues", {}))
        self.status: dict[str, str] = {}
        self.comments: dict[str, list[TrackerComment]] = {}
        self.closed = False

    async def get_issue(self, key: str) -> Issue:
        if key not in self.issues:
            raise PluginNotFoundError(f"{key} is not an Acme issue", status=404)
        return Issue(
            key=key,
            title=f"[{self.project}] {self.issues[key]}",
            description="",
            status=self.status.get(key, "Open"),
            url=f"https://acme.invalid/{key}",
            comments=list(self.comments.get(key, [])),
        )

    async def comment(self, key: str, body: str) -> TrackerComment:
        comments = self.comments.setdefault(key, [])
        made = TrackerComment(str(len(comments) + 1), "coro", body, "2026-01-01T00:00:00Z")
        comments.append(made)
        return made

    async def transitions(self, key: str) -> list[Transition]:
        return list(TRANSITIONS)

    async def transition(self, key: str, to: str) -> Transition:
        for option in TRANSITIONS:
            if to.lower() in (option.name.lower(), option.to_status.lower()):
                self.status[key] = option.to_status
                return option
        raise PluginNotFoundError(f"no transition reaches {to!r}")

    async def test_connection(self) -> ConnectionCheck:
        return ConnectionCheck(ok=True, message=f"Acme project {self.project}")

    async def aclose(self) -> None:
        self.closed = True


def create(settings: dict[str, Any], context: Any) -> AcmeTracker:
    if settings.get("project") == "INVALID":
        raise PluginConfigError("project: INVALID is not an Acme project")
    return AcmeTracker(settings)
