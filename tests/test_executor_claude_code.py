"""The `claude-code` executor: the real bundled Claude Code CLI against the loopback fake
of the Anthropic Messages API (`ANTHROPIC_BASE_URL`).

Unit level: `execute_phase` with a hand-built `PhaseRequest` (a fake `call_tool`).
End to end: a runner whose default provider is the `claude-code` plugin.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coro.config import CoroConfig, CoroHome
from coro.domain.errors import PluginConfigError
from coro.domain.models import ConversationMessage, ToolCallRecord, ToolResultRecord
from coro.executors import pricing
from coro.executors.base import (
    ExecutorError,
    ExecutorEvent,
    PhaseRequest,
    PromptEvent,
    RateLimited,
    SessionEvent,
    TextEvent,
    UsageEvent,
)
from coro.executors.claude_code import (
    DEFAULT_MODEL,
    ClaudeCodeExecutor,
    create,
    with_transcript,
)
from coro.executors.claude_code_cli import INSTALL_HINT
from coro.executors.claude_code_tools import ToolPolicy
from coro.extensions import BUILTIN_PLUGINS, builtin_tools
from coro.tools.registry import PhaseSignals, ToolResult
from tests.conftest import WAIT_LIMIT, ApiFactory, write_workflow
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    RecordedRequest,
    Reply,
    Text,
    ToolUse,
    Usage,
    overloaded,
    rate_limited,
)

KEY = "sk-ant-test-0123456789abcdefSECRET"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY) as server:
        yield server


def executor_for(fake: FakeAnthropic, tmp_path: Path, **settings: Any) -> ClaudeCodeExecutor:
    return create(
        {
            "apiKey": KEY,
            "baseUrl": fake.base_url,
            "maxRetries": 0,
            "configDir": str(tmp_path / "claude-config"),
            **settings,
        }
    )


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
) -> PhaseRequest:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    allowed = tools if tools is not None else ["file_read", "file_write", "log"]
    request = PhaseRequest(
        job_id="job-1",
        phase="work",
        visit=1,
        system_prompt="You are a careful engineer.",
        prompt=prompt,
        history=history or [],
        model=None,
        provider="claude-code",
        params={},
        workdir=workdir,
        tools=builtin_tools().allowed(allowed),
        call_tool=calls,
        signals=PhaseSignals(),
        interrupt=asyncio.Event(),
        allowed_tools=allowed,
    )
    calls.request = request
    return request


async def run(executor: ClaudeCodeExecutor, request: PhaseRequest) -> list[ExecutorEvent]:
    async with asyncio.timeout(WAIT_LIMIT):
        return [event async for event in executor.execute_phase(request)]


def tool_names(request: RecordedRequest) -> list[str]:
    return [str(tool["name"]) for tool in request.tools]


def tool_results(request: RecordedRequest) -> list[dict[str, Any]]:
    return request.blocks("tool_result")


def result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content)
    return str(content)


def said(request: RecordedRequest) -> str:
    """Everything the session sent the model in this request's messages."""
    return json.dumps(request.messages)


def catalogue_cost(u: Usage) -> float:
    return pricing.cost_usd(
        "anthropic",
        DEFAULT_MODEL,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_input_tokens=u.cache_read_input_tokens,
        cache_creation_input_tokens=u.cache_creation_input_tokens,
    )


# --- settings ---------------------------------------------------------------------------


