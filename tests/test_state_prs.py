"""`backend.prs`, the local SCM's pull request store, on every backend: records, the
one-open-per-branch-pair rule, approvals, threaded comments, reviewers, closing — and
ids that concurrent creators (two backends on one storage) never share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coro.state.prs import (
    CommentNotOnPullRequest,
    NewPullRequest,
    OpenPullRequestExists,
    PullRequestNotFound,
    PullRequestNotOpen,
    PullRequestStore,
)
from tests.store_backends import KINDS, Stores, open_backends


@pytest.fixture(params=KINDS)
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Stores]]:
    """Two backends on one storage (two processes' worth; memory: the same one)."""
    async with open_backends(request.param, tmp_path, 2) as backends:
        yield backends


@pytest.fixture
def prs(pair: list[Stores]) -> PullRequestStore:
    return pair[0].prs


def new(source: str = "feature", *, repo: str = "shop", target: str = "main") -> NewPullRequest:
    return NewPullRequest(
        repo=repo,
        title=f"{source} into {target}",
        body="Body text",
        source_branch=source,
        target_branch=target,
        author="coro",
        reviewers=("alice",),
    )


async def test_a_created_pull_request_reads_back(prs: PullRequestStore) -> None:
    created = await prs.create(new())

    assert created.id == 1
    assert (created.repo, created.state, created.author) == ("shop", "open", "coro")
    assert (created.source_branch, created.target_branch) == ("feature", "main")
    assert created.reviewers == ("alice",)
    assert created.approvals == () and created.comment_count == 0
    assert created.created_at == created.updated_at and created.merged_at is None
    assert await prs.get(created.id) == created
    assert await prs.get(99) is None


async def test_one_open_pull_request_per_branch_pair(prs: PullRequestStore) -> None:
    first = await prs.create(new())
    other_target = await prs.create(new(target="release"))

    with pytest.raises(OpenPullRequestExists) as raised:
        await prs.create(new())
    assert raised.value.existing_id == first.id

    await prs.decline(first.id)
    again = await prs.create(new())
    assert again.id == other_target.id + 1
    assert [p.id for p in await prs.list_prs(state="open")] == [again.id, other_target.id]
    assert [p.id for p in await prs.list_prs(state="declined")] == [first.id]


async def test_list_filters_newest_first_and_counts_open(prs: PullRequestStore) -> None:
    shop = await prs.create(new("a"))
    blog = await prs.create(new("a", repo="blog"))
    shop_b = await prs.create(new("b"))
    await prs.decline(shop_b.id)

    assert [p.id for p in await prs.list_prs()] == [shop_b.id, blog.id, shop.id]
    assert [p.id for p in await prs.list_prs(repo="shop")] == [shop_b.id, shop.id]
    assert [p.id for p in await prs.list_prs(repo="shop", state="open")] == [shop.id]
    assert await prs.list_prs(repo="nowhere") == []
    assert await prs.open_counts() == {"shop": 1, "blog": 1}


async def test_approvals_are_idempotent_and_need_an_open_pull_request(
    prs: PullRequestStore,
) -> None:
    pr = await prs.create(new())

    first, added = await prs.approve(pr.id, "alice")
    again, added_again = await prs.approve(pr.id, "alice")
    both, _ = await prs.approve(pr.id, "bob")

    assert added and not added_again
    assert first.approvals == again.approvals == ("alice",)
    assert set(both.approvals) == {"alice", "bob"}
    assert first.updated_at >= pr.updated_at
    with pytest.raises(PullRequestNotFound):
        await prs.approve(99, "alice")
    await prs.decline(pr.id)
    with pytest.raises(PullRequestNotOpen) as raised:
        await prs.approve(pr.id, "carol")
    assert raised.value.state == "declined"


async def test_comments_and_replies_stay_on_their_pull_request(prs: PullRequestStore) -> None:
    pr = await prs.create(new())
    other = await prs.create(new("other"))

    first = await prs.add_comment(pr.id, "alice", "Looks good")
    reply = await prs.add_comment(pr.id, "bob", "Thanks", in_reply_to=first.id)
    foreign = await prs.add_comment(other.id, "bob", "elsewhere")

    assert [(c.author, c.body, c.in_reply_to) for c in await prs.comments(pr.id)] == [
        ("alice", "Looks good", None),
        ("bob", "Thanks", first.id),
    ]
    assert reply.pr_id == pr.id and reply.id != first.id
    stored = await prs.get(pr.id)
    assert stored is not None and stored.comment_count == 2
    with pytest.raises(CommentNotOnPullRequest):
        await prs.add_comment(pr.id, "alice", "reply", in_reply_to=foreign.id)
    with pytest.raises(PullRequestNotFound):
        await prs.add_comment(99, "alice", "nobody")
    await prs.decline(pr.id)
    await prs.add_comment(pr.id, "carol", "after the fact")  # any state takes comments
    assert await prs.comments(99) == []


async def test_reviewers_change_atomically(prs: PullRequestStore) -> None:
    pr = await prs.create(new())

    def add(names: list[str]) -> list[str]:
        return names + [n for n in ("bob", "carol") if n not in names]

    updated, changed = await prs.change_reviewers(pr.id, add)
    same, unchanged = await prs.change_reviewers(pr.id, add)

    assert changed and not unchanged
    assert updated.reviewers == same.reviewers == ("alice", "bob", "carol")

    def refuse(names: list[str]) -> list[str]:
        raise ValueError("too many")

    with pytest.raises(ValueError, match="too many"):
        await prs.change_reviewers(pr.id, refuse)
    stored = await prs.get(pr.id)
    assert stored is not None and stored.reviewers == ("alice", "bob", "carol")


async def test_decline_and_merge(prs: PullRequestStore) -> None:
    declined = await prs.decline((await prs.create(new("a"))).id)
    merged = await prs.mark_merged((await prs.create(new("b"))).id, "abc123")

    assert declined.state == "declined" and declined.merged_at is None
    assert (merged.state, merged.merge_sha) == ("merged", "abc123")
    assert merged.merged_at is not None
    with pytest.raises(PullRequestNotOpen):
        await prs.decline(declined.id)
    with pytest.raises(PullRequestNotOpen):
        await prs.decline(merged.id)
    with pytest.raises(PullRequestNotFound):
        await prs.mark_merged(99, "abc")


async def test_concurrent_creators_never_share_an_id(pair: list[Stores]) -> None:
    count = 40
    created = await asyncio.gather(
        *(pair[n % 2].prs.create(new(f"branch-{n}")) for n in range(count))
    )

    ids = [pr.id for pr in created]
    assert sorted(ids) == list(range(1, count + 1))
    listed = await pair[1].prs.list_prs()
    assert sorted(pr.id for pr in listed) == sorted(ids)
    assert {pr.id: pr.source_branch for pr in listed} == {pr.id: pr.source_branch for pr in created}


async def test_concurrent_creators_of_one_branch_pair_open_it_once(pair: list[Stores]) -> None:
    outcomes = await asyncio.gather(
        *(pair[n % 2].prs.create(new()) for n in range(10)), return_exceptions=True
    )

    opened = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, OpenPullRequestExists)]
    assert len(opened) == 1 and len(refused) == 9
    assert {r.existing_id for r in refused} == {opened[0].id}


async def test_concurrent_approvals_and_comments_lose_nothing(pair: list[Stores]) -> None:
    pr = await pair[0].prs.create(new())

    await asyncio.gather(
        *(pair[n % 2].prs.approve(pr.id, f"reviewer-{n % 5}") for n in range(20)),
        *(pair[n % 2].prs.add_comment(pr.id, "bob", f"comment {n}") for n in range(20)),
    )

    stored = await pair[1].prs.get(pr.id)
    assert stored is not None
    assert sorted(stored.approvals) == [f"reviewer-{n}" for n in range(5)]
    comments = await pair[0].prs.comments(pr.id)
    assert sorted(c.body for c in comments) == sorted(f"comment {n}" for n in range(20))
    assert len({c.id for c in comments}) == 20 == stored.comment_count
