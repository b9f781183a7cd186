"""Stuck detection: noticing an agent that goes round in circles (issue #10).

Pure logic over what the phase loop sees of every executor: the stream of tool calls
(name, input, result text, error flag) and, at the end of a turn, whether the agent
called any tool at all. The phase loop owns the consequences: the first loop found in
a turn is answered with a corrective note appended to the tool result the agent gets;
a loop found again in the same turn escalates the job with `Verdict.reason`.

The loops, each counted over consecutive calls of one turn:
- repeat: the same call (tool name + canonical JSON input) with the same result;
- error: the same error text, whatever the tool;
- alternation: two distinct (call, result) pairs taking turns, A-B-A-B-….
A turn that ended without any tool call although the agent had to act (see
`is_idle_turn`) is *idle*: the phase runs again with `idle_reminder()`, and the next
idle turn in a row escalates.

Nothing here runs by itself (no task, no timer): it is called by the phase loop of a
running job, and keeps nothing for parked ones.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

#: How much of an error's text a message quotes.
QUOTE_CHARS = 200

LoopKind = Literal["repeat", "error", "alternation"]


@dataclass(frozen=True)
class Thresholds:
    """When a pattern counts as a loop (`jobs.stuck` in config.json)."""

    repeat: int = 3
    errors: int = 3
    alternation: int = 6
    #: idle turns in a row that escalate (the ones before get a reminder and a re-run)
    idle_turns: int = 2


@dataclass(frozen=True)
class _Call:
    name: str
    key: str  # the canonical input
    result: str
    is_error: bool

    def same_as(self, other: _Call) -> bool:
        return (self.name, self.key, self.result, self.is_error) == (
            other.name,
            other.key,
            other.result,
            other.is_error,
        )


def canonical_input(tool_input: Any) -> str:
    """The input as comparable text: key order and spacing do not make a call different."""
    return json.dumps(tool_input, sort_keys=True, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Loop:
    kind: LoopKind
    tools: tuple[str, ...]  # the tools involved, in order of first appearance
    count: int  # consecutive calls that make up the loop
    error: str | None = None  # the repeated error text (kind "error")

    def describe(self, subject: str = "you") -> str:
        """What the agent did, as a sentence fragment ("you called file_write 3 times …")."""
        if self.kind == "repeat":
            return (
                f"{subject} called {self.tools[0]} {self.count} times in a row with the same "
                "input and got the same result"
            )
        if self.kind == "error":
            names = ", ".join(self.tools)
            return (
                f"{subject} got the same error {self.count} times in a row (from {names}): "
                f"{_quote(self.error or '')}"
            )
        if len(self.tools) == 1:
            return (
                f"{subject} called {self.tools[0]} with two inputs in turn for {self.count} "
                "calls, with the same results each time"
            )
        first, second = self.tools
        return (
            f"{subject} alternated between {first} and {second} for {self.count} calls, "
            "with the same inputs and results each time"
        )


@dataclass(frozen=True)
class Verdict:
    """A loop found after a tool call, and whether it is time to escalate."""

    loop: Loop
    escalate: bool

    @property
    def note(self) -> str:
        """What is appended to the tool result the agent receives."""
        if self.escalate:
            return (
                f"[coro] Loop continued: {self.loop.describe()}, after being told to stop. "
                "The job is escalated to the developer; do not call any more tools."
            )
        return (
            f"[coro] Loop detected: {self.loop.describe()}. Do not repeat it; do something "
            "different, or call escalate if you are stuck."
        )

    @property
    def reason(self) -> str:
        """The job's escalation message: names the loop, the tool and the count."""
        return (
            f"Stuck in a loop ({self.loop.kind}): {self.loop.describe('the agent')}, and went "
            "on after a corrective message. Reply with guidance or resume to let it try again."
        )

    @property
    def log_line(self) -> str:
        if self.escalate:
            return f"[stuck] {self.reason}"
        return f"[stuck] Loop detected: {self.loop.describe('the agent')} — told it to stop"


