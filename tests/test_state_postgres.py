"""What only the PostgreSQL backend does: its migrations, its text rules, its listener,
its secrets — and two real processes on one database (issue #11).

The behaviour every backend shares is the contract suite (tests/test_state_contract.py),
which runs on PostgreSQL too.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from coro.config import CoroConfig, CoroHome
from coro.domain.models import LogEntry
from coro.state import postgres
from coro.state.factory import state_backend
from coro.state.postgres import PostgresStateBackend, current_revision, upgrade_postgres
from tests.pg import fresh_database
from tests.test_state_contract import lines_until, make_job

REPO_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pa55-w0rd-never-shown"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def backend(pg_url: str) -> AsyncIterator[PostgresStateBackend]:
    store = PostgresStateBackend(pg_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@")


async def test_migrations_produce_the_schema_the_queries_use(pg_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = make_url(pg_url)
    await asyncio.to_thread(upgrade_postgres, url)
    revision = await asyncio.to_thread(current_revision, url)
    await asyncio.to_thread(upgrade_postgres, url)  # migrating again changes nothing

    def diff(connection: Connection) -> list[object]:
        found: list[object] = compare_metadata(
            MigrationContext.configure(connection), postgres.metadata
        )
        return found

    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()
    assert revision is not None
    assert await asyncio.to_thread(current_revision, url) == revision


async def test_nul_characters_in_lines_are_stored_as_replacement_characters(
    backend: PostgresStateBackend,
) -> None:
    appended = await backend.append_logs("job-1", ["binary \x00 output"])

    assert appended == [LogEntry(index=0, line="binary \ufffd output")]
    assert await backend.read_logs("job-1") == appended


async def test_postgresql_urls_build_the_postgres_backend(pg_url: str, tmp_path: Path) -> None:
    home = CoroHome(tmp_path)
    plain = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    backends = [
        state_backend(home, CoroConfig.model_validate({"state": {"url": url}}))
        for url in (pg_url, plain)
    ]
    for backend in backends:
        assert isinstance(backend, PostgresStateBackend)
        await backend.open()
    try:
        await backends[0].create_job(make_job("job-1"))
        assert await backends[1].get_job("job-1") is not None  # the same database
    finally:
        for backend in backends:
            await backend.close()


async def test_the_password_of_the_url_never_shows(pg_url: str, tmp_path: Path) -> None:
    wrong_database = with_password(pg_url).rsplit("/", 1)[0] + "/no_such_database"
    nobody_listens = with_password(pg_url).replace(":5432/", ":9/")
    in_the_query = f"{pg_url.rsplit('/', 1)[0]}/no_such_database?password={PASSWORD}"
    home = CoroHome(tmp_path)

    for url in (wrong_database, nobody_listens, in_the_query):
        backend = state_backend(home, CoroConfig.model_validate({"state": {"url": url}}))
        assert PASSWORD not in repr(backend)
        with pytest.raises(RuntimeError) as raised:
            await backend.open()
        shown = "".join(traceback.format_exception(raised.value))
        assert "127.0.0.1" in shown  # what failed is named
        assert PASSWORD not in shown
    with pytest.raises(ValueError) as refused:
        PostgresStateBackend(f"postgresql://postgres:{PASSWORD}@127.0.0.1:notaport/db")
    assert PASSWORD not in str(refused.value)


async def test_the_listener_reconnects_and_catches_up_what_it_missed(pg_url: str) -> None:
    writer, watcher = PostgresStateBackend(pg_url), PostgresStateBackend(pg_url)
    await writer.open()
    await watcher.open()
    try:
        subscription = watcher.bus.subscribe("job-1")
        subscription.replayed(-1)  # the watcher starts listening
        await writer.append_logs("job-1", ["t0 heard"])
        assert await lines_until(subscription, 0) == [(0, "t0 heard")]
        server = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
        try:  # the watcher's LISTEN connection drops (a server restart, a network cut)
            dropped = await server.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'coro-listener' AND datname = current_database()"
            )
        finally:
            await server.close()
        assert dropped == 1

        await writer.append_logs("job-1", ["t1 while it reconnects"])

        assert await lines_until(subscription, 1) == [(1, "t1 while it reconnects")]
        await writer.append_logs("job-1", ["t2 after"])
        assert await lines_until(subscription, 2) == [(2, "t2 after")]
        subscription.close()
    finally:
        await writer.close()
        await watcher.close()


async def test_a_backend_nobody_follows_holds_no_listening_connection(
    backend: PostgresStateBackend, pg_url: str
) -> None:
    await backend.append_logs("job-1", ["t0 written"])
    subscription = backend.bus.subscribe("job-1")  # subscribed, not yet following

    server = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        listening = await server.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'coro-listener' AND datname = current_database()"
        )
    finally:
        await server.close()
    subscription.close()
    assert listening == 0


async def test_two_processes_on_one_database_lose_no_field_and_no_line(
    backend: PostgresStateBackend, pg_url: str
) -> None:
    rounds, names, job_ids = 25, ("alpha", "beta"), ["job-1", "job-2", "job-3"]
    for job_id in job_ids:
        await backend.create_job(make_job(job_id))
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.pg_hammer",
            pg_url,
            name,
            str(rounds),
            *job_ids,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for name in names
    ]
    for child in children:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    for child in children:
        assert await asyncio.wait_for(child.wait(), 120) == 0

    for job_id in job_ids:
        job = await backend.get_job(job_id)
        assert job is not None
        assert sorted(item.name for item in job.work_items) == sorted(
            f"{name}-{n}" for name in names for n in range(rounds)
        )
        assert job.phase_visits == dict.fromkeys(names, rounds)
        stored = await backend.read_logs(job_id)
        assert [e.index for e in stored] == list(range(3 * rounds * len(names)))
        lines = [e.line for e in stored]
        expected = [
            line
            for name in names
            for n in range(rounds)
            for line in (f"{name} update {n}", f"{name} {n} a", f"{name} {n} b")
        ]
        assert sorted(lines) == sorted(expected)  # every line, each exactly once
        for name in names:
            for n in range(rounds):  # an append's lines stay together, in order
                first = lines.index(f"{name} {n} a")
                assert lines[first + 1] == f"{name} {n} b"
            updates = [line for line in lines if line.startswith(f"{name} update ")]
            assert updates == [f"{name} update {n}" for n in range(rounds)]
        assert await backend.count_logs(job_id) == len(expected)
