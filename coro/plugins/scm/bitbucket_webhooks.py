"""Bitbucket Cloud webhook deliveries → pull request events (the `bitbucket` plugin's
parser).

The event is named by `X-Event-Key`, which is already the poller's vocabulary:

| `X-Event-Key` | event key |
|---|---|
| `pullrequest:approved` | `pullrequest:approved` |
| `pullrequest:unapproved` | `pullrequest:unapproved` |
| `pullrequest:changes_request_created` | `pullrequest:changes_request_created` |
| `pullrequest:comment_created` | `pullrequest:comment_created` (not deleted or pending) |
| `pullrequest:fulfilled` | `pullrequest:fulfilled` (state MERGED) |
| `pullrequest:rejected` | `pullrequest:rejected` (state DECLINED) |

Anything else gives no event. The approval count comes from the pull request's
participants when the delivery lists them. People are named as `pr_status` names them
(nickname, else username, display name, account id, uuid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coro.domain.models import ExternalRef
from coro.plugins.webhooks import (
    APPROVED,
    CHANGES_REQUESTED,
    COMMENTED,
    DECLINED,
    MERGED,
    UNAPPROVED,
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

PLUGIN_ID = "bitbucket"

_STATES: dict[str, WebhookPrState] = {
    "OPEN": "OPEN",
    "MERGED": "MERGED",
    "DECLINED": "DECLINED",
    "SUPERSEDED": "DECLINED",
}


def parse_webhook(headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
    """The changes a Bitbucket delivery reports ([] for one Coro does not act on)."""
    key = headers.get("x-event-key", "").strip()
    if key not in _KEYS:
        return []
    payload = payload_of(headers, body)
    pull = obj(payload, "pullrequest")
    pr_id = number(pull, "id")
    repo = repo_key(text(obj(payload, "repository"), "full_name"))
    if payload is None or pull is None or pr_id is None or repo is None:
        return []
    ref = pr_ref(PLUGIN_ID, repo, pr_id, text(obj(pull, "links", "html"), "href"))
    state = _STATES.get((text(pull, "state") or "").upper(), "OPEN")
    if key == MERGED:
        return [WebhookEvent(ref, key, "MERGED", {"state": "MERGED"})]
    if key == DECLINED:
        return [WebhookEvent(ref, key, "DECLINED", {"state": "DECLINED"})]
    if key == COMMENTED:
        return _comment(payload, ref, state)
    if key == CHANGES_REQUESTED:
        who = _name(obj(obj(payload, "changes_request"), "user") or obj(payload, "actor"))
        return [WebhookEvent(ref, key, state, {"changesRequestedBy": who}, actor=who)]
    who = _name(obj(obj(payload, "approval"), "user") or obj(payload, "actor"))
    approvers = _approvers(pull, who, adding=key == APPROVED)
    count = len(approvers) if approvers is not None else None
    said: dict[str, Any]
    if key == APPROVED:
        said = {"approvedBy": approvers if approvers is not None else [who]}
    else:
        said = {"unapprovedBy": who}
    return [WebhookEvent(ref, key, state, said, approval_count=count, actor=who)]


def _comment(
    payload: dict[str, Any], ref: ExternalRef, state: WebhookPrState
) -> list[WebhookEvent]:
    comment = obj(payload, "comment")
    comment_id = number(comment, "id")
    created = text(comment, "created_on")
    if comment is None or comment_id is None or created is None:
        return []
    if comment.get("deleted") is True or comment.get("pending") is True:
        return []
    parent = number(obj(comment, "parent"), "id")
    said = comment_payload(
        str(comment_id),
        text(obj(comment, "content"), "raw") or "",
        _name(obj(comment, "user")),
        created,
        in_reply_to=str(parent) if parent is not None else None,
        path=text(obj(comment, "inline"), "path"),
    )
    return [WebhookEvent(ref, COMMENTED, state, said, comment_id=str(comment_id))]


def _approvers(pull: dict[str, Any], who: str, *, adding: bool) -> list[str] | None:
    """Who approves after this change, from the participants (None if not listed)."""
    participants = pull.get("participants")
    if not isinstance(participants, list):
        return None
    names: list[str] = []
    for participant in participants:
        if isinstance(participant, dict) and participant.get("approved") is True:
            name = _name(obj(participant, "user"))
            if name not in names:
                names.append(name)
    if adding and who not in names:
        names.append(who)
    if not adding and who in names:
        names.remove(who)
    return names


def _name(account: dict[str, Any] | None) -> str:
    for key in ("nickname", "username", "display_name", "account_id", "uuid"):
        value = text(account, key)
        if value:
            return value
    return "unknown"


_KEYS = frozenset({APPROVED, UNAPPROVED, CHANGES_REQUESTED, COMMENTED, MERGED, DECLINED})
