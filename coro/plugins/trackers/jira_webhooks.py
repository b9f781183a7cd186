"""Jira webhook deliveries → trigger events (the `jira` plugin's trigger parser).

The event is the body's `webhookEvent`; what may start a job, as the `jira` feed
(`coro.plugins.trackers.jira`) reports it from a search, under the same event keys:

* `jira:issue_updated`: its `changelog` (a status change, labels added, an assignment)
  gives `issue.transitioned` / `issue.labeled` / `issue.assigned`, keyed by the
  changelog's id;
* `comment_created`: the `comment` gives `comment.created`, keyed by the comment's id.

The changelog's author is the delivery's `user`, its time the delivery's `timestamp`
(milliseconds). The issue's page is `<site>/browse/<KEY>`, the site taken from the
issue's `self` (its REST URL, a Data Center context path kept). Anything else, or a body
that is not what Jira sends, gives no event (never an exception).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from coro.plugins.trackers.adf import adf_to_text
from coro.plugins.trackers.base import TriggerEvent, feed_time
from coro.plugins.trackers.jira import ISSUE_KEY, PLUGIN_ID
from coro.plugins.trackers.jira_events import (
    FeedIssue,
    comment_event,
    history_events,
    iso_timestamp,
)
from coro.plugins.webhooks import obj, payload_of, text

ISSUE_UPDATED = "jira:issue_updated"
COMMENT_CREATED = "comment_created"


def parse_trigger_webhook(headers: Mapping[str, str], body: bytes) -> list[TriggerEvent]:
    """The trigger events of a Jira delivery ([] for one that starts nothing)."""
    payload = payload_of(headers, body)
    if payload is None:
        return []
    event = text(payload, "webhookEvent")
    issue = _issue(payload)
    if issue is None:
        return []
    if event == ISSUE_UPDATED:
        changelog = obj(payload, "changelog")
        at = _timestamp(payload.get("timestamp"))
        if changelog is None or changelog.get("id") is None or at is None:
            return []
        history = {**changelog, "author": payload.get("user")}
        return history_events(PLUGIN_ID, issue, history, at)
    if event == COMMENT_CREATED:
        comment = obj(payload, "comment")
        if comment is None:
            return []
        found = comment_event(PLUGIN_ID, issue, comment)
        return [found] if found is not None else []
    return []


def _issue(payload: Mapping[str, Any]) -> FeedIssue | None:
    issue = obj(payload, "issue")
    key = text(issue, "key")
    if issue is None or key is None or not ISSUE_KEY.match(key):
        return None
    fields = obj(issue, "fields") or {}
    project = text(obj(fields, "project"), "key") or key.rsplit("-", 1)[0]
    site = (text(issue, "self") or "").split("/rest/api/", 1)[0]
    url = f"{site}/browse/{key}" if site.startswith(("https://", "http://")) else ""
    return FeedIssue(
        key=key,
        project=project,
        title=(text(fields, "summary") or "").strip(),
        body=adf_to_text(fields.get("description")),
        url=url,
    )


def _timestamp(value: Any) -> datetime | None:
    """The delivery's `timestamp` (epoch milliseconds, or an ISO time) in UTC."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**53:
        return datetime.fromtimestamp(value / 1000, UTC)
    return feed_time(iso_timestamp(value)) if isinstance(value, str) else None
