"""GitHub webhook deliveries → trigger events (the `github-issues` plugin's trigger parser).

The event is named by `X-GitHub-Event`; the body is JSON (or form-encoded with a
`payload` field). What may start a job, as the `github-issues` feed
(`coro.plugins.trackers.github_issues`) reports it from a poll, under the same event
keys (so a poll and a webhook of one event name one job):

| event | action | trigger event |
|---|---|---|
| `issues` | `labeled` | `issue.labeled` (keyed by the issue's `updated_at`, the label's time) |
| `issues` | `assigned` | `issue.assigned` |
| `issues` | `closed`, `reopened` | `issue.transitioned` (to `closed` / `open`) |
| `issue_comment` | `created` | `comment.created`, on an issue or a pull request |
| `pull_request_review_comment` | `created` | `comment.created` on the PR, with its branches |

The actor is the delivery's `sender`. A pull request's conversation comment carries no
branches (GitHub's payload has none); a review comment's pull request has them. Anything
else, or a body that is not what GitHub sends, gives no event (never an exception).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from coro.plugins.trackers.base import TriggerEvent, feed_iso, feed_time
from coro.plugins.trackers.github_issues import PLUGIN_ID
from coro.plugins.trackers.github_issues_events import (
    FEED_EVENTS,
    body_of,
    comment_trigger_event,
    issue_trigger_event,
)
from coro.plugins.webhooks import number, obj, payload_of, repo_key, text


def parse_trigger_webhook(headers: Mapping[str, str], body: bytes) -> list[TriggerEvent]:
    """The trigger events of a GitHub delivery ([] for one that starts nothing)."""
    event = headers.get("x-github-event", "").strip()
    if event not in ("issues", "issue_comment", "pull_request_review_comment"):
        return []
    payload = payload_of(headers, body)
    if payload is None:
        return []
    repo = repo_key(text(obj(payload, "repository"), "full_name"))
    if repo is None:
        return []
    found: TriggerEvent | None
    if event == "issues":
        found = _issue_event(payload, repo)
    elif event == "issue_comment":
        found = _comment(payload, repo)
    else:
        found = _review_comment(payload, repo)
    return [found] if found is not None else []


def _issue_event(payload: dict[str, Any], repo: str) -> TriggerEvent | None:
    action = text(payload, "action")
    issue = obj(payload, "issue")
    if action not in FEED_EVENTS or issue is None:
        return None
    # the issue event the API would list for this change
    raw: dict[str, Any] = {
        "event": action,
        "created_at": text(issue, "closed_at") if action == "closed" else None,
        "actor": payload.get("sender"),
        "label": payload.get("label"),
        "assignee": payload.get("assignee"),
    }
    raw["created_at"] = raw["created_at"] or text(issue, "updated_at")
    return issue_trigger_event(PLUGIN_ID, repo, issue, raw)


def _comment(payload: dict[str, Any], repo: str) -> TriggerEvent | None:
    issue = obj(payload, "issue")
    comment = obj(payload, "comment")
    if text(payload, "action") != "created" or issue is None or comment is None:
        return None
    found = comment_trigger_event(PLUGIN_ID, repo, comment)
    if found is None or found.number != number(issue, "number"):
        return None
    return replace(
        found,
        pull_request=obj(issue, "pull_request") is not None,
        title=(text(issue, "title") or "").strip(),
        body=body_of(issue.get("body")),
    )


def _review_comment(payload: dict[str, Any], repo: str) -> TriggerEvent | None:
    pull = obj(payload, "pull_request")
    comment = obj(payload, "comment")
    pr_id = number(pull, "number")
    comment_id = number(comment, "id")
    at = feed_time(text(comment, "created_at"))
    if text(payload, "action") != "created" or pull is None or comment is None:
        return None
    if pr_id is None or comment_id is None or at is None:
        return None
    author = text(obj(comment, "user"), "login")
    head, base = obj(pull, "head") or {}, obj(pull, "base") or {}
    page = text(pull, "html_url")
    return TriggerEvent(
        kind="comment.created",
        plugin_id=PLUGIN_ID,
        provider="github",
        event_key=f"github:{repo.lower()}:review-comment:{comment_id}",
        scope=repo,
        key=f"{repo}#{pr_id}",
        at=feed_iso(at),
        number=pr_id,
        pull_request=True,
        title=(text(pull, "title") or "").strip(),
        body=body_of(pull.get("body")),
        url=page if page and page.startswith(("https://", "http://")) else None,
        author=author,
        author_ids=(author,) if author else (),
        author_association=text(comment, "author_association"),
        comment_id=str(comment_id),
        comment=(text(comment, "body") or "").replace("\r\n", "\n").strip("\n"),
        head_branch=text(head, "ref") or None,
        head_repo=repo_key(text(obj(head, "repo"), "full_name")),
        base_branch=text(base, "ref") or None,
    )
