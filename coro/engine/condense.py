"""Context condensation: a conversation nearing the model's context window is shortened.

The older part of a phase's provider-neutral history is summarised (by the phase's
model, or the `tier:mini` alias when one is configured) into one user message marked
`condensed`; this phase's task prompt and the latest turns stay verbatim (a tool call
and its result are never parted), the system prompt is not part of the history. The
stored transcript is replaced by the condensed one in one write, and the executor
rebuilds its request from the history this returns. A summariser that fails never
fails the phase: the older part is then dropped with a note of what it held.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from coro.config import ModelAlias
from coro.domain.models import ConversationMessage
from coro.executors import ExecutorRegistry
from coro.executors.base import (
    CHARS_PER_TOKEN,
    ChatCapable,
    ChatDelta,
    ChatUsage,
    UsageEvent,
    estimate_tokens,
)
from coro.executors.pricing import cost_usd

logger = logging.getLogger(__name__)

SUMMARY_HEADER = "[Summary of the earlier conversation]"
SUMMARISER_ALIAS = "tier:mini"
#: The latest turns kept verbatim (a turn: a message, or a tool call with its result) …
KEEP_TURNS = 4
#: … fewer once the provider refused the conversation as too long …
KEEP_TURNS_ON_OVERFLOW = 2
#: … as long as they take no more than this share of the context window.
KEEP_SHARE = 0.3
#: The transcript given to the summariser takes at most this share of the window.
SUMMARISER_INPUT_SHARE = 0.5
SUMMARISER_INPUT_CHARS = 400_000  # when the window is unknown
ENTRY_CHARS = 4_000  # one message or tool result in the summariser's input
SUMMARY_MAX_TOKENS = 2_048

INSTRUCTION = """\
You condense the transcript of an AI software engineer's work so that it can continue \
with a shorter context. Write a concise summary in Markdown with these sections:

## Task
What was asked: goals, constraints, the developer's instructions.
## Decisions
What was decided, and why.
## Files touched
Every file read, created or changed, and what changed in it.
## Progress
The steps done and their outcome: tool results that matter (errors, test runs, ids of \
work items, artefacts or pull requests).
## Open problems
What is unfinished, failing or uncertain, and the next steps.

Keep names, paths, identifiers, commands and error messages exact. Do not invent \
anything. Output only the summary."""


@dataclass(frozen=True)
class Plan:
    """How a history splits: the parts to summarise, the task prompt, the kept tail."""

    before: list[ConversationMessage]  # summarised: earlier phases, before the task prompt
    task: ConversationMessage | None
    between: list[ConversationMessage]  # summarised: this phase, after the task prompt
    tail: list[ConversationMessage]  # kept verbatim

    @property
    def older(self) -> list[ConversationMessage]:
        return [*self.before, *self.between]

    def condensed(self, summary: ConversationMessage) -> list[ConversationMessage]:
        """The new history. The summary stands where most of what it replaces stood:
        after the task prompt once this phase's own turns are summarised too."""
        if self.task is None:
            return [summary, *self.tail]
        if self.between:
            return [self.task, summary, *self.tail]
        return [summary, self.task, *self.tail]


def plan(
    history: Sequence[ConversationMessage],
    task_index: int | None,
    context_window: int | None,
    *,
    keep_turns: int = KEEP_TURNS,
) -> Plan | None:
    """Split `history` for a condensation; None when there is nothing worth condensing."""
    has_task = task_index is not None and 0 <= task_index < len(history)
    if has_task and history[cast(int, task_index)].role != "user":
        has_task = False
    if has_task:
        index = cast(int, task_index)
        before, task, after = list(history[:index]), history[index], list(history[index + 1 :])
    else:
        before, task, after = [], None, list(history)
    # Turns start at every message but a tool result, which belongs to its call.
    starts = [i for i, message in enumerate(after) if message.role != "tool"]
    budget = context_window * KEEP_SHARE if context_window else None
    cut = len(after)
    kept_turns = 0
    for start in reversed(starts):
        if kept_turns >= keep_turns:
            break
        size = sum(_size(m) for m in after[start:])
        if kept_turns and budget is not None and size > budget:
            break
        cut, kept_turns = start, kept_turns + 1
    between, tail = after[:cut], after[cut:]
    older = [*before, *between]
    if not older or (len(older) == 1 and older[0].condensed is not None):
        return None  # nothing, or only the last summary: condensing again gains nothing
    return Plan(before, task, between, tail)


