"""Fresh PostgreSQL databases for tests, on the machine's own server.

The server listens on 127.0.0.1:5432 and trusts user `postgres`. Each test gets a
database of its own (`coro_test_<random>`), dropped afterwards, so tests run in
parallel (pytest-xdist) without seeing each other.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import asyncpg

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def database_url(name: str) -> str:
    """The `state.url` of database `name` on the test server."""
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty database for the block; yields its `state.url`."""
    name = f"coro_test_{secrets.token_hex(6)}"
    server = await asyncpg.connect(SERVER)
    try:
        await server.execute(f'CREATE DATABASE "{name}"')
    finally:
        await server.close()
    try:
        yield database_url(name)
    finally:
        server = await asyncpg.connect(SERVER)
        try:  # FORCE: a backend the test left open must not keep the database alive
            await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await server.close()
