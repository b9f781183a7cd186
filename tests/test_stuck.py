"""Stuck detection: an agent going round in circles is told so once, then the job escalates
with the loop named; a repeated artefact updates the first one instead of piling up.

The detector itself is pure (unit tests first); then real runners driven by the `script`
executor, the `openai` executor against its loopback fake, and the `claude-code`
executor (the real CLI against the fake Anthropic API) — every executor's tool calls go
through the same path, so all of them are caught the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.engine.stuck import StuckDetector, Thresholds, is_idle_turn
from tests.conftest import Api, ApiFactory, make_config, provider_config, write_workflow
from tests.fakes.anthropic_server import FakeAnthropic, RecordedRequest, ToolUse
from tests.fakes.anthropic_server import Reply as AnthropicReply
from tests.fakes.openai_server import FakeOpenAI, Reply, ToolCall

OPENAI_KEY = "sk-test-Stuck0000detector1111"
ANTHROPIC_KEY = "sk-ant-test-stuck-0123456789abcdef"
ONE_PHASE = [{"name": "work", "agent": None}]
#: A phase whose agent must act (the base layer's coder) with a few tools.
AGENT_PHASE = [
    {"name": "work", "agent": "agents/coder.md", "tools": ["file_*", "log", "update_work_item"]}
]
WRITE = {"path": "notes.md", "content": "# Notes\n"}


def tool(name: str, **tool_input: Any) -> dict[str, Any]:
    return {"tool": name, "input": tool_input}


def tool_outputs(job: dict[str, Any]) -> list[str]:
    """What each tool call of the job returned to the agent, in order."""
    return [
        result["output"]
        for message in job["conversationHistory"]
        for result in message["toolResults"]
    ]


def stuck_lines(texts: list[str]) -> list[str]:
    return [t for t in texts if t.startswith("[stuck]")]


# --- the detector -----------------------------------------------------------------------


def test_the_same_call_with_the_same_result_corrects_then_escalates() -> None:
    detector = StuckDetector()
    assert detector.observe("file_write", WRITE, "wrote 8 bytes", False) is None
    # Key order and spacing do not make a call different.
    assert (
        detector.observe("file_write", dict(reversed(WRITE.items())), "wrote 8 bytes", False)
        is None
    )
    first = detector.observe("file_write", WRITE, "wrote 8 bytes", False)
    assert first is not None and not first.escalate
    assert first.loop.kind == "repeat" and first.loop.count == 3
    assert first.note.startswith("[coro] Loop detected: you called file_write 3 times")
    assert "call escalate if you are stuck" in first.note

    again = detector.observe("file_write", WRITE, "wrote 8 bytes", False)
    assert again is not None and again.escalate
    assert "file_write" in again.reason and "4 times" in again.reason


def test_progress_is_not_a_loop() -> None:
    detector = StuckDetector()
    # The same call whose result changes (a test run that gets further each time).
    for n in range(5):
        assert detector.observe("shell", {"command": "pytest"}, f"{n} failed", False) is None
    # Different calls with the same result.
    for n in range(5):
        assert detector.observe("file_read", {"path": f"{n}.txt"}, "same", False) is None


def test_the_same_error_from_different_calls_is_a_loop() -> None:
    detector = StuckDetector(Thresholds(errors=3))
    error = "Invalid input for file_write: content: Field required"
    assert detector.observe("file_write", {"path": "a"}, error, True) is None
    assert detector.observe("file_write", {"path": "b"}, error, True) is None
    verdict = detector.observe("file_write", {"path": "c"}, error, True)
    assert verdict is not None and verdict.loop.kind == "error"
    assert "the same error 3 times" in verdict.note and "content: Field required" in verdict.note


def test_two_calls_taking_turns_are_a_loop_after_six() -> None:
    detector = StuckDetector()
    verdicts = [
        detector.observe(name, {"path": "x"}, "ok", False)
        for name in ["file_write", "post_artifact"] * 3
    ]
    assert verdicts[:5] == [None] * 5
    last = verdicts[5]
    assert last is not None and last.loop.kind == "alternation" and not last.escalate
    assert "alternated between file_write and post_artifact for 6 calls" in last.note
    escalation = detector.observe("file_write", {"path": "x"}, "ok", False)
    assert escalation is not None and escalation.escalate


def test_a_second_loop_in_the_same_turn_escalates_even_after_a_break() -> None:
    detector = StuckDetector()
    for _ in range(3):
        verdict = detector.observe("log", {"message": "hi"}, "null", False)
    assert verdict is not None and not verdict.escalate
    assert detector.observe("file_list", {}, "[]", False) is None
    assert detector.observe("log", {"message": "hi"}, "null", False) is None
    assert detector.observe("log", {"message": "hi"}, "null", False) is None
    verdict = detector.observe("log", {"message": "hi"}, "null", False)
    assert verdict is not None and verdict.escalate


def test_an_idle_turn_is_one_model_answer_without_a_tool_call_when_the_agent_had_to_act() -> None:
    def idle(**changes: Any) -> bool:
        turn: dict[str, Any] = {
            "tool_calls": 0,
            "model_turns": 1,
            "has_agent": True,
            "has_tools": True,
            "said_something": True,
            "work_pending": True,
        }
        return is_idle_turn(**(turn | changes))

    assert idle()
    assert idle(said_something=False, work_pending=False)  # an empty answer
    # Words alone once the work is done: a spec, a review, an evaluation.
    assert not idle(work_pending=False)
    assert not idle(tool_calls=1, model_turns=2)
    assert not idle(model_turns=0)  # no model was asked (a script without usage steps)
    assert not idle(has_agent=False)
    assert not idle(has_tools=False)
    # Several model turns without a Coro tool call: the agent used tools Coro does not
    # see (Claude Code's own Write, Bash).
    assert not idle(model_turns=3)


# --- through the runner: the script executor ------------------------------------------------


async def test_alternating_write_and_post_leaves_one_artefact_and_escalates(api: Api) -> None:
    """The case that started it: a small model writing one file and posting it, again and
    again with identical arguments."""
    workflow = write_workflow(api.home, "loops", ONE_PHASE)
    post = tool("post_artifact", kind="notes", title="Notes", data={"path": "notes.md"})
    script = {"work": [tool("file_write", **WRITE), post] * 19}
    job_id = await api.create(workflow, script)
    result = await api.finish(job_id)
    job = await api.job(job_id)

    assert result.done == "escalated"
    assert job["status"] == "escalated"
    message = job["escalationMessage"]
    assert "alternation" in message
    assert "file_write and post_artifact for 6 calls" in message
    (artifact,) = job["artifacts"]
    assert artifact["title"] == "Notes" and artifact["updatedAt"]
    outputs = tool_outputs(job)
    # W P(new) W P(updated) W P(updated) W P(updated): the last six take turns.
    assert len(outputs) == 9
    assert "[coro] Loop detected" in outputs[7]
    assert "[coro] Loop continued" in outputs[8]
    assert f"updated artefact {artifact['id']} (same kind, title and path)" in outputs[3]
    lines = stuck_lines(result.texts())
    assert len(lines) == 2
    assert "Loop detected" in lines[0] and "file_write and post_artifact" in lines[0]
    assert lines[1] == f"[stuck] {message}"


async def test_an_artefact_is_updated_only_by_a_post_of_the_same_kind_title_and_path(
    api: Api,
) -> None:
    workflow = write_workflow(api.home, "posts", ONE_PHASE)

    def post(title: str, **data: Any) -> dict[str, Any]:
        return tool("post_artifact", kind="report", title=title, data=data)

    script = {
        "work": [
            post("Plan", path="plan.md"),
            post("Plan", path="plan.md", summary="revised"),
            post("Plan", path="other.md"),
            post("Note", text="first"),
            post("Note", text="second"),
            post("Note", text="second"),
        ]
    }
    job_id = await api.create(workflow, script)
    result = await api.finish(job_id)
    job = await api.job(job_id)

    assert result.done == "complete"
    shown = [(a["title"], a["data"], a["updatedAt"] is not None) for a in job["artifacts"]]
    assert shown == [
        ("Plan", {"path": "plan.md", "summary": "revised"}, True),
        ("Plan", {"path": "other.md"}, False),
        ("Note", {"text": "first"}, False),
        ("Note", {"text": "second"}, True),
    ]
    texts = result.texts()
    assert "[artifact] updated work/report: Plan" in texts
    assert sum(t.startswith("[artifact] updated") for t in texts) == 2


async def test_the_same_error_again_and_again_escalates(api: Api) -> None:
    workflow = write_workflow(api.home, "errors", ONE_PHASE)
    script = {"work": [tool("file_write", path=name) for name in "abcdefgh"]}
    job_id = await api.create(workflow, script)
    result = await api.finish(job_id)
    job = await api.job(job_id)

    assert result.done == "escalated"
    assert "Stuck in a loop (error)" in job["escalationMessage"]
    assert "4 times" in job["escalationMessage"]
    assert "content: Field required" in job["escalationMessage"]
    outputs = tool_outputs(job)
    assert len(outputs) == 4  # the 4th error escalated; nothing ran after it
    assert "[coro] Loop detected" in outputs[2]
    assert not (api.runner.env.workdir(job_id) / "e").exists()


async def test_detection_can_be_switched_off_and_thresholds_set(api_factory: ApiFactory) -> None:
    script = {"work": [tool("log", message="again")] * 5}
    async with api_factory(make_config(stuck={"enabled": False})) as api:
        workflow = write_workflow(api.home, "off", ONE_PHASE)
        off = await api.finish(await api.create(workflow, script))
    assert off.done == "complete"
    assert stuck_lines(off.texts()) == []

    async with api_factory(make_config(stuck={"repeatThreshold": 5})) as api:
        workflow = write_workflow(api.home, "five", ONE_PHASE)
        five = await api.finish(await api.create(workflow, script))
    assert five.done == "complete"
    assert len(stuck_lines(five.texts())) == 1  # the 5th call was corrected, then it ended

    with pytest.raises(ValueError, match="unknownKey"):
        make_config(stuck={"unknownKey": 1})


async def test_scripted_agent_phases_without_a_model_turn_are_never_idle(api: Api) -> None:
    workflow = write_workflow(
        api.home, "quiet", [*AGENT_PHASE, {"name": "after", "agent": "agents/coder.md"}]
    )
    # "work" only talks; "after" is missing from the script and does nothing (SPEC).
    job_id = await api.create(workflow, {"work": [{"text": "Nothing to do here."}]})
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert stuck_lines(result.texts()) == []


# --- through the runner: the openai executor ----------------------------------------------


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=OPENAI_KEY) as server:
        yield server


def openai_config(fake: FakeOpenAI) -> CoroConfig:
    return provider_config(
        "openai", apiKey=OPENAI_KEY, baseUrl=fake.base_url, defaultModel="gpt-4o"
    )


async def test_a_model_repeating_one_tool_call_forever_is_corrected_then_escalated(
    api_factory: ApiFactory, openai_fake: FakeOpenAI
) -> None:
    openai_fake.fallback = Reply(tool_calls=[ToolCall("file_write", WRITE)])
    async with api_factory(openai_config(openai_fake)) as api:
        workflow = write_workflow(api.home, "forever", ONE_PHASE)
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        job = await api.job(job_id)

    assert result.done == "escalated", result.texts()
    assert job["status"] == "escalated"
    message = job["escalationMessage"]
    assert message.startswith("Stuck in a loop (repeat): the agent called file_write 4 times")
    requests = openai_fake.chat_requests
    # Calls 1-3, the correction on the 3rd result, the 4th call escalates: no 5th request.
    assert len(requests) == 4
    answers = [m["content"] for m in requests[3].messages if m["role"] == "tool"]
    assert len(answers) == 3
    assert "[coro] Loop detected" not in answers[1]
    assert "[coro] Loop detected: you called file_write 3 times in a row" in answers[2]
    lines = stuck_lines(result.texts())
    assert "Loop detected: the agent called file_write 3 times" in lines[0]
    assert lines[-1] == f"[stuck] {message}"
    assert all(OPENAI_KEY not in line for line in result.lines)


async def test_talking_while_work_is_pending_is_run_again_with_a_reminder(
    api_factory: ApiFactory, openai_fake: FakeOpenAI
) -> None:
    item = {"name": "notes", "status": "complete"}
    openai_fake.queue(
        # plan (no agent): register the work
        Reply(tool_calls=[ToolCall("set_work_items", {"workItems": ["notes"]})]),
        Reply(text="Planned."),
        # work: only talks, then acts after the reminder
        Reply(text="I would write the notes now."),
        Reply(tool_calls=[ToolCall("file_write", WRITE), ToolCall("update_work_item", item)]),
        Reply(text="Written."),
    )
    async with api_factory(openai_config(openai_fake)) as api:
        workflow = write_workflow(api.home, "idle-once", [{"name": "plan"}, *AGENT_PHASE])
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        workdir = api.runner.env.workdir(job_id)

    assert result.done == "complete", "\n".join(result.texts())
    assert (workdir / "notes.md").read_text() == WRITE["content"]
    (line,) = stuck_lines(result.texts())
    assert line == (
        "[stuck] Phase work: the turn ended without a tool call — running it again with a "
        "reminder (1/2)"
    )
    reminded = openai_fake.chat_requests[3].messages[-1]
    assert reminded["role"] == "user"
    assert (
        "Your last turn in phase **work** ended without calling any tool" in (reminded["content"])
    )


async def test_empty_answers_in_a_row_escalate(
    api_factory: ApiFactory, openai_fake: FakeOpenAI
) -> None:
    openai_fake.fallback = Reply(text="")
    async with api_factory(openai_config(openai_fake)) as api:
        workflow = write_workflow(api.home, "idle", AGENT_PHASE)
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        job = await api.job(job_id)

    assert result.done == "escalated", result.texts()
    assert len(openai_fake.chat_requests) == 2
    assert job["escalationMessage"].startswith(
        "Stuck (idle): the agent ended 2 turns in a row in phase work without calling any tool"
    )
    assert stuck_lines(result.texts())[-1] == f"[stuck] {job['escalationMessage']}"


# --- through the runner: the claude-code executor --------------------------------------------


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=ANTHROPIC_KEY) as server:
        yield server


def claude_code_config(fake: FakeAnthropic) -> CoroConfig:
    return provider_config("claude-code", apiKey=ANTHROPIC_KEY, baseUrl=fake.base_url, maxRetries=0)


def tool_result_texts(request: RecordedRequest) -> list[str]:
    texts = []
    for block in request.blocks("tool_result"):
        content = block.get("content")
        if isinstance(content, list):
            texts.append("".join(str(part.get("text", "")) for part in content))
        else:
            texts.append(str(content))
    return texts


async def test_the_same_loop_is_caught_through_claude_codes_tool_path(
    api_factory: ApiFactory, anthropic_fake: FakeAnthropic
) -> None:
    def same_call(_: RecordedRequest) -> AnthropicReply:
        return AnthropicReply([ToolUse("mcp__coro__file_write", dict(WRITE))])

    anthropic_fake.fallback = same_call
    async with api_factory(claude_code_config(anthropic_fake)) as api:
        workflow = write_workflow(api.home, "forever-cc", ONE_PHASE)
        job_id = await api.create(workflow)
        result = await api.finish(job_id)
        job = await api.job(job_id)

    assert result.done == "escalated", result.texts()
    assert job["escalationMessage"].startswith(
        "Stuck in a loop (repeat): the agent called file_write 4 times"
    )
    seen = [text for r in anthropic_fake.message_requests for text in tool_result_texts(r)]
    assert any("[coro] Loop detected: you called file_write 3 times" in t for t in seen)
    assert sum(t.startswith("→ file_write") for t in result.texts()) == 4
    everything = "\n".join(result.lines) + json.dumps(job)
    assert ANTHROPIC_KEY not in everything