def _size(message: ConversationMessage) -> int:
    return estimate_tokens(message.model_dump(mode="json", exclude_defaults=True))


# --- the summariser's input -------------------------------------------------------------


def render(messages: Sequence[ConversationMessage], limit_chars: int) -> str:
    """The messages as a plain transcript for the summariser, long entries clipped in the
    middle, the whole kept to `limit_chars` (its start and its end)."""
    names: dict[str, str] = {}
    parts: list[str] = []
    for message in messages:
        if message.condensed is not None:
            parts.append(f"### Earlier summary\n{message.content}")
            continue
        if message.content.strip():
            who = "Developer / runner" if message.role == "user" else "Engineer"
            parts.append(f"### {who}\n{_clip(message.content, ENTRY_CHARS)}")
        for call in message.tool_calls:
            names[call.id] = call.name
            arguments = json.dumps(call.input, ensure_ascii=False, default=str)
            parts.append(f"### Tool call: {call.name}\n{_clip(arguments, ENTRY_CHARS)}")
        for result in message.tool_results:
            label = "Tool error" if result.is_error else "Tool result"
            name = names.get(result.tool_call_id, "tool")
            parts.append(f"### {label}: {name}\n{_clip(result.output, ENTRY_CHARS)}")
    return _clip("\n\n".join(parts), limit_chars)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = max(limit // 2 - 40, 0)
    return f"{text[:keep]}\n[… {len(text) - 2 * keep} characters left out …]\n{text[-keep:]}"


def dropped_note(messages: Sequence[ConversationMessage], why: str) -> str:
    """What stands in for a summary that could not be written: what the dropped part
    held, mechanically (tool calls and the paths they named)."""
    calls: Counter[str] = Counter()
    paths: list[str] = []
    for message in messages:
        for call in message.tool_calls:
            calls[call.name] += 1
            path = call.input.get("path")
            if isinstance(path, str) and path not in paths:
                paths.append(path)
    lines = [
        f"{len(messages)} earlier messages were dropped to fit the context window "
        f"(they could not be summarised: {why}). The working directory, the work items "
        "and the artefacts still hold the work done so far: re-read what you need."
    ]
    if calls:
        lines.append("Tools called: " + ", ".join(f"{n} ×{c}" for n, c in calls.most_common()))
    if paths:
        lines.append("Paths named: " + ", ".join(paths[:40]))
    return "\n".join(lines)


# --- the condenser ----------------------------------------------------------------------


@dataclass
class Condenser:
    """The phase loop's `PhaseRequest.condense`: works on the loop's own `history` list
    (changed in place, so the loop saves what the executor now sends)."""

    executors: ExecutorRegistry
    aliases: Mapping[str, ModelAlias]
    provider: str  # the phase's executor and model, the summariser when no tier:mini
    model: str | None
    history: list[ConversationMessage]
    task_index: int | None  # this phase's task prompt in `history`
    rewrite: Callable[[list[ConversationMessage]], Awaitable[None]]  # the stored transcript
    log: Callable[[str], Awaitable[None]]
    on_usage: Callable[[UsageEvent], None]  # the summariser's usage, for the phase
    interrupt: asyncio.Event
    _said_nothing: bool = field(default=False, init=False)

    async def __call__(
        self, *, reason: str, context_window: int | None, overflow: bool = False
    ) -> list[ConversationMessage] | None:
        try:
            return await self._condense(reason, context_window, overflow)
        except Exception as exc:  # a condensation must never be what fails the phase
            logger.exception("condensing the conversation failed")
            await self.log(f"[condense] Could not condense the conversation: {exc}")
            return None

    async def _condense(
        self, reason: str, context_window: int | None, overflow: bool
    ) -> list[ConversationMessage] | None:
        keep = KEEP_TURNS_ON_OVERFLOW if overflow else KEEP_TURNS
        split = plan(self.history, self.task_index, context_window, keep_turns=keep)
        if split is None:
            if not self._said_nothing:  # once: the executor may ask every round trip
                self._said_nothing = True
                await self.log(f"[condense] {reason}, but there is nothing older to condense")
            return None
        older = split.older
        try:
            summary, how = await self._summarise(older, context_window)
        except _Interrupted:
            return None  # the phase is stopping: leave the conversation as it is
        if summary is None:
            content = dropped_note(older, how)
            how = f"dropped: {how}"
        else:
            content = summary
        message = ConversationMessage(
            role="user", content=f"{SUMMARY_HEADER}\n\n{content}", condensed=len(older)
        )
        condensed = split.condensed(message)
        self.history[:] = condensed
        self.task_index = condensed.index(split.task) if split.task is not None else None
        await self.rewrite(self.history)
        await self.log(
            f"[condense] {reason}: {len(older)} earlier messages condensed into one summary "
            f"({how}); kept the task prompt and the latest {len(split.tail)} messages"
        )
        return list(self.history)

    def _summarisers(self) -> list[tuple[str, str | None]]:
        """Who may write the summary, cheapest first: tier:mini, then the phase's model."""
        candidates: list[tuple[str, str | None]] = []
        mini = self.aliases.get(SUMMARISER_ALIAS)
        if mini is not None:
            candidates.append((mini.provider, mini.model))
        if (self.provider, self.model) not in candidates:
            candidates.append((self.provider, self.model))
        return candidates

    async def _summarise(
        self, older: Sequence[ConversationMessage], context_window: int | None
    ) -> tuple[str | None, str]:
        """(summary, who wrote it) or (None, why there is none)."""
        limit = SUMMARISER_INPUT_CHARS
        max_tokens = SUMMARY_MAX_TOKENS
        if context_window:
            limit = int(context_window * SUMMARISER_INPUT_SHARE * CHARS_PER_TOKEN)
            max_tokens = min(SUMMARY_MAX_TOKENS, max(256, context_window // 8))
        transcript = render(older, limit)
        why = "no executor that can chat"
        for provider, model in self._summarisers():
            executor = self.executors.get(provider)
            if executor is None or not callable(getattr(executor, "chat", None)):
                continue
            who = f"{provider}/{model}" if model else provider
            try:
                text = await self._ask(
                    cast(ChatCapable, executor), provider, model, transcript, max_tokens
                )
            except _Interrupted:
                raise
            except Exception as exc:  # provider errors are already scrubbed of secrets
                why = f"{who} failed: {exc}"
                await self.log(f"[condense] The summariser {why}")
                continue
            if text.strip():
                return text.strip(), f"summarised by {who}"
            why = f"{who} returned an empty summary"
        return None, why

    async def _ask(
        self,
        executor: ChatCapable,
        provider: str,
        model: str | None,
        transcript: str,
        max_tokens: int,
    ) -> str:
        """The summary text; `_Interrupted` when the phase is interrupted meanwhile."""

        async def collect() -> str:
            pieces: list[str] = []
            messages = [{"role": "user", "content": f"Transcript to condense:\n\n{transcript}"}]
            stream = executor.chat(messages, system=INSTRUCTION, model=model, max_tokens=max_tokens)
            async for event in stream:
                if isinstance(event, ChatDelta):
                    pieces.append(event.text)
                elif isinstance(event, ChatUsage):
                    self.on_usage(_usage(provider, model, event))
            return "".join(pieces)

        work = asyncio.ensure_future(collect())
        stop = asyncio.ensure_future(self.interrupt.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
            await asyncio.gather(work, stop, return_exceptions=True)
        if work.cancelled():
            raise _Interrupted
        return work.result()


class _Interrupted(Exception):
    """The phase was interrupted (cancel, pause) while the summary was being written."""


def _usage(provider: str, model: str | None, usage: ChatUsage) -> UsageEvent:
    priced: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
    }
    # No model and no turn: the summary is not one of the agent's round trips, and the
    # phase keeps showing the agent's model.
    return UsageEvent(**priced, cost_usd=cost_usd(provider, model, **priced))
