"""The `anthropic` executor against a loopback fake of the Messages API.

Unit level: `execute_phase` with a hand-built `PhaseRequest` (a fake `call_tool`).
End to end: a runner whose default provider is the `anthropic` plugin, pointed at the
fake through `baseUrl`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.domain.errors import PluginConfigError
from coro.domain.models import ConversationMessage, ToolCallRecord, ToolResultRecord
from coro.executors import pricing
from coro.executors.anthropic import DEFAULT_MODEL, AnthropicExecutor, create
from coro.executors.anthropic_errors import retry_after_seconds
from coro.executors.anthropic_messages import build_messages
from coro.executors.base import (
    ChatDelta,
    ChatUsage,
    ExecutorError,
    ExecutorEvent,
    PhaseRequest,
    PromptEvent,
    RateLimited,
    TextEvent,
    ThinkingEvent,
    UsageEvent,
)
from coro.extensions import builtin_tools
from coro.tools.registry import PhaseSignals, ToolResult
from tests.conftest import WAIT_LIMIT, Api, ApiFactory, write_workflow
from tests.fakes.anthropic_server import (
    ErrorReply,
    FakeAnthropic,
    Reply,
    Text,
    Thinking,
    ToolUse,
    Usage,
    api_error,
    invalid_request,
    not_found,
    overloaded,
    prompt_too_long,
    rate_limited,
    unavailable,
)

KEY = "sk-ant-test-0123456789abcdefSECRET"
EPHEMERAL = {"type": "ephemeral"}


_made: list[AnthropicExecutor] = []


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY) as server:
        yield server
        while _made:
            await _made.pop().aclose()  # the executors' connection pools


def executor_for(fake: FakeAnthropic, **settings: Any) -> AnthropicExecutor:
    return made(
        create({"apiKey": KEY, "baseUrl": fake.base_url, "retryBackoffSeconds": 0, **settings})
    )


def made(executor: AnthropicExecutor) -> AnthropicExecutor:
    _made.append(executor)
    return executor


class Calls:
    """A `call_tool` stand-in: records calls, answers from a table."""

    def __init__(self, results: dict[str, ToolResult] | None = None) -> None:
        self.results = results or {}
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []
        self.request: PhaseRequest | None = None
        self.on_call: Any = None

    async def __call__(self, name: str, raw: dict[str, Any], call_id: str | None) -> ToolResult:
        self.calls.append((name, raw, call_id))
        if self.on_call is not None:
            await self.on_call(name)
        return self.results.get(name, ToolResult({"ok": True}))


def phase_request(
    tmp_path: Path,
    calls: Calls,
    *,
    prompt: str = "Begin the phase.",
    history: list[ConversationMessage] | None = None,
    tools: list[str] | None = None,
    model: str | None = None,
    max_turns: int = 200,
) -> PhaseRequest:
    allowed = tools if tools is not None else ["file_read", "file_write", "log"]
    request = PhaseRequest(
        job_id="job-1",
        phase="work",
        visit=1,
        system_prompt="You are a careful engineer. " * 20,
        prompt=prompt,
        history=history or [],
        model=model,
        provider="anthropic",
        params={},
        workdir=tmp_path,
        tools=builtin_tools().allowed(allowed),
        call_tool=calls,
        signals=PhaseSignals(),
        interrupt=asyncio.Event(),
        max_turns=max_turns,
    )
    calls.request = request
    return request


async def run(executor: AnthropicExecutor, request: PhaseRequest) -> list[ExecutorEvent]:
    async with asyncio.timeout(WAIT_LIMIT):
        return [event async for event in executor.execute_phase(request)]


def cost(model: str, u: Usage) -> float:
    return pricing.cost_usd(
        "anthropic",
        model,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_input_tokens=u.cache_read_input_tokens,
        cache_creation_input_tokens=u.cache_creation_input_tokens,
    )


# --- the tool loop --------------------------------------------------------------------


async def test_tool_loop_with_parallel_calls_error_results_caching_and_usage(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    first = Usage(input_tokens=120, output_tokens=48, cache_creation_input_tokens=2400)
    second = Usage(input_tokens=35, output_tokens=9, cache_read_input_tokens=2400)
    fake.queue(
        Reply(
            [
                Thinking("The file may not exist yet."),
                Text("Reading, then writing."),
                ToolUse("file_read", {"path": "notes.md"}, id="toolu_read"),
                ToolUse("file_write", {"path": "out.md", "content": "# Out\nline"}, id="toolu_w"),
            ],
            usage=first,
            fragment=4,
        ),
        Reply([Text("Both calls are done.")], usage=second),
    )
    calls = Calls({"file_read": ToolResult("File not found: notes.md", is_error=True)})
    request = phase_request(tmp_path, calls)

    events = await run(executor_for(fake), request)

    assert [e for e in events if not isinstance(e, UsageEvent)] == [
        ThinkingEvent("The file may not exist yet."),
        TextEvent("Reading, then writing."),
        TextEvent("Both calls are done."),
    ]
    assert calls.calls == [
        ("file_read", {"path": "notes.md"}, "toolu_read"),
        ("file_write", {"path": "out.md", "content": "# Out\nline"}, "toolu_w"),
    ]
    usages = [e for e in events if isinstance(e, UsageEvent)]
    assert usages == [
        UsageEvent(120, 48, 0, 2400, cost(DEFAULT_MODEL, first), DEFAULT_MODEL, 1),
        UsageEvent(35, 9, 2400, 0, cost(DEFAULT_MODEL, second), DEFAULT_MODEL, 1),
    ]
    assert usages[0].cost_usd == pytest.approx((120 * 2 + 48 * 10 + 2400 * 2.5) / 1e6)

    one, two = fake.message_requests
    for sent in (one, two):
        assert sent.api_key == KEY
        assert sent.body["model"] == DEFAULT_MODEL
        assert sent.body["max_tokens"] == 8192
        assert sent.body["stream"] is True
        assert sent.system[0]["cache_control"] == EPHEMERAL
        assert sent.system[0]["text"] == request.system_prompt
        assert sorted(t["name"] for t in sent.tools) == ["file_read", "file_write", "log"]
        assert [t.get("cache_control") for t in sent.tools] == [None, None, EPHEMERAL]
        assert all(t["input_schema"]["type"] == "object" for t in sent.tools)
        # The newest block is a breakpoint too, so the next call reads the whole prefix.
        assert sent.messages[-1]["content"][-1]["cache_control"] == EPHEMERAL
    assert one.messages == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Begin the phase.", "cache_control": EPHEMERAL}],
        }
    ]
    user, assistant, results = two.messages
    assert user["content"] == [{"type": "text", "text": "Begin the phase."}]  # no stale mark
    assert assistant["role"] == "assistant"
    assert [b["type"] for b in assistant["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert assistant["content"][0]["signature"] == "fake-signature"
    assert assistant["content"][3]["input"] == {"path": "out.md", "content": "# Out\nline"}
    assert results["role"] == "user"
    assert [(b["type"], b["tool_use_id"], b["is_error"]) for b in results["content"]] == [
        ("tool_result", "toolu_read", True),
        ("tool_result", "toolu_w", False),
    ]
    assert results["content"][0]["content"] == "File not found: notes.md"
    assert json.loads(results["content"][1]["content"]) == {"ok": True}


async def test_developer_messages_go_into_the_next_call(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(
        Reply([ToolUse("log", {"message": "working"}, id="toolu_log")]),
        Reply([Text("Switched to tabs.")]),
    )
    calls = Calls()
    request = phase_request(tmp_path, calls)
    request.developer_messages.put_nowait("Before you start: be brief.")

    async def developer_speaks(_: str) -> None:
        await request.developer_messages.put("Use tabs, not spaces.")

    calls.on_call = developer_speaks

    events = await run(executor_for(fake), request)

    prompts = [e.text for e in events if isinstance(e, PromptEvent)]
    assert prompts == ["Before you start: be brief.", "Use tabs, not spaces."]
    first, second = fake.message_requests
    assert [b["text"] for b in first.messages[0]["content"]] == [
        "Begin the phase.",
        "Before you start: be brief.",
    ]
    last = second.messages[-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]
    assert last[1]["text"] == "Use tabs, not spaces."


async def test_a_phase_signal_stops_the_loop_without_sending_results(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(
        Reply(
            [
                ToolUse("log", {"message": "a"}, id="toolu_1"),
                ToolUse("log", {"message": "b"}, id="toolu_2"),
            ]
        )
    )
    calls = Calls()
    request = phase_request(tmp_path, calls)

    async def goto(_: str) -> None:
        request.signals.next_phase = "review"

    calls.on_call = goto
    await run(executor_for(fake), request)
    assert [c[2] for c in calls.calls] == ["toolu_1"]  # the second call is not made
    assert len(fake.message_requests) == 1


async def test_the_transcript_is_replayed_as_valid_messages(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    history = [
        ConversationMessage(role="user", content="Begin phase planning."),
        ConversationMessage(role="assistant", content="I will write the plan."),
        ConversationMessage(
            role="assistant",
            tool_calls=[ToolCallRecord(id="call-1-1", name="file_write", input={"path": "p"})],
        ),
        ConversationMessage(
            role="tool", tool_results=[ToolResultRecord(tool_call_id="call-1-1", output="ok")]
        ),
        ConversationMessage(role="assistant", content="Plan written."),
        # a later phase of another executor reused the same call id
        ConversationMessage(
            role="assistant",
            tool_calls=[ToolCallRecord(id="call-1-1", name="log", input={"message": "m"})],
        ),
        ConversationMessage(
            role="tool",
            tool_results=[ToolResultRecord(tool_call_id="call-1-1", output="", is_error=True)],
        ),
    ]
    fake.queue(Reply([Text("Continuing.")]))
    calls = Calls()
    await run(
        executor_for(fake), phase_request(tmp_path, calls, prompt="Continue.", history=history)
    )

    (sent,) = fake.message_requests
    roles = [m["role"] for m in sent.messages]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert [b["type"] for b in sent.messages[1]["content"]] == ["text", "tool_use"]
    assert sent.messages[1]["content"][1]["id"] == "call-1-1"
    assert sent.messages[2]["content"][0]["tool_use_id"] == "call-1-1"
    assert [b["type"] for b in sent.messages[3]["content"]] == ["text", "tool_use"]
    renamed = sent.messages[3]["content"][1]["id"]
    assert renamed != "call-1-1"
    last = sent.messages[4]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]
    assert last[0]["tool_use_id"] == renamed
    assert last[0]["is_error"] is True
    assert last[1]["text"] == "Continue."


def test_transcript_repairs_what_the_api_would_refuse() -> None:
    history = [
        ConversationMessage(
            role="assistant",
            tool_calls=[ToolCallRecord(id="a", name="log"), ToolCallRecord(id="b", name="log")],
        ),
        ConversationMessage(
            role="tool", tool_results=[ToolResultRecord(tool_call_id="a", output="1")]
        ),
        ConversationMessage(
            role="tool", tool_results=[ToolResultRecord(tool_call_id="zzz", output="orphan")]
        ),
    ]
    messages = build_messages(history, "Go on.", tools_available=True)
    assert messages[0] == {
        "role": "user",
        "content": [{"type": "text", "text": "(continuing the job)"}],
    }
    results = messages[2]["content"]
    assert [(b["type"], b.get("tool_use_id")) for b in results] == [
        ("tool_result", "a"),
        ("tool_result", "b"),  # never recorded: answered as an error
        ("text", None),
    ]
    assert results[1]["is_error"] is True

    flat = build_messages(history, "Go on.", tools_available=False)
    kinds = {b["type"] for m in flat for b in m["content"]}
    assert kinds == {"text"}


async def test_cancel_during_a_slow_stream_returns_promptly(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(Reply([Text("This takes a very long time.")], hold=True))
    calls = Calls()
    request = phase_request(tmp_path, calls)
    task = asyncio.create_task(run(executor_for(fake), request))
    async with asyncio.timeout(WAIT_LIMIT):
        await fake.holding.wait()
    request.interrupt.set()
    events = await task  # returns although the server never finishes the message

    assert not fake.release.is_set()
    assert not any(isinstance(e, TextEvent) for e in events)
    (usage,) = [e for e in events if isinstance(e, UsageEvent)]
    assert usage.input_tokens == 25  # what message_start reported
    assert calls.calls == []


async def test_the_turn_limit_escalates(fake: FakeAnthropic, tmp_path: Path) -> None:
    fake.queue(*[Reply([ToolUse("log", {"message": str(i)})]) for i in range(3)])
    with pytest.raises(ExecutorError) as caught:
        await run(executor_for(fake, maxTurns=2), phase_request(tmp_path, Calls()))
    assert caught.value.escalate
    assert "limit of 2 model calls" in str(caught.value)
    assert len(fake.message_requests) == 2


# --- provider errors --------------------------------------------------------------------


async def test_a_rejected_key_escalates_without_showing_the_key(tmp_path: Path) -> None:
    wrong = "sk-ant-wrong-key-987654321"
    async with FakeAnthropic(api_key=KEY) as fake:  # echoes the presented key back
        executor = create({"apiKey": wrong, "baseUrl": fake.base_url})
        with pytest.raises(ExecutorError) as caught:
            await run(executor, phase_request(tmp_path, Calls()))
        health = await executor.healthcheck()
        await executor.aclose()
    message = str(caught.value)
    assert caught.value.escalate and not isinstance(caught.value, RateLimited)
    assert "rejected the API key (401" in message
    assert wrong not in message and "987654321" not in message
    assert health.ok is False
    assert "401" in health.message and wrong not in health.message
    assert fake.message_requests[0].api_key == wrong  # the key was sent, only never shown


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (not_found("claude-nope-9"), "does not know the model 'claude-nope-9' (404"),
        (prompt_too_long(), "conversation is too long for model claude-nope-9 (400"),
        (ErrorReply(413, "request_too_large", "Request exceeds the maximum size"), "too long"),
        (invalid_request("tools.0.name: String should match pattern"), "tools.0.name: String"),
        (ErrorReply(403, "permission_error", "not allowed"), "refused the request (403"),
    ],
)
async def test_requests_only_a_developer_can_fix_escalate(
    fake: FakeAnthropic, tmp_path: Path, reply: ErrorReply, expected: str
) -> None:
    fake.queue(reply)
    with pytest.raises(ExecutorError) as caught:
        await run(executor_for(fake), phase_request(tmp_path, Calls(), model="claude-nope-9"))
    assert caught.value.escalate
    assert not isinstance(caught.value, RateLimited)
    assert expected in str(caught.value)
    assert len(fake.message_requests) == 1  # not retried


async def test_429_raises_rate_limited_with_the_retry_after_header(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(rate_limited(retry_after=7))
    with pytest.raises(RateLimited) as caught:
        await run(executor_for(fake), phase_request(tmp_path, Calls()))
    assert caught.value.retry_after == 7
    assert caught.value.provider == "anthropic"
    assert "rate limit" in str(caught.value)
    assert len(fake.message_requests) == 1


def test_retry_after_falls_back_to_the_reset_headers() -> None:
    now = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds({"retry-after": "2.5"}, now) == 2.5
    assert retry_after_seconds({"retry-after": "Fri, 15 Jan 2027 08:00:04 GMT"}, now) == 4
    resets = {
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:05Z",
        "anthropic-ratelimit-tokens-reset": "2027-01-15T08:00:12Z",
    }
    assert retry_after_seconds(resets, now) == 12
    assert retry_after_seconds({}, now) == 30


@pytest.mark.parametrize("failure", [overloaded(), unavailable(), api_error(500), api_error(502)])
async def test_overloaded_and_5xx_are_retried(
    fake: FakeAnthropic, tmp_path: Path, failure: ErrorReply
) -> None:
    fake.queue(failure, failure, Reply([Text("Made it.")]))
    events = await run(executor_for(fake), phase_request(tmp_path, Calls()))
    assert TextEvent("Made it.") in events
    assert len(fake.message_requests) == 3


async def test_an_overload_in_the_middle_of_a_stream_is_retried(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(Reply([ToolUse("log", {"message": "x"})], error_after=overloaded()), Reply())
    calls = Calls()
    await run(executor_for(fake), phase_request(tmp_path, calls))
    assert calls.calls == []  # the interrupted message's tool call was never run
    assert len(fake.message_requests) == 2


async def test_overloaded_beyond_the_retries_parks_the_job(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(*[overloaded()] * 3)
    with pytest.raises(RateLimited) as caught:
        await run(executor_for(fake, maxRetries=2), phase_request(tmp_path, Calls()))
    assert caught.value.kind == "overloaded"
    assert caught.value.retry_after > 0
    assert "overloaded" in str(caught.value)
    assert len(fake.message_requests) == 3


async def test_an_unreachable_api_parks_after_the_retries(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    executor = create(
        {"apiKey": KEY, "baseUrl": f"http://127.0.0.1:{port}", "retryBackoffSeconds": 0}
    )
    with pytest.raises(RateLimited) as caught:
        await run(executor, phase_request(tmp_path, Calls()))
    assert "cannot reach the Anthropic API" in str(caught.value)
    health = await executor.healthcheck()
    await executor.aclose()
    assert health.ok is False
    assert f"127.0.0.1:{port}" in health.message


# --- config, catalogue, health, plan mode ---------------------------------------------


def test_settings_errors_name_the_field_never_the_value() -> None:
    with pytest.raises(PluginConfigError, match="apiKey"):
        create({})
    with pytest.raises(PluginConfigError) as caught:
        create({"apiKey": KEY, "baseUrl": f"ftp://{KEY}@example.com", "colour": KEY})
    message = str(caught.value)
    assert "baseUrl" in message and "colour" in message
    assert KEY not in message and "SECRET" not in message
    executor = create({"apiKey": KEY, "maxTokens": 1024})
    assert executor.settings.max_tokens == 1024
    assert KEY not in repr(executor) and KEY not in repr(executor.settings)


async def test_models_come_from_the_catalogue_and_healthcheck_is_a_real_request(
    fake: FakeAnthropic,
) -> None:
    executor = executor_for(fake)
    models = {m.id: m for m in await executor.models()}
    assert models[DEFAULT_MODEL].pricing == {
        "inputPerMTokens": 2,
        "outputPerMTokens": 10,
        "cacheReadPerMTokens": 0.10,
        "cacheCreationPerMTokens": 2.50,
    }
    assert models["claude-haiku-4-5"].context_window == 200_000
    health = await executor.healthcheck()
    assert health.ok, health.message
    (listed,) = [r for r in fake.anthropic_requests if r.path == "/v1/models"]
    assert listed.api_key == KEY
    assert pricing.lookup("anthropic", "claude-haiku-4-5-20251001") is not None


async def test_chat_streams_text_deltas_then_usage(fake: FakeAnthropic) -> None:
    fake.queue(
        Reply(
            [Text("What should the endpoint return?")],
            usage=Usage(input_tokens=300, output_tokens=11, cache_read_input_tokens=40),
            fragment=5,
        )
    )
    executor = executor_for(fake)
    events = [
        e
        async for e in executor.chat(
            [{"role": "user", "content": "Add a health endpoint"}],
            system="You shape briefs.",
            model=None,
            max_tokens=4096,
        )
    ]
    deltas = [e.text for e in events if isinstance(e, ChatDelta)]
    assert len(deltas) > 1
    assert "".join(deltas) == "What should the endpoint return?"
    assert events[-1] == ChatUsage(input_tokens=340, output_tokens=11)
    (sent,) = fake.message_requests
    assert sent.body["max_tokens"] == 4096
    assert "tools" not in sent.body
    assert sent.system[0]["text"] == "You shape briefs."


# --- end to end through the runner -----------------------------------------------------

TWO_PHASES = [
    {"name": "planning", "agent": None, "status": "planning"},
    {"name": "coding", "agent": None, "status": "coding"},
]


def anthropic_config(fake: FakeAnthropic) -> CoroConfig:
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "anthropic"},
            "plugins": {
                "installed": {
                    "anthropic": {
                        "config": {
                            "apiKey": KEY,
                            "baseUrl": fake.base_url,
                            "retryBackoffSeconds": 0,
                        }
                    }
                }
            },
        }
    )


async def close_executor(api: Api) -> None:
    executor = api.runner.env.executors.get("anthropic")
    assert isinstance(executor, AnthropicExecutor)
    await executor.aclose()


async def test_a_job_driven_by_the_anthropic_executor_completes(
    api_factory: ApiFactory, fake: FakeAnthropic
) -> None:
    usages = [
        Usage(input_tokens=900, output_tokens=60, cache_creation_input_tokens=3000),
        Usage(input_tokens=80, output_tokens=40, cache_read_input_tokens=3000),
        Usage(input_tokens=50, output_tokens=12, cache_read_input_tokens=3100),
        Usage(input_tokens=400, output_tokens=30, cache_creation_input_tokens=1200),
        Usage(input_tokens=20, output_tokens=8, cache_read_input_tokens=4300),
    ]
    fake.queue(
        Reply(
            [
                Text("Planning the greeting."),
                ToolUse("set_work_items", {"workItems": ["greeting"]}),
                ToolUse("file_write", {"path": "src/hello.txt", "content": "hello, world\n"}),
            ],
            usage=usages[0],
        ),
        Reply(
            [
                ToolUse(
                    "post_artifact",
                    {"kind": "plan-md", "title": "The plan", "data": {"path": "src/hello.txt"}},
                )
            ],
            usage=usages[1],
        ),
        Reply([Text("The plan is ready.")], usage=usages[2]),
        Reply(
            [ToolUse("update_work_item", {"name": "greeting", "status": "complete"})],
            usage=usages[3],
        ),
        Reply([Text("Greeting done.")], usage=usages[4]),
    )
    async with api_factory(anthropic_config(fake)) as api:
        workflow = write_workflow(api.home, "two-phase", TWO_PHASES)
        job_id = await api.create(workflow, description="say hello")
        result = await api.finish(job_id)
        job = await api.job(job_id)
        raw_job = (await api.client.get(f"/jobs/{job_id}")).text
        workdir = api.runner.env.workdir(job_id)
        await close_executor(api)

    assert result.done == "complete", result.texts()
    texts = result.texts()
    assert "Planning the greeting." in texts
    assert "The plan is ready." in texts
    assert "Phase advanced → coding" in texts
    assert (workdir / "src" / "hello.txt").read_text() == "hello, world\n"
    assert job["workItems"] == [{"name": "greeting", "status": "complete", "loopCount": 0}]
    (artifact,) = job["artifacts"]
    assert artifact["title"] == "The plan"

    planning, coding = job["phaseUsage"]
    for recorded, spent, turns in ((planning, usages[:3], 3), (coding, usages[3:], 2)):
        assert recorded["provider"] == "anthropic"
        assert recorded["model"] == DEFAULT_MODEL
        assert recorded["numTurns"] == turns
        assert recorded["inputTokens"] == sum(u.input_tokens for u in spent)
        assert recorded["outputTokens"] == sum(u.output_tokens for u in spent)
        assert recorded["cacheReadInputTokens"] == sum(u.cache_read_input_tokens for u in spent)
        assert recorded["cacheCreationInputTokens"] == sum(
            u.cache_creation_input_tokens for u in spent
        )
        assert recorded["costUsd"] == pytest.approx(
            sum(cost(DEFAULT_MODEL, u) for u in spent), abs=1e-6
        )
    assert job["tokenUsage"]["cacheReadInputTokens"] == 3000 + 3100 + 4300

    requests = fake.message_requests
    assert len(requests) == 5
    assert all(r.api_key == KEY for r in requests)
    assert all(r.system[0]["cache_control"] == EPHEMERAL for r in requests)
    assert all(r.tools and r.tools[-1]["cache_control"] == EPHEMERAL for r in requests)
    # The coding phase continues the planning conversation.
    coding_first = requests[3]
    assert len(coding_first.blocks("tool_use")) == 3
    assert len(coding_first.blocks("tool_result")) == 3

    everything = "\n".join(result.lines) + raw_job
    assert KEY not in everything
    assert "SECRET" not in everything


async def test_a_429_mid_phase_parks_resumes_and_continues_the_conversation(
    api_factory: ApiFactory, fake: FakeAnthropic
) -> None:
    write = ToolUse("file_write", {"path": "a.txt", "content": "once"}, id="toolu_write_1")
    fake.queue(
        Reply([Text("Writing the file."), write]),
        rate_limited(retry_after=1),
        Reply([Text("Finished after the wait.")]),
    )
    async with api_factory(anthropic_config(fake)) as api:
        workflow = write_workflow(api.home, "one-phase", [{"name": "work", "agent": None}])
        job_id = await api.create(workflow)
        parked = await api.wait_for_line(job_id, "[rate-limit]")
        result = await api.finish(job_id)
        job = await api.job(job_id)
        workdir = api.runner.env.workdir(job_id)
        await close_executor(api)

    # The note is logged only once the job is stored as awaiting-rate-limit.
    note = parked.texts()[-1]
    assert note.startswith("[rate-limit] anthropic: Anthropic rate limit (429")
    assert note.endswith("Resuming automatically in 1s.")
    assert result.done == "complete", result.texts()
    texts = result.texts()
    assert "[rate-limit] Wait over — resuming the phase" in texts
    assert "Finished after the wait." in texts
    assert sum(1 for t in texts if t.startswith("→ file_write")) == 1  # the tool ran once
    assert (workdir / "a.txt").read_text() == "once"

    first, limited, resumed = fake.message_requests
    assert not first.blocks("tool_result")
    assert limited.messages[-1]["content"][0]["tool_use_id"] == "toolu_write_1"
    uses = resumed.blocks("tool_use")
    results = resumed.blocks("tool_result")
    assert [u["id"] for u in uses] == ["toolu_write_1"]
    assert [r["tool_use_id"] for r in results] == ["toolu_write_1"]
    assert uses[0]["input"] == {"path": "a.txt", "content": "once"}
    assert job["rateLimitInfo"] is None
    assert sum(u["numTurns"] for u in job["phaseUsage"]) == 2
