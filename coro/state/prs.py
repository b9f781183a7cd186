"""Pull requests of the offline `local` SCM, kept by the state backend (`backend.prs`).

The plugin (`coro.plugins.scm.local`) validates every input and keeps the git side;
a `PullRequestStore` keeps the records: pull requests, their approvals, comments (with
replies) and requested reviewers. Implementations: `SqlPullRequestStore`
(`coro.state.prs_sql`, SQLite and PostgreSQL) and `MemoryPullRequestStore` (below).

Pull request ids are one sequence across every repository (`coro pr approve 3` needs no
repository), allocated by the store so that concurrent creators never share one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from coro.domain.models import iso_now

PrState = Literal["open", "merged", "declined"]
PR_STATES: tuple[PrState, ...] = ("open", "merged", "declined")

#: A change of the requested reviewers: the current names → the new ones. It may run
#: while the pull request is locked, so it must only compute (or raise to refuse).
ReviewerChange = Callable[[list[str]], list[str]]


@dataclass(frozen=True, slots=True)
class NewPullRequest:
    repo: str
    title: str
    body: str
    source_branch: str
    target_branch: str
    author: str | None
    reviewers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PullRequestRecord:
    id: int
    repo: str
    title: str
    body: str
    source_branch: str
    target_branch: str
    state: PrState
    author: str | None
    #: requested reviewers, in the order they were asked
    reviewers: tuple[str, ...]
    #: who approved, oldest approval first
    approvals: tuple[str, ...]
    comment_count: int
    created_at: str
    updated_at: str
    merged_at: str | None = None
    merge_sha: str | None = None


@dataclass(frozen=True, slots=True)
class PrCommentRecord:
    id: int
    pr_id: int
    author: str
    body: str
    in_reply_to: int | None
    created_at: str


class PullRequestNotFound(LookupError):
    def __init__(self, pr_id: int) -> None:
        super().__init__(f"no pull request #{pr_id}")
        self.pr_id = pr_id


class PullRequestNotOpen(RuntimeError):
    """The change needs an open pull request; `state` is what it is instead."""

    def __init__(self, pr_id: int, state: str) -> None:
        super().__init__(f"pull request #{pr_id} is already {state}")
        self.pr_id = pr_id
        self.state = state


class OpenPullRequestExists(RuntimeError):
    """A pull request between the same branches of the repository is already open."""

    def __init__(self, existing_id: int) -> None:
        super().__init__(f"pull request #{existing_id} is already open")
        self.existing_id = existing_id


class CommentNotOnPullRequest(LookupError):
    """A reply names a comment that is not one of this pull request's."""

    def __init__(self, comment_id: int, pr_id: int) -> None:
        super().__init__(f"comment {comment_id} is not on pull request #{pr_id}")
        self.comment_id = comment_id
        self.pr_id = pr_id


class PullRequestStore(Protocol):
    async def create(self, new: NewPullRequest) -> PullRequestRecord:
        """A new open pull request with the next id. `OpenPullRequestExists` if one
        between the same branches of the repository is open."""

    async def get(self, pr_id: int) -> PullRequestRecord | None: ...

    async def list_prs(
        self, *, repo: str | None = None, state: PrState | None = None
    ) -> list[PullRequestRecord]:
        """Newest first, optionally of one repository and/or state."""

    async def comments(self, pr_id: int) -> list[PrCommentRecord]:
        """The pull request's comments, oldest first (none for an unknown id)."""

    async def open_counts(self) -> dict[str, int]:
        """How many pull requests each repository has open (repositories with none are
        left out)."""

    async def approve(self, pr_id: int, reviewer: str) -> tuple[PullRequestRecord, bool]:
        """Record `reviewer`'s approval of the open pull request; whether it is new
        (approving again changes nothing). `PullRequestNotFound`, `PullRequestNotOpen`."""

    async def add_comment(
        self, pr_id: int, author: str, body: str, in_reply_to: int | None = None
    ) -> PrCommentRecord:
        """A comment on the pull request (in any state), optionally a reply to one of its
        comments. `PullRequestNotFound`, `CommentNotOnPullRequest`."""

    async def change_reviewers(
        self, pr_id: int, change: ReviewerChange
    ) -> tuple[PullRequestRecord, bool]:
        """Apply `change` to the requested reviewers atomically; whether they changed."""

    async def decline(self, pr_id: int) -> PullRequestRecord:
        """Close the open pull request unmerged. `PullRequestNotOpen` otherwise."""

    async def mark_merged(self, pr_id: int, merge_sha: str) -> PullRequestRecord:
        """Record the merge that already moved the target branch: a fact, so it holds
        even over a decline that raced it."""


# --- in memory --------------------------------------------------------------------------


@dataclass(slots=True)
class _Stored:
    record: PullRequestRecord
    #: reviewer → when they approved
    approved: dict[str, str]


