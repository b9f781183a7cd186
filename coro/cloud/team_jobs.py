"""Team jobs for team members: the runner's job API, answered from the mirror and by
the team's runners (SPEC §3, `/teams/:teamId/jobs`).

Reads (list, get, the log stream) come from the mirror, so they work while the
job's runner is offline. Everything that changes a job is a command for the runner that
owns it (`coro.cloud.commands`), answered as the runner's own API would; the cloud
writes a job itself only while no runner has it: it stores the provisional job of a
create (which the runner that takes the dispatch then recreates authoritatively), and
it cancels and deletes such a job itself.

Every read and write names the team: another team's job id is simply not found.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from sqlalchemy import func, select

from coro.api.schemas import CreateJobBody
from coro.cloud.broker import JOB_CHANGED, Broker
from coro.cloud.commands import DISPATCH, CommandOutcome, Commands
from coro.cloud.db import Database
from coro.cloud.errors import Conflict, NotFound
from coro.cloud.mirror import Mirror, StoredJob
from coro.cloud.schema import runner_commands, runner_sessions
from coro.domain.cloud_protocol import (
    HEARTBEAT_TIMEOUT_SECONDS,
    CloudCommand,
    EventCancel,
    EventDispatch,
    EventMessage,
    EventPause,
    EventRequest,
    EventResume,
    RpcResponse,
)
from coro.domain.models import (
    CANCELLED,
    COMPLETE,
    QUEUED,
    Budget,
    Job,
    JobOrigin,
    LogEntry,
    TriggerSource,
    is_stopped,
    is_terminal,
    iso_now,
)
from coro.engine.service import new_job_id
from coro.state.backend import JobExists, JobQuery
from coro.state.logbus import CatchUp, LogBus, Subscription

#: how long a REST call waits for the runner's answer before answering "queued"
WAIT_SECONDS = 10.0
NO_RUNNER_WARNING = "No runner connected — job queued"
UNANSWERED_WARNING = "The runner has not answered yet — job queued"


async def wait_seconds(db: Database, team_id: str) -> float:
    """How long a command waits for its answer: `WAIT_SECONDS`, or not at all when no
    runner of the team is connected (it can only be queued)."""
    c = runner_sessions.c
    fresh = func.now() - timedelta(seconds=HEARTBEAT_TIMEOUT_SECONDS)
    async with db.begin() as connection:
        connected = await connection.scalar(
            select(c.runner_id).where(c.team_id == team_id, c.last_heartbeat_at > fresh).limit(1)
        )
    return WAIT_SECONDS if connected is not None else 0.0


def stream_url(team_id: str, job_id: str) -> str:
    return f"/teams/{team_id}/jobs/{job_id}/stream"


@dataclass(frozen=True)
class Reply:
    """What the REST caller gets: a status and a JSON body, or raw bytes."""

    status: int
    body: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"


class _Forwarded(BaseModel):
    """The runner's HTTP answer to an `event:request`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    status: Annotated[int, Field(ge=100, le=599)]
    content_type: Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = (
        "application/json"
    )
    body_base64: str = ""


def _message_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"Job not found: {job_id}")


