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

Errors have GitHub's shape `{"message", "documentation_url", "status"}` (422 adds
`errors`). A wrong token gets 401 "Bad credentials"; `rate_limit("primary")` answers 403
with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`, `rate_limit("secondary")` 429
with `retry-after`; `respond_once` scripts a raw answer. Every request is recorded.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from tests.fakes.http_server import Answer, RecordedRequest, TrackerServer

DOCS = "https://docs.github.com/rest"


@dataclass
class FakeComment:
    id: int
    author: str
    body: str
    created_at: str
    association: str = "CONTRIBUTOR"  # GitHub's `author_association`


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
        comment = FakeComment(self._next_id(), author, body, self._timestamp(), association)
        self.repos[full_name.lower()].issues[number].comments.append(comment)
        return comment

    def rate_limit(
        self, kind: Literal["primary", "secondary"] | None, *, reset_in: int = 120
    ) -> None:
        self._rate_limit = kind
        self._reset_in = reset_in

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _timestamp(self) -> str:
        self._minutes += 1
        hours, minutes = divmod(self._minutes, 60)
        return f"2024-03-01T{9 + hours:02d}:{minutes:02d}:00Z"

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
        self._remaining = max(self._remaining - 1, 0)
        status, payload, extra = self._route(
            request.method, request.path, request.query, request.body
        )
        return Answer(status, payload, {**self._rate_headers(), **extra})

    def server_headers(self) -> dict[str, str]:
        return {
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
            return self._comment_page(repo, issue, path, query)
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
            comment = FakeComment(self._next_id(), self.login, text, self._timestamp())
            issue.comments.append(comment)
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
        issue.state = state
        if state == "closed":
            issue.state_reason = reason or "completed"
        else:
            issue.state_reason = "reopened" if reason in (None, "reopened") else reason
        return 200, self._issue_json(repo, issue), {}

    def _comment_page(
        self, repo: FakeRepo, issue: FakeIssue, path: str, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        per_page = min(max(int(query.get("per_page", "30") or 30), 1), self.max_per_page)
        page = max(int(query.get("page", "1") or 1), 1)
        comments = issue.comments[(page - 1) * per_page : page * per_page]
        last = max((len(issue.comments) + per_page - 1) // per_page, 1)
        links = []

        def link(number: int, rel: str) -> str:
            url = f"{self.base_url}{path}?{urlencode({'per_page': per_page, 'page': number})}"
            return f'<{url}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        extra = {"link": ", ".join(links)} if links else {}
        return 200, [self._comment_json(repo, issue, c) for c in comments], extra

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
            "created_at": "2024-03-01T08:00:00Z",
            "updated_at": "2024-03-01T08:00:00Z",
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
        return {
            "id": comment.id,
            "node_id": "IC_kwDOfake",
            "url": f"{api}/issues/comments/{comment.id}",
            "html_url": f"https://github.com/{repo.owner}/{repo.name}/issues/"
            f"{issue.number}#issuecomment-{comment.id}",
            "issue_url": f"{api}/issues/{issue.number}",
            "body": comment.body,
            "user": self._user(comment.author),
            "created_at": comment.created_at,
            "updated_at": comment.created_at,
            "author_association": comment.association,
        }


def _error(
    message: str, status: int, *, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"message": message, "documentation_url": DOCS, "status": str(status)}
    if errors is not None:
        payload["errors"] = errors
    return payload
