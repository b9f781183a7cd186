"""Team jobs over the cloud's REST API (`/teams/:teamId/jobs`): created and queued
while no runner is connected, listed and read from the mirror, cancelled by the cloud
while no runner has them, streamed as SSE from the mirror (live across instances), and,
with a connected (scripted) runner, answered by it."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from coro.cloud.broker import JOB_CHANGED
from coro.cloud.deps import Services
from coro.cloud.routes import jobs as job_routes
from coro.domain.models import Job, LogEntry
from tests.cloud_helpers import WAIT_LIMIT, Account, Cloud, CloudFactory
from tests.cloud_runner_client import RunnerClient, job_json, runner_client
from tests.sse import Frame, frames

pytest_plugins = ("tests.cloud_fixtures",)

REDIS_URL = "redis://127.0.0.1:6379/0"


def services(cloud: Cloud) -> Services:
    found: Services = cloud.served.app.state.services
    return found


async def member_team(cloud: Cloud) -> tuple[Account, str]:
    account = await cloud.signup()
    team = await cloud.team(account)
    return account, str(team["id"])


async def create(cloud: Cloud, account: Account, team_id: str, **body: Any) -> dict[str, Any]:
    response = await cloud.client.post(
        f"/teams/{team_id}/jobs",
        json={"workflowPath": "workflows/fix.md", **body},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def log_lines(cloud: Cloud, team_id: str, job_id: str, *lines: str) -> None:
    """Store lines as the gateway does for a runner's `job:log`: the mirror, then a
    `job-changed` notice."""
    found = services(cloud)
    start = await found.mirror.count_logs(team_id, job_id)
    entries = [LogEntry(index=start + n, line=line) for n, line in enumerate(lines)]
    await found.mirror.append_logs(team_id, job_id, entries)
    await found.broker.publish(JOB_CHANGED, {"teamId": team_id, "jobId": job_id})


async def set_status(cloud: Cloud, team_id: str, job_id: str, status: str) -> None:
    found = services(cloud)

    def change(job: Job) -> None:
        job.status = status

    assert await found.mirror.set_status(team_id, job_id, change, None) is not None
    await found.broker.publish(JOB_CHANGED, {"teamId": team_id, "jobId": job_id})


async def read_until(stream: AsyncIterator[Frame], count: int) -> list[Frame]:
    got: list[Frame] = []
    async with asyncio.timeout(WAIT_LIMIT):
        async for frame in stream:
            if frame.comments and not frame.data:
                continue  # a heartbeat
            got.append(frame)
            if len(got) == count:
                break
    return got


async def follow(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any
) -> list[Frame]:
    """The whole stream of a stopped job (it ends with `done`)."""
    got: list[Frame] = []
    async with (
        asyncio.timeout(WAIT_LIMIT),
        client.stream("GET", path, headers=headers, params=params) as response,
    ):
        assert response.status_code == 200
        async for frame in frames(response):
            if frame.comments and not frame.data:
                continue
            got.append(frame)
    return got


# --------------------------------------------------------------------- without runners


async def test_a_job_created_without_a_runner_is_queued_with_a_warning(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    created = await create(cloud, account, team_id, serviceName="billing", repo="acme/billing")
    job_id = created["jobId"]
    assert job_id.startswith("billing-job-")
    assert created["status"] == "queued"
    assert created["warning"] == "No runner connected — job queued"
    assert created["streamUrl"] == f"/teams/{team_id}/jobs/{job_id}/stream"
    assert created["params"]["repoSlug"] == "billing"

    got = await cloud.client.get(f"/teams/{team_id}/jobs/{job_id}", headers=account.headers)
    assert got.status_code == 200
    assert got.json()["status"] == "queued"
    assert got.json()["workflowPath"] == "workflows/fix.md"
    # the dispatch waits in the durable queue for any runner of the team
    rows = await cloud.rows(
        "SELECT type, state, runner_id, frame FROM runner_commands WHERE job_id = :j", j=job_id
    )
    assert [(r["type"], r["state"], r["runner_id"]) for r in rows] == [
        ("event:dispatch", "pending", None)
    ]
    assert rows[0]["frame"]["request"]["serviceName"] == "billing"


async def test_list_filters_and_pages_like_the_runner(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    ids = [
        (await create(cloud, account, team_id, serviceName=f"svc{n}", workflowPath=path))["jobId"]
        for n, path in enumerate(["workflows/a.md", "workflows/b.md", "workflows/a.md"])
    ]
    headers = account.headers
    url = f"/teams/{team_id}/jobs"

    everything = (await cloud.client.get(url, headers=headers)).json()
    assert everything["total"] == 3
    assert [j["id"] for j in everything["jobs"]] == ids[::-1]  # newest first
    assert "conversationHistory" not in everything["jobs"][0]

    by_path = (
        await cloud.client.get(url, params={"workflowPath": "workflows/a.md"}, headers=headers)
    ).json()
    assert {j["id"] for j in by_path["jobs"]} == {ids[0], ids[2]}
    page = (await cloud.client.get(url, params={"limit": 1, "offset": 1}, headers=headers)).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    assert [j["id"] for j in page["jobs"]] == [ids[1]]
    text = (await cloud.client.get(url, params={"q": "SVC2"}, headers=headers)).json()
    assert [j["id"] for j in text["jobs"]] == [ids[2]]
    active = (await cloud.client.get(url, params={"group": "active"}, headers=headers)).json()
    assert active["total"] == 3
    stopped = (await cloud.client.get(url, params={"group": "stopped"}, headers=headers)).json()
    assert stopped == {"jobs": [], "total": 0, "limit": 50, "offset": 0}
    queued = (await cloud.client.get(url, params={"status": "queued"}, headers=headers)).json()
    assert queued["total"] == 3

    bad = await cloud.client.get(url, params={"limit": 0}, headers=headers)
    assert bad.status_code == 400
    assert "limit" in bad.json()["error"]
    twice = await cloud.client.get(url, params=[("q", "SVC1"), ("q", "SVC2")], headers=headers)
    assert twice.status_code == 400
    assert [i["path"] for i in twice.json()["issues"]] == ["query.q"]


async def test_a_member_of_one_team_never_reaches_another_teams_jobs(cloud: Cloud) -> None:
    alice, team_a = await member_team(cloud)
    bob, team_b = await member_team(cloud)
    job_b = (await create(cloud, bob, team_b))["jobId"]

    for team_id in (team_a, team_b):  # her own team's path, and the other team's
        base = f"/teams/{team_id}/jobs/{job_b}"
        assert (await cloud.client.get(base, headers=alice.headers)).status_code == 404
        assert (await cloud.client.get(f"{base}/stream", headers=alice.headers)).status_code == 404
        cancel = await cloud.client.post(f"{base}/cancel", headers=alice.headers)
        assert cancel.status_code == 404
        assert (await cloud.client.delete(base, headers=alice.headers)).status_code == 404
    listed = await cloud.client.get(f"/teams/{team_a}/jobs", headers=alice.headers)
    assert listed.json()["total"] == 0
    # untouched
    still = await cloud.client.get(f"/teams/{team_b}/jobs/{job_b}", headers=bob.headers)
    assert still.json()["status"] == "queued"
    unauthenticated = await cloud.client.get(f"/teams/{team_b}/jobs")
    assert unauthenticated.status_code == 401


async def test_cancelling_a_queued_job_cancels_it_and_its_dispatch(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    job_id = (await create(cloud, account, team_id))["jobId"]
    base = f"/teams/{team_id}/jobs/{job_id}"

    paused = await cloud.client.post(f"{base}/pause", headers=account.headers)
    assert paused.status_code == 409
    resumed = await cloud.client.post(f"{base}/resume", headers=account.headers)
    assert resumed.status_code == 409
    assert resumed.json() == {"error": "Job is already queued"}

    cancelled = await cloud.client.post(
        f"{base}/cancel", json={"reason": "wrong repo"}, headers=account.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {"cancelled": job_id, "status": "cancelled"}
    again = await cloud.client.post(f"{base}/cancel", headers=account.headers)
    assert again.json() == {"cancelled": job_id, "status": "cancelled"}

    rows = await cloud.rows("SELECT state FROM runner_commands WHERE job_id = :j", j=job_id)
    assert [r["state"] for r in rows] == ["cancelled"]
    got = (await cloud.client.get(base, headers=account.headers)).json()
    assert got["status"] == "cancelled"
    lines = await follow(cloud.client, f"{base}/stream", account.headers)
    assert lines[0].data.endswith("[control] Job cancelled: wrong repo")
    assert lines[-1].event == "done" and lines[-1].data == "cancelled"

    message = await cloud.client.post(
        f"{base}/message", json={"message": "hello"}, headers=account.headers
    )
    assert message.status_code == 409
    assert (await cloud.client.delete(base, headers=account.headers)).status_code == 204
    assert (await cloud.client.get(base, headers=account.headers)).status_code == 404


async def test_bad_bodies_are_400_json(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    url = f"/teams/{team_id}/jobs"
    missing = await cloud.client.post(url, json={}, headers=account.headers)
    assert missing.status_code == 400
    assert "workflowPath" in missing.json()["error"]
    unknown = await cloud.client.post(
        url, json={"workflowPath": "w.md", "colour": "red"}, headers=account.headers
    )
    assert unknown.status_code == 400
    malformed = await cloud.client.post(
        url,
        content=b"{not json",
        headers={**account.headers, "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.json() == {"error": "Malformed JSON body"}
    job_id = (await create(cloud, account, team_id))["jobId"]
    empty = await cloud.client.post(
        f"{url}/{job_id}/message", json={"message": ""}, headers=account.headers
    )
    assert empty.status_code == 400
    bad_id = await cloud.client.get(f"{url}/not%20an%20id", headers=account.headers)
    assert bad_id.status_code == 400
    rows = await cloud.rows("SELECT count(*) AS n FROM team_jobs")
    assert rows[0]["n"] == 1


async def test_the_stream_replays_the_mirror_and_resumes_after_last_event_id(
    cloud: Cloud,
) -> None:
    account, team_id = await member_team(cloud)
    job_id = (await create(cloud, account, team_id))["jobId"]
    await log_lines(cloud, team_id, job_id, *(f"2025-01-01T00:00:00Z line {n}" for n in range(5)))
    await set_status(cloud, team_id, job_id, "complete")
    path = f"/teams/{team_id}/jobs/{job_id}/stream"

    full = await follow(cloud.client, path, account.headers)
    assert [f.id for f in full[:-1]] == ["0", "1", "2", "3", "4"]
    assert full[2].data == "2025-01-01T00:00:00Z line 2"
    assert (full[-1].event, full[-1].data) == ("done", "complete")

    resumed = await follow(cloud.client, path, {**account.headers, "Last-Event-ID": "2"})
    assert [f.id for f in resumed[:-1]] == ["3", "4"]
    via_query = await follow(cloud.client, path, account.headers, lastEventId="3")
    assert [f.id for f in via_query[:-1]] == ["4"]
    tail = await follow(cloud.client, path, account.headers, tail=2)
    assert [f.id for f in tail[:-1]] == ["3", "4"]

    for bad in ("abc", "-2", str(10**18), "+5", "5_0"):
        refused = await cloud.client.get(path, headers={**account.headers, "Last-Event-ID": bad})
        assert refused.status_code == 400
        assert "Last-Event-ID" in refused.json()["error"]


async def test_a_line_stored_later_reaches_an_open_stream_then_done(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_routes, "HEARTBEAT_SECONDS", 0.2)
    account, team_id = await member_team(cloud)
    job_id = (await create(cloud, account, team_id))["jobId"]
    await log_lines(cloud, team_id, job_id, "t0 first")
    path = f"/teams/{team_id}/jobs/{job_id}/stream"
    async with (
        asyncio.timeout(WAIT_LIMIT),
        cloud.client.stream("GET", path, headers=account.headers) as response,
    ):
        stream = frames(response)
        assert [(f.id, f.data) for f in await read_until(stream, 1)] == [("0", "t0 first")]
        async for frame in stream:  # idle: heartbeats keep it open
            if "heartbeat" in frame.comments:
                break
        await log_lines(cloud, team_id, job_id, "t1 second", "t2 third")
        live = await read_until(stream, 2)
        assert [(f.id, f.data) for f in live] == [("1", "t1 second"), ("2", "t2 third")]
        await set_status(cloud, team_id, job_id, "complete")
        done = await read_until(stream, 1)
        assert (done[0].event, done[0].data) == ("done", "complete")


async def test_a_line_stored_through_another_instance_reaches_the_stream(
    cloud_factory: CloudFactory,
) -> None:
    prefix = f"coro-test-{secrets.token_hex(4)}:"
    settings = {"redis_url": REDIS_URL, "redis_channel_prefix": prefix}
    async with cloud_factory(**settings) as first, cloud_factory(**settings) as second:
        account, team_id = await member_team(first)
        job_id = (await create(first, account, team_id))["jobId"]
        path = f"/teams/{team_id}/jobs/{job_id}/stream"
        async with (
            asyncio.timeout(WAIT_LIMIT),
            first.client.stream("GET", path, headers=account.headers) as response,
        ):
            stream = frames(response)
            # a line stored through the second instance (its broker publishes on Redis)
            await log_lines(second, team_id, job_id, "t0 from elsewhere")
            got = await read_until(stream, 1)
            assert [(f.id, f.data) for f in got] == [("0", "t0 from elsewhere")]
            await set_status(second, team_id, job_id, "failed")
            done = await read_until(stream, 1)
            assert (done[0].event, done[0].data) == ("done", "failed")


# --------------------------------------------------------------- with a scripted runner


async def runner_token(cloud: Cloud, account: Account, team_id: str) -> str:
    minted = await cloud.client.post(
        f"/teams/{team_id}/runner-tokens", json={"name": "laptop"}, headers=account.headers
    )
    assert minted.status_code == 201, minted.text
    return str(minted.json()["token"])


@asynccontextmanager
async def connected_runner(
    cloud: Cloud, account: Account, team_id: str, runner_id: str = "laptop"
) -> AsyncIterator[RunnerClient]:
    token = await runner_token(cloud, account, team_id)
    async with runner_client(cloud.served.url, token) as runner:
        await runner.register(runner_id, capacity=2)
        yield runner


async def test_a_create_answered_by_the_runner_returns_its_job(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    async with connected_runner(cloud, account, team_id) as runner:
        posting = asyncio.create_task(
            cloud.client.post(
                f"/teams/{team_id}/jobs",
                json={"workflowPath": "workflows/fix.md", "serviceName": "api"},
                headers=account.headers,
            )
        )
        dispatch = await runner.command()
        assert dispatch["type"] == "event:dispatch"
        assert dispatch["request"] == {
            "workflowPath": "workflows/fix.md",
            "serviceName": "api",
            "type": "job",
            "params": {},
        }
        job_id = dispatch["jobId"]
        await runner.answer(
            dispatch,
            data={"jobId": job_id, "type": "job", "status": "planning", "streamUrl": "x"},
        )
        response = await posting
        assert response.status_code == 201, response.text
        assert response.json() == {
            "jobId": job_id,
            "type": "job",
            "status": "planning",
            "streamUrl": f"/teams/{team_id}/jobs/{job_id}/stream",
        }
        rows = await cloud.rows("SELECT state FROM runner_commands WHERE job_id = :j", j=job_id)
        assert [r["state"] for r in rows] == ["done"]


async def test_a_create_the_runner_refuses_is_its_400_and_the_job_fails(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    async with connected_runner(cloud, account, team_id) as runner:
        posting = asyncio.create_task(
            cloud.client.post(
                f"/teams/{team_id}/jobs",
                json={"workflowPath": "workflows/nope.md"},
                headers=account.headers,
            )
        )
        dispatch = await runner.command()
        await runner.answer(
            dispatch, ok=False, status=400, error="Workflow not found: workflows/nope.md"
        )
        response = await posting
        assert response.status_code == 400
        assert response.json() == {"error": "Workflow not found: workflows/nope.md"}
        job_id = dispatch["jobId"]
        base = f"/teams/{team_id}/jobs/{job_id}"
        assert (await cloud.client.get(base, headers=account.headers)).json()["status"] == "failed"
        lines = await follow(cloud.client, f"{base}/stream", account.headers)
        assert "Workflow not found: workflows/nope.md" in lines[0].data
        assert (lines[-1].event, lines[-1].data) == ("done", "failed")


async def test_controls_of_a_runners_job_are_forwarded_to_it(cloud: Cloud) -> None:
    account, team_id = await member_team(cloud)
    async with connected_runner(cloud, account, team_id) as runner:
        job_id = "api-job-1-abcd"
        stored = await runner.rpc(
            {"type": "job:update", "jobId": job_id, "rev": 1, "job": job_json(job_id)}
        )
        assert stored["ok"], stored
        base = f"/teams/{team_id}/jobs/{job_id}"

        cancelling = asyncio.create_task(
            cloud.client.post(f"{base}/cancel", json={"reason": "enough"}, headers=account.headers)
        )
        command = await runner.command()
        assert (command["type"], command["jobId"], command["reason"]) == (
            "event:cancel",
            job_id,
            "enough",
        )
        # (a runner answers with the job; the cloud answers as the runner's route does)
        await runner.answer(command, data=job_json(job_id, status="cancelled"), status=200)
        response = await cancelling
        assert response.status_code == 200
        assert response.json() == {"cancelled": job_id, "status": "cancelled"}

        pausing = asyncio.create_task(cloud.client.post(f"{base}/pause", headers=account.headers))
        command = await runner.command()
        await runner.answer(command, ok=False, status=409, error="Job is cancelled")
        refused = await pausing
        assert (refused.status_code, refused.json()) == (409, {"error": "Job is cancelled"})

        reading = asyncio.create_task(
            cloud.client.get(f"{base}/artifacts/plan-1/content", headers=account.headers)
        )
        command = await runner.command()
        assert (command["type"], command["method"], command["path"]) == (
            "event:request",
            "GET",
            f"/jobs/{job_id}/artifacts/plan-1/content",
        )
        await runner.answer(
            command,
            data={
                "status": 200,
                "contentType": "text/markdown; charset=utf-8",
                "bodyBase64": base64.b64encode(b"# The plan\n").decode(),
            },
        )
        content = await reading
        assert content.status_code == 200
        assert content.headers["content-type"] == "text/markdown; charset=utf-8"
        assert content.content == b"# The plan\n"

        missing = asyncio.create_task(
            cloud.client.get(f"{base}/artifacts/nope/content", headers=account.headers)
        )
        command = await runner.command()
        not_found = b'{"error":"Job not found: api-job-1-abcd/artifacts/nope"}'
        await runner.answer(
            command,
            ok=False,
            status=404,
            error="Job not found: api-job-1-abcd/artifacts/nope",
            data={
                "status": 404,
                "contentType": "application/json",
                "bodyBase64": base64.b64encode(not_found).decode(),
            },
        )
        answered = await missing
        assert answered.status_code == 404
        assert answered.content == not_found

        # a running job stays: deleting the team's copy waits until it stopped
        deleting = await cloud.client.delete(base, headers=account.headers)
        assert deleting.status_code == 409

    # the runner is gone: a control is queued for it, durably
    queued = await cloud.client.post(
        f"{base}/message", json={"message": "later"}, headers=account.headers
    )
    assert queued.status_code == 202
    body = queued.json()
    assert body["queued"] is True and body["jobId"] == job_id
    rows = await cloud.rows(
        "SELECT type, state, runner_id, frame FROM runner_commands WHERE id = :i",
        i=body["commandId"],
    )
    assert [(r["type"], r["state"], r["runner_id"]) for r in rows] == [
        ("event:message", "pending", "laptop")
    ]
    assert json.loads(json.dumps(rows[0]["frame"]))["message"] == "later"
