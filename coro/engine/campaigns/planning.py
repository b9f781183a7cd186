"""Defining a campaign's children, over the job store alone (so it also works without a
running coordinator, e.g. from `coro mcp`): `register_child` appends one, `finalize`
checks the plan and names the coordinating phase to go to."""

from __future__ import annotations

from typing import Any

from coro.domain.models import AWAITING_CHILDREN, CampaignChild, Job
from coro.engine.campaigns.model import (
    CHILD_NAME,
    MAX_CHILDREN,
    coordinating_phase,
    is_campaign,
    plan_problems,
    reconcile_ready,
)
from coro.engine.service import Conflict, InvalidRequest
from coro.state.store import JobStore


async def register_child(store: JobStore, job_id: str, spec: CampaignChild) -> int:
    """Append a `pending` child; returns how many children the campaign has."""
    if not CHILD_NAME.match(spec.name):
        raise InvalidRequest(
            f"invalid child name {spec.name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    if not spec.description.strip():
        raise InvalidRequest("description must not be empty")
    if spec.name in spec.depends_on:
        raise InvalidRequest(f'child "{spec.name}" cannot depend on itself')
    problem: list[str] = []
    total = [0]

    def apply(job: Job) -> bool:
        problem.clear()
        if not is_campaign(job):
            problem.append("this job is not a campaign (convert_to_campaign turns it into one)")
            return False
        children = job.campaign_children if job.campaign_children is not None else []
        if any(c.name == spec.name for c in children):
            problem.append(f'a child named "{spec.name}" is already registered')
            return False
        if len(children) >= MAX_CHILDREN:
            problem.append(f"a campaign has at most {MAX_CHILDREN} children")
            return False
        fresh = spec.model_copy(
            deep=True,
            update={"status": "pending", "job_id": None, "started_at": None, "completed_at": None},
        )
        job.campaign_children = [*children, fresh]
        total[0] = len(job.campaign_children)
        return True

    _, written = await store.update(job_id, apply)
    if not written:
        raise Conflict(problem[0] if problem else "the campaign could not be updated")
    deps = ", ".join(spec.depends_on)
    tracker = f", tracker={spec.tracker_ref.key}" if spec.tracker_ref else ""
    await store.log(job_id, f'[campaign] Registered child "{spec.name}" (deps=[{deps}]{tracker})')
    return total[0]


async def finalize(store: JobStore, job_id: str) -> dict[str, Any]:
    """Check the plan (children, dependencies, cycles), mark ready children, and name
    the coordinating phase to go to."""
    outcome: dict[str, Any] = {}
    problems: list[str] = []

    def apply(job: Job) -> bool:
        problems.clear()
        if not is_campaign(job):
            problems.append("this job is not a campaign")
            return False
        coordinating = coordinating_phase(job)
        if coordinating is None:
            problems.append(
                "this workflow has no coordinating phase (an agent-less phase with status "
                f"{AWAITING_CHILDREN})"
            )
            return False
        children = job.campaign_children or []
        problems.extend(plan_problems(children))
        if problems:
            return False
        reconcile_ready(children)
        startable = [c for c in children if c.status in ("ready", "dispatched")]
        if not startable:
            problems.append(
                "no child can start: every child is finished or waits on another; register "
                "a new child or rerun one first"
            )
            return False
        job.campaign_children = children
        outcome.update(
            coordinating=coordinating,
            childCount=len(children),
            readyCount=sum(c.status == "ready" for c in children),
        )
        return True

    _, written = await store.update(job_id, apply)
    if not written:
        raise InvalidRequest("; ".join(problems) or "the campaign could not be updated")
    await store.log(
        job_id,
        f"[campaign_finalize] Plan accepted: {outcome['childCount']} children, "
        f"{outcome['readyCount']} ready to dispatch. Advancing to {outcome['coordinating']}.",
    )
    return outcome
