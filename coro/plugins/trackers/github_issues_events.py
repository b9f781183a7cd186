"""GitHub's issue events and comments as trigger events, the same (and with the same event
keys) whether the `github-issues` feed polled them or a webhook delivered them: the feed
reads an issue's events API and the repository's comment list, the webhook parser
(`coro.plugins.trackers.github_issues_webhooks`) builds the same objects from a
delivery."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from coro.plugins.trackers.base import TriggerEvent, TriggerKind, feed_iso, feed_time

_ISSUE_URL = re.compile(r"/issues/(?P<number>\d{1,10})$")
#: issue events that may start a job, and the trigger kind each one is
FEED_EVENTS: dict[str, TriggerKind] = {
    "labeled": "issue.labeled",
    "assigned": "issue.assigned",
    "closed": "issue.transitioned",
    "reopened": "issue.transitioned",
}


def text_of(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def body_of(value: Any) -> str:
    return value.replace("\r\n", "\n").strip("\n") if isinstance(value, str) else ""


def login_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        login = value.get("login")
        if isinstance(login, str) and login:
            return login
    return None


def _thread(html_url: Any) -> str | None:
    """The issue's or pull request's web page (a comment's URL without its anchor)."""
    if isinstance(html_url, str) and html_url.startswith(("https://", "http://")):
        return html_url.split("#", 1)[0]
    return None


def issue_trigger_event(
    plugin_id: str, repo: str, issue: Mapping[str, Any], raw: Any
) -> TriggerEvent | None:
    """A `labeled`, `assigned`, `closed` or `reopened` issue event (`raw`, as the issue
    events API gives one) of `issue` as a trigger event."""
    if not isinstance(raw, Mapping):
        return None
    name = raw.get("event")
    kind = FEED_EVENTS.get(name) if isinstance(name, str) else None
    at = feed_time(raw.get("created_at"))
    number = issue.get("number")
    if kind is None or at is None or not isinstance(number, int):
        return None
    pull = issue.get("pull_request") is not None
    actor = login_of(raw.get("actor"))
    key = f"{repo}#{number}"
    stamp = feed_iso(at)
    label = assignee = status = None
    if name == "labeled":
        label_data = raw.get("label")
        label = text_of(label_data.get("name")) if isinstance(label_data, Mapping) else ""
        if not label:
            return None
        event_key = f"github:{repo.lower()}#{number}:labeled:{label}:{stamp}"
    elif name == "assigned":
        assignee = login_of(raw.get("assignee"))
        if assignee is None:
            return None
        event_key = f"github:{repo.lower()}#{number}:assigned:{assignee.lower()}:{stamp}"
    else:
        status = "closed" if name == "closed" else "open"
        event_key = f"github:{repo.lower()}#{number}:transition:{status}:{stamp}"
    return TriggerEvent(
        kind=kind,
        plugin_id=plugin_id,
        provider="github",
        event_key=event_key,
        scope=repo,
        key=key,
        at=stamp,
        number=number,
        pull_request=pull,
        title=text_of(issue.get("title")),
        body=body_of(issue.get("body")),
        url=_thread(issue.get("html_url")),
        author=actor,
        author_ids=(actor,) if actor else (),
        label=label,
        assignee=assignee,
        assignee_ids=(assignee,) if assignee else (),
        status=status,
    )


def comment_trigger_event(
    plugin_id: str, repo: str, data: Mapping[str, Any]
) -> TriggerEvent | None:
    """A comment of the repository-wide list as a trigger event (its issue's number
    from `issue_url`; a pull request's comment has `/pull/` in its `html_url`)."""
    comment_id = data.get("id")
    at = feed_time(data.get("created_at"))
    issue_url = data.get("issue_url")
    found = _ISSUE_URL.search(issue_url) if isinstance(issue_url, str) else None
    if not isinstance(comment_id, int) or isinstance(comment_id, bool) or at is None or not found:
        return None
    number = int(found.group("number"))
    html_url = data.get("html_url")
    pull = isinstance(html_url, str) and f"/pull/{number}" in html_url
    author = login_of(data.get("user"))
    association = data.get("author_association")
    return TriggerEvent(
        kind="comment.created",
        plugin_id=plugin_id,
        provider="github",
        event_key=f"github:{repo.lower()}:comment:{comment_id}",
        scope=repo,
        key=f"{repo}#{number}",
        at=feed_iso(at),
        number=number,
        pull_request=pull,
        url=_thread(html_url),
        author=author,
        author_ids=(author,) if author else (),
        author_association=association if isinstance(association, str) else None,
        comment_id=str(comment_id),
        comment=body_of(data.get("body")),
    )
