"""The cloud's housekeeping: rows whose use is over go, everything still in use stays."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Select, func, insert, select, update

from coro.cloud.housekeeping import Housekeeping, Purged
from coro.cloud.schema import auth_sessions, refresh_tokens, runner_sessions
from tests.cloud_helpers import Cloud

pytest_plugins = ("tests.cloud_fixtures",)

DAY = timedelta(days=1)


async def test_what_is_over_is_purged_and_what_is_in_use_stays(cloud: Cloud) -> None:
    db = cloud.served.db
    active = await cloud.signup()
    logged_out = await cloud.signup()
    abandoned = await cloud.signup()
    team = await cloud.team(active)
    # the active account refreshed once: its first refresh token is spent, then expires
    rotated = await cloud.client.post("/auth/refresh", json={"refreshToken": active.refresh_token})
    assert rotated.status_code == 200
    active_headers = {"Authorization": f"Bearer {rotated.json()['accessToken']}"}

    def session_of(user_id: str) -> Select[tuple[str]]:
        return select(auth_sessions.c.id).where(auth_sessions.c.user_id == user_id)

    async with db.begin() as connection:
        now = (await connection.execute(select(func.now()))).scalar_one()
        await connection.execute(
            update(refresh_tokens)
            .where(
                refresh_tokens.c.session_id.in_(session_of(active.id)),
                refresh_tokens.c.revoked_at.is_not(None),
            )
            .values(expires_at=now - DAY)
        )
        await connection.execute(
            update(auth_sessions)
            .where(auth_sessions.c.user_id == logged_out.id)
            .values(revoked_at=now - DAY)
        )
        # signed in 15 days ago, never came back: its refresh token expired a week ago
        await connection.execute(
            update(auth_sessions)
            .where(auth_sessions.c.user_id == abandoned.id)
            .values(created_at=now - 15 * DAY)
        )
        await connection.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.session_id.in_(session_of(abandoned.id)))
            .values(created_at=now - 15 * DAY, expires_at=now - 8 * DAY)
        )
        for runner_id, age in (("gone-runner", 8 * DAY), ("offline-runner", DAY)):
            await connection.execute(
                insert(runner_sessions).values(
                    team_id=team["id"],
                    runner_id=runner_id,
                    token_id="t",
                    instance_id="i",
                    hostname="h",
                    version="v",
                    capacity=1,
                    active_job_ids=[],
                    last_heartbeat_at=now - age,
                )
            )

    purged = await Housekeeping(db, access_ttl_seconds=900).run_once()

    assert purged == Purged(
        # the active account's spent token (the ended sessions' go with them)
        refresh_tokens=1,
        sessions=2,
        runner_sessions=1,
    )
    async with db.begin() as connection:
        users_with_sessions = set(
            (await connection.execute(select(auth_sessions.c.user_id))).scalars()
        )
        runners = set((await connection.execute(select(runner_sessions.c.runner_id))).scalars())
    assert active.id in users_with_sessions
    assert not {logged_out.id, abandoned.id} & users_with_sessions
    assert runners == {"offline-runner"}
    # the account in use still works, and its fresh refresh token still rotates
    assert (await cloud.client.get("/auth/me", headers=active_headers)).status_code == 200
    again = await cloud.client.post(
        "/auth/refresh", json={"refreshToken": rotated.json()["refreshToken"]}
    )
    assert again.status_code == 200
    # a second run finds nothing more
    assert await Housekeeping(db, access_ttl_seconds=900).run_once() == Purged(0, 0, 0)
