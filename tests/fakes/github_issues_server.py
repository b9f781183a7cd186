"""A loopback fake of the GitHub REST API's issue endpoints.

A real HTTP/1.1 server on 127.0.0.1 (`TrackerServer` of `tests/fakes/http_server.py`;
listening as soon as `async with FakeGitHubIssues()` returns) with in-memory
repositories, issues (pull requests among them, as the issues API returns them), and
comments:

    GET   /user                                    (X-OAuth-Scopes)
    GET   /repos/{owner}/{repo}
    GET   /repos/{owner}/{repo}/issues/{n}         (410 when issues are disabled)
    PATCH /repos/{owner}/{repo}/issues/{n}         {state, state_reason} (422 if invalid)
    GET   /repos/{owner}/{repo}/issues/{n}/comments?per_page&page   (Link: next/last)
    POST  /repos/{owner}/{repo}/issues/{n}/comments {body}
    GET   /repos/{owner}/{repo}/issues?since&state&sort&direction&per_page&page
    GET   /repos/{owner}/{repo}/issues/comments?since&sort&direction&per_page&page
    GET   /repos/{owner}/{repo}/issues/{n}/events?per_page&page
    GET   /repos/{owner}/{repo}/pulls/{n}                (pull requests' head and base)

Time is the fake's own clock: every change (`label`, `assign`, `close`, a comment, a
PATCH) happens one minute after the one before (from 2024-03-01T09:00Z), and every
answer's `Date` is half a minute after the latest change, so "now" is after everything
that happened and before everything that will. A change bumps the issue's
`updated_at` and records an issue event (`labeled`, `assigned`, `closed`,
`reopened`) as GitHub's timeline does. Lists filter by `since` (`updated_at` at or
after it) and sort by `sort`/`direction`; every GET carries a weak `ETag` of its body
and answers `304 Not Modified` (not counted against the rate limit) to a matching
`If-None-Match`. A comment's `author_association` is the one given to `add_comment`.

Errors have GitHub's shape `{"message", "documentation_url", "status"}` (422 adds
`errors`). A wrong token gets 401 "Bad credentials"; `rate_limit("primary")` answers 403
with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`, `rate_limit("secondary")` 429
with `retry-after`; `respond_once` scripts a raw answer. Every request is recorded.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

from tests.fakes.http_server import Answer, RecordedRequest, TrackerServer, etag_of, not_modified

#: the fake's clock starts here; change n happens n minutes later
EPOCH = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

DOCS = "https://docs.github.com/rest"


@dataclass
class FakeComment:
    id: int
    author: str
    body: str
    created_at: str
    association: str = "CONTRIBUTOR"  # GitHub's `author_association`
    updated_at: str = ""


@dataclass
class FakeEvent:
    """An issue event of the timeline (`labeled`, `assigned`, `closed`, `reopened`)."""

    id: int
    event: str
    actor: str
    created_at: str
    label: str | None = None
    assignee: str | None = None


@dataclass
class FakeIssue:
    number: int
    title: str
    body: str | None
    state: str = "open"
    state_reason: str | None = None
    labels: list[str] = field(default_factory=list)
    assignee: str | None = None
    author: str = "octocat"
    pull_request: bool = False
    comments: list[FakeComment] = field(default_factory=list)
    events: list[FakeEvent] = field(default_factory=list)
    created_at: str = "2024-03-01T08:00:00Z"
    updated_at: str = "2024-03-01T08:00:00Z"
    #: a pull request's branches, and its head repository when it is a fork's
    head_branch: str = "feature"
    base_branch: str = "main"
    head_repo: str | None = None


@dataclass
class FakeRepo:
    owner: str
    name: str
    has_issues: bool = True
    private: bool = False
    issues: dict[int, FakeIssue] = field(default_factory=dict)


class FakeGitHubIssues(TrackerServer):
    def __init__(
        self,
        *,
        token: str = "ghp_fakeTokenForTests0123456789",
        login: str = "coro-bot",
        max_per_page: int = 100,
        scopes: str = "repo, read:org",
    ) -> None:
        super().__init__()
        self.token = token
        self.login = login
        self.max_per_page = max_per_page
        self.scopes = scopes
        self.user_forbidden = False  # an app token: /user answers 403
        self.repos: dict[str, FakeRepo] = {}
        self._rate_limit: Literal["primary", "secondary"] | None = None
        self._reset_in = 0
        self._ids = 1_000_000
        self._minutes = 0
        self._remaining = 5000

    # -- test API --

    def add_repo(self, full_name: str, *, has_issues: bool = True) -> FakeRepo:
        owner, name = full_name.split("/")
        repo = self.repos.setdefault(full_name.lower(), FakeRepo(owner, name))
        repo.has_issues = has_issues
        return repo

    def add_issue(
        self,
        full_name: str,
        number: int,
        title: str,
        *,
        body: str | None = None,
        state: str = "open",
        state_reason: str | None = None,
        labels: list[str] | None = None,
        assignee: str | None = None,
        pull_request: bool = False,
        head_branch: str = "feature",
        base_branch: str = "main",
        head_repo: str | None = None,
    ) -> FakeIssue:
        repo = self.repos.get(full_name.lower()) or self.add_repo(full_name)
        issue = FakeIssue(
            number,
            title,
            body,
            state,
            state_reason,
            list(labels or []),
            assignee,
            pull_request=pull_request,
            created_at=self._stamp(self._minutes),
            updated_at=self._stamp(self._minutes),
            head_branch=head_branch,
            base_branch=base_branch,
            head_repo=head_repo,
        )
        repo.issues[number] = issue
        return issue

    def add_comment(
        self,
        full_name: str,
        number: int,
        body: str,
        *,
        author: str = "octocat",
        association: str = "CONTRIBUTOR",
    ) -> FakeComment:
        issue = self.issue(full_name, number)
        stamp = self._timestamp()
        comment = FakeComment(self._next_id(), author, body, stamp, association, stamp)
        issue.comments.append(comment)
        issue.updated_at = stamp
        return comment

    def issue(self, full_name: str, number: int) -> FakeIssue:
        return self.repos[full_name.lower()].issues[number]

    def label(self, full_name: str, number: int, label: str, *, by: str = "octocat") -> FakeEvent:
        """`by` adds `label` to the issue (as the web page does)."""
        issue = self.issue(full_name, number)
        if label not in issue.labels:
            issue.labels.append(label)
        return self._event(issue, "labeled", by, label=label)

    def assign(self, full_name: str, number: int, login: str, *, by: str = "octocat") -> FakeEvent:
        """`by` assigns the issue to `login`."""
        issue = self.issue(full_name, number)
        issue.assignee = login
        return self._event(issue, "assigned", by, assignee=login)

    def _event(self, issue: FakeIssue, name: str, actor: str, **details: Any) -> FakeEvent:
        stamp = self._timestamp()
        event = FakeEvent(self._next_id(), name, actor, stamp, **details)
        issue.events.append(event)
        issue.updated_at = stamp
        return event

    def fail_next(self, status: int = 502, times: int = 1) -> None:
        """The next `times` requests are answered `status` (after authentication)."""
        self._failures += [status] * times

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Block until `condition()` holds after some request (an event, not a poll)."""
        async with self._arrived:
            await self._arrived.wait_for(condition)

    def rate_limit(
        self, kind: Literal["primary", "secondary"] | None, *, reset_in: int = 120
    ) -> None:
        self._rate_limit = kind
        self._reset_in = reset_in

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _timestamp(self) -> str:
        """The time of a new change: a minute after the one before."""
        self._minutes += 1
        return self._stamp(self._minutes)

    @staticmethod
    def _stamp(minutes: int) -> str:
        return (EPOCH + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def now(self) -> datetime:
        """What the fake's clock says (its answers' `Date`)."""
        return EPOCH + timedelta(minutes=self._minutes, seconds=30)

    # -- routing --

    def _rate_headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": str(self._remaining),
            "x-ratelimit-reset": str(int(time.time()) + 3600),
            "x-ratelimit-used": str(5000 - self._remaining),
            "x-ratelimit-resource": "core",
        }

    async def handle(self, request: RecordedRequest) -> Answer:
        if request.headers.get("authorization", "") != f"Bearer {self.token}":
            return Answer(401, _error("Bad credentials", 401))
        scripted = self.take_scripted(request)
        if scripted is not None:
            return scripted
        if self._rate_limit == "primary":
            reset = int(time.time()) + self._reset_in
            return Answer(
                403,
                _error(
                    "API rate limit exceeded for user ID 1. If you reach out to GitHub Support "
                    "for help, please include the request ID.",
                    403,
                ),
                {
                    "x-ratelimit-limit": "5000",
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(reset),
                    "x-ratelimit-used": "5000",
                },
            )
        if self._rate_limit == "secondary":
            return Answer(
                429,
                _error("You have exceeded a secondary rate limit. Please wait a few minutes.", 429),
                {"retry-after": str(self._reset_in)},
            )
        status, payload, extra = self._route(
            request.method, request.path, request.query, request.body
        )
        if request.method == "GET" and status == 200:
            extra = {**extra, "etag": etag_of(payload)}
            if not_modified(request, extra["etag"]):  # not counted against the limit
                return Answer(304, None, {**self._rate_headers(), "etag": extra["etag"]})
        self._remaining = max(self._remaining - 1, 0)
        return Answer(status, payload, {**self._rate_headers(), **extra})

    def server_headers(self) -> dict[str, str]:
        return {
            "date": email.utils.format_datetime(self.now, usegmt=True),
            "x-github-request-id": f"FAKE:{len(self.requests)}",
            "x-github-media-type": "github.v3; format=json",
        }

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if path == "/user" and method == "GET":
            if self.user_forbidden:
                return 403, _error("Resource not accessible by integration", 403), {}
            return 200, self._user(self.login), {"x-oauth-scopes": self.scopes}
        listing = re.match(
            r"^/repos/([^/]+)/([^/]+)/(issues|issues/comments|issues/(\d+)/events|pulls/(\d+))$",
            path,
        )
        if listing is not None and method == "GET":
            return self._listing(listing, path, query)
        found = re.match(r"^/repos/([^/]+)/([^/]+)(?:/issues/(\d+)(/comments)?)?$", path)
        if found is None:
            return 404, _error("Not Found", 404), {}
        repo = self.repos.get(f"{found.group(1)}/{found.group(2)}".lower())
        if repo is None:
            return 404, _error("Not Found", 404), {}
        if found.group(3) is None:
            if method != "GET":
                return 404, _error("Not Found", 404), {}
            return 200, self._repo_json(repo), {}
        if not repo.has_issues:
            return 410, _error("Issues are disabled for this repo", 410), {}
        issue = repo.issues.get(int(found.group(3)))
        if issue is None:
            return 404, _error("Not Found", 404), {}
        if found.group(4) is None:
            if method == "GET":
                return 200, self._issue_json(repo, issue), {}
            if method == "PATCH":
                return self._patch(repo, issue, body)
            return 404, _error("Not Found", 404), {}
        if method == "GET":
            return self._page(
                path, query, [self._comment_json(repo, issue, c) for c in issue.comments]
            )
        if method == "POST":
            text = body.get("body") if isinstance(body, dict) else None
            if not isinstance(text, str) or not text:
                return (
                    422,
                    _error(
                        'Invalid request.\n\nNo subschema in "anyOf" matched.',
                        422,
                        errors=[
                            {"resource": "IssueComment", "code": "missing_field", "field": "body"}
                        ],
                    ),
                    {},
                )
            stamp = self._timestamp()
            comment = FakeComment(self._next_id(), self.login, text, stamp, "MEMBER", stamp)
            issue.comments.append(comment)
            issue.updated_at = stamp
            return 201, self._comment_json(repo, issue, comment), {}
        return 404, _error("Not Found", 404), {}

    def _patch(
        self, repo: FakeRepo, issue: FakeIssue, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict):
            return 400, _error("Problems parsing JSON", 400), {}
        state = body.get("state", issue.state)
        reason = body.get("state_reason")
        if state not in ("open", "closed"):
            return (
                422,
                _error(
                    "Validation Failed",
                    422,
                    errors=[{"resource": "Issue", "code": "invalid", "field": "state"}],
                ),
                {},
            )
        if reason not in (None, "completed", "not_planned", "reopened", "duplicate"):
            return (
                422,
                _error(
                    "Validation Failed",
                    422,
                    errors=[{"resource": "Issue", "code": "invalid", "field": "state_reason"}],
                ),
                {},
            )
        if state != issue.state:
            self._event(issue, "closed" if state == "closed" else "reopened", self.login)
        issue.state = state
        if state == "closed":
            issue.state_reason = reason or "completed"
        else:
            issue.state_reason = "reopened" if reason in (None, "reopened") else reason
        return 200, self._issue_json(repo, issue), {}

    def _listing(
        self, found: re.Match[str], path: str, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        """The repository-wide lists, an issue's events and a pull request."""
        repo = self.repos.get(f"{found.group(1)}/{found.group(2)}".lower())
        if repo is None:
            return 404, _error("Not Found", 404), {}
        if not repo.has_issues:
            return 410, _error("Issues are disabled for this repo", 410), {}
        what, events_of, pull_of = found.group(3), found.group(4), found.group(5)
        if pull_of is not None:
            pull = repo.issues.get(int(pull_of))
            if pull is None or not pull.pull_request:
                return 404, _error("Not Found", 404), {}
            return 200, self._pull_json(repo, pull), {}
        if events_of is not None:
            issue = repo.issues.get(int(events_of))
            if issue is None:
                return 404, _error("Not Found", 404), {}
            return self._page(path, query, [self._event_json(repo, e) for e in issue.events])
        since = query.get("since")
        if what == "issues":
            wanted = query.get("state", "open")
            issues = [
                i
                for i in repo.issues.values()
                if wanted in ("all", i.state) and (since is None or i.updated_at >= since)
            ]
            field_name = "created_at" if query.get("sort") == "created" else "updated_at"
            issues.sort(key=lambda i: (getattr(i, field_name), i.number))
            if query.get("direction", "desc") == "desc":
                issues.reverse()
            return self._page(path, query, [self._issue_json(repo, i) for i in issues])
        pairs = [
            (issue, c)
            for issue in repo.issues.values()
            for c in issue.comments
            if since is None or c.updated_at >= since
        ]
        field_name = "updated_at" if query.get("sort") == "updated" else "created_at"
        pairs.sort(key=lambda pair: (getattr(pair[1], field_name), pair[1].id))
        if query.get("direction", "asc") == "desc":
            pairs.reverse()
        return self._page(path, query, [self._comment_json(repo, i, c) for i, c in pairs])

    def _page(
        self, path: str, query: dict[str, str], items: list[Any]
    ) -> tuple[int, Any, dict[str, str]]:
        """One page of `items` (`per_page`, `page`) with GitHub's `Link` header."""
        per_page = min(max(int(query.get("per_page", "30") or 30), 1), self.max_per_page)
        page = max(int(query.get("page", "1") or 1), 1)
        shown = items[(page - 1) * per_page : page * per_page]
        last = max((len(items) + per_page - 1) // per_page, 1)
        links = []
        kept = {k: v for k, v in query.items() if k not in ("per_page", "page")}

        def link(number: int, rel: str) -> str:
            encoded = urlencode({**kept, "per_page": per_page, "page": number})
            url = f"{self.base_url}{path}?{encoded}"
            return f'<{url}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        extra = {"link": ", ".join(links)} if links else {}
        return 200, shown, extra

    # -- shapes --

    def _user(self, login: str) -> dict[str, Any]:
        return {
            "login": login,
            "id": 1000 + sum(map(ord, login)),
            "node_id": "MDQ6VXNlcjE=",
            "type": "User",
            "site_admin": False,
            "html_url": f"https://github.com/{login}",
        }

    def _repo_json(self, repo: FakeRepo) -> dict[str, Any]:
        return {
            "id": 1296269,
            "name": repo.name,
            "full_name": f"{repo.owner}/{repo.name}",
            "owner": self._user(repo.owner),
            "private": repo.private,
            "has_issues": repo.has_issues,
            "html_url": f"https://github.com/{repo.owner}/{repo.name}",
            "default_branch": "main",
        }

    def _issue_json(self, repo: FakeRepo, issue: FakeIssue) -> dict[str, Any]:
        api = f"{self.base_url}/repos/{repo.owner}/{repo.name}"
        web = f"https://github.com/{repo.owner}/{repo.name}"
        kind = "pull" if issue.pull_request else "issues"
        data: dict[str, Any] = {
            "id": 1_000 + issue.number,
            "node_id": "I_kwDOfake",
            "url": f"{api}/issues/{issue.number}",
            "repository_url": api,
            "comments_url": f"{api}/issues/{issue.number}/comments",
            "html_url": f"{web}/{kind}/{issue.number}",
            "number": issue.number,
            "state": issue.state,
            "state_reason": issue.state_reason,
            "title": issue.title,
            "body": issue.body,
            "user": self._user(issue.author),
            "labels": [
                {"id": index + 1, "name": name, "color": "ededed", "default": False}
                for index, name in enumerate(issue.labels)
            ],
            "assignee": self._user(issue.assignee) if issue.assignee else None,
            "assignees": [self._user(issue.assignee)] if issue.assignee else [],
            "locked": False,
            "comments": len(issue.comments),
            "created_at": issue.created_at,
            "updated_at": issue.updated_at,
            "closed_at": "2024-03-02T08:00:00Z" if issue.state == "closed" else None,
            "author_association": "OWNER",
        }
        if issue.pull_request:
            data["pull_request"] = {
                "url": f"{api}/pulls/{issue.number}",
                "html_url": f"{web}/pull/{issue.number}",
                "diff_url": f"{web}/pull/{issue.number}.diff",
                "patch_url": f"{web}/pull/{issue.number}.patch",
                "merged_at": None,
            }
        return data

    def _comment_json(
        self, repo: FakeRepo, issue: FakeIssue, comment: FakeComment
    ) -> dict[str, Any]:
        api = f"{self.base_url}/repos/{repo.owner}/{repo.name}"
        kind = "pull" if issue.pull_request else "issues"
        return {
            "id": comment.id,
            "node_id": "IC_kwDOfake",
            "url": f"{api}/issues/comments/{comment.id}",
            "html_url": f"https://github.com/{repo.owner}/{repo.name}/{kind}/"
            f"{issue.number}#issuecomment-{comment.id}",
            "issue_url": f"{api}/issues/{issue.number}",
            "body": comment.body,
            "user": self._user(comment.author),
            "created_at": comment.created_at,
            "updated_at": comment.updated_at or comment.created_at,
            "author_association": comment.association,
        }

    def _event_json(self, repo: FakeRepo, event: FakeEvent) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": event.id,
            "node_id": "LE_kwDOfake",
            "url": f"{self.base_url}/repos/{repo.owner}/{repo.name}/issues/events/{event.id}",
            "actor": self._user(event.actor),
            "event": event.event,
            "commit_id": None,
            "commit_url": None,
            "created_at": event.created_at,
            "performed_via_github_app": None,
        }
        if event.label is not None:
            data["label"] = {"name": event.label, "color": "ededed"}
        if event.assignee is not None:
            data["assignee"] = self._user(event.assignee)
            data["assigner"] = self._user(event.actor)
        if event.event == "closed":
            data["state_reason"] = "completed"
        return data

    def _pull_json(self, repo: FakeRepo, pull: FakeIssue) -> dict[str, Any]:
        full = f"{repo.owner}/{repo.name}"

        def ref(branch: str, of: str) -> dict[str, Any]:
            owner, name = of.split("/")
            return {
                "label": f"{owner}:{branch}",
                "ref": branch,
                "sha": "0" * 40,
                "user": self._user(owner),
                "repo": {"name": name, "full_name": of, "owner": self._user(owner)},
            }

        return {
            "url": f"{self.base_url}/repos/{full}/pulls/{pull.number}",
            "id": 2_000 + pull.number,
            "number": pull.number,
            "state": pull.state,
            "title": pull.title,
            "body": pull.body,
            "user": self._user(pull.author),
            "html_url": f"https://github.com/{full}/pull/{pull.number}",
            "head": ref(pull.head_branch, pull.head_repo or full),
            "base": ref(pull.base_branch, full),
            "merged": False,
            "created_at": pull.created_at,
            "updated_at": pull.updated_at,
        }


def _error(
    message: str, status: int, *, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"message": message, "documentation_url": DOCS, "status": str(status)}
    if errors is not None:
        payload["errors"] = errors
    return payload
