"""A team's runners with a session, on any instance (`runner_sessions`): what `GET
/teams/:teamId/runners` answers its members and `runner:list` a runner of the team."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select

from coro.cloud.db import Database
from coro.cloud.models import Wire
from coro.cloud.schema import runner_sessions


class RunnerOut(Wire):
    runner_id: str
    hostname: str
    version: str
    connected_at: datetime
    last_heartbeat_at: datetime
    active_job_ids: list[str]
    capacity: int
    #: busy: runs at least one job; offline: no heartbeat within the timeout (its
    #: instance went away without closing the session)
    status: Literal["idle", "busy", "offline"]


async def team_runners(db: Database, team_id: str, heartbeat_timeout: float) -> list[RunnerOut]:
    """The team's runners, by id."""
    stale = timedelta(seconds=heartbeat_timeout)
    async with db.begin() as connection:
        rows = (
            await connection.execute(
                select(
                    runner_sessions,
                    (runner_sessions.c.last_heartbeat_at > func.now() - stale).label("fresh"),
                )
                .where(runner_sessions.c.team_id == team_id)
                .order_by(runner_sessions.c.runner_id)
            )
        ).all()
    runners = []
    for row in rows:
        active = [str(job_id) for job_id in row.active_job_ids or []]
        status: Literal["idle", "busy", "offline"] = (
            "offline" if not row.fresh else "busy" if active else "idle"
        )
        runners.append(
            RunnerOut(
                runner_id=row.runner_id,
                hostname=row.hostname,
                version=row.version,
                connected_at=row.connected_at,
                last_heartbeat_at=row.last_heartbeat_at,
                active_job_ids=active,
                capacity=row.capacity,
                status=status,
            )
        )
    return runners
