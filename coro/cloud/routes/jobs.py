"""`/teams/{teamId}/jobs`: the runner's job API (SPEC §2.1, §2.2) for team members.

The same bodies, filters and answers as the runner's own routes; reads come from the
cloud's mirror, changes are answered by the runner that has the job
(`coro.cloud.team_jobs`). While no runner is connected, a create or control is kept in
the durable queue: 201 with `warning` for a create, 202 `{queued, jobId, commandId}`
for the rest. Membership is checked against the database on every request; another
team's job ids are 404.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from coro.api import sse
from coro.api.openapi import SSE_EVENT
from coro.api.queries import JobFilterDep
from coro.api.routes.campaigns import ChildActionBody
from coro.api.schemas import (
    ArtifactContentBody,
    BudgetBody,
    CreateJobBody,
    InteractiveBody,
    MessageBody,
    PhaseOverrideBody,
    ReasonBody,
    RerunBody,
    ResumeBody,
)
from coro.cloud.deps import ServicesDep, TeamAccessDep, errors
from coro.cloud.errors import BadRequest
from coro.cloud.models import ErrorBody, Wire
from coro.cloud.team_jobs import Method, Reply, TeamJobs
from coro.domain.models import Budget

router = APIRouter(prefix="/teams/{team_id}/jobs", tags=["team jobs"])

#: seconds between `: heartbeat` comments of an idle stream (tests shorten it)
HEARTBEAT_SECONDS: float = sse.HEARTBEAT_SECONDS

JobId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
Segment = Annotated[str, Path(min_length=1, max_length=200)]


def team_jobs(found: ServicesDep) -> TeamJobs:
    return found.team_jobs


TeamJobsDep = Annotated[TeamJobs, Depends(team_jobs)]


# --------------------------------------------------------------------------- bodies
# The runner's request bodies, validated strictly: a JSON `0` is not a boolean, nor
# `"5"` a number (the document says what is accepted, and nothing else is).

_STRICT = ConfigDict(strict=True)


class StrictBudget(Budget):
    model_config = _STRICT


class TeamCreateJobBody(CreateJobBody):
    model_config = _STRICT
    budget: StrictBudget | None = None


class TeamReasonBody(ReasonBody):
    model_config = _STRICT


class TeamMessageBody(MessageBody):
    model_config = _STRICT


class TeamResumeBody(ResumeBody):
    model_config = _STRICT


class TeamInteractiveBody(InteractiveBody):
    model_config = _STRICT


class TeamPhaseOverrideBody(PhaseOverrideBody):
    model_config = _STRICT


class TeamRerunBody(RerunBody):
    model_config = _STRICT


class TeamBudgetBody(BudgetBody):
    model_config = _STRICT


class TeamArtifactContentBody(ArtifactContentBody):
    model_config = _STRICT


class TeamChildActionBody(ChildActionBody):
    model_config = _STRICT


# --------------------------------------------------------------------------- answers


class Open(BaseModel):
    """A runner's answer: the fields named here, and whatever else its version adds."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class JobSummaryOut(Open):
    """A job as `GET /jobs` lists it (the job without its conversation)."""

    id: str
    type: str
    workflow_path: str = Field(alias="workflowPath")
    status: str
    phase: str
    params: dict[str, Any]
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")


class JobListOut(Wire):
    jobs: list[JobSummaryOut]
    total: int
    limit: int
    offset: int


class JobCreatedOut(Open):
    job_id: str = Field(alias="jobId")
    type: str
    status: str
    stream_url: str = Field(alias="streamUrl", description="This job's team log stream")
    warning: str | None = Field(
        default=None, description="Set when no runner took the job yet: it is queued"
    )


class QueuedOut(Wire):
    queued: Literal[True]
    job_id: str
    command_id: int = Field(description="The queued command (runner_commands)")


class CancelledOut(Open):
    cancelled: str
    status: str


class PausedOut(Open):
    paused: str
    status: str


class ResumedOut(Open):
    resumed: str
    status: str


class MessageSentOut(Open):
    sent: bool


