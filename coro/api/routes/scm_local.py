"""`/scm/local/…`: the offline `local` SCM's repositories and pull requests (SPEC §4.7),
reviewed from the CLI (`coro pr …`) and the dashboard."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn

from fastapi import APIRouter, Body, HTTPException, Path, Query
from pydantic import Field

from coro.api.deps import RunnerDep
from coro.api.errors import errors
from coro.api.schemas import Body as RequestBody
from coro.domain.errors import PluginError, PluginNotFoundError
from coro.plugins.scm.local import (
    MAX_COMMENT_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_PERSON_CHARS,
    LocalScm,
)

#: every route: 404 also while the local SCM is disabled; 400, 503 and 504 are the local
#: SCM's own errors (`_fail`)
router = APIRouter(tags=["scm"], responses=errors(400, 404, 503, 504))

#: Who approves or comments when the request does not say.
DEFAULT_PERSON = "developer"
#: Statuses a plugin error keeps; anything else is reported as a bad request.
_KEPT_STATUSES = frozenset({400, 404, 409, 503, 504})

PrId = Annotated[int, Path(alias="prId", ge=1, le=2**53)]
PersonName = Annotated[str, Field(min_length=1, max_length=MAX_PERSON_CHARS)]


class CreateRepoBody(RequestBody):
    name: str = Field(min_length=1, max_length=MAX_PERSON_CHARS)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)


class ApproveBody(RequestBody):
    reviewer: PersonName | None = None


class CommentBody(RequestBody):
    body: str = Field(min_length=1, max_length=MAX_COMMENT_CHARS)
    author: PersonName | None = None
    in_reply_to: int | None = Field(default=None, ge=1, le=2**53)


class MergeBody(RequestBody):
    message: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


def _scm(runner: Any) -> LocalScm:
    plugin = runner.plugins.get("scm", "local")
    if plugin is None:
        raise HTTPException(404, "The local SCM is disabled")
    if not isinstance(plugin, LocalScm):
        raise HTTPException(404, "The local SCM is not available")
    return plugin


def _fail(exc: PluginError) -> NoReturn:
    if isinstance(exc, PluginNotFoundError):
        status = 404
    else:
        status = exc.status if exc.status in _KEPT_STATUSES else 400
    raise HTTPException(status, str(exc)) from exc


@router.get("/scm/local/repos")
async def list_repos(runner: RunnerDep) -> dict[str, Any]:
    scm = _scm(runner)
    try:
        return {"repos": await scm.list_repos()}
    except PluginError as exc:
        _fail(exc)


@router.post("/scm/local/repos", status_code=201, responses=errors(409))
async def create_repo(runner: RunnerDep, body: CreateRepoBody) -> dict[str, Any]:
    scm = _scm(runner)
    try:
        return await scm.create_repo(body.name, description=body.description)
    except PluginError as exc:
        _fail(exc)


@router.get("/scm/local/prs")
async def list_prs(
    runner: RunnerDep,
    repo: Annotated[str | None, Query(min_length=1, max_length=MAX_PERSON_CHARS)] = None,
    state: Literal["open", "merged", "declined"] | None = None,
) -> dict[str, Any]:
    scm = _scm(runner)
    try:
        return {"pullRequests": await scm.list_prs(repo=repo, state=state)}
    except PluginError as exc:
        _fail(exc)


@router.get("/scm/local/prs/{prId}")
async def get_pr(runner: RunnerDep, pr_id: PrId) -> dict[str, Any]:
    scm = _scm(runner)
    try:
        return await scm.get_pr(pr_id)
    except PluginError as exc:
        _fail(exc)


@router.post("/scm/local/prs/{prId}/approve", responses=errors(409))
async def approve_pr(
    runner: RunnerDep, pr_id: PrId, body: Annotated[ApproveBody | None, Body()] = None
) -> dict[str, Any]:
    scm = _scm(runner)
    reviewer = (body.reviewer if body else None) or DEFAULT_PERSON
    try:
        return await scm.approve(pr_id, reviewer)
    except PluginError as exc:
        _fail(exc)


@router.post("/scm/local/prs/{prId}/comments", status_code=201, responses=errors(409))
async def comment_pr(runner: RunnerDep, pr_id: PrId, body: CommentBody) -> dict[str, Any]:
    scm = _scm(runner)
    try:
        return await scm.comment(
            pr_id, body.body, body.author or DEFAULT_PERSON, in_reply_to=body.in_reply_to
        )
    except PluginError as exc:
        _fail(exc)


@router.post("/scm/local/prs/{prId}/merge", responses=errors(409))
async def merge_pr(
    runner: RunnerDep, pr_id: PrId, body: Annotated[MergeBody | None, Body()] = None
) -> dict[str, Any]:
    scm = _scm(runner)
    try:
        result = await scm.merge_pr(pr_id, message=body.message if body else None)
        if not result.merged:
            raise HTTPException(409, result.message or f"pull request #{pr_id} was not merged")
        pull_request = await scm.get_pr(pr_id, diff=False)
    except PluginError as exc:
        _fail(exc)
    return {
        "merged": True,
        "sha": result.sha,
        "message": result.message,
        "pullRequest": pull_request,
    }


@router.post("/scm/local/prs/{prId}/decline", responses=errors(409))
async def decline_pr(runner: RunnerDep, pr_id: PrId) -> dict[str, Any]:
    scm = _scm(runner)
    try:
        return await scm.decline(pr_id)
    except PluginError as exc:
        _fail(exc)
