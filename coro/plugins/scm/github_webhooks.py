"""GitHub webhook deliveries → pull request events (the `github` plugin's parser).

The event is named by `X-GitHub-Event`; the body is JSON (or form-encoded with a
`payload` field). What wakes a job, as the poller would have seen it:

| event | action / state | event key |
|---|---|---|
| `pull_request` | `closed`, merged | `pullrequest:fulfilled` |
| `pull_request` | `closed`, not merged | `pullrequest:rejected` |
| `pull_request` | `reopened` | `pullrequest:updated` (state OPEN) |
| `pull_request_review` | `submitted`, `approved` | `pullrequest:approved` |
| `pull_request_review` | `submitted`, `changes_requested` | `pullrequest:changes_request_created` |
| `pull_request_review` | `submitted`, with a body | `pullrequest:comment_created` |
| `pull_request_review_comment` | `created` | `pullrequest:comment_created` |
| `issue_comment` on a pull request | `created` | `pullrequest:comment_created` |

A review's body is a comment, with the id `pr_status` gives it (`review-<id>`), so an approval
with a note gives both events, as a poll would. `synchronize` (new commits) gives none:
the poller does not wake on pushes either, and the agent's own pushes would wake it.
`ping`, other events and other actions give none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coro.plugins.webhooks import (
    APPROVED,
    CHANGES_REQUESTED,
    COMMENTED,
    DECLINED,
    MERGED,
    UPDATED,
    WebhookEvent,
    WebhookPrState,
    comment_payload,
    number,
    obj,
    payload_of,
    pr_ref,
    repo_key,
    text,
)

PLUGIN_ID = "github"


def parse_webhook(headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
    """The changes a GitHub delivery reports ([] for one Coro does not act on)."""
    event = headers.get("x-github-event", "").strip()
    handler = _HANDLERS.get(event)
    if handler is None:
        return []
    payload = payload_of(headers, body)
    if payload is None:
        return []
    repo = repo_key(text(obj(payload, "repository"), "full_name"))
    if repo is None:
        return []
    return handler(payload, repo)


def _pull_request(payload: dict[str, Any], repo: str) -> list[WebhookEvent]:
    pull = obj(payload, "pull_request")
    pr_id = number(pull, "number")
    if pull is None or pr_id is None:
        return []
    action = text(payload, "action")
    state: WebhookPrState
    if action == "closed":
        merged = pull.get("merged") is True or bool(text(pull, "merged_at"))
        key, state = (MERGED, "MERGED") if merged else (DECLINED, "DECLINED")
    elif action == "reopened":
        key, state = UPDATED, "OPEN"
    else:
        return []
    return [_event(repo, pr_id, pull, key, state, {"state": state})]


def _review(payload: dict[str, Any], repo: str) -> list[WebhookEvent]:
    pull = obj(payload, "pull_request")
    review = obj(payload, "review")
    pr_id = number(pull, "number")
    review_id = number(review, "id")
    if text(payload, "action") != "submitted" or pull is None or pr_id is None:
        return []
    if review is None or review_id is None:
        return []
    verdict = (text(review, "state") or "").lower()
    reviewer = _login(review)
    state = _state(pull)
    events = []
    payload_out: dict[str, Any]
    if verdict == "approved":
        payload_out = {"approvedBy": [reviewer]}
        events.append(_event(repo, pr_id, pull, APPROVED, state, payload_out, actor=reviewer))
    elif verdict == "changes_requested":
        payload_out = {"changesRequestedBy": reviewer}
        events.append(
            _event(repo, pr_id, pull, CHANGES_REQUESTED, state, payload_out, actor=reviewer)
        )
    elif verdict != "commented":
        return []
    note = text(review, "body") or ""
    submitted = text(review, "submitted_at")
    if note.strip() and submitted:
        comment_id = f"review-{review_id}"
        said = comment_payload(comment_id, note, reviewer, submitted)
        events.append(_event(repo, pr_id, pull, COMMENTED, state, said, comment_id=comment_id))
    return events


def _review_comment(payload: dict[str, Any], repo: str) -> list[WebhookEvent]:
    pull = obj(payload, "pull_request")
    comment = obj(payload, "comment")
    pr_id = number(pull, "number")
    comment_id = number(comment, "id")
    created = text(comment, "created_at")
    if text(payload, "action") != "created" or pull is None or pr_id is None:
        return []
    if comment is None or comment_id is None or created is None:
        return []
    parent = number(comment, "in_reply_to_id")
    said = comment_payload(
        str(comment_id),
        text(comment, "body") or "",
        _login(comment),
        created,
        in_reply_to=str(parent) if parent is not None else None,
        path=text(comment, "path"),
    )
    return [_event(repo, pr_id, pull, COMMENTED, _state(pull), said, comment_id=str(comment_id))]


def _issue_comment(payload: dict[str, Any], repo: str) -> list[WebhookEvent]:
    issue = obj(payload, "issue")
    linked = obj(issue, "pull_request")  # present only when the issue is a pull request
    comment = obj(payload, "comment")
    pr_id = number(issue, "number")
    comment_id = number(comment, "id")
    created = text(comment, "created_at")
    if text(payload, "action") != "created" or linked is None or pr_id is None:
        return []
    if comment is None or comment_id is None or created is None:
        return []
    state: WebhookPrState = "OPEN"
    if text(issue, "state") == "closed":
        if text(linked, "merged_at"):
            state = "MERGED"
        else:
            state = "DECLINED" if "merged_at" in linked else "CLOSED"
    said = comment_payload(str(comment_id), text(comment, "body") or "", _login(comment), created)
    ref = pr_ref(PLUGIN_ID, repo, pr_id, text(linked, "html_url"))
    return [WebhookEvent(ref, COMMENTED, state, said, comment_id=str(comment_id))]


def _state(pull: dict[str, Any]) -> WebhookPrState:
    if pull.get("merged") is True or text(pull, "merged_at"):
        return "MERGED"
    return "DECLINED" if text(pull, "state") == "closed" else "OPEN"


def _login(item: dict[str, Any]) -> str:
    return text(obj(item, "user"), "login") or "ghost"


def _event(
    repo: str,
    pr_id: int,
    pull: dict[str, Any],
    key: str,
    state: WebhookPrState,
    payload: dict[str, Any],
    *,
    actor: str | None = None,
    comment_id: str | None = None,
) -> WebhookEvent:
    ref = pr_ref(PLUGIN_ID, repo, pr_id, text(pull, "html_url"))
    return WebhookEvent(ref, key, state, payload, actor=actor, comment_id=comment_id)


_HANDLERS = {
    "pull_request": _pull_request,
    "pull_request_review": _review,
    "pull_request_review_comment": _review_comment,
    "issue_comment": _issue_comment,
}