#: statuses a runner's own API answers a job route with (besides 200)
_RUNNER_ERRORS = {
    415: "The runner refused the content type",
    422: "The runner refused the content",
    502: "The runner failed, or its answer could not be read",
}


def _responses(*statuses: int, queued: bool = True) -> dict[int | str, dict[str, Any]]:
    known = [s for s in statuses if s not in _RUNNER_ERRORS]
    described: dict[int | str, dict[str, Any]] = dict(errors(*known))
    for status in statuses:
        if status in _RUNNER_ERRORS:
            described[status] = {"model": ErrorBody, "description": _RUNNER_ERRORS[status]}
    if queued:
        described[202] = {
            "model": QueuedOut,
            "description": "No runner answered yet: the command is queued for the job's runner",
        }
    return described


def _reply(reply: Reply) -> Response:
    if reply.raw is not None:
        return Response(reply.raw, status_code=reply.status, media_type=reply.content_type)
    return JSONResponse(reply.body, status_code=reply.status)


_FORWARDED = {
    200: {
        "description": "The runner's answer, as its own API gives it",
        "content": {"application/json": {}, "*/*": {}},
    },
    **_responses(400, 401, 404, 409, 413, 415, 422, 502, 503),
}


def _runner_path(job_id: str, *segments: str, query: str = "") -> str:
    path = "/".join(["", "jobs", quote(job_id, safe=""), *(quote(s, safe="") for s in segments)])
    return f"{path}?{query}" if query else path


def _sent(body: BaseModel | None) -> Any:
    """A request body as the caller sent it (no defaults filled in)."""
    if body is None:
        return None
    return body.model_dump(mode="json", by_alias=True, exclude_unset=True)


# --------------------------------------------------------------------------- routes


@router.post(
    "",
    status_code=201,
    response_model=JobCreatedOut,
    responses=_responses(400, 401, 404, 409, 413, 502, 503, queued=False),
)
async def create_job(body: TeamCreateJobBody, access: TeamAccessDep, jobs: TeamJobsDep) -> Response:
    """The runner's `POST /jobs` for a runner of the team: 201 with the runner's answer,
    or with the queued job and a `warning` while no runner has answered; a refusal
    comes back with the runner's status and error (the job is then `failed`)."""
    return _reply(await jobs.create(access.team_id, body))


@router.get("", response_model=JobListOut, responses=errors(400, 401, 404, 503))
async def list_jobs(access: TeamAccessDep, jobs: TeamJobsDep, listing: JobFilterDep) -> Response:
    """The team's jobs, newest first, filtered as the runner's `GET /jobs`."""
    if listing.matches_nothing:
        return JSONResponse(listing.page([], 0))
    return JSONResponse(listing.page(*await jobs.list(access.team_id, listing.query)))


@router.get("/{job_id}", response_model=JobSummaryOut, responses=errors(400, 401, 404, 503))
async def get_job(job_id: JobId, access: TeamAccessDep, jobs: TeamJobsDep) -> Response:
    """The job as its runner last replicated it (or as queued, before a runner took it)."""
    found = await jobs.get(access.team_id, job_id)
    return JSONResponse(found.job.to_json())


@router.delete("/{job_id}", status_code=204, responses=errors(400, 401, 404, 409, 503))
async def delete_job(job_id: JobId, access: TeamAccessDep, jobs: TeamJobsDep) -> Response:
    """Forget the team's copy of a stopped job, or of one no runner has taken yet (its
    dispatch is withdrawn); 409 for a job a runner is still running."""
    await jobs.delete(access.team_id, job_id)
    return Response(status_code=204)


