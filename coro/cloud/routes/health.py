"""`GET /health`: liveness and database reachability (503 when the database is not)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from coro.cloud.deps import ServicesDep
from coro.cloud.models import HealthOut
from coro.version import __version__

router = APIRouter(tags=["system"])


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "The database is unreachable"}},
)
async def health(found: ServicesDep) -> JSONResponse:
    reachable = await found.db.ping()
    body = HealthOut(
        status="ok" if reachable else "unavailable",
        version=__version__,
        database="ok" if reachable else "unreachable",
        error=None if reachable else "Database unreachable",
    )
    return JSONResponse(
        body.model_dump(by_alias=True, exclude_none=True), status_code=200 if reachable else 503
    )
