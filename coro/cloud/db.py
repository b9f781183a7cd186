"""The cloud's PostgreSQL connection pool (SQLAlchemy 2 async over asyncpg)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

from sqlalchemy import URL, Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

logger = logging.getLogger(__name__)

#: A result row of any shape (columns read by name).
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

#: How long `ping` waits for the database before calling it unreachable.
PING_TIMEOUT = 3.0


class Database:
    """One engine per process; every unit of work is one transaction (`begin`)."""

    def __init__(self, url: URL, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            # a connection attempt to a dead server fails instead of hanging a request
            connect_args={"timeout": 10, "command_timeout": 30},
        )

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction: committed on exit, rolled back on error."""
        async with self.engine.begin() as connection:
            yield connection

    async def ping(self) -> bool:
        """Whether the database answers a trivial query within `PING_TIMEOUT`."""
        try:
            async with asyncio.timeout(PING_TIMEOUT), self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:  # whatever the failure, the answer is "unreachable"
            logger.warning("database ping failed: %s", type(exc).__name__)
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()
