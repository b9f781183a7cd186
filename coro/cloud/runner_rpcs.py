"""The answers to a runner's RPCs on its socket (`coro.cloud.gateway`), each an
`rpc:response` (errors carry an HTTP-like status), always for the runner token's team:

- `runner:list` → `{runners}` (as `GET /teams/:teamId/runners`)
- `job:create` / `job:update` → `{stored, rev}` (kept when `rev` is higher; 409 if the
  job belongs to another runner)
- `job:log` → `{added}` (lines it lacked; 404 for a job the team does not have)
- `job:delete` → `{deleted}`
- `job:get` → the job; 404 if none
- `job:list` → `{jobs, total}` (newest first); `job:listChildren` → `{jobs}`
- `job:logGet` → `{entries: [{index, line}]}` (`start`..`end` inclusive)
- `job:mapExternalRef` → `{mapped: true}`; 404 for no such job
- `job:byExternalRef` → `{jobId}` (null when no job has it)
- `proposal:create` → the stored proposal; `proposal:list` → `{proposals}` (newest
  first); `proposal:update` → the stored proposal (`coro.cloud.proposals`)

The writes are de-duplicated through `rpc_results`: a repeated messageId gets the stored
answer and has no second effect. Reads are answered afresh (storing every page of jobs
or lines read would cost a write each, and a fresh answer is never older than the first).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from coro.cloud.broker import JOB_CHANGED, Broker
from coro.cloud.commands import Commands
from coro.cloud.db import Database
from coro.cloud.errors import CloudError
from coro.cloud.mirror import Mirror
from coro.cloud.proposals import TeamProposals
from coro.cloud.runners import team_runners
from coro.cloud.schema import rpc_results
from coro.domain.cloud_protocol import (
    JobByExternalRef,
    JobDelete,
    JobGet,
    JobList,
    JobListChildren,
    JobLog,
    JobLogGet,
    JobMapExternalRef,
    JobUpdate,
    ProposalCreate,
    ProposalList,
    ProposalUpdate,
    Request,
    RpcResponse,
    RunnerList,
)
from coro.domain.models import ExternalRef, Job, LogEntry
from coro.state.backend import JobNotFound, JobQuery

logger = logging.getLogger(__name__)

#: How long stored RPC answers are kept: far longer than any runner retries a request.
RPC_RESULT_TTL = timedelta(days=7)

DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout, OSError)
#: RPCs with an effect: their answers are stored, so a retry does not repeat the effect.
_WRITES = (JobUpdate, JobLog, JobDelete, JobMapExternalRef, ProposalCreate, ProposalUpdate)


class RpcError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def problems(exc: ValidationError) -> str:
    """The first few problems, by field, without the values (never echo input)."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "frame"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def error_reply(message_id: str, status: int, message: str) -> dict[str, Any]:
    return RpcResponse(message_id=message_id, ok=False, error=message, status=status).to_wire()


def ok_reply(message_id: str, data: Any) -> dict[str, Any]:
    return RpcResponse(message_id=message_id, ok=True, data=data, status=200).to_wire()


def _ref(model: Any) -> ExternalRef:
    return ExternalRef(
        kind=model.kind,
        plugin_id=model.plugin_id,
        repo_key=model.repo_key,
        external_id=model.external_id,
    )


