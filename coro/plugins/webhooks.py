"""Webhook deliveries a plugin understands: what its parser returns, and the pieces
parsers share.

A plugin that takes webhooks declares how they are signed in its manifest's `webhook`
block (`coro.plugins.manifest.WebhookSpec`) and offers a parser: a module-level
`parse_webhook(headers, body) -> list[WebhookEvent]` in the module of its factory (as
`WEBHOOK` is, for a built-in), which needs no settings (the cloud calls it to find the
job a delivery is for, without the plugin's credentials), and the same function as the
plugin object's `parse_webhook` method (`WebhookParser`), which the runner calls.

A parser reads what a stranger sent: wrong types, missing keys or a body that is not
JSON give no event, never an exception. Event keys and payloads are the PR poller's
(`coro.engine.polling`), so a parked job wakes from a webhook as it would from a poll.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from coro.domain.models import ExternalRef

#: The PR's state as a delivery tells it (`CLOSED`: closed, merged or not unknown).
WebhookPrState = Literal["OPEN", "MERGED", "DECLINED", "CLOSED"]

APPROVED = "pullrequest:approved"
UNAPPROVED = "pullrequest:unapproved"
CHANGES_REQUESTED = "pullrequest:changes_request_created"
COMMENTED = "pullrequest:comment_created"
MERGED = "pullrequest:fulfilled"
DECLINED = "pullrequest:rejected"
UPDATED = "pullrequest:updated"

_REPO_PART = re.compile(r"^[A-Za-z0-9_.{}-]{1,200}$")
_SSH_FORM = re.compile(r"^[^/@\s]+@[^:/\s]+:(.*)$")


@dataclass(frozen=True)
class WebhookEvent:
    """One change a delivery reports about one pull request."""

    #: kind `pull_request`, the plugin's id, `repo_key` `owner/name`, the PR number
    ref: ExternalRef
    event_key: str
    state: WebhookPrState
    #: the poller's payload for the key, without `prId` / `pullrequest` (added by the
    #: engine, which knows the job's own name for the repository)
    payload: Mapping[str, Any]
    #: approvals after this change, when the delivery says (else the engine counts)
    approval_count: int | None = None
    #: who approved, withdrew an approval or asked for changes
    actor: str | None = None
    #: a comment's id as the plugin's `pr_status` names it (the poller's seen ids)
    comment_id: str | None = None

    @property
    def pr_id(self) -> int:
        return int(self.ref.external_id)


#: A parser: lower-cased header names, the exact body.
ParseWebhook = Callable[[Mapping[str, str], bytes], list[WebhookEvent]]


@runtime_checkable
class WebhookParser(Protocol):
    """A plugin that turns its provider's webhook deliveries into events."""

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        """The changes a delivery reports ([] for one it does not act on)."""


# --- reading untrusted payloads ---------------------------------------------------------


def payload_of(headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
    """The delivery's JSON object: the body, or the `payload` field of a form-encoded
    body (GitHub's other content type); None for anything else."""
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if content_type == "application/x-www-form-urlencoded":
        fields = parse_qs(text, max_num_fields=20)
        values = fields.get("payload")
        if not values:
            return None
        text = values[0]
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def obj(data: Any, *path: str) -> dict[str, Any] | None:
    """The object at `path` inside `data`, or None when any step is not an object."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, dict) else None


def text(data: Any, key: str) -> str | None:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def number(data: Any, key: str) -> int | None:
    """A positive integer (or a string of digits) at `key`."""
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        value = int(value)
    if isinstance(value, int) and 0 < value < 2**63:
        return value
    return None


def repo_key(full_name: str | None) -> str | None:
    """`owner/name` from a delivery's repository name, if it is one."""
    if full_name is None:
        return None
    parts = full_name.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) and p not in (".", "..") for p in parts):
        return None
    return full_name


def pr_ref(plugin_id: str, repo: str, pr_id: int, url: str | None) -> ExternalRef:
    return ExternalRef(
        kind="pull_request",
        plugin_id=plugin_id,
        repo_key=repo,
        external_id=str(pr_id),
        url=url if url and url.startswith(("https://", "http://")) else None,
    )


def comment_payload(
    comment_id: str,
    body: str,
    author: str,
    created_at: str,
    in_reply_to: str | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    """A new comment as the poller describes one."""
    return {
        "comment": {
            "id": comment_id,
            "content": {"raw": body},
            "user": {"display_name": author},
            "created_on": created_at,
            "inReplyTo": in_reply_to,
            "path": path,
        }
    }


# --- matching repositories --------------------------------------------------------------


def repo_names_match(job_repo: str | None, delivery_repo: str | None) -> bool:
    """Whether the repository a job names (`owner/name`, a bare name, or a clone URL, as
    the agent gave it to `scm_clone_repo`) is the delivery's `owner/name` (ignoring
    case; a bare name matches the delivery's name in any owner)."""
    if not job_repo or not delivery_repo:
        return False
    wanted = [part.lower() for part in delivery_repo.split("/") if part]
    given = _repo_parts(job_repo.strip())
    if not given or not wanted:
        return False
    if len(given) == 1:
        return given[0] == wanted[-1]
    return given[-2:] == wanted[-2:]


def _repo_parts(repo: str) -> list[str]:
    ssh = _SSH_FORM.match(repo)
    if "://" in repo:
        path = urlsplit(repo).path
    elif ssh is not None:
        path = ssh.group(1)
    else:
        path = repo
    parts = [part for part in path.split("/") if part]
    if parts:
        parts[-1] = parts[-1].removesuffix(".git")
    return [part.lower() for part in parts[-2:] if part]