@router.get(
    "/{job_id}/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "The log as Server-Sent Events",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        },
        **errors(400, 401, 404, 503),
    },
)
async def stream_job_log(
    job_id: JobId,
    access: TeamAccessDep,
    jobs: TeamJobsDep,
    tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    last_event_id_query: sse.LastEventIdQuery = None,
    last_event_id_header: sse.LastEventIdHeader = None,
) -> EventSourceResponse:
    """SSE as the runner's `GET /jobs/:jobId/stream`, from the mirror: `id:` is the line
    index, `Last-Event-ID` (or `?lastEventId=`) resumes, `?tail=N` replays the last N
    lines, `event: done` carries the stopped status; lines replicated through any cloud
    instance arrive live."""
    await jobs.get(access.team_id, job_id)  # 404 before any stream starts
    try:
        last_seen = sse.last_event_id(last_event_id_header, last_event_id_query)
    except sse.InvalidLastEventId as exc:
        raise BadRequest(str(exc)) from None
    return sse.log_stream(
        jobs.logs.source(access.team_id, job_id),
        last_seen=last_seen,
        tail=tail,
        heartbeat_seconds=HEARTBEAT_SECONDS,
    )


@router.post(
    "/{job_id}/cancel",
    response_model=CancelledOut,
    responses=_responses(400, 401, 404, 409, 413, 502, 503),
)
async def cancel_job(
    job_id: JobId,
    access: TeamAccessDep,
    jobs: TeamJobsDep,
    body: Annotated[TeamReasonBody | None, Body()] = None,
) -> Response:
    """Cancel: by the job's runner, or by the cloud while no runner has taken it (its
    dispatch is then withdrawn). Idempotent; 409 on a complete job."""
    reason = (body or TeamReasonBody()).reason
    frame = jobs.cancel_frame(job_id, reason)
    return _reply(await jobs.control(access.team_id, job_id, "cancel", frame, reason=reason))


@router.post(
    "/{job_id}/pause",
    response_model=PausedOut,
    responses=_responses(400, 401, 404, 409, 413, 502, 503),
)
async def pause_job(
    job_id: JobId,
    access: TeamAccessDep,
    jobs: TeamJobsDep,
    body: Annotated[TeamReasonBody | None, Body()] = None,
) -> Response:
    frame = jobs.pause_frame(job_id, (body or TeamReasonBody()).reason)
    return _reply(await jobs.control(access.team_id, job_id, "pause", frame))


@router.post(
    "/{job_id}/resume",
    response_model=ResumedOut,
    responses=_responses(400, 401, 404, 409, 413, 502, 503),
)
async def resume_job(
    job_id: JobId,
    access: TeamAccessDep,
    jobs: TeamJobsDep,
    body: Annotated[TeamResumeBody | None, Body()] = None,
) -> Response:
    body = body or TeamResumeBody()
    frame = jobs.resume_frame(job_id, body.from_phase, body.clear_session)
    return _reply(await jobs.control(access.team_id, job_id, "resume", frame))


@router.post(
    "/{job_id}/message",
    response_model=MessageSentOut,
    responses=_responses(400, 401, 404, 409, 413, 502, 503),
)
async def message_job(
    job_id: JobId, body: TeamMessageBody, access: TeamAccessDep, jobs: TeamJobsDep
) -> Response:
    frame = jobs.message_frame(job_id, body.message)
    return _reply(await jobs.control(access.team_id, job_id, "message", frame))


# --- the rest of the runner's job routes, answered by the job's runner -----------------


async def _forward(
    jobs: TeamJobs,
    team_id: str,
    job_id: str,
    method: Method,
    segments: tuple[str, ...],
    body: Any = None,
    query: str = "",
) -> Response:
    path = _runner_path(job_id, *segments, query=query)
    return _reply(await jobs.forward(team_id, job_id, method, path, body))


@router.patch("/{job_id}/interactive", responses=_FORWARDED)
async def set_interactive(
    job_id: JobId, body: TeamInteractiveBody, access: TeamAccessDep, jobs: TeamJobsDep
) -> Response:
    return await _forward(jobs, access.team_id, job_id, "PATCH", ("interactive",), _sent(body))


@router.patch("/{job_id}/phase-overrides", responses=_FORWARDED)
async def set_phase_override(
    job_id: JobId, body: TeamPhaseOverrideBody, access: TeamAccessDep, jobs: TeamJobsDep
) -> Response:
    return await _forward(jobs, access.team_id, job_id, "PATCH", ("phase-overrides",), _sent(body))


