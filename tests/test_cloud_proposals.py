"""Team proposals: stored for the runner's team (`TeamProposals.create`, idempotent by
id, paths checked), listed and read by team members, approved (only while pending) with
`proposal:apply` sent to a runner of the team and `applied` once one acknowledges it,
or rejected."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coro.cloud.broker import COMMAND_DONE
from coro.cloud.deps import Services
from coro.cloud.errors import BadRequest, NotFound
from coro.cloud.proposals import TeamProposals
from tests.cloud_helpers import WAIT_LIMIT, Account, Cloud
from tests.cloud_runner_client import runner_client

pytest_plugins = ("tests.cloud_fixtures",)


def services(cloud: Cloud) -> Services:
    found: Services = cloud.served.app.state.services
    return found


def proposals(cloud: Cloud) -> TeamProposals:
    return TeamProposals(services(cloud).db, services(cloud).commands)


def proposal(proposal_id: str = "prop-1", **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": proposal_id,
        "tenantId": "ignored",
        "jobId": "api-job-1-abcd",
        "type": "memory-update",
        "title": "Remember the build command",
        "rationale": "It was looked up three times",
        "files": [{"path": "memory/build.md", "content": "make all\n"}],
        "createdAt": "2025-01-01T00:00:00.000Z",
        "updatedAt": "2025-01-01T00:00:00.000Z",
    }
    values.update(fields)
    return values


async def member_team(cloud: Cloud) -> tuple[Account, str]:
    account = await cloud.signup()
    team = await cloud.team(account)
    return account, str(team["id"])


async def test_a_runners_proposal_is_stored_for_its_team_once(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    other, other_team = await member_team(cloud)
    store = proposals(cloud)
    stored = await store.create(team_id, proposal())
    assert stored["tenantId"] == team_id and stored["status"] == "pending"
    again = await store.create(team_id, proposal(title="Remember the build command, v2"))
    assert again["title"] == "Remember the build command, v2"  # a pending one is replaced
    assert [p["id"] for p in await store.list(team_id)] == ["prop-1"]

    listed = await cloud.client.get(f"/teams/{team_id}/proposals", headers=account.headers)
    assert listed.status_code == 200
    body = listed.json()
    assert (body["teamId"], body["count"]) == (team_id, 1)
    assert body["proposals"][0]["files"] == [{"path": "memory/build.md", "content": "make all\n"}]
    got = await cloud.client.get(f"/teams/{team_id}/proposals/prop-1", headers=account.headers)
    assert got.json()["title"] == "Remember the build command, v2"

    # another team sees none of it
    assert await store.list(other_team) == []
    hidden = await cloud.client.get(f"/teams/{team_id}/proposals/prop-1", headers=other.headers)
    assert hidden.status_code == 404
    mine = await cloud.client.get(f"/teams/{other_team}/proposals/prop-1", headers=other.headers)
    assert mine.status_code == 404
    with pytest.raises(NotFound):
        await store.update(other_team, "prop-1", {"title": "x"})


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../outside.md", "memory/../../x.md", "a\\b.md", ""]
)
async def test_a_file_path_that_could_leave_the_layer_is_refused(cloud: Cloud, path: str) -> None:
    _, team_id = await member_team(cloud)
    with pytest.raises(BadRequest, match="files"):
        await proposals(cloud).create(team_id, proposal(files=[{"path": path, "content": "x"}]))
    assert await proposals(cloud).list(team_id) == []


async def test_update_sets_only_known_fields(cloud: Cloud) -> None:
    _, team_id = await member_team(cloud)
    store = proposals(cloud)
    await store.create(team_id, proposal())
    updated = await store.update(team_id, "prop-1", {"description": "Why and how"})
    assert updated["description"] == "Why and how"
    with pytest.raises(BadRequest, match="tenantId"):
        await store.update(team_id, "prop-1", {"tenantId": "another-team"})
    with pytest.raises(BadRequest):
        await store.update(team_id, "prop-1", {"status": "merged"})
    assert [p["status"] for p in await store.list(team_id, "pending")] == ["pending"]


async def test_reject_decides_a_pending_proposal_once(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    await proposals(cloud).create(team_id, proposal())
    base = f"/teams/{team_id}/proposals/prop-1"
    rejected = await cloud.client.post(
        f"{base}/reject", json={"note": "not needed"}, headers=account.headers
    )
    assert rejected.status_code == 200, rejected.text
    body = rejected.json()
    assert (body["status"], body["reviewedBy"], body["reviewNote"]) == (
        "rejected",
        account.id,
        "not needed",
    )
    assert (await cloud.client.post(f"{base}/approve", headers=account.headers)).status_code == 409
    assert (await cloud.client.post(f"{base}/reject", headers=account.headers)).status_code == 409
    listed = await cloud.client.get(
        f"/teams/{team_id}/proposals", params={"status": "rejected"}, headers=account.headers
    )
    assert [p["id"] for p in listed.json()["proposals"]] == ["prop-1"]
    bad = await cloud.client.get(
        f"/teams/{team_id}/proposals", params={"status": "maybe"}, headers=account.headers
    )
    assert bad.status_code == 400
    unknown = await cloud.client.post(
        f"{base}/reject", json={"note": "x", "extra": 1}, headers=account.headers
    )
    assert unknown.status_code == 400


async def test_approval_without_a_runner_is_applied_when_one_acknowledges(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    await proposals(cloud).create(team_id, proposal())
    base = f"/teams/{team_id}/proposals/prop-1"
    approved = await cloud.client.post(
        f"{base}/approve", json={"note": "good"}, headers=account.headers
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert (body["status"], body["reviewedBy"], body["reviewNote"]) == (
        "approved",
        account.id,
        "good",
    )
    assert body["apply"]["state"] == "queued"

    minted = await cloud.client.post(
        f"/teams/{team_id}/runner-tokens", json={"name": "laptop"}, headers=account.headers
    )
    async with runner_client(cloud.served.url, minted.json()["token"]) as runner:
        await runner.register("laptop")
        command = await runner.command()
        assert command["type"] == "proposal:apply"
        assert command["proposalId"] == "prop-1"
        assert command["files"] == [{"path": "memory/build.md", "content": "make all\n"}]
        answered = asyncio.Event()
        unsubscribe = services(cloud).broker.subscribe(COMMAND_DONE, lambda payload: answered.set())
        try:
            await runner.answer(command, data={"applied": "prop-1", "written": ["memory/build.md"]})
            async with asyncio.timeout(WAIT_LIMIT):
                await answered.wait()
        finally:
            unsubscribe()
    got = (await cloud.client.get(base, headers=account.headers)).json()
    assert got["status"] == "applied" and got["appliedAt"]


async def test_approval_with_a_runner_waits_for_its_apply(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    await proposals(cloud).create(team_id, proposal())
    minted = await cloud.client.post(
        f"/teams/{team_id}/runner-tokens", json={"name": "laptop"}, headers=account.headers
    )
    async with runner_client(cloud.served.url, minted.json()["token"]) as runner:
        await runner.register("laptop")
        approving = asyncio.create_task(
            cloud.client.post(f"/teams/{team_id}/proposals/prop-1/approve", headers=account.headers)
        )
        command = await runner.command()
        await runner.answer(command, data={"applied": "prop-1", "written": ["memory/build.md"]})
        approved = await approving
    assert approved.status_code == 200
    body = approved.json()
    assert body["status"] == "applied" and body["appliedAt"]
    assert body["apply"]["state"] == "done"
    rows = await cloud.rows("SELECT status, applied_at FROM team_proposals")
    assert rows[0]["status"] == "applied" and rows[0]["applied_at"] is not None
