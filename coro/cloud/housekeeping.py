"""The cloud's housekeeping: rows whose use is over, deleted at start and then hourly.

Every instance runs it; the deletes are idempotent, so several need no coordination.

- refresh tokens past their expiry (an expired token is refused whether its row is
  there or not);
- sign-in sessions that are revoked or hold no refresh token still valid, once every
  access token naming them has expired too (an access token needs its session's row);
- the rows of runners not heard from for `KEEP_OFFLINE_RUNNERS` (their instance died
  without closing the socket; until then the team page shows them offline).

(Answers to runners' RPCs go when a runner registers, webhook delivery ids as new
deliveries come: `coro.cloud.gateway`, `coro.cloud.ingress`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, exists, func, or_

from coro.cloud.db import Database
from coro.cloud.schema import auth_sessions, refresh_tokens, runner_sessions

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600.0
KEEP_OFFLINE_RUNNERS = timedelta(days=7)


@dataclass(frozen=True)
class Purged:
    refresh_tokens: int
    sessions: int
    runner_sessions: int


class Housekeeping:
    def __init__(self, db: Database, access_ttl_seconds: int) -> None:
        self.db = db
        self.access_ttl = timedelta(seconds=access_ttl_seconds)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cloud-housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                purged = await self.run_once()
                logger.info("housekeeping: %s", purged)
            except Exception:  # the database may be away; the next hour tries again
                logger.warning("housekeeping failed", exc_info=True)
            await asyncio.sleep(INTERVAL_SECONDS)

    async def run_once(self) -> Purged:
        now = func.now()
        issued_since = now - self.access_ttl
        # a refresh token still valid, or one issued together with an access token that
        # may still be valid
        in_use = exists().where(
            refresh_tokens.c.session_id == auth_sessions.c.id,
            or_(
                and_(refresh_tokens.c.revoked_at.is_(None), refresh_tokens.c.expires_at > now),
                refresh_tokens.c.created_at > issued_since,
            ),
        )
        async with self.db.begin() as connection:
            # (sessions first: their tokens' rows tell when they were last used)
            sessions = await connection.execute(
                delete(auth_sessions).where(
                    or_(
                        auth_sessions.c.revoked_at <= issued_since,
                        and_(auth_sessions.c.created_at <= issued_since, ~in_use),
                    )
                )
            )
            tokens = await connection.execute(
                delete(refresh_tokens).where(refresh_tokens.c.expires_at <= now)
            )
            runners = await connection.execute(
                delete(runner_sessions).where(
                    runner_sessions.c.last_heartbeat_at <= now - KEEP_OFFLINE_RUNNERS
                )
            )
        return Purged(
            refresh_tokens=tokens.rowcount,
            sessions=sessions.rowcount,
            runner_sessions=runners.rowcount,
        )
