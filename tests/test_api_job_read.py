"""`GET /jobs/:id` answers what is stored now, whoever changed it.

The runner keeps each job's encoded answer with the stored text it came from
(`coro.api.routes.jobs.JobAnswers`); these tests change a job in every way a kept
answer could miss — controls, the transcript (replaced by as many messages), another
process's backend on the same database, a campaign child's job — and read it again.
"""

from __future__ import annotations

from typing import Any

import pytest

from coro.domain.models import CampaignChild, ConversationMessage, Job, WorkItem
from coro.state.factory import state_backend
from tests.conftest import Api, write_workflow

pytestmark = pytest.mark.backends("sqlite", "postgres")

PARKS = {
    "work": [
        {"text": "Looking at it."},
        {"tool": "await_event", "input": {"eventName": "developer-input: ready?"}},
    ]
}


async def parked_job(api: Api) -> str:
    workflow = write_workflow(api.home, "parks", [{"name": "work"}])
    job_id = await api.create(workflow, PARKS)
    await api.wait_for_line(job_id, "Job parked")
    return job_id


async def as_stored(api: Api, job_id: str) -> dict[str, Any]:
    """The job as the runner's store holds it, in the API's JSON."""
    return (await api.runner.store.stored(job_id)).job().to_json()


async def test_a_read_shows_each_control_since_the_last_read(api: Api) -> None:
    job_id = await parked_job(api)
    first = await api.job(job_id)
    assert first == await as_stored(api, job_id)
    assert first["status"] == "awaiting-developer-input" and not first["interactive"]
    assert first["conversationHistory"], "the turn so far"
    assert await api.job(job_id) == first

    patched = await api.client.patch(f"/jobs/{job_id}/interactive", json={"interactive": True})
    assert patched.status_code == 200, patched.text
    assert (await api.job(job_id))["interactive"] is True

    budget = await api.client.patch(f"/jobs/{job_id}/budget", json={"maxTokens": 5000})
    assert budget.status_code == 200, budget.text
    assert (await api.job(job_id))["budget"]["maxTokens"] == 5000

    cancelled = await api.client.post(f"/jobs/{job_id}/cancel", json={"reason": "enough"})
    assert cancelled.status_code == 200, cancelled.text
    last = await api.job(job_id)
    assert last["status"] == "cancelled"
    assert last == await as_stored(api, job_id)


async def test_a_read_shows_a_transcript_replaced_by_as_many_messages(api: Api) -> None:
    job_id = await parked_job(api)
    before = (await api.job(job_id))["conversationHistory"]

    summaries = [f"summary {n}" for n in range(len(before))]
    condensed = [ConversationMessage(role="user", content=text) for text in summaries]
    await api.runner.store.backend.replace_transcript(job_id, condensed)

    assert [m["content"] for m in (await api.job(job_id))["conversationHistory"]] == summaries


async def test_a_read_shows_what_another_process_wrote(api: Api) -> None:
    job_id = await parked_job(api)
    await api.job(job_id)

    # another runner or `coro mcp` process: its own backend object on the same database
    other = state_backend(api.home, api.runner.config)
    await other.open()
    try:

        def add_item(job: Job) -> None:
            job.work_items.append(WorkItem(name="from-elsewhere"))

        await other.update_job(job_id, add_item)
        await other.append_transcript(job_id, [ConversationMessage(role="user", content="hi")])
    finally:
        await other.close()

    job = await api.job(job_id)
    assert [item["name"] for item in job["workItems"]] == ["from-elsewhere"]
    assert job["conversationHistory"][-1]["content"] == "hi"


async def test_a_campaign_read_shows_its_children_as_they_are_now(api: Api) -> None:
    child_id = await parked_job(api)
    store = api.runner.store

    def make_campaign(job: Job) -> None:
        job.type = "campaign"
        job.campaign_children = [
            CampaignChild(name="one", description="the child", job_id=child_id, status="dispatched")
        ]

    parent = (await store.get(child_id)).model_copy(update={"id": "campaign-1"})
    make_campaign(parent)
    await store.create(parent)
    summary = (await api.job("campaign-1"))["campaignChildren"][0]["summary"]
    assert summary["status"] == "awaiting-developer-input"

    # only the child's job changes, not the campaign's own stored text
    cancelled = await api.client.post(f"/jobs/{child_id}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text

    summary = (await api.job("campaign-1"))["campaignChildren"][0]["summary"]
    assert summary["status"] == "cancelled"
