"""A loopback fake of the GitHub REST API (v3) for the `github` SCM plugin.

A real HTTP/1.1 server on 127.0.0.1 (hand-written on asyncio streams, listening as soon
as `async with FakeGitHub()` returns) holding repositories, pull requests, reviews,
issue comments and review comments in memory. Tests act on it as people would —
`fake.approve(...)`, `fake.comment(...)`, `fake.merge(...)` — and read back every
request it received (`fake.requests`, each with method, path, query, headers, body
and the status it was answered with):

    async with FakeGitHub(token="ghp_…", page_size=2) as fake:
        fake.add_repo("acme/svc", collaborators=["alice"])
        ...  # point the plugin at fake.base_url
        fake.approve("acme/svc", 1, "alice")

What it speaks, as GitHub does: the JSON shapes of pulls, reviews and comments;
`per_page`/`page` pagination with a `Link` header (`page_size` caps the page size, so
small lists already span several pages); a weak `ETag` computed from each GET body and
`304 Not Modified` on a matching `If-None-Match` (not counted against the rate limit);
`X-RateLimit-*` headers on every authenticated answer, 403 (or 429) with
`X-RateLimit-Remaining: 0` once the budget is spent (`fake.rate_remaining = 0`), and a
secondary limit with `Retry-After` (`fake.secondary_retry_after = 30`); 401 for a
missing or wrong token; 404 for unknown repositories, pulls and routes; 422
`Validation Failed` for a duplicate pull request, an unknown base branch, reviewers who
are not collaborators; 405/409 from the merge endpoint; one-shot scripted answers
(`fake.respond_once`) and injected 5xx (`fake.fail_next`).

With `git_root=<dir>` it also serves real git repositories over smart HTTP at
`<root>/<owner>/<name>.git` (`tests/fakes/git_http.py`, `fake.git`): `add_repo(...,
files={...})` creates a bare repository with those files on each branch; git must
authenticate with HTTP Basic, any username and the token as password (as GitHub takes
`x-access-token:<token>`). Then opening a pull request needs its head branch pushed and
ahead of the base (422 otherwise), the pull's `head.sha` is the branch's real tip, and a
merge (`fake.merge` or the API) really updates the base branch: a merge commit for
`merge`, one new commit for `squash` and `rebase`, 405 if it does not merge cleanly.

The HTTP part is `ForgeServer` of `tests/fakes/http_server.py`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.fakes.git_http import GitHttp, MergeConflict, MergeImpossible
from tests.fakes.http_server import (
    Answer,
    Clock,
    ForgeServer,
    RecordedRequest,
    etag_of,
    not_modified,
)

__all__ = ["Answer", "FakeGitHub", "GhComment", "GhPull", "GhRepo", "GhReview"]

# --- the GitHub model -------------------------------------------------------------------


@dataclass
class GhReview:
    id: int
    user: str
    state: str  # APPROVED | CHANGES_REQUESTED | COMMENTED | DISMISSED | PENDING
    body: str
    submitted_at: str
    commit_id: str


@dataclass
class GhComment:
    """An issue comment (`path` None) or a review comment."""

    id: int
    user: str
    body: str
    created_at: str
    path: str | None = None
    line: int | None = None
    in_reply_to_id: int | None = None
    review_id: int | None = None


@dataclass
class GhPull:
    number: int
    title: str
    body: str
    head: str
    base: str
    author: str
    created_at: str
    updated_at: str
    head_sha: str
    state: str = "open"  # open | closed
    merged: bool = False
    merged_at: str | None = None
    closed_at: str | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None
    merge_method: str | None = None
    merge_title: str | None = None
    merge_message: str | None = None
    mergeable: bool | None = True
    requested_reviewers: list[str] = field(default_factory=list)
    requested_teams: list[str] = field(default_factory=list)
    reviews: list[GhReview] = field(default_factory=list)
    issue_comments: list[GhComment] = field(default_factory=list)
    review_comments: list[GhComment] = field(default_factory=list)


@dataclass
class GhRepo:
    owner: str
    name: str
    id: int
    default_branch: str = "main"
    branches: set[str] = field(default_factory=lambda: {"main"})
    collaborators: set[str] = field(default_factory=set)
    merge_methods: set[str] = field(default_factory=lambda: {"merge", "squash", "rebase"})
    pulls: dict[int, GhPull] = field(default_factory=dict)
    next_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


def _association(repo: GhRepo, login: str) -> str:
    """What GitHub says of a user's relation to the repository (`author_association`)."""
    if login.lower() == repo.owner.lower():
        return "OWNER"
    return "COLLABORATOR" if login in repo.collaborators else "NONE"