def provisional_job(
    body: CreateJobBody, job_id: str | None = None, origin: JobOrigin | None = None
) -> Job:
    """The job a create stores while it waits for a runner: its params assembled as the
    runner's `JobService.create` does (which resolves the workflow, and so the phase,
    when it recreates the job under the same id). `job_id` and `origin`: a job a team
    trigger started (`coro.cloud.triggers`)."""
    params = dict(body.params)
    for key, value in (
        ("repo", body.repo),
        ("serviceName", body.service_name),
        ("description", body.description),
        ("reviewers", body.reviewers),
        ("gitProvider", body.git_provider),
        ("jiraTicketId", body.jira_ticket_id),
    ):
        if value is not None:
            params[key] = value
    if body.repo:
        params.setdefault("repoSlug", body.repo.rstrip("/").split("/")[-1])
    trigger: TriggerSource = body.trigger_source or ("jira" if body.jira_ticket_id else "cli")
    interactive = bool(body.interactive or params.get("interactive") is True)
    if interactive:
        params["interactive"] = True
    label = str(
        params.get("serviceName") or params.get("jiraTicketId") or params.get("repoSlug") or ""
    )
    now = iso_now()
    parent = params.get("campaignParentId")
    return Job(
        id=job_id or new_job_id(label, body.type),
        type=body.type,
        workflow_path=body.workflow_path,
        params=params,
        trigger_source=trigger,
        status=QUEUED,
        phase="",  # the workflow's first phase, once a runner has resolved it
        interactive=interactive,
        budget=body.budget or Budget(),
        campaign_parent_id=parent if isinstance(parent, str) else None,
        origin=origin,
        created_at=now,
        updated_at=now,
    )


def _error_reply(response: RpcResponse | None, fallback: str) -> Reply:
    """The runner's refusal as its API answers it: its status, and its error body (the
    runner may send the whole body, extra fields included, as `data`)."""
    if response is None:
        return Reply(502, {"error": fallback})
    data = response.data
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        body = data
    else:
        body = {"error": response.error or fallback}
    return Reply(response.status or 502, body)


def _queued(job_id: str, outcome: CommandOutcome) -> Reply:
    return Reply(202, {"queued": True, "jobId": job_id, "commandId": outcome.command_id})


def _shaped(kind: Control | None, data: Any) -> Any:
    """The runner's answer to a control in the shape its HTTP route gives it: a runner
    answers a cancel, pause or resume command with the job itself."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return data
    if kind == "cancel":
        return {"cancelled": data["id"], "status": data.get("status")}
    if kind == "pause":
        return {
            "paused": data["id"],
            "status": data.get("status"),
            "awaitingEvent": data.get("awaitingEvent"),
        }
    if kind == "resume":
        return {"resumed": data["id"], "status": data.get("status"), "phase": data.get("phase")}
    return data


def _answer(job_id: str, outcome: CommandOutcome, kind: Control | None = None) -> Reply:
    """A command's outcome as the REST answer."""
    if outcome.state == "queued":
        return _queued(job_id, outcome)
    if outcome.state == "cancelled":
        return Reply(409, {"error": "The command was cancelled before a runner took it"})
    response = outcome.response
    if outcome.state == "done" and response is not None:
        return Reply(response.status or 200, _shaped(kind, response.data))
    return _error_reply(response, "The runner refused the request")


class TeamLogs:
    """The live side of team job streams on this instance: one bus for every team job
    (keyed `<teamId>/<jobId>`), caught up from the mirror whenever any instance says
    the job has new lines or a new status (`job-changed` on the broker)."""

    def __init__(self, mirror: Mirror, broker: Broker) -> None:
        self.mirror = mirror
        self.bus = LogBus()
        self._catch_up = CatchUp(self.bus, self._read_lines, self._read_status)
        # a subscriber that has replayed the mirror is caught up once at once: lines
        # stored between its replay and its subscription are not lost
        self.bus.on_follow = self._catch_up.job_changed
        self._unsubscribe = broker.subscribe(JOB_CHANGED, self._on_notice)

    @staticmethod
    def key(team_id: str, job_id: str) -> str:
        return f"{team_id}/{job_id}"

    def _on_notice(self, payload: dict[str, Any]) -> None:
        team_id, job_id = payload.get("teamId"), payload.get("jobId")
        if isinstance(team_id, str) and isinstance(job_id, str):
            self._catch_up.job_changed(self.key(team_id, job_id))

    async def _read_lines(self, key: str, after: int, limit: int) -> list[LogEntry]:
        team_id, _, job_id = key.partition("/")
        return await self.mirror.read_logs(team_id, job_id, after=after, limit=limit)

    async def _read_status(self, key: str) -> str | None:
        team_id, _, job_id = key.partition("/")
        found = await self.mirror.get(team_id, job_id)
        return None if found is None else found.job.status

    def source(self, team_id: str, job_id: str) -> MirrorLog:
        return MirrorLog(self, team_id, job_id)

    async def close(self) -> None:
        """End every open stream (shutdown) and stop listening."""
        self._unsubscribe()
        self.bus.close_all()
        await self._catch_up.close()


