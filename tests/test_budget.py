"""Per-job budgets: reaching one parks the job; raising it and resuming continues."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coro.config import CoroConfig
from tests.conftest import Api, ApiFactory, make_config, user_prompts, write_workflow

PHASES = [{"name": "first", "agent": None}, {"name": "second", "agent": None}]


async def test_token_budget_parks_and_raising_it_continues(api: Api) -> None:
    workflow = write_workflow(api.home, "budgeted", PHASES)
    script = {
        "first": [{"usage": {"inputTokens": 40, "outputTokens": 20}}],
        "second": [
            [{"usage": {"inputTokens": 40, "outputTokens": 20}}, {"text": "past the budget"}],
            [{"text": "finishing within the new budget"}],
        ],
    }
    job_id = await api.create(workflow, script, budget={"maxTokens": 100})
    parked = await api.wait_for_line(job_id, "[budget]")
    assert "120 tokens reached the budget of 100" in parked.texts()[-1]
    assert "past the budget" not in parked.texts()
    job = await api.job(job_id)
    assert job["status"] == "awaiting-budget"

    # A message wakes it, but the budget parks it again; the message waits for the resume.
    still_low = await api.client.post(f"/jobs/{job_id}/message", json={"message": "go on"})
    assert still_low.status_code == 200
    again = await api.follow(
        job_id,
        until=lambda line: "Job paused" in line and "[budget]" in line,
        headers={"Last-Event-ID": str(parked.ids[-1])},
    )
    assert again.done is None
    assert (await api.job(job_id))["status"] == "awaiting-budget"

    raised = await api.client.patch(f"/jobs/{job_id}/budget", json={"maxTokens": 1000})
    assert raised.status_code == 200
    assert raised.json()["budget"]["maxTokens"] == 1000
    await api.client.post(f"/jobs/{job_id}/resume", json={})
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert "finishing within the new budget" in result.texts()
    assert "> go on" in user_prompts(await api.job(job_id))[-1]


async def test_cost_budget_from_the_config_default(api_factory: ApiFactory) -> None:
    config = make_config(defaultBudget={"maxCostUsd": 0.5})
    async with api_factory(config) as api:
        workflow = write_workflow(api.home, "costly", PHASES)
        script = {"first": [{"usage": {"inputTokens": 1, "costUsd": 0.75}}]}
        job_id = await api.create(workflow, script)
        await api.wait_for_line(job_id, "[budget]")
        job = await api.job(job_id)
        assert job["status"] == "awaiting-budget"
        assert job["budget"]["maxCostUsd"] == 0.5
        assert job["phase"] == "first"


async def test_invalid_budgets_are_refused(api: Api) -> None:
    workflow = write_workflow(api.home, "nobudget", PHASES)
    bad = await api.client.post(
        "/jobs", json={"workflowPath": workflow, "budget": {"maxTokens": -5}}
    )
    assert bad.status_code == 400
    job_id = await api.create(workflow, {})
    patch = await api.client.patch(f"/jobs/{job_id}/budget", json={"maxCostUsd": "lots"})
    assert patch.status_code == 400


async def test_infinite_or_absurd_budgets_are_refused_never_stored_as_no_budget(
    api: Api,
) -> None:
    """JSON's 1e999 parses as infinity: a budget of it would silently mean "no limit"."""
    workflow = write_workflow(api.home, "absurd", PHASES)
    for budget in ('{"maxCostUsd": 1e999}', '{"maxTokens": 1e40}', '{"maxCostUsd": 1e12}'):
        body = f'{{"workflowPath": "{workflow}", "budget": {budget}}}'
        created = await api.client.post(
            "/jobs", content=body, headers={"content-type": "application/json"}
        )
        assert created.status_code == 400, (budget, created.text)
        assert created.json()["issues"], budget
    listed = await api.client.get("/jobs")
    assert listed.json()["total"] == 0, "nothing was created"
    job_id = await api.create(workflow, {}, budget={"maxCostUsd": 2})
    for budget in ('{"maxCostUsd": 1e999}', '{"maxTokens": 1e40}'):
        patched = await api.client.patch(
            f"/jobs/{job_id}/budget", content=budget, headers={"content-type": "application/json"}
        )
        assert patched.status_code == 400, budget
    assert (await api.job(job_id))["budget"]["maxCostUsd"] == 2


def test_an_infinite_default_budget_in_config_is_refused() -> None:
    with pytest.raises(ValidationError):
        CoroConfig.model_validate({"jobs": {"defaultBudget": {"maxCostUsd": float("inf")}}})
