"""Login and sign-up throttling, per account and per client address, kept in the
database.

In PostgreSQL rather than in the process so that the limit holds across restarts and,
later, across several instances behind one load balancer. Each key (`account:<email>`,
`ip:<address>`) counts failed logins in a fixed window that starts at its first failure;
at the limit, logins for that key are refused with 429 until the window ends. A success
clears the account's count (not the address's: one right password must not reset a
spray across many accounts). Unknown accounts count like known ones, so the answer never
tells which exist.

Sign-ups are counted per address the same way (`signup:<address>`), every attempt: each
costs an argon2 hash, so a flood of them must not take the cloud's CPU.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects.postgresql import insert

from coro.cloud.db import Database
from coro.cloud.errors import TooManyRequests
from coro.cloud.schema import login_failures
from coro.cloud.settings import LoginThrottle


class Throttle:
    def __init__(self, db: Database, limits: LoginThrottle) -> None:
        self.db = db
        self.limits = limits
        self.window = timedelta(seconds=limits.window_seconds)

    def _keys(self, email: str, address: str | None) -> dict[str, int]:
        keys = {f"account:{email}": self.limits.max_account_failures}
        if address:
            keys[f"ip:{address}"] = self.limits.max_ip_failures
        return keys

    async def check(self, email: str, address: str | None) -> None:
        """Raise TooManyRequests if the account or the address is over its limit."""
        await self._check(
            self._keys(email, address), "Too many failed sign-in attempts; try again later"
        )

    async def failed(self, email: str, address: str | None) -> None:
        await self._count(self._keys(email, address))

    async def check_signup(self, address: str | None) -> None:
        """Raise TooManyRequests if the address is over its sign-ups, else count this one."""
        if address:
            key = {f"signup:{address}": self.limits.max_ip_signups}
            await self._check(key, "Too many sign-ups from this address; try again later")
            await self._count(key)

    async def _check(self, keys: dict[str, int], message: str) -> None:
        async with self.db.begin() as connection:
            now = (await connection.execute(select(func.now()))).scalar_one()
            rows = await connection.execute(
                select(
                    login_failures.c.key,
                    login_failures.c.failures,
                    login_failures.c.window_start,
                ).where(login_failures.c.key.in_(keys))
            )
        wait = 0.0
        for key, failures, start in rows:
            ends: datetime = start + self.window
            if failures >= keys[key] and ends > now:
                wait = max(wait, (ends - now).total_seconds())
        if wait > 0:
            raise TooManyRequests(message, math.ceil(wait))

    async def _count(self, keys: dict[str, int]) -> None:
        async with self.db.begin() as connection:
            expired = login_failures.c.window_start <= func.now() - self.window
            for key in keys:
                statement = insert(login_failures).values(
                    key=key, failures=1, window_start=func.now()
                )
                await connection.execute(
                    statement.on_conflict_do_update(
                        index_elements=[login_failures.c.key],
                        set_={
                            "failures": case((expired, 1), else_=login_failures.c.failures + 1),
                            "window_start": case(
                                (expired, func.now()), else_=login_failures.c.window_start
                            ),
                        },
                    )
                )
            # windows long over are dead weight (an attacker's many addresses)
            await connection.execute(
                delete(login_failures).where(
                    login_failures.c.window_start < func.now() - 2 * self.window
                )
            )

    async def succeeded(self, email: str) -> None:
        async with self.db.begin() as connection:
            await connection.execute(
                delete(login_failures).where(login_failures.c.key == f"account:{email}")
            )
