"""Insight curation over HTTP: list, approve/reject/edit (PATCH), soft and hard DELETE;
inherited insights; validation (400) and unknown ids (404)."""

from __future__ import annotations

from typing import Any

from coro.domain.models import Insight, Job
from coro.engine.prompts import system_prompt
from tests.conftest import Api, ApiFactory, write_workflow
from tests.test_proposals import config, run, step, tool_results

WORKFLOW = "workflows/demo-insights/workflow.md"


def insight(category: str, summary: str, **extra: Any) -> dict[str, Any]:
    return step(
        "add_insight",
        category=category,
        summary=summary,
        detail=f"Detail of {summary}.",
        **extra,
    )


async def job_with_insights(api: Api) -> tuple[str, list[str]]:
    """A finished job with three recorded insights plus one inherited from a sibling."""
    workflow = write_workflow(api.home, "demo-insights", [{"name": "work", "agent": None}])
    job = await run(
        api,
        workflow,
        {
            "work": [
                insight("codebase", "Tests use pytest", suggestion="Say so in memory"),
                insight("review", "Reviewers want docstrings", suggestedLayer="repo"),
                insight("process", "CI is slow"),
            ]
        },
    )
    ids = [output["insightId"] for error, output in tool_results(job, "add_insight")]
    assert len(ids) == 3

    def inherit(j: Job) -> None:
        j.insights.append(
            Insight(
                id="ins-inherited-1",
                phase="coding",
                category="codebase",
                summary="From a sibling",
                detail="Seeded by the campaign.",
                source_child_name="api",
            )
        )

    await api.runner.store.update(job["id"], inherit)
    return job["id"], ids


