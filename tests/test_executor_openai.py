"""The `openai` executor against a loopback fake of the Chat Completions API.

Unit level: a hand-built `PhaseRequest` with a recording `call_tool`. End to end: real
runners configured with `plugins.installed.openai`, the fake playing the model.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.domain.errors import PluginConfigError
from coro.domain.models import ConversationMessage, ToolCallRecord, ToolResultRecord
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
from coro.executors.openai_chat import (
    KEYLESS_PLACEHOLDER,
    OVERLOADED_BACKOFF_SECONDS,
    RATE_LIMIT_FALLBACK_SECONDS,
    OpenAIChatExecutor,
    create,
)
from coro.executors.openai_messages import history_messages, parse_arguments, wire_call_id
from coro.extensions import builtin_tools
from coro.tools import PhaseSignals, ToolResult
from tests.conftest import ApiFactory, write_workflow
from tests.fakes.openai_server import (
    FakeOpenAI,
    Reply,
    ToolCall,
    bad_request,
    context_length_exceeded,
    model_not_found,
    rate_limited,
    server_error,
)

KEY = "sk-test-Zq8mW3nR5tY7uI9oP1aS"
WRONG_KEY = "sk-test-WRONGwrongWRONG0042"
TOOLS = ("file_read", "file_write", "goto_phase")


# --- helpers ------------------------------------------------------------------------


@dataclass
class ToolCalls:
    """A recording `call_tool`: results by tool name, an optional hook per call."""

    results: dict[str, ToolResult] = field(default_factory=dict)
    made: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    hook: Callable[[str], Awaitable[None] | None] | None = None

    async def __call__(self, name: str, raw: dict[str, Any], call_id: str | None) -> ToolResult:
        self.made.append((name, raw, call_id))
        if self.hook is not None:
            outcome = self.hook(name)
            if outcome is not None:
                await outcome
        return self.results.get(name, ToolResult(f"{name} ok"))


def make_request(
    calls: ToolCalls,
    tmp_path: Path,
    *,
    model: str | None = None,
    history: list[ConversationMessage] | None = None,
    max_turns: int = 200,
) -> PhaseRequest:
    return PhaseRequest(
        job_id="job-1",
        phase="coding",
        visit=1,
        system_prompt="You are a careful engineer.",
        prompt="Write the file.",
        history=history or [],
        model=model,
        provider="openai",
        params={},
        workdir=tmp_path,
        tools=builtin_tools().allowed(list(TOOLS)),
        call_tool=calls,
        signals=PhaseSignals(),
        interrupt=asyncio.Event(),
        max_turns=max_turns,
    )


async def run(executor: OpenAIChatExecutor, request: PhaseRequest) -> list[ExecutorEvent]:
    return [event async for event in executor.execute_phase(request)]


def usages(events: list[ExecutorEvent]) -> list[UsageEvent]:
    return [e for e in events if isinstance(e, UsageEvent)]


def assert_valid_conversation(messages: list[dict[str, Any]]) -> None:
    """What the API insists on: each tool call answered right after its message."""
    open_ids: list[str] = []
    for message in messages:
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_ids, message
            open_ids.remove(message["tool_call_id"])
            continue
        assert not open_ids, f"unanswered tool calls {open_ids} before {message}"
        if message["role"] == "assistant":
            open_ids = [c["id"] for c in message.get("tool_calls") or []]
            for call in message.get("tool_calls") or []:
                assert isinstance(call["function"]["arguments"], str)
    assert not open_ids


def refused_port() -> socket.socket:
    """A bound port nobody listens on: connections are refused (and it stays ours)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture
async def executor(fake: FakeOpenAI) -> AsyncIterator[OpenAIChatExecutor]:
    instance = create(
        {"apiKey": KEY, "baseUrl": fake.base_url, "defaultModel": "gpt-4o", "maxRetries": 2}
    )
    instance.retry_base_seconds = 0.0
    yield instance
    await instance.aclose()


# --- the tool loop ------------------------------------------------------------------


