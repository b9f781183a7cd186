"""The coordinator: dispatches a campaign's ready children, follows their jobs, halts
on a failed child and advances the campaign once every child is terminal (the rules:
the package's docstring)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from coro.domain.models import (
    AWAITING_CHILDREN,
    AWAITING_DEVELOPER_INPUT,
    CampaignChild,
    CampaignChildStatus,
    Job,
    is_stopped,
    is_terminal,
    iso_now,
)
from coro.engine.campaigns.model import (
    DEFAULT_CHILD_WORKFLOW,
    HALTING,
    JOB_TO_CHILD,
    MAX_CHILDREN,
    TERMINAL_CHILD,
    ChildNotFound,
    coordinating_phase,
    is_campaign,
    phase_after_coordinating,
    plan_problems,
    reconcile_ready,
)
from coro.engine.dispatcher import Dispatcher
from coro.engine.env import EngineEnv
from coro.engine.service import Conflict, JobService, NewJob
from coro.state.scan import walk_jobs

logger = logging.getLogger(__name__)

#: parent params every child inherits (the child's own params win)
INHERITED_PARAMS = ("repo", "repoSlug", "reviewers", "gitProvider")
#: why a campaign parks in `awaiting-developer-input` (its `awaiting_event`)
HALT_LABEL = "developer-input: campaign halted by failed child"
STALL_LABEL = "developer-input: campaign stalled on unmet dependencies"
CAMPAIGN_LABELS = frozenset({HALT_LABEL, STALL_LABEL})


class CampaignCoordinator:
    """Keeps every campaign's children moving: reacts to run ends (`on_run_end`, a
    dispatcher hook), sweeps, dispatches ready children and records their stops; one
    campaign's work runs under its lock. `CampaignService` adds the developer's controls.
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
        # a page at a time: thousands of jobs may be parked for developer input
        waiting = walk_jobs(self.store.backend, {AWAITING_CHILDREN, AWAITING_DEVELOPER_INPUT})
        async for job in waiting:
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