class RunnerRpcs:
    def __init__(
        self,
        db: Database,
        mirror: Mirror,
        commands: Commands,
        proposals: TeamProposals,
        broker: Broker,
        heartbeat_timeout_seconds: float,
    ) -> None:
        self.db = db
        self.mirror = mirror
        self.commands = commands
        self.proposals = proposals
        self.broker = broker
        self.heartbeat_timeout_seconds = heartbeat_timeout_seconds

    async def answer(self, team_id: str, runner_id: str, frame: Request) -> dict[str, Any]:
        """The `rpc:response` to one request of the runner `runner_id` of `team_id`."""
        message_id = frame.message_id
        write = isinstance(frame, _WRITES)
        try:
            if write:
                stored = await self._stored(team_id, message_id)
                if stored is not None:
                    return stored
            try:
                reply = ok_reply(message_id, await self._rpc(team_id, runner_id, frame))
            except (RpcError, CloudError) as exc:
                reply = error_reply(message_id, exc.status, exc.message)
            if write:
                reply = await self._keep(team_id, message_id, reply)
            return reply
        except DATABASE_DOWN as exc:
            logger.warning(
                "runner %s: %s failed: %s",
                runner_id,
                type(frame).__name__,
                type(exc).__name__,
            )
            return error_reply(message_id, 503, "Database unavailable; retry")
        except DBAPIError:
            logger.exception("runner %s: %s failed", runner_id, type(frame).__name__)
            return error_reply(message_id, 400, "Invalid characters or values in the frame")

    async def _stored(self, team_id: str, message_id: str) -> dict[str, Any] | None:
        async with self.db.begin() as db:
            found: dict[str, Any] | None = await db.scalar(
                select(rpc_results.c.response).where(
                    rpc_results.c.team_id == team_id, rpc_results.c.message_id == message_id
                )
            )
        return found

    async def _keep(self, team_id: str, message_id: str, reply: dict[str, Any]) -> dict[str, Any]:
        """Store the answer; the one stored first if the same request raced this one."""
        async with self.db.begin() as db:
            kept = await db.scalar(
                insert(rpc_results)
                .values(team_id=team_id, message_id=message_id, response=reply)
                .on_conflict_do_nothing()
                .returning(rpc_results.c.message_id)
            )
        if kept is None:
            return await self._stored(team_id, message_id) or reply
        return reply

    async def _rpc(self, team_id: str, runner_id: str, frame: Request) -> Any:
        if isinstance(frame, JobUpdate):
            try:
                job = Job.model_validate(frame.job)
            except ValidationError as exc:
                raise RpcError(400, f"Invalid job: {problems(exc)}") from None
            if job.id != frame.job_id:
                raise RpcError(400, "jobId does not match job.id")
            written = await self.mirror.store(team_id, job, frame.rev, runner_id)
            stored = await self.mirror.get(team_id, job.id)
            if not written and stored is not None and stored.runner_id not in (None, runner_id):
                raise RpcError(409, f"Job {job.id} belongs to another runner")
            if written:
                await self._changed(team_id, job.id)
            return {"stored": written, "rev": stored.rev if stored else frame.rev}
        if isinstance(frame, JobLog):
            entries = [LogEntry(index=e.index, line=e.line) for e in frame.entries]
            try:
                added = await self.mirror.append_logs(team_id, frame.job_id, entries)
            except JobNotFound:
                raise RpcError(404, f"Job not found: {frame.job_id}") from None
            if added:
                await self._changed(team_id, frame.job_id)
            return {"added": added}
        if isinstance(frame, JobDelete):
            deleted = await self.mirror.delete(team_id, frame.job_id)
            if deleted:
                await self.commands.cancel_pending(team_id, frame.job_id)
                await self._changed(team_id, frame.job_id)
            return {"deleted": deleted}
        if isinstance(frame, JobGet):
            found = await self.mirror.get(team_id, frame.job_id)
            if found is None:
                raise RpcError(404, f"Job not found: {frame.job_id}")
            return found.job.summary()
        if isinstance(frame, JobList):
            jobs, total = await self.mirror.list(
                team_id, JobQuery(limit=frame.limit, offset=frame.offset)
            )
            return {"jobs": [j.summary() for j in jobs], "total": total}
        if isinstance(frame, JobListChildren):
            children = await self.mirror.children(team_id, frame.parent_job_id)
            return {"jobs": [j.summary() for j in children]}
        if isinstance(frame, JobLogGet):
            if frame.end != -1 and frame.end < frame.start:
                return {"entries": []}
            limit = None if frame.end == -1 else frame.end - frame.start + 1
            lines = await self.mirror.read_logs(team_id, frame.job_id, frame.start - 1, limit)
            return {"entries": [e.to_json() for e in lines]}
        if isinstance(frame, JobMapExternalRef):
            if not await self.mirror.map_ref(team_id, frame.job_id, _ref(frame.ref)):
                raise RpcError(404, f"Job not found: {frame.job_id}")
            return {"mapped": True}
        if isinstance(frame, JobByExternalRef):
            return {"jobId": await self.mirror.job_for_ref(team_id, _ref(frame.ref))}
        if isinstance(frame, RunnerList):
            runners = await team_runners(self.db, team_id, self.heartbeat_timeout_seconds)
            return {"runners": [r.model_dump(mode="json", by_alias=True) for r in runners]}
        if isinstance(frame, ProposalCreate):
            return await self.proposals.create(team_id, frame.proposal)
        if isinstance(frame, ProposalList):
            return {"proposals": await self.proposals.list(team_id, frame.status)}
        if isinstance(frame, ProposalUpdate):
            return await self.proposals.update(team_id, frame.proposal_id, frame.updates)
        raise RpcError(400, f"Unsupported frame {type(frame).__name__}")

    async def _changed(self, team_id: str, job_id: str) -> None:
        await self.broker.publish(JOB_CHANGED, {"teamId": team_id, "jobId": job_id})
