"""Developer controls and engine rules, driven over HTTP against a real runner."""

from __future__ import annotations

import asyncio
from typing import Any

from coro.engine.events import InboundEvent
from tests.conftest import Api, ApiFactory, make_config, user_prompts, write_workflow

ONE_PHASE = [{"name": "work", "agent": None}]
THREE_PHASES = [
    {"name": "first", "agent": None},
    {"name": "second", "agent": None},
    {"name": "third", "agent": None},
]


async def test_developer_input_parks_and_message_reaches_next_visit(api: Api) -> None:
    workflow = write_workflow(api.home, "ask", ONE_PHASE)
    script = {
        "work": [
            [{"tool": "await_event", "input": {"eventName": "developer-input: which database?"}}],
            [{"text": "thanks"}],
        ]
    }
    job_id = await api.create(workflow, script)
    await api.wait_for_line(job_id, "Job parked")
    job = await api.job(job_id)
    assert job["status"] == "awaiting-developer-input"
    assert job["awaitingEvent"] == "developer-input: which database?"

    response = await api.client.post(f"/jobs/{job_id}/message", json={"message": "Use Postgres"})
    assert response.status_code == 200
    assert response.json()["delivery"] == "resumed"
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert "[human] Use Postgres" in result.texts()
    job = await api.job(job_id)
    last_prompt = user_prompts(job)[-1]
    assert "> Use Postgres" in last_prompt
    assert 'waiting for input on: "which database?"' in last_prompt


async def test_interactive_checkpoint_parks_until_approved(api: Api) -> None:
    phases: list[dict[str, Any]] = [
        {"name": "plan", "agent": None, "interactive_checkpoint": True},
        {"name": "build", "agent": None},
    ]
    workflow = write_workflow(api.home, "checkpointed", phases)
    script = {"plan": [{"text": "a plan"}], "build": [{"text": "building"}]}
    job_id = await api.create(workflow, script, interactive=True)
    await api.wait_for_line(job_id, "Job parked")
    job = await api.job(job_id)
    assert job["status"] == "awaiting-developer-input"
    assert job["awaitingNextPhase"] == "build"
    assert job["phase"] == "plan"

    response = await api.client.post(f"/jobs/{job_id}/resume", json={})
    assert response.status_code == 200
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert "[approval] Phase plan approved — advancing to build" in result.texts()
    assert "building" in result.texts()


async def test_message_at_checkpoint_reworks_the_phase_and_parks_again(api: Api) -> None:
    phases: list[dict[str, Any]] = [
        {"name": "plan", "agent": None, "interactive_checkpoint": True},
        {"name": "build", "agent": None},
    ]
    workflow = write_workflow(api.home, "rework", phases)
    script = {"plan": [[{"text": "plan v1"}], [{"text": "plan v2"}]], "build": [{"text": "b"}]}
    job_id = await api.create(workflow, script, interactive=True)
    await api.wait_for_line(job_id, "Job parked")
    await api.client.post(f"/jobs/{job_id}/message", json={"message": "smaller steps"})
    reworked = await api.wait_for_line(job_id, "plan v2")
    parked_again = await api.follow(
        job_id,
        until=lambda line: "Job parked" in line,
        headers={"Last-Event-ID": str(reworked.ids[-1])},
    )
    assert parked_again.texts()[-1] == (
        "Job parked — waiting for: developer-input: approval after plan"
    )
    job = await api.job(job_id)
    assert "asks for changes" in user_prompts(job)[-1]
    assert job["status"] == "awaiting-developer-input"


async def test_turning_interactive_off_releases_a_checkpoint(api: Api) -> None:
    phases: list[dict[str, Any]] = [
        {"name": "plan", "agent": None, "interactive_checkpoint": True},
        {"name": "build", "agent": None},
    ]
    workflow = write_workflow(api.home, "toggle", phases)
    job_id = await api.create(workflow, {"plan": [{"text": "p"}]}, interactive=True)
    await api.wait_for_line(job_id, "Job parked")
    response = await api.client.patch(f"/jobs/{job_id}/interactive", json={"interactive": False})
    assert response.status_code == 200
    assert (await api.finish(job_id)).done == "complete"


