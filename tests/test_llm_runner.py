"""LLM-driven jobs across runner restarts, plan mode and connection tests, against the
loopback Anthropic fake."""

from __future__ import annotations

import json

import httpx

from coro.api.server import serve
from coro.config import CoroConfig, CoroHome
from coro.runner import Runner
from tests.conftest import write_workflow
from tests.fakes.anthropic_server import FakeAnthropic, Reply, Text, ToolUse, Usage, text, tools
from tests.sse import frames

KEY = "sk-ant-test-" + "k" * 40


def config_for(fake: FakeAnthropic, key: str = KEY) -> CoroConfig:
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "anthropic"},
            "plugins": {
                "installed": {
                    "anthropic": {
                        "config": {
                            "apiKey": key,
                            "baseUrl": fake.base_url,
                            "retryBackoffSeconds": 0,
                        }
                    }
                }
            },
        }
    )


async def read_log(client: httpx.AsyncClient, job_id: str, until: str | None = None) -> list[str]:
    lines = []
    async with client.stream("GET", f"/jobs/{job_id}/stream") as response:
        async for frame in frames(response):
            if frame.event == "done":
                lines.append(f"done {frame.data}")
                break
            if frame.id is not None:
                lines.append(frame.data)
                if until and until in frame.data:
                    break
    return lines


async def test_restart_mid_phase_continues_the_persisted_conversation(home: CoroHome) -> None:
    workflow = write_workflow(home, "multi-turn", [{"name": "build", "agent": None}])
    async with FakeAnthropic(api_key=KEY) as fake:
        config = config_for(fake)
        home.save_config(config)
        fake.queue(
            tools(ToolUse("file_write", {"path": "notes.txt", "content": "first"}, id="toolu_1")),
            Reply([Text("still thinking")], hold=True),
        )
        async with (
            serve(Runner(home, config), "127.0.0.1", 0) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
        ):
            created = await client.post("/jobs", json={"workflowPath": workflow})
            job_id = created.json()["jobId"]
            await fake.holding.wait()  # the second model call is in flight: stop the runner
        fake.queue(text("All done.", usage=Usage(input_tokens=50, output_tokens=5)))
        async with (
            serve(Runner(home, config), "127.0.0.1", 0) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
        ):
            log = await read_log(client, job_id)
            job = (await client.get(f"/jobs/{job_id}")).json()
    assert log[-1] == "done complete"
    assert sum("→ file_write" in line for line in log) == 1
    resumed = fake.message_requests[-1]
    uses = resumed.blocks("tool_use")
    results = resumed.blocks("tool_result")
    assert [u["id"] for u in uses] == ["toolu_1"]
    assert [r["tool_use_id"] for r in results] == ["toolu_1"]
    assert (home.root / "work" / job_id / "notes.txt").read_text() == "first"
    assert job["status"] == "complete"
    assert KEY not in json.dumps(job) and not any(KEY in line for line in log)


async def test_plan_mode_streams_from_the_provider(home: CoroHome) -> None:
    async with FakeAnthropic(api_key=KEY) as fake:
        config = config_for(fake)
        fake.queue(
            Reply(
                [Text("Which repository should change?")],
                usage=Usage(input_tokens=300, output_tokens=9),
            )
        )
        async with (
            serve(Runner(home, config), "127.0.0.1", 0) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
        ):
            events = []
            body = {
                "sessionId": "plan-1",
                "messages": [{"role": "user", "content": "Add rate limiting"}],
            }
            async with client.stream("POST", "/intake/stream", json=body) as response:
                async for frame in frames(response):
                    if frame.event == "message":
                        events.append(json.loads(frame.data))
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    assert tokens == "Which repository should change?"
    assert events[-1]["type"] == "done"
    assert events[-1]["usage"]["outputTokens"] == 9
    assert events[-1]["sessionTokens"] == events[-1]["usage"]["totalTokens"]
    (request,) = fake.message_requests
    assert request.body["max_tokens"] == 4096
    assert "tools" not in request.body


async def test_wrong_key_gives_a_readable_error_without_the_key(home: CoroHome) -> None:
    wrong = "sk-ant-wrong-" + "w" * 40
    async with FakeAnthropic(api_key=KEY) as fake:
        config = config_for(fake, key=wrong)
        async with (
            serve(Runner(home, config), "127.0.0.1", 0) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
        ):
            checked = await client.post("/test/llm", json={})
            workflow = write_workflow(home, "keyed", [{"name": "work", "agent": None}])
            created = await client.post("/jobs", json={"workflowPath": workflow})
            job_id = created.json()["jobId"]
            log = await read_log(client, job_id)
            job = (await client.get(f"/jobs/{job_id}")).json()
    body = checked.json()
    assert body["ok"] is False
    assert "key" in body["message"].lower()
    assert wrong not in checked.text
    assert log[-1] == "done escalated"
    assert any("API key" in line for line in log)
    assert not any(wrong in line for line in log)
    assert wrong not in json.dumps(job)
