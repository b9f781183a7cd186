"""The interface of a source-control plugin (SPEC §4.7).

Repositories are named by a `repo` key in the provider's own terms (`owner/name` on
GitHub, `workspace/slug` on Bitbucket). Pull requests are numbered per repository.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from coro.system.git import GitCredentials

PrStateName = Literal["open", "merged", "declined"]


@dataclass(frozen=True)
class PrComment:
    id: str
    author: str
    body: str
    created_at: str  # ISO 8601
    in_reply_to: str | None = None
    path: str | None = None  # review comments: the file they are on
    #: the author's relation to the repository (GitHub: OWNER, MEMBER, COLLABORATOR, …)
    author_association: str | None = None


@dataclass(frozen=True)
class PullRequest:
    id: int
    url: str
    title: str
    state: PrStateName
    source_branch: str
    target_branch: str
    author: str | None = None


@dataclass(frozen=True)
class PrStatus:
    """What polling compares: state, approvals and comments (ascending by time)."""

    pull_request: PullRequest
    approval_count: int
    approved_by: list[str] = field(default_factory=list)
    comments: list[PrComment] = field(default_factory=list)

    @property
    def comment_count(self) -> int:
        return len(self.comments)


@dataclass(frozen=True)
class MergeResult:
    merged: bool
    sha: str | None = None
    message: str = ""


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    message: str
    details: dict[str, str] = field(default_factory=dict)


class ScmPlugin(Protocol):
    id: str

    def clone_url(self, repo: str) -> str:
        """The HTTPS URL git clones from (no credentials in it)."""

    def git_credentials(self) -> GitCredentials | None: ...

    def matches_remote(self, remote_url: str) -> bool:
        """Whether a checkout's remote belongs to this plugin (routing of PR events)."""

    async def create_pr(
        self,
        repo: str,
        *,
        source_branch: str,
        target_branch: str,
        title: str,
        body: str,
        reviewers: list[str] | None = None,
    ) -> PullRequest: ...

    async def pr_status(self, repo: str, pr_id: int) -> PrStatus:
        """Current state, approvals and every comment (issue and review comments)."""

    async def post_comment(
        self, repo: str, pr_id: int, body: str, *, in_reply_to: str | None = None
    ) -> PrComment: ...

    async def request_reviewers(self, repo: str, pr_id: int, reviewers: list[str]) -> None: ...

    async def merge(self, repo: str, pr_id: int, *, message: str | None = None) -> MergeResult: ...

    async def poll_pr(self, repo: str, pr_id: int) -> PrStatus | None:
        """Like `pr_status`, but None when nothing changed since the last poll (ETag /
        conditional requests where the provider supports them)."""

    async def test_connection(self) -> ConnectionCheck:
        """A real request proving the credentials work; clear message otherwise."""

    async def aclose(self) -> None: ...


@runtime_checkable
class ChangeNotifier(Protocol):
    """An SCM plugin that knows when its pull requests change (the `local` SCM: an
    approval, a comment or a merge made through it). Event transports subscribe, so a
    parked job wakes without waiting for the next poll."""

    def add_listener(self, callback: Callable[[], None]) -> None:
        """`callback()` runs after every change (synchronously; errors are logged)."""

    def remove_listener(self, callback: Callable[[], None]) -> None: ...
