"""`backend.proposals` on every backend: one proposal per (job, layer), replaced while
pending and immutable once decided; decisions held by one decider at a time, in any
process; and the import of the proposals an older runner kept as files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coro.domain.models import iso_now
from coro.intelligence.proposals import import_disk_proposals
from coro.state.proposals import (
    Proposal,
    ProposalConflict,
    ProposalFile,
    ProposalNotFound,
    ProposalStore,
)
from tests.store_backends import KINDS, Stores, open_backends


@pytest.fixture(params=KINDS)
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Stores]]:
    """Two backends on one storage (two processes' worth; memory: the same one)."""
    async with open_backends(request.param, tmp_path, 2) as backends:
        yield backends


@pytest.fixture
def store(pair: list[Stores]) -> ProposalStore:
    return pair[0].proposals


def draft(
    proposal_id: str,
    job_id: str = "job-1",
    layer: Any = "tenant",
    *,
    title: str = "Document helpers",
    created_at: str | None = None,
    **fields: Any,
) -> Proposal:
    now = created_at or iso_now()
    return Proposal(
        id=proposal_id,
        tenant_id=fields.pop("tenant_id", "local"),
        job_id=job_id,
        phase="work",
        type="modify-agent",
        title=title,
        rationale="Why",
        files=[ProposalFile(path="agents/helper.md", content=f"# {title}\n")],
        target_layer=layer,
        created_at=now,
        updated_at=now,
        **fields,
    )


async def test_a_job_has_one_proposal_per_layer(store: ProposalStore) -> None:
    first = await store.propose(draft("p-1"))
    again = await store.propose(draft("p-2", title="Ask for docstrings"))
    repo = await store.propose(draft("p-3", layer="repo"))

    assert (first.updated, again.updated, repo.updated) == (False, True, False)
    assert again.proposal.id == "p-1" and again.proposal.title == "Ask for docstrings"
    assert again.proposal.created_at == first.proposal.created_at
    assert again.proposal.files[0].content == "# Ask for docstrings\n"
    assert await store.get("p-2") is None
    found = await store.find("job-1", "tenant")
    assert found is not None and found.title == "Ask for docstrings"
    assert (await store.find("job-1", "repo")) == repo.proposal
    assert await store.find("job-2", "tenant") is None


async def test_listing_is_newest_first_and_filtered(store: ProposalStore) -> None:
    await store.propose(draft("p-old", "job-1", created_at="2026-01-01T00:00:00.000Z"))
    await store.propose(
        draft("p-new", "job-2", created_at="2026-01-02T00:00:00.000Z", tenant_id="other")
    )
    await store.update("p-old", status="approved")

    assert [p.id for p in await store.list()] == ["p-new", "p-old"]
    assert [p.id for p in await store.list("approved")] == ["p-old"]
    assert [p.id for p in await store.list("pending")] == ["p-new"]
    assert [p.id for p in await store.list(tenant_id="other")] == ["p-new"]
    assert await store.list("rejected") == []


async def test_update_sets_fields_and_stamps_the_time(store: ProposalStore) -> None:
    proposed = await store.propose(draft("p-1", created_at="2026-01-01T00:00:00.000Z"))

    updated = await store.update("p-1", status="rejected", review_note="No")

    assert (updated.status, updated.review_note) == ("rejected", "No")
    assert updated.updated_at > proposed.proposal.updated_at
    assert await store.get("p-1") == updated
    with pytest.raises(ProposalNotFound):
        await store.update("nope", status="approved")


async def test_a_decided_proposal_is_immutable(store: ProposalStore) -> None:
    await store.propose(draft("p-1"))
    async with store.deciding("p-1") as held:
        assert held.status == "pending"
        await store.update(held.id, status="approved")

    with pytest.raises(ProposalConflict, match="already approved"):
        await store.propose(draft("p-2"))
    with pytest.raises(ProposalConflict, match="already approved"):
        async with store.deciding("p-1"):
            pass
    with pytest.raises(ProposalNotFound):
        async with store.deciding("nope"):
            pass
    stored = await store.get("p-1")
    assert stored is not None and stored.title == "Document helpers"


async def test_a_failed_decision_leaves_the_proposal_pending(store: ProposalStore) -> None:
    await store.propose(draft("p-1"))

    with pytest.raises(RuntimeError, match="push failed"):
        async with store.deciding("p-1"):
            raise RuntimeError("push failed")

    async with store.deciding("p-1") as held:  # free again, still pending
        assert held.status == "pending"
    replaced = await store.propose(draft("p-2", title="Second try"))
    assert replaced.updated and replaced.proposal.id == "p-1"


async def test_one_decider_at_a_time_across_backends(pair: list[Stores]) -> None:
    await pair[0].proposals.propose(draft("p-1"))
    release = asyncio.Event()
    held = asyncio.Event()

    async def first() -> None:
        async with pair[0].proposals.deciding("p-1"):
            held.set()
            await release.wait()

    task = asyncio.create_task(first())
    async with asyncio.timeout(60):
        await held.wait()
    try:
        with pytest.raises(ProposalConflict, match="being decided"):
            async with pair[1].proposals.deciding("p-1"):
                pass
        with pytest.raises(ProposalConflict, match="being decided"):
            await pair[1].proposals.propose(draft("p-2"))
    finally:
        release.set()
        await task
    async with pair[1].proposals.deciding("p-1") as proposal:
        assert proposal.id == "p-1"


async def test_concurrent_deciders_one_wins(pair: list[Stores]) -> None:
    await pair[0].proposals.propose(draft("p-1"))
    winners: list[int] = []

    async def decide(n: int) -> None:
        async with pair[n % 2].proposals.deciding("p-1") as proposal:
            winners.append(n)
            await pair[n % 2].proposals.update(proposal.id, status="approved")

    outcomes = await asyncio.gather(*(decide(n) for n in range(8)), return_exceptions=True)

    assert len(winners) == 1
    assert all(isinstance(o, ProposalConflict) for n, o in enumerate(outcomes) if n != winners[0])
    stored = await pair[1].proposals.get("p-1")
    assert stored is not None and stored.status == "approved"


async def test_concurrent_first_proposals_make_one(pair: list[Stores]) -> None:
    results = await asyncio.gather(
        *(pair[n % 2].proposals.propose(draft(f"p-{n}", title=f"take {n}")) for n in range(8))
    )

    assert len({r.proposal.id for r in results}) == 1
    assert sum(not r.updated for r in results) == 1
    assert [p.id for p in await pair[1].proposals.list()] == [results[0].proposal.id]


async def test_an_abandoned_decision_expires(tmp_path: Path) -> None:
    async with open_backends("sqlite", tmp_path) as [backend]:
        await backend.proposals.propose(draft("p-1"))
        crashed = backend.proposals.deciding("p-1")
        await crashed.__aenter__()  # its process died: the block never ends
        with pytest.raises(ProposalConflict, match="being decided"):
            async with backend.proposals.deciding("p-1"):
                pass
        with sqlite3.connect(tmp_path / "state.db") as connection:  # an hour later
            connection.execute("UPDATE proposals SET claimed_at = claimed_at - 3600000")

        async with backend.proposals.deciding("p-1") as proposal:
            await backend.proposals.update(proposal.id, status="rejected")
        stored = await backend.proposals.get("p-1")
        assert stored is not None and stored.status == "rejected"


# --- proposals an older runner kept on disk -------------------------------------------------


def write_record(tenant: Path, proposal: Proposal) -> Path:
    file = tenant / "proposals" / proposal.id / "proposal.json"
    file.parent.mkdir(parents=True)
    file.write_text(json.dumps(proposal.to_json(), indent=2))
    return file


async def test_proposals_on_disk_are_imported_once(store: ProposalStore, tmp_path: Path) -> None:
    tenant = tmp_path / "tenant"
    older = draft("p-older", "job-1", created_at="2026-01-01T00:00:00.000Z")
    newer = draft("p-newer", "job-1", created_at="2026-01-02T00:00:00.000Z", title="Newer")
    decided = draft("p-decided", "job-2", status="approved", reviewed_by="alice")
    files = [write_record(tenant, p) for p in (older, newer, decided)]
    broken = tenant / "proposals" / "broken" / "proposal.json"
    broken.parent.mkdir()
    broken.write_text("{not json")

    first = await import_disk_proposals(store, tenant)
    second = await import_disk_proposals(store, tenant)

    assert (first, second) == (3, 0)
    assert {p.id: p for p in await store.list()} == {p.id: p for p in (older, newer, decided)}
    found = await store.find("job-1", "tenant")  # as before: the newer one is the job's
    assert found is not None and found.id == "p-newer"
    replaced = await store.propose(draft("p-again", "job-1", title="Replaced"))
    assert replaced.updated and replaced.proposal.id == "p-newer"
    with pytest.raises(ProposalConflict, match="already approved"):
        await store.propose(draft("p-again", "job-2"))
    for file in files:  # kept for people to read, never imported again
        assert not file.exists()
        assert json.loads(file.with_name("proposal.imported.json").read_text())["id"]
    assert broken.read_text() == "{not json"


async def test_an_interrupted_import_is_finished_without_doubles(
    store: ProposalStore, tmp_path: Path
) -> None:
    tenant = tmp_path / "tenant"
    proposal = draft("p-1")
    file = write_record(tenant, proposal)
    assert await store.adopt(proposal)  # stored, but the runner stopped before renaming

    assert await import_disk_proposals(store, tenant) == 0
    assert [p.id for p in await store.list()] == ["p-1"]
    assert file.with_name("proposal.imported.json").exists()
    assert await import_disk_proposals(store, tmp_path / "no-tenant") == 0  # nothing there
