"""The phase loop: run a job's phases until it parks, stops or completes (SPEC §4.3).

Every state change is a conditional mutation of the stored job: if a developer control
(cancel, pause) got there first, the loop's write is skipped and the loop stops. That
is what makes cancel and pause cooperative and race-free: controls write state first,
and the loop checks at every safe boundary (phase start, after each tool call, before
parking, before advancing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coro.config import StuckConfig
from coro.domain.models import (
    AWAITING_BUDGET,
    AWAITING_DEVELOPER_INPUT,
    AWAITING_PLAN_APPROVAL,
    AWAITING_PR_MERGE,
    AWAITING_RATE_LIMIT,
    CANCELLED,
    CHECKPOINT_LABEL_PREFIX,
    COMPLETE,
    ESCALATED,
    FAILED,
    PARKING,
    ConversationMessage,
    Job,
    PhaseUsage,
    RateLimitInfo,
    ToolCallRecord,
    ToolResultRecord,
    is_running,
    is_terminal,
    iso_now,
)
from coro.domain.workflows import Phase, Workflow, WorkflowError
from coro.engine import prompts
from coro.engine.condense import Condenser
from coro.engine.env import EngineEnv, NoExecutor, select_model
from coro.engine.stuck import (
    StuckDetector,
    Thresholds,
    Verdict,
    idle_reason,
    idle_reminder,
    is_idle_turn,
)
from coro.engine.usage import LiveUsage, add_usage
from coro.executors.base import (
    ExecutorError,
    NothingToDo,
    PhaseRequest,
    PromptEvent,
    RateLimited,
    SessionEvent,
    TextEvent,
    ThinkingEvent,
    UsageEvent,
)
from coro.intelligence.job import load_workflow, prepare_phase
from coro.intelligence.layers import WorkflowNotFound
from coro.state.backend import JobMutation
from coro.state.store import JobStore
from coro.tools.registry import PhaseSignals, ToolContext, ToolResult
from coro.tools.sandbox import SANDBOX_OFF_WARNING

logger = logging.getLogger(__name__)

LOG_CHUNK = 1600
APPROVAL_LABEL = re.compile(r"approv(e|ed|al)", re.IGNORECASE)
TOOL_LOG_PREVIEW = 2000
COMPLETE_NOTE = "All phases complete — job finished successfully"


@dataclass(frozen=True)
class _Transition:
    """Where a finished turn leads, written with the turn's usage: `apply` changes the
    job (False: it does not hold for the job as stored), `note` is logged with it, and
    `goes_on` says whether the loop runs another phase."""

    note: str
    apply: Callable[[Job], bool]
    goes_on: bool


@dataclass
class RunHandle:
    """The dispatcher's grip on one running job."""

    interrupt: asyncio.Event = field(default_factory=asyncio.Event)
    developer_messages: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    in_turn: bool = False


def park_status(label: str) -> str:
    if label.startswith("developer-input"):
        return AWAITING_DEVELOPER_INPUT
    if "plan" in label:
        return AWAITING_PLAN_APPROVAL
    return AWAITING_PR_MERGE


def _waits_for_events(phase: Phase) -> bool:
    """A phase without an agent whose status is a parking one: the runner parks there."""
    return phase.agent is None and phase.status in PARKING


class _Transcript:
    """Saves a turn's conversation as it grows: only the messages not saved yet, so a
    long phase appends rows instead of rewriting everything after each tool call."""

    def __init__(self, store: JobStore, job_id: str, *, saved: int) -> None:
        self.store = store
        self.job_id = job_id
        self.saved = saved
        self.dropped = False

    async def save(self, history: list[ConversationMessage], signals: PhaseSignals) -> None:
        """Persist what is new, so a phase interrupted by a restart continues the same
        conversation without repeating finished calls. After a new session was asked for
        (the tool already cleared the stored one) nothing more of this turn is kept."""
        if self.dropped:
            return
        if signals.new_session:
            self.dropped = True
            await self.store.backend.clear_transcript(self.job_id)
            return
        await self.store.backend.append_transcript(self.job_id, history[self.saved :])
        self.saved = len(history)

    async def replace(self, history: list[ConversationMessage]) -> None:
        """Store `history` instead of what was saved (a condensed conversation)."""
        if self.dropped:
            return
        await self.store.backend.replace_transcript(self.job_id, history)
        self.saved = len(history)


