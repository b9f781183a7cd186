"""Contract tests of `StateBackend`, run against every implementation.

The SQLite backend uses a real database file under `tmp_path`; the tests marked
sqlite-only cover what only a durable, shareable store can do (reopening, several
backends on one file, migrations).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from coro.domain.models import Job, WorkItem, iso_now
from coro.state.backend import JobExists, JobNotFound, JobQuery, StateBackend
from coro.state.memory import MemoryStateBackend
from coro.state.sqlite import SqliteStateBackend, current_revision, upgrade_sqlite

WORKFLOW = "workflows/x/workflow.md"


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


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "nested" / "state.db"


@pytest.fixture(params=["memory", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateBackend]:
    store: StateBackend
    if request.param == "memory":
        store = MemoryStateBackend()
    else:
        store = SqliteStateBackend(db_path(tmp_path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[SqliteStateBackend]:
    store = SqliteStateBackend(db_path(tmp_path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def ids(backend: StateBackend, **query: Any) -> tuple[list[str], int]:
    page, total = await backend.list_jobs(JobQuery(**query))
    return [job.id for job in page], total


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

    returned, written = await backend.update_job("job-1", mutate)

    assert written is False
    assert returned == original
    assert await backend.get_job("job-1") == original


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

    stored = await backend.get_job("job-1")
    assert stored is not None
    assert sorted(item.name for item in stored.work_items) == sorted(f"item-{n}" for n in range(50))


async def test_updates_change_what_list_filters_see(backend: StateBackend) -> None:
    await backend.create_job(make_job("job-1", status="planning"))

    def finish(job: Job) -> None:
        job.status = "complete"
        job.params["description"] = "Shiny new description"

    await backend.update_job("job-1", finish)

    assert await ids(backend, statuses=["planning"]) == ([], 0)
    assert await ids(backend, statuses=["complete"]) == (["job-1"], 1)
    assert await ids(backend, text="shiny") == (["job-1"], 1)


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


# --- logs -----------------------------------------------------------------------------


async def test_append_logs_indexes_are_contiguous_across_calls(backend: StateBackend) -> None:
    first = await backend.append_logs("job-1", ["t0 a", "t1 b"])
    second = await backend.append_logs("job-1", ["t2 c"])
    none = await backend.append_logs("job-1", [])
    other = await backend.append_logs("job-2", ["t0 other"])

    assert [(e.index, e.line) for e in first] == [(0, "t0 a"), (1, "t1 b")]
    assert [(e.index, e.line) for e in second] == [(2, "t2 c")]
    assert none == []
    assert [(e.index, e.line) for e in other] == [(0, "t0 other")]
    assert await backend.count_logs("job-1") == 3
    assert await backend.count_logs("job-2") == 1
    assert [(e.index, e.line) for e in await backend.read_logs("job-1")] == [
        (0, "t0 a"),
        (1, "t1 b"),
        (2, "t2 c"),
    ]


async def test_concurrent_appenders_get_distinct_contiguous_indexes(
    backend: StateBackend,
) -> None:
    async def append(writer: int) -> list[Any]:
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
        assert [(e.index, e.line) for e in stored] == [(n, f"line {n}") for n in range(10)]


async def test_read_logs_after_and_limit(backend: StateBackend) -> None:
    await backend.append_logs("job-1", [f"line {n}" for n in range(6)])

    def lines(entries: list[Any]) -> list[tuple[int, str]]:
        return [(e.index, e.line) for e in entries]

    assert lines(await backend.read_logs("job-1", after=3)) == [(4, "line 4"), (5, "line 5")]
    assert lines(await backend.read_logs("job-1", limit=2)) == [(0, "line 0"), (1, "line 1")]
    assert lines(await backend.read_logs("job-1", after=1, limit=2)) == [
        (2, "line 2"),
        (3, "line 3"),
    ]
    assert await backend.read_logs("job-1", after=5) == []
    assert await backend.read_logs("job-1", after=2, limit=0) == []
    assert await backend.read_logs("unknown") == []
    assert await backend.count_logs("unknown") == 0


# --- sqlite only: durability, sharing, migrations -------------------------------------


async def test_sqlite_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    first = SqliteStateBackend(path)
    await first.open()
    await first.create_job(make_job("job-1", params={"description": "persist me"}))
    updated, _ = await first.update_job("job-1", add_work_item("kept"))
    await first.append_logs("job-1", ["line 0", "line 1"])
    await first.close()

    second = SqliteStateBackend(path)
    await second.open()
    try:
        assert await second.get_job("job-1") == updated
        assert await ids(second, text="persist") == (["job-1"], 1)
        assert [e.line for e in await second.read_logs("job-1")] == ["line 0", "line 1"]
        # numbering continues from what is stored
        appended = await second.append_logs("job-1", ["line 2"])
        assert [e.index for e in appended] == [2]
        assert await second.count_logs("job-1") == 3
    finally:
        await second.close()


async def test_sqlite_two_backends_on_one_file_lose_no_update(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    left, right = SqliteStateBackend(path), SqliteStateBackend(path)
    await left.open()
    await right.open()
    try:
        await left.create_job(make_job("job-1"))

        await asyncio.gather(
            *(
                (left if n % 2 else right).update_job("job-1", add_work_item(f"item-{n}"))
                for n in range(40)
            )
        )

        for store in (left, right):
            stored = await store.get_job("job-1")
            assert stored is not None
            assert sorted(item.name for item in stored.work_items) == sorted(
                f"item-{n}" for n in range(40)
            )
    finally:
        await left.close()
        await right.close()


async def test_sqlite_two_backends_appending_in_turn_keep_indexes_contiguous(
    tmp_path: Path,
) -> None:
    path = db_path(tmp_path)
    left, right = SqliteStateBackend(path), SqliteStateBackend(path)
    await left.open()
    await right.open()
    try:
        assert [e.index for e in await left.append_logs("job-1", ["a", "b"])] == [0, 1]
        assert [e.index for e in await right.append_logs("job-1", ["c"])] == [2]
        assert [e.index for e in await left.append_logs("job-1", ["d"])] == [3]

        stored = await right.read_logs("job-1")
        assert [(e.index, e.line) for e in stored] == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    finally:
        await left.close()
        await right.close()


async def test_sqlite_appends_are_visible_to_another_backend_once_returned(
    tmp_path: Path,
) -> None:
    path = db_path(tmp_path)
    writer, reader = SqliteStateBackend(path), SqliteStateBackend(path)
    await writer.open()
    await reader.open()
    try:
        await asyncio.gather(*(writer.append_logs(f"job-{n}", ["hello"]) for n in range(10)))

        for n in range(10):
            assert await reader.count_logs(f"job-{n}") == 1
    finally:
        await writer.close()
        await reader.close()


async def test_sqlite_a_failing_append_fails_only_its_caller(
    sqlite_backend: SqliteStateBackend,
) -> None:
    bad_lines: Any = [None]

    results = await asyncio.gather(
        sqlite_backend.append_logs("job-1", ["first"]),
        sqlite_backend.append_logs("job-2", bad_lines),
        sqlite_backend.append_logs("job-1", ["second"]),
        return_exceptions=True,
    )

    assert isinstance(results[1], Exception)
    assert [(e.index, e.line) for e in await sqlite_backend.read_logs("job-1")] == [
        (0, "first"),
        (1, "second"),
    ]
    assert await sqlite_backend.count_logs("job-2") == 0


async def test_sqlite_open_is_idempotent(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    first = SqliteStateBackend(path)
    await first.open()
    await first.create_job(make_job("job-1"))
    await first.close()
    revision = current_revision(path)

    # migrating again (a second open, or a direct upgrade) changes nothing
    upgrade_sqlite(path)
    second = SqliteStateBackend(path)
    await second.open()
    try:
        assert current_revision(path) == revision is not None
        assert await ids(second) == (["job-1"], 1)
    finally:
        await second.close()


async def test_sqlite_backends_opening_a_new_file_at_once(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    stores = [SqliteStateBackend(path) for _ in range(3)]

    await asyncio.gather(*(store.open() for store in stores))
    try:
        await stores[0].create_job(make_job("job-1"))
        for store in stores:
            assert await ids(store) == (["job-1"], 1)
    finally:
        for store in stores:
            await store.close()


async def test_sqlite_database_is_in_wal_mode(sqlite_backend: SqliteStateBackend) -> None:
    await sqlite_backend.create_job(make_job("job-1"))

    with sqlite3.connect(sqlite_backend.path) as connection:
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()

    assert mode == "wal"


def test_sqlite_migrations_produce_the_schema_the_queries_use(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from coro.state.schema import metadata

    path = tmp_path / "state.db"
    upgrade_sqlite(path)
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
            (ddl,) = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'job_logs'"
            ).one()
    finally:
        engine.dispose()

    assert diff == []
    assert "WITHOUT ROWID" in ddl


async def test_status_totals_count_jobs_and_add_up_their_cost(backend: StateBackend) -> None:
    from coro.state.backend import StatusTotal

    assert await backend.status_totals() == {}
    for n, (status, cost) in enumerate([("complete", 0.5), ("complete", 0.25), ("coding", 0)]):
        job = make_job(f"job-{n}", status=status)
        job.token_usage.total_cost_usd = cost
        await backend.create_job(job)
    assert await backend.status_totals() == {
        "complete": StatusTotal(jobs=2, cost_usd=0.75),
        "coding": StatusTotal(jobs=1, cost_usd=0.0),
    }


async def test_a_transcript_is_kept_apart_from_its_job(backend: StateBackend) -> None:
    from coro.domain.models import ConversationMessage

    await backend.create_job(make_job("job-1"))
    first = [
        ConversationMessage(role="user", content="Begin"),
        ConversationMessage(role="assistant", content="On it"),
    ]
    await backend.append_transcript("job-1", first)
    await backend.append_transcript("job-1", [])
    await backend.append_transcript("job-1", [ConversationMessage(role="user", content="More")])

    def touch(job: Job) -> None:
        job.phase = "coding"

    await backend.update_job("job-1", touch)
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


def test_migration_moves_transcripts_out_of_job_documents(tmp_path: Path) -> None:
    import json

    from alembic import command
    from sqlalchemy import create_engine, event

    from coro.state.sqlite import alembic_config, configure_sqlite_connection

    path = tmp_path / "state.db"
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", configure_sqlite_connection)
    job = make_job("job-1")
    doc = json.loads(job.model_dump_json(by_alias=True))
    doc["conversationHistory"] = [
        {"role": "user", "content": "Begin"},
        {"role": "assistant", "content": "Done"},
    ]
    try:
        with engine.begin() as connection:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0002")  # a database written before this migration
            connection.exec_driver_sql(
                "INSERT INTO jobs (id, type, status, workflow_path, search_text, created_at, "
                "updated_at, version, doc) VALUES (?, 'job', 'planning', ?, '', ?, ?, 1, ?)",
                ("job-1", job.workflow_path, job.created_at, job.updated_at, json.dumps(doc)),
            )
    finally:
        engine.dispose()

    upgrade_sqlite(path)
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT seq, message FROM job_transcripts WHERE job_id = 'job-1' ORDER BY seq"
        ).fetchall()
        (stored_doc,) = connection.execute("SELECT doc FROM jobs WHERE id = 'job-1'").fetchone()
    assert [(seq, json.loads(message)["content"]) for seq, message in rows] == [
        (0, "Begin"),
        (1, "Done"),
    ]
    assert "conversationHistory" not in json.loads(stored_doc)