@router.patch("/{job_id}/budget", responses=_FORWARDED)
async def set_budget(
    job_id: JobId, body: TeamBudgetBody, access: TeamAccessDep, jobs: TeamJobsDep
) -> Response:
    return await _forward(jobs, access.team_id, job_id, "PATCH", ("budget",), _sent(body))


@router.post("/{job_id}/phases/{phase}/rerun", responses=_FORWARDED)
async def rerun_phase(
    job_id: JobId,
    phase: Segment,
    access: TeamAccessDep,
    jobs: TeamJobsDep,
    body: Annotated[TeamRerunBody | None, Body()] = None,
) -> Response:
    return await _forward(
        jobs, access.team_id, job_id, "POST", ("phases", phase, "rerun"), _sent(body)
    )


@router.get("/{job_id}/diff", responses=_FORWARDED)
async def job_diff(
    request: Request,
    job_id: JobId,
    access: TeamAccessDep,
    jobs: TeamJobsDep,
    base: Annotated[str | None, Query(max_length=256)] = None,
    head: Annotated[str | None, Query(max_length=256)] = None,
    repo: Annotated[str | None, Query(max_length=255)] = None,
) -> Response:
    return await _forward(jobs, access.team_id, job_id, "GET", ("diff",), query=request.url.query)


@router.get("/{job_id}/artifacts/{artifact_id}/content", responses=_FORWARDED)
async def artifact_content(
    job_id: JobId, artifact_id: Segment, access: TeamAccessDep, jobs: TeamJobsDep
) -> Response:
    return await _forward(
        jobs, access.team_id, job_id, "GET", ("artifacts", artifact_id, "content")
    )


@router.put("/{job_id}/artifacts/{artifact_id}/content", responses=_FORWARDED)
async def edit_artifact(
    job_id: JobId,
    artifact_id: Segment,
    body: TeamArtifactContentBody,
    access: TeamAccessDep,
    jobs: TeamJobsDep,
) -> Response:
    return await _forward(
        jobs, access.team_id, job_id, "PUT", ("artifacts", artifact_id, "content"), _sent(body)
    )


@router.get("/{job_id}/children", responses=_FORWARDED)
async def list_children(job_id: JobId, access: TeamAccessDep, jobs: TeamJobsDep) -> Response:
    return await _forward(jobs, access.team_id, job_id, "GET", ("children",))


@router.post("/{job_id}/children/{name}/{action}", responses=_FORWARDED)
async def child_action(
    job_id: JobId,
    name: Segment,
    action: Literal["skip", "rerun", "cancel", "abandon", "resume", "start"],
    access: TeamAccessDep,
    jobs: TeamJobsDep,
    body: Annotated[TeamChildActionBody | None, Body()] = None,
) -> Response:
    return await _forward(
        jobs, access.team_id, job_id, "POST", ("children", name, action), _sent(body)
    )


@router.get("/{job_id}/insights", responses=_FORWARDED)
async def list_insights(
    request: Request,
    job_id: JobId,
    access: TeamAccessDep,
    jobs: TeamJobsDep,
    include_inherited: Annotated[bool, Query(alias="includeInherited")] = False,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
) -> Response:
    return await _forward(
        jobs, access.team_id, job_id, "GET", ("insights",), query=request.url.query
    )


@router.patch("/{job_id}/insights/{insight_id}", responses=_FORWARDED)
async def patch_insight(
    job_id: JobId,
    insight_id: Segment,
    body: Annotated[dict[str, Any], Body()],
    access: TeamAccessDep,
    jobs: TeamJobsDep,
) -> Response:
    """The runner validates the patch (as its own `PATCH /jobs/:id/insights/:id`)."""
    return await _forward(jobs, access.team_id, job_id, "PATCH", ("insights", insight_id), body)


@router.delete("/{job_id}/insights/{insight_id}", responses=_FORWARDED)
async def delete_insight(
    request: Request,
    job_id: JobId,
    insight_id: Segment,
    access: TeamAccessDep,
    jobs: TeamJobsDep,
    hard: bool = False,
) -> Response:
    return await _forward(
        jobs,
        access.team_id,
        job_id,
        "DELETE",
        ("insights", insight_id),
        query=request.url.query,
    )