class MemoryPullRequestStore:
    """A `PullRequestStore` in this process's memory (tests and benchmarks)."""

    def __init__(self) -> None:
        self._prs: dict[int, _Stored] = {}
        self._comments: list[PrCommentRecord] = []
        self._lock = asyncio.Lock()

    async def create(self, new: NewPullRequest) -> PullRequestRecord:
        async with self._lock:
            for stored in self._prs.values():
                pr = stored.record
                if (pr.repo, pr.source_branch, pr.target_branch, pr.state) == (
                    new.repo,
                    new.source_branch,
                    new.target_branch,
                    "open",
                ):
                    raise OpenPullRequestExists(pr.id)
            now = iso_now()
            record = PullRequestRecord(
                id=max(self._prs, default=0) + 1,
                repo=new.repo,
                title=new.title,
                body=new.body,
                source_branch=new.source_branch,
                target_branch=new.target_branch,
                state="open",
                author=new.author,
                reviewers=tuple(new.reviewers),
                approvals=(),
                comment_count=0,
                created_at=now,
                updated_at=now,
            )
            self._prs[record.id] = _Stored(record, {})
            return record

    async def get(self, pr_id: int) -> PullRequestRecord | None:
        stored = self._prs.get(pr_id)
        return stored.record if stored is not None else None

    async def list_prs(
        self, *, repo: str | None = None, state: PrState | None = None
    ) -> list[PullRequestRecord]:
        return [
            stored.record
            for _, stored in sorted(self._prs.items(), reverse=True)
            if repo in (None, stored.record.repo) and state in (None, stored.record.state)
        ]

    async def comments(self, pr_id: int) -> list[PrCommentRecord]:
        mine = [c for c in self._comments if c.pr_id == pr_id]
        return sorted(mine, key=lambda c: (c.created_at, c.id))

    async def open_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for stored in self._prs.values():
            if stored.record.state == "open":
                counts[stored.record.repo] = counts.get(stored.record.repo, 0) + 1
        return counts

    async def approve(self, pr_id: int, reviewer: str) -> tuple[PullRequestRecord, bool]:
        async with self._lock:
            stored = self._open(pr_id)
            if reviewer in stored.approved:
                return stored.record, False
            now = iso_now()
            stored.approved[reviewer] = now
            order = sorted(stored.approved.items(), key=lambda item: (item[1], item[0]))
            approvals = tuple(name for name, _ in order)
            return self._set(stored, approvals=approvals, updated_at=now), True

    async def add_comment(
        self, pr_id: int, author: str, body: str, in_reply_to: int | None = None
    ) -> PrCommentRecord:
        async with self._lock:
            stored = self._stored(pr_id)
            if in_reply_to is not None and not any(
                c.id == in_reply_to and c.pr_id == pr_id for c in self._comments
            ):
                raise CommentNotOnPullRequest(in_reply_to, pr_id)
            now = iso_now()
            comment = PrCommentRecord(
                id=len(self._comments) + 1,
                pr_id=pr_id,
                author=author,
                body=body,
                in_reply_to=in_reply_to,
                created_at=now,
            )
            self._comments.append(comment)
            self._set(stored, comment_count=stored.record.comment_count + 1, updated_at=now)
            return comment

    async def change_reviewers(
        self, pr_id: int, change: ReviewerChange
    ) -> tuple[PullRequestRecord, bool]:
        async with self._lock:
            stored = self._stored(pr_id)
            current = list(stored.record.reviewers)
            names = tuple(change(list(current)))
            if names == tuple(current):
                return stored.record, False
            return self._set(stored, reviewers=names, updated_at=iso_now()), True

    async def decline(self, pr_id: int) -> PullRequestRecord:
        async with self._lock:
            stored = self._open(pr_id)
            return self._set(stored, state="declined", updated_at=iso_now())

    async def mark_merged(self, pr_id: int, merge_sha: str) -> PullRequestRecord:
        async with self._lock:
            stored = self._stored(pr_id)
            now = iso_now()
            return self._set(
                stored, state="merged", merge_sha=merge_sha, merged_at=now, updated_at=now
            )

    def _stored(self, pr_id: int) -> _Stored:
        stored = self._prs.get(pr_id)
        if stored is None:
            raise PullRequestNotFound(pr_id)
        return stored

    def _open(self, pr_id: int) -> _Stored:
        stored = self._stored(pr_id)
        if stored.record.state != "open":
            raise PullRequestNotOpen(pr_id, stored.record.state)
        return stored

    @staticmethod
    def _set(stored: _Stored, **changes: Any) -> PullRequestRecord:
        stored.record = replace(stored.record, **changes)
        return stored.record


def pr_state(value: object) -> PrState:
    """A stored state as a `PrState` (anything unknown reads as open)."""
    for state in PR_STATES:
        if value == state:
            return state
    return "open"
