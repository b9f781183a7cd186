"""The interface of an issue-tracker plugin (SPEC §4.7), and of a tracker whose events
can start jobs (`TriggerFeed`, what `coro.engine.triggers` polls)."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

from coro.plugins.scm.base import ConnectionCheck


@dataclass(frozen=True)
class TrackerComment:
    id: str
    author: str
    body: str  # plain text (Atlassian document format converted)
    created_at: str
    #: the author's relation to the repository (GitHub: OWNER, MEMBER, COLLABORATOR, …)
    author_association: str | None = None


@dataclass(frozen=True)
class Issue:
    key: str  # "PROJ-12" or "owner/repo#12"
    title: str
    description: str  # plain text
    status: str
    url: str
    issue_type: str | None = None
    assignee: str | None = None
    labels: list[str] = field(default_factory=list)
    comments: list[TrackerComment] = field(default_factory=list)


@dataclass(frozen=True)
class Transition:
    id: str
    name: str
    to_status: str


class TrackerPlugin(Protocol):
    id: str

    async def get_issue(self, key: str) -> Issue: ...

    async def comment(self, key: str, body: str) -> TrackerComment: ...

    async def transitions(self, key: str) -> list[Transition]: ...

    async def transition(self, key: str, to: str) -> Transition:
        """Move the issue to the status (or transition) named `to`, case-insensitively."""

    async def test_connection(self) -> ConnectionCheck: ...

    async def aclose(self) -> None: ...


# --- events that may start a job (triggers) --------------------------------------------

#: What happened: an issue (or pull request) labelled, assigned, moved to a status
#: (a Jira transition; GitHub's close and reopen), or a new comment on either.
TriggerKind = Literal["issue.labeled", "issue.assigned", "issue.transitioned", "comment.created"]


@dataclass(frozen=True)
class TriggerEvent:
    """One event in a tracker or on a pull request, normalised: what a feed's poll (and,
    in the cloud, a webhook delivery) reports and trigger rules match.

    `event_key` names the event itself, the same however it was learnt, so a second
    delivery or a re-poll finds the job the first one started:
    `github:<owner/name>#<n>:labeled:<label>:<time>`, `…#<n>:assigned:<login>:<time>`,
    `…#<n>:transition:<open|closed>:<time>`, `github:<owner/name>:comment:<id>`,
    `jira:<KEY>:labeled:<label>:<changelog id>`, `jira:<KEY>:assigned:<changelog id>`,
    `jira:<KEY>:transition:<changelog id>`, `jira:<KEY>:comment:<id>` (GitHub repository
    names lower-cased). GitHub labels and assignments are keyed by their time, which a
    webhook's issue carries too (as `updated_at`), not by the issue event's id, which
    only the REST API has."""

    kind: TriggerKind
    #: the plugin that reported it, and the provider it speaks for (`github`, `jira`)
    plugin_id: str
    provider: str
    event_key: str
    #: the repository (`owner/name`) or Jira project key the event belongs to
    scope: str
    #: the thread: `owner/name#12` (issue or pull request) or `PROJ-12`
    key: str
    #: when it happened (ISO 8601, UTC)
    at: str
    number: int | None = None  # the GitHub issue or pull request number
    pull_request: bool = False
    title: str = ""
    body: str = ""  # the issue's description (plain text)
    #: the issue's or pull request's web page
    url: str | None = None
    #: who labelled, assigned, moved or commented; `author_ids`: every name they go by
    #: (a Jira account id, display name and e-mail), for `permittedUsers`
    author: str | None = None
    author_ids: tuple[str, ...] = ()
    #: GitHub's relation of a comment's author to the repository (OWNER, MEMBER, …)
    author_association: str | None = None
    label: str | None = None
    assignee: str | None = None
    assignee_ids: tuple[str, ...] = ()
    status: str | None = None  # the status moved to
    from_status: str | None = None
    comment_id: str | None = None
    comment: str | None = None  # the comment's text
    #: a pull request's branches and head repository, once known (`feed_details`)
    head_branch: str | None = None
    head_repo: str | None = None
    base_branch: str | None = None


@dataclass(frozen=True)
class FeedPage:
    """What one poll of a scope found."""

    events: list[TriggerEvent]
    #: where the next poll starts: the newest time the provider reported, or the `since`
    #: polled when nothing was new (so the next request is the same, and a conditional
    #: one costs nothing)
    since: str


@runtime_checkable
class TriggerFeed(Protocol):
    """A tracker whose events can start jobs: polled per scope (a repository or a
    project) from a time on. Times are ISO 8601 in UTC, on the provider's clock."""

    id: str

    async def feed_start(self, scope: str) -> str:
        """The provider's time now, where watching `scope` starts (the scope is checked:
        `PluginNotFoundError` if it does not exist or cannot be seen)."""

    async def feed_poll(self, scope: str, since: str) -> FeedPage:
        """The events of `scope` at or after `since`, oldest first (events exactly at
        `since` may come again: their keys tell them apart)."""

    async def feed_details(self, event: TriggerEvent) -> TriggerEvent:
        """`event` with what a job needs and a poll leaves out because it costs a request
        per event: an issue comment's issue title and body; a pull request's head branch
        and repository and base branch."""


def feed_time(value: str | None) -> datetime | None:
    """An ISO 8601 time (`Z`, `+00:00` or Jira's `+0000`) as an aware datetime in UTC;
    None for anything else."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit() and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"  # Jira's +0000
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def date_header_time(value: str | None) -> datetime:
    """The time an HTTP `Date` header says (the provider's clock), else ours."""
    try:
        return email.utils.parsedate_to_datetime(value or "").astimezone(UTC)
    except (TypeError, ValueError, IndexError):
        return datetime.now(UTC)


def feed_iso(moment: datetime) -> str:
    """`moment` as the feeds write times: `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
