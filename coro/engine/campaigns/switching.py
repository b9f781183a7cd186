"""Lane switches (runner notes §2.4): a job moves to another workflow in place, keeping
its state (`switch_workflow`), or becomes a campaign (`convert_to_campaign`)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from coro.domain.models import (
    PARKING,
    QUEUED,
    Job,
    WorkflowSwitch,
    is_running,
    is_terminal,
    iso_now,
)
from coro.domain.workflows import WorkflowError
from coro.engine.campaigns.model import is_campaign
from coro.engine.service import Conflict, InvalidRequest
from coro.intelligence.layers import IntelligenceLayers, WorkflowNotFound
from coro.state.store import JobStore

CAMPAIGN_WORKFLOW = "workflows/campaign/workflow.md"
#: params an agent may not set through `switch_workflow` (they drive the runner)
PROTECTED_PARAMS = frozenset({"script", "campaignParentId", "campaignChildName"})


async def switch_workflow(
    store: JobStore,
    layers: IntelligenceLayers,
    job_id: str,
    workflow_path: str,
    reason: str,
    *,
    params_patch: dict[str, Any] | None = None,
    to_phase: str | None = None,
    by: Literal["switch_workflow", "convert_to_campaign"] = "switch_workflow",
) -> dict[str, Any]:
    """Move a job to another workflow in place (SPEC §2.4 of the runner notes).

    Returns `{noop: true}` when it already runs that workflow, else the switch; the
    caller (the tool) then ends the turn towards `toPhase`.
    """
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("reason is required")
    patch = dict(params_patch or {})
    refused = sorted(PROTECTED_PARAMS & set(patch))
    if refused:
        raise InvalidRequest(f"paramsPatch cannot change {', '.join(refused)}")
    job = await store.get(job_id)
    if is_terminal(job.status):
        raise Conflict(f"Job is {job.status}")
    try:
        target = await asyncio.to_thread(layers.load_workflow, workflow_path)
    except (WorkflowError, WorkflowNotFound, ValueError) as exc:
        raise InvalidRequest(f"workflowPath {workflow_path!r} cannot be used: {exc}") from exc
    if target.path == job.workflow_path and by == "switch_workflow":
        await store.log(
            job_id, f"[switch_workflow] Already on {target.path} — nothing to do ({reason})"
        )
        return {"noop": True, "workflowPath": target.path}
    if target.kind == "internal":
        raise InvalidRequest(f"{target.path} is an internal workflow; jobs cannot switch to it")
    if target.kind == "campaign" and job.params.get("epicAllowed") is False:
        raise Conflict(
            "This job may not become a campaign (params.epicAllowed is false: it is "
            "already a campaign child, or the developer ruled it out)"
        )
    phase = to_phase or target.initial_phase_for(job.trigger_source)
    declared = target.phase(phase)
    if declared is None:
        raise InvalidRequest(
            f"toPhase {phase!r} is not a phase of {target.path} ({', '.join(target.phase_names)})"
        )
    switched: list[WorkflowSwitch] = []

    def apply(j: Job) -> bool:
        switched.clear()
        if is_terminal(j.status):
            return False
        entry = WorkflowSwitch(
            at=iso_now(),
            from_path=j.workflow_path,
            to_path=target.path,
            from_phase=j.phase,
            to_phase=phase,
            reason=reason,
            by=by,
        )
        j.workflow_path = target.path
        j.phase = phase
        if is_running(j.status):
            j.status = declared.status if declared.status not in PARKING else QUEUED
        j.params.update(patch)
        j.workflow_phases = target.phase_summaries()
        j.workflow_path_history.append(entry)
        j.session_id = None
        if by == "convert_to_campaign" and j.campaign_children is None:
            j.campaign_children = []
        switched.append(entry)
        return True

    _, written = await store.update(job_id, apply)
    if not written:
        raise Conflict("The job stopped before the switch could be recorded")
    await store.backend.clear_transcript(job_id)  # the new lane starts a fresh session
    entry = switched[0]
    await store.log(
        job_id,
        f"[{by}] {entry.from_path} ({entry.from_phase}) → {entry.to_path} "
        f"({entry.to_phase}) — {reason}",
    )
    return {
        "switched": True,
        "from": entry.from_path,
        "to": entry.to_path,
        "fromPhase": entry.from_phase,
        "toPhase": entry.to_phase,
    }


async def convert_to_campaign(
    store: JobStore,
    layers: IntelligenceLayers,
    job_id: str,
    title: str,
    description: str,
    tracker_epic_ref: str | None = None,
) -> dict[str, Any]:
    """Turn the job into a campaign (the campaign workflow, no children yet)."""
    title, description = title.strip(), description.strip()
    if not title or not description:
        raise InvalidRequest("title and description must not be empty")
    job = await store.get(job_id)
    if job.params.get("epicAllowed") is False:
        raise Conflict(
            "This job may not become a campaign (params.epicAllowed is false: it is "
            "already a campaign child, or the developer ruled it out)"
        )
    if is_campaign(job):
        raise Conflict("This job is already a campaign")
    patch: dict[str, Any] = {"campaignTitle": title, "campaignDescription": description}
    if tracker_epic_ref:
        patch["trackerEpicRef"] = tracker_epic_ref
    return await switch_workflow(
        store,
        layers,
        job_id,
        CAMPAIGN_WORKFLOW,
        f"converted to a campaign: {title}",
        params_patch=patch,
        by="convert_to_campaign",
    )