class MirrorLog:
    """One team job's log in the mirror: a `coro.api.sse.LogSource`."""

    def __init__(self, logs: TeamLogs, team_id: str, job_id: str) -> None:
        self._logs = logs
        self._team_id = team_id
        self._job_id = job_id

    def subscribe(self) -> Subscription:
        return self._logs.bus.subscribe(TeamLogs.key(self._team_id, self._job_id))

    async def read_logs(self, after: int, limit: int) -> list[LogEntry]:
        return await self._logs.mirror.read_logs(
            self._team_id, self._job_id, after=after, limit=limit
        )

    async def count_logs(self) -> int:
        return await self._logs.mirror.count_logs(self._team_id, self._job_id)

    async def status(self) -> str | None:
        found = await self._logs.mirror.get(self._team_id, self._job_id)
        return None if found is None else found.job.status


Control = Literal["cancel", "pause", "resume", "message"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class TeamJobs:
    def __init__(self, db: Database, mirror: Mirror, commands: Commands, broker: Broker) -> None:
        self.db = db
        self.mirror = mirror
        self.commands = commands
        self.broker = broker
        self.logs = TeamLogs(mirror, broker)

    async def close(self) -> None:
        await self.logs.close()

    # --- reads ------------------------------------------------------------------------

    async def get(self, team_id: str, job_id: str) -> StoredJob:
        found = await self.mirror.get(team_id, job_id)
        if found is None:
            raise _not_found(job_id)
        return found

    async def list(self, team_id: str, query: JobQuery) -> tuple[list[Job], int]:
        return await self.mirror.list(team_id, query)

    # --- create -----------------------------------------------------------------------

    async def create(self, team_id: str, body: CreateJobBody) -> Reply:
        """Store the provisional job, dispatch it to a runner of the team and answer
        with the runner's answer, or with the provisional job when none answered."""
        job = provisional_job(body)
        try:
            await self.mirror.create_provisional(team_id, job)
        except JobExists:  # the same id made twice in one millisecond
            raise Conflict(f"Job already exists: {job.id}; try again") from None
        frame = EventDispatch(
            message_id=_message_id("dispatch"),
            job_id=job.id,
            request=body.model_dump(mode="json", by_alias=True, exclude_none=True),
        )
        outcome = await self._submit(team_id, frame, job.id)
        response = outcome.response
        if outcome.state == "done" and response is not None:
            data = dict(response.data) if isinstance(response.data, dict) else {}
            data.setdefault("jobId", job.id)
            # the caller follows the job here, not on the runner
            data["streamUrl"] = stream_url(team_id, job.id)
            return Reply(201, data)
        if outcome.state == "failed":
            # `Commands.answer` has failed the job and logged the runner's reason
            return _error_reply(response, "The runner refused the job")
        current = await self.mirror.get(team_id, job.id)
        shown = current.job if current is not None else job
        created = {
            **shown.summary(),
            "jobId": job.id,
            "streamUrl": stream_url(team_id, job.id),
        }
        if outcome.state == "queued":
            has_runner = await self._command_runner(team_id, outcome.command_id) is not None
            created["warning"] = UNANSWERED_WARNING if has_runner else NO_RUNNER_WARNING
        return Reply(201, created)

    async def start_triggered(
        self, team_id: str, body: CreateJobBody, job_id: str, origin: JobOrigin
    ) -> bool:
        """A job a team trigger started: stored under `job_id` (named after the rule and
        the event) with its origin, and dispatched to a runner of the team (queued if
        none is connected; nobody waits for the answer). False when the team has a job
        of that id already: the event was handled before."""
        job = provisional_job(body, job_id, origin)
        try:
            await self.mirror.create_provisional(team_id, job)
        except JobExists:
            return False
        frame = EventDispatch(
            message_id=_message_id("dispatch"),
            job_id=job.id,
            request=body.model_dump(mode="json", by_alias=True, exclude_none=True),
            origin=origin.model_dump(mode="json", by_alias=True, exclude_none=True),
        )
        try:
            await self.commands.submit(team_id, frame, job_id=job.id, wait_seconds=0)
        except BaseException:
            # no dispatch, no job: the provider's retry of the delivery starts it again
            await self.mirror.delete(team_id, job.id)
            raise
        await self._changed(team_id, job.id)
        return True

    # --- controls ---------------------------------------------------------------------

    async def control(
        self,
        team_id: str,
        job_id: str,
        kind: Control,
        build: Callable[[str], CloudCommand],
        *,
        reason: str | None = None,
    ) -> Reply:
        """A control of a job: the runner that has the job answers it; a job no runner
        has yet is cancelled by the cloud itself, and refuses the other controls (409)
        until a runner has taken it."""
        found = await self.get(team_id, job_id)
        if found.runner_id is None and not await self._dispatch_taken(team_id, job_id):
            if kind == "cancel":
                return await self._cancel_unowned(team_id, found.job, build, reason)
            return Reply(409, {"error": _unowned_refusal(found.job, kind)})
        outcome = await self._submit(team_id, build(_message_id(kind)), job_id)
        return _answer(job_id, outcome, kind)

    def cancel_frame(self, job_id: str, reason: str | None) -> Callable[[str], CloudCommand]:
        return lambda message_id: EventCancel(message_id=message_id, job_id=job_id, reason=reason)

    def pause_frame(self, job_id: str, reason: str | None) -> Callable[[str], CloudCommand]:
        return lambda message_id: EventPause(message_id=message_id, job_id=job_id, reason=reason)

    def resume_frame(
        self, job_id: str, from_phase: str | None, clear_session: bool
    ) -> Callable[[str], CloudCommand]:
        return lambda message_id: EventResume(
            message_id=message_id,
            job_id=job_id,
            from_phase=from_phase,
            clear_session=clear_session,
        )

    def message_frame(self, job_id: str, message: str) -> Callable[[str], CloudCommand]:
        return lambda message_id: EventMessage(
            message_id=message_id, job_id=job_id, message=message
        )

    async def _cancel_unowned(
        self, team_id: str, job: Job, build: Callable[[str], CloudCommand], reason: str | None
    ) -> Reply:
        if job.status == COMPLETE:
            return Reply(409, {"error": "Job is already complete"})
        if job.status == CANCELLED:
            return Reply(200, {"cancelled": job.id, "status": job.status})
        # Withdraw the dispatch first. Both this and a runner's claim lock the command,
        # so afterwards it is either cancelled (the job is the cloud's to cancel) or was
        # sent (the runner has the job and is the one to cancel it).
        await self.commands.cancel_pending(team_id, job.id)
        if await self._dispatch_taken(team_id, job.id):
            outcome = await self._submit(team_id, build(_message_id("cancel")), job.id)
            return _answer(job.id, outcome, "cancel")
        suffix = f": {reason}" if reason else ""

        def cancel(j: Job) -> None:
            if not is_terminal(j.status):
                j.status = CANCELLED
                j.clear_wait()
                j.pending_prompt = None

        cancelled = await self.mirror.set_status(
            team_id, job.id, cancel, f"[control] Job cancelled{suffix}"
        )
        if cancelled is None:
            # a runner replicated the job meanwhile: it is the one to cancel it
            outcome = await self._submit(team_id, build(_message_id("cancel")), job.id)
            return _answer(job.id, outcome, "cancel")
        await self._changed(team_id, job.id)
        return Reply(200, {"cancelled": cancelled.id, "status": cancelled.status})

    # --- anything else of the runner's job API ----------------------------------------

    async def forward(
        self, team_id: str, job_id: str, method: Method, path: str, body: Any = None
    ) -> Reply:
        """A runner job route (`path` under `/jobs/<jobId>`), answered by the job's
        runner byte for byte; 409 while no runner has the job."""
        found = await self.get(team_id, job_id)
        if found.runner_id is None and not await self._dispatch_taken(team_id, job_id):
            return Reply(409, {"error": "No runner has taken this job yet"})
        frame = EventRequest(
            message_id=_message_id("request"),
            job_id=job_id,
            method=method,
            path=path,
            body=body,
        )
        outcome = await self._submit(team_id, frame, job_id)
        response = outcome.response
        if outcome.state not in ("done", "failed") or response is None:
            return _answer(job_id, outcome)
        if response.data is None and not response.ok:  # refused before its API answered
            return _error_reply(response, "The runner refused the request")
        # the API's answer, an error status included, comes as it is
        try:
            answer = _Forwarded.model_validate(response.data)
            raw = base64.b64decode(answer.body_base64, validate=True)
        except (ValidationError, binascii.Error, ValueError):
            return Reply(502, {"error": "The runner's answer could not be read"})
        return Reply(answer.status, raw=raw, content_type=answer.content_type)

    # --- delete -----------------------------------------------------------------------

    async def delete(self, team_id: str, job_id: str) -> None:
        """Forget the team's copy of a stopped job, or of one no runner has taken (its
        dispatch is withdrawn). A runner keeps its own record of the jobs it ran."""
        found = await self.get(team_id, job_id)
        owned = found.runner_id is not None or await self._dispatch_taken(team_id, job_id)
        if owned and not is_stopped(found.job.status):
            raise Conflict(f"Job is {found.job.status}; cancel it before deleting it")
        await self.commands.cancel_pending(team_id, job_id)
        if not await self.mirror.delete(team_id, job_id):
            raise _not_found(job_id)
        await self._changed(team_id, job_id)

    # --- helpers ----------------------------------------------------------------------

    async def _changed(self, team_id: str, job_id: str) -> None:
        await self.broker.publish(JOB_CHANGED, {"teamId": team_id, "jobId": job_id})

    async def _dispatch_taken(self, team_id: str, job_id: str) -> bool:
        """Whether a runner has been sent the job's dispatch (and so has, or is about to
        have, the job) although the mirror names no owner yet."""
        c = runner_commands.c
        async with self.db.begin() as connection:
            taken = await connection.scalar(
                select(c.id)
                .where(
                    c.team_id == team_id,
                    c.job_id == job_id,
                    c.type == DISPATCH,
                    c.state.in_(("sent", "done")),
                )
                .limit(1)
            )
        return taken is not None

    async def _submit(self, team_id: str, frame: CloudCommand, job_id: str) -> CommandOutcome:
        return await self.commands.submit(
            team_id, frame, job_id=job_id, wait_seconds=await wait_seconds(self.db, team_id)
        )

    async def _command_runner(self, team_id: str, command_id: int) -> str | None:
        c = runner_commands.c
        async with self.db.begin() as connection:
            runner: str | None = await connection.scalar(
                select(c.runner_id).where(c.team_id == team_id, c.id == command_id)
            )
        return runner


def _unowned_refusal(job: Job, kind: Control) -> str:
    """What the cloud answers for a job still waiting for a runner (the runner's own
    wording where it has one)."""
    if kind == "resume":
        if is_terminal(job.status):
            return f"Job is already {job.status}"
        return "Job is already queued" if job.status == QUEUED else "No runner has this job"
    if kind == "message" and is_terminal(job.status):
        return f"Job is {job.status}; it cannot take messages"
    if kind == "pause" and job.status != QUEUED:
        return f"Job is {job.status}; there is nothing to pause"
    return f"Job is waiting for a runner; {kind} it once a runner has taken it"
