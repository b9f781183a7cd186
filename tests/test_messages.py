"""Developer messages reach the agent wherever the job is: live, queued, parked, escalated."""

from __future__ import annotations

from coro.config import CoroHome
from tests.conftest import Api, ApiFactory, make_config, user_prompts, write_workflow

ONE_PHASE = [{"name": "work", "agent": None}]


async def test_message_during_a_live_turn_is_injected_into_that_turn(api: Api) -> None:
    workflow = write_workflow(api.home, "live", ONE_PHASE)
    gate = "go.flag"
    script = {
        "work": [
            {"text": "waiting for the flag"},
            {"tool": "shell", "input": {"command": f"while [ ! -f {gate} ]; do sleep 0.02; done"}},
            {"text": "flag seen"},
        ]
    }
    job_id = await api.create(workflow, script)
    await api.wait_for_line(job_id, "→ shell")
    response = await api.client.post(f"/jobs/{job_id}/message", json={"message": "also add tests"})
    assert response.json()["delivery"] == "live"
    (api.runner.env.workdir(job_id) / gate).write_text("")
    assert (await api.finish(job_id)).done == "complete"
    job = await api.job(job_id)
    history = job["conversationHistory"]
    live = [m for m in history if m["role"] == "user" and "[DEVELOPER MESSAGE]" in m["content"]]
    assert len(live) == 1
    assert "> also add tests" in live[0]["content"]
    position = history.index(live[0])
    assert history[position + 1]["content"] == "flag seen"


async def test_message_to_a_queued_job_waits_for_its_first_phase(api_factory: ApiFactory) -> None:
    async with api_factory(make_config(maxConcurrent=1)) as api:
        workflow = write_workflow(api.home, "queued", ONE_PHASE)
        blocker = await api.create(workflow, {"work": [{"sleep": 600}]})
        await api.wait_for_line(blocker, "Runner started")
        waiting = await api.create(workflow, {"work": [{"text": "ran"}]})
        assert (await api.job(waiting))["status"] == "queued"
        response = await api.client.post(f"/jobs/{waiting}/message", json={"message": "hello"})
        assert response.json().get("delivery") == "next-phase", response.text
        await api.client.post(f"/jobs/{blocker}/cancel")  # frees the only slot
        assert (await api.finish(waiting)).done == "complete"
        first_prompt = user_prompts(await api.job(waiting))[0]
        assert "> hello" in first_prompt


async def test_message_resumes_an_escalated_job_with_its_reason(api: Api) -> None:
    workflow = write_workflow(api.home, "escalating", ONE_PHASE)
    script = {
        "work": [
            [{"tool": "escalate", "input": {"reason": "the tests need a database"}}],
            [{"text": "using sqlite instead"}],
        ]
    }
    job_id = await api.create(workflow, script)
    stopped = await api.finish(job_id)
    assert stopped.done == "escalated"
    assert "[escalated] the tests need a database" in stopped.texts()
    job = await api.job(job_id)
    assert job["escalationMessage"] == "the tests need a database"

    await api.client.post(f"/jobs/{job_id}/message", json={"message": "use sqlite"})
    result = await api.finish(job_id)
    assert result.done == "complete"
    prompt = user_prompts(await api.job(job_id))[-1]
    assert "> the tests need a database" in prompt
    assert "> use sqlite" in prompt


async def test_manual_resume_from_another_phase_with_a_fresh_session(api: Api) -> None:
    phases = [{"name": "design", "agent": None}, {"name": "build", "agent": None}]
    workflow = write_workflow(api.home, "resumable", phases)
    script = {
        "design": [{"text": "designing"}],
        "build": [
            [{"tool": "escalate", "input": {"reason": "design is wrong"}}],
            [{"text": "built"}],
        ],
    }
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "escalated"
    bad = await api.client.post(f"/jobs/{job_id}/resume", json={"fromPhase": "nowhere"})
    assert bad.status_code == 400
    response = await api.client.post(f"/jobs/{job_id}/resume", json={"fromPhase": "design"})
    assert response.status_code == 200
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert "[manual-resume] Restarting from phase: design (fresh session)" in result.texts()
    job = await api.job(job_id)
    assert job["phaseVisits"] == {"design": 2, "build": 2}
    # The fresh session dropped the transcript of the first attempt.
    assert not any("design is wrong" in str(m) for m in job["conversationHistory"])


async def test_insights_recorded_by_the_agent_are_listed(api: Api) -> None:
    workflow = write_workflow(api.home, "insightful", ONE_PHASE)
    script = {
        "work": [
            {
                "tool": "add_insight",
                "input": {
                    "category": "convention",
                    "summary": "Use pytest",
                    "detail": "The repo uses pytest.",
                    "suggestedLayer": "repo",
                },
            }
        ]
    }
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "complete"
    listing = (await api.client.get(f"/jobs/{job_id}/insights")).json()
    assert listing["jobId"] == job_id
    assert listing["inheritedCount"] == 0
    (insight,) = listing["insights"]
    assert insight["summary"] == "Use pytest"
    assert insight["status"] == "pending"
    assert insight["phase"] == "work"


async def test_workflows_are_listed_through_the_layers(api: Api) -> None:
    write_workflow(api.home, "tenant-only", ONE_PHASE)
    listing = (await api.client.get("/workflows")).json()
    paths = {w["workflowPath"]: w["source"] for w in listing["workflows"]}
    assert paths["workflows/tenant-only/workflow.md"] == "tenant"
    assert paths["workflows/demo/workflow.md"] == "base"
    campaigns = (await api.client.get("/workflows", params={"kind": "campaign"})).json()
    assert [w["workflowPath"] for w in campaigns["workflows"]] == ["workflows/campaign/workflow.md"]
    bad = await api.client.get("/workflows", params={"kind": "weird"})
    assert bad.status_code == 400


async def test_proposals_on_disk_are_listed_and_filtered(
    api_factory: ApiFactory, home: CoroHome
) -> None:
    """Proposals an older runner kept as files are imported when the runner starts."""
    import json

    root = home.root / "intelligence" / "proposals"
    for n, status in enumerate(["pending", "approved"]):
        folder = root / f"proposal-{n}"
        folder.mkdir(parents=True)
        (folder / "proposal.json").write_text(
            json.dumps(
                {
                    "id": f"proposal-{n}",
                    "tenantId": "local",
                    "jobId": "j",
                    "type": "modify-agent",
                    "title": f"p{n}",
                    "status": status,
                    "files": [{"path": "agents/coder.md", "content": "x"}],
                    "createdAt": f"2026-01-0{n + 1}T00:00:00Z",
                    "updatedAt": "2026-01-01T00:00:00Z",
                }
            )
        )
    (root / "broken").mkdir()
    (root / "broken" / "proposal.json").write_text("{not json")
    async with api_factory() as api:
        listing = (await api.client.get("/proposals")).json()
        assert listing["count"] == 2
        assert [p["id"] for p in listing["proposals"]] == ["proposal-1", "proposal-0"]
        assert listing["proposals"][0]["fileCount"] == 1
        pending = (await api.client.get("/proposals", params={"status": "pending"})).json()
        assert [p["title"] for p in pending["proposals"]] == ["p0"]
        bad = await api.client.get("/proposals", params={"status": "maybe"})
        assert bad.status_code == 400