def test_settings_are_validated_without_showing_values(home: CoroHome) -> None:
    with pytest.raises(PluginConfigError) as bad_url:
        create({"apiKey": KEY, "baseUrl": "ftp://example.com"})
    assert "baseUrl" in str(bad_url.value)
    assert KEY not in str(bad_url.value)
    with pytest.raises(PluginConfigError) as unknown:
        create({"apiKey": KEY, "model": "x"})
    assert "model" in str(unknown.value)
    assert KEY not in str(unknown.value)
    with pytest.raises(PluginConfigError, match="permissionMode"):
        create({"permissionMode": "plan"})

    keyless = create({})
    assert keyless.id == "claude-code"
    assert keyless.settings.api_key is None
    assert keyless.cli.config_dir is None  # the CLI's own config and login
    assert "ANTHROPIC_API_KEY" not in keyless.cli.env()
    assert keyless.settings.permission_mode == "dontAsk"

    keyed = create({"apiKey": f"  {KEY} ", "baseUrl": "http://127.0.0.1:9/"})
    assert keyed.cli.config_dir == home.root / "claude-code"
    env = keyed.cli.env()
    assert env["ANTHROPIC_API_KEY"] == KEY
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert env["CLAUDE_CONFIG_DIR"] == str(home.root / "claude-code")
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["DISABLE_TELEMETRY"] == "1"
    assert KEY not in repr(keyed) and KEY not in repr(keyed.cli)
    assert keyed.scrub(f"bad key {KEY} and sk-ant-api03-abcdefgh") == "bad key *** and sk-ant-***"
    assert any(b.entry == "coro.executors.claude_code:create" for b in BUILTIN_PLUGINS)


def test_without_the_sdk_create_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "claude_agent_sdk", None)  # import raises ImportError
    with pytest.raises(PluginConfigError) as missing:
        create({"apiKey": KEY})
    assert INSTALL_HINT in str(missing.value)
    assert "pip install 'coro-runner[claude-code]'" in INSTALL_HINT


def test_the_tool_policy_gives_coro_tools_and_never_a_built_in() -> None:
    tools = builtin_tools().allowed(["file_read", "shell", "log"])
    policy = ToolPolicy.for_phase("work", tools)
    assert sorted(policy.allowed_tools) == [
        "mcp__coro__file_read",
        "mcp__coro__log",
        "mcp__coro__shell",
    ]
    assert policy.check("mcp__coro__log", {}) is None
    assert policy.check("mcp__coro__shell", {"command": "ls"}) is None
    # Claude Code's own tools would run outside the sandbox: refused, pointing at Coro's.
    assert "use mcp__coro__shell" in str(policy.check("Bash", {"command": "ls"}))
    assert "use mcp__coro__file_read" in str(policy.check("Read", {"file_path": "a.txt"}))
    assert "not allowed" in str(policy.check("Write", {"file_path": "a.txt"}))
    assert "not allowed" in str(policy.check("WebFetch", {"url": "http://127.0.0.1:3000"}))
    assert "not allowed" in str(policy.check("mcp__coro__file_write", {"path": "a"}))


def test_built_in_names_in_an_allow_list_stand_for_coro_tools() -> None:
    allowed = ["log", "Read", "Bash(git:*)", "Grep", "WebFetch", "Task"]
    names = sorted(tool.name for tool in builtin_tools().allowed(allowed))
    assert names == ["file_grep", "file_read", "log", "shell"]
    everything = {tool.name for tool in builtin_tools().allowed(None)}
    assert {"Bash", "Read", "Write", "Edit", "Glob", "Grep"}.isdisjoint(everything)


def test_a_fresh_session_gets_the_transcript_so_far() -> None:
    history = [
        ConversationMessage(role="user", content="Plan the greeting."),
        ConversationMessage(
            role="assistant",
            content="Writing it.",
            tool_calls=[ToolCallRecord(id="c1", name="file_write", input={"path": "a.txt"})],
        ),
        ConversationMessage(
            role="tool", tool_results=[ToolResultRecord(tool_call_id="c1", output="wrote a.txt")]
        ),
    ]
    prompt = with_transcript(history, "Now review it.")
    assert prompt.startswith("<coro-transcript>")
    assert prompt.endswith("</coro-transcript>\n\nNow review it.")
    for part in ("Plan the greeting.", "Writing it.", "file_write", "wrote a.txt"):
        assert part in prompt
    assert with_transcript([], "Just this.") == "Just this."


# --- phases against the fake ------------------------------------------------------------


