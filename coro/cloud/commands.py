"""The durable queue of commands for runners (`runner_commands`).

A command (`event:*`, `proposal:apply`) is a row first: `submit` stores it with its
target, the job's owner when it has one, else for a dispatch the least busy connected
runner of the team with room for another job, else nobody yet (any runner of the team
takes it later). Then it wakes the instance holding the target's socket (`runner-wake`
on the broker) and waits, bounded, for the answer.

The instance holding a runner's socket sends it its commands with `claim`: in one
transaction it locks the runner's session row, takes the runner's own pending commands
and, within its free capacity for dispatches, the team's unassigned ones (`FOR UPDATE
SKIP LOCKED`, oldest first, so two instances never take one command both), and marks
them `sent`. A `sent` command the runner never answered stays `sent` and is sent again
(same messageId, which the runner de-duplicates) when it registers next. The runner's
`rpc:response` makes the row `done` or `failed` (`answer`), and `command-done` wakes the
waiter on whichever instance it is.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.cloud.broker import COMMAND_DONE, JOB_CHANGED, RUNNER_WAKE, Broker
from coro.cloud.db import AnyRow, Database
from coro.cloud.mirror import Mirror
from coro.cloud.schema import runner_commands, runner_sessions, team_jobs
from coro.domain.cloud_protocol import HEARTBEAT_TIMEOUT_SECONDS, CloudCommand, RpcResponse
from coro.domain.models import FAILED, Job

logger = logging.getLogger(__name__)

DISPATCH = "event:dispatch"
#: unassigned commands one claim looks at, at most (the rest wait for the next claim)
CLAIM_BATCH = 100


@dataclass(frozen=True)
class CommandOutcome:
    state: Literal["done", "failed", "queued", "cancelled"]
    command_id: int
    message_id: str
    response: RpcResponse | None  # the runner's answer (done, failed)


@dataclass(frozen=True)
class Load:
    """A connected runner's room for jobs: what it runs, and dispatches on their way."""

    capacity: int
    busy: int

    @property
    def free(self) -> int:
        return self.capacity - self.busy


def _fresh(timeout_seconds: float) -> ColumnElement[bool]:
    return runner_sessions.c.last_heartbeat_at > func.now() - timedelta(seconds=timeout_seconds)


async def _loads(
    connection: AsyncConnection, team_id: str, sessions: list[AnyRow]
) -> dict[str, Load]:
    """Per runner: active jobs (from its last heartbeat) plus dispatches sent or about
    to be whose job the heartbeat does not list yet (answered since it came, or still
    unanswered). One query for the whole team."""
    if not sessions:
        return {}
    oldest = min(session.last_heartbeat_at for session in sessions)
    c = runner_commands.c
    rows = (
        await connection.execute(
            select(c.runner_id, c.job_id, c.state, c.done_at).where(
                c.team_id == team_id,
                c.type == DISPATCH,
                c.runner_id.in_([session.runner_id for session in sessions]),
                or_(
                    c.state.in_(("pending", "sent")),
                    and_(c.state == "done", c.done_at > oldest),
                ),
            )
        )
    ).all()
    loads = {}
    for session in sessions:
        active = set(session.active_job_ids or [])
        on_the_way = sum(
            1
            for row in rows
            if row.runner_id == session.runner_id
            and (row.job_id is None or row.job_id not in active)
            and (row.state != "done" or row.done_at > session.last_heartbeat_at)
        )
        loads[session.runner_id] = Load(capacity=session.capacity, busy=len(active) + on_the_way)
    return loads


def _outcome(row: AnyRow) -> CommandOutcome:
    response = None if row.result is None else RpcResponse.model_validate(row.result)
    state: Literal["done", "failed", "queued", "cancelled"] = (
        row.state if row.state in ("done", "failed", "cancelled") else "queued"
    )
    return CommandOutcome(state, row.id, row.message_id, response)


