"""A job driven entirely through the HTTP API, from creation to completion."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Api, write_workflow

pytestmark = pytest.mark.backends("sqlite", "postgres")

TWO_PHASES = [
    {"name": "planning", "agent": None, "status": "planning"},
    {"name": "coding", "agent": None, "status": "coding"},
]


async def test_two_phase_job_completes_with_artifact_usage_and_stream(api: Api) -> None:
    workflow = write_workflow(api.home, "two-phase", TWO_PHASES)
    script = {
        "planning": [
            {"text": "Planning the change"},
            {"tool": "set_work_items", "input": {"workItems": ["add-endpoint"]}},
            {"tool": "file_write", "input": {"path": "plan/plan.md", "content": "# Plan\n- add"}},
            {
                "tool": "post_artifact",
                "input": {"kind": "plan-md", "title": "The plan", "data": {"path": "plan/plan.md"}},
            },
            {"usage": {"inputTokens": 120, "outputTokens": 30}},
        ],
        "coding": [
            {"text": "Writing code"},
            {"tool": "update_work_item", "input": {"name": "add-endpoint", "status": "complete"}},
            {"usage": {"inputTokens": 200, "outputTokens": 80}},
        ],
    }
    job_id = await api.create(workflow, script, description="two phases")

    result = await api.finish(job_id)
    assert result.done == "complete"
    texts = result.texts()
    assert "Planning the change" in texts
    assert "Phase advanced → coding" in texts
    assert texts[-1] == "All phases complete — job finished successfully"
    assert result.ids == list(range(len(result.ids)))

    job = await api.job(job_id)
    assert job["status"] == "complete"
    assert [(u["phase"], u["inputTokens"], u["outputTokens"]) for u in job["phaseUsage"]] == [
        ("planning", 120, 30),
        ("coding", 200, 80),
    ]
    assert job["tokenUsage"]["inputTokens"] == 320
    assert job["tokenUsage"]["outputTokens"] == 110
    (artifact,) = job["artifacts"]
    content = await api.client.get(f"/jobs/{job_id}/artifacts/{artifact['id']}/content")
    assert content.status_code == 200
    assert content.text == "# Plan\n- add"
    assert content.headers["content-type"].startswith("text/markdown")

    replay = await api.finish(job_id)
    assert replay.lines == result.lines


async def test_stream_delivers_lines_live_while_the_job_runs(api: Api) -> None:
    workflow = write_workflow(api.home, "waits", [{"name": "work", "agent": None}])
    script = {
        "work": [
            [
                {"text": "first"},
                {"tool": "await_event", "input": {"eventName": "developer-input: go?"}},
            ],
            [{"text": "after the answer"}],
        ]
    }
    job_id = await api.create(workflow, script)
    parked = await api.wait_for_line(job_id, "Job parked")
    assert "first" in parked.texts()

    async def answer() -> None:
        response = await api.client.post(f"/jobs/{job_id}/message", json={"message": "go"})
        assert response.status_code == 200

    import asyncio

    seen_parked = len(parked.lines)
    task: asyncio.Task[None] | None = None

    def start_answer(line: str) -> bool:
        nonlocal task
        if task is None and "Job parked" in line:
            task = asyncio.create_task(answer())
        return False

    live = await api.follow(job_id, until=start_answer)
    assert task is not None
    await task
    assert live.done == "complete"
    assert live.lines[:seen_parked] == parked.lines
    assert "after the answer" in live.texts()[seen_parked:]


async def test_setting_work_items_again_keeps_the_progress_of_known_ones(api: Api) -> None:
    workflow = write_workflow(api.home, "items", [{"name": "work", "agent": None}])

    def tool(name: str, /, **tool_input: object) -> dict[str, object]:
        return {"tool": name, "input": tool_input}

    script = {
        "work": [
            tool("set_work_items", workItems=["api", "docs"]),
            tool("update_work_item", name="api", status="complete", incrementLoop=True),
            tool("set_work_items", workItems=["api", "docs", "fix-typo"]),
            tool("update_work_item", name="docs", status="complete"),
            tool("update_work_item", name="fix-typo", status="complete"),
        ]
    }
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "complete"
    items = (await api.job(job_id))["workItems"]
    assert items == [
        {"name": "api", "status": "complete", "loopCount": 1},
        {"name": "docs", "status": "complete", "loopCount": 0},
        {"name": "fix-typo", "status": "complete", "loopCount": 0},
    ]


async def test_a_new_session_requested_mid_turn_is_not_written_back(api: Api) -> None:
    workflow = write_workflow(
        api.home, "fresh", [{"name": "first", "agent": None}, {"name": "second", "agent": None}]
    )
    script = {
        "first": [
            {"text": "long exploration"},
            {"tool": "request_new_session", "input": {"reason": "context is noisy"}},
            {"text": "wrapping up"},
        ],
        "second": [{"text": "starting clean"}],
    }
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "complete"
    history = (await api.job(job_id))["conversationHistory"]
    contents = [m.get("content") or "" for m in history]
    assert not any("long exploration" in c for c in contents)
    assert history[0]["role"] == "user" and "Begin phase **second**" in history[0]["content"]
    assert any("starting clean" in c for c in contents)


@pytest.mark.backends("sqlite")  # it reads the SQLite file itself
async def test_the_transcript_is_stored_beside_the_job_and_shown_with_it(api: Api) -> None:
    import json
    import sqlite3

    workflow = write_workflow(api.home, "talky", [{"name": "work", "agent": None}])
    script = {"work": [{"tool": "log", "input": {"message": f"step {n}"}} for n in range(3)]}
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "complete"
    shown = (await api.job(job_id))["conversationHistory"]
    with sqlite3.connect(api.home.state_db) as db:
        (doc,) = db.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        (rows,) = db.execute(
            "SELECT COUNT(*) FROM job_transcripts WHERE job_id = ?", (job_id,)
        ).fetchone()
    assert "conversationHistory" not in json.loads(doc)
    assert rows == len(shown) == 7  # the prompt, then a call and its result per step


async def test_job_ids_carry_a_label_only_when_there_is_one(api: Api) -> None:
    workflow = write_workflow(api.home, "ids", [{"name": "only", "agent": None}])
    unlabelled = await api.create(workflow)
    labelled = await api.create(workflow, serviceName="billing api")
    assert re.fullmatch(r"job-\d{13}-[a-z0-9]{4}", unlabelled), unlabelled
    assert re.fullmatch(r"billing-api-job-\d{13}-[a-z0-9]{4}", labelled), labelled
