"""Context condensation: long phases near a small context window, and providers that
refuse a conversation as too long, through a runner against the loopback fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.domain.models import ConversationMessage, ToolCallRecord, ToolResultRecord
from coro.engine.condense import INSTRUCTION, SUMMARY_HEADER, plan
from tests.conftest import ApiFactory, StreamResult, write_workflow
from tests.fakes import anthropic_server as anthropic_fake
from tests.fakes.anthropic_server import FakeAnthropic, ToolUse, tools
from tests.fakes.openai_server import (
    ChatRequest,
    FakeOpenAI,
    Reply,
    Scripted,
    ToolCall,
    bad_request,
    context_length_exceeded,
)

ANTHROPIC_KEY = "sk-ant-test-" + "c" * 40
SUMMARY = (
    "## Task\nWrite the numbered files.\n## Files touched\nf0.txt … f4.txt written.\n"
    "## Open problems\nThe remaining files."
)
PHASE = [{"name": "work", "agent": None, "tools": ["file_write"]}]


def openai_config(fake: FakeOpenAI, **settings: Any) -> dict[str, Any]:
    return {
        "llm": {"defaultProvider": "openai"},
        "plugins": {
            "installed": {
                "openai": {
                    "config": {"baseUrl": fake.base_url, "defaultModel": "local", **settings}
                }
            }
        },
    }


def anthropic_slot(fake: FakeAnthropic, **settings: Any) -> dict[str, Any]:
    return {
        "config": {
            "apiKey": ANTHROPIC_KEY,
            "baseUrl": fake.base_url,
            "retryBackoffSeconds": 0,
            **settings,
        }
    }


def writes(count: int, size: int = 40) -> list[Reply]:
    return [
        Reply(tool_calls=[ToolCall("file_write", {"path": f"f{n}.txt", "content": f"{n}" * size})])
        for n in range(count)
    ]


def summariser(answer: Scripted) -> Any:
    """A route answering the summariser's requests (whenever they come) with `answer`."""

    def route(request: ChatRequest) -> Scripted | None:
        system = request.messages[0].get("content", "") if request.messages else ""
        return answer if system == INSTRUCTION else None

    return route


def condense_lines(result: StreamResult) -> list[str]:
    return [t for t in result.texts() if t.startswith("[condense]")]


def summaries(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in job["conversationHistory"] if m.get("condensed")]


def written_paths(messages: list[dict[str, Any]]) -> list[str]:
    found = []
    for message in messages:
        for call in message.get("tool_calls") or []:
            found.append(call["function"]["arguments"].split('"path": "')[1].split('"')[0])
    return found


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


