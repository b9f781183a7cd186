"""Backends for the store-level tests of `backend.prs` and `backend.proposals`
(tests/test_state_prs.py, tests/test_state_proposals.py).

`open_backends(kind, tmp_path, count)` opens `count` backends on one storage, as
`count` processes would: the same memory backend; backends on one SQLite file; SQL
stores on their own engines over one fresh PostgreSQL database (`tests.pg`, its tables
made from `coro.state.schema`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from coro.state.memory import MemoryStateBackend
from coro.state.proposals import ProposalStore
from coro.state.proposals_sql import SqlProposalStore
from coro.state.prs import PullRequestStore
from coro.state.prs_sql import SqlPullRequestStore
from coro.state.schema import metadata
from coro.state.sqlite import SqliteStateBackend
from tests.pg import fresh_database

KINDS = ("memory", "sqlite", "postgres")


@dataclass
class Stores:
    """What these tests need of a backend."""

    prs: PullRequestStore
    proposals: ProposalStore


@contextlib.asynccontextmanager
async def open_backends(kind: str, tmp_path: Path, count: int = 1) -> AsyncIterator[list[Stores]]:
    if kind == "memory":
        memory = MemoryStateBackend()
        yield [Stores(memory.prs, memory.proposals)] * count
    elif kind == "sqlite":
        backends = [SqliteStateBackend(tmp_path / "state.db") for _ in range(count)]
        try:
            for backend in backends:
                await backend.open()
            yield [Stores(b.prs, b.proposals) for b in backends]
        finally:
            for backend in backends:
                await backend.close()
    else:
        async with fresh_database() as url:
            engines = [create_async_engine(url) for _ in range(count)]
            try:
                async with engines[0].begin() as connection:
                    await connection.run_sync(metadata.create_all)
                yield [_sql_stores(engine) for engine in engines]
            finally:
                for engine in engines:
                    await engine.dispose()


def _sql_stores(engine: AsyncEngine) -> Stores:
    return Stores(SqlPullRequestStore(engine), SqlProposalStore(engine))
