"""The text the runner itself puts in front of an agent.

The intelligence (what to do) lives in workflow and agent markdown; these are only the
runner's framing: the job context, phase kickoff, and how developer messages, events
and the completion gate are presented.
"""

from __future__ import annotations

import json
from typing import Any

from coro.domain.models import CHECKPOINT_LABEL_PREFIX, Job
from coro.domain.workflows import Phase, Workflow
from coro.engine.events import InboundEvent

SECTION_SEPARATOR = "\n\n---\n\n"


def system_prompt(
    job: Job,
    workflow: Workflow,
    phase: Phase,
    agent_markdown: str | None,
    instructions: str | None = None,
) -> str:
    sections = [f"# Current Workflow\n*Source: {workflow.path}*\n\n{workflow.body}"]
    if agent_markdown:
        sections.append(f"# Your Role This Phase\n*Source: {phase.agent}*\n\n{agent_markdown}")
    if instructions and instructions.strip():
        sections.append(
            "# Project Instructions\n*Source: .claude/CLAUDE.md of the intelligence layers "
            f"(in _intelligence/)*\n\n{instructions.strip()}"
        )
    sections.append(_job_section(job))
    insights = [i for i in job.insights if i.status != "rejected"]
    if insights:
        lines = ["## Insights from Upstream Agents", ""]
        for n, insight in enumerate(insights, 1):
            lines.append(f"### {n}. [{insight.phase}] {insight.category}")
            lines.append(f"**Summary:** {insight.shown_summary}")
            lines.append(f"**Detail:** {insight.shown_detail}")
            if insight.shown_suggestion:
                lines.append(f"**Suggestion:** {insight.shown_suggestion}")
            lines.append("")
        sections.append("\n".join(lines).rstrip())
    return SECTION_SEPARATOR.join(sections)


def _job_section(job: Job) -> str:
    context: dict[str, Any] = {
        "jobId": job.id,
        "type": job.type,
        "workflowPath": job.workflow_path,
        "interactive": job.interactive,
        "params": {k: v for k, v in job.params.items() if k != "script"},
        "triggerSource": job.trigger_source,
        "phase": job.phase,
        "currentWorkItem": job.current_work_item,
        "workItems": [w.to_json() for w in job.work_items],
        "prMappings": [p.to_json() for p in job.pr_mappings],
        "artifacts": [
            {"id": a.id, "phase": a.phase, "kind": a.kind, "title": a.title} for a in job.artifacts
        ],
    }
    body = json.dumps(context, indent=2, ensure_ascii=False)
    return (
        "# Current Job\n\nThis is the job you are currently executing. All your actions must "
        f"stay within the scope of this job.\n\n```json\n{body}\n```"
    )


def kickoff(job: Job, phase: str, *, continuing: bool) -> str:
    """The first prompt of a phase; `continuing` when the conversation goes on."""
    if continuing:
        return (
            f"You are now in phase **{phase}**. Your role for this phase is in the system "
            'prompt under "Your Role This Phase". Continue the job: do what the phase '
            "instructs, then let your turn end (the runner advances automatically)."
        )
    start = (
        f"Begin phase **{phase}** of this {job.type} job. Your role and the full workflow are "
        "in the system prompt. Follow your phase instructions and use the `log` tool to "
        "report progress."
    )
    request = job.params.get("description")
    if isinstance(request, str) and request.strip():
        # The request is also in the system prompt; small models act on the user turn.
        start += f"\n\nThe request:\n{quote(request.strip())}"
    return start


def quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines() or [""])


def live_message(message: str) -> str:
    return (
        "[DEVELOPER MESSAGE]\nThe developer watching this job has sent you a message:\n\n"
        f"{quote(message)}\n\nAdjust your approach if needed and continue the current phase. "
        "Record reusable conventions with `add_insight`."
    )


def developer_response(job: Job, message: str) -> str:
    """Framing for a message that wakes a parked, escalated or failed job."""
    lines: list[str]
    if job.status in ("escalated", "failed") and job.escalation_message:
        lines = [
            "[DEVELOPER RESPONSE]",
            f"You previously stopped during phase: {job.phase}.",
            "The reason was:",
            quote(job.escalation_message),
        ]
    else:
        lines = ["[DEVELOPER RESPONSE]", f"You paused during phase: {job.phase}."]
        label = job.awaiting_event or ""
        if label.startswith(CHECKPOINT_LABEL_PREFIX):
            lines.append(
                f"The developer reviewed the results of phase {job.phase} and asks for changes "
                "before approving."
            )
        elif label.startswith("developer-input:"):
            question = label.removeprefix("developer-input:").strip()
            lines.append(f'You were waiting for input on: "{question}".')
    recent = [a for a in job.artifacts if a.phase == job.phase][-10:]
    if recent:
        lines.append("Artefacts of this phase so far:")
        lines.extend(f"- {a.kind}: {a.title}" for a in recent)
    lines += [
        "",
        "Developer said:",
        quote(message),
        "",
        "Act on this, then finish the phase normally (use `goto_phase` to revisit an earlier "
        "phase, `await_event` with a `developer-input: ...` label if you need another answer, "
        "`escalate` if you are still blocked).",
    ]
    return "\n".join(lines)


def append_prompt(existing: str | None, addition: str) -> str:
    return f"{existing}{SECTION_SEPARATOR}{addition}" if existing else addition


def completion_gate(job: Job, attempt: int, max_retries: int) -> str:
    unfinished = job.unfinished_work_items()
    open_prs = job.open_prs()
    lines = ["[completion-gate] Job cannot complete yet."]
    if unfinished:
        lines.append(f"{len(unfinished)} work item(s) are not finished:")
        lines += [f"- {w.name} — status: {w.status}, loopCount: {w.loop_count}" for w in unfinished]
    if open_prs:
        lines.append(f"{len(open_prs)} pull request(s) are still open:")
        lines += [
            f"- PR #{p.pr_id} in {p.repo_slug} ({p.work_item}) {p.url or ''}" for p in open_prs
        ]
    lines += [
        "",
        "What to do next:",
        "1. Confirm the real state of each item (get_work_items, scm_get_pr_status).",
        "2. Drive each item to `complete` with update_work_item once it is actually done; use "
        "`goto_phase` to return to the phase that owns the work instead of ending your turn.",
        "3. An open PR must be merged (scm_merge_pr once approved) or waited on "
        "(`await_event` with its `prId`) until it is merged or declined.",
        "4. If something cannot be finished, `escalate` (or mark the item `escalated`): "
        "escalated items satisfy the gate.",
        f"(attempt {attempt}/{max_retries})",
    ]
    return "\n".join(lines)


def batched_events(events: list[InboundEvent]) -> str:
    count = len(events)
    header = (
        "[EVENT: 1 received since you parked]"
        if count == 1
        else f"[EVENTS: {count} received since you parked]"
    )
    lines = [header, ""]
    for n, event in enumerate(events, 1):
        lines.append(f"Event {n} of {count} — {event.event_key} at {event.received_at}")
        lines.append(event.describe())
        lines.append("")
    lines.append(
        "Decide which of these to act on first. Comments may need replies or a return to "
        "coding (`goto_phase`); approvals may allow a merge."
    )
    return "\n".join(lines)