# --- the server -------------------------------------------------------------------------


class FakeGitHub(ForgeServer):
    def __init__(
        self,
        *,
        token: str = "ghp_fakeTOKEN0123456789abcdefABCDEF0123",
        login: str = "coro-bot",
        scopes: str | None = "repo, read:org",
        page_size: int = 100,
        prefix: str = "",
        rate_limit: int = 5000,
        git_root: Path | None = None,
    ) -> None:
        super().__init__()
        self.token = token
        self.git = (
            GitHttp(git_root, realm="GitHub", authorize=self._git_authorized)
            if git_root is not None
            else None
        )
        self.login = login
        self.scopes = scopes  # None: no X-OAuth-Scopes header (fine-grained tokens)
        self.page_size = page_size
        self.prefix = prefix.rstrip("/")
        self.repos: dict[str, GhRepo] = {}
        self.clock = Clock()
        # Rate limiting: every authenticated answer but a 304 spends one request.
        self.rate_limit = rate_limit
        self.rate_remaining = rate_limit
        self.rate_reset = int(time.time()) + 3600
        self.rate_limit_status = 403  # GitHub answers 403 (sometimes 429) when spent
        self.secondary_retry_after: int | None = None  # a secondary limit while set
        self.secondary_status = 403
        self.echo_token = False  # 401 messages quote the presented token (a bad proxy)
        self._ids = {"review": 80_000, "issue_comment": 1_000, "review_comment": 5_000}
        self._shas = 0

    @property
    def base_url(self) -> str:
        return f"{self.root}{self.prefix}"

    @property
    def rate_used(self) -> int:
        return self.rate_limit - self.rate_remaining

    # -- acting as people do --

    def add_repo(
        self,
        full_name: str,
        *,
        branches: tuple[str, ...] = ("main",),
        collaborators: tuple[str, ...] | list[str] = (),
        merge_methods: tuple[str, ...] = ("merge", "squash", "rebase"),
        files: Mapping[str, str | bytes] | None = None,
    ) -> GhRepo:
        """A repository; with `git_root`, also a served git repository holding `files`
        (default: a README) on every branch."""
        owner, name = full_name.split("/")
        repo = GhRepo(
            owner,
            name,
            id=100 + len(self.repos),
            default_branch=branches[0],
            branches=set(branches),
            collaborators={*collaborators, self.login},
            merge_methods=set(merge_methods),
        )
        self.repos[full_name.lower()] = repo
        if self.git is not None:
            self.git.create(full_name, files or {"README.md": f"# {name}\n"}, branches=branches)
        return repo

    def repo(self, full_name: str) -> GhRepo:
        return self.repos[full_name.lower()]

    def pull(self, full_name: str, number: int) -> GhPull:
        return self.repo(full_name).pulls[number]

    def open_pr(
        self,
        full_name: str,
        head: str,
        base: str = "main",
        *,
        title: str = "A change",
        body: str = "",
        author: str | None = None,
    ) -> int:
        return self._open(self.repo(full_name), head, base, title, body, author or self.login)

    def review(self, full_name: str, number: int, user: str, state: str, body: str = "") -> int:
        pull = self.pull(full_name, number)
        review = GhReview(self._next("review"), user, state, body, self._stamp(), pull.head_sha)
        pull.reviews.append(review)
        if user in pull.requested_reviewers:
            pull.requested_reviewers.remove(user)
        self._touch(pull)
        return review.id

    def approve(self, full_name: str, number: int, user: str, body: str = "") -> int:
        return self.review(full_name, number, user, "APPROVED", body)

    def request_changes(self, full_name: str, number: int, user: str, body: str) -> int:
        return self.review(full_name, number, user, "CHANGES_REQUESTED", body)

    def dismiss(self, full_name: str, number: int, review_id: int) -> None:
        pull = self.pull(full_name, number)
        for review in pull.reviews:
            if review.id == review_id:
                review.state = "DISMISSED"
        self._touch(pull)

    def comment(self, full_name: str, number: int, user: str, body: str) -> int:
        """An issue comment (the conversation tab)."""
        pull = self.pull(full_name, number)
        comment = GhComment(self._next("issue_comment"), user, body, self._stamp())
        pull.issue_comments.append(comment)
        self._touch(pull)
        return comment.id

    def review_comment(
        self,
        full_name: str,
        number: int,
        user: str,
        body: str,
        *,
        path: str = "README.md",
        line: int = 1,
        in_reply_to: int | None = None,
    ) -> int:
        """An inline comment on the diff (or a reply in its thread)."""
        pull = self.pull(full_name, number)
        root = None
        if in_reply_to is not None:
            parent = next(c for c in pull.review_comments if c.id == in_reply_to)
            root = parent.in_reply_to_id or parent.id
            path, line = parent.path or path, parent.line or line
        comment = GhComment(
            self._next("review_comment"),
            user,
            body,
            self._stamp(),
            path=path,
            line=line,
            in_reply_to_id=root,
        )
        pull.review_comments.append(comment)
        self._touch(pull)
        return comment.id

    def merge(
        self, full_name: str, number: int, *, by: str = "maintainer", method: str = "merge"
    ) -> str:
        return self._merge(
            self.repo(full_name), self.pull(full_name, number), by, method, None, None
        )

    def close(self, full_name: str, number: int) -> None:
        pull = self.pull(full_name, number)
        pull.state = "closed"
        pull.closed_at = self._stamp()
        self._touch(pull)

    def push(self, full_name: str, number: int) -> str:
        """A new commit on the head branch (moves head.sha)."""
        pull = self.pull(full_name, number)
        pull.head_sha = self._sha()
        self._touch(pull)
        return pull.head_sha

    # -- the API --

    async def handle(self, request: RecordedRequest) -> Answer:
        if self.git is not None and self.git.handles(request.path):
            return await self.git.serve(request)
        path = request.path
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return self._not_found()
            path = path[len(self.prefix) :]
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        limited = self._rate_limited()
        if limited is not None:
            return self._with_rate(limited)
        answer = self._route(request, path.rstrip("/") or "/")
        if request.method == "GET" and answer.status == 200:
            etag = etag_of(answer.body)
            answer.headers["ETag"] = etag
            answer.headers.setdefault("Cache-Control", "private, max-age=60, s-maxage=60")
            answer.headers["Vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
            if not_modified(request, etag):
                return self._with_rate(Answer(304, headers={"ETag": etag}))
        if self.rate_remaining > 0:
            self.rate_remaining -= 1
        return self._with_rate(answer)

    def _authenticate(self, request: RecordedRequest) -> Answer | None:
        header = request.headers.get("authorization", "")
        if not header:
            return Answer(401, _error("Requires authentication", "authentication"))
        scheme, _, presented = header.partition(" ")
        if scheme.lower() in ("bearer", "token") and presented.strip() == self.token:
            return None
        message = "Bad credentials"
        if self.echo_token:
            message = f"Bad credentials: {presented.strip()} is not a valid token"
        return Answer(401, _error(message, "authentication"))

    def _git_authorized(self, username: str, password: str) -> bool:
        return bool(username) and password == self.token

    def _rate_limited(self) -> Answer | None:
        if self.secondary_retry_after is not None:
            return Answer(
                self.secondary_status,
                _error(
                    "You have exceeded a secondary rate limit. Please wait a few minutes "
                    "before you try again.",
                    "rate-limits-for-the-rest-api",
                ),
                headers={"Retry-After": str(self.secondary_retry_after)},
            )
        if self.rate_remaining <= 0:
            return Answer(
                self.rate_limit_status,
                _error(
                    f"API rate limit exceeded for user ID 1 ({self.login}).",
                    "rate-limits-for-the-rest-api",
                ),
            )
        return None

    def _with_rate(self, answer: Answer) -> Answer:
        answer.headers.update(
            {
                "X-RateLimit-Limit": str(self.rate_limit),
                "X-RateLimit-Remaining": str(max(self.rate_remaining, 0)),
                "X-RateLimit-Used": str(self.rate_used),
                "X-RateLimit-Reset": str(self.rate_reset),
                "X-RateLimit-Resource": "core",
                "X-GitHub-Media-Type": "github.v3; format=json",
            }
        )
        return answer

    def _route(self, request: RecordedRequest, path: str) -> Answer:
        method = request.method
        parts = path.strip("/").split("/")
        if path == "/user" and method == "GET":
            headers = {} if self.scopes is None else {"X-OAuth-Scopes": self.scopes}
            return Answer(200, self._user(self.login), headers)
        if len(parts) < 3 or parts[0] != "repos":
            return self._not_found()
        repo = self.repos.get(f"{parts[1]}/{parts[2]}".lower())
        if repo is None:
            return self._not_found()
        rest = parts[3:]
        if not rest and method == "GET":
            return Answer(200, self._repo_json(repo))
        if rest == ["pulls"]:
            if method == "POST":
                return self._create_pull(repo, request.body)
            if method == "GET":
                state = request.query.get("state", "open")
                pulls = [
                    self._pull_json(repo, p)
                    for p in repo.pulls.values()
                    if state == "all" or p.state == state
                ]
                return self._page(request, pulls)
        if len(rest) < 2 or rest[0] not in ("pulls", "issues") or not rest[1].isdigit():
            return self._not_found()
        pull = repo.pulls.get(int(rest[1]))
        if pull is None:
            return self._not_found()
        tail = rest[2:]
        if rest[0] == "issues":
            if tail == ["comments"] and method == "GET":
                return self._page(
                    request, [self._comment_json(repo, pull, c) for c in pull.issue_comments]
                )
            if tail == ["comments"] and method == "POST":
                text = _text(request.body, "body")
                if text is None:
                    return _invalid("IssueComment", "body", "missing_field")
                comment = GhComment(self._next("issue_comment"), self.login, text, self._stamp())
                pull.issue_comments.append(comment)
                self._touch(pull)
                return Answer(201, self._comment_json(repo, pull, comment))
            return self._not_found()
        if not tail and method == "GET":
            return Answer(200, self._pull_json(repo, pull))
        if tail == ["reviews"] and method == "GET":
            reviews = [r for r in pull.reviews if r.state != "PENDING" or r.user == self.login]
            return self._page(request, [self._review_json(repo, pull, r) for r in reviews])
        if tail == ["comments"] and method == "GET":
            return self._page(
                request, [self._comment_json(repo, pull, c) for c in pull.review_comments]
            )
        if len(tail) == 3 and tail[0] == "comments" and tail[2] == "replies" and method == "POST":
            return self._reply(repo, pull, tail[1], request.body)
        if tail == ["requested_reviewers"] and method == "POST":
            return self._request_reviewers(repo, pull, request.body)
        if tail == ["merge"] and method == "PUT":
            return self._merge_endpoint(repo, pull, request.body)
        if tail == ["merge"] and method == "GET":
            return Answer(204) if pull.merged else self._not_found()
        return self._not_found()

    def _create_pull(self, repo: GhRepo, body: Any) -> Answer:
        if not isinstance(body, dict):
            return Answer(400, _error("Problems parsing JSON", "pulls#create-a-pull-request"))
        for name in ("title", "head", "base"):
            if _text(body, name) is None:
                return _invalid("PullRequest", name, "missing_field")
        head, base = str(body["head"]), str(body["base"])
        branch = head.split(":", 1)[-1]
        git = self.git if self.git is not None and self.git.has(repo.full_name) else None
        if base not in repo.branches and (
            git is None or git.branch_sha(repo.full_name, base) is None
        ):
            return _invalid("PullRequest", "base", "invalid")
        if branch == base:
            return _no_commits(base, branch)
        head_sha: str | None = None
        if git is not None:
            head_sha = git.branch_sha(repo.full_name, branch)
            if head_sha is None:  # the branch was never pushed
                return _invalid("PullRequest", "head", "invalid")
            if git.is_ancestor(repo.full_name, head_sha, f"refs/heads/{base}"):
                return _no_commits(base, branch)
        for other in repo.pulls.values():
            if other.state == "open" and other.head == branch and other.base == base:
                return Answer(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [
                            {
                                "resource": "PullRequest",
                                "code": "custom",
                                "message": (
                                    f"A pull request already exists for {repo.owner}:{branch}."
                                ),
                            }
                        ],
                        "documentation_url": _DOCS + "pulls/pulls#create-a-pull-request",
                        "status": "422",
                    },
                )
        number = self._open(
            repo, branch, base, str(body["title"]), str(body.get("body") or ""), self.login
        )
        pull = repo.pulls[number]
        if head_sha is not None:
            pull.head_sha = head_sha
        return Answer(
            201,
            self._pull_json(repo, pull),
            {"Location": f"{self.base_url}/repos/{repo.full_name}/pulls/{number}"},
        )

    def _reply(self, repo: GhRepo, pull: GhPull, parent_id: str, body: Any) -> Answer:
        parent = next((c for c in pull.review_comments if str(c.id) == parent_id), None)
        if parent is None:
            return self._not_found()
        text = _text(body, "body")
        if text is None:
            return _invalid("PullRequestReviewComment", "body", "missing_field")
        comment = GhComment(
            self._next("review_comment"),
            self.login,
            text,
            self._stamp(),
            path=parent.path,
            line=parent.line,
            in_reply_to_id=parent.in_reply_to_id or parent.id,
        )
        pull.review_comments.append(comment)
        self._touch(pull)
        return Answer(201, self._comment_json(repo, pull, comment))

    def _request_reviewers(self, repo: GhRepo, pull: GhPull, body: Any) -> Answer:
        body = body if isinstance(body, dict) else {}
        users = [str(u) for u in body.get("reviewers") or []]
        teams = [str(t) for t in body.get("team_reviewers") or []]
        if pull.author in users:
            return Answer(
                422,
                {
                    "message": "Review cannot be requested from pull request author.",
                    "documentation_url": _DOCS + "pulls/review-requests",
                    "status": "422",
                },
            )
        if any(user not in repo.collaborators for user in users):
            return Answer(
                422,
                {
                    "message": (
                        "Reviews may only be requested from collaborators. One or more of the "
                        "users or teams you specified is not a collaborator of the "
                        f"{repo.full_name} repository."
                    ),
                    "documentation_url": _DOCS + "pulls/review-requests",
                    "status": "422",
                },
            )
        for user in users:
            if user not in pull.requested_reviewers:
                pull.requested_reviewers.append(user)
        for team in teams:
            if team not in pull.requested_teams:
                pull.requested_teams.append(team)
        self._touch(pull)
        return Answer(201, self._pull_json(repo, pull))

    def _merge_endpoint(self, repo: GhRepo, pull: GhPull, body: Any) -> Answer:
        body = body if isinstance(body, dict) else {}
        method = str(body.get("merge_method") or "merge")
        if method not in ("merge", "squash", "rebase"):
            return _invalid("PullRequest", "merge_method", "invalid")
        if pull.state != "open" or not pull.mergeable:
            return Answer(405, _error("Pull Request is not mergeable", "pulls/pulls#merge"))
        if method not in repo.merge_methods:
            label = {"merge": "Merge commits", "squash": "Squash merges", "rebase": "Rebase"}
            return Answer(
                405,
                _error(f"{label[method]} are not allowed on this repository.", "pulls/pulls"),
            )
        self._refresh_head(repo, pull)
        if body.get("sha") and body["sha"] != pull.head_sha:
            return Answer(
                409,
                _error("Head branch was modified. Review and try the merge again.", "pulls"),
            )
        title = body.get("commit_title")
        message = body.get("commit_message")
        try:
            sha = self._merge(
                repo,
                pull,
                self.login,
                method,
                title if isinstance(title, str) else None,
                message if isinstance(message, str) else None,
            )
        except (MergeConflict, MergeImpossible):
            return Answer(405, _error("Pull Request is not mergeable", "pulls/pulls#merge"))
        return Answer(
            200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}
        )

    # -- helpers --

    def _open(self, repo: GhRepo, head: str, base: str, title: str, body: str, author: str) -> int:
        number = repo.next_number
        repo.next_number += 1
        stamp = self._stamp()
        repo.pulls[number] = GhPull(
            number=number,
            title=title,
            body=body,
            head=head,
            base=base,
            author=author,
            created_at=stamp,
            updated_at=stamp,
            head_sha=self._sha(),
        )
        return number

    def _merge(
        self,
        repo: GhRepo,
        pull: GhPull,
        by: str,
        method: str,
        title: str | None,
        message: str | None,
    ) -> str:
        """Mark `pull` merged; in a served repository, merge its head into its base first
        (`MergeConflict` / `MergeImpossible` if that cannot be done: nothing changes)."""
        if self.git is not None and self.git.has(repo.full_name):
            self._refresh_head(repo, pull)
            subject = title or f"Merge pull request #{pull.number} from {repo.owner}/{pull.head}"
            text = message if message is not None else (pull.title if title is None else "")
            sha = self.git.merge(
                repo.full_name,
                pull.head,
                pull.base,
                message=f"{subject}\n\n{text}".strip() + "\n",
                method="merge" if method == "merge" else "squash",  # rebase: one new commit
            )
        else:
            sha = self._sha()
        stamp = self._stamp()
        pull.state = "closed"
        pull.merged = True
        pull.mergeable = None
        pull.merged_at = pull.closed_at = pull.updated_at = stamp
        pull.merged_by = by
        pull.merge_commit_sha = sha
        pull.merge_method = method
        pull.merge_title = title
        pull.merge_message = message
        return sha

    def _refresh_head(self, repo: GhRepo, pull: GhPull) -> None:
        """An open pull request's head is its branch's tip in the served repository."""
        if pull.state == "open" and self.git is not None and self.git.has(repo.full_name):
            sha = self.git.branch_sha(repo.full_name, pull.head)
            if sha is not None:
                pull.head_sha = sha

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def _sha(self) -> str:
        self._shas += 1
        return hashlib.sha1(f"commit-{self._shas}".encode()).hexdigest()

    def _stamp(self) -> str:
        return self.clock.tick().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _touch(self, pull: GhPull) -> None:
        pull.updated_at = self._stamp()

    def _page(self, request: RecordedRequest, items: list[Any]) -> Answer:
        try:
            per_page = int(request.query.get("per_page", "30"))
        except ValueError:
            per_page = 30
        try:
            page = max(int(request.query.get("page", "1")), 1)
        except ValueError:
            page = 1
        per_page = max(1, min(per_page, 100, self.page_size))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def url(number: int) -> str:
            query = {**request.query, "per_page": str(per_page), "page": str(number)}
            return f"{self.root}{request.path}?{urlencode(query)}"

        if page > 1:
            links += [f'<{url(page - 1)}>; rel="prev"', f'<{url(1)}>; rel="first"']
        if page < last:
            links += [f'<{url(page + 1)}>; rel="next"', f'<{url(last)}>; rel="last"']
        headers = {"Link": ", ".join(links)} if links else {}
        return Answer(200, chunk, headers)

    def _not_found(self) -> Answer:
        return Answer(404, _error("Not Found", ""))

    def _user(self, login: str) -> dict[str, Any]:
        number = int(hashlib.sha1(login.encode()).hexdigest()[:6], 16)
        return {
            "login": login,
            "id": number,
            "node_id": f"U_{number}",
            "type": "Bot" if login.endswith("[bot]") else "User",
            "site_admin": False,
            "html_url": f"{self.root}/{login}",
            "url": f"{self.base_url}/users/{login}",
        }

    def _repo_json(self, repo: GhRepo) -> dict[str, Any]:
        return {
            "id": repo.id,
            "name": repo.name,
            "full_name": repo.full_name,
            "private": True,
            "owner": self._user(repo.owner),
            "html_url": f"{self.root}/{repo.full_name}",
            "clone_url": f"{self.root}/{repo.full_name}.git",
            "default_branch": repo.default_branch,
            "allow_merge_commit": "merge" in repo.merge_methods,
            "allow_squash_merge": "squash" in repo.merge_methods,
            "allow_rebase_merge": "rebase" in repo.merge_methods,
        }

    def _pull_json(self, repo: GhRepo, pull: GhPull) -> dict[str, Any]:
        self._refresh_head(repo, pull)
        api = f"{self.base_url}/repos/{repo.full_name}"

        def ref(branch: str, sha: str) -> dict[str, Any]:
            return {
                "label": f"{repo.owner}:{branch}",
                "ref": branch,
                "sha": sha,
                "user": self._user(repo.owner),
                "repo": self._repo_json(repo),
            }

        return {
            "url": f"{api}/pulls/{pull.number}",
            "id": repo.id * 100_000 + pull.number,
            "node_id": f"PR_{repo.id}_{pull.number}",
            "html_url": f"{self.root}/{repo.full_name}/pull/{pull.number}",
            "number": pull.number,
            "state": pull.state,
            "locked": False,
            "title": pull.title,
            "body": pull.body or None,
            "user": self._user(pull.author),
            "created_at": pull.created_at,
            "updated_at": pull.updated_at,
            "closed_at": pull.closed_at,
            "merged_at": pull.merged_at,
            "merge_commit_sha": pull.merge_commit_sha,
            "draft": False,
            "head": ref(pull.head, pull.head_sha),
            "base": ref(pull.base, "0" * 40),
            "requested_reviewers": [self._user(u) for u in pull.requested_reviewers],
            "requested_teams": [{"slug": t, "name": t} for t in pull.requested_teams],
            "merged": pull.merged,
            "mergeable": pull.mergeable if pull.state == "open" else None,
            "mergeable_state": "clean" if pull.mergeable else "dirty",
            "merged_by": self._user(pull.merged_by) if pull.merged_by else None,
            "comments": len(pull.issue_comments),
            "review_comments": len(pull.review_comments),
            "commits": 1,
        }

    def _review_json(self, repo: GhRepo, pull: GhPull, review: GhReview) -> dict[str, Any]:
        return {
            "id": review.id,
            "node_id": f"PRR_{review.id}",
            "user": self._user(review.user),
            "body": review.body,
            "state": review.state,
            "html_url": (
                f"{self.root}/{repo.full_name}/pull/{pull.number}#pullrequestreview-{review.id}"
            ),
            "pull_request_url": f"{self.base_url}/repos/{repo.full_name}/pulls/{pull.number}",
            "submitted_at": review.submitted_at,
            "commit_id": review.commit_id,
            "author_association": _association(repo, review.user),
        }

    def _comment_json(self, repo: GhRepo, pull: GhPull, comment: GhComment) -> dict[str, Any]:
        html = f"{self.root}/{repo.full_name}/pull/{pull.number}"
        data: dict[str, Any] = {
            "id": comment.id,
            "node_id": f"IC_{comment.id}",
            "user": self._user(comment.user),
            "body": comment.body,
            "created_at": comment.created_at,
            "updated_at": comment.created_at,
            "author_association": _association(repo, comment.user),
        }
        if comment.path is None:
            data["html_url"] = f"{html}#issuecomment-{comment.id}"
            data["issue_url"] = f"{self.base_url}/repos/{repo.full_name}/issues/{pull.number}"
            return data
        data.update(
            {
                "html_url": f"{html}#discussion_r{comment.id}",
                "pull_request_url": f"{self.base_url}/repos/{repo.full_name}/pulls/{pull.number}",
                "pull_request_review_id": comment.review_id,
                "diff_hunk": "@@ -1 +1 @@",
                "path": comment.path,
                "line": comment.line,
                "side": "RIGHT",
                "commit_id": pull.head_sha,
            }
        )
        if comment.in_reply_to_id is not None:
            data["in_reply_to_id"] = comment.in_reply_to_id
        return data


_DOCS = "https://docs.github.com/rest/"


def _error(message: str, doc: str) -> dict[str, Any]:
    return {"message": message, "documentation_url": _DOCS + doc}


def _no_commits(base: str, branch: str) -> Answer:
    return Answer(
        422,
        {
            "message": "Validation Failed",
            "errors": [
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": f"No commits between {base} and {branch}",
                }
            ],
            "documentation_url": _DOCS + "pulls/pulls#create-a-pull-request",
            "status": "422",
        },
    )


def _invalid(resource: str, field_name: str, code: str) -> Answer:
    return Answer(
        422,
        {
            "message": "Validation Failed",
            "errors": [{"resource": resource, "field": field_name, "code": code}],
            "documentation_url": _DOCS,
            "status": "422",
        },
    )


def _text(body: Any, name: str) -> str | None:
    if not isinstance(body, dict):
        return None
    value = body.get(name)
    return value if isinstance(value, str) and value.strip() else None
