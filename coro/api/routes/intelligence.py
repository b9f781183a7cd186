"""Intelligence endpoints (SPEC §2.4): workflows, layers, files, preflight, proposals."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from coro.api.deps import RunnerDep
from coro.api.errors import errors
from coro.domain.paths import MAX_PATH_LENGTH, check_relative_path
from coro.intelligence.catalogue import (
    LayerRefused,
    check_writable,
    delete_file,
    describe_layers,
    file_view,
    write_file,
)
from coro.intelligence.layers import LAYOUT, LayerStack
from coro.intelligence.preflight import Checker, PathRefused, check_artefact_path, preflight
from coro.state.proposals import ProposalStatus

LOCAL_TENANT = "local"

router = APIRouter(tags=["intelligence"])


@router.get("/workflows")
async def list_workflows(
    runner: RunnerDep, kind: Literal["job", "campaign", "internal"] | None = None
) -> dict[str, Any]:
    """Every usable workflow across the layers; `source` is the layer that wins and
    `overrides` the lower layers it shadows."""
    stack = await _stack(runner, None)
    workflows = await asyncio.to_thread(stack.list_workflows, kind, detail=True)
    return {"workflows": workflows, "total": len(workflows)}


# --- layers and files (SPEC §2.4) ------------------------------------------------------

JobIdQuery = Annotated[str | None, Query(alias="jobId", min_length=1, max_length=200)]
PathQuery = Annotated[str, Query(min_length=1, max_length=MAX_PATH_LENGTH)]
LayerQuery = Annotated[str, Query(max_length=300)]


class FileWriteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=MAX_PATH_LENGTH)
    content: str
    layer: str = Field(default="tenant", max_length=300)


class PreflightBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=MAX_PATH_LENGTH)
    content: str


async def _stack(runner: RunnerDep, job_id: str | None, *, force: bool = False) -> LayerStack:
    """The runner's layers (refreshing the tenant remote when due), plus the repository
    layers of `job_id` when given."""
    layers = runner.env.layers
    await layers.refresh(force=force)
    if job_id is None:
        return await asyncio.to_thread(layers.stack)
    job = await runner.store.get(job_id)
    return await asyncio.to_thread(layers.for_job, job, runner.env.workdir(job_id))


def _refused(exc: LayerRefused | PathRefused | ValueError) -> HTTPException:
    status = exc.status if isinstance(exc, LayerRefused) else 400
    return HTTPException(status, str(exc))


def _read_path(path: str) -> str:
    """A path to read: relative, no `..`, inside the layers' layout."""
    if path.startswith("/") or ".." in path.replace("\\", "/").split("/"):
        raise HTTPException(400, "path must be relative and may not contain '..'")
    try:
        relative = check_relative_path(path)
    except ValueError as exc:
        raise _refused(exc) from None
    if relative.split("/", 1)[0] not in LAYOUT or "/" not in relative:
        raise HTTPException(400, f"path must be inside one of: {', '.join(LAYOUT)}")
    return relative


def _checker(runner: RunnerDep, stack: LayerStack) -> Checker:
    return Checker.create(stack, runner.env.tools.names(), runner.env.executors.ids())


@router.get("/intelligence/layers", responses=errors(404))
async def intelligence_layers(
    runner: RunnerDep, job_id: JobIdQuery = None, refresh: bool = False
) -> dict[str, Any]:
    """The layers, lowest first, with file counts per kind, and every file with the
    layers that have it and the one that wins. `?refresh=true` fetches the tenant
    remote now; `?jobId=` adds that job's repository layers."""
    stack = await _stack(runner, job_id, force=refresh)
    return await asyncio.to_thread(describe_layers, stack, runner.env.layers.remote)


@router.get("/intelligence/file", responses=errors(404))
async def get_intelligence_file(
    runner: RunnerDep,
    path: PathQuery,
    layer: Annotated[str | None, Query(max_length=300)] = None,
    job_id: JobIdQuery = None,
) -> dict[str, Any]:
    relative = _read_path(path)
    stack = await _stack(runner, job_id)
    try:
        return await asyncio.to_thread(file_view, stack, relative, layer)
    except (LayerRefused, ValueError) as exc:
        raise _refused(exc) from None


# 403 the base layer; 409 a remote or repository layer; 422 the preflight's issues
@router.put("/intelligence/file", responses=errors(409, 422))
async def put_intelligence_file(runner: RunnerDep, body: FileWriteBody, force: bool = False) -> Any:
    """Write a file of the tenant layer (atomically). Workflow, agent and skill files
    are preflighted first (422 with the issues) unless `?force=true`."""
    layers = runner.env.layers
    try:
        check_writable(body.layer, layers.remote)
        relative, kind = check_artefact_path(body.path)
    except (LayerRefused, PathRefused) as exc:
        raise _refused(exc) from None
    warnings: list[str] = []
    if not force:
        stack = await _stack(runner, None)
        result = await asyncio.to_thread(preflight, relative, body.content, _checker(runner, stack))
        if not result.ok:
            first = result.errors[0].text()
            return JSONResponse(
                {"error": f"validation failed: {first}", **result.to_json()}, status_code=422
            )
        warnings = result.to_json()["warnings"]
    try:
        size, created = await asyncio.to_thread(
            write_file, layers.tenant_dir, relative, body.content
        )
    except ValueError as exc:
        raise _refused(exc) from None
    return {
        "layer": "tenant",
        "path": relative,
        "kind": kind,
        "bytes": size,
        "created": created,
        "warnings": warnings,
    }


@router.delete("/intelligence/file", responses=errors(404, 409))
async def delete_intelligence_file(
    runner: RunnerDep, path: PathQuery, layer: LayerQuery = "tenant"
) -> dict[str, Any]:
    """Remove a tenant override: the next lower layer's file (if any) wins again."""
    layers = runner.env.layers
    try:
        check_writable(layer, layers.remote)
        relative, _ = check_artefact_path(path)
        deleted = await asyncio.to_thread(delete_file, layers.tenant_dir, relative)
    except (LayerRefused, PathRefused, ValueError) as exc:
        raise _refused(exc) from None
    if not deleted:
        raise HTTPException(404, "File not found in tenant layer")
    stack = await _stack(runner, None)
    remaining = await asyncio.to_thread(stack.with_file, relative)
    return {
        "layer": "tenant",
        "path": relative,
        "deleted": True,
        "revertedTo": remaining[0].name if remaining else None,
    }


@router.post("/intelligence/preflight")
async def preflight_intelligence_file(runner: RunnerDep, body: PreflightBody) -> dict[str, Any]:
    """Check a file without saving it: `{path, kind, ok, issues, errors, warnings}`."""
    stack = await _stack(runner, None)
    try:
        result = await asyncio.to_thread(
            preflight, body.path, body.content, _checker(runner, stack)
        )
    except PathRefused as exc:
        raise _refused(exc) from None
    return result.to_json()


@router.get("/proposals")
async def list_proposals(
    runner: RunnerDep,
    status: ProposalStatus | None = None,
    tenant_id: Annotated[str, Query(alias="tenantId", max_length=200)] = LOCAL_TENANT,
) -> dict[str, Any]:
    proposals = await runner.backend.proposals.list(status, tenant_id)
    return {
        "tenantId": tenant_id,
        "count": len(proposals),
        "proposals": [p.summary() for p in proposals],
    }
