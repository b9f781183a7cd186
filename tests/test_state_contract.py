"""The `StateBackend` contract, one suite run against every implementation.

`backend` runs each test on memory, SQLite (a real file under `tmp_path`), PostgreSQL
(the machine's server, a fresh database per test) and the hybrid runner's
`CloudStateBackend` (over SQLite, linked to a real cloud on the test's own database:
after each test, once everything is acknowledged, the cloud's mirror holds exactly the
local jobs and their log lines). The tests taking `shared` run on the stores several
processes can share (SQLite, PostgreSQL): there, two backend objects on one store stand
for two processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coro.domain.models import ConversationMessage, Job, LogEntry, WorkItem, iso_now
from coro.state.backend import JobExists, JobNotFound, JobQuery, StateBackend, StatusTotal
from coro.state.cloud.backend import CloudStateBackend
from coro.state.cloud.link import CloudLink
from coro.state.logbus import BusItem, StatusChange, Subscription
from coro.state.memory import MemoryStateBackend
from coro.state.postgres import PostgresStateBackend
from coro.state.rows import load_job
from coro.state.sqlite import SqliteStateBackend
from tests.cloud_helpers import Cloud, CloudFactory
from tests.hybrid_helpers import FAST, mirror_jobs, mirror_lines, pair, wait_state
from tests.pg import fresh_database

pytest_plugins = ("tests.cloud_fixtures",)

WORKFLOW = "workflows/x/workflow.md"
WAIT_LIMIT = 30  # a guard against hangs, not a timing assertion


def make_job(job_id: str, **fields: Any) -> Job:
    now = iso_now()
    values: dict[str, Any] = {
        "workflow_path": WORKFLOW,
        "status": "planning",
        "phase": "planning",
        "created_at": now,
        "updated_at": now,
    }
    values.update(fields)
    return Job(id=job_id, **values)


def at(second: int) -> str:
    """Distinct, increasing creation timestamps."""
    return f"2024-05-01T12:00:{second:02d}.000Z"


def add_work_item(name: str) -> Callable[[Job], None]:
    def mutate(job: Job) -> None:
        job.work_items.append(WorkItem(name=name))

    return mutate


def set_status(status: str) -> Callable[[Job], None]:
    def mutate(job: Job) -> None:
        job.status = status

    return mutate


def item_names(job: Job | None) -> list[str]:
    assert job is not None
    return sorted(item.name for item in job.work_items)


def pairs(entries: list[LogEntry]) -> list[tuple[int, str]]:
    return [(e.index, e.line) for e in entries]


@dataclass
class Store:
    """One storage; `make()` gives another backend object on it (another process's);
    `verify(backend)`, when set, checks a backend after its test."""

    kind: str
    make: Callable[[], StateBackend]
    verify: Callable[[StateBackend], Awaitable[None]] | None = None

    @contextlib.asynccontextmanager
    async def opened(self, count: int) -> AsyncIterator[list[StateBackend]]:
        backends = [self.make() for _ in range(count)]
        try:
            for backend in backends:
                await backend.open()
            yield backends
        finally:
            for backend in backends:
                await backend.close()


@contextlib.asynccontextmanager
async def store_of(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    if kind == "memory":
        yield Store(kind, MemoryStateBackend)
    elif kind == "sqlite":
        path = tmp_path / "home" / "nested" / "state.db"
        yield Store(kind, lambda: SqliteStateBackend(path))
    else:
        async with fresh_database() as url:
            yield Store(kind, lambda: PostgresStateBackend(url))


class LinkedCloudBackend(CloudStateBackend):
    """A `CloudStateBackend` that also starts and stops its link (a runner does that)."""

    async def open(self) -> None:
        await super().open()
        await self.link.start()
        await wait_state(self.link, "connected")

    async def close(self) -> None:
        await self.link.stop()
        await super().close()


@contextlib.asynccontextmanager
async def cloud_store(cloud_factory: CloudFactory, tmp_path: Path) -> AsyncIterator[Store]:
    async with cloud_factory() as cloud:
        paired = await pair(cloud)
        root = tmp_path / "home"

        def make() -> StateBackend:
            link = CloudLink(cloud.served.url, paired.token, cloud_dir=root / "cloud", timings=FAST)
            local = SqliteStateBackend(root / "state.db")
            return LinkedCloudBackend(local, link, root / "cloud")

        async def verify(backend: StateBackend) -> None:
            assert isinstance(backend, CloudStateBackend)
            await mirrors_local(backend, cloud, paired.team_id)

        yield Store("cloud", make, verify)


async def mirrors_local(backend: CloudStateBackend, cloud: Cloud, team_id: str) -> None:
    """Once acknowledged, the cloud holds exactly the local jobs and their lines."""
    async with asyncio.timeout(WAIT_LIMIT):
        await backend.flush()
    local, _ = await backend.local.list_jobs(JobQuery(limit=100_000))
    mirrored = await mirror_jobs(cloud, team_id)
    assert sorted(mirrored) == sorted(job.id for job in local)
    for job in local:
        assert load_job(mirrored[job.id]["doc"]) == job
        lines = pairs(await backend.local.read_logs(job.id))
        assert await mirror_lines(cloud, team_id, job.id) == lines


@dataclass(frozen=True)
class Kind:
    name: str
    cloud_factory: CloudFactory | None = None


@pytest.fixture(params=["memory", "sqlite", "postgres", "cloud"])
def store_kind(request: pytest.FixtureRequest) -> Kind:
    # a plain fixture: the cloud's fixtures set up here only for the cloud variant
    if request.param == "cloud":
        return Kind("cloud", request.getfixturevalue("cloud_factory"))
    return Kind(request.param)


@pytest.fixture
async def store(store_kind: Kind, tmp_path: Path) -> AsyncIterator[Store]:
    if store_kind.cloud_factory is not None:
        async with cloud_store(store_kind.cloud_factory, tmp_path) as found:
            yield found
        return
    async with store_of(store_kind.name, tmp_path) as found:
        yield found


@pytest.fixture
async def backend(store: Store) -> AsyncIterator[StateBackend]:
    async with store.opened(1) as (opened,):
        yield opened
        if store.verify is not None:
            await store.verify(opened)


@pytest.fixture(params=["sqlite", "postgres"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with store_of(request.param, tmp_path) as found:
        yield found


async def ids(backend: StateBackend, **query: Any) -> tuple[list[str], int]:
    page, total = await backend.list_jobs(JobQuery(**query))
    return [job.id for job in page], total


async def next_item(subscription: Subscription) -> BusItem:
    return await asyncio.wait_for(subscription.get(), WAIT_LIMIT)


async def lines_until(subscription: Subscription, last: int) -> list[tuple[int, str]]:
    """The lines the subscriber is offered, up to the one with index `last`."""
    seen: list[tuple[int, str]] = []
    while not seen or seen[-1][0] < last:
        item = await next_item(subscription)
        if isinstance(item, LogEntry):
            seen.append((item.index, item.line))
    return seen


# --- create / get ---------------------------------------------------------------------


async def test_create_then_get_returns_the_same_job(backend: StateBackend) -> None:
    job = make_job(
        "job-1",
        params={"description": "Fix login", "repo": "acme/web"},
        work_items=[WorkItem(name="a", status="in-progress", loop_count=2)],
        campaign_parent_id="camp-1",
    )
    await backend.create_job(job)

    stored = await backend.get_job("job-1")

    assert stored == job


async def test_a_job_with_unusual_text_is_kept_exactly(backend: StateBackend) -> None:
    job = make_job("job-1", params={"description": "nul \x00, emoji 🚀, quote ' \" \\"})
    await backend.create_job(job)

    assert await backend.get_job("job-1") == job
    assert await ids(backend, text="emoji 🚀") == (["job-1"], 1)


async def test_get_unknown_job_is_none(backend: StateBackend) -> None:
    assert await backend.get_job("nope") is None


async def test_create_duplicate_raises_job_exists_and_keeps_the_original(
    backend: StateBackend,
) -> None:
    await backend.create_job(make_job("job-1", status="planning"))

    with pytest.raises(JobExists) as raised:
        await backend.create_job(make_job("job-1", status="complete"))

    assert raised.value.job_id == "job-1"
    stored = await backend.get_job("job-1")
    assert stored is not None and stored.status == "planning"


async def test_stored_job_is_independent_of_callers_objects(backend: StateBackend) -> None:
    job = make_job("job-1")
    await backend.create_job(job)
    job.status = "changed-after-create"
    fetched = await backend.get_job("job-1")
    assert fetched is not None
    fetched.status = "changed-after-get"

    stored = await backend.get_job("job-1")

    assert stored is not None and stored.status == "planning"


# --- update ---------------------------------------------------------------------------


async def test_update_applies_mutation_and_stamps_updated_at(backend: StateBackend) -> None:
    old_stamp = "2000-01-01T00:00:00.000Z"
    await backend.create_job(make_job("job-1", created_at=old_stamp, updated_at=old_stamp))

    def mutate(job: Job) -> None:
        job.status = "implementing"
        job.phase_visits["implementing"] = 1

    updated, written = await backend.update_job("job-1", mutate)

    assert written is True
    assert updated.status == "implementing"
    assert updated.phase_visits == {"implementing": 1}
    assert updated.updated_at > old_stamp
    assert updated.created_at == old_stamp
    assert await backend.get_job("job-1") == updated


async def test_update_returning_false_writes_nothing(backend: StateBackend) -> None:
    stamp = "2000-01-01T00:00:00.000Z"
    original = make_job("job-1", updated_at=stamp)
    await backend.create_job(original)

    def mutate(job: Job) -> bool:
        job.status = "should-not-stick"
        return False

    returned, written = await backend.update_job("job-1", mutate, log=["t0 not logged"])

    assert written is False
    assert returned == original
    assert await backend.get_job("job-1") == original
    assert await backend.count_logs("job-1") == 0


async def test_update_whose_mutation_raises_writes_nothing(backend: StateBackend) -> None:
    original = make_job("job-1")
    await backend.create_job(original)

    def mutate(job: Job) -> None:
        job.status = "half-done"
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await backend.update_job("job-1", mutate)

    assert await backend.get_job("job-1") == original


async def test_update_unknown_job_raises_job_not_found(backend: StateBackend) -> None:
    with pytest.raises(JobNotFound) as raised:
        await backend.update_job("nope", add_work_item("x"))
    assert raised.value.job_id == "nope"


async def test_concurrent_updates_of_one_job_lose_nothing(backend: StateBackend) -> None:
    await backend.create_job(make_job("job-1"))

    await asyncio.gather(
        *(backend.update_job("job-1", add_work_item(f"item-{n}")) for n in range(50))
    )

    assert item_names(await backend.get_job("job-1")) == sorted(f"item-{n}" for n in range(50))


async def test_updates_change_what_list_filters_see(backend: StateBackend) -> None:
    await backend.create_job(make_job("job-1", status="planning"))

    def finish(job: Job) -> None:
        job.status = "complete"
        job.params["description"] = "Shiny new description"

    await backend.update_job("job-1", finish)

    assert await ids(backend, statuses=["planning"]) == ([], 0)
    assert await ids(backend, statuses=["complete"]) == (["job-1"], 1)
    assert await ids(backend, text="shiny") == (["job-1"], 1)


async def test_an_update_appends_its_log_lines_after_the_others(backend: StateBackend) -> None:
    await backend.create_job(make_job("job-1"))
    await backend.append_logs("job-1", ["t0 first"])

    _, written = await backend.update_job("job-1", set_status("coding"), log=["t1 moved", "t2 on"])

    assert written is True
    assert pairs(await backend.read_logs("job-1")) == [
        (0, "t0 first"),
        (1, "t1 moved"),
        (2, "t2 on"),
    ]
    assert await backend.count_logs("job-1") == 3


# --- listing --------------------------------------------------------------------------


async def seed_listing(backend: StateBackend) -> None:
    jobs = [
        make_job(
            "fix-login-1",
            created_at=at(1),
            params={"description": "Fix the Login bug", "repo": "acme/web"},
        ),
        make_job("campaign-2", type="campaign", status="awaiting-children", created_at=at(2)),
        make_job(
            "child-3",
            created_at=at(3),
            campaign_parent_id="campaign-2",
            workflow_path="workflows/y/workflow.md",
            params={"repo": "acme/api"},
        ),
        make_job("done-4", status="complete", created_at=at(4)),
        make_job("failed-5", status="failed", created_at=at(5), campaign_parent_id="campaign-2"),
    ]
    for job in jobs:
        await backend.create_job(job)


async def test_list_jobs_newest_first_with_total(backend: StateBackend) -> None:
    await seed_listing(backend)

    assert await ids(backend) == (
        ["failed-5", "done-4", "child-3", "campaign-2", "fix-login-1"],
        5,
    )


async def test_list_jobs_filters(backend: StateBackend) -> None:
    await seed_listing(backend)

    assert await ids(backend, statuses=["complete", "failed"]) == (["failed-5", "done-4"], 2)
    assert await ids(backend, exclude_statuses=["planning", "awaiting-children"]) == (
        ["failed-5", "done-4"],
        2,
    )
    assert await ids(backend, type="campaign") == (["campaign-2"], 1)
    assert await ids(backend, workflow_path="workflows/y/workflow.md") == (["child-3"], 1)
    assert await ids(backend, campaign_parent_id="campaign-2") == (["failed-5", "child-3"], 2)
    assert await ids(backend, statuses=["planning"], campaign_parent_id="campaign-2") == (
        ["child-3"],
        1,
    )
    assert await ids(backend, statuses=["no-such-status"]) == ([], 0)


async def test_list_jobs_text_matches_id_description_and_repo(backend: StateBackend) -> None:
    await seed_listing(backend)

    assert await ids(backend, text="LOGIN bug") == (["fix-login-1"], 1)  # description
    assert await ids(backend, text="acme/") == (["child-3", "fix-login-1"], 2)  # repo
    assert await ids(backend, text="DONE-") == (["done-4"], 1)  # id
    # plain substring: no SQL wildcards
    assert await ids(backend, text="%") == ([], 0)
    assert await ids(backend, text="d_ne") == ([], 0)


async def test_list_jobs_limit_offset(backend: StateBackend) -> None:
    await seed_listing(backend)

    assert await ids(backend, limit=2) == (["failed-5", "done-4"], 5)
    assert await ids(backend, limit=2, offset=2) == (["child-3", "campaign-2"], 5)
    assert await ids(backend, limit=2, offset=4) == (["fix-login-1"], 5)
    assert await ids(backend, limit=2, offset=10) == ([], 5)
    assert await ids(backend, limit=0) == ([], 5)
    assert await ids(backend, statuses=["planning"], limit=1, offset=1) == (["fix-login-1"], 2)


async def test_list_jobs_same_timestamp_newest_created_first(backend: StateBackend) -> None:
    for job_id in ("first", "second", "third"):
        await backend.create_job(make_job(job_id, created_at=at(7)))

    assert await ids(backend) == (["third", "second", "first"], 3)


async def test_jobs_with_status_oldest_first(backend: StateBackend) -> None:
    await seed_listing(backend)

    found = await backend.jobs_with_status({"planning", "failed"})

    assert [job.id for job in found] == ["fix-login-1", "child-3", "failed-5"]
    assert await backend.jobs_with_status(frozenset({"nothing"})) == []
    assert await backend.jobs_with_status(set()) == []


async def test_status_totals_count_jobs_and_add_up_their_cost(backend: StateBackend) -> None:
    assert await backend.status_totals() == {}
    for n, (status, cost) in enumerate([("complete", 0.5), ("complete", 0.25), ("coding", 0)]):
        job = make_job(f"job-{n}", status=status)
        job.token_usage.total_cost_usd = cost
        await backend.create_job(job)
    assert await backend.status_totals() == {
        "complete": StatusTotal(jobs=2, cost_usd=0.75),
        "coding": StatusTotal(jobs=1, cost_usd=0.0),
    }


# --- transcripts ----------------------------------------------------------------------


async def test_a_transcript_is_kept_apart_from_its_job(backend: StateBackend) -> None:
    await backend.create_job(make_job("job-1"))
    first = [
        ConversationMessage(role="user", content="Begin"),
        ConversationMessage(role="assistant", content="On it"),
    ]
    await backend.append_transcript("job-1", first)
    await backend.append_transcript("job-1", [])
    await backend.append_transcript("job-1", [ConversationMessage(role="user", content="More")])

    await backend.update_job("job-1", set_status("coding"))
    assert [m.content for m in await backend.read_transcript("job-1")] == [
        "Begin",
        "On it",
        "More",
    ]
    stored = await backend.get_job("job-1")
    assert stored is not None and stored.conversation_history == []
    await backend.clear_transcript("job-1")
    assert await backend.read_transcript("job-1") == []
    assert await backend.read_transcript("job-2") == []


async def test_replacing_a_transcript_keeps_only_the_new_messages(backend: StateBackend) -> None:
    await backend.append_transcript(
        "job-1", [ConversationMessage(role="user", content=f"long {n}") for n in range(5)]
    )

    await backend.replace_transcript(
        "job-1", [ConversationMessage(role="user", content="summary \x00 of it")]
    )
    await backend.append_transcript("job-1", [ConversationMessage(role="assistant", content="ok")])

    assert [m.content for m in await backend.read_transcript("job-1")] == [
        "summary \x00 of it",
        "ok",
    ]
    await backend.replace_transcript("job-1", [])
    assert await backend.read_transcript("job-1") == []


async def test_a_stored_job_is_read_with_its_transcript(backend: StateBackend) -> None:
    assert await backend.read_stored_job("job-1") is None
    await backend.create_job(make_job("job-1"))
    messages = [ConversationMessage(role="user", content=f"say {n}") for n in range(3)]
    await backend.append_transcript("job-1", messages)
    await backend.update_job("job-1", add_work_item("build"))

    stored = await backend.read_stored_job("job-1")
    assert stored is not None
    job = await backend.get_job("job-1")
    assert job is not None
    assert stored.job() == job.model_copy(update={"conversation_history": messages})
    assert await backend.read_stored_job("job-1") == stored, "nothing changed: the same text"

    await backend.update_job("job-1", set_status("coding"))
    moved = await backend.read_stored_job("job-1")
    assert moved is not None and moved != stored and moved.job().status == "coding"
    replaced = [ConversationMessage(role="user", content=f"said {n}") for n in range(3)]
    await backend.replace_transcript("job-1", replaced)
    again = await backend.read_stored_job("job-1")
    assert again is not None and again != moved and again.job().conversation_history == replaced


async def test_concurrent_transcript_appends_keep_every_message(backend: StateBackend) -> None:
    async def say(n: int) -> None:
        await backend.append_transcript(
            "job-1", [ConversationMessage(role="user", content=f"{n}-{k}") for k in range(3)]
        )

    await asyncio.gather(*(say(n) for n in range(10)))

    contents = [m.content for m in await backend.read_transcript("job-1")]
    assert sorted(contents) == sorted(f"{n}-{k}" for n in range(10) for k in range(3))
    for n in range(10):  # each call's messages stay together and in order
        start = contents.index(f"{n}-0")
        assert contents[start : start + 3] == [f"{n}-0", f"{n}-1", f"{n}-2"]


# --- logs -----------------------------------------------------------------------------


async def test_append_logs_indexes_are_contiguous_across_calls(backend: StateBackend) -> None:
    first = await backend.append_logs("job-1", ["t0 a", "t1 b"])
    second = await backend.append_logs("job-1", ["t2 c"])
    none = await backend.append_logs("job-1", [])
    other = await backend.append_logs("job-2", ["t0 other"])

    assert pairs(first) == [(0, "t0 a"), (1, "t1 b")]
    assert pairs(second) == [(2, "t2 c")]
    assert none == []
    assert pairs(other) == [(0, "t0 other")]
    assert await backend.count_logs("job-1") == 3
    assert await backend.count_logs("job-2") == 1
    assert pairs(await backend.read_logs("job-1")) == [(0, "t0 a"), (1, "t1 b"), (2, "t2 c")]


async def test_concurrent_appenders_get_distinct_contiguous_indexes(
    backend: StateBackend,
) -> None:
    async def append(writer: int) -> list[LogEntry]:
        return await backend.append_logs("job-1", [f"writer {writer} line {n}" for n in range(5)])

    results = await asyncio.gather(*(append(w) for w in range(20)))

    for entries in results:  # each call's lines are consecutive and in order
        indexes = [e.index for e in entries]
        assert indexes == list(range(indexes[0], indexes[0] + 5))
    all_indexes = sorted(e.index for entries in results for e in entries)
    assert all_indexes == list(range(100))
    stored = await backend.read_logs("job-1")
    assert [e.index for e in stored] == list(range(100))
    returned = {e.index: e.line for entries in results for e in entries}
    assert {e.index: e.line for e in stored} == returned
    assert await backend.count_logs("job-1") == 100


async def test_concurrent_appenders_of_many_jobs(backend: StateBackend) -> None:
    async def log_job(job: int) -> None:
        for n in range(10):
            await backend.append_logs(f"job-{job}", [f"line {n}"])

    await asyncio.gather(*(log_job(job) for job in range(30)))

    for job in range(30):
        stored = await backend.read_logs(f"job-{job}")
        assert pairs(stored) == [(n, f"line {n}") for n in range(10)]


async def test_read_logs_after_and_limit(backend: StateBackend) -> None:
    await backend.append_logs("job-1", [f"line {n}" for n in range(6)])

    assert pairs(await backend.read_logs("job-1", after=3)) == [(4, "line 4"), (5, "line 5")]
    assert pairs(await backend.read_logs("job-1", limit=2)) == [(0, "line 0"), (1, "line 1")]
    assert pairs(await backend.read_logs("job-1", after=1, limit=2)) == [
        (2, "line 2"),
        (3, "line 3"),
    ]
    assert await backend.read_logs("job-1", after=5) == []
    assert await backend.read_logs("job-1", after=2**63 - 1) == []  # the SSE resume bound
    assert await backend.read_logs("job-1", after=2, limit=0) == []
    assert await backend.read_logs("unknown") == []
    assert await backend.count_logs("unknown") == 0


# --- the bus: what a backend stores, its subscribers hear ----------------------------


async def test_appended_lines_and_status_changes_reach_subscribers(
    backend: StateBackend,
) -> None:
    await backend.create_job(make_job("job-1"))
    subscription = backend.bus.subscribe("job-1")
    subscription.replayed(-1)

    await backend.append_logs("job-1", ["t0 hello"])
    await backend.update_job("job-1", add_work_item("same status: no announcement"))
    await backend.update_job("job-1", set_status("complete"), log=["t1 done"])

    heard: list[BusItem] = []
    while StatusChange("complete") not in heard:
        item = await next_item(subscription)
        if item != StatusChange("planning"):  # a catch-up may announce the status it had
            heard.append(item)
    assert heard == [
        LogEntry(index=0, line="t0 hello"),
        LogEntry(index=1, line="t1 done"),  # the lines of an update come before its status
        StatusChange("complete"),
    ]
    subscription.close()


# --- several backend objects (processes) on one store ----------------------------------


async def test_data_survives_close_and_reopen(shared: Store) -> None:
    async with shared.opened(1) as (first,):
        await first.create_job(make_job("job-1", params={"description": "persist me"}))
        updated, _ = await first.update_job("job-1", add_work_item("kept"))
        await first.append_logs("job-1", ["line 0", "line 1"])
        await first.append_transcript("job-1", [ConversationMessage(role="user", content="hi")])

    async with shared.opened(1) as (second,):
        assert await second.get_job("job-1") == updated
        assert await ids(second, text="persist") == (["job-1"], 1)
        assert [e.line for e in await second.read_logs("job-1")] == ["line 0", "line 1"]
        assert [m.content for m in await second.read_transcript("job-1")] == ["hi"]
        # numbering continues from what is stored
        assert [e.index for e in await second.append_logs("job-1", ["line 2"])] == [2]
        assert await second.count_logs("job-1") == 3


async def test_backends_opening_a_new_store_at_once(shared: Store) -> None:
    backends = [shared.make() for _ in range(3)]

    await asyncio.gather(*(backend.open() for backend in backends))
    try:
        await backends[0].create_job(make_job("job-1"))
        for backend in backends:
            assert await ids(backend) == (["job-1"], 1)
    finally:
        for backend in backends:
            await backend.close()


async def test_two_backends_updating_one_job_lose_no_field(shared: Store) -> None:
    async with shared.opened(2) as (left, right):
        await left.create_job(make_job("job-1"))
        await right.update_job("job-1", add_work_item("warm the cache"))

        await asyncio.gather(
            *(
                (left if n % 2 else right).update_job("job-1", add_work_item(f"item-{n}"))
                for n in range(40)
            )
        )

        expected = sorted(["warm the cache", *(f"item-{n}" for n in range(40))])
        for backend in (left, right):
            assert item_names(await backend.get_job("job-1")) == expected


async def test_a_stored_job_shows_another_backends_writes(shared: Store) -> None:
    async with shared.opened(2) as (left, right):
        await left.create_job(make_job("job-1"))
        await left.append_transcript("job-1", [ConversationMessage(role="user", content="a")])
        assert await left.read_stored_job("job-1") is not None  # left now has a copy

        await right.update_job("job-1", add_work_item("right"))
        await right.replace_transcript("job-1", [ConversationMessage(role="user", content="b")])

        stored = await left.read_stored_job("job-1")
        assert stored is not None
        assert item_names(stored.job()) == ["right"]
        assert [m.content for m in stored.job().conversation_history] == ["b"]


async def test_an_update_after_another_backends_sees_its_fields(shared: Store) -> None:
    async with shared.opened(2) as (left, right):
        await left.create_job(make_job("job-1"))
        await left.update_job("job-1", add_work_item("left-1"))  # left now has a copy

        await right.update_job("job-1", add_work_item("right"))
        updated, written = await left.update_job("job-1", add_work_item("left-2"))

        assert written is True
        assert item_names(updated) == ["left-1", "left-2", "right"]
        assert item_names(await right.get_job("job-1")) == ["left-1", "left-2", "right"]


async def test_a_declining_mutation_is_decided_on_the_stored_job(shared: Store) -> None:
    async with shared.opened(2) as (left, right):
        await left.create_job(make_job("job-1", status="planning"))
        await left.get_job("job-1")  # left has the planning copy
        await right.update_job("job-1", set_status("complete"))

        def only_when_complete(job: Job) -> bool:
            if job.status != "complete":
                return False
            job.work_items.append(WorkItem(name="after-complete"))
            return True

        updated, written = await left.update_job("job-1", only_when_complete)

        assert written is True
        assert item_names(updated) == ["after-complete"]


async def test_two_backends_appending_keep_indexes_contiguous(shared: Store) -> None:
    async with shared.opened(2) as (left, right):
        assert [e.index for e in await left.append_logs("job-1", ["a", "b"])] == [0, 1]
        assert [e.index for e in await right.append_logs("job-1", ["c"])] == [2]
        assert [e.index for e in await left.append_logs("job-1", ["d"])] == [3]

        async def append(writer: int) -> list[LogEntry]:
            backend = left if writer % 2 else right
            return await backend.append_logs(
                "job-1", [f"writer {writer} line {n}" for n in range(5)]
            )

        results = await asyncio.gather(*(append(w) for w in range(20)))

        for entries in results:
            indexes = [e.index for e in entries]
            assert indexes == list(range(indexes[0], indexes[0] + 5))
        assert sorted(e.index for entries in results for e in entries) == list(range(4, 104))
        stored = await right.read_logs("job-1")
        assert [e.index for e in stored] == list(range(104))
        assert pairs(stored[:4]) == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
        assert await left.count_logs("job-1") == 104


async def test_writes_are_visible_to_another_backend_once_returned(shared: Store) -> None:
    async with shared.opened(2) as (writer, reader):
        await writer.create_job(make_job("job-1"))
        await reader.get_job("job-1")  # the reader has an older copy
        await asyncio.gather(*(writer.append_logs(f"job-{n}", ["hello"]) for n in range(10)))
        await writer.update_job("job-1", set_status("coding"))

        for n in range(10):
            assert await reader.count_logs(f"job-{n}") == 1
        stored = await reader.get_job("job-1")
        assert stored is not None and stored.status == "coding"
        assert await ids(reader, statuses=["coding"]) == (["job-1"], 1)


async def test_a_failing_append_fails_only_its_caller(shared: Store) -> None:
    bad_lines: Any = [None]
    async with shared.opened(1) as (backend,):
        results = await asyncio.gather(
            backend.append_logs("job-1", ["first"]),
            backend.append_logs("job-2", bad_lines),
            backend.append_logs("job-1", ["second"]),
            return_exceptions=True,
        )

        assert isinstance(results[1], Exception)
        assert pairs(await backend.read_logs("job-1")) == [(0, "first"), (1, "second")]
        assert await backend.count_logs("job-2") == 0
        assert pairs(await backend.append_logs("job-2", ["ok"])) == [(0, "ok")]


async def test_a_line_appended_by_one_backend_reaches_anothers_subscriber(
    shared: Store,
) -> None:
    async with shared.opened(2) as (writer, watcher):
        await writer.create_job(make_job("job-1"))
        await writer.append_logs("job-1", ["t0 before the subscriber"])
        subscription = watcher.bus.subscribe("job-1")
        replayed = await watcher.read_logs("job-1")
        subscription.replayed(replayed[-1].index)

        await writer.append_logs("job-1", ["t1 live", "t2 live"])
        assert await lines_until(subscription, 2) == [(1, "t1 live"), (2, "t2 live")]

        await writer.update_job("job-1", set_status("complete"), log=["t3 finished"])
        assert await lines_until(subscription, 3) == [(3, "t3 finished")]
        assert await next_item(subscription) == StatusChange("complete")
        subscription.close()


async def test_a_subscriber_hears_lines_committed_while_it_replayed(shared: Store) -> None:
    async with shared.opened(2) as (writer, watcher):
        await writer.append_logs("job-1", [f"t{n} old" for n in range(3)])
        subscription = watcher.bus.subscribe("job-1")
        replayed = await watcher.read_logs("job-1")
        # committed after the replay read, before the subscriber said where it is
        await writer.append_logs("job-1", ["t3 in between"])

        subscription.replayed(replayed[-1].index)

        assert await lines_until(subscription, 3) == [(3, "t3 in between")]
        subscription.close()