class StuckDetector:
    """Watches one turn's tool calls. `observe` after each call; a non-None verdict says
    what to do (the first one corrects, any later one escalates)."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()
        longest = max(self.thresholds.repeat, self.thresholds.errors, self.thresholds.alternation)
        self._recent: deque[_Call] = deque(maxlen=longest)
        self.corrected = False
        self.calls = 0

    def observe(
        self, name: str, tool_input: Any, result_text: str, is_error: bool
    ) -> Verdict | None:
        self.calls += 1
        self._recent.append(_Call(name, canonical_input(tool_input), result_text, is_error))
        loop = self._repeat() or self._error() or self._alternation()
        if loop is None:
            return None
        verdict = Verdict(loop, escalate=self.corrected)
        self.corrected = True
        return verdict

    def _trailing(self, matches: Any) -> list[_Call]:
        """The newest calls, newest last, for as long as `matches(call)` holds."""
        run: list[_Call] = []
        for call in reversed(self._recent):
            if not matches(call):
                break
            run.insert(0, call)
        return run

    def _repeat(self) -> Loop | None:
        last = self._recent[-1]
        run = self._trailing(last.same_as)
        if len(run) < self.thresholds.repeat:
            return None
        return Loop("repeat", (last.name,), len(run))

    def _error(self) -> Loop | None:
        last = self._recent[-1]
        if not last.is_error:
            return None
        run = self._trailing(lambda call: call.is_error and call.result == last.result)
        if len(run) < self.thresholds.errors:
            return None
        return Loop("error", _names(run), len(run), error=last.result)

    def _alternation(self) -> Loop | None:
        size = self.thresholds.alternation
        if len(self._recent) < size:
            return None
        window = list(self._recent)[-size:]
        first, second = window[0], window[1]
        if first.same_as(second):
            return None  # one call repeated: the repeat rule's business
        for index, call in enumerate(window):
            if not call.same_as(first if index % 2 == 0 else second):
                return None
        # Sorted: the loop reads the same whichever of the two came first in the window.
        return Loop("alternation", tuple(sorted({first.name, second.name})), size)


def is_idle_turn(
    *,
    tool_calls: int,
    model_turns: int,
    has_agent: bool,
    has_tools: bool,
    said_something: bool,
    work_pending: bool,
) -> bool:
    """A turn in which the model answered once and called no tool, in a phase whose agent
    has tools to act with — and had to act: it said nothing at all, or work items are
    still unfinished. (Answering in words alone is what a spec, a review or an evaluation
    may rightly do once the work is done.)

    Exactly one model turn: every LLM executor reports one per round trip, and a round
    trip is only followed by another after tool calls — so more than one means the agent
    acted with tools Coro does not see (Claude Code's own `Write`, `Bash` …). The
    `script` executor reports model turns only for its `usage` steps, so a scripted phase
    without them (or a phase missing from `params.script`) is never idle.
    """
    if not (has_agent and has_tools and tool_calls == 0 and model_turns == 1):
        return False
    return work_pending or not said_something


def idle_reminder(phase: str, count: int, limit: int) -> str:
    """The prompt of the re-run after an idle turn."""
    return (
        f"[coro] Your last turn in phase **{phase}** ended without calling any tool "
        f"(idle turn {count}; at {limit} in a row the job is escalated). Words alone change "
        "nothing: act through your tools to do the phase's work and record what you did "
        "(work items, artefacts, log) — or call escalate if you cannot go on."
    )


def idle_reason(phase: str, count: int) -> str:
    return (
        f"Stuck (idle): the agent ended {count} turns in a row in phase {phase} without "
        "calling any tool, after a reminder. Reply with guidance or resume to let it try again."
    )


def _names(calls: list[_Call]) -> tuple[str, ...]:
    seen: list[str] = []
    for call in calls:
        if call.name not in seen:
            seen.append(call.name)
    return tuple(seen)


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= QUOTE_CHARS else flat[:QUOTE_CHARS] + "…"
