"""The cloud tests' fixtures (a pytest plugin: test modules say
`pytest_plugins = ("tests.cloud_fixtures",)`); the helpers they use are in
`tests.cloud_helpers`.

Each test worker migrates one template database once (`coro_cloud_tpl_<random>`); each
test gets a copy (`CREATE DATABASE … TEMPLATE`, fast), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import URL, make_url

from coro.cloud import migrate
from coro.cloud.db import Database
from coro.cloud.server import serve
from tests.cloud_helpers import Cloud, CloudFactory, admin, database_url, settings_for
from tests.pg import fresh_database


@pytest.fixture(scope="session")
def cloud_template() -> Iterator[str]:
    name = f"coro_cloud_tpl_{secrets.token_hex(4)}"

    async def create() -> None:
        await admin(f'CREATE DATABASE "{name}"')
        db = Database(database_url(name))
        try:
            await migrate.upgrade(db)
        finally:
            await db.close()

    asyncio.run(create())
    yield name
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def cloud_db_url(cloud_template: str) -> AsyncIterator[URL]:
    """A migrated database of this test's own."""
    name = f"coro_cloud_{secrets.token_hex(6)}"
    await admin(f'CREATE DATABASE "{name}" TEMPLATE "{cloud_template}"')
    try:
        yield database_url(name)
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def empty_db_url() -> AsyncIterator[URL]:
    """A database with no tables (for the migration tests)."""
    async with fresh_database() as url:
        yield make_url(url)


@pytest.fixture
def cloud_factory(cloud_db_url: URL) -> CloudFactory:
    """`async with cloud_factory(**settings) as cloud:` a cloud on this test's database."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Cloud]:
        settings = settings_for(cloud_db_url, **overrides)
        async with (
            serve(settings, migrations=False) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
        ):
            yield Cloud(served=served, client=client, settings=settings)

    return start


@pytest.fixture
async def cloud(cloud_factory: CloudFactory) -> AsyncIterator[Cloud]:
    async with cloud_factory() as served:
        yield served
