"""`SqlPullRequestStore`: the `PullRequestStore` over the `local_*` tables of
`coro.state.schema`, in SQLAlchemy Core that runs unchanged on SQLite and PostgreSQL.

Concurrency: ids come from the database (rowid / SERIAL) through `INSERT … RETURNING`;
"one open pull request per branch pair" is a partial unique index; a change that checks
the pull request first (approve, comment, reviewers, decline) locks its row (`FOR
UPDATE` on PostgreSQL; SQLite writers hold the database's write lock anyway).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.domain.models import iso_now
from coro.state.prs import (
    CommentNotOnPullRequest,
    NewPullRequest,
    OpenPullRequestExists,
    PrCommentRecord,
    PrState,
    PullRequestNotFound,
    PullRequestNotOpen,
    PullRequestRecord,
    ReviewerChange,
    pr_state,
)
from coro.state.schema import local_pr_approvals, local_pr_comments, local_pull_requests
from coro.state.sqlcore import EngineSource, engine_getter, transaction

_PRS = local_pull_requests
_COMMENTS = local_pr_comments
_APPROVALS = local_pr_approvals


class SqlPullRequestStore:
    """Pull requests in the state database (the backend's engine; no engine of its own)."""

    def __init__(self, engine: EngineSource) -> None:
        self._engine = engine_getter(engine)

    def _transaction(self, *, write: bool) -> AbstractAsyncContextManager[AsyncConnection]:
        return transaction(self._engine(), write=write)

    # -- reading --

    async def get(self, pr_id: int) -> PullRequestRecord | None:
        async with self._transaction(write=False) as db:
            row = await _row(db, pr_id)
            return await _record(db, row) if row is not None else None

    async def list_prs(
        self, *, repo: str | None = None, state: PrState | None = None
    ) -> list[PullRequestRecord]:
        query = select(_PRS).order_by(_PRS.c.id.desc())
        if repo is not None:
            query = query.where(_PRS.c.repo == repo)
        if state is not None:
            query = query.where(_PRS.c.state == state)
        async with self._transaction(write=False) as db:
            rows = (await db.execute(query)).mappings().all()
            ids = [int(row["id"]) for row in rows]
            approvals = await _approvers(db, ids) if ids else {}
            counts = await _comment_counts(db, ids) if ids else {}
        return [
            _from_row(row, approvals.get(int(row["id"]), []), counts.get(int(row["id"]), 0))
            for row in rows
        ]

    async def comments(self, pr_id: int) -> list[PrCommentRecord]:
        query = (
            select(_COMMENTS)
            .where(_COMMENTS.c.pr_id == pr_id)
            .order_by(_COMMENTS.c.created_at, _COMMENTS.c.id)
        )
        async with self._transaction(write=False) as db:
            rows = (await db.execute(query)).mappings().all()
        return [_comment(row) for row in rows]

    async def open_counts(self) -> dict[str, int]:
        query = (
            select(_PRS.c.repo, func.count()).where(_PRS.c.state == "open").group_by(_PRS.c.repo)
        )
        async with self._transaction(write=False) as db:
            rows = (await db.execute(query)).all()
        return {str(repo): int(count) for repo, count in rows}

    # -- writing --

    async def create(self, new: NewPullRequest) -> PullRequestRecord:
        now = iso_now()
        statement = (
            insert(_PRS)
            .values(
                repo=new.repo,
                title=new.title,
                body=new.body,
                source_branch=new.source_branch,
                target_branch=new.target_branch,
                state="open",
                author=new.author,
                reviewers=json.dumps(list(new.reviewers)),
                created_at=now,
                updated_at=now,
            )
            .returning(_PRS.c.id)
        )
        # Checked first, so that a refusal costs no id (PostgreSQL's sequence would skip
        # it); the unique index settles the race of two creators that both checked.
        if (existing := await self._open_between(new)) is not None:
            raise OpenPullRequestExists(existing)
        try:
            async with self._transaction(write=True) as db:
                pr_id = int((await db.execute(statement)).scalar_one())
                return _from_row(await _existing(db, pr_id), [], 0)
        except IntegrityError:
            existing = await self._open_between(new)
            if existing is None:  # it closed meanwhile: the constraint was another's
                raise
            raise OpenPullRequestExists(existing) from None

    async def _open_between(self, new: NewPullRequest) -> int | None:
        query = select(_PRS.c.id).where(
            _PRS.c.repo == new.repo,
            _PRS.c.source_branch == new.source_branch,
            _PRS.c.target_branch == new.target_branch,
            _PRS.c.state == "open",
        )
        async with self._transaction(write=False) as db:
            found = (await db.execute(query)).scalar()
        return int(found) if found is not None else None

    async def approve(self, pr_id: int, reviewer: str) -> tuple[PullRequestRecord, bool]:
        a = _APPROVALS
        async with self._transaction(write=True) as db:
            _require_open(await _locked(db, pr_id))
            seen = await db.execute(
                select(a.c.pr_id).where(a.c.pr_id == pr_id, a.c.reviewer == reviewer)
            )
            changed = seen.first() is None
            if changed:  # the row lock serialises approvals of this pull request
                now = iso_now()
                await db.execute(insert(a).values(pr_id=pr_id, reviewer=reviewer, created_at=now))
                await _touch(db, pr_id, now)
            return await _record(db, await _existing(db, pr_id)), changed

    async def add_comment(
        self, pr_id: int, author: str, body: str, in_reply_to: int | None = None
    ) -> PrCommentRecord:
        c = _COMMENTS
        async with self._transaction(write=True) as db:
            await _locked(db, pr_id)
            if in_reply_to is not None:
                found = await db.execute(
                    select(c.c.id).where(c.c.id == in_reply_to, c.c.pr_id == pr_id)
                )
                if found.first() is None:
                    raise CommentNotOnPullRequest(in_reply_to, pr_id)
            now = iso_now()
            stored = (
                (
                    await db.execute(
                        insert(c)
                        .values(
                            pr_id=pr_id,
                            author=author,
                            body=body,
                            in_reply_to=in_reply_to,
                            created_at=now,
                        )
                        .returning(*c.columns)
                    )
                )
                .mappings()
                .one()
            )
            await _touch(db, pr_id, now)
        return _comment(stored)

    async def change_reviewers(
        self, pr_id: int, change: ReviewerChange
    ) -> tuple[PullRequestRecord, bool]:
        async with self._transaction(write=True) as db:
            row = await _locked(db, pr_id)
            current = _reviewers(row["reviewers"])
            names = list(change(list(current)))
            changed = names != current
            if changed:
                await db.execute(
                    update(_PRS)
                    .where(_PRS.c.id == pr_id)
                    .values(reviewers=json.dumps(names), updated_at=iso_now())
                )
                row = await _existing(db, pr_id)
            return await _record(db, row), changed

    async def decline(self, pr_id: int) -> PullRequestRecord:
        async with self._transaction(write=True) as db:
            _require_open(await _locked(db, pr_id))
            await db.execute(
                update(_PRS)
                .where(_PRS.c.id == pr_id)
                .values(state="declined", updated_at=iso_now())
            )
            return await _record(db, await _existing(db, pr_id))

    async def mark_merged(self, pr_id: int, merge_sha: str) -> PullRequestRecord:
        now = iso_now()
        async with self._transaction(write=True) as db:
            await _locked(db, pr_id)
            await db.execute(
                update(_PRS)
                .where(_PRS.c.id == pr_id)
                .values(state="merged", merged_at=now, merge_sha=merge_sha, updated_at=now)
            )
            return await _record(db, await _existing(db, pr_id))


# --- helpers ----------------------------------------------------------------------------


async def _row(db: AsyncConnection, pr_id: int) -> RowMapping | None:
    return (await db.execute(select(_PRS).where(_PRS.c.id == pr_id))).mappings().first()


async def _existing(db: AsyncConnection, pr_id: int) -> RowMapping:
    row = await _row(db, pr_id)
    if row is None:
        raise PullRequestNotFound(pr_id)
    return row


async def _locked(db: AsyncConnection, pr_id: int) -> RowMapping:
    """The pull request's row, locked until the transaction ends."""
    query = select(_PRS).where(_PRS.c.id == pr_id).with_for_update()
    row = (await db.execute(query)).mappings().first()
    if row is None:
        raise PullRequestNotFound(pr_id)
    return row


def _require_open(row: RowMapping) -> None:
    if row["state"] != "open":
        raise PullRequestNotOpen(int(row["id"]), str(row["state"]))


async def _touch(db: AsyncConnection, pr_id: int, now: str) -> None:
    await db.execute(update(_PRS).where(_PRS.c.id == pr_id).values(updated_at=now))


async def _approvers(db: AsyncConnection, pr_ids: Sequence[int]) -> dict[int, list[str]]:
    a = _APPROVALS
    rows = await db.execute(
        select(a.c.pr_id, a.c.reviewer)
        .where(a.c.pr_id.in_(list(pr_ids)))
        .order_by(a.c.created_at, a.c.reviewer)
    )
    found: dict[int, list[str]] = {}
    for pr_id, reviewer in rows.all():
        found.setdefault(int(pr_id), []).append(str(reviewer))
    return found


async def _comment_counts(db: AsyncConnection, pr_ids: Sequence[int]) -> dict[int, int]:
    c = _COMMENTS
    rows = await db.execute(
        select(c.c.pr_id, func.count()).where(c.c.pr_id.in_(list(pr_ids))).group_by(c.c.pr_id)
    )
    return {int(pr_id): int(count) for pr_id, count in rows.all()}


async def _record(db: AsyncConnection, row: RowMapping) -> PullRequestRecord:
    pr_id = int(row["id"])
    approvals = (await _approvers(db, [pr_id])).get(pr_id, [])
    count = (await _comment_counts(db, [pr_id])).get(pr_id, 0)
    return _from_row(row, approvals, count)


def _reviewers(raw: str | None) -> list[str]:
    try:
        value = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _from_row(row: RowMapping, approvals: list[str], comment_count: int) -> PullRequestRecord:
    return PullRequestRecord(
        id=int(row["id"]),
        repo=str(row["repo"]),
        title=str(row["title"]),
        body=str(row["body"]),
        source_branch=str(row["source_branch"]),
        target_branch=str(row["target_branch"]),
        state=pr_state(row["state"]),
        author=row["author"],
        reviewers=tuple(_reviewers(row["reviewers"])),
        approvals=tuple(approvals),
        comment_count=comment_count,
        created_at=str(row["created_at"]),
        updated_at=str(row["updated_at"]),
        merged_at=row["merged_at"],
        merge_sha=row["merge_sha"],
    )


def _comment(row: RowMapping) -> PrCommentRecord:
    return PrCommentRecord(
        id=int(row["id"]),
        pr_id=int(row["pr_id"]),
        author=str(row["author"]),
        body=str(row["body"]),
        in_reply_to=int(row["in_reply_to"]) if row["in_reply_to"] is not None else None,
        created_at=str(row["created_at"]),
    )
