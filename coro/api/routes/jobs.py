"""`/jobs` endpoints (SPEC §2.1): create, list, read, control, artefacts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic_core import to_json

from coro.api.deps import RunnerDep
from coro.api.errors import errors
from coro.api.openapi import FILE_BYTES
from coro.api.queries import JobFilterDep
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
from coro.state.backend import StoredJob
from coro.state.doc_cache import SizedLru
from coro.system.git import NoCheckout

router = APIRouter(tags=["jobs"])

#: an unknown job; a control its state forbids
CONTROL_ERRORS = errors(404, 409)

#: Bytes of `GET /jobs/:id` answers kept, with the stored text each came from.
ANSWER_CACHE_BYTES = 16 * 1024 * 1024


class JobAnswers:
    """`GET /jobs/:id` answers, encoded once per stored state of a job. A job's answer
    is a function of its stored text alone (but a campaign's, which shows its children's
    jobs too), so it is kept with that text and served again while a fresh read finds
    the very same text: a change by any writer, this process or another, shows at once,
    and nothing needs invalidating."""

    def __init__(self) -> None:
        # the stored text counts about as much as the answer
        self._kept: SizedLru[str, tuple[StoredJob, bytes]] = SizedLru(
            ANSWER_CACHE_BYTES, lambda kept: 2 * len(kept[1])
        )

    def get(self, job_id: str, stored: StoredJob) -> bytes | None:
        kept = self._kept.get(job_id)
        return kept[1] if kept is not None and kept[0] == stored else None

    def keep(self, job_id: str, stored: StoredJob, body: bytes) -> bytes:
        self._kept.put(job_id, (stored, body))
        return body


# 409 `plugin_required` (`missingKind`, `message`): no plugin for what the job needs;
# 502: the tracker failed reading `jiraTicketId`
@router.post("/jobs", status_code=201, responses=errors(409, 502))
async def create_job(runner: RunnerDep, body: CreateJobBody) -> dict[str, Any]:
    job = await runner.jobs.create(body.new_job())
    return {
        "jobId": job.id,
        "type": job.type,
        "status": job.status,
        "streamUrl": f"/jobs/{job.id}/stream",
    }


@router.get("/jobs")
async def list_jobs(runner: RunnerDep, listing: JobFilterDep) -> dict[str, Any]:
    if listing.matches_nothing:
        return listing.page([], 0)
    return listing.page(*await runner.jobs.list(listing.query))


@router.get("/jobs/{job_id}", response_model=dict[str, Any], responses=errors(404))
async def get_job(runner: RunnerDep, request: Request, job_id: str) -> Response:
    """The job with its transcript (a campaign's children also carry their job's
    summary, and `campaignTotals` adds them up)."""
    stored = await runner.store.stored(job_id)
    answers: JobAnswers = request.app.state.job_answers
    body = answers.get(job_id, stored)
    if body is None:
        job = stored.job()
        if job.campaign_children is None:
            body = answers.keep(job_id, stored, to_json(job, by_alias=True))
        else:
            body = to_json(await runner.campaigns.snapshot(job))
    return Response(body, media_type="application/json")


# `/jobs/{job_id}/insights` (list, PATCH, DELETE): coro/api/routes/insights.py


@router.post("/jobs/{job_id}/resume", responses=CONTROL_ERRORS)
async def resume_job(
    runner: RunnerDep, job_id: str, body: Annotated[ResumeBody | None, Body()] = None
) -> dict[str, Any]:
    body = body or ResumeBody()
    job = await runner.jobs.resume(job_id, body.from_phase, body.clear_session)
    return {"resumed": job.id, "status": job.status, "phase": job.phase}


@router.post("/jobs/{job_id}/cancel", responses=CONTROL_ERRORS)
async def cancel_job(
    runner: RunnerDep, job_id: str, body: Annotated[ReasonBody | None, Body()] = None
) -> dict[str, Any]:
    job = await runner.jobs.cancel(job_id, (body or ReasonBody()).reason)
    return {"cancelled": job.id, "status": job.status}


@router.post("/jobs/{job_id}/pause", responses=CONTROL_ERRORS)
async def pause_job(
    runner: RunnerDep, job_id: str, body: Annotated[ReasonBody | None, Body()] = None
) -> dict[str, Any]:
    job = await runner.jobs.pause(job_id, (body or ReasonBody()).reason)
    return {"paused": job.id, "status": job.status, "awaitingEvent": job.awaiting_event}


@router.post("/jobs/{job_id}/message", responses=CONTROL_ERRORS)
async def message_job(runner: RunnerDep, job_id: str, body: MessageBody) -> dict[str, Any]:
    delivery = await runner.jobs.message(job_id, body.message)
    return {"sent": True, "delivery": delivery}


@router.patch("/jobs/{job_id}/interactive", responses=CONTROL_ERRORS)
async def set_interactive(runner: RunnerDep, job_id: str, body: InteractiveBody) -> dict[str, Any]:
    job = await runner.jobs.set_interactive(job_id, body.interactive)
    return {
        "jobId": job.id,
        "interactive": job.interactive,
        "status": job.status,
        "phase": job.phase,
    }


@router.patch("/jobs/{job_id}/phase-overrides", responses=errors(404))
async def set_phase_override(
    runner: RunnerDep, job_id: str, body: PhaseOverrideBody
) -> dict[str, Any]:
    overrides = await runner.jobs.set_phase_override(
        job_id, body.phase, body.model, body.provider, body.clear
    )
    return {"phaseModelOverrides": {k: v.to_json() for k, v in overrides.items()}}


@router.patch("/jobs/{job_id}/budget", responses=errors(404))
async def set_budget(runner: RunnerDep, job_id: str, body: BudgetBody) -> dict[str, Any]:
    job = await runner.jobs.set_budget(job_id, body.max_cost_usd, body.max_tokens)
    return {"jobId": job.id, "budget": job.budget.to_json(), "status": job.status}


@router.post("/jobs/{job_id}/phases/{phase}/rerun", responses=CONTROL_ERRORS)
async def rerun_phase(
    runner: RunnerDep, job_id: str, phase: str, body: Annotated[RerunBody | None, Body()] = None
) -> dict[str, Any]:
    body = body or RerunBody()
    await runner.jobs.rerun_phase(job_id, phase, body.model, body.provider)
    return {"rerunning": True, "phase": phase}


@router.get("/jobs/{job_id}/diff", responses=errors(404, 409))
async def job_diff(
    runner: RunnerDep,
    job_id: str,
    base: Annotated[str | None, Query(max_length=256)] = None,
    head: Annotated[str | None, Query(max_length=256)] = None,
    repo: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    """`{repo, base, head, diff, truncated}`: the unified diff of `work/<jobId>/<repo>`.

    Without `head`, the working tree (untracked files included) against `base` (default
    HEAD; `head: null`); with both, `git diff base head`. `base`/`head` are the resolved
    commit SHAs. `repo` is a directory of the job directory (default: `params.repoSlug`,
    else the only checkout). Cut at 2 MiB (`truncated: true`). 400 bad ref or `repo`,
    404 no checkout."""
    try:
        return await runner.jobs.diff(job_id, base=base, head=head, repo=repo)
    except NoCheckout as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


@router.get(
    "/jobs/{job_id}/artifacts/{artifact_id}/content",
    response_class=Response,
    responses={**FILE_BYTES, **errors(404)},
)
async def artifact_content(runner: RunnerDep, job_id: str, artifact_id: str) -> Response:
    data, content_type = await runner.jobs.artifact_content(job_id, artifact_id)
    return Response(content=data, media_type=content_type)


# 415: the artefact's type cannot be edited; 413: content over 2 MiB
@router.put("/jobs/{job_id}/artifacts/{artifact_id}/content", responses=errors(404))
async def edit_artifact(
    runner: RunnerDep, job_id: str, artifact_id: str, body: ArtifactContentBody
) -> JSONResponse:
    job = await runner.jobs.edit_artifact(job_id, artifact_id, body.content)
    artifact = job.find_artifact(artifact_id)
    return JSONResponse({"artifact": artifact.to_json() if artifact else None})
