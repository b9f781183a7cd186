"""`GET /stats`: jobs per status group and total spend, as the dashboard's cards show."""

from __future__ import annotations

from tests.conftest import Api, write_workflow


async def test_stats_count_jobs_per_group_and_add_up_spend(api: Api) -> None:
    empty = (await api.client.get("/stats")).json()
    workflow = write_workflow(api.home, "costly", [{"name": "work", "agent": None}])
    spent = {"work": [{"usage": {"inputTokens": 10, "outputTokens": 5, "costUsd": 0.25}}]}
    done = await api.create(workflow, spent)
    await api.finish(done)
    asks = {
        "work": [
            {"usage": {"inputTokens": 10, "outputTokens": 5, "costUsd": 0.5}},
            {"tool": "await_event", "input": {"eventName": "developer-input: which one?"}},
        ]
    }
    waiting = await api.create(workflow, asks)
    await api.wait_for_line(waiting, "Job parked")
    stats = (await api.client.get("/stats")).json()
    assert empty == {
        "jobs": {"active": 0, "waiting": 0, "stopped": 0, "total": 0, "byStatus": {}},
        "spend": {"totalCostUsd": 0},
    }
    assert stats["jobs"] == {
        "active": 0,
        "waiting": 1,
        "stopped": 1,
        "total": 2,
        "byStatus": {"awaiting-developer-input": 1, "complete": 1},
    }
    assert stats["spend"]["totalCostUsd"] == 0.75