class PhaseLoop:
    def __init__(self, env: EngineEnv, job_id: str, handle: RunHandle) -> None:
        self.env = env
        self.store = env.store
        self.job_id = job_id
        self.handle = handle
        self.gate_blocks = 0
        #: turns in a row that ended without a tool call (stuck detection)
        self.idle_turns = 0
        #: the conversation as this run last saved it (None: read it from the store)
        self._history: list[ConversationMessage] | None = None
        #: the job as this loop last read or wrote it
        self.last: Job | None = None

    async def log(self, text: str) -> None:
        await self.store.log(self.job_id, text)

    async def _update(self, mutate: JobMutation, *, note: str | None = None) -> tuple[Job, bool]:
        """`store.update` of this job, remembering what it returned (`last`)."""
        job, written = await self.store.update(self.job_id, mutate, note=note)
        self.last = job
        return job, written

    async def _log_lines(self, lines: list[str]) -> None:
        """Append `lines` (if any) in one write, and empty the list."""
        if lines:
            await self.store.log_many(self.job_id, lines)
            lines.clear()

    async def run(self) -> Job | None:
        """Run the job; the job as the loop last read or wrote it (None if it never did)."""
        try:
            await self._run()
        except Exception as exc:  # the job must end in a visible state, never silently
            logger.exception("runner crashed on job %s", self.job_id)
            await self._fail(f"Runner crashed: {type(exc).__name__}: {exc}", clear_session=True)
        return self.last

    async def _run(self) -> None:
        job = self.last = await self.store.get(self.job_id)
        if not is_running(job.status):
            return
        try:
            workflow = await load_workflow(self.env.layers, job.workflow_path)
        except (WorkflowError, WorkflowNotFound, ValueError) as exc:
            await self._fail(f"Workflow could not be loaded: {exc}")
            return
        if workflow.phase(job.phase) is None:
            await self._fail(f"Phase {job.phase!r} is not declared by {workflow.path}")
            return
        await self._snapshot_phases(job, workflow)
        started = [f"Runner started — phase: {job.phase}"]
        if self.env.sandbox.off:
            started.append(SANDBOX_OFF_WARNING)
        await self._log_lines(started)
        # Each visit hands back the job as it last wrote it: a switch made during the
        # turn (a tool's write, before the turn's own) is in it.
        while (visited := await self._run_phase(workflow)) is not None:
            job = visited
            if job.workflow_path != workflow.path:
                # `switch_workflow` / `convert_to_campaign` moved the job to another lane.
                try:
                    switched = await load_workflow(self.env.layers, job.workflow_path)
                except (WorkflowError, WorkflowNotFound, ValueError) as exc:
                    await self._fail(f"Workflow could not be loaded: {exc}")
                    return
                await self.log(f"[workflow-reload] {workflow.path} → {switched.path}")
                workflow = switched
                await self._snapshot_phases(job, workflow)

    async def _conversation(self, job: Job) -> list[ConversationMessage]:
        """The conversation so far: kept from this run's last turn, empty on a job's very
        first phase visit (nothing can have been said yet), else read from the store."""
        if self._history is not None:
            return list(self._history)
        if sum(job.phase_visits.values()) == 1:
            return []
        return await self.store.backend.read_transcript(self.job_id)

    async def _snapshot_phases(
        self, job: Job, workflow: Workflow, pending: list[str] | None = None
    ) -> None:
        """Record the workflow's phases on the job if they changed (after the `pending`
        lines, logged first)."""
        summary = workflow.phase_summaries()
        if job.workflow_phases != summary:
            if pending:
                await self._log_lines(pending)

            def apply(j: Job) -> None:
                j.workflow_phases = summary

            await self._update(apply)

    async def _run_phase(self, workflow: Workflow) -> Job | None:
        """One visit of the current phase: the job as the visit last wrote it to go on
        with the next iteration, None to stop."""
        # Interrupts aimed at an earlier turn are spent; any from now on count (the
        # state written by the control is what the start below checks).
        self.handle.interrupt.clear()
        taken: list[str | None] = [None]
        declared: list[Phase | None] = [None]
        over_budget: str | None = None

        def start(j: Job) -> bool:
            nonlocal over_budget
            declared[0] = workflow.phase(j.phase)
            over_budget = j.budget.exceeded(j.token_usage)
            if not is_running(j.status) or declared[0] is None or over_budget:
                return False  # a budget park keeps the pending prompt for the resume
            taken[0] = j.pending_prompt
            if not _waits_for_events(declared[0]):  # that one is parked just below
                j.status = declared[0].status
            j.pending_prompt = None
            j.phase_visits[j.phase] = j.phase_visits.get(j.phase, 0) + 1
            return True

        job, started = await self._update(start)
        phase = declared[0]
        if phase is None:
            await self._fail(f"Phase {job.phase!r} is not declared by {workflow.path}")
            return None
        if over_budget and is_running(job.status):
            await self._park_on_budget(over_budget)
            return None
        if not started:
            await self._note_boundary_stop(job, "phase start")
            return None
        # Re-resolve the job's layers (base → tenant → repo) and materialise them.
        intel = await prepare_phase(self.env.layers, job, self.env.workdir(self.job_id), workflow)
        # The phase start's lines go out in one append (the last with the provider line
        # below), before anything else the start logs or writes.
        lines = [f"[intelligence] {note}" for note in intel.notes]
        workflow, phase = intel.workflow, intel.workflow.phase(job.phase) or phase
        await self._snapshot_phases(job, workflow, lines)
        if _waits_for_events(phase):
            await self._log_lines(lines)
            # A runner-only phase: PR tracking ends once every PR of the job is merged
            # or declined; others (a campaign's coordinating) are ended by their owner.
            tracking = phase.status == AWAITING_PR_MERGE
            if tracking and job.pr_mappings and not job.open_prs():
                await self.log(f"[{phase.name}] Every pull request is merged or declined")
                return await self._after_turn(job, workflow, phase, PhaseSignals())
            label = f"phase-{phase.name}-event"
            await self._park(phase, label, None, None, status=phase.status)
            return None

        try:
            choice = select_model(job, phase, self.env)
        except NoExecutor as exc:
            await self._log_lines(lines)
            await self._fail(str(exc))
            return None
        executor = self.env.executors.get(choice.provider)
        assert executor is not None  # select_model checked it
        agent_md = intel.agent_markdown
        if phase.agent and agent_md is None:
            lines.append(f"[warning] Agent file {phase.agent} not found; running without a role")
        model_note = f" model={choice.model}" if choice.model else ""
        lines.append(
            f"Phase {phase.name} (visit {job.phase_visits[phase.name]}): "
            f"provider={choice.provider}{model_note} [{choice.source}]"
        )
        await self._log_lines(lines)
        history = await self._conversation(job)
        transcript = _Transcript(self.store, self.job_id, saved=len(history))
        prompt = taken[0] or prompts.kickoff(job, phase.name, continuing=bool(history))
        history.append(ConversationMessage(role="user", content=prompt))

        signals = PhaseSignals()
        workdir = self.env.workdir(self.job_id)
        ctx = ToolContext(
            job_id=self.job_id,
            phase=phase.name,
            workdir=workdir,
            store=self.store,
            signals=signals,
            phase_names=workflow.phase_names,
            plugins=self.env.plugins,
            layers=self.env.layers,
            campaigns=self.env.campaigns,
            sandbox=self.env.sandbox,
            network=phase.network,
        )
        usage = PhaseUsage(
            phase=phase.name,
            work_item=job.current_work_item,
            visit=job.phase_visits[phase.name],
            model=choice.model,
            provider=choice.provider,
        )
        call_counter = [0]
        said = [False]  # the agent produced text this turn (stuck detection)
        live = LiveUsage(usage)
        stuck = self.env.config.jobs.stuck
        detector = StuckDetector(_thresholds(stuck)) if stuck.enabled else None

        async def call_tool(
            name: str, raw_input: dict[str, Any], call_id: str | None
        ) -> ToolResult:
            call_counter[0] += 1
            call_id = call_id or f"call-{usage.visit}-{call_counter[0]}"
            shown = json.dumps(raw_input, ensure_ascii=False, default=str)
            await self.log(f"→ {name} {_clip(shown, TOOL_LOG_PREVIEW)}")
            result = await self.env.tools.call(name, raw_input, ctx, phase.tools)
            if result.is_error:
                await self.log(f"[tool-error] {name}: {_clip(result.text(), 500)}")
            verdict = None
            if detector is not None:
                verdict = detector.observe(name, raw_input, result.text(), result.is_error)
            if verdict is not None:
                # The note rides on the result, the one thing every executor passes back
                # to its model (claude-code included).
                result = ToolResult(f"{result.text()}\n\n{verdict.note}", is_error=result.is_error)
            history.append(
                ConversationMessage(
                    role="assistant",
                    tool_calls=[ToolCallRecord(id=call_id, name=name, input=raw_input)],
                )
            )
            history.append(
                ConversationMessage(
                    role="tool",
                    tool_results=[
                        ToolResultRecord(
                            tool_call_id=call_id, output=result.text(), is_error=result.is_error
                        )
                    ],
                )
            )
            await transcript.save(history, signals)
            if verdict is not None:
                await self._on_loop(verdict, signals)
            return result

        condense = Condenser(
            executors=self.env.executors,
            aliases=self.env.config.llm.aliases,
            provider=choice.provider,
            model=choice.model,
            history=history,
            task_index=len(history) - 1,
            rewrite=transcript.replace,
            log=self.log,
            on_usage=lambda event: add_usage(usage, event),
            interrupt=self.handle.interrupt,
        )
        request = PhaseRequest(
            job_id=self.job_id,
            phase=phase.name,
            visit=usage.visit,
            system_prompt=prompts.system_prompt(job, workflow, phase, agent_md, intel.instructions),
            prompt=prompt,
            history=history[:-1],
            model=choice.model,
            provider=choice.provider,
            params=job.params,
            workdir=workdir,
            tools=self.env.tools.allowed(phase.tools),
            call_tool=call_tool,
            signals=signals,
            interrupt=self.handle.interrupt,
            developer_messages=self.handle.developer_messages,
            session_id=job.session_id,
            allowed_tools=phase.tools,
            reasoning_effort=choice.reasoning_effort,
            context_window=choice.context_window,
            tool_calling=choice.tool_calling,
            condense=condense,
        )
        session_id: str | None = job.session_id
        started_at = time.monotonic()
        self.handle.in_turn = True
        stream = executor.execute_phase(request)
        events = 0  # what the executor reported: none at all means it had nothing to do
        idle_reason: str | None = None
        try:
            async for event in stream:
                if isinstance(event, NothingToDo):
                    idle_reason = event.reason
                    continue
                events += 1
                if isinstance(event, TextEvent):
                    for chunk in _chunks(event.text):
                        await self.log(chunk)
                    history.append(ConversationMessage(role="assistant", content=event.text))
                    said[0] = said[0] or bool(event.text.strip())
                elif isinstance(event, ThinkingEvent):
                    await self.log(f"[thinking] {_clip(event.text, LOG_CHUNK)}")
                elif isinstance(event, UsageEvent):
                    add_usage(usage, event)
                    usage.duration_ms = int((time.monotonic() - started_at) * 1000)
                    await self._record_usage(live, event)
                    over_budget = job.budget.exceeded(job.token_usage, usage)
                    if over_budget:
                        break
                elif isinstance(event, SessionEvent):
                    session_id = event.session_id
                elif isinstance(event, PromptEvent):
                    history.append(ConversationMessage(role="user", content=event.text))
                if request.stop_requested:
                    break
        except RateLimited as exc:
            await self._end_turn(live, started_at, transcript, history, session_id, signals)
            await self._park_rate_limited(exc)
            return None
        except ExecutorError as exc:
            current, _ = await self._end_turn(
                live, started_at, transcript, history, session_id, signals
            )
            message = f"Executor {choice.provider} failed in phase {phase.name}: {exc}"
            if not is_running(current.status):
                await self._note_boundary_stop(current, "executor stop")
            elif exc.escalate:
                await self._fail(message, status=ESCALATED)
            else:
                await self._fail(message)
            return None
        finally:
            await stream.aclose()
            self.handle.in_turn = False

        def idle_in(j: Job) -> bool:
            return stuck.enabled and is_idle_turn(
                tool_calls=call_counter[0],
                model_turns=usage.num_turns,
                has_agent=phase.agent is not None,
                has_tools=bool(request.tools),
                said_something=said[0],
                work_pending=bool(j.unfinished_work_items()),
            )

        then = None if over_budget else self._transition(workflow, phase, signals, idle_in)
        if not events and not call_counter[0] and not request.stop_requested:
            reason = idle_reason or (
                f"the {choice.provider} executor reported no text, tool call or usage for it"
            )
            await self.log(f"[warning] Phase {phase.name} ran with nothing to do: {reason}")
        job, moved = await self._end_turn(
            live, started_at, transcript, history, session_id, signals, then=then
        )
        if moved and then is not None:
            self.idle_turns = 0
            self.gate_blocks = 0
            return job if then.goes_on else None
        if over_budget and is_running(job.status):
            await self._park_on_budget(over_budget)
            return None
        return await self._after_turn(job, workflow, phase, signals, idle=idle_in(job))

    async def _record_usage(self, live: LiveUsage, event: UsageEvent) -> None:
        """After each round trip the job shows the running visit's usage (and a log line
        says what it cost), instead of only when the phase ends."""
        u = live.usage
        note = (
            f"[usage] Phase {u.phase}: +{event.input_tokens:,} in / {event.output_tokens:,} "
            f"out — phase {u.input_tokens:,} in / {u.output_tokens:,} out, ${u.cost_usd:.4f}"
        )
        await self._update(live.mutation(final=False), note=note)
        live.saved()

    async def _on_loop(self, verdict: Verdict, signals: PhaseSignals) -> None:
        """A loop was found: the first time the note on the result corrects the agent;
        after that the job escalates and the signal stops the executor."""
        if not verdict.escalate:
            signals.discouraged_tools.update(verdict.loop.tools)
            await self.log(verdict.log_line)
        elif await self._escalate_stuck(verdict.reason):
            signals.escalated = True
            signals.escalation_reason = verdict.reason

    async def _escalate_stuck(self, reason: str) -> bool:
        def apply(j: Job) -> bool:
            if not is_running(j.status):
                return False
            j.status = ESCALATED
            j.escalation_message = reason
            return True

        _, escalated = await self._update(apply, note=f"[stuck] {reason}")
        return escalated

    async def _idle_turn(self, phase: Phase) -> Job | None:
        """The agent ended its turn without acting: run the phase again with a reminder,
        or escalate once that has happened `idleTurns` times in a row."""
        self.idle_turns += 1
        limit = self.env.config.jobs.stuck.idle_turns
        if self.idle_turns >= limit:
            await self._escalate_stuck(idle_reason(phase.name, self.idle_turns))
            return None
        reminder = idle_reminder(phase.name, self.idle_turns, limit)

        def rerun(j: Job) -> bool:
            if not is_running(j.status):
                return False
            j.pending_prompt = prompts.append_prompt(j.pending_prompt, reminder)
            return True

        note = (
            f"[stuck] Phase {phase.name}: the turn ended without a tool call — running it "
            f"again with a reminder ({self.idle_turns}/{limit})"
        )
        job, ok = await self._update(rerun, note=note)
        if not ok:
            await self._note_boundary_stop(job, "idle turn")
            return None
        return job

    async def _end_turn(
        self,
        live: LiveUsage,
        started_at: float,
        transcript: _Transcript,
        history: list[ConversationMessage],
        session_id: str | None,
        signals: PhaseSignals,
        *,
        then: _Transition | None = None,
    ) -> tuple[Job, bool]:
        """Record usage and transcript; live messages nobody read wait for the next turn.
        A turn that asked for a new session leaves no transcript or session behind.

        `then`, where the turn leads, is written in the same transaction when it holds
        for the job as stored (the second value says whether it was): a runner killed
        after the turn's usage was counted must not find the phase unfinished and run
        (and count) it again after a restart."""
        saving = asyncio.ensure_future(transcript.save(history, signals))
        self._history = [] if signals.new_session else list(history)
        if signals.new_session:
            session_id = None
        usage = live.usage
        usage.duration_ms = int((time.monotonic() - started_at) * 1000)
        leftover = []
        while not self.handle.developer_messages.empty():
            leftover.append(self.handle.developer_messages.get_nowait())

        record = live.mutation(final=True)

        def finish(j: Job) -> None:
            record(j)
            j.session_id = session_id
            for message in leftover:
                j.pending_prompt = prompts.append_prompt(j.pending_prompt, message)

        def finish_and_move(j: Job) -> bool:
            assert then is not None
            if not then.apply(j):
                return False  # written without it below; the loop decides as before
            finish(j)
            return True

        note = f"[usage] Phase {usage.phase}: {usage.input_tokens} in / {usage.output_tokens} out"
        if then is not None:
            stamp = iso_now()
            log = [f"{stamp} {note}", f"{stamp} {then.note}"]
            # The transcript write in flight at once: the state store commits them together.
            (job, moved), _ = await asyncio.gather(
                self.store.update(self.job_id, finish_and_move, log=log), saving
            )
            self.last = job
            if moved:
                return job, True
            job, _ = await self._update(finish, note=note)
        else:
            (job, _), _ = await asyncio.gather(self._update(finish, note=note), saving)
        return job, False

    def _transition(
        self,
        workflow: Workflow,
        phase: Phase,
        signals: PhaseSignals,
        idle_in: Callable[[Job], bool],
    ) -> _Transition | None:
        """What `_after_turn` does with a finished turn when that is a single write (park,
        advance, complete), as a mutation that declines (False) whenever the job as
        stored calls for anything else; None when it never is such a write."""
        if self.handle.interrupt.is_set() and not signals.any:
            return None

        def plain(j: Job) -> bool:
            # the cases `_after_turn` handles otherwise: stopped, interrupted, idle
            if not is_running(j.status) or idle_in(j):
                return False
            return not (self.handle.interrupt.is_set() and not signals.any)

        if signals.awaiting_event:
            label, pr_id = signals.awaiting_event, signals.awaiting_pr_id
            asks_approval = APPROVAL_LABEL.search(label) is not None
            status = park_status(label)

            def park(j: Job) -> bool:
                if not plain(j):
                    return False
                checkpoint_next = None
                if j.interactive and phase.interactive_checkpoint and asks_approval:
                    checkpoint_next = workflow.next_phase(phase.name)
                _set_parked(j, status, label, pr_id, checkpoint_next)
                return True

            return _Transition(f"Job parked — waiting for: {label}", park, goes_on=False)
        next_phase = signals.next_phase or workflow.next_phase(phase.name)
        if next_phase is None:

            def complete(j: Job) -> bool:
                if not plain(j) or j.unfinished_work_items() or j.open_prs():
                    return False
                j.status = COMPLETE
                j.clear_wait()
                return True

            return _Transition(COMPLETE_NOTE, complete, goes_on=False)

        def advance(j: Job) -> bool:
            if not plain(j) or (j.interactive and phase.interactive_checkpoint):
                return False
            j.phase = next_phase
            return True

        return _Transition(f"Phase advanced → {next_phase}", advance, goes_on=True)

    async def _after_turn(
        self,
        job: Job,
        workflow: Workflow,
        phase: Phase,
        signals: PhaseSignals,
        *,
        idle: bool = False,
    ) -> Job | None:
        if not is_running(job.status):
            if not signals.escalated:
                await self._note_boundary_stop(job, "end of turn")
            return None
        if self.handle.interrupt.is_set() and not signals.any:
            # A pause cut this turn short and a message already woke the job: the phase
            # did not finish, so run it again (with the message) instead of advancing.
            await self.log(f"[control] Turn interrupted — running phase {phase.name} again")
            return job
        if idle:
            return await self._idle_turn(phase)
        self.idle_turns = 0
        if signals.awaiting_event:
            # An agent asking for approval at a checkpoint phase gets the same "approve
            # and advance" resume as the runner's own checkpoint park.
            checkpoint_next = None
            asks_approval = APPROVAL_LABEL.search(signals.awaiting_event) is not None
            if job.interactive and phase.interactive_checkpoint and asks_approval:
                checkpoint_next = workflow.next_phase(phase.name)
            await self._park(phase, signals.awaiting_event, signals.awaiting_pr_id, checkpoint_next)
            return None
        next_phase = signals.next_phase or workflow.next_phase(phase.name)
        if next_phase is None:
            return await self._complete_or_gate(job, phase)
        self.gate_blocks = 0
        if job.interactive and phase.interactive_checkpoint:
            await self._park(phase, f"{CHECKPOINT_LABEL_PREFIX}{phase.name}", None, next_phase)
            return None

        def advance(j: Job) -> bool:
            if not is_running(j.status):
                return False
            j.phase = next_phase
            return True

        job, advanced = await self._update(advance, note=f"Phase advanced → {next_phase}")
        if not advanced:
            await self._note_boundary_stop(job, "phase advance")
            return None
        return job

    async def _complete_or_gate(self, job: Job, phase: Phase) -> Job | None:
        limit = self.env.config.jobs.completion_gate_max_retries
        blockers = [f"{w.name} ({w.status})" for w in job.unfinished_work_items()]
        blockers += [f"PR #{p.pr_id} in {p.repo_slug} (open)" for p in job.open_prs()]
        if blockers:
            self.gate_blocks += 1
            names = ", ".join(blockers)
            if self.gate_blocks > limit:
                await self._fail(
                    f"Job failed: completion gate blocked {self.gate_blocks} consecutive "
                    f"attempts. Still unfinished: {names}. Resolve them from the "
                    "dashboard or start a new job."
                )
                return None
            corrective = prompts.completion_gate(job, self.gate_blocks, limit)

            def rerun(j: Job) -> bool:
                if not is_running(j.status):
                    return False
                j.pending_prompt = prompts.append_prompt(j.pending_prompt, corrective)
                return True

            job, ok = await self._update(rerun)
            if not ok:
                await self._note_boundary_stop(job, "completion gate")
                return None
            await self.log(
                f"[completion-gate] Blocking job completion ({len(blockers)} unfinished: "
                f"{names}). Re-running phase '{phase.name}' "
                f"(attempt {self.gate_blocks}/{limit})."
            )
            return job

        def complete(j: Job) -> bool:
            if not is_running(j.status):
                return False
            j.status = COMPLETE
            j.clear_wait()
            return True

        job, done = await self._update(complete, note=COMPLETE_NOTE)
        if not done:
            await self._note_boundary_stop(job, "completion")
        return None

    async def _park(
        self,
        phase: Phase,
        label: str,
        pr_id: int | None,
        next_phase: str | None,
        *,
        status: str | None = None,
    ) -> None:
        status = status or park_status(label)

        def apply(j: Job) -> bool:
            if not is_running(j.status):
                return False
            _set_parked(j, status, label, pr_id, next_phase)
            return True

        job, parked = await self._update(apply, note=f"Job parked — waiting for: {label}")
        if not parked:
            await self._note_boundary_stop(job, "parking")

    async def _park_on_budget(self, reason: str) -> None:
        def apply(j: Job) -> bool:
            if not is_running(j.status):
                return False
            j.status = AWAITING_BUDGET
            j.clear_wait()
            j.awaiting_event = f"budget: {reason}"
            return True

        note = f"[budget] Job paused: {reason}. Raise the budget, then resume."
        job, parked = await self._update(apply, note=note)
        if not parked:
            await self._note_boundary_stop(job, "budget")

    async def _park_rate_limited(self, exc: RateLimited) -> None:
        resume_at = time.time() * 1000 + exc.retry_after * 1000

        def apply(j: Job) -> bool:
            if not is_running(j.status):
                return False
            attempt = (j.rate_limit_info.retry_attempt + 1) if j.rate_limit_info else 1
            j.status = AWAITING_RATE_LIMIT
            j.rate_limit_info = RateLimitInfo(
                provider=exc.provider,
                kind=exc.kind,
                resume_at=resume_at,
                retry_attempt=attempt,
                last_error_message=str(exc),
            )
            return True

        note = (
            f"[rate-limit] {exc.provider}: {exc}. Resuming automatically in {exc.retry_after:g}s."
        )
        job, parked = await self._update(apply, note=note)
        if not parked:
            await self._note_boundary_stop(job, "rate limit")

    async def _fail(
        self, message: str, *, clear_session: bool = False, status: str = FAILED
    ) -> None:
        def apply(j: Job) -> bool:
            if is_terminal(j.status):
                return False
            j.status = status
            j.escalation_message = message
            if clear_session:
                j.session_id = None
            return True

        await self._update(apply, note=f"[error] {message}")

    async def _note_boundary_stop(self, job: Job, boundary: str) -> None:
        if job.status == CANCELLED:
            await self.log(f"[control] Stopped at a safe boundary ({boundary}): job cancelled")
        elif job.paused:
            await self.log(f"[control] Stopped at a safe boundary ({boundary}): job paused")


def _set_parked(j: Job, status: str, label: str, pr_id: int | None, next_phase: str | None) -> None:
    j.status = status
    j.clear_wait()
    j.awaiting_event = label
    j.awaiting_pr_id = pr_id
    j.awaiting_next_phase = next_phase


def _thresholds(settings: StuckConfig) -> Thresholds:
    return Thresholds(
        repeat=settings.repeat_threshold,
        errors=settings.error_threshold,
        alternation=settings.alternation_calls,
        idle_turns=settings.idle_turns,
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more chars)"


def _chunks(text: str) -> list[str]:
    """Split long agent text into log entries of at most LOG_CHUNK characters."""
    if len(text) <= LOG_CHUNK:
        return [text]
    chunks, rest = [], text
    while len(rest) > LOG_CHUNK:
        cut = rest.rfind("\n", 256, LOG_CHUNK)
        if cut == -1:
            cut = rest.rfind(" ", 256, LOG_CHUNK)
        if cut == -1:
            cut = LOG_CHUNK
        chunks.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest:
        chunks.append(rest)
    return chunks
