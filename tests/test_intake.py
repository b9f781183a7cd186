"""Plan mode (`POST /intake/stream`): streaming, budgets, no-llm, disconnects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.executors import ExecutorRegistry
from coro.executors.base import ChatDelta, ChatEvent, ChatUsage
from coro.executors.script import ScriptExecutor
from tests.conftest import ApiFactory
from tests.sse import frames


class ChattyExecutor(ScriptExecutor):
    """A stand-in LLM executor (the provider fakes are exercised in the executor tests)."""

    id = "chatty"

    def __init__(self, tokens_per_turn: int = 100) -> None:
        self.calls: list[dict[str, Any]] = []
        self.tokens_per_turn = tokens_per_turn
        self.release: asyncio.Event | None = None

    async def chat(
        self, messages: list[dict[str, str]], *, system: str, model: str | None, max_tokens: int
    ) -> AsyncGenerator[ChatEvent, None]:
        self.calls.append(
            {"messages": messages, "model": model, "maxTokens": max_tokens, "system": system}
        )
        for piece in ["Which ", "repository ", "is it?"]:
            yield ChatDelta(piece)
        if self.release is not None:
            await self.release.wait()
        yield ChatUsage(input_tokens=self.tokens_per_turn - 10, output_tokens=10)


def chatty_setup(fake: ChattyExecutor) -> dict[str, Any]:
    registry = ExecutorRegistry()
    registry.register(fake)
    config = CoroConfig.model_validate({"llm": {"defaultProvider": "chatty"}})
    return {"config": config, "executors": registry}


def body(session: str, text: str = "Add rate limiting", **extra: Any) -> dict[str, Any]:
    return {"sessionId": session, "messages": [{"role": "user", "content": text}], **extra}


async def turn(client: Any, payload: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    async with client.stream("POST", "/intake/stream", json=payload) as response:
        assert response.status_code == 200
        async for frame in frames(response):
            if frame.event == "message":
                events.append(json.loads(frame.data))
    return events


async def test_tokens_stream_in_order_then_done_with_usage(api_factory: ApiFactory) -> None:
    fake = ChattyExecutor()
    async with api_factory(**chatty_setup(fake)) as api:
        context = {
            "recentRepos": ["org/api"],
            "availableWorkflows": [
                {"id": "job", "name": "Job", "workflowPath": "workflows/job/workflow.md"}
            ],
        }
        events = await turn(api.client, body("s1", context=context, model="big-model"))
    assert [e["text"] for e in events if e["type"] == "token"] == [
        "Which ",
        "repository ",
        "is it?",
    ]
    done = events[-1]
    assert done == {
        "type": "done",
        "usage": {"inputTokens": 90, "outputTokens": 10, "totalTokens": 100},
        "turns": 1,
        "sessionTokens": 100,
        "limits": {"maxTurns": 8, "maxSessionTokens": 30_000},
    }
    (call,) = fake.calls
    assert call["maxTokens"] == 4096
    assert call["model"] == "big-model"
    assert "<brief>" in call["system"]
    assert "org/api" in call["system"]


async def test_ninth_turn_is_refused_without_a_provider_call(api_factory: ApiFactory) -> None:
    fake = ChattyExecutor(tokens_per_turn=10)
    async with api_factory(**chatty_setup(fake)) as api:
        for _ in range(8):
            assert (await turn(api.client, body("s2")))[-1]["type"] == "done"
        refused = await turn(api.client, body("s2"))
        other_session = await turn(api.client, body("s3"))
    assert refused == [{"type": "error", "reason": "budget", "message": refused[0]["message"]}]
    assert "8 turns" in refused[0]["message"]
    assert len(fake.calls) == 9  # eight for s2, one for s3
    assert other_session[-1]["type"] == "done"


async def test_session_token_budget_uses_reported_usage(api_factory: ApiFactory) -> None:
    fake = ChattyExecutor(tokens_per_turn=20_000)
    async with api_factory(**chatty_setup(fake)) as api:
        first = await turn(api.client, body("s4"))
        second = await turn(api.client, body("s4"))
        third = await turn(api.client, body("s4"))
    assert first[-1]["sessionTokens"] == 20_000
    assert second[-1]["sessionTokens"] == 40_000
    assert third[0]["reason"] == "budget"
    assert len(fake.calls) == 2


async def test_no_llm_configured_is_503(api_factory: ApiFactory) -> None:
    async with api_factory() as api:  # only the script executor, which cannot chat
        response = await api.client.post("/intake/stream", json=body("s5"))
    assert response.status_code == 503
    assert response.json()["reason"] == "no-llm"


@pytest.mark.parametrize(
    "payload",
    [
        {"messages": [{"role": "user", "content": "x"}]},
        {"sessionId": "s", "messages": []},
        {"sessionId": "s", "messages": [{"role": "system", "content": "x"}]},
        {"sessionId": "s", "messages": [{"role": "assistant", "content": "x"}]},
    ],
)
async def test_bad_plan_mode_bodies_are_400(
    api_factory: ApiFactory, payload: dict[str, Any]
) -> None:
    async with api_factory(**chatty_setup(ChattyExecutor())) as api:
        response = await api.client.post("/intake/stream", json=payload)
    assert response.status_code == 400


async def test_client_disconnect_does_not_abort_the_turn(api_factory: ApiFactory) -> None:
    fake = ChattyExecutor()
    fake.release = asyncio.Event()
    async with api_factory(**chatty_setup(fake)) as api:
        async with api.client.stream("POST", "/intake/stream", json=body("s6")) as response:
            async for frame in frames(response):
                if frame.event == "message":
                    break  # the first token arrived: hang up mid-turn
        fake.release.set()
        await asyncio.gather(*api.runner.intake._tasks)
        budget = api.runner.intake.sessions["s6"]
    assert budget.turns == 1
    assert budget.tokens == 100
