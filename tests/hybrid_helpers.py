"""Helpers of the hybrid-runner tests: a team with a runner token on a served cloud, the
cloud's mirror of its jobs, and waiting for a link's state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from coro.state.cloud.link import CloudLink, LinkState, LinkTimings
from tests.cloud_helpers import WAIT_LIMIT, Account, Cloud

#: short intervals, so reconnects and retries happen within a test
FAST = LinkTimings(
    rpc_timeout=5.0,
    rpc_max_retries=3,
    heartbeat_interval=1.0,
    reconnect_base=0.05,
    reconnect_cap=0.5,
    open_timeout=10.0,
)


@dataclass
class Paired:
    """A team of the cloud, its admin and a runner token of it."""

    team: dict[str, Any]
    admin: Account
    token: str
    token_id: str

    @property
    def team_id(self) -> str:
        return str(self.team["id"])


async def pair(cloud: Cloud) -> Paired:
    admin = await cloud.signup()
    team = await cloud.team(admin)
    minted = await cloud.client.post(
        f"/teams/{team['id']}/runner-tokens", json={"name": "test runner"}, headers=admin.headers
    )
    assert minted.status_code == 201, minted.text
    body = minted.json()
    return Paired(team=team, admin=admin, token=body["token"], token_id=body["id"])


async def revoke(cloud: Cloud, paired: Paired) -> None:
    response = await cloud.client.delete(
        f"/teams/{paired.team_id}/runner-tokens/{paired.token_id}", headers=paired.admin.headers
    )
    assert response.status_code == 204, response.text


async def wait_state(link: CloudLink, *states: LinkState) -> LinkState:
    async with asyncio.timeout(WAIT_LIMIT):
        return await link.wait_for(*states)


async def wait_registrations(link: CloudLink, count: int) -> None:
    """Until the link has registered `count` times (and is connected)."""
    async with asyncio.timeout(WAIT_LIMIT):
        await link.wait_until(lambda: link.registrations >= count and link.state == "connected")


async def mirror_jobs(cloud: Cloud, team_id: str) -> dict[str, dict[str, Any]]:
    """The cloud's copy of the team's jobs: id → {rev, runner_id, doc}."""
    rows = await cloud.rows(
        "SELECT id, rev, runner_id, doc FROM team_jobs WHERE team_id = :team", team=team_id
    )
    return {row["id"]: row for row in rows}


async def mirror_lines(cloud: Cloud, team_id: str, job_id: str) -> list[tuple[int, str]]:
    rows = await cloud.rows(
        "SELECT idx, line FROM team_job_logs WHERE team_id = :team AND job_id = :job ORDER BY idx",
        team=team_id,
        job=job_id,
    )
    return [(int(row["idx"]), str(row["line"])) for row in rows]