async def test_cancel_during_long_sleep_stops_before_later_phases(api: Api) -> None:
    workflow = write_workflow(api.home, "sleepy", THREE_PHASES)
    script = {
        "first": [{"text": "going to sleep"}, {"sleep": 600}, {"text": "woke up"}],
        "second": [{"text": "second phase ran"}],
    }
    job_id = await api.create(workflow, script)
    await api.wait_for_line(job_id, "going to sleep")
    response = await api.client.post(f"/jobs/{job_id}/cancel", json={"reason": "changed my mind"})
    assert response.status_code == 200
    result = await api.finish(job_id)
    assert result.done == "cancelled"
    texts = result.texts()
    assert "woke up" not in texts
    assert "second phase ran" not in texts
    assert not any(t.startswith("Phase advanced") for t in texts)
    assert (await api.job(job_id))["status"] == "cancelled"
    again = await api.client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 200  # idempotent
    resume = await api.client.post(f"/jobs/{job_id}/resume", json={})
    assert resume.status_code == 409


async def test_pause_parks_and_message_resumes(api: Api) -> None:
    workflow = write_workflow(api.home, "pausable", THREE_PHASES)
    script = {"first": [[{"text": "long work"}, {"sleep": 600}], [{"text": "resumed first"}]]}
    job_id = await api.create(workflow, script)
    await api.wait_for_line(job_id, "long work")
    response = await api.client.post(f"/jobs/{job_id}/pause", json={})
    assert response.status_code == 200
    await api.wait_for_line(job_id, "Stopped at a safe boundary")
    job = await api.job(job_id)
    assert job["status"] == "awaiting-developer-input"
    assert job["paused"] is True

    await api.client.post(f"/jobs/{job_id}/message", json={"message": "carry on"})
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert "resumed first" in result.texts()
    assert (await api.job(job_id))["paused"] is False


async def test_completion_gate_reruns_then_fails_naming_items(api_factory: ApiFactory) -> None:
    async with api_factory(make_config(completionGateMaxRetries=2)) as api:
        workflow = write_workflow(api.home, "gated", ONE_PHASE)
        script = {
            "work": [
                {"tool": "set_work_items", "input": {"workItems": ["alpha", "beta"]}},
                {"tool": "update_work_item", "input": {"name": "alpha", "status": "complete"}},
            ]
        }
        job_id = await api.create(workflow, script)
        result = await api.finish(job_id)
        assert result.done == "failed"
        gate_lines = [t for t in result.texts() if t.startswith("[completion-gate]")]
        assert len(gate_lines) == 2
        assert "attempt 2/2" in gate_lines[-1]
        job = await api.job(job_id)
        assert "beta" in job["escalationMessage"]
        assert "alpha" not in job["escalationMessage"]
        assert "[completion-gate] Job cannot complete yet." in user_prompts(job)[-1]
        assert job["phaseVisits"]["work"] == 3


async def test_completion_gate_passes_once_items_are_done(api: Api) -> None:
    workflow = write_workflow(api.home, "gate-ok", ONE_PHASE)
    script = {
        "work": [
            [{"tool": "set_work_items", "input": {"workItems": ["only"]}}],
            [{"tool": "update_work_item", "input": {"name": "only", "status": "complete"}}],
        ]
    }
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "complete"


async def test_concurrency_cap_holds_and_every_job_completes(api_factory: ApiFactory) -> None:
    async with api_factory(make_config(maxConcurrent=2)) as api:
        workflow = write_workflow(
            api.home, "capped", [{"name": "a", "agent": None}, {"name": "b", "agent": None}]
        )
        # The sandboxed shell sees only the job's own directory, so the gate lives there.
        hold = "while [ ! -f release ]; do sleep 0.02; done"
        script = {"a": [{"tool": "shell", "input": {"command": hold}}], "b": [{"text": "b"}]}
        dispatcher = api.runner.dispatcher
        peak = 0
        original_start = dispatcher._start

        def start(job_id: str) -> None:
            nonlocal peak
            original_start(job_id)
            peak = max(peak, len(dispatcher.running_ids))

        dispatcher._start = start  # type: ignore[method-assign]
        ids = [await api.create(workflow, script) for _ in range(6)]
        # The first two hold their slots until released; the other four must wait.
        for job_id in ids[:2]:
            await api.wait_for_line(job_id, "→ shell")
        queued = (await api.client.get("/jobs", params={"status": "queued"})).json()
        assert sorted(j["id"] for j in queued["jobs"]) == sorted(ids[2:])
        for job_id in ids:
            workdir = api.runner.env.workdir(job_id)
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "release").write_text("")
        results = await asyncio.gather(*(api.finish(i) for i in ids))
        assert [r.done for r in results] == ["complete"] * 6
        assert peak == 2


async def test_rate_limit_parks_then_resumes_by_itself(api: Api) -> None:
    workflow = write_workflow(api.home, "limited", ONE_PHASE)
    script = {"work": [[{"text": "calling"}, {"rateLimit": 0.2}], [{"text": "after the wait"}]]}
    job_id = await api.create(workflow, script)
    parked = await api.wait_for_line(job_id, "[rate-limit]")
    assert "Resuming automatically" in parked.texts()[-1]
    job = await api.job(job_id)
    assert job["status"] == "awaiting-rate-limit"
    assert job["rateLimitInfo"]["retryAttempt"] == 1
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert "after the wait" in result.texts()