class Commands:
    def __init__(
        self,
        db: Database,
        broker: Broker,
        mirror: Mirror,
        instance_id: str,
        heartbeat_timeout_seconds: float = HEARTBEAT_TIMEOUT_SECONDS,
    ) -> None:
        self.db = db
        self.broker = broker
        self.mirror = mirror
        self.instance_id = instance_id
        self.heartbeat_timeout_seconds = heartbeat_timeout_seconds
        self._waiting: dict[int, asyncio.Event] = {}
        self._unsubscribe = broker.subscribe(COMMAND_DONE, self._on_done)

    def _on_done(self, payload: dict[str, Any]) -> None:
        command_id = payload.get("id")
        if isinstance(command_id, int) and command_id in self._waiting:
            self._waiting[command_id].set()

    def close(self) -> None:
        self._unsubscribe()

    async def submit(
        self, team_id: str, frame: CloudCommand, *, job_id: str | None, wait_seconds: float
    ) -> CommandOutcome:
        """Queue `frame` for the right runner of the team and wait up to `wait_seconds`
        for its answer; "queued" if it has none by then (the command stays queued)."""
        async with self.db.begin() as connection:
            target = await self._target(connection, team_id, frame.type, job_id)
            command_id = (
                await connection.execute(
                    runner_commands.insert()
                    .values(
                        team_id=team_id,
                        message_id=frame.message_id,
                        type=frame.type,
                        job_id=job_id,
                        runner_id=target,
                        frame=frame.to_wire(),
                    )
                    .returning(runner_commands.c.id)
                )
            ).scalar_one()
        answered = asyncio.Event()
        self._waiting[command_id] = answered
        try:
            await self.broker.publish(RUNNER_WAKE, {"teamId": team_id, "runnerId": target})
            if wait_seconds > 0:
                try:
                    async with asyncio.timeout(wait_seconds):
                        await answered.wait()
                except TimeoutError:
                    pass  # the row tells (a notice may have been lost)
        finally:
            del self._waiting[command_id]
        return await self.outcome(team_id, command_id)

    async def outcome(self, team_id: str, command_id: int) -> CommandOutcome:
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    select(
                        runner_commands.c.id,
                        runner_commands.c.message_id,
                        runner_commands.c.state,
                        runner_commands.c.result,
                    ).where(
                        runner_commands.c.team_id == team_id, runner_commands.c.id == command_id
                    )
                )
            ).one()
        return _outcome(row)

    async def _target(
        self, connection: AsyncConnection, team_id: str, kind: str, job_id: str | None
    ) -> str | None:
        if job_id is not None:
            owner: str | None = await connection.scalar(
                select(team_jobs.c.runner_id).where(
                    team_jobs.c.team_id == team_id, team_jobs.c.id == job_id
                )
            )
            if owner is not None:
                return owner
            # dispatched, but its runner has not reported it yet: the runner it went to
            dispatched_to: str | None = await connection.scalar(
                select(runner_commands.c.runner_id)
                .where(
                    runner_commands.c.team_id == team_id,
                    runner_commands.c.job_id == job_id,
                    runner_commands.c.type == DISPATCH,
                    runner_commands.c.runner_id.is_not(None),
                    runner_commands.c.state.in_(("sent", "done")),
                )
                .order_by(runner_commands.c.id.desc())
                .limit(1)
            )
            if dispatched_to is not None:
                return dispatched_to
        if kind != DISPATCH:
            return None
        # the team's sessions stay locked until the command is stored: two dispatches
        # at once cannot both take a runner's last free slot
        sessions = (
            await connection.execute(
                select(runner_sessions)
                .where(
                    runner_sessions.c.team_id == team_id,
                    _fresh(self.heartbeat_timeout_seconds),
                )
                .order_by(runner_sessions.c.runner_id)
                .with_for_update()
            )
        ).all()
        best: tuple[float, int, str] | None = None
        loads = await _loads(connection, team_id, list(sessions))
        for session in sessions:
            load = loads[session.runner_id]
            if load.free <= 0:
                continue
            rank = (load.busy / load.capacity, -load.free, session.runner_id)
            if best is None or rank < best:
                best = rank
        return None if best is None else best[2]

    async def claim(self, team_id: str, runner_id: str, *, resend: bool) -> list[dict[str, Any]]:
        """The frames to send `runner_id` now, in id order, marked `sent` by this
        instance: its own pending commands, the team's unassigned ones it has room for,
        and (`resend`, at register) the ones sent before but never answered."""
        c = runner_commands.c
        async with self.db.begin() as connection:
            session = (
                await connection.execute(
                    select(runner_sessions)
                    .where(
                        runner_sessions.c.team_id == team_id,
                        runner_sessions.c.runner_id == runner_id,
                    )
                    .with_for_update()
                )
            ).first()
            if session is None:
                return []  # not connected (any more)
            states = ("pending", "sent") if resend else ("pending",)
            own = (
                await connection.execute(
                    select(c.id, c.frame)
                    .where(c.team_id == team_id, c.runner_id == runner_id, c.state.in_(states))
                    .order_by(c.id)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            free = (await _loads(connection, team_id, [session]))[runner_id].free
            unassigned = select(c.id, c.frame).where(
                c.team_id == team_id, c.runner_id.is_(None), c.state == "pending"
            )
            taken: list[AnyRow] = list(own)
            # only the rows it takes are locked: another instance claims the rest at once
            taken += (
                await connection.execute(
                    unassigned.where(c.type != DISPATCH)
                    .order_by(c.id)
                    .limit(CLAIM_BATCH)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if free > 0:
                taken += (
                    await connection.execute(
                        unassigned.where(c.type == DISPATCH)
                        .order_by(c.id)
                        .limit(min(free, CLAIM_BATCH))
                        .with_for_update(skip_locked=True)
                    )
                ).all()
            if not taken:
                return []
            await connection.execute(
                update(runner_commands)
                .where(c.id.in_([row.id for row in taken]))
                .values(
                    runner_id=runner_id,
                    state="sent",
                    sent_at=func.now(),
                    sent_by=self.instance_id,
                    attempts=c.attempts + 1,
                )
            )
        return [dict(row.frame) for row in sorted(taken, key=lambda r: r.id)]

    async def answer(self, team_id: str, runner_id: str, response: RpcResponse) -> bool:
        """Store the runner's answer to one of its commands; False if there is no such
        command waiting for it (an answer repeated, or not its command)."""
        c = runner_commands.c
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    update(runner_commands)
                    .where(
                        c.team_id == team_id,
                        c.message_id == response.message_id,
                        c.runner_id == runner_id,
                        c.state.in_(("pending", "sent")),
                    )
                    .values(
                        state="done" if response.ok else "failed",
                        result=response.to_wire(),
                        done_at=func.now(),
                    )
                    .returning(c.id, c.type, c.job_id)
                )
            ).first()
        if row is None:
            return False
        if row.type == DISPATCH and not response.ok and row.job_id is not None:
            await self._refused(team_id, row.job_id, response)
        await self.broker.publish(COMMAND_DONE, {"id": row.id})
        return True

    async def _refused(self, team_id: str, job_id: str, response: RpcResponse) -> None:
        """A runner refused to create a dispatched job: the job (still the cloud's own)
        fails, with the runner's reason in its log."""

        def fail(job: Job) -> None:
            job.status = FAILED

        reason = response.error or "no reason given"
        failed = await self.mirror.set_status(
            team_id, job_id, fail, f"[cloud] The runner refused the job: {reason}"
        )
        if failed is not None:
            await self.broker.publish(JOB_CHANGED, {"teamId": team_id, "jobId": job_id})

    async def cancel_pending(self, team_id: str, job_id: str) -> int:
        """Cancel the job's commands no runner has been sent yet; how many."""
        c = runner_commands.c
        async with self.db.begin() as connection:
            ids = (
                await connection.scalars(
                    update(runner_commands)
                    .where(c.team_id == team_id, c.job_id == job_id, c.state == "pending")
                    .values(state="cancelled", done_at=func.now())
                    .returning(c.id)
                )
            ).all()
        for command_id in ids:
            await self.broker.publish(COMMAND_DONE, {"id": command_id})
        return len(ids)
