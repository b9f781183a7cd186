"""The runners' socket `WS /ws/runner`: authentication before the upgrade, register,
runner RPCs over the team's mirror (scoped, de-duplicated, revision-ordered), bad
frames, replaced and revoked sockets, heartbeats, shutdown; `GET /teams/:t/runners`."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from coro.domain.cloud_protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_REVOKED,
    CLOSE_TIMEOUT,
    CLOSE_TOO_BIG,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
)
from tests.cloud_helpers import WAIT_LIMIT, Cloud, CloudFactory
from tests.cloud_runner_client import (
    RunnerClient,
    job_json,
    runner_client,
    runner_token,
    team_runner,
    ws_url,
)

pytest_plugins = ("tests.cloud_fixtures",)


async def refused(cloud: Cloud, headers: dict[str, str], query: str = "") -> tuple[int, Any]:
    """The HTTP status and JSON body the upgrade was refused with."""
    with pytest.raises(InvalidStatus) as info:
        async with asyncio.timeout(WAIT_LIMIT):
            await connect(ws_url(cloud.served.url) + query, additional_headers=headers)
    response = info.value.response
    return response.status_code, json.loads(response.body or b"null")


async def update(
    client: RunnerClient, job: dict[str, Any], rev: int, message_id: str | None = None
) -> dict[str, Any]:
    frame = {"type": "job:update", "jobId": job["id"], "rev": rev, "job": job}
    if message_id is not None:
        frame["messageId"] = message_id
    return await client.rpc(frame)


async def test_no_token_a_bad_one_or_a_revoked_one_is_http_401(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    assert await refused(cloud, {}) == (401, {"error": "Missing runner token"})
    bad = {"Authorization": "Bearer coro_rt_" + "x" * 43}
    assert await refused(cloud, bad) == (401, {"error": "Invalid or revoked runner token"})
    assert (await refused(cloud, {}, "?token=nonsense"))[0] == 401
    # an access token of a user is not a runner token
    assert (await refused(cloud, team.owner.headers))[0] == 401
    revoke = await cloud.client.delete(
        f"/teams/{team.team_id}/runner-tokens/{team.token_id}", headers=team.owner.headers
    )
    assert revoke.status_code == 204
    status, body = await refused(cloud, {"Authorization": f"Bearer {team.token}"})
    assert (status, body) == (401, {"error": "Invalid or revoked runner token"})


async def test_register_with_the_token_in_the_query_names_the_team(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token, via_query=True) as client:
        registered = await client.register("r1")
    assert registered["type"] == "runner:registered"
    assert registered["runnerId"] == "r1"
    assert registered["teamId"] == team.team_id
    assert registered["teamName"].startswith("Team ")
    assert registered["protocolVersion"] == PROTOCOL_VERSION


async def test_a_registration_forgets_what_no_retry_can_ask_for_any_more(cloud: Cloud) -> None:
    """Answers and finished commands older than a week go; newer ones and unfinished
    ones stay (the tables do not grow forever)."""
    team = await team_runner(cloud)
    for message_id, state, age in (
        ("old-done", "done", timedelta(days=8)),
        ("old-pending", "pending", timedelta(days=8)),
        ("new-done", "done", timedelta(days=1)),
    ):
        await cloud.rows(
            "INSERT INTO runner_commands (team_id, message_id, type, frame, state, done_at) "
            "VALUES (:team, :mid, 'event:cancel', '{}'::jsonb, :state, CAST(:at AS timestamptz)) "
            "RETURNING id",
            team=team.team_id,
            mid=message_id,
            state=state,
            at=datetime.now(UTC) - age,
        )
        await cloud.rows(
            "INSERT INTO rpc_results (team_id, message_id, response, created_at) "
            "VALUES (:team, :mid, '{}'::jsonb, CAST(:at AS timestamptz)) RETURNING message_id",
            team=team.team_id,
            mid=message_id,
            at=datetime.now(UTC) - age,
        )
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
    kept = await cloud.rows("SELECT message_id FROM runner_commands ORDER BY message_id")
    assert [row["message_id"] for row in kept] == ["new-done", "old-pending"]
    answers = await cloud.rows("SELECT message_id FROM rpc_results ORDER BY message_id")
    assert [row["message_id"] for row in answers] == ["new-done"]


async def test_another_major_protocol_version_is_closed_naming_both(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.send({"type": "runner:register", "runnerId": "r1", "protocolVersion": "2.3.0"})
        code, reason = await client.closed()
    assert code == CLOSE_PROTOCOL
    assert "2.3.0" in reason and PROTOCOL_VERSION in reason


@pytest.mark.parametrize(
    "first",
    [
        {"type": "job:get", "messageId": "m1", "jobId": "j1"},
        "not json",
        {"type": "runner:register"},  # no runner id
    ],
)
async def test_anything_before_register_is_closed_as_a_policy_violation(
    cloud: Cloud, first: dict[str, Any] | str
) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.send(first)
        code, reason = await client.closed()
    assert (code, reason) == (CLOSE_POLICY, "the first frame must be runner:register")


async def test_a_repeated_message_id_gets_the_first_answer_and_no_second_effect(
    cloud: Cloud,
) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        first = await update(client, job_json("j1"), 1, message_id="m-create")
        again = await update(client, job_json("j1"), 1, message_id="m-create")
        assert first == again
        assert first["ok"] is True and first["data"] == {"stored": True, "rev": 1}
        log = {"type": "job:log", "jobId": "j1", "messageId": "m-log"}
        one = await client.rpc({**log, "entries": [{"index": 0, "line": "a"}]})
        # same id, other lines: the stored answer, nothing stored
        two = await client.rpc({**log, "entries": [{"index": 1, "line": "b"}]})
        assert one == two and one["data"] == {"added": 1}
        lines = await client.rpc({"type": "job:logGet", "jobId": "j1"})
    assert lines["data"] == {"entries": [{"index": 0, "line": "a"}]}
    rows = await cloud.rows("SELECT id FROM team_jobs WHERE team_id = :t", t=team.team_id)
    assert rows == [{"id": "j1"}]


async def test_a_lower_revision_is_ignored_and_another_runner_refused(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        assert (await update(client, job_json("j1", status="running"), 3))["data"] == {
            "stored": True,
            "rev": 3,
        }
        late = await update(client, job_json("j1", status="queued"), 2)
        assert late["ok"] is True and late["data"] == {"stored": False, "rev": 3}
        got = await client.rpc({"type": "job:get", "jobId": "j1"})
        assert got["data"]["status"] == "running"
    async with runner_client(cloud.served.url, team.token) as other:
        await other.register("r2")
        taken = await update(other, job_json("j1", status="failed"), 10)
    assert (taken["ok"], taken["status"]) == (False, 409)


async def test_log_lines_sent_twice_are_stored_once(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        await update(client, job_json("j1"), 1)
        entries = [{"index": i, "line": f"line {i}"} for i in range(3)]
        first = await client.rpc({"type": "job:log", "jobId": "j1", "entries": entries})
        replay = await client.rpc(
            {"type": "job:log", "jobId": "j1", "entries": [*entries, {"index": 3, "line": "x"}]}
        )
        assert (first["data"], replay["data"]) == ({"added": 3}, {"added": 1})
        window = await client.rpc({"type": "job:logGet", "jobId": "j1", "start": 1, "end": 2})
        assert [e["index"] for e in window["data"]["entries"]] == [1, 2]
        missing = await client.rpc(
            {"type": "job:log", "jobId": "nope", "entries": [{"index": 0, "line": "a"}]}
        )
    assert (missing["ok"], missing["status"]) == (False, 404)


async def test_a_runner_never_reaches_another_teams_jobs(cloud: Cloud) -> None:
    team_a, team_b = await team_runner(cloud), await team_runner(cloud)
    async with runner_client(cloud.served.url, team_a.token) as a:
        await a.register("ra")
        await update(a, job_json("shared-id", status="running"), 5)
        await a.rpc(
            {"type": "job:log", "jobId": "shared-id", "entries": [{"index": 0, "line": "a"}]}
        )
    async with runner_client(cloud.served.url, team_b.token) as b:
        await b.register("rb")
        got = await b.rpc({"type": "job:get", "jobId": "shared-id"})
        assert (got["ok"], got["status"]) == (False, 404)
        log = await b.rpc(
            {"type": "job:log", "jobId": "shared-id", "entries": [{"index": 1, "line": "b"}]}
        )
        assert (log["ok"], log["status"]) == (False, 404)
        deleted = await b.rpc({"type": "job:delete", "jobId": "shared-id"})
        assert deleted["data"] == {"deleted": False}
        listed = await b.rpc({"type": "job:list"})
        assert listed["data"] == {"jobs": [], "total": 0}
        # the same id in team B is team B's own job; team A's is untouched
        await update(b, job_json("shared-id", status="failed"), 9)
    rows = await cloud.rows(
        "SELECT team_id, status, rev FROM team_jobs WHERE id = 'shared-id' ORDER BY rev"
    )
    assert rows == [
        {"team_id": team_a.team_id, "status": "running", "rev": 5},
        {"team_id": team_b.team_id, "status": "failed", "rev": 9},
    ]
    lines = await cloud.rows("SELECT team_id, idx FROM team_job_logs")
    assert lines == [{"team_id": team_a.team_id, "idx": 0}]


async def test_reads_and_refs_over_the_socket(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    ref = {"kind": "pull_request", "pluginId": "github", "repoKey": "a/b", "externalId": "7"}
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        await update(client, job_json("p1", createdAt="2025-01-01T00:00:01.000Z"), 1)
        child = job_json("c1", createdAt="2025-01-01T00:00:02.000Z", campaignParentId="p1")
        await update(client, child, 1)
        listed = await client.rpc({"type": "job:list", "limit": 1})
        assert [j["id"] for j in listed["data"]["jobs"]] == ["c1"]
        assert listed["data"]["total"] == 2
        children = await client.rpc({"type": "job:listChildren", "parentJobId": "p1"})
        assert [j["id"] for j in children["data"]["jobs"]] == ["c1"]
        none = await client.rpc({"type": "job:byExternalRef", "ref": ref})
        assert none["data"] == {"jobId": None}
        mapped = await client.rpc({"type": "job:mapExternalRef", "jobId": "c1", "ref": ref})
        assert mapped["data"] == {"mapped": True}
        found = await client.rpc({"type": "job:byExternalRef", "ref": ref})
        assert found["data"] == {"jobId": "c1"}
        missing = await client.rpc({"type": "job:mapExternalRef", "jobId": "zz", "ref": ref})
        assert missing["status"] == 404
        deleted = await client.rpc({"type": "job:delete", "jobId": "c1"})
        assert deleted["data"] == {"deleted": True}
        gone = await client.rpc({"type": "job:byExternalRef", "ref": ref})
        assert gone["data"] == {"jobId": None}
        proposals = await client.rpc({"type": "proposal:list"})
        assert proposals["data"] == {"proposals": []}
        unknown = await client.rpc(
            {"type": "proposal:update", "proposalId": "p-none", "updates": {"title": "x"}}
        )
        assert (unknown["ok"], unknown["status"]) == (False, 404)


async def test_bad_frames_get_a_400_answer_and_the_socket_lives_on(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        await client.send("{not json")
        answer = await client.unsolicited()
        assert (answer["ok"], answer["status"], answer["messageId"]) == (False, 400, "")
        assert "not JSON" in answer["error"]
        await client.send(json.dumps([1, 2]))
        assert (await client.unsolicited())["status"] == 400
        unknown = await client.rpc({"type": "job:explode"})
        assert unknown["status"] == 400 and "unknown type" in unknown["error"]
        invalid = await client.rpc({"type": "job:get", "jobId": "bad id with spaces"})
        assert invalid["status"] == 400 and "jobId" in invalid["error"]
        not_a_job = await client.rpc(
            {"type": "job:update", "jobId": "j1", "rev": 1, "job": {"id": "j1"}}
        )
        assert not_a_job["status"] == 400 and not_a_job["error"].startswith("Invalid job")
        assert (await update(client, job_json("j2"), 1))["ok"] is True
        mismatch = await client.rpc(
            {"type": "job:update", "jobId": "j1", "rev": 1, "job": job_json("j2")}
        )
        assert mismatch["status"] == 400 and "does not match" in mismatch["error"]
        again = await client.rpc(
            {"type": "runner:register", "runnerId": "r1", "protocolVersion": PROTOCOL_VERSION}
        )
        assert again["status"] == 400
        await client.socket.send(b"\x00binary")
        assert (await client.unsolicited())["status"] == 400
        # still serving
        got = await client.rpc({"type": "job:get", "jobId": "j2"})
        assert got["ok"] is True


async def test_a_frame_over_the_limit_closes_the_socket(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        await client.send('{"type": "job:get", "pad": "' + "x" * MAX_FRAME_BYTES + '"}')
        code, _ = await client.closed()
    assert code == CLOSE_TOO_BIG


async def test_the_same_runner_connecting_again_replaces_the_older_socket(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    async with (
        runner_client(cloud.served.url, team.token) as old,
        runner_client(cloud.served.url, team.token) as new,
    ):
        await old.register("r1")
        await new.register("r1")
        assert await old.closed() == (CLOSE_NORMAL, "replaced")
        assert (await new.rpc({"type": "job:list"}))["ok"] is True
        sessions = await cloud.rows("SELECT runner_id FROM runner_sessions")
        assert sessions == [{"runner_id": "r1"}]


async def test_revoking_the_token_closes_its_live_socket(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        response = await cloud.client.delete(
            f"/teams/{team.team_id}/runner-tokens/{team.token_id}", headers=team.owner.headers
        )
        assert response.status_code == 204
        assert await client.closed() == (CLOSE_REVOKED, "runner token revoked")
    status, _ = await refused(cloud, {"Authorization": f"Bearer {team.token}"})
    assert status == 401


async def test_a_runner_without_heartbeats_is_closed(cloud_factory: CloudFactory) -> None:
    async with cloud_factory(heartbeat_timeout_seconds=0.5) as cloud:
        team = await team_runner(cloud)
        async with runner_client(cloud.served.url, team.token) as client:
            await client.register("r1")
            held = cloud.served.services.gateway.connection(team.team_id, "r1")
            assert held is not None
            code, reason = await client.closed()
        assert code == CLOSE_TIMEOUT and "heartbeat" in reason
        async with asyncio.timeout(WAIT_LIMIT):
            await held.finished.wait()
        assert await cloud.rows("SELECT * FROM runner_sessions") == []


async def test_shutdown_closes_sockets_as_going_away(cloud_factory: CloudFactory) -> None:
    async with cloud_factory() as cloud:
        team = await team_runner(cloud)
        async with runner_client(cloud.served.url, team.token) as client:
            await client.register("r1")
            stop = asyncio.create_task(cloud.served.services.gateway.close())
            assert await client.closed() == (CLOSE_GOING_AWAY, "cloud shutting down")
            await stop


async def test_runners_are_listed_to_members_only(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    member, stranger = await cloud.signup(), await cloud.signup()
    await cloud.add_member(team.team_id, team.owner, member)
    path = f"/teams/{team.team_id}/runners"
    empty = await cloud.client.get(path, headers=member.headers)
    assert (empty.status_code, empty.json()) == (200, [])
    async with (
        runner_client(cloud.served.url, team.token) as idle,
        runner_client(cloud.served.url, team.token) as busy,
    ):
        await idle.register("idle-one", capacity=2)
        await busy.register("busy-one", capacity=3, active=["j1"])
        listed = await cloud.client.get(path, headers=member.headers)
        assert listed.status_code == 200
        by_id = {r["runnerId"]: r for r in listed.json()}
        assert by_id["idle-one"]["status"] == "idle"
        assert (by_id["busy-one"]["status"], by_id["busy-one"]["activeJobIds"]) == (
            "busy",
            ["j1"],
        )
        assert by_id["busy-one"]["capacity"] == 3
        assert by_id["idle-one"]["hostname"] == "test-host"
        assert {"connectedAt", "lastHeartbeatAt", "version"} <= set(by_id["idle-one"])
        hidden = await cloud.client.get(path, headers=stranger.headers)
        assert hidden.status_code == 404
        assert (await cloud.client.get(path)).status_code == 401
    openapi = (await cloud.client.get("/openapi.json")).json()
    assert "/teams/{team_id}/runners" in openapi["paths"]


async def test_a_heartbeat_updates_what_the_team_sees(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    path = f"/teams/{team.team_id}/runners"
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1", capacity=1)
        await client.heartbeat(["j9"], capacity=4)
        # a request after the heartbeat on the same socket: the heartbeat is stored by then
        await client.rpc({"type": "job:list"})
        runners = (await cloud.client.get(path, headers=team.owner.headers)).json()
    assert [(r["activeJobIds"], r["capacity"], r["status"]) for r in runners] == [
        (["j9"], 4, "busy")
    ]


async def test_a_closed_socket_leaves_no_session(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        held = cloud.served.services.gateway.connection(team.team_id, "r1")
        assert held is not None
        assert len(await cloud.rows("SELECT * FROM runner_sessions")) == 1
    async with asyncio.timeout(WAIT_LIMIT):
        await held.finished.wait()
    assert await cloud.rows("SELECT * FROM runner_sessions") == []
    assert cloud.served.services.gateway.connection(team.team_id, "r1") is None


async def test_revocation_and_replacement_reach_sockets_on_another_instance(
    cloud_factory: CloudFactory,
) -> None:
    prefix = f"coro-test-{uuid.uuid4().hex}:"
    redis = {"redis_url": "redis://127.0.0.1:6379/0", "redis_channel_prefix": prefix}
    async with cloud_factory(**redis) as one, cloud_factory(**redis) as two:
        team = await team_runner(one)
        async with (
            runner_client(two.served.url, team.token) as old,
            runner_client(one.served.url, team.token) as new,
        ):
            await old.register("r1")
            held = two.served.services.gateway.connection(team.team_id, "r1")
            assert held is not None
            await new.register("r1")
            assert await old.closed() == (CLOSE_NORMAL, "replaced")
            async with asyncio.timeout(WAIT_LIMIT):
                await held.finished.wait()
            # the old socket's end left the new session alone
            sessions = await one.rows("SELECT runner_id, instance_id FROM runner_sessions")
            assert sessions == [{"runner_id": "r1", "instance_id": one.served.services.instance_id}]
        other, other_id = await runner_token(one, team.owner, team.team_id)
        async with runner_client(two.served.url, other) as client:
            await client.register("r2")
            response = await one.client.delete(
                f"/teams/{team.team_id}/runner-tokens/{other_id}", headers=team.owner.headers
            )
            assert response.status_code == 204
            assert await client.closed() == (CLOSE_REVOKED, "runner token revoked")
