"""`CampaignService`, the campaigns the runner holds: the coordinator plus the
developer's controls on a campaign's children (skip, rerun, cancel, abandon, resume,
start), the cancellation of a campaign's children with it, and the API's reads."""

from __future__ import annotations

import logging
from typing import Any, Literal

from coro.domain.models import CampaignChild, Job, is_stopped, is_terminal
from coro.engine.campaigns import reports
from coro.engine.campaigns.coordinator import CampaignCoordinator
from coro.engine.campaigns.model import (
    HALTING,
    TERMINAL_CHILD,
    ChildNotFound,
    is_campaign,
)
from coro.engine.service import Conflict, InvalidRequest

logger = logging.getLogger(__name__)

Action = Literal["skip", "rerun", "cancel", "abandon", "resume", "start"]
ACTIONS: tuple[Action, ...] = ("skip", "rerun", "cancel", "abandon", "resume", "start")


class CampaignService(CampaignCoordinator):
    """Coordinates campaigns and carries out the developer's controls on their children.

    Register `on_run_end` with the dispatcher and `cancel_children` with the job
    service's `on_cancelled`; errors are the engine's (`JobNotFound` / `ChildNotFound`
    404, `Conflict` 409, `InvalidRequest` 400).
    """

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

    # --- reads (see `reports`) --------------------------------------------------------

    async def snapshot(self, job: Job) -> dict[str, Any]:
        return await reports.snapshot(self.store, job)

    async def children(self, parent_id: str) -> dict[str, Any]:
        return await reports.children(self.store, parent_id, self.max_parallel)

    async def list_campaigns(self, limit: int = 50) -> list[dict[str, Any]]:
        return await reports.list_campaigns(self.store, limit)


def _reason(reason: str | None) -> str:
    return f" — {reason.strip()}" if reason and reason.strip() else ""
