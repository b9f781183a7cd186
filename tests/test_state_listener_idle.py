"""An idle PostgreSQL backend lets its LISTEN connection go (no liveness timer while
nobody follows a log), and listens again for the next follower."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from coro.state import postgres
from coro.state.postgres import PostgresStateBackend
from tests.pg import fresh_database
from tests.test_state_contract import lines_until


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def listening_connections(pg_url: str) -> int:
    server = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        count: int = await server.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'coro-listener' AND datname = current_database()"
        )
    finally:
        await server.close()
    return count


async def test_the_listener_closes_once_nobody_follows_and_listens_again_for_the_next(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "_LISTENER_PING_SECONDS", 0.05)  # check soon
    writer, watcher = PostgresStateBackend(pg_url), PostgresStateBackend(pg_url)
    await writer.open()
    await watcher.open()
    try:
        first = watcher.bus.subscribe("job-1")
        first.replayed(-1)  # the watcher listens
        await writer.append_logs("job-1", ["t0 heard"])
        assert await lines_until(first, 0) == [(0, "t0 heard")]
        assert await listening_connections(pg_url) == 1
        first.close()  # the last follower leaves

        listener = watcher._listener
        assert listener is not None and listener._task is not None
        await asyncio.wait_for(listener._task, 30)  # its next check lets the connection go
        assert await listening_connections(pg_url) == 0

        await writer.append_logs("job-1", ["t1 while nobody listened"])
        second = watcher.bus.subscribe("job-1")
        second.replayed(0)  # a new follower: listening again, and caught up
        assert await lines_until(second, 1) == [(1, "t1 while nobody listened")]
        await writer.append_logs("job-1", ["t2 heard live"])
        assert await lines_until(second, 2) == [(2, "t2 heard live")]
        second.close()
    finally:
        await writer.close()
        await watcher.close()
