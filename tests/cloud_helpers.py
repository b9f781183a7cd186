"""Helpers of the cloud tests: databases on the machine's PostgreSQL, settings, a served
cloud with its client, accounts and teams. The fixtures are in `tests.cloud_fixtures`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import httpx
from sqlalchemy import URL, make_url, text

from coro.cloud.db import Database
from coro.cloud.server import ServedCloud
from coro.cloud.settings import CloudSettings
from tests import pg
from tests.pg import SERVER

JWT_SECRET = "a-test-secret-that-is-long-enough-for-hs256"
PASSWORD = "correct horse battery staple"
WAIT_LIMIT = 60  # a guard against hangs, not a timing assertion


async def admin(*statements: str) -> None:
    """Run statements on the server outside a transaction (CREATE/DROP DATABASE)."""
    server = await asyncpg.connect(SERVER)
    try:
        for statement in statements:
            await server.execute(statement)
    finally:
        await server.close()


def database_url(name: str) -> URL:
    return make_url(pg.database_url(name))


def settings_for(url: URL, **overrides: Any) -> CloudSettings:
    base = CloudSettings(database_url=url, jwt_secret=JWT_SECRET, host="127.0.0.1", port=0)
    return replace(base, **overrides)


@dataclass
class Account:
    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Cloud:
    """A served cloud and a client of it."""

    served: ServedCloud
    client: httpx.AsyncClient
    settings: CloudSettings
    accounts: list[Account] = field(default_factory=list)

    @property
    def db(self) -> Database:
        return self.served.db

    async def signup(self, email: str | None = None, name: str = "Ada Lovelace") -> Account:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        response = await self.client.post(
            "/auth/signup", json={"email": email, "name": name, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        account = Account(
            body["user"]["id"], email, PASSWORD, body["accessToken"], body["refreshToken"]
        )
        self.accounts.append(account)
        return account

    async def team(self, owner: Account, slug: str | None = None) -> dict[str, Any]:
        slug = slug or f"team-{uuid.uuid4().hex[:8]}"
        response = await self.client.post(
            "/teams", json={"name": f"Team {slug}", "slug": slug}, headers=owner.headers
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def add_member(
        self, team_id: str, admin: Account, member: Account, role: str = "member"
    ) -> None:
        response = await self.client.post(
            f"/teams/{team_id}/members",
            json={"email": member.email, "role": role},
            headers=admin.headers,
        )
        assert response.status_code == 201, response.text

    async def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of a query against the cloud's database (for what the API never shows)."""
        async with self.db.begin() as connection:
            result = await connection.execute(text(sql), params)
            return [dict(row._mapping) for row in result]


CloudFactory = Callable[..., AbstractAsyncContextManager[Cloud]]