async def listed(api: Api, job_id: str, **params: Any) -> dict[str, Any]:
    response = await api.client.get(f"/jobs/{job_id}/insights", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_insights_are_curated_over_http(api_factory: ApiFactory) -> None:
    async with api_factory(config()) as api:
        job_id, (pytest_id, docs_id, ci_id) = await job_with_insights(api)
        base = f"/jobs/{job_id}/insights"

        shown = await listed(api, job_id)
        assert [i["id"] for i in shown["insights"]] == [pytest_id, docs_id, ci_id]
        assert shown["inheritedCount"] == 1 and shown["deletedCount"] == 0
        assert all(i["status"] == "pending" for i in shown["insights"])
        every = await listed(api, job_id, includeInherited="1")
        assert every["insights"][-1]["sourceChildName"] == "api"

        approved = await api.client.patch(f"{base}/{pytest_id}", json={"status": "approved"})
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert body["totalInsights"] == 4
        assert body["insight"]["status"] == "approved"
        assert body["insight"]["decidedBy"] == "dashboard-user"
        assert body["insight"]["decidedAt"] is not None
        assert body["insight"]["editedAt"] is None

        edited = await api.client.patch(
            f"{base}/{docs_id}",
            json={
                "editedSummary": "Every public function needs a docstring",
                "detail": "Asked for in three reviews.",
                "userLayer": "tenant",
                "editedBy": "alice",
            },
        )
        assert edited.status_code == 200, edited.text
        changed = edited.json()["insight"]
        assert changed["summary"] == "Reviewers want docstrings"  # the agent's text is kept
        assert changed["editedSummary"] == "Every public function needs a docstring"
        assert changed["editedDetail"] == "Asked for in three reviews."
        assert changed["suggestedLayer"] == "repo" and changed["userLayer"] == "tenant"
        assert changed["editedBy"] == "alice" and changed["decidedBy"] == "alice"

        cleared = await api.client.patch(
            f"{base}/{docs_id}", json={"editedDetail": "", "suggestedLayer": None}
        )
        assert cleared.json()["insight"]["editedDetail"] is None
        assert cleared.json()["insight"]["userLayer"] is None

        rejected = await api.client.patch(f"{base}/{ci_id}", json={"status": "rejected"})
        assert rejected.json()["insight"]["status"] == "rejected"

        # What agents are shown: edits win, rejected insights are left out.
        job = await api.runner.store.get(job_id)
        workflow = api.runner.env.layers.load_workflow(WORKFLOW)
        prompt = system_prompt(job, workflow, workflow.phases[0], None)
        assert "Every public function needs a docstring" in prompt
        assert "Detail of Reviewers want docstrings." in prompt
        assert "CI is slow" not in prompt
        logs = (await api.follow(job_id)).texts()
        assert f"[insight] {pytest_id} status approved by dashboard-user" in logs


async def test_soft_and_hard_delete(api_factory: ApiFactory) -> None:
    async with api_factory(config()) as api:
        job_id, (pytest_id, docs_id, ci_id) = await job_with_insights(api)
        base = f"/jobs/{job_id}/insights"

        soft = await api.client.delete(f"{base}/{docs_id}")
        assert soft.status_code == 200, soft.text
        assert soft.json() == {"removed": False, "insightId": docs_id, "totalInsights": 4}
        shown = await listed(api, job_id)
        assert [i["id"] for i in shown["insights"]] == [pytest_id, ci_id]
        assert shown["deletedCount"] == 1
        hidden = await listed(api, job_id, includeDeleted="true")
        deleted = next(i for i in hidden["insights"] if i["id"] == docs_id)
        assert deleted["status"] == "rejected" and deleted["deletedAt"] is not None
        assert (await api.client.delete(f"{base}/{docs_id}")).status_code == 200  # idempotent

        restored = await api.client.patch(f"{base}/{docs_id}", json={"status": "pending"})
        assert restored.json()["insight"]["deletedAt"] is None
        assert docs_id in [i["id"] for i in (await listed(api, job_id))["insights"]]

        hard = await api.client.delete(f"{base}/{ci_id}", params={"hard": "1"})
        assert hard.status_code == 200, hard.text
        assert hard.json() == {"removed": True, "insightId": ci_id, "totalInsights": 3}
        everything = await listed(api, job_id, includeDeleted="1", includeInherited="1")
        assert ci_id not in [i["id"] for i in everything["insights"]]
        assert (await api.client.delete(f"{base}/{ci_id}")).status_code == 404

        # An inherited insight belongs to the sibling that recorded it.
        refused = await api.client.delete(f"{base}/ins-inherited-1", params={"hard": "true"})
        assert refused.status_code == 409, refused.text
        assert "inherited" in refused.json()["error"]
        soft_inherited = await api.client.delete(f"{base}/ins-inherited-1")
        assert soft_inherited.status_code == 200
        assert (await listed(api, job_id))["inheritedCount"] == 1


async def test_bad_requests_and_unknown_ids(api_factory: ApiFactory) -> None:
    async with api_factory(config()) as api:
        job_id, (pytest_id, _, _) = await job_with_insights(api)
        one = f"/jobs/{job_id}/insights/{pytest_id}"
        bad_bodies: list[Any] = [
            {"status": "maybe"},
            {"status": None},
            {"userLayer": "global"},
            {"editedSummary": 5},
            {"editedBy": ["x"]},
            {"colour": "red"},
            {"summary": "a", "editedSummary": "b"},
            {"userLayer": "repo", "suggestedLayer": "repo"},
            {"editedSummary": "x" * 20_001},
            ["status", "approved"],
        ]
        for bad in bad_bodies:
            response = await api.client.patch(one, json=bad)
            assert response.status_code == 400, (bad, response.text)
            assert "error" in response.json()
        malformed = await api.client.patch(
            one, content=b"{nope", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400
        assert (await api.client.delete(one, params={"hard": "perhaps"})).status_code == 400

        assert (await api.client.patch(f"/jobs/{job_id}/insights/nope", json={})).status_code == 404
        assert (await api.client.delete(f"/jobs/{job_id}/insights/nope")).status_code == 404
        for path in ("/jobs/nope/insights", "/jobs/nope/insights/x"):
            assert (await api.client.get(path)).status_code in (404, 405)
        assert (await api.client.patch("/jobs/nope/insights/x", json={})).status_code == 404
        assert (await api.client.delete("/jobs/nope/insights/x")).status_code == 404
        untouched = await listed(api, job_id)
        assert untouched["insights"][0]["status"] == "pending"