async def test_events_for_a_running_job_arrive_as_one_batched_prompt(api: Api) -> None:
    workflow = write_workflow(api.home, "evented", ONE_PHASE)
    script = {
        "work": [
            [{"text": "working"}, {"sleep": 600}],
            [{"tool": "await_event", "input": {"eventName": "pr:approved", "prId": 7}}],
            [{"text": "handled events"}],
        ]
    }
    job_id = await api.create(workflow, script)
    await api.wait_for_line(job_id, "working")
    deliver = api.runner.dispatcher.deliver
    await deliver(
        [
            InboundEvent(
                job_id=job_id,
                event_key="pullrequest:approved",
                payload={"prId": 7, "approvalCount": 1},
            )
        ]
    )
    await deliver(
        [
            InboundEvent(
                job_id=job_id,
                event_key="pullrequest:comment_created",
                payload={"prId": 7, "comment": {"content": {"raw": "nit"}}},
            )
        ]
    )
    # Pause ends the sleeping visit; the message resumes it; the events wait their turn.
    await api.client.post(f"/jobs/{job_id}/pause")
    await api.client.post(f"/jobs/{job_id}/message", json={"message": "continue"})
    await api.wait_for_line(job_id, "Job parked — waiting for: pr:approved")
    job = await api.job(job_id)
    prompts = user_prompts(job)
    batched = [p for p in prompts if "[EVENTS: 2 received since you parked]" in p]
    assert len(batched) == 1
    assert "Approvals: 1" in batched[0]
    assert "nit" in batched[0]


async def test_rerun_phase_of_completed_job_with_model_override(api: Api) -> None:
    workflow = write_workflow(api.home, "rerunnable", THREE_PHASES)
    job_id = await api.create(workflow, {"second": [{"text": "second ran"}]})
    assert (await api.finish(job_id)).done == "complete"
    response = await api.client.post(
        f"/jobs/{job_id}/phases/second/rerun", json={"model": "scripted-v2"}
    )
    assert response.status_code == 200
    assert response.json() == {"rerunning": True, "phase": "second"}
    result = await api.finish(job_id)
    assert result.done == "complete"
    texts = result.texts()
    assert texts.count("second ran") == 2
    assert any("model=scripted-v2 [override]" in t for t in texts)
    job = await api.job(job_id)
    assert job["phaseModelOverrides"] == {"second": {"model": "scripted-v2", "provider": None}}


async def test_a_parked_job_wakes_on_the_first_event(api: Api) -> None:
    workflow = write_workflow(api.home, "woken", ONE_PHASE)
    script = {
        "work": [
            [{"tool": "await_event", "input": {"eventName": "pr:merged", "prId": 3}}],
            [{"text": "merged, finishing"}],
        ]
    }
    job_id = await api.create(workflow, script)
    await api.wait_for_line(job_id, "Job parked — waiting for: pr:merged")
    assert (await api.job(job_id))["status"] == "awaiting-pr-merge"
    await api.runner.dispatcher.deliver(
        [
            InboundEvent(
                job_id=job_id,
                event_key="pullrequest:fulfilled",
                payload={"prId": 3, "state": "MERGED"},
            )
        ]
    )
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert "[event] Received event: pullrequest:fulfilled" in result.texts()
    job = await api.job(job_id)
    assert "[EVENT: 1 received since you parked]" in user_prompts(job)[-1]


async def test_pause_then_message_before_the_turn_ends_reruns_the_phase(
    api_factory: ApiFactory,
) -> None:
    from coro.state.memory import MemoryStateBackend

    # The in-memory backend never yields inside pause() or message(), so both controls
    # land before the interrupted turn is wound up: the race, made deterministic.
    async with api_factory(backend=MemoryStateBackend()) as api:
        workflow = write_workflow(api.home, "raced", THREE_PHASES)
        script = {
            "first": [[{"text": "long work"}, {"sleep": 600}], [{"text": "first again"}]],
            "second": [{"text": "second ran"}],
        }
        job_id = await api.create(workflow, script)
        await api.wait_for_line(job_id, "long work")
        await api.runner.jobs.pause(job_id)
        await api.runner.jobs.message(job_id, "carry on")
        texts = (await api.finish(job_id)).texts()
    assert texts.index("first again") < texts.index("second ran")
    assert texts.count("Phase advanced → second") == 1
