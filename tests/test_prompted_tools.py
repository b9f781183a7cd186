"""Prompted tool calls: jobs on servers and models without native tool calling, through a
runner against the loopback OpenAI fake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.executors.prompted import parse_calls
from tests.conftest import ApiFactory, provider_config, write_workflow
from tests.fakes.openai_server import FakeOpenAI, Reply, ToolCall

TWO_PHASES = [
    {"name": "planning", "agent": None, "status": "planning"},
    {"name": "coding", "agent": None, "status": "coding"},
]


def config(fake: FakeOpenAI, **settings: Any) -> CoroConfig:
    return provider_config("openai", baseUrl=fake.base_url, defaultModel="local", **settings)


def block(name: str, arguments: dict[str, Any]) -> str:
    return f"```json\n{json.dumps({'name': name, 'arguments': arguments})}\n```"


def last_user(messages: list[dict[str, Any]]) -> str:
    return str(next(m["content"] for m in reversed(messages) if m["role"] == "user"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


async def test_a_server_without_tool_calling_drives_a_job_to_completion(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.tool_calling = False  # refuses `tools` and `role: tool` with a 400
    fake.queue(
        # planning
        Reply(
            text="I will record the work item, then write the file.\n\n"
            + block("set_work_items", {"workItems": ["write-hello"]})
            + "\n"
            + block("file_write", {"path": "hello.txt", "content": "Hello\n"})
        ),
        Reply(text="Plan done."),
        # coding
        Reply(text=block("update_work_item", {"name": "write-hello", "status": "complete"})),
        Reply(text="All done."),
    )
    async with api_factory(config(fake, toolCalling="prompted")) as api:
        workflow = write_workflow(api.home, "prompted", TWO_PHASES)
        job_id = await api.create(workflow, description="say hello")
        result = await api.finish(job_id)
        job = await api.job(job_id)

    assert result.done == "complete", result.texts()
    assert (api.home.root / "work" / job_id / "hello.txt").read_text() == "Hello\n"
    assert job["workItems"] == [{"name": "write-hello", "status": "complete", "loopCount": 0}]
    texts = result.texts()
    assert "I will record the work item, then write the file." in texts
    assert not any('"name": "file_write"' in t for t in texts), "the call block is no text"
    assert [t.split(" ")[1] for t in texts if t.startswith("→ ")] == [
        "set_work_items",
        "file_write",
        "update_work_item",
    ]

    requests = fake.chat_requests
    assert len(requests) == 4 and all(r.status == 200 for r in requests)
    system = requests[0].messages[0]["content"]
    assert "# Calling tools" in system and "### file_write" in system
    assert '"name": "<tool name>", "arguments"' in system
    # Both results of the first reply come back in one user message, in call order.
    answer = requests[1].messages[-1]
    assert answer["role"] == "user"
    assert answer["content"].index("[tool result: set_work_items]") < answer["content"].index(
        "[tool result: file_write]"
    )
    # The next phase replays the earlier calls as the blocks the model writes.
    replay = requests[2].messages
    assert all(m["role"] in ("system", "user", "assistant") for m in replay)
    assistant = "\n".join(m["content"] for m in replay if m["role"] == "assistant")
    assert '{"name": "file_write", "arguments": {"path": "hello.txt"' in assistant
    assert "[tool result: file_write]" in "\n".join(m["content"] for m in replay)
    # The transcript records them as tool calls like any other.
    calls = [c["name"] for m in job["conversationHistory"] for c in m.get("toolCalls", [])]
    assert calls == ["set_work_items", "file_write", "update_work_item"]


async def test_auto_mode_turns_prompted_on_a_server_that_refuses_tools(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.tool_calling = False
    fake.queue(
        Reply(text=block("log", {"message": "planning"})),
        Reply(text="Planned."),
        Reply(text=block("file_write", {"path": "b.txt", "content": "prompted"})),
        Reply(text="Built."),
    )
    async with api_factory(config(fake)) as api:  # auto, the default for a compatible server
        workflow = write_workflow(api.home, "auto-refused", TWO_PHASES)
        job_id = await api.create(workflow)
        result = await api.finish(job_id)

    assert result.done == "complete", result.texts()
    assert (api.home.root / "work" / job_id / "b.txt").read_text() == "prompted"
    refused, *answered = fake.chat_requests
    assert refused.status == 400 and refused.tools
    assert [r.status for r in answered] == [200] * 4, "later phases start prompted"
    assert all(not r.tools and "# Calling tools" in r.messages[0]["content"] for r in answered)


async def test_auto_mode_runs_a_bare_json_reply_but_leaves_other_json_as_text(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    # How a 1.5B coder model answered a planning prompt: nothing but the call's JSON.
    fake.queue(
        Reply(text=json.dumps({"name": "log", "arguments": {"message": "planning the change"}})),
        Reply(tool_calls=[ToolCall("file_write", {"path": "a.txt", "content": "native"})]),
        Reply(text='The manifest will be:\n```json\n{"name": "greeter", "version": "1.0.0"}\n```'),
    )
    async with api_factory(config(fake)) as api:  # a compatible server: auto by default
        workflow = write_workflow(api.home, "auto", [{"name": "work", "agent": None}])
        job_id = await api.create(workflow)
        result = await api.finish(job_id)

    assert result.done == "complete", result.texts()
    texts = result.texts()
    assert any(t.startswith("→ log") for t in texts)
    assert "planning the change" in "\n".join(texts)
    assert (api.home.root / "work" / job_id / "a.txt").read_text() == "native"
    assert any(t.startswith("The manifest will be:") for t in texts)
    requests = fake.chat_requests
    assert len(requests) == 3, "unrelated JSON ends the turn like any text"
    assert all(r.tools for r in requests), "auto still offers native tools"
    assert last_user(requests[1].messages).startswith("[tool result: log]")
    assert requests[2].messages[-1]["role"] == "tool", "native calls are answered natively"


async def test_malformed_calls_get_an_error_result_that_explains_the_convention(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.tool_calling = False
    write = {"path": "a.txt", "content": "x"}
    fake.queue(
        Reply(text='```json\n{"name": "file_write", "arguments": {"path": "a.txt"\n```'),
        Reply(text=block("write_file", write)),
        Reply(text='```json\n{"name": "file_write", "arguments": "a.txt"}\n```'),
        Reply(text=block("file_write", write)),
        Reply(text="Done."),
    )
    async with api_factory(config(fake, toolCalling="prompted")) as api:
        workflow = write_workflow(
            api.home, "malformed", [{"name": "work", "agent": None, "tools": ["file_write"]}]
        )
        job_id = await api.create(workflow)
        result = await api.finish(job_id)

    assert result.done == "complete", result.texts()
    assert (api.home.root / "work" / job_id / "a.txt").read_text() == "x"
    assert sum(t.startswith("→ file_write") for t in result.texts()) == 1
    broken, unknown, not_object, ran = (last_user(r.messages) for r in fake.chat_requests[1:])
    assert broken.startswith("[tool error: file_write]")
    assert "could not be read as JSON" in broken
    for error in (broken, unknown, not_object):
        assert '```json\n{"name": "<tool name>", "arguments"' in error, error
    assert "There is no tool named 'write_file'. Available tools: file_write." in unknown
    assert "The arguments of file_write must be a JSON object, not str" in not_object
    assert ran.startswith("[tool result: file_write]")


def test_the_shapes_small_models_write_are_read_as_calls() -> None:
    known = {"log", "file_write"}
    qwen = '<tool_call>\n{"name": "log", "arguments": {"message": "hi"}}\n</tool_call>'
    double_encoded = '{"name": "log", "arguments": "{\\"message\\": \\"hi\\"}"}'
    llama = '```json\n{"name": "log", "parameters": {"message": "hi"}}\n```'
    several = '```json\n[{"name": "log", "arguments": {"message": "hi"}}, {"name": "log"}]\n```'
    for text in (qwen, double_encoded, llama):
        parsed = parse_calls(text, known, strict=False)
        assert [(c.name, c.arguments, c.problem) for c in parsed.calls] == [
            ("log", {"message": "hi"}, None)
        ], text
        assert parsed.text == ""
    assert [c.arguments for c in parse_calls(several, known, strict=False).calls] == [
        {"message": "hi"},
        {},
    ]
    # Not calls: code in another language, JSON that is no call, an unknown name in auto.
    for text in (
        '```python\n{"name": "log", "arguments": {}}\n```',
        '{"name": "greeter", "version": "1.0.0"}',
        '```json\n{"name": "deploy", "arguments": {}}\n```',
    ):
        assert parse_calls(text, known, strict=False).calls == [], text


def bare(name: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"name": name, "arguments": arguments})


async def test_constrained_calls_ask_the_server_for_a_call_and_end_with_end_turn(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.tool_calling = False
    write = {"path": "a.txt", "content": "x"}
    fake.queue(
        Reply(text=bare("file_write", write)),
        Reply(text='{"name": "file_write", "arguments": {"path": "a.txt", "content": "xxxxx'),
        Reply(text=bare("end_turn", {"summary": "Wrote a.txt."})),
    )
    settings = {"toolCalling": "constrained", "temperature": 0, "frequencyPenalty": 0.5}
    async with api_factory(config(fake, **settings)) as api:
        workflow = write_workflow(
            api.home, "constrained", [{"name": "work", "agent": None, "tools": ["file_write"]}]
        )
        job_id = await api.create(workflow, description="Write a.txt")
        result = await api.finish(job_id)

    assert result.done == "complete", result.texts()
    assert (api.home.root / "work" / job_id / "a.txt").read_text() == "x"
    assert "Wrote a.txt." in result.texts()
    first, cut_off, last = fake.chat_requests
    assert not first.tools, "no native tools: the calls are described and constrained"
    format_ = first.body["response_format"]
    assert format_["type"] == "json_schema"
    options = format_["json_schema"]["schema"]["anyOf"]
    names = [o["properties"]["name"]["const"] for o in options]
    assert names == ["file_write", "end_turn"]
    assert options[0]["properties"]["arguments"]["required"] == ["path", "content"]
    assert first.body["temperature"] == 0 and first.body["frequency_penalty"] == 0.5
    assert '"end_turn"' in first.messages[0]["content"], "the convention says how to finish"
    assert "The request:\n> Write a.txt" in last_user(first.messages), "the task is in the turn"
    # a reply that is not a whole call (cut off) is an error result, not the end of the turn
    assert last_user(last.messages).startswith("[tool error: reply]")
    assert "neither a tool call nor end_turn" in last_user(last.messages)
    assert last_user(cut_off.messages).startswith("[tool result: file_write]")


async def test_constrained_calls_withdraw_a_tool_the_agent_was_told_to_stop_repeating(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.tool_calling = False
    write = {"path": "a.txt", "content": "x"}
    fake.queue(*(Reply(text=bare("file_write", write)) for _ in range(3)))
    fake.queue(Reply(text=bare("end_turn", {"summary": "done"})))
    async with api_factory(config(fake, toolCalling="constrained")) as api:
        workflow = write_workflow(
            api.home, "withdraw", [{"name": "work", "agent": None, "tools": ["file_write"]}]
        )
        result = await api.finish(await api.create(workflow))

    assert result.done == "complete", result.texts()
    requests = fake.chat_requests
    assert len(requests) == 4

    def offered(request: Any) -> list[str]:
        options = request.body["response_format"]["json_schema"]["schema"]["anyOf"]
        return [o["properties"]["name"]["const"] for o in options]

    assert [offered(r) for r in requests] == [["file_write", "end_turn"]] * 3 + [["end_turn"]]
    assert "[coro] Loop detected" in last_user(requests[3].messages)


async def test_the_same_malformed_call_three_times_escalates(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.tool_calling = False
    fake.queue(*(Reply(text="I think I should write a file now.") for _ in range(3)))
    async with api_factory(config(fake, toolCalling="constrained")) as api:
        workflow = write_workflow(
            api.home, "rambling", [{"name": "work", "agent": None, "tools": ["file_write"]}]
        )
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        job = await api.job(job_id)

    assert result.done == "escalated"
    assert "same malformed tool call 3 times in a row" in job["escalationMessage"]
    assert len(fake.chat_requests) == 3
