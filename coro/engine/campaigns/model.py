"""The campaign's child model: statuses, limits, and the pure rules over a set of
children (which are ready, whether their dependencies form a cycle, why a plan cannot
be coordinated)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from coro.domain.models import (
    AWAITING_CHILDREN,
    CANCELLED,
    COMPLETE,
    ESCALATED,
    FAILED,
    CampaignChild,
    CampaignChildStatus,
    Job,
)
from coro.state.backend import JobNotFound

CHILD_STATUSES: tuple[CampaignChildStatus, ...] = (
    "pending",
    "ready",
    "dispatched",
    "complete",
    "failed",
    "escalated",
    "skipped",
    "cancelled",
)
#: a child in one of these unblocks the children that depend on it
SATISFIED: frozenset[str] = frozenset({"complete", "skipped", "cancelled"})
#: a child in one of these halts the campaign until a developer acts
HALTING: frozenset[str] = frozenset({"failed", "escalated"})
TERMINAL_CHILD: frozenset[str] = SATISFIED | HALTING
#: the child job's status → its child's status (any other job status changes nothing)
JOB_TO_CHILD: dict[str, CampaignChildStatus] = {
    COMPLETE: "complete",
    FAILED: "failed",
    ESCALATED: "escalated",
    CANCELLED: "cancelled",
}

CHILD_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,64}$")
MAX_CHILDREN = 200
DEFAULT_CHILD_WORKFLOW = "workflows/job/workflow.md"
COORDINATING = "coordinating"
#: where the campaign goes when its workflow declares nothing after `coordinating`
FALLBACK_AFTER_COORDINATING = "aggregation"


class ChildNotFound(JobNotFound):
    """The campaign has no child of that name (HTTP 404)."""

    def __init__(self, job_id: str, name: str) -> None:
        LookupError.__init__(self, f'Campaign {job_id} has no child "{name}"')
        self.job_id = job_id
        self.name = name


def is_campaign(job: Job) -> bool:
    """A job that carries children, or whose workflow has a coordinating phase."""
    if job.campaign_children is not None:
        return True
    return any(p.agent is None and p.status == AWAITING_CHILDREN for p in job.workflow_phases)


def coordinating_phase(job: Job) -> str | None:
    """The phase where the campaign waits for its children."""
    names = [p.name for p in job.workflow_phases]
    if COORDINATING in names:
        return COORDINATING
    return next(
        (p.name for p in job.workflow_phases if p.agent is None and p.status == AWAITING_CHILDREN),
        None,
    )


def phase_after_coordinating(job: Job) -> str:
    names = [p.name for p in job.workflow_phases]
    coordinating = coordinating_phase(job)
    if coordinating in names:
        index = names.index(coordinating) + 1
        if index < len(names):
            return names[index]
    return FALLBACK_AFTER_COORDINATING


def reconcile_ready(children: list[CampaignChild]) -> bool:
    """`pending` ↔ `ready` by whether every dependency exists and is satisfied.

    Pure and idempotent; returns whether anything changed. A `ready` child whose
    dependency was reset for a rerun goes back to `pending`.
    """
    status = {c.name: c.status for c in children}
    changed = False
    for child in children:
        if child.status not in ("pending", "ready"):
            continue
        ok = all(status.get(dep) in SATISFIED for dep in child.depends_on)
        wanted: CampaignChildStatus = "ready" if ok else "pending"
        if child.status != wanted:
            child.status = wanted
            changed = True
    return changed


def find_cycle(children: Iterable[CampaignChild]) -> list[str] | None:
    """A dependency cycle as a path `[a, b, a]` (a depends on b, b on a), or None."""
    deps = {c.name: list(c.depends_on) for c in children}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in deps.get(name, []):
            if dep not in deps:
                continue
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in deps:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def plan_problems(children: list[CampaignChild]) -> list[str]:
    """Why this set of children cannot be coordinated (empty when it can)."""
    if not children:
        return ["no child is registered; register children with campaign_register_child first"]
    names = {c.name for c in children}
    problems = []
    for child in children:
        unknown = [d for d in child.depends_on if d not in names]
        if unknown:
            listed = ", ".join(f'"{d}"' for d in unknown)
            problems.append(f'child "{child.name}" depends on unregistered {listed}')
    # a finished, skipped or cancelled child blocks nobody, whatever it names
    cycle = find_cycle(c for c in children if c.status not in SATISFIED)
    if cycle:
        problems.append(
            f"dependency cycle: {' -> '.join(cycle)} (each child waits for the next one)"
        )
    return problems


def count_by_status(children: Iterable[CampaignChild]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(CHILD_STATUSES, 0)
    for child in children:
        counts[child.status] += 1
    return counts