async def test_text_and_parallel_tool_calls_with_fragmented_arguments(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(
        Reply(
            text="Let me look first.",
            tool_calls=[
                ToolCall("file_read", {"path": "src/app.py"}, id="call_read"),
                ToolCall(
                    "file_write",
                    {"path": "notes.md", "content": '# Notes\nline with "quotes" and ü'},
                    id="call_write",
                ),
            ],
            fragment=3,
            interleave=True,
        ),
        Reply(text="Both done."),
    )
    calls = ToolCalls()
    request = make_request(calls, tmp_path)

    events = await run(executor, request)

    assert calls.made == [
        ("file_read", {"path": "src/app.py"}, "call_read"),
        (
            "file_write",
            {"path": "notes.md", "content": '# Notes\nline with "quotes" and ü'},
            "call_write",
        ),
    ]
    assert [e.text for e in events if isinstance(e, TextEvent)] == [
        "Let me look first.",
        "Both done.",
    ]
    assert len(usages(events)) == 2

    first, second = fake.chat_requests
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body["stream"] is True
    assert first.body["stream_options"] == {"include_usage": True}
    assert first.body["model"] == "gpt-4o"
    assert first.messages == [
        {"role": "system", "content": "You are a careful engineer."},
        {"role": "user", "content": "Write the file."},
    ]
    assert {t["function"]["name"] for t in first.tools} == set(TOOLS)
    write_tool = next(t for t in first.tools if t["function"]["name"] == "file_write")
    assert write_tool["type"] == "function"
    assert write_tool["function"]["description"]
    assert set(write_tool["function"]["parameters"]["properties"]) == {"path", "content"}

    assistant, read_result, write_result = second.messages[2:]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == "Let me look first."
    assert [(c["id"], c["function"]["name"]) for c in assistant["tool_calls"]] == [
        ("call_read", "file_read"),
        ("call_write", "file_write"),
    ]
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"])["path"] == "notes.md"
    assert read_result == {"role": "tool", "tool_call_id": "call_read", "content": "file_read ok"}
    assert write_result["tool_call_id"] == "call_write"
    assert_valid_conversation(second.messages)


async def test_tool_errors_and_unparseable_arguments_go_back_to_the_model(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(
        Reply(
            tool_calls=[
                ToolCall("file_read", {"path": "missing.txt"}, id="call_missing"),
                ToolCall("file_write", '{"path": "a.txt", "content": ', id="call_broken"),
            ]
        ),
        Reply(text="I will try again differently."),
    )
    calls = ToolCalls(results={"file_read": ToolResult("no such file", is_error=True)})
    request = make_request(calls, tmp_path)

    await run(executor, request)

    assert [name for name, _, _ in calls.made] == ["file_read"]  # the broken call never ran
    _, second = fake.chat_requests
    missing, broken = second.messages[-2:]
    assert missing == {
        "role": "tool",
        "tool_call_id": "call_missing",
        "content": "ERROR: no such file",
    }
    assert broken["tool_call_id"] == "call_broken"
    assert broken["content"].startswith("ERROR: ")
    assert "not usable" in broken["content"] and "JSON" in broken["content"]
    assert_valid_conversation(second.messages)


async def test_usage_and_cost_per_round_trip_are_what_the_server_reported(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(
        Reply(
            tool_calls=[ToolCall("file_read", {"path": "a"})],
            prompt_tokens=1000,
            completion_tokens=200,
            cached_tokens=400,
            model="gpt-4o-2024-08-06",  # a dated snapshot prices as its model
        ),
        Reply(text="ok", prompt_tokens=1300, completion_tokens=20, cached_tokens=0),
    )
    events = await run(executor, make_request(ToolCalls(), tmp_path))

    first, second = usages(events)
    assert (first.input_tokens, first.cache_read_input_tokens, first.output_tokens) == (
        600,
        400,
        200,
    )
    assert first.input_tokens + first.cache_read_input_tokens == 1000  # prompt_tokens
    assert (first.model, first.turns) == ("gpt-4o", 1)
    # gpt-4o: $2.50 / M input, $1.25 / M cached input, $10 / M output
    assert first.cost_usd == pytest.approx((600 * 2.5 + 400 * 1.25 + 200 * 10) / 1e6)
    assert (second.input_tokens, second.output_tokens, second.turns) == (1300, 20, 1)
    assert second.cost_usd == pytest.approx((1300 * 2.5 + 20 * 10) / 1e6)


async def test_reasoning_streamed_by_compatible_servers_becomes_thinking(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(Reply(reasoning="The user wants a file.", text="Done."))
    events = await run(executor, make_request(ToolCalls(), tmp_path))
    assert events[:2] == [ThinkingEvent("The user wants a file."), TextEvent("Done.")]


async def test_developer_messages_are_injected_before_the_next_round_trip(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(Reply(tool_calls=[ToolCall("file_read", {"path": "a"})]), Reply(text="Noted."))
    calls = ToolCalls()
    request = make_request(calls, tmp_path)
    calls.hook = lambda _name: request.developer_messages.put("Also add a README, please.")

    events = await run(executor, request)

    assert PromptEvent("Also add a README, please.") in events
    _, second = fake.chat_requests
    assert second.messages[-2]["role"] == "tool"
    assert second.messages[-1] == {"role": "user", "content": "Also add a README, please."}


async def test_a_phase_signal_stops_the_loop_without_another_round_trip(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(
        Reply(
            tool_calls=[
                ToolCall("goto_phase", {"phase": "review"}),
                ToolCall("file_read", {"path": "after-the-signal"}),
            ]
        )
    )
    calls = ToolCalls()
    request = make_request(calls, tmp_path)

    def signal(name: str) -> None:
        if name == "goto_phase":
            request.signals.next_phase = "review"

    calls.hook = signal
    await run(executor, request)
    assert [name for name, _, _ in calls.made] == ["goto_phase"]
    assert len(fake.chat_requests) == 1


async def test_the_turn_limit_escalates(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(Reply(tool_calls=[ToolCall("file_read", {"path": "a"})]))
    with pytest.raises(ExecutorError) as caught:
        await run(executor, make_request(ToolCalls(), tmp_path, max_turns=1))
    assert caught.value.escalate is True
    assert "limit of 1 model calls" in str(caught.value)
    assert len(fake.chat_requests) == 1


async def test_an_interrupt_ends_a_streaming_round_trip(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(Reply(text="this reply never completes", hold=True))
    request = make_request(ToolCalls(), tmp_path)
    phase = asyncio.create_task(run(executor, request))
    await fake.wait_for_requests(1)

    request.interrupt.set()
    events = await phase  # the fake holds its stream open: only the interrupt ends this

    assert events == []
    assert not fake.release.is_set()


async def test_transcript_from_earlier_turns_is_replayed_in_wire_format(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    long_original = "toolu_" + "x" * 50  # longer than OpenAI accepts
    history = [
        ConversationMessage(role="user", content="Start the job."),
        ConversationMessage(role="assistant", content="Reading first."),
        ConversationMessage(
            role="assistant",
            tool_calls=[
                ToolCallRecord(id="toolu_" + "x" * 50, name="file_read", input={"path": "a"})
            ],
        ),
        ConversationMessage(
            role="tool",
            tool_results=[ToolResultRecord(tool_call_id=long_original, output="A")],
        ),
        ConversationMessage(
            role="assistant",
            tool_calls=[ToolCallRecord(id="call-1-2", name="file_write", input={"path": "b"})],
        ),
        ConversationMessage(
            role="tool",
            tool_results=[ToolResultRecord(tool_call_id="call-1-2", output="nope", is_error=True)],
        ),
    ]
    fake.queue(Reply(text="Continuing."))
    await run(executor, make_request(ToolCalls(), tmp_path, history=history))

    (request,) = fake.chat_requests
    long_id = wire_call_id(long_original)
    assert len(long_id) <= 40
    assert request.messages[1:] == [
        {"role": "user", "content": "Start the job."},
        {
            "role": "assistant",
            "content": "Reading first.",
            "tool_calls": [
                {
                    "id": long_id,
                    "type": "function",
                    "function": {"name": "file_read", "arguments": '{"path": "a"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": long_id, "content": "A"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call-1-2",
                    "type": "function",
                    "function": {"name": "file_write", "arguments": '{"path": "b"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call-1-2", "content": "ERROR: nope"},
        {"role": "user", "content": "Write the file."},
    ]


def test_history_repairs_calls_without_results_and_results_without_calls() -> None:
    messages = history_messages(
        [
            ConversationMessage(role="user", content="a"),
            ConversationMessage(role="user", content="b"),
            ConversationMessage(
                role="assistant", tool_calls=[ToolCallRecord(id="c1", name="shell", input={})]
            ),
            ConversationMessage(
                role="tool", tool_results=[ToolResultRecord(tool_call_id="stray", output="?")]
            ),
            ConversationMessage(role="user", content="continue"),
        ]
    )
    assert messages[0] == {"role": "user", "content": "a\n\nb"}
    assert messages[2]["tool_call_id"] == "c1"
    assert messages[2]["content"].startswith("ERROR: ")
    assert messages[3] == {"role": "user", "content": "continue"}
    assert_valid_conversation(messages)


def test_tool_arguments_parsing() -> None:
    assert parse_arguments("") == ({}, None)
    assert parse_arguments('{"a": 1}') == ({"a": 1}, None)
    assert parse_arguments(json.dumps('{"a": 1}')) == ({"a": 1}, None)  # double-encoded
    assert parse_arguments("[1]")[0] is None
    assert parse_arguments('{"a": ')[0] is None


# --- provider errors ----------------------------------------------------------------


async def test_a_rejected_key_escalates_without_showing_the_key(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    wrong = create({"apiKey": WRONG_KEY, "baseUrl": fake.base_url, "defaultModel": "gpt-4o"})
    try:
        with pytest.raises(ExecutorError) as caught:
            await run(wrong, make_request(ToolCalls(), tmp_path))
        health = await wrong.healthcheck()
    finally:
        await wrong.aclose()

    assert caught.value.escalate is True
    assert "rejected the API key (401" in str(caught.value)
    assert WRONG_KEY not in str(caught.value)
    assert len(fake.chat_requests) == 1  # never retried
    assert health.ok is False
    assert "401" in health.message
    assert WRONG_KEY not in health.message


async def test_an_unknown_model_escalates_naming_it(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(model_not_found("gpt-9-ultra"))
    with pytest.raises(ExecutorError) as caught:
        await run(executor, make_request(ToolCalls(), tmp_path, model="gpt-9-ultra"))
    assert caught.value.escalate is True
    assert "'gpt-9-ultra' was not found" in str(caught.value)
    assert fake.chat_requests[0].body["model"] == "gpt-9-ultra"


async def test_context_overflow_escalates_saying_the_conversation_is_too_long(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(context_length_exceeded())
    with pytest.raises(ExecutorError) as caught:
        await run(executor, make_request(ToolCalls(), tmp_path))
    assert caught.value.escalate is True
    assert "conversation is too long" in str(caught.value)
    assert "context_length_exceeded" in str(caught.value)


async def test_other_bad_requests_escalate_with_the_api_message(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(bad_request("Invalid schema for function 'file_write'.", param="tools[1]"))
    with pytest.raises(ExecutorError) as caught:
        await run(executor, make_request(ToolCalls(), tmp_path))
    assert caught.value.escalate is True
    assert "(400): Invalid schema for function 'file_write'." in str(caught.value)


@pytest.mark.parametrize(
    ("retry_after", "retry_after_ms", "expected"),
    [
        ("7", None, 7.0),
        ("7", "1500", 1.5),
        (None, None, RATE_LIMIT_FALLBACK_SECONDS),
    ],
)
async def test_429_raises_rate_limited_with_the_servers_retry_after(
    fake: FakeOpenAI,
    executor: OpenAIChatExecutor,
    tmp_path: Path,
    retry_after: str | None,
    retry_after_ms: str | None,
    expected: float,
) -> None:
    fake.queue(rate_limited(retry_after, retry_after_ms))
    with pytest.raises(RateLimited) as caught:
        await run(executor, make_request(ToolCalls(), tmp_path))
    assert caught.value.retry_after == expected
    assert caught.value.provider == "openai"
    assert "429" in str(caught.value)
    assert len(fake.chat_requests) == 1  # the job parks; nothing is retried in place


async def test_an_exhausted_quota_escalates(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(rate_limited(quota=True))
    with pytest.raises(ExecutorError) as caught:
        await run(executor, make_request(ToolCalls(), tmp_path))
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.escalate is True
    assert "quota" in str(caught.value)


async def test_server_errors_are_retried(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(server_error(503), server_error(500), Reply(text="Recovered."))
    events = await run(executor, make_request(ToolCalls(), tmp_path))
    assert TextEvent("Recovered.") in events
    assert len(fake.chat_requests) == 3


async def test_server_errors_beyond_the_retries_park_the_job(
    fake: FakeOpenAI, executor: OpenAIChatExecutor, tmp_path: Path
) -> None:
    fake.queue(*[server_error(503)] * 3)  # maxRetries = 2: three attempts in all
    with pytest.raises(RateLimited) as caught:
        await run(executor, make_request(ToolCalls(), tmp_path))
    assert caught.value.retry_after == OVERLOADED_BACKOFF_SECONDS
    assert "503" in str(caught.value)
    assert len(fake.chat_requests) == 3


async def test_an_unreachable_server_is_retried_then_parks(tmp_path: Path) -> None:
    with refused_port() as sock:
        port = sock.getsockname()[1]
        executor = create(
            {"baseUrl": f"http://127.0.0.1:{port}/v1", "defaultModel": "m", "maxRetries": 1}
        )
        executor.retry_base_seconds = 0.0
        try:
            with pytest.raises(RateLimited) as caught:
                await run(executor, make_request(ToolCalls(), tmp_path))
            health = await executor.healthcheck()
        finally:
            await executor.aclose()
    assert "unreachable" in str(caught.value)
    assert health.ok is False
    assert "unreachable" in health.message


# --- settings -----------------------------------------------------------------------


def test_settings_errors_name_the_field_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(PluginConfigError, match="baseUrl") as bad_url:
        create({"apiKey": KEY, "baseUrl": "ftp://secret-host.example/v1"})
    assert "secret-host" not in str(bad_url.value)
    assert KEY not in str(bad_url.value)
    with pytest.raises(PluginConfigError, match="maxRetries"):
        create({"apiKey": KEY, "maxRetries": -1})
    with pytest.raises(PluginConfigError, match="apiToken"):
        create({"apiToken": KEY})
    with pytest.raises(PluginConfigError, match="apiKey") as missing:
        create({})
    assert "OPENAI_API_KEY" in str(missing.value)


def test_the_key_can_come_from_the_environment_for_openai_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    official = create({})
    assert official.official and official._secrets == ["sk-from-env"]
    local = create({"baseUrl": "http://127.0.0.1:11434/v1"})
    assert not local.official and local._secrets == []  # the env key never goes to it
    assert local._client.api_key == KEYLESS_PLACEHOLDER


async def test_max_tokens_uses_the_parameter_each_kind_of_server_understands(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    executor = create(
        {"apiKey": KEY, "baseUrl": fake.base_url, "defaultModel": "gpt-4o", "maxTokens": 512}
    )
    try:
        fake.queue(Reply(text="a"), Reply(text="b"))
        await run(executor, make_request(ToolCalls(), tmp_path))
        executor.official = True  # as if this were api.openai.com
        await run(executor, make_request(ToolCalls(), tmp_path))
    finally:
        await executor.aclose()
    compatible, official = fake.chat_requests
    assert compatible.body["max_tokens"] == 512 and "max_completion_tokens" not in compatible.body
    assert official.body["max_completion_tokens"] == 512 and "max_tokens" not in official.body


async def test_a_compatible_server_needs_a_model(fake: FakeOpenAI, tmp_path: Path) -> None:
    executor = create({"apiKey": KEY, "baseUrl": fake.base_url})
    try:
        with pytest.raises(ExecutorError, match="defaultModel") as caught:
            await run(executor, make_request(ToolCalls(), tmp_path))
    finally:
        await executor.aclose()
    assert caught.value.escalate is True
    assert fake.chat_requests == []


# --- plan mode and diagnostics ------------------------------------------------------


async def test_chat_streams_text_then_usage_without_tools(
    fake: FakeOpenAI, executor: OpenAIChatExecutor
) -> None:
    fake.queue(Reply(text="Which repository?", prompt_tokens=90, completion_tokens=4))
    events = [
        e
        async for e in executor.chat(
            [
                {"role": "user", "content": "Add a health endpoint"},
                {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": "Go"},
            ],
            system="Plan mode.",
            model="gpt-4o-mini",
            max_tokens=4096,
        )
    ]
    assert "".join(e.text for e in events if isinstance(e, ChatDelta)) == "Which repository?"
    assert len([e for e in events if isinstance(e, ChatDelta)]) > 1
    assert events[-1] == ChatUsage(input_tokens=90, output_tokens=4)
    (request,) = fake.chat_requests
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["max_tokens"] == 4096
    assert "tools" not in request.body
    assert [m["role"] for m in request.messages] == ["system", "user", "assistant", "user"]


async def test_chat_errors_are_executor_errors(
    fake: FakeOpenAI, executor: OpenAIChatExecutor
) -> None:
    fake.queue(rate_limited("3"))
    with pytest.raises(RateLimited):
        async for _ in executor.chat(
            [{"role": "user", "content": "hi"}], system="s", model=None, max_tokens=10
        ):
            pass


async def test_models_and_healthcheck_of_a_compatible_server(
    fake: FakeOpenAI, executor: OpenAIChatExecutor
) -> None:
    fake.model_ids = ("gpt-4o", "llama3.1:8b")
    models = {m.id: m for m in await executor.models()}
    assert set(models) == {"gpt-4o", "llama3.1:8b"}
    assert models["gpt-4o"].pricing is not None
    assert models["gpt-4o"].pricing["inputPerMTokens"] == 2.5
    assert models["llama3.1:8b"].pricing is None

    health = await executor.healthcheck()
    assert health.ok is True
    assert "2 models" in health.message

    fake.models_error = server_error(404)
    fake.models_error.message = "Not found"
    missing = await executor.healthcheck()
    assert missing.ok is False
    assert "baseUrl" in missing.message


async def test_the_catalogue_of_openai_itself_needs_no_request() -> None:
    executor = create({"apiKey": KEY})
    try:
        models = {m.id: m for m in await executor.models()}
    finally:
        await executor.aclose()
    assert "gpt-5.4" in models
    assert models["gpt-5.4"].pricing == {
        "inputPerMTokens": 2.5,
        "outputPerMTokens": 15,
        "cacheReadPerMTokens": 0.25,
    }
    assert models["gpt-5.4"].context_window == 1_000_000


# --- end to end through a runner ----------------------------------------------------

TWO_PHASES = [
    {"name": "planning", "agent": None, "status": "planning"},
    {"name": "coding", "agent": None, "status": "coding"},
]


def openai_config(base_url: str, **settings: Any) -> CoroConfig:
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "openai"},
            "plugins": {"installed": {"openai": {"config": {"baseUrl": base_url, **settings}}}},
        }
    )


async def test_a_job_driven_by_the_openai_executor_completes(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.queue(
        # planning
        Reply(
            text="Planning.",
            tool_calls=[
                ToolCall("set_work_items", {"workItems": ["write-hello"]}),
                ToolCall("file_write", {"path": "hello.txt", "content": "Hello from OpenAI\n"}),
            ],
            prompt_tokens=100,
            completion_tokens=20,
        ),
        Reply(
            tool_calls=[
                ToolCall(
                    "post_artifact",
                    {"kind": "notes", "title": "Hello", "data": {"path": "hello.txt"}},
                )
            ],
            prompt_tokens=150,
            completion_tokens=10,
            cached_tokens=64,
        ),
        Reply(text="Plan done.", prompt_tokens=200, completion_tokens=5),
        # coding
        Reply(
            tool_calls=[
                ToolCall("update_work_item", {"name": "write-hello", "status": "complete"})
            ],
            prompt_tokens=300,
            completion_tokens=15,
            cached_tokens=128,
        ),
        Reply(text="All done.", prompt_tokens=320, completion_tokens=4),
    )
    config = openai_config(fake.base_url, apiKey=KEY, defaultModel="gpt-4o")
    async with api_factory(config) as api:
        workflow = write_workflow(api.home, "openai-two", TWO_PHASES)
        job_id = await api.create(workflow, description="say hello")
        result = await api.finish(job_id)
        job = await api.job(job_id)
        raw_job = (await api.client.get(f"/jobs/{job_id}")).text

    assert result.done == "complete", result.texts()
    assert job["status"] == "complete"
    assert (api.home.root / "work" / job_id / "hello.txt").read_text() == "Hello from OpenAI\n"
    assert job["workItems"] == [{"name": "write-hello", "status": "complete", "loopCount": 0}]
    assert [a["title"] for a in job["artifacts"]] == ["Hello"]
    texts = result.texts()
    assert "Planning." in texts and "All done." in texts
    assert any(t.startswith("→ file_write") for t in texts)

    usage = {u["phase"]: u for u in job["phaseUsage"]}
    assert usage["planning"]["inputTokens"] == (100 + 150 + 200) - 64
    assert usage["planning"]["cacheReadInputTokens"] == 64
    assert usage["planning"]["outputTokens"] == 20 + 10 + 5
    assert usage["planning"]["numTurns"] == 3
    assert usage["planning"]["model"] == "gpt-4o"
    assert usage["planning"]["provider"] == "openai"
    assert usage["coding"]["inputTokens"] == (300 + 320) - 128
    assert usage["coding"]["cacheReadInputTokens"] == 128
    assert usage["coding"]["outputTokens"] == 15 + 4
    assert usage["planning"]["costUsd"] == pytest.approx(
        ((450 - 64) * 2.5 + 64 * 1.25 + 35 * 10) / 1e6, abs=1e-6
    )
    assert job["tokenUsage"]["inputTokens"] == 386 + 492

    assert fake.pending == 0
    for request in fake.chat_requests:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert_valid_conversation(request.messages)
    # The coding phase continues the conversation of the planning phase.
    coding_first = fake.chat_requests[3]
    assert any(m["role"] == "tool" for m in coding_first.messages)
    assert any(m.get("content") == "Plan done." for m in coding_first.messages)

    assert all(KEY not in line for line in result.lines)
    assert KEY not in raw_job


async def test_a_wrong_key_escalates_the_job_with_a_readable_message(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    config = openai_config(fake.base_url, apiKey=WRONG_KEY, defaultModel="gpt-4o")
    async with api_factory(config) as api:
        workflow = write_workflow(api.home, "openai-bad-key", TWO_PHASES)
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        raw_job = (await api.client.get(f"/jobs/{job_id}")).text
        tested = (await api.client.post("/test/llm", json={})).json()

    assert result.done == "escalated"
    assert any("rejected the API key (401" in line for line in result.lines)
    assert all(WRONG_KEY not in line for line in result.lines)
    assert WRONG_KEY not in raw_job
    assert tested["ok"] is False
    assert "401" in tested["message"]
    assert WRONG_KEY not in json.dumps(tested)


async def test_a_429_parks_the_job_which_resumes_without_repeating_tool_calls(
    api_factory: ApiFactory, fake: FakeOpenAI
) -> None:
    fake.queue(
        Reply(tool_calls=[ToolCall("file_write", {"path": "once.txt", "content": "1"})]),
        rate_limited("0"),
        Reply(text="Finished after the rate limit."),
    )
    config = openai_config(fake.base_url, apiKey=KEY, defaultModel="gpt-4o")
    async with api_factory(config) as api:
        workflow = write_workflow(api.home, "openai-429", [{"name": "work", "agent": None}])
        job_id = await api.create(workflow)
        result = await api.finish(job_id)

    assert result.done == "complete", result.texts()
    texts = result.texts()
    assert any(t.startswith("[rate-limit] openai") for t in texts)
    assert len([t for t in texts if t.startswith("→ file_write")]) == 1
    resumed = fake.chat_requests[-1]
    assert any(m["role"] == "tool" and m["content"] for m in resumed.messages), (
        "the resumed turn carries the finished tool call"
    )
    assert_valid_conversation(resumed.messages)


async def test_a_keyless_compatible_server_like_ollama(
    api_factory: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key-must-not-leave-this-machine")
    async with FakeOpenAI(api_key=None, models=("llama3.1:8b",)) as local:
        local.queue(
            Reply(tool_calls=[ToolCall("file_write", {"path": "local.txt", "content": "hi"})]),
            Reply(text="Written.", prompt_tokens=40, completion_tokens=3),
        )
        config = openai_config(local.base_url, defaultModel="llama3.1:8b")
        async with api_factory(config) as api:
            workflow = write_workflow(api.home, "openai-local", [{"name": "work", "agent": None}])
            job_id = await api.create(workflow)
            result = await api.finish(job_id)
            job = await api.job(job_id)
            models = (await api.client.get("/plugins/openai/models")).json()["models"]

    assert result.done == "complete", result.texts()
    assert (api.home.root / "work" / job_id / "local.txt").read_text() == "hi"
    (usage,) = job["phaseUsage"]
    assert usage["model"] == "llama3.1:8b"
    assert usage["costUsd"] == 0
    assert [m["id"] for m in models] == ["llama3.1:8b"]
    for request in local.requests:
        assert request.headers.get("authorization") == f"Bearer {KEYLESS_PLACEHOLDER}"
        assert "sk-env-key" not in json.dumps(request.headers)