async def test_a_phase_calls_coro_tools_through_the_in_process_mcp_server(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    first = Usage(input_tokens=120, output_tokens=40, cache_creation_input_tokens=900)
    second = Usage(input_tokens=30, output_tokens=8, cache_read_input_tokens=900)
    fake.queue(
        Reply(
            [
                Text("Writing the file."),
                ToolUse("mcp__coro__file_write", {"path": "a.txt", "content": "x"}, id="toolu_w"),
            ],
            usage=first,
        ),
        Reply([Text("The file is written.")], usage=second),
    )
    calls = Calls({"file_write": ToolResult("File not writable: a.txt", is_error=True)})
    request = phase_request(tmp_path, calls)

    events = await run(executor_for(fake, tmp_path), request)

    assert calls.calls == [("file_write", {"path": "a.txt", "content": "x"}, None)]
    texts = [e.text for e in events if isinstance(e, TextEvent)]
    assert texts == ["Writing the file.", "The file is written."]
    sessions = [e for e in events if isinstance(e, SessionEvent)]
    assert len(sessions) == 1
    (usage,) = [e for e in events if isinstance(e, UsageEvent)]
    assert usage.input_tokens == 150
    assert usage.output_tokens == 48
    assert usage.cache_read_input_tokens == 900
    assert usage.cache_creation_input_tokens == 900
    assert usage.model == DEFAULT_MODEL
    assert usage.turns == 2
    assert usage.cost_usd == pytest.approx(catalogue_cost(first) + catalogue_cost(second))

    one, two = fake.message_requests
    for sent in (one, two):
        assert sent.api_key == KEY
        assert sent.body["model"] == DEFAULT_MODEL
        # The phase has an allow-list: only its tools.
        assert sorted(tool_names(sent)) == [
            "mcp__coro__file_read",
            "mcp__coro__file_write",
            "mcp__coro__log",
        ]
        assert any(b.get("text") == "You are a careful engineer." for b in sent.system)
    assert "Begin the phase." in said(one)
    (result,) = tool_results(two)
    assert result["tool_use_id"] == "toolu_w"
    assert result.get("is_error") is True
    assert result_text(result) == "File not writable: a.txt"


async def test_an_allow_list_naming_built_ins_gives_their_coro_tools(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(Reply([Text("Nothing to do.")]))
    # The phase's raw allow-list, and the tools the phase loop derives from it.
    request = phase_request(tmp_path, Calls(), tools=["file_write", "Read", "Bash(echo:*)"])

    await run(executor_for(fake, tmp_path), request)

    (sent,) = fake.message_requests
    assert sorted(tool_names(sent)) == [
        "mcp__coro__file_read",
        "mcp__coro__file_write",
        "mcp__coro__shell",
    ]


async def test_a_built_in_call_is_denied_and_coro_tools_do_the_work(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    secret = tmp_path / "config.json"
    secret.write_text('{"apiToken": "not-for-agents"}\n')
    calls = Calls({"file_read": ToolResult("the notes")})
    request = phase_request(tmp_path, calls, tools=["log", "Read", "Bash"])
    fake.queue(
        Reply([ToolUse("Read", {"file_path": str(secret)}, id="toolu_read")]),
        Reply([ToolUse("Bash", {"command": f"cat {secret}"}, id="toolu_bash")]),
        Reply([ToolUse("mcp__coro__file_read", {"path": "notes.txt"}, id="toolu_coro")]),
        Reply([Text("Read what I may.")]),
    )

    events = await run(executor_for(fake, tmp_path), request)

    assert TextEvent("Read what I may.") in events
    assert calls.calls == [("file_read", {"path": "notes.txt"}, None)]
    _, second, third, fourth = fake.message_requests
    for sent, tool_id in ((second, "toolu_read"), (third, "toolu_bash")):
        (denied,) = [r for r in tool_results(sent) if r["tool_use_id"] == tool_id]
        assert denied.get("is_error") is True
        assert "not-for-agents" not in said(sent)
    (answered,) = [r for r in tool_results(fourth) if r["tool_use_id"] == "toolu_coro"]
    assert "the notes" in result_text(answered)


async def test_a_developer_message_goes_into_the_live_session(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(
        Reply([ToolUse("mcp__coro__log", {"message": "working"})]),
        *[Reply([Text("Noted.")]) for _ in range(3)],
    )
    calls = Calls()
    request = phase_request(tmp_path, calls)

    async def message_during_the_call(name: str) -> None:
        request.developer_messages.put_nowait("Also add a footer.")

    calls.on_call = message_during_the_call

    events = await run(executor_for(fake, tmp_path), request)

    assert PromptEvent("Also add a footer.") in events
    assert "Also add a footer." in said(fake.message_requests[-1])
    assert fake.message_requests[-1] is not fake.message_requests[0]
    assert request.developer_messages.empty()


async def test_a_phase_signal_stops_the_session_after_the_tool_call(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(
        Reply([ToolUse("mcp__coro__goto_phase", {"phase": "review"})]),
        Reply([Text("I should never be heard.")], hold=True),
    )
    calls = Calls()
    request = phase_request(tmp_path, calls, tools=["goto_phase"])

    async def signal(name: str) -> None:
        request.signals.next_phase = "review"

    calls.on_call = signal

    events = await run(executor_for(fake, tmp_path), request)

    assert [name for name, _, _ in calls.calls] == ["goto_phase"]
    assert TextEvent("I should never be heard.") not in events


async def test_an_interrupt_during_a_model_call_returns(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(Reply([Text("Still thinking.")], hold=True))
    request = phase_request(tmp_path, Calls())
    executor = executor_for(fake, tmp_path)

    async def collect() -> list[ExecutorEvent]:
        return [event async for event in executor.execute_phase(request)]

    async with asyncio.timeout(WAIT_LIMIT):
        task = asyncio.create_task(collect())
        await fake.holding.wait()
        request.interrupt.set()
        events = await task

    assert not [e for e in events if isinstance(e, TextEvent)]


@pytest.mark.parametrize(
    ("reply", "kind"), [(rate_limited(retry_after=1), "rate-limit"), (overloaded(), "overloaded")]
)
async def test_rate_limits_and_overloads_park_the_job(
    fake: FakeAnthropic, tmp_path: Path, reply: Any, kind: str
) -> None:
    fake.queue(reply)
    with pytest.raises(RateLimited) as raised:
        await run(executor_for(fake, tmp_path), phase_request(tmp_path, Calls()))
    assert raised.value.provider == "claude-code"
    assert raised.value.kind == kind
    assert raised.value.retry_after > 0


async def test_a_rejected_key_escalates_without_showing_the_key(tmp_path: Path) -> None:
    async with FakeAnthropic(api_key="sk-ant-test-the-right-one-0000") as other:
        other.queue(Reply([Text("unreachable")]))
        with pytest.raises(ExecutorError) as raised:
            await run(executor_for(other, tmp_path), phase_request(tmp_path, Calls()))
    assert raised.value.escalate
    message = str(raised.value)
    assert "could not authenticate" in message
    assert "401" in message
    assert "plugins.installed.claude-code.config.apiKey" in message
    assert KEY not in message
    assert "SECRET" not in message


async def test_a_job_session_is_resumed_and_a_missing_one_replays_the_transcript(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    fake.queue(
        Reply([Text("First answer.")]),
        Reply([Text("Second answer.")]),
        Reply([Text("Third answer.")]),
    )
    executor = executor_for(fake, tmp_path)
    first = await run(executor, phase_request(tmp_path, Calls(), prompt="Remember: teal."))
    (session,) = [e for e in first if isinstance(e, SessionEvent)]

    resumed = phase_request(tmp_path, Calls(), prompt="Which colour?")
    resumed.session_id = session.session_id
    await run(executor, resumed)
    replayed = said(fake.message_requests[1])
    assert "Remember: teal." in replayed
    assert "First answer." in replayed
    assert "Which colour?" in replayed
    assert "<coro-transcript>" not in replayed

    history = [
        ConversationMessage(role="user", content="Remember: amber."),
        ConversationMessage(role="assistant", content="Amber it is."),
    ]
    gone = phase_request(tmp_path, Calls(), prompt="Which colour now?", history=history)
    gone.session_id = "0b6c1a52-0000-4000-8000-000000000000"
    await run(executor, gone)
    summarised = said(fake.message_requests[2])
    assert "<coro-transcript>" in summarised
    assert "Remember: amber." in summarised
    assert "Amber it is." in summarised
    assert "teal" not in summarised


async def test_a_missing_or_crashing_cli_is_a_clear_error(tmp_path: Path) -> None:
    missing = create({"apiKey": KEY, "cliPath": str(tmp_path / "no-such-claude")})
    with pytest.raises(ExecutorError) as absent:
        await run(missing, phase_request(tmp_path, Calls()))
    assert absent.value.escalate
    assert "does not exist" in str(absent.value)
    assert "cliPath" in str(absent.value)

    script = tmp_path / "crashing-claude"
    script.write_text("#!/bin/sh\necho 'claude: cannot start here' >&2\nexit 3\n")
    script.chmod(0o755)
    crashing = create({"apiKey": KEY, "cliPath": str(script)})
    with pytest.raises(ExecutorError) as crashed:
        await run(crashing, phase_request(tmp_path, Calls()))
    assert not crashed.value.escalate
    # Whether the exit code and stderr are known yet depends on who noticed first.
    assert str(crashed.value).startswith("Claude Code exited unexpectedly")
    assert KEY not in str(crashed.value)


async def test_models_and_healthcheck(fake: FakeAnthropic, tmp_path: Path) -> None:
    executor = executor_for(fake, tmp_path)
    models = await executor.models()
    assert [m.id for m in models] == [m.id for m in pricing.models_for("anthropic")]

    health = await executor.healthcheck()
    assert health.ok, health.message
    assert "Claude Code" in health.message
    assert "accepts the API key" in health.message
    assert any(r.path == "/v1/models" and r.api_key == KEY for r in fake.anthropic_requests)

    async with FakeAnthropic(api_key="sk-ant-test-the-right-one-0000") as other:
        refused = await executor_for(other, tmp_path).healthcheck()
    assert not refused.ok
    assert "401" in refused.message
    assert KEY not in refused.message

    absent = await create({"cliPath": str(tmp_path / "no-such-claude")}).healthcheck()
    assert not absent.ok
    assert "does not exist" in absent.message


# --- end to end through the runner ------------------------------------------------------


def claude_code_config(fake: FakeAnthropic) -> CoroConfig:
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "claude-code"},
            "plugins": {
                "installed": {
                    "claude-code": {
                        "config": {"apiKey": KEY, "baseUrl": fake.base_url, "maxRetries": 0}
                    }
                }
            },
        }
    )


async def test_a_job_driven_by_claude_code_calls_coro_tools(
    api_factory: ApiFactory, fake: FakeAnthropic
) -> None:
    usages = [
        Usage(input_tokens=400, output_tokens=60, cache_creation_input_tokens=2000),
        Usage(input_tokens=50, output_tokens=12, cache_read_input_tokens=2000),
    ]
    fake.queue(
        Reply(
            [
                Text("Writing the greeting."),
                ToolUse("mcp__coro__file_write", {"path": "src/hello.txt", "content": "hello\n"}),
                ToolUse("mcp__coro__log", {"message": "greeting written by claude code"}),
            ],
            usage=usages[0],
        ),
        Reply([Text("The greeting is in place.")], usage=usages[1]),
    )
    async with api_factory(claude_code_config(fake)) as api:
        workflow = write_workflow(api.home, "one-phase", [{"name": "work", "agent": None}])
        job_id = await api.create(workflow, description="say hello")
        result = await api.finish(job_id)
        job = await api.job(job_id)
        raw_job = (await api.client.get(f"/jobs/{job_id}")).text
        workdir = api.runner.env.workdir(job_id)
        config_dir = api.home.root / "claude-code"

    assert result.done == "complete", result.texts()
    texts = result.texts()
    assert "Writing the greeting." in texts
    assert "The greeting is in place." in texts
    assert any(t.startswith("→ file_write") for t in texts)
    assert "greeting written by claude code" in texts
    assert (workdir / "src" / "hello.txt").read_text() == "hello\n"

    requests = fake.message_requests
    assert len(requests) == 2
    for sent in requests:
        assert sent.api_key == KEY
        names = tool_names(sent)
        assert "mcp__coro__file_write" in names
        assert "mcp__coro__log" in names
        assert "mcp__coro__set_work_items" in names
        # No allow-list: every Coro tool, the sandboxed shell included, and no built-in.
        assert "mcp__coro__shell" in names
        assert [name for name in names if not name.startswith("mcp__")] == []
    results = tool_results(requests[1])
    assert len(results) == 2
    assert not any(r.get("is_error") for r in results)

    (usage,) = job["phaseUsage"]
    assert usage["provider"] == "claude-code"
    assert usage["inputTokens"] == sum(u.input_tokens for u in usages)
    assert usage["outputTokens"] == sum(u.output_tokens for u in usages)
    assert usage["cacheReadInputTokens"] == 2000
    assert usage["cacheCreationInputTokens"] == 2000
    assert usage["costUsd"] == pytest.approx(sum(catalogue_cost(u) for u in usages), abs=1e-6)
    assert job["sessionId"]
    # The CLI kept its config and sessions under CORO_HOME, not in the developer's ~/.claude.
    assert list((config_dir / "projects").glob(f"*/{job['sessionId']}.jsonl"))

    everything = "\n".join(result.lines) + raw_job
    assert KEY not in everything
    assert "SECRET" not in everything


async def test_a_phase_allow_list_hides_the_other_tools(
    api_factory: ApiFactory, fake: FakeAnthropic
) -> None:
    fake.queue(
        Reply([ToolUse("mcp__coro__file_write", {"path": "only.txt", "content": "1"})]),
        Reply([Text("Wrote the only file.")]),
    )
    async with api_factory(claude_code_config(fake)) as api:
        workflow = write_workflow(
            api.home, "narrow", [{"name": "work", "agent": None, "tools": ["file_write"]}]
        )
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        workdir = api.runner.env.workdir(job_id)

    assert result.done == "complete", result.texts()
    assert (workdir / "only.txt").read_text() == "1"
    for sent in fake.message_requests:
        assert tool_names(sent) == ["mcp__coro__file_write"]


async def test_a_wrong_key_escalates_the_job_with_a_readable_message(
    api_factory: ApiFactory,
) -> None:
    async with FakeAnthropic(api_key="sk-ant-test-the-right-one-0000") as other:
        other.queue(Reply([Text("unreachable")]))
        async with api_factory(claude_code_config(other)) as api:
            workflow = write_workflow(api.home, "one-phase", [{"name": "work", "agent": None}])
            job_id = await api.create(workflow)
            result = await api.finish(job_id)
            job = await api.job(job_id)
            raw_job = (await api.client.get(f"/jobs/{job_id}")).text
            tested = await api.client.post("/test/llm", json={})
            models = await api.client.get("/plugins/claude-code/models")

    assert tested.status_code == 200
    assert tested.json()["ok"] is False
    assert "401" in tested.json()["message"]
    assert "Claude Code" in tested.json()["message"]
    assert models.json()["models"][0]["id"] == pricing.models_for("anthropic")[0].id
    assert result.done == "escalated", result.texts()
    assert job["status"] == "escalated"
    message = job["escalationMessage"]
    assert "could not authenticate with the Anthropic API (401)" in message
    assert "plugins.installed.claude-code.config.apiKey" in message
    everything = "\n".join(result.lines) + raw_job + tested.text
    assert KEY not in everything
    assert "SECRET" not in everything
