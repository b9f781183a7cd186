"""Plan mode: a short conversation that shapes a task into a job brief (SPEC §2.3).

Each turn is one plain `chat()` call to an LLM executor (no tools, no job). Budgets are
kept per session id: turns, output tokens per turn (sent as the provider's max tokens)
and total tokens as the provider reported them. A turn runs to completion even if the
client goes away, and it still counts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

from coro.config import IntakeConfig
from coro.engine.env import EngineEnv
from coro.executors.base import ChatCapable, ChatDelta, ChatUsage, ExecutorError, RateLimited

SYSTEM_PROMPT = """\
You are Coro's plan-mode assistant. A developer is describing a change they want an
autonomous coding job to make. Your job is to turn their words into a precise brief.

- Ask at most three short clarifying questions, only about what the job cannot work out
  from the repository itself: the goal, observable behaviour, acceptance criteria, what
  must not change.
- Mirror the developer's language. Keep each reply under 120 words.
- You cannot read code, run commands or promise results; do not pretend to.
- Pick the workflow: the standard job for most work; a fast lane only for tiny one-shot
  changes; a deep lane only for real architectural work.
- When the task is clear (or the developer asks for it), end your reply with one block:
  <brief>{"repo": "...", "serviceName": "...", "description": "...",
  "reviewers": ["..."], "workflowPath": "workflows/job/workflow.md",
  "interactive": true}</brief>
  The description is the full task statement the job will work from: goal, context,
  acceptance criteria, constraints. Use valid JSON.
"""


class NoLLM(LookupError):
    """No executor that can chat is configured (HTTP 503, reason `no-llm`)."""


@dataclass
class SessionBudget:
    turns: int = 0
    tokens: int = 0


@dataclass
class IntakeTurn:
    session_id: str
    messages: list[dict[str, str]]
    model: str | None = None
    provider: str | None = None
    context: dict[str, Any] = field(default_factory=dict)


class IntakeService:
    def __init__(self, env: EngineEnv, limits: IntakeConfig) -> None:
        self.env = env
        self.limits = limits
        self.sessions: dict[str, SessionBudget] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def resolve(self, provider: str | None, model: str | None) -> tuple[ChatCapable, str | None]:
        """Explicit provider/model, else the `tier:planning` alias, else the default."""
        llm = self.env.config.llm
        if provider is None and model is None and "tier:planning" in llm.aliases:
            alias = llm.aliases["tier:planning"]
            provider, model = alias.provider, alias.model
        provider = provider or llm.default_provider
        executor = self.env.executors.get(provider) if provider else None
        if executor is None or not callable(getattr(executor, "chat", None)):
            raise NoLLM(
                "Plan mode needs an LLM provider (anthropic, openai or compatible); "
                "configure one in Settings or use the form."
            )
        return cast(ChatCapable, executor), model

    def refusal(self, session_id: str) -> str | None:
        """Why the session may not take another turn, before any provider call."""
        budget = self.sessions.get(session_id, SessionBudget())
        if budget.turns >= self.limits.max_turns:
            return (
                f"This plan-mode session has used its {self.limits.max_turns} turns. "
                "Switch to the form to start the run."
            )
        if budget.tokens >= self.limits.max_session_tokens:
            return (
                f"This plan-mode session has used its {self.limits.max_session_tokens} tokens. "
                "Switch to the form to start the run."
            )
        return None

    async def turn(self, request: IntakeTurn) -> AsyncIterator[dict[str, Any]]:
        """Stream one turn as `{type: token|done|error, ...}` events."""
        refusal = self.refusal(request.session_id)
        if refusal:
            yield {"type": "error", "reason": "budget", "message": refusal}
            return
        executor, model = self.resolve(request.provider, request.model)
        budget = self.sessions.setdefault(request.session_id, SessionBudget())
        budget.turns += 1  # counted before the call: a failed call still used a turn
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        task = asyncio.create_task(
            self._run(executor, model, request, budget, queue), name="intake-turn"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        while (event := await queue.get()) is not None:
            yield event

    async def _run(
        self,
        executor: ChatCapable,
        model: str | None,
        request: IntakeTurn,
        budget: SessionBudget,
        queue: asyncio.Queue[dict[str, Any] | None],
    ) -> None:
        """The provider call, detached from the HTTP request so a disconnect cannot cut it."""
        usage = ChatUsage(0, 0)
        try:
            async for event in executor.chat(
                request.messages,
                system=_system_prompt(request.context),
                model=model,
                max_tokens=self.limits.max_output_tokens_per_turn,
            ):
                if isinstance(event, ChatDelta):
                    await queue.put({"type": "token", "text": event.text})
                else:
                    usage = event
            total = usage.input_tokens + usage.output_tokens
            budget.tokens += total
            await queue.put(
                {
                    "type": "done",
                    "usage": {
                        "inputTokens": usage.input_tokens,
                        "outputTokens": usage.output_tokens,
                        "totalTokens": total,
                    },
                    "turns": budget.turns,
                    "sessionTokens": budget.tokens,
                    "limits": {
                        "maxTurns": self.limits.max_turns,
                        "maxSessionTokens": self.limits.max_session_tokens,
                    },
                }
            )
        except RateLimited as exc:
            await queue.put({"type": "error", "reason": "rate-limit", "message": str(exc)})
        except ExecutorError as exc:
            await queue.put({"type": "error", "reason": "provider", "message": str(exc)})
        finally:
            await queue.put(None)


def _system_prompt(context: dict[str, Any]) -> str:
    if not context:
        return SYSTEM_PROMPT
    return f"{SYSTEM_PROMPT}\nContext from the dashboard:\n{json.dumps(context, indent=2)}\n"
