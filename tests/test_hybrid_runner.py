"""A hybrid runner (`cloud.url` + `cloud.token`) against a real cloud: its jobs and log
lines replicated to the cloud's mirror (exactly once, in order, across cloud restarts
and while the cloud is away), the cloud's commands executed by the runner, and its
status for the dashboard."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.domain.cloud_protocol import (
    CloudCommand,
    EventPluginWebhook,
    RpcResponse,
    cloud_command,
)
from coro.intelligence.proposals import propose
from coro.state.cloud.link import new_message_id
from coro.state.proposals import ProposalFile
from coro.state.rows import load_job
from tests.cloud_helpers import WAIT_LIMIT, Cloud, CloudFactory
from tests.conftest import Api, ApiFactory, write_workflow
from tests.hybrid_helpers import (
    FAST,
    Paired,
    mirror_jobs,
    mirror_lines,
    pair,
    revoke,
    wait_registrations,
    wait_state,
)

pytest_plugins = ("tests.cloud_fixtures",)

ONE_PHASE = [{"name": "work", "agent": None}]
DONE = {"work": [{"text": "all done"}]}
ASKS = {
    "work": [
        [{"tool": "await_event", "input": {"eventName": "developer-input: which database?"}}],
        [{"text": "thanks, done"}],
    ]
}


def hybrid_config(url: str, token: str) -> CoroConfig:
    return CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "cloud": {"url": url, "token": token}}
    )


async def flushed(api: Api) -> None:
    backend = api.runner.cloud_backend
    assert backend is not None
    async with asyncio.timeout(WAIT_LIMIT):
        await backend.flush()


async def assert_mirrored(api: Api, cloud: Cloud, team_id: str, job_id: str) -> None:
    """The cloud holds the job as the runner stores it, and each of its lines once."""
    await flushed(api)
    local = await api.runner.backend.get_job(job_id)
    assert local is not None
    stored = (await mirror_jobs(cloud, team_id))[job_id]
    assert load_job(stored["doc"]) == local
    assert api.runner.link is not None and stored["runner_id"] == api.runner.link.runner_id
    lines = [(e.index, e.line) for e in await api.runner.backend.read_logs(job_id)]
    assert lines
    assert await mirror_lines(cloud, team_id, job_id) == lines


@pytest.fixture
async def paired(cloud: Cloud) -> Paired:
    return await pair(cloud)


async def test_a_hybrid_runner_replicates_its_jobs_and_says_so(
    cloud: Cloud, paired: Paired, api_factory: ApiFactory
) -> None:
    config = hybrid_config(cloud.served.url, paired.token)
    async with api_factory(config, link_timings=FAST) as api:
        assert api.runner.link is not None
        await wait_state(api.runner.link, "connected")
        health = (await api.client.get("/health")).json()
        assert health["mode"] == "hybrid"
        status = (await api.client.get("/cloud")).json()
        assert status == {
            "mode": "hybrid",
            "url": cloud.served.url,
            "state": "connected",
            "teamId": paired.team_id,
            "teamName": paired.team["name"],
            "runnerId": api.runner.link.runner_id,
            "lastError": None,
            "webhookPlugins": [],
        }
        shown = (await api.client.get("/config")).json()["config"]["cloud"]
        assert shown["token"] != paired.token and paired.token not in json.dumps(shown)

        workflow = write_workflow(api.home, "simple", ONE_PHASE)
        job_id = await api.create(workflow, DONE)
        result = await api.finish(job_id)

        assert result.done == "complete"
        await assert_mirrored(api, cloud, paired.team_id, job_id)
        team_job = await cloud.client.get(
            f"/teams/{paired.team_id}/jobs/{job_id}", headers=paired.admin.headers
        )
        assert team_job.status_code == 200 and team_job.json()["status"] == "complete"


async def test_a_local_runner_has_no_cloud(api: Api) -> None:
    assert (await api.client.get("/cloud")).json() == {
        "mode": "local",
        "url": None,
        "state": "off",
        "teamId": None,
        "teamName": None,
        "runnerId": None,
        "lastError": None,
        "webhookPlugins": [],
    }
    refused = await api.client.get("/cloud/runners")
    assert refused.status_code == 409
    assert "not paired" in refused.json()["error"]


async def test_a_hybrid_runner_lists_its_teams_runners(
    cloud: Cloud, paired: Paired, api_factory: ApiFactory
) -> None:
    other_team = await pair(cloud)  # another team's runner is never listed
    config = hybrid_config(cloud.served.url, paired.token)
    other = hybrid_config(cloud.served.url, other_team.token)
    async with (
        api_factory(config, link_timings=FAST) as api,
        api_factory(other, link_timings=FAST) as stranger,
    ):
        assert api.runner.link is not None and stranger.runner.link is not None
        await wait_state(api.runner.link, "connected")
        await wait_state(stranger.runner.link, "connected")
        listed = await api.client.get("/cloud/runners")
        assert listed.status_code == 200, listed.text
        runners = listed.json()["runners"]
        assert [r["runnerId"] for r in runners] == [api.runner.link.runner_id]
        assert runners[0]["status"] == "idle"
        assert runners[0]["capacity"] >= 1


async def test_lines_reach_the_mirror_once_and_in_order_across_a_cloud_restart(
    cloud_factory: CloudFactory, api_factory: ApiFactory
) -> None:
    async with contextlib.AsyncExitStack() as first_cloud:
        first = await first_cloud.enter_async_context(cloud_factory())
        paired = await pair(first)
        port = first.served.port
        config = hybrid_config(first.served.url, paired.token)
        async with api_factory(config, link_timings=FAST) as api:
            link = api.runner.link
            assert link is not None
            await wait_state(link, "connected")
            workflow = write_workflow(api.home, "asks", ONE_PHASE)
            job_id = await api.create(workflow, ASKS)
            await api.wait_for_line(job_id, "Job parked")
            await assert_mirrored(api, first, paired.team_id, job_id)

            await first_cloud.aclose()  # the cloud goes away; the job goes on locally
            await wait_state(link, "disconnected", "connecting")
            answer = await api.client.post(f"/jobs/{job_id}/message", json={"message": "PG"})
            assert answer.status_code == 200
            assert (await api.finish(job_id)).done == "complete"

            async with cloud_factory(port=port) as second:
                await wait_registrations(link, 2)
                await assert_mirrored(api, second, paired.team_id, job_id)
                stored = (await mirror_jobs(second, paired.team_id))[job_id]
                assert load_job(stored["doc"]).status == "complete"


async def test_a_restarted_runner_resends_nothing_the_cloud_has(
    cloud: Cloud, paired: Paired, api_factory: ApiFactory
) -> None:
    config = hybrid_config(cloud.served.url, paired.token)
    async with api_factory(config, link_timings=FAST) as api:
        assert api.runner.link is not None
        await wait_state(api.runner.link, "connected")
        workflow = write_workflow(api.home, "asks", ONE_PHASE)
        job_id = await api.create(workflow, ASKS)
        await api.wait_for_line(job_id, "Job parked")
        await assert_mirrored(api, cloud, paired.team_id, job_id)
        rev = (await mirror_jobs(cloud, paired.team_id))[job_id]["rev"]
        runner_id = api.runner.link.runner_id

    async with api_factory(config, link_timings=FAST) as api:  # the same $CORO_HOME
        assert api.runner.link is not None
        await wait_state(api.runner.link, "connected")
        assert api.runner.link.runner_id == runner_id
        await flushed(api)
        before = (await mirror_jobs(cloud, paired.team_id))[job_id]
        # a parked job is left as it was: nothing of it is sent again
        assert before["rev"] == rev
        assert load_job(before["doc"]) == await api.runner.backend.get_job(job_id)

        await api.client.post(f"/jobs/{job_id}/message", json={"message": "PG"})
        assert (await api.finish(job_id)).done == "complete"

        await assert_mirrored(api, cloud, paired.team_id, job_id)
        assert (await mirror_jobs(cloud, paired.team_id))[job_id]["rev"] > before["rev"]


async def test_a_job_run_before_the_cloud_is_reachable_is_replicated_once_it_is(
    cloud_factory: CloudFactory, api_factory: ApiFactory
) -> None:
    async with cloud_factory() as first:
        paired = await pair(first)
        port = first.served.port
        url = first.served.url
    config = hybrid_config(url, paired.token)
    async with api_factory(config, link_timings=FAST) as api:  # starts without the cloud
        link = api.runner.link
        assert link is not None
        await wait_state(link, "disconnected")
        assert (await api.client.get("/cloud")).json()["lastError"].startswith("cannot connect")
        workflow = write_workflow(api.home, "simple", ONE_PHASE)
        job_id = await api.create(workflow, DONE)
        assert (await api.finish(job_id)).done == "complete"

        async with cloud_factory(port=port) as cloud:
            await wait_registrations(link, 1)
            await assert_mirrored(api, cloud, paired.team_id, job_id)


async def test_the_cloud_dispatches_and_controls_jobs_through_the_runner(
    cloud: Cloud, paired: Paired, api_factory: ApiFactory
) -> None:
    config = hybrid_config(cloud.served.url, paired.token)
    async with api_factory(config, link_timings=FAST) as api:
        assert api.runner.link is not None
        await wait_state(api.runner.link, "connected")
        workflow = write_workflow(api.home, "asks", ONE_PHASE)

        created = await cloud.client.post(
            f"/teams/{paired.team_id}/jobs",
            json={"workflowPath": workflow, "params": {"script": ASKS}},
            headers=paired.admin.headers,
        )

        assert created.status_code == 201, created.text
        job_id = created.json()["jobId"]
        await api.wait_for_line(job_id, "Job parked")  # the runner has it, under that id
        cancelled = await cloud.client.post(
            f"/teams/{paired.team_id}/jobs/{job_id}/cancel",
            json={"reason": "not needed"},
            headers=paired.admin.headers,
        )
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["cancelled"] == job_id
        assert (await api.job(job_id))["status"] == "cancelled"
        await assert_mirrored(api, cloud, paired.team_id, job_id)
        refused = await cloud.client.post(
            f"/teams/{paired.team_id}/jobs/{job_id}/resume",
            json={},
            headers=paired.admin.headers,
        )
        assert refused.status_code == 409  # as the runner's own API answers
        assert "cancelled" in refused.json()["error"]


async def test_a_revoked_runner_keeps_running_its_jobs_locally(
    cloud: Cloud, paired: Paired, api_factory: ApiFactory
) -> None:
    config = hybrid_config(cloud.served.url, paired.token)
    async with api_factory(config, link_timings=FAST) as api:
        link = api.runner.link
        assert link is not None
        await wait_state(link, "connected")

        await revoke(cloud, paired)

        await wait_state(link, "revoked")
        status = (await api.client.get("/cloud")).json()
        assert status["state"] == "revoked" and "revoked" in status["lastError"]
        workflow = write_workflow(api.home, "simple", ONE_PHASE)
        job_id = await api.create(workflow, DONE)
        assert (await api.finish(job_id)).done == "complete"


async def test_a_proposal_is_reviewed_in_the_cloud_and_applied_by_the_runner(
    cloud: Cloud, paired: Paired, api_factory: ApiFactory
) -> None:
    config = hybrid_config(cloud.served.url, paired.token)
    async with api_factory(config, link_timings=FAST) as api:
        assert api.runner.link is not None
        await wait_state(api.runner.link, "connected")
        workflow = write_workflow(api.home, "simple", ONE_PHASE)
        job_id = await api.create(workflow, DONE)
        await api.finish(job_id)
        content = "# Reviewer\n\nCheck the tests first.\n"
        proposed = await propose(
            api.runner.backend.proposals,
            job_id=job_id,
            phase="work",
            proposal_type="new-agent",
            title="A reviewer",
            rationale="Reviews were thin",
            description="",
            files=[ProposalFile(path="agents/reviewer.md", content=content)],
            target_layer="tenant",
        )
        await flushed(api)
        listed = await cloud.client.get(
            f"/teams/{paired.team_id}/proposals", headers=paired.admin.headers
        )
        assert [p["id"] for p in listed.json()["proposals"]] == [proposed.proposal.id]

        approved = await cloud.client.post(
            f"/teams/{paired.team_id}/proposals/{proposed.proposal.id}/approve",
            json={},
            headers=paired.admin.headers,
        )

        assert approved.status_code == 200, approved.text
        written = api.runner.env.layers.tenant_dir / "agents" / "reviewer.md"
        assert written.read_text() == content
        local = await api.runner.backend.proposals.get(proposed.proposal.id)
        assert local is not None and local.status == "approved" and local.applied_at


# --- the commands, handled by a runner (in process) ---------------------------------


async def handle(api: Api, frame: dict[str, Any]) -> RpcResponse:
    command: CloudCommand = cloud_command.validate_python({"messageId": new_message_id(), **frame})
    return await api.runner.cloud_commands.handle(command)


async def test_a_dispatch_creates_the_job_under_its_id_once(api: Api) -> None:
    workflow = write_workflow(api.home, "simple", ONE_PHASE)
    request = {"workflowPath": workflow, "params": {"script": DONE}}
    frame = {"type": "event:dispatch", "jobId": "cloud-job-1", "request": request}

    first, second = await asyncio.gather(handle(api, frame), handle(api, frame))

    assert first.ok and second.ok, (first, second)
    assert first.data["id"] == second.data["id"] == "cloud-job-1"
    assert (await api.finish("cloud-job-1")).done == "complete"
    lines = [e.line for e in await api.runner.backend.read_logs("cloud-job-1")]
    assert sum("[created]" in line for line in lines) == 1
    again = await handle(api, frame)
    assert again.ok and again.data["status"] == "complete"


async def test_commands_fail_as_the_runners_api_does(api: Api) -> None:
    bad_workflow = await handle(
        api,
        {"type": "event:dispatch", "jobId": "j-1", "request": {"workflowPath": "nope.md"}},
    )
    unknown_field = await handle(
        api,
        {"type": "event:dispatch", "jobId": "j-2", "request": {"workflowPath": "x", "bogus": 1}},
    )
    dot_dot = await handle(
        api, {"type": "event:dispatch", "jobId": "..", "request": {"workflowPath": "x"}}
    )
    missing = await handle(api, {"type": "event:cancel", "jobId": "no-such-job"})

    assert (bad_workflow.ok, bad_workflow.status) == (False, 400)
    assert (unknown_field.ok, unknown_field.status) == (False, 400)
    assert "bogus" in (unknown_field.error or "")
    assert (dot_dot.ok, dot_dot.status) == (False, 400)
    assert (missing.ok, missing.status) == (False, 404)
    assert missing.data == {"error": "Job not found: no-such-job"}
    assert await api.runner.backend.get_job("j-1") is None


async def test_a_request_is_answered_by_the_runners_api_for_its_jobs_only(api: Api) -> None:
    workflow = write_workflow(api.home, "simple", ONE_PHASE)
    job_id = await api.create(workflow, DONE)
    await api.finish(job_id)

    got = await handle(
        api, {"type": "event:request", "jobId": job_id, "method": "GET", "path": f"/jobs/{job_id}"}
    )
    wrong_phase = await handle(
        api,
        {
            "type": "event:request",
            "jobId": job_id,
            "method": "POST",
            "path": f"/jobs/{job_id}/phases/nope/rerun",
            "body": {},
        },
    )
    outside = [
        await handle(api, {"type": "event:request", "jobId": job_id, "method": "GET", "path": p})
        for p in ("/config", f"/jobs/{job_id}/../../config", f"/jobs/{job_id}x", "http://x/jobs")
    ]
    stream = await handle(
        api,
        {
            "type": "event:request",
            "jobId": job_id,
            "method": "GET",
            "path": f"/jobs/{job_id}/stream",
        },
    )
    not_ours = await handle(
        api, {"type": "event:request", "jobId": "other", "method": "GET", "path": "/jobs/other"}
    )

    assert got.ok and got.data["status"] == 200
    assert got.data["contentType"].startswith("application/json")
    assert json.loads(base64.b64decode(got.data["bodyBase64"]))["id"] == job_id
    assert wrong_phase.ok and wrong_phase.data["status"] == 400  # the API's answer, as it is
    assert all((r.ok, r.status) == (False, 400) for r in outside)
    assert (stream.ok, stream.status) == (False, 400)
    assert (not_ours.ok, not_ours.status) == (False, 404)


async def test_an_applied_proposal_is_written_into_the_tenant_layer(api: Api) -> None:
    content = "# Reviewer\n\nBe thorough.\n"
    applied = await handle(
        api,
        {
            "type": "proposal:apply",
            "proposalId": "p-1",
            "files": [{"path": "agents/reviewer.md", "content": content}],
        },
    )
    escaping = await handle(
        api,
        {
            "type": "proposal:apply",
            "proposalId": "p-2",
            "files": [{"path": "../outside.md", "content": "x"}],
        },
    )

    assert applied.ok, applied
    assert applied.data == {"applied": "p-1", "written": ["agents/reviewer.md"]}
    written = api.runner.env.layers.tenant_dir / "agents" / "reviewer.md"
    assert written.read_text() == content
    assert (escaping.ok, escaping.status) == (False, 400)
    assert not (api.runner.env.layers.tenant_dir.parent / "outside.md").exists()


async def test_a_webhook_for_no_job_wakes_nothing(api: Api) -> None:
    answer = await api.runner.cloud_commands.handle(
        EventPluginWebhook(
            message_id=new_message_id(),
            plugin_id="github",
            headers={"x-github-event": "ping"},
            raw_body_base64=base64.b64encode(b"{}").decode(),
            received_at="2026-01-01T00:00:00.000Z",
        )
    )
    assert answer.ok and answer.data == {"events": 0, "jobIds": []}


async def test_the_runner_learns_which_plugins_reach_it_as_webhooks(
    cloud: Cloud, paired: Paired, api_factory: ApiFactory
) -> None:
    """Setting or removing a webhook secret in the cloud reaches a connected runner at once
    (its poller then leaves that plugin's PRs alone, or polls them again)."""
    config = hybrid_config(cloud.served.url, paired.token)
    async with api_factory(config, link_timings=FAST) as api:
        link = api.runner.link
        assert link is not None
        await wait_state(link, "connected")
        assert not link.receives_webhooks("github")
        url = f"/teams/{paired.team_id}/webhooks/github"
        put = await cloud.client.put(
            url, json={"secret": "a webhook secret of the team"}, headers=paired.admin.headers
        )
        assert put.status_code == 201, put.text
        async with asyncio.timeout(WAIT_LIMIT):
            await link.wait_until(lambda: link.receives_webhooks("github"))
        assert (await api.client.get("/cloud")).json()["webhookPlugins"] == ["github"]
        removed = await cloud.client.delete(url, headers=paired.admin.headers)
        assert removed.status_code == 204
        async with asyncio.timeout(WAIT_LIMIT):
            await link.wait_until(lambda: not link.receives_webhooks("github"))
