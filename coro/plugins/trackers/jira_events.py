"""Jira's changelog histories and comments as trigger events, the same (and with the same
event keys) whether the `jira` feed's search found them or a webhook delivered them
(`coro.plugins.trackers.jira_webhooks`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from coro.plugins.trackers.adf import adf_to_text
from coro.plugins.trackers.base import TriggerEvent, TriggerKind, feed_iso, feed_time

#: changelog fields whose changes may start a job, and the trigger kind each one is
FEED_FIELD_KINDS: dict[str, TriggerKind] = {
    "status": "issue.transitioned",
    "labels": "issue.labeled",
    "assignee": "issue.assigned",
}


@dataclass(frozen=True)
class FeedIssue:
    """What the trigger events of one issue share."""

    key: str
    project: str
    title: str
    body: str
    url: str


def people(value: Any) -> tuple[str | None, tuple[str, ...]]:
    """A person's shown name and every name they go by (account id, name, e-mail)."""
    if not isinstance(value, Mapping):
        return None, ()
    names = [
        value[field].strip()
        for field in ("displayName", "name", "emailAddress", "accountId")
        if isinstance(value.get(field), str) and value[field].strip()
    ]
    return person(value), tuple(dict.fromkeys(names))


def history_events(
    plugin_id: str, issue: FeedIssue, history: Mapping[str, Any], at: datetime
) -> list[TriggerEvent]:
    """The trigger events of one changelog history (a search's, or a webhook's
    `changelog`): a status change, each label added, an assignment."""
    history_id = str(history.get("id"))
    author, author_ids = people(history.get("author"))
    base = TriggerEvent(
        kind="issue.transitioned",
        plugin_id=plugin_id,
        provider="jira",
        event_key="",
        scope=issue.project,
        key=issue.key,
        at=feed_iso(at),
        title=issue.title,
        body=issue.body,
        url=issue.url,
        author=author,
        author_ids=author_ids,
    )
    events: list[TriggerEvent] = []
    items = history.get("items")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        field_name = item.get("field")
        kind = FEED_FIELD_KINDS.get(field_name) if isinstance(field_name, str) else None
        before, after = text_field(item.get("fromString")), text_field(item.get("toString"))
        if kind == "issue.transitioned" and after:
            events.append(
                replace(
                    base,
                    event_key=f"jira:{issue.key}:transition:{history_id}",
                    status=after,
                    from_status=before or None,
                )
            )
        elif kind == "issue.labeled":
            for label in [x for x in after.split() if x not in before.split()]:
                events.append(
                    replace(
                        base,
                        kind=kind,
                        event_key=f"jira:{issue.key}:labeled:{label}:{history_id}",
                        label=label,
                    )
                )
        elif kind == "issue.assigned":
            ids = tuple(dict.fromkeys(v for v in (text_field(item.get("to")), after) if v))
            if ids:
                events.append(
                    replace(
                        base,
                        kind=kind,
                        event_key=f"jira:{issue.key}:assigned:{history_id}",
                        assignee=after or ids[0],
                        assignee_ids=ids,
                    )
                )
    return events


def comment_event(plugin_id: str, issue: FeedIssue, raw: Any) -> TriggerEvent | None:
    """A comment (a search's, or a webhook's) as a trigger event."""
    if not isinstance(raw, Mapping):
        return None
    comment_id = raw.get("id")
    at = feed_time(iso_timestamp(raw.get("created")))
    if not isinstance(comment_id, str | int) or isinstance(comment_id, bool) or at is None:
        return None
    author, author_ids = people(raw.get("author"))
    return TriggerEvent(
        kind="comment.created",
        plugin_id=plugin_id,
        provider="jira",
        event_key=f"jira:{issue.key}:comment:{comment_id}",
        scope=issue.project,
        key=issue.key,
        at=feed_iso(at),
        title=issue.title,
        body=issue.body,
        url=issue.url,
        author=author,
        author_ids=author_ids,
        comment_id=str(comment_id),
        comment=adf_to_text(raw.get("body")),
    )


def person(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return None
    for field in ("displayName", "name", "emailAddress", "accountId"):
        candidate = value.get(field)
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def text_field(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def iso_timestamp(value: Any) -> str:
    """Jira's `2024-01-15T10:30:00.000+0000` as ISO 8601 (`…+00:00`); anything
    unparseable as it came (or "")."""
    if not isinstance(value, str):
        return ""
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").isoformat()
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return value
