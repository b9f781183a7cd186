"""Campaigns (SPEC §4.5): a job whose children are jobs of their own.

A campaign's agents define children (`campaign_register_child`), each with a
description, its own params and the children it depends on, then `campaign_finalize`
checks the plan and moves the campaign to its `coordinating` phase, an agent-less phase
where it parks (`awaiting-children`). From there the **coordinator** owns it:

- a child whose dependencies are all satisfied (complete, skipped or cancelled) becomes
  `ready`, and ready children are dispatched in list order as new jobs, never more than
  `coordination.maxParallelChildren` at once (counting `dispatched` ones);
- a child job that stops maps onto its child (complete, failed, escalated, cancelled),
  and its own insights are kept on the campaign for the children dispatched after it;
- a `failed` or `escalated` child halts the campaign: it parks in
  `awaiting-developer-input` with a message saying which child and why, and nothing
  more is dispatched until a developer resolves it (resume, rerun, skip or cancel);
- once every child is terminal the campaign resumes in the phase after `coordinating`
  with a fresh session.

The coordinator sweeps when the campaign parks in `coordinating`, after every child
stop and after every control. Sweeps and controls of one campaign run one at a time
(a lock per campaign), so a child that stops at once can never overtake the bookkeeping
of its own dispatch. Everything the runner writes is logged on the campaign (and on the
child where it concerns the child).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from coro.domain.models import (
    AWAITING_CHILDREN,
    AWAITING_DEVELOPER_INPUT,
    CANCELLED,
    COMPLETE,
    ESCALATED,
    FAILED,
    PARKING,
    QUEUED,
    CampaignChild,
    CampaignChildStatus,
    Job,
    WorkflowSwitch,
    is_running,
    is_stopped,
    is_terminal,
    iso_now,
)
from coro.domain.workflows import WorkflowError
from coro.engine.service import Conflict, InvalidRequest, NewJob
from coro.intelligence.layers import WorkflowNotFound
from coro.state.backend import JobNotFound, JobQuery

if TYPE_CHECKING:
    from coro.engine.dispatcher import Dispatcher
    from coro.engine.env import EngineEnv
    from coro.engine.service import JobService
    from coro.intelligence.layers import IntelligenceLayers
    from coro.state.store import JobStore

logger = logging.getLogger(__name__)

# --- the child model --------------------------------------------------------------------

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
CAMPAIGN_WORKFLOW = "workflows/campaign/workflow.md"
COORDINATING = "coordinating"
#: where the campaign goes when its workflow declares nothing after `coordinating`
FALLBACK_AFTER_COORDINATING = "aggregation"
#: parent params every child inherits (the child's own params win)
INHERITED_PARAMS = ("repo", "repoSlug", "reviewers", "gitProvider")
#: params an agent may not set through `switch_workflow` (they drive the runner)
PROTECTED_PARAMS = frozenset({"script", "campaignParentId", "campaignChildName"})
HALT_LABEL = "developer-input: campaign halted by failed child"
STALL_LABEL = "developer-input: campaign stalled on unmet dependencies"
CAMPAIGN_LABELS = frozenset({HALT_LABEL, STALL_LABEL})
#: child jobs read per campaign snapshot (reruns included)
MAX_CHILD_JOBS = 2000
#: jobs scanned by `list_campaigns`, newest first
MAX_SCANNED_JOBS = 10_000

Action = Literal["skip", "rerun", "cancel", "abandon", "resume", "start"]
ACTIONS: tuple[Action, ...] = ("skip", "rerun", "cancel", "abandon", "resume", "start")


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


def _reason(reason: str | None) -> str:
    return f" — {reason.strip()}" if reason and reason.strip() else ""


# --- definition (store-only: also usable without a running coordinator) ----------------


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


def child_view(child: CampaignChild) -> dict[str, Any]:
    """A child without its params (`campaign_status`, listings)."""
    return child.to_json(exclude={"params"}, exclude_none=True)


async def status_report(store: JobStore, job_id: str) -> dict[str, Any]:
    """`campaign_status`: counts by status, every child with its job's state, and the
    insights gathered from finished children."""
    job = await store.get(job_id)
    if not is_campaign(job):
        raise Conflict("this job is not a campaign")
    children = job.campaign_children or []
    views = []
    for child in children:
        view = child_view(child)
        workflow = child.params.get("workflowPath")
        view["workflowPath"] = workflow if isinstance(workflow, str) else DEFAULT_CHILD_WORKFLOW
        child_job = await store.find(child.job_id) if child.job_id else None
        if child_job is not None:
            view["job"] = {
                "status": child_job.status,
                "phase": child_job.phase,
                "escalationMessage": child_job.escalation_message,
                "pullRequests": [
                    {
                        "prId": p.pr_id,
                        "repoSlug": p.repo_slug,
                        "url": p.url,
                        "workItem": p.work_item,
                        "state": _pr_state(p.merged_at, p.declined_at),
                    }
                    for p in child_job.pr_mappings
                ],
            }
        views.append(view)
    return {
        "campaignJobId": job.id,
        "totalChildren": len(children),
        "byStatus": count_by_status(children),
        "children": views,
        "allTerminal": bool(children) and all(c.status in TERMINAL_CHILD for c in children),
        "aggregatedInsights": [
            {
                "sourceChildName": i.source_child_name,
                "category": i.category,
                "summary": i.summary,
                "detail": i.detail,
            }
            for i in job.campaign_aggregated_insights
            if i.status != "rejected"
        ],
    }


# --- the coordinator and the controls ----------------------------------------------------


class CampaignService:
    """Coordinates campaigns and carries out the developer's controls on their children.

    Register `on_run_end` with the dispatcher; errors are the engine's (`JobNotFound` /
    `ChildNotFound` 404, `Conflict` 409, `InvalidRequest` 400).
    """

    def __init__(self, env: EngineEnv, dispatcher: Dispatcher, jobs: JobService) -> None:
        self.env = env
        self.store = env.store
        self.dispatcher = dispatcher
        self.jobs = jobs
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def max_parallel(self) -> int:
        return max(1, self.env.config.coordination.max_parallel_children)

    def _lock(self, parent_id: str) -> asyncio.Lock:
        lock = self._locks.get(parent_id)
        if lock is None:
            lock = self._locks[parent_id] = asyncio.Lock()
        return lock

    # --- triggers ---------------------------------------------------------------------

    def on_run_end(self, job_id: str) -> None:
        """Dispatcher hook: a job's run ended (it parked, stopped or finished)."""
        if not self._closed:
            self._spawn(self._after_run(job_id))

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_run(self, job_id: str) -> None:
        try:
            job = await self.store.find(job_id)
            if job is None:
                return
            if job.campaign_parent_id and is_stopped(job.status):
                await self.child_stopped(job)
            if job.status == AWAITING_CHILDREN and is_campaign(job):
                await self.sweep(job.id)
        except Exception:  # a closing runner, a vanished job: never an unhandled task error
            logger.exception("campaign handling after the run of %s failed", job_id)

    async def recover(self) -> None:
        """After a restart: sweep every campaign that waits on its children."""
        self._closed = False
        waiting = await self.store.backend.jobs_with_status(
            {AWAITING_CHILDREN, AWAITING_DEVELOPER_INPUT}
        )
        for job in waiting:
            if is_campaign(job):
                self._spawn(self._sweep_quietly(job.id))

    async def _sweep_quietly(self, parent_id: str) -> None:
        try:
            await self.sweep(parent_id)
        except Exception:
            logger.exception("campaign sweep of %s failed", parent_id)

    async def close(self) -> None:
        """Stop reacting to run ends; pending sweeps are cancelled (a restart's
        `recover()` sweeps every waiting campaign again)."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Until no hook or sweep task is pending (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- child stops ------------------------------------------------------------------

    async def child_stopped(self, child_job: Job) -> None:
        parent_id = child_job.campaign_parent_id
        if not parent_id:
            return
        async with self._lock(parent_id):
            fresh = await self.store.find(child_job.id)
            if fresh is None or await self.store.find(parent_id) is None:
                return
            await self._record_stop(parent_id, fresh)
            await self._sweep(parent_id)

    async def _record_stop(self, parent_id: str, child_job: Job) -> bool:
        mapped = JOB_TO_CHILD.get(child_job.status)
        if mapped is None:
            return False
        own = [i for i in child_job.insights if not i.source_child_name and i.status != "rejected"]
        outcome: dict[str, Any] = {}

        def apply(parent: Job) -> bool:
            outcome.clear()
            entry = next(
                (c for c in parent.campaign_children or [] if c.job_id == child_job.id), None
            )
            if entry is None or entry.status not in ("dispatched", *HALTING):
                return False  # not this child's current job, or settled by a control
            if entry.status == mapped:
                return False
            entry.status = mapped
            entry.completed_at = iso_now()
            known = {i.id for i in parent.campaign_aggregated_insights}
            added = [
                i.model_copy(update={"source_child_name": entry.name})
                for i in own
                if i.id not in known
            ]
            parent.campaign_aggregated_insights.extend(added)
            reconcile_ready(parent.campaign_children or [])
            outcome.update(name=entry.name, insights=len(added))
            return True

        _, written = await self.store.update(parent_id, apply)
        if written:
            shared = (
                f"aggregated {outcome['insights']} insight(s) for siblings; "
                if outcome["insights"]
                else ""
            )
            await self.store.log(
                parent_id,
                f'[campaign] Child "{outcome["name"]}" reached {mapped} (job {child_job.id}); '
                f"{shared}re-running coordinator sweep",
            )
        return written

    async def _sync_with_jobs(self, parent: Job) -> None:
        """Catch up with child jobs changed outside a run end: stopped while parked
        (cancelled directly) or resumed directly after failing."""
        for child in list(parent.campaign_children or []):
            if child.job_id is None or child.status not in ("dispatched", *HALTING):
                continue
            child_job = await self.store.find(child.job_id)
            if child_job is None or self.dispatcher.is_active(child_job.id):
                continue
            mapped = JOB_TO_CHILD.get(child_job.status)
            if mapped is not None and is_stopped(child_job.status):
                await self._record_stop(parent.id, child_job)
            elif child.status in HALTING and not is_stopped(child_job.status):
                await self._set_status(
                    parent.id,
                    child.name,
                    "dispatched",
                    allowed=HALTING,
                    note=f'[campaign] Child "{child.name}" is running again (job {child_job.id})',
                )

    # --- the sweep --------------------------------------------------------------------

    async def sweep(self, parent_id: str) -> None:
        async with self._lock(parent_id):
            await self._sweep(parent_id)

    async def _sweep(self, parent_id: str) -> None:
        for _ in range(MAX_CHILDREN + 1):  # a failed dispatch re-runs the checks
            parent = await self.store.find(parent_id)
            if parent is None or not is_campaign(parent) or is_terminal(parent.status):
                return
            if parent.campaign_children:
                await self._sync_with_jobs(parent)

                def reconcile(job: Job) -> bool:
                    return reconcile_ready(job.campaign_children or [])

                parent, _ = await self.store.update(parent_id, reconcile)
            children = parent.campaign_children or []
            if not self._waiting_on_children(parent):
                return
            if not children:  # the planning phase ended without registering any
                await self._stall(parent)
                return
            halted = [c for c in children if c.status in HALTING]
            if halted:
                await self._halt(parent, halted)
                return
            if all(c.status in TERMINAL_CHILD for c in children):
                await self._advance(parent)
                return
            if not any(c.status in ("ready", "dispatched") for c in children):
                await self._stall(parent)
                return
            if parent.status == AWAITING_DEVELOPER_INPUT:
                await self._unpark(parent)
            if await self._dispatch_ready(parent_id):
                return

    def _waiting_on_children(self, parent: Job) -> bool:
        """Parked in its coordinating phase (waiting, or halted by the coordinator)."""
        if parent.phase != coordinating_phase(parent):
            return False
        if parent.status == AWAITING_CHILDREN:
            return True
        return parent.status == AWAITING_DEVELOPER_INPUT and (
            parent.awaiting_event in CAMPAIGN_LABELS
        )

    async def _park_parent(self, parent: Job, label: str, message: str, note: str) -> None:
        coordinating = parent.phase

        def apply(job: Job) -> bool:
            if job.phase != coordinating or not self._waiting_on_children(job):
                return False
            if job.awaiting_event == label and job.escalation_message == message:
                return False  # already halted for the same reason
            job.status = AWAITING_DEVELOPER_INPUT
            job.clear_wait()
            job.awaiting_event = label
            job.escalation_message = message
            return True

        await self.store.update(parent.id, apply, note=note)

    async def _halt(self, parent: Job, halted: list[CampaignChild]) -> None:
        parts = []
        for child in halted:
            child_job = await self.store.find(child.job_id) if child.job_id else None
            why = child_job.escalation_message if child_job is not None else None
            job_note = f"job {child.job_id}" if child.job_id else "no job"
            parts.append(
                f'"{child.name}" {child.status} ({job_note}' + (f": {why})" if why else ")")
            )
        noun = "child" if len(halted) == 1 else "children"
        message = (
            f"Campaign halted: {noun} {'; '.join(parts)}. No further child is dispatched "
            "until each is resolved: resume it (optionally with a note), rerun it, skip it "
            "or cancel it (`coro campaign resume|rerun|skip|cancel "
            f"{parent.id} <child>`, or the dashboard)."
        )
        names = ", ".join(c.name for c in halted)
        await self._park_parent(
            parent,
            HALT_LABEL,
            message,
            f"[campaign] Halted on failure — {len(halted)} {noun} failed/escalated: {names}",
        )

    async def _stall(self, parent: Job) -> None:
        children = parent.campaign_children or []
        if not children:
            message = (
                "Campaign stalled: no child is registered. Resume the campaign from its "
                "planning phase so that children are registered and finalized."
            )
            note = "[campaign] Stalled — no child is registered"
        else:
            blocked = [c for c in children if c.status == "pending"]
            problems = plan_problems(children)
            detail = "; ".join(problems) or ", ".join(f'"{c.name}"' for c in blocked)
            message = (
                "Campaign stalled: no child can start and none is running — "
                f"{detail}. Skip, cancel or rerun a child to unblock the rest."
            )
            note = (
                f"[campaign] Stalled — {len(blocked)} child(ren) wait on dependencies that "
                "cannot complete"
            )
        await self._park_parent(parent, STALL_LABEL, message, note)

    async def _unpark(self, parent: Job) -> None:
        coordinating = parent.phase

        def apply(job: Job) -> bool:
            if job.phase != coordinating or job.status != AWAITING_DEVELOPER_INPUT:
                return False
            if job.awaiting_event not in CAMPAIGN_LABELS:
                return False
            job.status = AWAITING_CHILDREN
            job.clear_wait()
            job.awaiting_event = f"phase-{coordinating}-event"
            return True

        await self.store.update(
            parent.id,
            apply,
            note="[campaign] Un-parked — no failed or blocked child left; coordinating again",
        )

    async def _advance(self, parent: Job) -> None:
        target = phase_after_coordinating(parent)
        count = len(parent.campaign_children or [])
        await self.store.log(
            parent.id, f"[campaign] All {count} children terminal — advancing to {target}"
        )
        await self.dispatcher.wake(parent.id, None, phase=target, fresh_session=True)

    async def _dispatch_ready(self, parent_id: str) -> bool:
        """Dispatch ready children up to the cap; False when a dispatch failed."""
        parent = await self.store.get(parent_id)
        children = parent.campaign_children or []
        running = sum(c.status == "dispatched" for c in children)
        slots = self.max_parallel - running
        ready = [c.name for c in children if c.status == "ready"]
        for name in ready[: max(slots, 0)]:
            if not await self._dispatch(parent_id, name):
                return False
        return True

    async def _dispatch(self, parent_id: str, name: str) -> bool:
        """Create the child's job (lock held); a failure marks the child failed."""
        parent = await self.store.get(parent_id)
        child = parent.find_child(name)
        if child is None or child.status != "ready":
            return True
        params: dict[str, Any] = {
            k: parent.params[k] for k in INHERITED_PARAMS if k in parent.params
        }
        params.update(child.params)
        workflow = params.get("workflowPath")
        workflow_path = workflow if isinstance(workflow, str) and workflow else None
        params.update(
            description=child.description,
            epicAllowed=False,
            campaignParentId=parent.id,
            campaignChildName=child.name,
        )
        if child.tracker_ref is not None:
            params["trackerRef"] = child.tracker_ref.to_json(exclude_none=True)
        try:
            job = await self.jobs.create(
                NewJob(
                    workflow_path=workflow_path or DEFAULT_CHILD_WORKFLOW,
                    params=params,
                    trigger_source="internal",
                )
            )
        except Exception as exc:
            await self._set_status(
                parent_id,
                name,
                "failed",
                allowed=frozenset({"ready"}),
                note=f'[campaign] Child "{name}" marked failed: dispatch failed: {exc}',
            )
            return False
        # The new job's first phase start waits for this write (one job, one writer at
        # a time), so its first prompt already lists the inherited insights.
        inherited = [i for i in parent.campaign_aggregated_insights if i.status != "rejected"]
        if inherited:

            def inherit(j: Job) -> None:
                known = {i.id for i in j.insights}
                j.insights.extend(i.model_copy() for i in inherited if i.id not in known)

            await self.store.update(job.id, inherit)
        extra = f" with {len(inherited)} inherited insight(s)" if inherited else ""
        await self.store.log(
            job.id, f'[campaign-child] Spawned by campaign {parent.id} as "{name}"{extra}'
        )
        now = iso_now()

        def record(p: Job) -> bool:
            entry = p.find_child(name)
            if entry is None:
                return False
            entry.job_id = job.id
            entry.status = "dispatched"
            entry.started_at = now
            entry.completed_at = None
            return True

        await self.store.update(
            parent_id, record, note=f'[campaign] Dispatched child "{name}" as job {job.id}'
        )
        return True

    async def _set_status(
        self,
        parent_id: str,
        name: str,
        status: CampaignChildStatus,
        *,
        allowed: frozenset[str] | tuple[str, ...],
        note: str,
        reset_job: bool = False,
    ) -> CampaignChild:
        """Move one child to `status` if it is still in one of `allowed` (else Conflict)."""
        found: list[CampaignChild] = []
        current: list[str] = []

        def apply(job: Job) -> bool:
            found.clear()
            current.clear()
            entry = job.find_child(name)
            if entry is None:
                return False
            current.append(entry.status)
            if entry.status not in allowed:
                return False
            entry.status = status
            if reset_job:
                entry.job_id = entry.started_at = entry.completed_at = None
            elif status in TERMINAL_CHILD:
                entry.completed_at = iso_now()
            else:
                entry.completed_at = None
            reconcile_ready(job.campaign_children or [])
            found.append(entry.model_copy())
            return True

        _, written = await self.store.update(parent_id, apply, note=note)
        if not written:
            if not current:
                raise ChildNotFound(parent_id, name)
            raise Conflict(f'Child "{name}" is now {current[0]}; try again')
        return found[0]

    # --- controls ---------------------------------------------------------------------

    async def _campaign(self, parent_id: str) -> Job:
        job = await self.store.get(parent_id)
        if not is_campaign(job):
            raise Conflict(f"Job {parent_id} is not a campaign")
        if is_terminal(job.status):
            raise Conflict(
                f"Campaign {parent_id} is {job.status}; its children can no longer change"
            )
        return job

    @staticmethod
    def _child(job: Job, name: str) -> CampaignChild:
        child = job.find_child(name)
        if child is None:
            raise ChildNotFound(job.id, name)
        return child

    async def control(
        self, parent_id: str, name: str, action: Action, text: str | None = None
    ) -> CampaignChild:
        """One live control; `text` is the reason (or the note for `resume`)."""
        if action not in ACTIONS:
            raise InvalidRequest(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        method = getattr(self, action)
        child: CampaignChild = await method(parent_id, name, text)
        return child

    async def _settled(self, parent_id: str, name: str) -> CampaignChild:
        """The child after the sweep that follows every control."""
        await self._sweep(parent_id)
        return self._child(await self.store.get(parent_id), name)

    async def skip(self, parent_id: str, name: str, reason: str | None = None) -> CampaignChild:
        """Mark a child skipped (its dependants proceed). A failed or escalated child is
        abandoned (cancelled) instead; a running child job is left to finish."""
        async with self._lock(parent_id):
            child = self._child(await self._campaign(parent_id), name)
            if child.status in ("skipped", "cancelled"):
                return child
            if child.status == "complete":
                raise Conflict(f'Child "{name}" is already complete; there is nothing to skip')
            if child.status in HALTING:
                await self._set_status(
                    parent_id,
                    name,
                    "cancelled",
                    allowed=HALTING,
                    note=f'[campaign] Skipped {child.status} child "{name}" — abandoned '
                    f"(cancelled){_reason(reason)}",
                )
            else:
                await self._set_status(
                    parent_id,
                    name,
                    "skipped",
                    allowed=("pending", "ready", "dispatched"),
                    note=f'[campaign] Skipped child "{name}"{_reason(reason)}',
                )
            return await self._settled(parent_id, name)

    async def rerun(self, parent_id: str, name: str, reason: str | None = None) -> CampaignChild:
        """Reset a finished child to `pending`; a new child job is created when its
        dependencies allow."""
        async with self._lock(parent_id):
            child = self._child(await self._campaign(parent_id), name)
            if child.status not in TERMINAL_CHILD:
                raise Conflict(
                    f'Child "{name}" is currently {child.status}; only a finished child can be '
                    "rerun (cancel it first)"
                )
            await self._set_status(
                parent_id,
                name,
                "pending",
                allowed=TERMINAL_CHILD,
                reset_job=True,
                note=f'[campaign] Reset child "{name}" for rerun{_reason(reason)}',
            )
            return await self._settled(parent_id, name)

    async def cancel(self, parent_id: str, name: str, reason: str | None = None) -> CampaignChild:
        """Cancel a child that has not finished, and its job if that is still going."""
        async with self._lock(parent_id):
            child = self._child(await self._campaign(parent_id), name)
            if child.status == "cancelled":
                raise Conflict(f'Child "{name}" is already cancelled')
            if child.status in ("complete", "skipped"):
                raise Conflict(
                    f'Child "{name}" is {child.status}; only a child that has not finished '
                    "can be cancelled"
                )
            await self._cancel_child_job(parent_id, child, reason)
            await self._set_status(
                parent_id,
                name,
                "cancelled",
                allowed=("pending", "ready", "dispatched", *HALTING),
                note=f'[campaign] Cancelled child "{name}"{_reason(reason)}',
            )
            return await self._settled(parent_id, name)

    async def _cancel_child_job(
        self, parent_id: str, child: CampaignChild, reason: str | None
    ) -> None:
        if child.job_id is None:
            return
        child_job = await self.store.find(child.job_id)
        if child_job is None or is_stopped(child_job.status):
            return
        await self.store.log(
            child_job.id, f"[cancelled] Cancelled by parent campaign {parent_id}{_reason(reason)}"
        )
        try:
            await self.jobs.cancel(child_job.id, reason)
        except Conflict as exc:  # it completed in the meantime
            raise Conflict(f'Child "{child.name}" cannot be cancelled: {exc}') from exc

    async def cancel_children(self, parent: Job, reason: str | None = None) -> None:
        """A cancelled campaign takes its unfinished children (and their jobs) with it."""
        why = reason or "the campaign was cancelled"
        async with self._lock(parent.id):
            for child in parent.campaign_children or []:
                if child.status in TERMINAL_CHILD:
                    continue
                try:
                    await self._cancel_child_job(parent.id, child, why)
                except Conflict as exc:  # it finished meanwhile: keep what it reached
                    logger.info("campaign %s: child %s: %s", parent.id, child.name, exc)
                    continue
                await self._set_status(
                    parent.id,
                    child.name,
                    "cancelled",
                    allowed=("pending", "ready", "dispatched"),
                    note=f'[campaign] Cancelled child "{child.name}" with the campaign',
                )

    async def abandon(self, parent_id: str, name: str, reason: str | None = None) -> CampaignChild:
        """Cancel, idempotently: a child already cancelled or skipped stays as it is."""
        job = await self._campaign(parent_id)
        child = self._child(job, name)
        if child.status in ("cancelled", "skipped"):
            return child
        return await self.cancel(parent_id, name, reason)

    async def resume(self, parent_id: str, name: str, note: str | None = None) -> CampaignChild:
        """Re-enter a failed or escalated child's job in place (transcript and PRs kept);
        a note reaches it as a developer message."""
        async with self._lock(parent_id):
            child = self._child(await self._campaign(parent_id), name)
            if child.status not in HALTING:
                raise Conflict(
                    f'Child "{name}" is {child.status}; only a failed or escalated child can '
                    "be resumed"
                )
            if child.job_id is None:
                raise Conflict(f'Child "{name}" has no job to resume; rerun it instead')
            child_job = await self.store.find(child.job_id)
            if child_job is None or is_terminal(child_job.status):
                state = child_job.status if child_job is not None else "gone"
                raise Conflict(
                    f'The job of child "{name}" ({child.job_id}) is {state}; rerun it instead'
                )
            previous = child.status
            with_note = " with a note" if note and note.strip() else ""
            await self._set_status(
                parent_id,
                name,
                "dispatched",
                allowed=HALTING,
                note=f'[campaign] Resuming child "{name}" (job {child.job_id}){with_note}',
            )
            try:
                if note and note.strip():
                    await self.jobs.message(child.job_id, note.strip())
                else:
                    await self.jobs.resume(child.job_id)
            except (Conflict, InvalidRequest):
                await self._set_status(
                    parent_id,
                    name,
                    previous,
                    allowed=("dispatched",),
                    note=f'[campaign] Child "{name}" could not be resumed',
                )
                raise
            return await self._settled(parent_id, name)

    async def start(self, parent_id: str, name: str, reason: str | None = None) -> CampaignChild:
        """Dispatch one ready child now, past the parallelism cap and a halt."""
        async with self._lock(parent_id):
            child = self._child(await self._campaign(parent_id), name)
            if child.status != "ready":
                raise Conflict(
                    f'Child "{name}" is {child.status}; only a ready child (every dependency '
                    "satisfied) can be started"
                )
            await self.store.log(
                parent_id, f'[campaign] Starting child "{name}" by hand{_reason(reason)}'
            )
            await self._dispatch(parent_id, name)
            return await self._settled(parent_id, name)

    # --- reads ------------------------------------------------------------------------

    async def child_jobs(self, parent_id: str) -> dict[str, Job]:
        """Every job created for the campaign's children (reruns included), by id."""
        jobs, _ = await self.store.backend.list_jobs(
            JobQuery(campaign_parent_id=parent_id, limit=MAX_CHILD_JOBS)
        )
        return {j.id: j for j in jobs}

    async def snapshot(self, job: Job) -> dict[str, Any]:
        """The job's JSON; a campaign's children carry a `summary` of their job, and
        `campaignTotals` adds up the campaign and every child job it created."""
        data = job.to_json()
        if job.campaign_children is None:
            return data
        by_id = await self.child_jobs(job.id)
        for child, entry in zip(job.campaign_children, data["campaignChildren"], strict=True):
            child_job = by_id.get(child.job_id) if child.job_id else None
            if child.job_id and child_job is None:
                child_job = await self.store.find(child.job_id)
            entry["summary"] = _summary(child_job) if child_job is not None else None
        data["campaignTotals"] = _totals(job, by_id.values())
        return data

    async def children(self, parent_id: str) -> dict[str, Any]:
        job = await self.store.get(parent_id)
        if not is_campaign(job):
            raise Conflict(f"Job {parent_id} is not a campaign")
        snap = await self.snapshot(job)
        children = job.campaign_children or []
        return {
            "campaignJobId": job.id,
            "status": job.status,
            "phase": job.phase,
            "maxParallelChildren": self.max_parallel,
            "byStatus": count_by_status(children),
            "allTerminal": bool(children) and all(c.status in TERMINAL_CHILD for c in children),
            "children": snap.get("campaignChildren") or [],
            "totals": snap.get("campaignTotals") or _totals(job, []),
        }

    async def list_campaigns(self, limit: int = 50) -> list[dict[str, Any]]:
        """Campaign jobs, newest first, with their child counts."""
        found: list[dict[str, Any]] = []
        offset, page = 0, 200
        while len(found) < limit and offset < MAX_SCANNED_JOBS:
            jobs, total = await self.store.backend.list_jobs(JobQuery(limit=page, offset=offset))
            for job in jobs:
                if is_campaign(job) and len(found) < limit:
                    children = job.campaign_children or []
                    found.append(
                        {
                            "jobId": job.id,
                            "status": job.status,
                            "phase": job.phase,
                            "workflowPath": job.workflow_path,
                            "title": job.params.get("campaignTitle")
                            or job.params.get("description"),
                            "totalChildren": len(children),
                            "byStatus": count_by_status(children),
                            "escalationMessage": job.escalation_message,
                            "createdAt": job.created_at,
                            "updatedAt": job.updated_at,
                        }
                    )
            offset += page
            if offset >= total:
                break
        return found


# --- lane switches (runner notes §2.4) ----------------------------------------------------


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
        target = layers.load_workflow(workflow_path)
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


def _pr_state(merged_at: str | None, declined_at: str | None) -> str:
    if merged_at:
        return "merged"
    return "declined" if declined_at else "open"


def _summary(job: Job) -> dict[str, Any]:
    return {
        "jobId": job.id,
        "type": job.type,
        "status": job.status,
        "phase": job.phase,
        "workflowPath": job.workflow_path,
        "tokenUsage": job.token_usage.to_json(),
        "prMappings": [p.to_json(exclude={"seen"}) for p in job.pr_mappings],
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
        "awaitingEvent": job.awaiting_event,
        "escalationMessage": job.escalation_message,
        "rateLimitInfo": job.rate_limit_info.to_json() if job.rate_limit_info else None,
    }


def _totals(parent: Job, child_jobs: Iterable[Job]) -> dict[str, Any]:
    """Tokens, cost and pull requests of the campaign job plus every child job."""
    jobs = [parent, *child_jobs]
    usage = [j.token_usage for j in jobs]
    prs = [p for j in jobs for p in j.pr_mappings]
    return {
        "childJobCount": len(jobs) - 1,
        "inputTokens": sum(u.input_tokens for u in usage),
        "outputTokens": sum(u.output_tokens for u in usage),
        "cacheReadInputTokens": sum(u.cache_read_input_tokens for u in usage),
        "cacheCreationInputTokens": sum(u.cache_creation_input_tokens for u in usage),
        "totalCostUsd": round(sum(u.total_cost_usd for u in usage), 6),
        "prCount": len(prs),
        "mergedPrCount": sum(p.merged_at is not None for p in prs),
    }


__all__ = [
    "ACTIONS",
    "CAMPAIGN_WORKFLOW",
    "CHILD_STATUSES",
    "HALTING",
    "SATISFIED",
    "TERMINAL_CHILD",
    "Action",
    "CampaignService",
    "ChildNotFound",
    "coordinating_phase",
    "finalize",
    "find_cycle",
    "is_campaign",
    "plan_problems",
    "reconcile_ready",
    "register_child",
    "status_report",
]