async def test_a_long_phase_condenses_near_a_small_context_window_and_completes(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    window = 4000
    fake.context_window = window  # refuses anything longer, reports what it counted
    fake.queue(*writes(8, size=2400), Reply(text="All files written."))
    async with FakeAnthropic(api_key=ANTHROPIC_KEY) as mini:
        mini.queue(*(anthropic_fake.text(SUMMARY) for _ in range(4)))
        config = openai_config(fake, contextWindow=window)
        config["plugins"]["installed"]["anthropic"] = anthropic_slot(mini)
        config["llm"]["aliases"] = {
            "tier:mini": {"provider": "anthropic", "model": "claude-haiku-5-5"}
        }
        async with api_factory(CoroConfig.model_validate(config)) as api:
            workflow = write_workflow(api.home, "long", PHASE)
            job_id = await api.create(workflow)
            result = await api.finish(job_id)
            job = await api.job(job_id)

    assert result.done == "complete", result.texts()
    workdir = api.home.root / "work" / job_id
    assert all((workdir / f"f{n}.txt").read_text() == f"{n}" * 2400 for n in range(8))
    assert all(r.status == 200 for r in fake.chat_requests), "no request overflowed"
    lines = condense_lines(result)
    assert lines and all("nears the context window" in line for line in lines), lines
    assert "summarised by anthropic/claude-haiku-5-5" in lines[0]

    # The summariser (tier:mini) got the older turns as a transcript and no tools.
    asked = mini.message_requests[0]
    assert asked.system[0]["text"] == INSTRUCTION and not asked.tools
    assert "### Tool call: file_write" in asked.messages[0]["content"][0]["text"]
    # The agent's next request carries the summary instead of the oldest calls.
    after = next(
        r for r in fake.chat_requests if any(SUMMARY in str(m.get("content")) for m in r.messages)
    )
    assert "f0.txt" not in written_paths(after.messages)
    assert after.messages[1]["role"] == "user" and "Begin phase" in after.messages[1]["content"]

    # The stored transcript shows the condensation; the task prompt stays verbatim.
    (summary, *_) = summaries(job)
    assert summary["role"] == "user" and summary["content"].startswith(SUMMARY_HEADER)
    assert SUMMARY in summary["content"] and summary["condensed"] >= 2
    history = job["conversationHistory"]
    assert "Begin phase" in history[0]["content"]
    assert history[-1] == {**history[-1], "role": "assistant", "content": "All files written."}
    usage = job["phaseUsage"][0]
    assert usage["outputTokens"] > 8 * 7, "the summaries' tokens count for the phase"


async def test_an_overflow_error_condenses_once_and_retries(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.route = summariser(Reply(text=SUMMARY))
    fake.queue(*writes(4), context_length_exceeded(), Reply(text="Finished."))
    async with api_factory(CoroConfig.model_validate(openai_config(fake))) as api:
        workflow = write_workflow(api.home, "overflow", PHASE)
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        job = await api.job(job_id)

    assert result.done == "complete", result.texts()
    (line,) = condense_lines(result)
    assert line.startswith("[condense] The provider refused the conversation as too long: 4 ")
    refused, summary_request, retry = fake.chat_requests[4:]
    assert refused.status == 400 and summary_request.body.get("tools") is None
    # The retry: the task prompt, the summary, then the latest two calls verbatim.
    assert written_paths(refused.messages) == ["f0.txt", "f1.txt", "f2.txt", "f3.txt"]
    assert written_paths(retry.messages) == ["f2.txt", "f3.txt"]
    assert SUMMARY in retry.messages[1]["content"]
    (summary,) = summaries(job)
    assert summary["condensed"] == 4  # two calls, each with its result
    assert [m["role"] for m in job["conversationHistory"]][:2] == ["user", "user"]


async def test_a_second_overflow_escalates(api_factory: ApiFactory, fake: FakeOpenAI) -> None:
    fake.route = summariser(Reply(text=SUMMARY))
    fake.queue(*writes(4), context_length_exceeded(), context_length_exceeded())
    async with api_factory(CoroConfig.model_validate(openai_config(fake))) as api:
        workflow = write_workflow(api.home, "overflow-twice", PHASE)
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        job = await api.job(job_id)

    assert result.done == "escalated"
    assert len(condense_lines(result)) == 1
    assert "conversation is too long" in job["escalationMessage"]
    assert len(summaries(job)) == 1, "the condensed conversation is what a resume continues"


async def test_a_failing_summariser_drops_the_older_turns_with_a_note(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.route = summariser(bad_request("this server cannot summarise"))
    fake.queue(*writes(4), context_length_exceeded(), Reply(text="Finished anyway."))
    async with api_factory(CoroConfig.model_validate(openai_config(fake))) as api:
        workflow = write_workflow(api.home, "no-summary", PHASE)
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        job = await api.job(job_id)

    assert result.done == "complete", result.texts()
    failed, condensed = condense_lines(result)
    assert "The summariser openai failed" in failed
    assert "cannot summarise" in failed
    assert "dropped:" in condensed
    (summary,) = summaries(job)
    assert "4 earlier messages were dropped to fit the context window" in summary["content"]
    assert "Tools called: file_write ×2" in summary["content"]
    assert "Paths named: f0.txt, f1.txt" in summary["content"]


async def test_the_anthropic_executor_condenses_on_overflow_and_near_its_window(
    api_factory: ApiFactory,
) -> None:
    async with FakeAnthropic(api_key=ANTHROPIC_KEY) as fake:
        calls = [
            tools(ToolUse("file_write", {"path": f"f{n}.txt", "content": f"{n}" * 40}))
            for n in range(4)
        ]
        fake.queue(
            *calls,
            anthropic_fake.prompt_too_long(),
            anthropic_fake.text(SUMMARY),  # the summariser: the phase's own model
            anthropic_fake.text("Finished."),
        )
        config = {
            "llm": {"defaultProvider": "anthropic"},
            "plugins": {"installed": {"anthropic": anthropic_slot(fake)}},
        }
        async with api_factory(CoroConfig.model_validate(config)) as api:
            workflow = write_workflow(api.home, "anthropic-overflow", PHASE)
            job_id = await api.create(workflow)
            result = await api.finish(job_id)
            job = await api.job(job_id)

    assert result.done == "complete", result.texts()
    (line,) = condense_lines(result)
    assert "refused the conversation as too long" in line
    refused, asked, retry = fake.message_requests[4:]
    assert refused.status == 400
    assert asked.system[0]["text"] == INSTRUCTION and not asked.tools
    assert [b["input"]["path"] for b in retry.blocks("tool_use")] == ["f2.txt", "f3.txt"]
    assert any(SUMMARY in b["text"] for b in retry.blocks("text"))
    assert len(summaries(job)) == 1


async def test_the_anthropic_executor_condenses_before_its_window_fills(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    window = 4000
    fake.route = summariser(Reply(text=SUMMARY))  # tier:mini: the openai fake
    async with FakeAnthropic(api_key=ANTHROPIC_KEY) as agent:
        agent.context_window = window
        agent.queue(
            *(
                tools(ToolUse("file_write", {"path": f"f{n}.txt", "content": f"{n}" * 2400}))
                for n in range(8)
            ),
            anthropic_fake.text("All files written."),
        )
        config = openai_config(fake)
        config["llm"] = {
            "defaultProvider": "anthropic",
            "aliases": {
                "tier:coding": {
                    "provider": "anthropic",
                    "model": "claude-local",
                    "contextWindow": window,
                },
                "tier:mini": {"provider": "openai", "model": "local-mini"},
            },
        }
        config["plugins"]["installed"]["anthropic"] = anthropic_slot(agent)
        phase = [{**PHASE[0], "tier": "coding"}]
        async with api_factory(CoroConfig.model_validate(config)) as api:
            workflow = write_workflow(api.home, "anthropic-long", phase)
            job_id = await api.create(workflow)
            result = await api.finish(job_id)
            job = await api.job(job_id)

    assert result.done == "complete", result.texts()
    assert all(r.status == 200 for r in agent.message_requests), "no request overflowed"
    lines = condense_lines(result)
    assert lines and "summarised by openai/local-mini" in lines[0]
    assert [r.body["model"] for r in fake.chat_requests] == ["local-mini"] * len(lines)
    assert summaries(job)


def test_a_tool_call_and_its_result_stay_together() -> None:
    def call(n: int) -> list[ConversationMessage]:
        return [
            ConversationMessage(
                role="assistant", tool_calls=[ToolCallRecord(id=f"c{n}", name="log")]
            ),
            ConversationMessage(
                role="tool", tool_results=[ToolResultRecord(tool_call_id=f"c{n}", output="ok")]
            ),
        ]

    earlier = [ConversationMessage(role="user", content="an earlier phase")]
    task = ConversationMessage(role="user", content="Begin phase work")
    history = [*earlier, task, *call(1), *call(2), *call(3)]
    split = plan(history, 1, None, keep_turns=2)
    assert split is not None
    assert split.before == earlier and split.task == task
    assert split.between == call(1) and split.tail == [*call(2), *call(3)]
    # Nothing older than what is kept: nothing to condense.
    assert plan([task, *call(1)], 0, None) is None
