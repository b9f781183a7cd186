"""Backends for the store-level tests of `backend.prs` and `backend.proposals`
(tests/test_state_prs.py, tests/test_state_proposals.py).

`open_backends(kind, tmp_path, count)` opens `count` backends on one storage, as
`count` processes would: the same memory backend; backends on one SQLite file; backends
on one fresh PostgreSQL database (`tests.pg`, migrated by the backend as in use).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from coro.state.backend import StateBackend
from coro.state.memory import MemoryStateBackend
from coro.state.postgres import PostgresStateBackend
from coro.state.proposals import ProposalStore
from coro.state.prs import PullRequestStore
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
    else:
        backends: list[StateBackend]
        async with contextlib.AsyncExitStack() as stack:
            if kind == "sqlite":
                backends = [SqliteStateBackend(tmp_path / "state.db") for _ in range(count)]
            else:
                url = await stack.enter_async_context(fresh_database())
                backends = [PostgresStateBackend(url) for _ in range(count)]
            for backend in backends:
                await backend.open()
                stack.push_async_callback(backend.close)
            yield [Stores(b.prs, b.proposals) for b in backends]
