"""What the dialect-neutral SQL stores (`prs_sql`, `proposals_sql`) share: the engine
they are given, and a transaction that means the same on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

#: An engine, or how to get the backend's engine once it is open (a backend hands its
#: stores out before `open()` creates the engine).
EngineSource = AsyncEngine | Callable[[], AsyncEngine]


def engine_getter(source: EngineSource) -> Callable[[], AsyncEngine]:
    if isinstance(source, AsyncEngine):
        return lambda: source
    return source


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine, *, write: bool) -> AsyncIterator[AsyncConnection]:
    """One transaction, committed when the block ends (rolled back if it raises).

    SQLite: the backend's connections run with the driver's implicit transactions off,
    so it is begun here, `BEGIN IMMEDIATE` for a writer (the write lock up front: the
    checks a writer makes and its changes are never interleaved with another writer's).
    PostgreSQL: SQLAlchemy begins it (READ COMMITTED); writers lock the rows they check
    with `FOR UPDATE` (which SQLite renders as nothing) and leave uniqueness to indexes.
    """
    async with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            await connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield connection
        except BaseException:
            await connection.rollback()
            raise
        await connection.commit()
