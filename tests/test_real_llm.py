"""The real-model tier: jobs driven by a real small language model, SmolLM2-135M-Instruct,
served by llama.cpp on the CPU (see `tests/real_model.py`), through the real `openai`
executor and a real runner over loopback HTTP.

The model's chat template has no tool support, and a model this small cannot follow a
calling convention on its own, so these jobs use `toolCalling: "constrained"`: the tools
are described in the system prompt and the server is asked (a JSON-schema
`response_format`) to answer with one call or `end_turn`. What a model this size does
with that is what real small models do: it makes one sensible call, then repeats it.
The assertions are about what Coro makes of that, never about the model's wording.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from coro.config import CoroConfig, CoroHome
from tests.conftest import Api, ApiFactory, provider_config, write_workflow
from tests.real_model import LocalModel

#: A real model on 2 shared cores: a guard against hangs, not a timing assertion.
REAL_MODEL_LIMIT = 480
pytestmark = [pytest.mark.real_llm, pytest.mark.timeout(REAL_MODEL_LIMIT + 60)]

WRITE_REQUEST = "Write the file hello.txt with the content: hello world"


def model_config(model: LocalModel) -> CoroConfig:
    return provider_config(
        "openai",
        baseUrl=model.base_url,
        defaultModel=model.model,
        toolCalling="constrained",
        contextWindow=model.context_window,
        temperature=0,
        frequencyPenalty=0.5,
        maxTokens=200,
    )


def one_phase_workflow(home: CoroHome, tools: list[str]) -> str:
    agent = home.root / "intelligence" / "agents" / "writer.md"
    agent.parent.mkdir(parents=True, exist_ok=True)
    agent.write_text("You write files with the file_write tool.\n")
    return write_workflow(
        home, "write", [{"name": "write", "agent": "agents/writer.md", "tools": tools}]
    )


def tool_calls(job: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(call, result) pairs of the job's transcript."""
    results = {
        r["toolCallId"]: r for message in job["conversationHistory"] for r in message["toolResults"]
    }
    return [
        (call, results[call["id"]])
        for message in job["conversationHistory"]
        for call in message["toolCalls"]
        if call["id"] in results
    ]


async def run_job(api: Api, workflow: str) -> tuple[dict[str, Any], list[str]]:
    job_id = await api.create(workflow, description=WRITE_REQUEST)
    stream = await api.finish(job_id, limit=REAL_MODEL_LIMIT)
    return await api.job(job_id), stream.texts()


async def test_the_server_offers_no_native_tool_calling(real_llm: LocalModel) -> None:
    """The premise of this tier: the model's own template knows nothing of tools."""
    async with httpx.AsyncClient(timeout=30) as client:
        props = (await client.get(real_llm.base_url.removesuffix("/v1") + "/props")).json()
    assert "supports_tool_calls': False" in str(props["chat_template_caps"])


async def test_a_real_model_writes_a_file_through_a_tool_call_and_completes(
    real_llm: LocalModel, api_factory: ApiFactory, home: CoroHome
) -> None:
    workflow = one_phase_workflow(home, ["file_write"])
    async with api_factory(model_config(real_llm)) as api:
        job, log = await run_job(api, workflow)
        workdir = api.runner.env.workdir(job["id"])

    assert job["status"] == "complete", job.get("escalationMessage")
    writes = [(c, r) for c, r in tool_calls(job) if c["name"] == "file_write"]
    assert writes, "the model made no tool call"
    call, result = writes[-1]  # the last write of a path is what the file holds
    assert not result["isError"]
    written = workdir / call["input"]["path"]
    assert written.read_text() == call["input"]["content"]
    assert any(line.startswith("→ file_write ") for line in log)
    # usage of every round trip, counted once, none left "in progress"
    usage = job["tokenUsage"]
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0
    (phase,) = job["phaseUsage"]
    assert phase["numTurns"] >= 2 and not phase.get("inProgress")
    assert sum(line.startswith("[usage] Phase write: +") for line in log) == phase["numTurns"]


async def test_stuck_detection_ends_a_real_model_that_loops(
    real_llm: LocalModel, api_factory: ApiFactory, home: CoroHome
) -> None:
    """Told to stop repeating one call, this model repeats another: the job escalates,
    naming the loop, instead of burning round trips until the turn limit."""
    workflow = one_phase_workflow(home, ["file_write", "file_read"])
    async with api_factory(model_config(real_llm)) as api:
        job, log = await run_job(api, workflow)

    assert job["status"] == "escalated"
    message = job["escalationMessage"]
    assert message.startswith("Stuck in a loop") and "times in a row" in message
    assert any(line.startswith("[stuck] Loop detected") for line in log)
    assert any(line.startswith("[stuck] Stuck in a loop") for line in log)
    # the corrective note reached the model before the job escalated
    notes = [r["output"] for _, r in tool_calls(job) if "[coro] Loop detected" in r["output"]]
    assert notes
    calls = tool_calls(job)
    assert len(calls) < 20
    assert "[coro] Loop continued" in calls[-1][1]["output"]
