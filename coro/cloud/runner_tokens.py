"""Runner tokens: what a team's runners authenticate with (SPEC §3).

A token is opaque (`coro_rt_` and 256 random bits, see `coro.cloud.tokens`), shown once
when minted and stored as its SHA-256. `verify_runner_token` is the one check the
runner's WebSocket uses: the token must exist and not be revoked; it records the use.
Revocation takes effect for every later check at once; `RevocationHub` tells whoever
holds live connections authenticated by a token (the WebSocket gateway) to close them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update

from coro.cloud.db import AnyRow, Database
from coro.cloud.errors import Conflict, NotFound
from coro.cloud.schema import runner_tokens
from coro.cloud.teams import TeamAccess
from coro.cloud.tokens import RUNNER_PREFIX, looks_opaque, new_opaque, opaque_hash

logger = logging.getLogger(__name__)

#: Live (unrevoked) tokens per team: plenty for every machine a team runs.
MAX_ACTIVE_TOKENS = 100


@dataclass(frozen=True)
class RunnerIdentity:
    """Who a verified runner token speaks for."""

    team_id: str
    token_id: str


@dataclass(frozen=True)
class RunnerToken:
    id: str
    name: str
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


RevocationListener = Callable[[RunnerIdentity], Awaitable[None]]


class RevocationHub:
    """Listeners called after a token is revoked (e.g. to close its live sockets)."""

    def __init__(self) -> None:
        self._listeners: list[RevocationListener] = []

    def subscribe(self, listener: RevocationListener) -> Callable[[], None]:
        """Add `listener`; returns the function that removes it again."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def revoked(self, identity: RunnerIdentity) -> None:
        for listener in list(self._listeners):
            try:
                await listener(identity)
            except Exception:
                # the revocation itself is committed; a listener's failure must not undo
                # the response, and later checks refuse the token anyway
                logger.exception("a runner-token revocation listener failed")


_COLUMNS = (
    runner_tokens.c.id,
    runner_tokens.c.name,
    runner_tokens.c.created_by,
    runner_tokens.c.created_at,
    runner_tokens.c.last_used_at,
    runner_tokens.c.revoked_at,
)


def _token(row: AnyRow) -> RunnerToken:
    return RunnerToken(
        row.id, row.name, row.created_by, row.created_at, row.last_used_at, row.revoked_at
    )


async def verify_runner_token(db: Database, token: str) -> RunnerIdentity | None:
    """The team and token id `token` authenticates, or None (unknown or revoked)."""
    if not looks_opaque(token, RUNNER_PREFIX):
        return None
    async with db.begin() as connection:
        row = (
            await connection.execute(
                update(runner_tokens)
                .where(
                    runner_tokens.c.token_hash == opaque_hash(token),
                    runner_tokens.c.revoked_at.is_(None),
                )
                .values(last_used_at=func.now())
                .returning(runner_tokens.c.team_id, runner_tokens.c.id)
            )
        ).first()
    return None if row is None else RunnerIdentity(team_id=row.team_id, token_id=row.id)


class RunnerTokens:
    def __init__(self, db: Database, hub: RevocationHub) -> None:
        self.db = db
        self.hub = hub

    async def mint(self, access: TeamAccess, name: str) -> tuple[RunnerToken, str]:
        """A new token and its secret (the only time the secret exists in the clear)."""
        access.require_admin("create runner tokens")
        secret = new_opaque(RUNNER_PREFIX)
        async with self.db.begin() as connection:
            active = (
                await connection.execute(
                    select(func.count()).where(
                        runner_tokens.c.team_id == access.team_id,
                        runner_tokens.c.revoked_at.is_(None),
                    )
                )
            ).scalar_one()
            if active >= MAX_ACTIVE_TOKENS:
                raise Conflict(
                    f"A team may have at most {MAX_ACTIVE_TOKENS} active runner tokens; "
                    "revoke unused ones first"
                )
            row = (
                await connection.execute(
                    runner_tokens.insert()
                    .values(
                        id=str(uuid.uuid4()),
                        team_id=access.team_id,
                        name=name,
                        token_hash=opaque_hash(secret),
                        created_by=access.user_id,
                    )
                    .returning(*_COLUMNS)
                )
            ).one()
        return _token(row), secret

    async def of_team(self, access: TeamAccess) -> list[RunnerToken]:
        async with self.db.begin() as connection:
            rows = await connection.execute(
                select(*_COLUMNS)
                .where(runner_tokens.c.team_id == access.team_id)
                .order_by(runner_tokens.c.created_at, runner_tokens.c.id)
            )
        return [_token(row) for row in rows]

    async def revoke(self, access: TeamAccess, token_id: str) -> None:
        """Revoke a token of this team (again: a no-op); unknown ids are 404."""
        access.require_admin("revoke runner tokens")
        async with self.db.begin() as connection:
            revoked = (
                await connection.execute(
                    update(runner_tokens)
                    .where(
                        runner_tokens.c.id == token_id,
                        runner_tokens.c.team_id == access.team_id,
                        runner_tokens.c.revoked_at.is_(None),
                    )
                    .values(revoked_at=func.now())
                    .returning(runner_tokens.c.id)
                )
            ).first()
            if revoked is None:
                exists = (
                    await connection.execute(
                        select(runner_tokens.c.id).where(
                            runner_tokens.c.id == token_id,
                            runner_tokens.c.team_id == access.team_id,
                        )
                    )
                ).first()
                if exists is None:
                    raise NotFound("Runner token not found")
                return
        await self.hub.revoked(RunnerIdentity(team_id=access.team_id, token_id=token_id))
