"""A loopback fake of the Bitbucket Cloud REST API (2.0) for the `bitbucket` SCM plugin.

A real HTTP/1.1 server on 127.0.0.1 (`ForgeServer` of `tests/fakes/http_server.py`) holding
workspaces, members, repositories, pull requests, participants and comments in memory.
Tests act on it as reviewers would — `fake.approve(...)`, `fake.comment(...)`,
`fake.merge(...)` — and read back every request (`fake.requests`):

    async with FakeBitbucket(page_size=2) as fake:
        fake.add_user("alice", "Alice Liddell")
        fake.add_repo("acme/svc")
        ...  # point the plugin at fake.base_url (…/2.0)
        fake.approve("acme/svc", 1, "alice")

What it speaks, as Bitbucket does: the JSON shapes of pull requests (`participants[]`
with `approved`), comments (`content.raw`, `parent.id`, `inline.path`) and users; paged
lists `{pagelen, size, page, values, next, previous}` (`page_size` caps `pagelen`);
Basic auth (username + app password) and Bearer access tokens, 401 otherwise; an
`ETag` on GET answers with `304 Not Modified` on `If-None-Match` (switch off with
`etags=False` to exercise clients that must compare content); 429 while
`fake.rate_limited` is set (with `Retry-After` when `fake.retry_after` is); 404 with
Bitbucket's error shape for unknown workspaces, repositories and pull requests; 400 for
a second open pull request from the same branch, for unknown reviewers and for merges
of pull requests that are not open; 409 for a conflicted merge.

With `git_root=<dir>` it also serves real git repositories over smart HTTP at
`<root>/<workspace>/<slug>.git` (`tests/fakes/git_http.py`, `fake.git`): `add_repo(...,
files={...})` creates a bare repository with those files on each branch; git must
authenticate with HTTP Basic as `username` + `app_password`, or `x-token-auth` + `token`.
Then opening a pull request needs its source branch pushed (400 otherwise), and a merge
(`fake.merge` or the API) really updates the destination branch — a merge commit for
`merge_commit`, one new commit for `squash`, a fast-forward for `fast_forward` — and
deletes the source branch when `close_source_branch` is set; 409 if it cannot be done.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.fakes.git_http import GitHttp, MergeConflict, MergeImpossible, MergeMethod
from tests.fakes.http_server import (
    Answer,
    Clock,
    ForgeServer,
    RecordedRequest,
    etag_of,
    not_modified,
)

__all__ = ["Answer", "BbComment", "BbPull", "BbRepo", "BbUser", "FakeBitbucket"]

#: how each merge strategy changes a served repository
_GIT_METHODS: dict[str, MergeMethod] = {
    "merge_commit": "merge",
    "squash": "squash",
    "fast_forward": "fast_forward",
}


@dataclass
class BbUser:
    nickname: str
    display_name: str
    uuid: str
    account_id: str


@dataclass
class BbParticipant:
    user: str  # nickname
    role: str  # REVIEWER | PARTICIPANT
    approved: bool = False
    state: str | None = None  # approved | changes_requested | None
    participated_on: str | None = None


@dataclass
class BbComment:
    id: int
    user: str
    raw: str
    created_on: str
    parent: int | None = None
    path: str | None = None
    line: int | None = None
    deleted: bool = False
    pending: bool = False


@dataclass
class BbPull:
    id: int
    title: str
    description: str
    source: str
    destination: str
    author: str
    created_on: str
    updated_on: str
    source_hash: str
    state: str = "OPEN"  # OPEN | MERGED | DECLINED | SUPERSEDED
    close_source_branch: bool = False
    merge_hash: str | None = None
    merge_strategy: str | None = None
    merge_message: str | None = None
    closed_by: str | None = None
    conflicted: bool = False
    reviewers: list[str] = field(default_factory=list)
    participants: list[BbParticipant] = field(default_factory=list)
    comments: list[BbComment] = field(default_factory=list)


@dataclass
class BbRepo:
    workspace: str
    slug: str
    uuid: str
    branches: set[str] = field(default_factory=lambda: {"main"})
    merge_strategies: set[str] = field(
        default_factory=lambda: {"merge_commit", "squash", "fast_forward"}
    )
    pulls: dict[int, BbPull] = field(default_factory=dict)
    next_id: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.workspace}/{self.slug}"


class FakeBitbucket(ForgeServer):
    def __init__(
        self,
        *,
        username: str = "coro-bot",
        app_password: str | None = "ATBBfakeAPPpassword0123456789abcd",
        token: str | None = None,
        page_size: int = 50,
        etags: bool = True,
        git_root: Path | None = None,
    ) -> None:
        super().__init__()
        self.git = (
            GitHttp(git_root, realm="Bitbucket", authorize=self._git_authorized)
            if git_root is not None
            else None
        )
        self.username = username
        self.app_password = app_password
        self.token = token  # a repository/workspace access token (Bearer), if set
        self.page_size = page_size
        self.etags = etags
        self.users: dict[str, BbUser] = {}
        self.members: dict[str, list[str]] = {}  # workspace -> nicknames
        self.repos: dict[str, BbRepo] = {}
        self.clock = Clock()
        self.rate_limited = False
        self.retry_after: int | None = None
        self.echo_credentials = False  # 401 messages quote what was presented
        self.requests_served = 0  # answers other than 304 (what a rate limit would count)
        self._comment_ids = 700
        self._hashes = 0
        self.add_user(username, "Coro Bot")

    @property
    def base_url(self) -> str:
        return f"{self.root}/2.0"

    # -- acting as people do --

    def add_user(self, nickname: str, display_name: str | None = None) -> BbUser:
        digest = hashlib.sha1(nickname.encode()).hexdigest()
        user = BbUser(
            nickname,
            display_name or nickname.title(),
            "{" + str(uuid.UUID(digest[:32])) + "}",
            f"557058:{uuid.UUID(digest[8:40])}",
        )
        self.users[nickname] = user
        for members in self.members.values():
            if nickname not in members:
                members.append(nickname)
        return user

    def add_repo(
        self,
        full_name: str,
        *,
        branches: tuple[str, ...] = ("main",),
        merge_strategies: tuple[str, ...] = ("merge_commit", "squash", "fast_forward"),
        files: Mapping[str, str | bytes] | None = None,
    ) -> BbRepo:
        """A repository; with `git_root`, also a served git repository holding `files`
        (default: a README) on every branch."""
        workspace, slug = full_name.split("/")
        digest = hashlib.sha1(full_name.encode()).hexdigest()
        repo = BbRepo(
            workspace,
            slug,
            "{" + str(uuid.UUID(digest[:32])) + "}",
            branches=set(branches),
            merge_strategies=set(merge_strategies),
        )
        self.repos[full_name.lower()] = repo
        self.members.setdefault(workspace.lower(), list(self.users))
        if self.git is not None:
            self.git.create(full_name, files or {"README.md": f"# {slug}\n"}, branches=branches)
        return repo

    def repo(self, full_name: str) -> BbRepo:
        return self.repos[full_name.lower()]

    def pull(self, full_name: str, pr_id: int) -> BbPull:
        return self.repo(full_name).pulls[pr_id]

    def open_pr(
        self,
        full_name: str,
        source: str,
        destination: str = "main",
        *,
        title: str = "A change",
        description: str = "",
        author: str | None = None,
    ) -> int:
        return self._open(
            self.repo(full_name), source, destination, title, description, author or self.username
        )

    def approve(self, full_name: str, pr_id: int, user: str) -> None:
        pull = self.pull(full_name, pr_id)
        participant = self._participant(pull, user)
        participant.approved = True
        participant.state = "approved"
        participant.participated_on = self._stamp()
        self._touch(pull)

    def unapprove(self, full_name: str, pr_id: int, user: str) -> None:
        pull = self.pull(full_name, pr_id)
        participant = self._participant(pull, user)
        participant.approved = False
        participant.state = None
        self._touch(pull)

    def request_changes(self, full_name: str, pr_id: int, user: str) -> None:
        pull = self.pull(full_name, pr_id)
        participant = self._participant(pull, user)
        participant.approved = False
        participant.state = "changes_requested"
        participant.participated_on = self._stamp()
        self._touch(pull)

    def comment(
        self,
        full_name: str,
        pr_id: int,
        user: str,
        body: str,
        *,
        parent: int | None = None,
        path: str | None = None,
        line: int | None = None,
    ) -> int:
        pull = self.pull(full_name, pr_id)
        comment = BbComment(
            self._next_comment(), user, body, self._stamp(), parent=parent, path=path, line=line
        )
        pull.comments.append(comment)
        self._participant(pull, user).participated_on = comment.created_on
        self._touch(pull)
        return comment.id

    def delete_comment(self, full_name: str, pr_id: int, comment_id: int) -> None:
        pull = self.pull(full_name, pr_id)
        for comment in pull.comments:
            if comment.id == comment_id:
                comment.deleted = True
        self._touch(pull)

    def merge(
        self, full_name: str, pr_id: int, *, by: str = "maintainer", strategy: str = "merge_commit"
    ) -> str:
        return self._merge(self.repo(full_name), self.pull(full_name, pr_id), by, strategy, None)

    def decline(self, full_name: str, pr_id: int, *, by: str = "maintainer") -> None:
        pull = self.pull(full_name, pr_id)
        if by not in self.users:
            self.add_user(by)
        pull.state = "DECLINED"
        pull.closed_by = by
        self._touch(pull)

    # -- the API --

    async def handle(self, request: RecordedRequest) -> Answer:
        if self.git is not None and self.git.handles(request.path):
            return await self.git.serve(request)
        if not request.path.startswith("/2.0/"):
            return _error(404, "Resource not found")
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if self.rate_limited:
            headers = {"X-RateLimit-Limit": "1000", "X-RateLimit-Resource": "api"}
            if self.retry_after is not None:
                headers["Retry-After"] = str(self.retry_after)
            return _error(429, "Rate limit for this resource has been exceeded", headers=headers)
        answer = self._route(request, request.path[len("/2.0") :].rstrip("/"))
        if request.method == "GET" and answer.status == 200 and self.etags:
            etag = etag_of(answer.body)
            answer.headers["ETag"] = etag
            if not_modified(request, etag):
                return Answer(304, headers={"ETag": etag})
        self.requests_served += 1
        return answer

    def _authenticate(self, request: RecordedRequest) -> Answer | None:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        presented = presented.strip()
        if scheme.lower() == "bearer" and self.token is not None and presented == self.token:
            return None
        if scheme.lower() == "basic" and self.app_password is not None:
            try:
                pair = base64.b64decode(presented).decode()
            except ValueError:
                pair = ""
            if pair == f"{self.username}:{self.app_password}":
                return None
        message = "Invalid credentials"
        if self.echo_credentials and presented:
            message = f"Invalid credentials ({header})"
        return _error(401, message)

    def _git_authorized(self, username: str, password: str) -> bool:
        if self.token is not None and username == "x-token-auth" and password == self.token:
            return True
        return self.app_password is not None and (username, password) == (
            self.username,
            self.app_password,
        )

    def _route(self, request: RecordedRequest, path: str) -> Answer:
        method = request.method
        parts = path.strip("/").split("/")
        if path == "/user" and method == "GET":
            if self.token is not None and request.headers.get(
                "authorization", ""
            ).lower().startswith("bearer"):
                return _error(401, "This API is not available to access tokens")
            return Answer(200, self._user_json(self.users[self.username]))
        if len(parts) == 3 and parts[0] == "workspaces" and parts[2] == "members":
            workspace = parts[1].lower()
            if workspace not in self.members or method != "GET":
                return _error(404, f"No workspace with identifier '{parts[1]}'.")
            memberships = [
                {
                    "type": "workspace_membership",
                    "user": self._user_json(self.users[nick]),
                    "workspace": {"type": "workspace", "slug": workspace},
                }
                for nick in self.members[workspace]
            ]
            return self._page(request, memberships)
        if not parts or parts[0] != "repositories" or len(parts) < 2:
            return _error(404, "Resource not found")
        if len(parts) == 2 and method == "GET":
            workspace = parts[1].lower()
            repos = [r for r in self.repos.values() if r.workspace.lower() == workspace]
            if workspace not in self.members:
                return _error(404, f"No workspace with identifier '{parts[1]}'.")
            return self._page(request, [self._repo_json(r) for r in repos])
        repo = self.repos.get(f"{parts[1]}/{parts[2]}".lower()) if len(parts) >= 3 else None
        if repo is None:
            return _error(404, f"Repository {'/'.join(parts[1:3])} not found")
        rest = parts[3:]
        if not rest and method == "GET":
            return Answer(200, self._repo_json(repo))
        if rest == ["pullrequests"]:
            if method == "POST":
                return self._create(repo, request.body)
            if method == "GET":
                states = request.query.get("state", "OPEN").upper()
                pulls = [self._pull_json(repo, p) for p in repo.pulls.values() if p.state == states]
                return self._page(request, pulls)
        if len(rest) < 2 or rest[0] != "pullrequests" or not rest[1].isdigit():
            return _error(404, "Resource not found")
        pull = repo.pulls.get(int(rest[1]))
        if pull is None:
            return _error(404, f"Pull request {rest[1]} not found")
        tail = rest[2:]
        if not tail and method == "GET":
            return Answer(200, self._pull_json(repo, pull))
        if not tail and method == "PUT":
            return self._update(repo, pull, request.body)
        if tail == ["comments"] and method == "GET":
            visible = [c for c in pull.comments if not c.pending or c.user == self.username]
            return self._page(request, [self._comment_json(repo, pull, c) for c in visible])
        if tail == ["comments"] and method == "POST":
            return self._post_comment(repo, pull, request.body)
        if tail == ["approve"] and method in ("POST", "DELETE"):
            if pull.author == self.username:
                return _error(400, "You can't approve your own pull request.")
            if method == "POST":
                self.approve(repo.full_name, pull.id, self.username)
            else:
                self.unapprove(repo.full_name, pull.id, self.username)
            return Answer(200 if method == "POST" else 204, None)
        if tail == ["merge"] and method == "POST":
            return self._merge_endpoint(repo, pull, request.body)
        if tail == ["decline"] and method == "POST":
            if pull.state != "OPEN":
                return _error(400, "You can't decline a pull request that isn't open.")
            self.decline(repo.full_name, pull.id, by=self.username)
            return Answer(200, self._pull_json(repo, pull))
        return _error(404, "Resource not found")

    def _create(self, repo: BbRepo, body: Any) -> Answer:
        if not isinstance(body, dict):
            return _error(400, "Bad request", fields={"": ["Malformed JSON"]})
        title = body.get("title")
        source = _branch(body.get("source"))
        destination = _branch(body.get("destination")) or "main"
        missing = {
            name: ["This field is required."]
            for name, value in (("title", title), ("source", source))
            if not isinstance(value, str) or not value.strip()
        }
        if missing:
            return _error(400, "Bad request", fields=missing)
        assert isinstance(title, str) and source is not None
        if destination not in repo.branches:
            return _error(400, "Bad request", fields={"destination": [f"{destination} not found"]})
        if source == destination:
            return _error(400, "source and destination branches must differ")
        if (
            self.git is not None
            and self.git.has(repo.full_name)
            and self.git.branch_sha(repo.full_name, source) is None
        ):  # the branch was never pushed
            return _error(400, "Bad request", fields={"source": [f"{source} not found"]})
        for other in repo.pulls.values():
            if (
                other.state == "OPEN"
                and other.source == source
                and other.destination == destination
            ):
                return _error(
                    400,
                    f"There is already an open pull request from {source} to {destination} "
                    f"(#{other.id}).",
                )
        reviewers = self._reviewers(body.get("reviewers") or [])
        if isinstance(reviewers, Answer):
            return reviewers
        if self.username in reviewers:
            return _error(
                400,
                "Bad request",
                fields={"reviewers": [f"{self.username} is the author and cannot be a reviewer."]},
            )
        pr_id = self._open(
            repo, source, destination, title, str(body.get("description") or ""), self.username
        )
        pull = repo.pulls[pr_id]
        pull.close_source_branch = bool(body.get("close_source_branch"))
        for nickname in reviewers:
            self._add_reviewer(pull, nickname)
        return Answer(201, self._pull_json(repo, pull))

    def _update(self, repo: BbRepo, pull: BbPull, body: Any) -> Answer:
        if not isinstance(body, dict):
            return _error(400, "Bad request", fields={"": ["Malformed JSON"]})
        if "reviewers" in body:
            reviewers = self._reviewers(body.get("reviewers") or [])
            if isinstance(reviewers, Answer):
                return reviewers
            if pull.author in reviewers:
                return _error(
                    400,
                    "Bad request",
                    fields={
                        "reviewers": [f"{pull.author} is the author and cannot be a reviewer."]
                    },
                )
            pull.reviewers = []
            for participant in pull.participants:
                if participant.role == "REVIEWER" and participant.user not in reviewers:
                    participant.role = "PARTICIPANT"
            for nickname in reviewers:
                self._add_reviewer(pull, nickname)
        if isinstance(body.get("title"), str) and body["title"].strip():
            pull.title = body["title"]
        if isinstance(body.get("description"), str):
            pull.description = body["description"]
        self._touch(pull)
        return Answer(200, self._pull_json(repo, pull))

    def _post_comment(self, repo: BbRepo, pull: BbPull, body: Any) -> Answer:
        content = body.get("content") if isinstance(body, dict) else None
        raw = content.get("raw") if isinstance(content, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            return _error(400, "Bad request", fields={"content": ["This field is required."]})
        parent_id = None
        parent = body.get("parent") if isinstance(body, dict) else None
        if parent is not None:
            parent_id = parent.get("id") if isinstance(parent, dict) else None
            if not any(c.id == parent_id for c in pull.comments):
                return _error(400, "Bad request", fields={"parent": ["Invalid parent comment"]})
        comment_id = self.comment(repo.full_name, pull.id, self.username, raw, parent=parent_id)
        comment = next(c for c in pull.comments if c.id == comment_id)
        return Answer(201, self._comment_json(repo, pull, comment))

    def _merge_endpoint(self, repo: BbRepo, pull: BbPull, body: Any) -> Answer:
        body = body if isinstance(body, dict) else {}
        strategy = str(body.get("merge_strategy") or "merge_commit")
        if pull.state != "OPEN":
            return _error(400, f"You can't merge a pull request that is {pull.state.lower()}.")
        if strategy not in repo.merge_strategies:
            return _error(
                400,
                "Bad request",
                fields={"merge_strategy": [f"{strategy} is not allowed on this repository"]},
            )
        if pull.conflicted:
            return _error(409, "You can't merge until you resolve all merge conflicts.")
        message = body.get("message")
        if "close_source_branch" in body:
            pull.close_source_branch = bool(body["close_source_branch"])
        try:
            self._merge(
                repo, pull, self.username, strategy, message if isinstance(message, str) else None
            )
        except (MergeConflict, MergeImpossible) as exc:
            return _error(409, f"You can't merge this pull request: {exc}.")
        return Answer(200, self._pull_json(repo, pull))

    # -- helpers --

    def _reviewers(self, refs: Any) -> list[str] | Answer:
        found: list[str] = []
        for ref in refs if isinstance(refs, list) else []:
            user = None
            if isinstance(ref, dict):
                user = next(
                    (
                        u
                        for u in self.users.values()
                        if ref.get("uuid") == u.uuid or ref.get("account_id") == u.account_id
                    ),
                    None,
                )
            if user is None:
                return _error(
                    400, "Bad request", fields={"reviewers": ["Malformed reviewers list"]}
                )
            if user.nickname not in found:
                found.append(user.nickname)
        return found

    def _add_reviewer(self, pull: BbPull, nickname: str) -> None:
        if nickname not in pull.reviewers:
            pull.reviewers.append(nickname)
        self._participant(pull, nickname).role = "REVIEWER"

    def _participant(self, pull: BbPull, nickname: str) -> BbParticipant:
        if nickname not in self.users:
            self.add_user(nickname)
        for participant in pull.participants:
            if participant.user == nickname:
                return participant
        participant = BbParticipant(nickname, "PARTICIPANT")
        pull.participants.append(participant)
        return participant

    def _open(
        self,
        repo: BbRepo,
        source: str,
        destination: str,
        title: str,
        description: str,
        author: str,
    ) -> int:
        pr_id = repo.next_id
        repo.next_id += 1
        stamp = self._stamp()
        repo.pulls[pr_id] = BbPull(
            id=pr_id,
            title=title,
            description=description,
            source=source,
            destination=destination,
            author=author,
            created_on=stamp,
            updated_on=stamp,
            source_hash=self._hash(),
        )
        return pr_id

    def _merge(
        self, repo: BbRepo, pull: BbPull, by: str, strategy: str, message: str | None
    ) -> str:
        """Mark `pull` merged; in a served repository, merge its source into its
        destination first (`MergeConflict` / `MergeImpossible`: nothing changes)."""
        if self.git is not None and self.git.has(repo.full_name):
            text = message or f"Merged in {pull.source} (pull request #{pull.id})\n\n{pull.title}"
            merge_hash = self.git.merge(
                repo.full_name,
                pull.source,
                pull.destination,
                message=text.strip() + "\n",
                method=_GIT_METHODS.get(strategy, "fast_forward"),
            )
            if pull.close_source_branch:
                self.git.delete_branch(repo.full_name, pull.source)
        else:
            merge_hash = self._hash()
        if by not in self.users:
            self.add_user(by)
        pull.state = "MERGED"
        pull.merge_hash = merge_hash
        pull.merge_strategy = strategy
        pull.merge_message = message
        pull.closed_by = by
        self._touch(pull)
        return pull.merge_hash

    def _next_comment(self) -> int:
        self._comment_ids += 1
        return self._comment_ids

    def _hash(self) -> str:
        self._hashes += 1
        return hashlib.sha1(f"bb-commit-{self._hashes}".encode()).hexdigest()

    def _stamp(self) -> str:
        return self.clock.tick().isoformat(timespec="microseconds")

    def _touch(self, pull: BbPull) -> None:
        pull.updated_on = self._stamp()

    def _page(self, request: RecordedRequest, items: list[Any]) -> Answer:
        try:
            pagelen = int(request.query.get("pagelen", "10"))
        except ValueError:
            pagelen = 10
        try:
            page = max(int(request.query.get("page", "1")), 1)
        except ValueError:
            page = 1
        pagelen = max(1, min(pagelen, 100, self.page_size))
        body: dict[str, Any] = {
            "pagelen": pagelen,
            "size": len(items),
            "page": page,
            "values": items[(page - 1) * pagelen : page * pagelen],
        }

        def url(number: int) -> str:
            query = {**request.query, "pagelen": str(pagelen), "page": str(number)}
            return f"{self.root}{request.path}?{urlencode(query)}"

        if page * pagelen < len(items):
            body["next"] = url(page + 1)
        if page > 1:
            body["previous"] = url(page - 1)
        return Answer(200, body)

    def _user_json(self, user: BbUser) -> dict[str, Any]:
        return {
            "type": "user",
            "display_name": user.display_name,
            "nickname": user.nickname,
            "uuid": user.uuid,
            "account_id": user.account_id,
            "links": {"avatar": {"href": f"{self.root}/avatar/{user.nickname}"}},
        }

    def _repo_json(self, repo: BbRepo) -> dict[str, Any]:
        return {
            "type": "repository",
            "full_name": repo.full_name,
            "name": repo.slug,
            "slug": repo.slug,
            "uuid": repo.uuid,
            "is_private": True,
            "mainbranch": {"type": "branch", "name": "main"},
            "links": {
                "html": {"href": f"{self.root}/{repo.full_name}"},
                "clone": [
                    {"name": "https", "href": f"{self.root}/{repo.full_name}.git"},
                    {"name": "ssh", "href": f"git@127.0.0.1:{repo.full_name}.git"},
                ],
            },
        }

    def _pull_json(self, repo: BbRepo, pull: BbPull) -> dict[str, Any]:
        api = f"{self.base_url}/repositories/{repo.full_name}/pullrequests/{pull.id}"

        def endpoint(branch: str, commit: str) -> dict[str, Any]:
            return {
                "branch": {"name": branch},
                "commit": {"type": "commit", "hash": commit[:12]},
                "repository": {
                    "type": "repository",
                    "full_name": repo.full_name,
                    "name": repo.slug,
                    "uuid": repo.uuid,
                },
            }

        return {
            "type": "pullrequest",
            "id": pull.id,
            "title": pull.title,
            "description": pull.description,
            "summary": {"type": "rendered", "raw": pull.description, "markup": "markdown"},
            "state": pull.state,
            "author": self._user_json(self.users[pull.author]),
            "source": endpoint(pull.source, pull.source_hash),
            "destination": endpoint(pull.destination, "0" * 40),
            "merge_commit": {"type": "commit", "hash": pull.merge_hash}
            if pull.merge_hash
            else None,
            "comment_count": sum(1 for c in pull.comments if not c.deleted),
            "task_count": 0,
            "close_source_branch": pull.close_source_branch,
            "closed_by": self._user_json(self.users[pull.closed_by]) if pull.closed_by else None,
            "reason": "",
            "created_on": pull.created_on,
            "updated_on": pull.updated_on,
            "reviewers": [self._user_json(self.users[n]) for n in pull.reviewers],
            "participants": [
                {
                    "type": "participant",
                    "user": self._user_json(self.users[p.user]),
                    "role": p.role,
                    "approved": p.approved,
                    "state": p.state,
                    "participated_on": p.participated_on,
                }
                for p in pull.participants
            ],
            "links": {
                "self": {"href": api},
                "html": {"href": f"{self.root}/{repo.full_name}/pull-requests/{pull.id}"},
                "comments": {"href": f"{api}/comments"},
                "approve": {"href": f"{api}/approve"},
                "merge": {"href": f"{api}/merge"},
                "decline": {"href": f"{api}/decline"},
            },
        }

    def _comment_json(self, repo: BbRepo, pull: BbPull, comment: BbComment) -> dict[str, Any]:
        api = f"{self.base_url}/repositories/{repo.full_name}/pullrequests/{pull.id}"
        data: dict[str, Any] = {
            "type": "pullrequest_comment",
            "id": comment.id,
            "created_on": comment.created_on,
            "updated_on": comment.created_on,
            "content": {
                "type": "rendered",
                "raw": "" if comment.deleted else comment.raw,
                "markup": "markdown",
                "html": "" if comment.deleted else f"<p>{comment.raw}</p>",
            },
            "user": self._user_json(self.users[comment.user]),
            "deleted": comment.deleted,
            "pending": comment.pending,
            "pullrequest": {"type": "pullrequest", "id": pull.id, "title": pull.title},
            "links": {
                "self": {"href": f"{api}/comments/{comment.id}"},
                "html": {
                    "href": f"{self.root}/{repo.full_name}/pull-requests/{pull.id}"
                    f"#comment-{comment.id}"
                },
            },
        }
        if comment.parent is not None:
            data["parent"] = {"id": comment.parent, "links": {}}
        if comment.path is not None:
            data["inline"] = {"from": None, "to": comment.line, "path": comment.path}
        return data


def _branch(endpoint: Any) -> str | None:
    if not isinstance(endpoint, dict):
        return None
    branch = endpoint.get("branch")
    name = branch.get("name") if isinstance(branch, dict) else None
    return name if isinstance(name, str) and name.strip() else None


def _error(
    status: int,
    message: str,
    *,
    fields: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    error: dict[str, Any] = {"message": message}
    if fields:
        error["fields"] = fields
    return Answer(status, {"type": "error", "error": error}, dict(headers or {}))
