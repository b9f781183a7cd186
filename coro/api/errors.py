"""The error bodies of Coro's HTTP APIs (the runner's and the cloud's, SPEC §2):
`{"error": "<message>"}` plus optional fields, with a meaningful status."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

#: What each error status means, as the OpenAPI documents say it.
ERROR_DESCRIPTIONS = {
    400: "Invalid request: a malformed body or parameter (`issues` names each failing field)",
    401: "Missing or invalid API token (when `apiToken` is configured)",
    403: "Refused: a foreign Host (DNS rebinding) or a cross-site state-changing request",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Unsupported content type",
    422: "Understood, but refused on its content (the body says why)",
    502: "An upstream service (git, the SCM or tracker provider, the team cloud) failed",
    503: "Not available now (the body's `reason` says why)",
    504: "An upstream service (git) timed out",
}


class Issue(BaseModel):
    path: str = Field(description="Where: a body field's dotted path, or `query.<name>` etc.")
    message: str = Field(description="The rule it breaks (never the value sent)")


class ErrorBody(BaseModel):
    """Every error answer; some carry more fields (e.g. `missingKind` for a 409
    `plugin_required`)."""

    model_config = ConfigDict(extra="allow", title="Error")

    error: str
    reason: str | None = Field(default=None, description="A machine-readable cause")
    issues: list[Issue] | None = Field(default=None, description="For invalid requests")


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer."""
    return {s: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


def error_response(status: int, error: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, **extra}, status_code=status)


def invalid_request(exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON, or one naming each failing field (`issues`:
    path and rule, never the value sent)."""
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return error_response(400, "Malformed JSON body")
    issues = _issues(exc)
    summary = "; ".join(f"{i['path']}: {i['message']}" for i in issues[:5])
    return error_response(400, f"Invalid request: {summary}", issues=issues)


def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, method not allowed) in the same shape."""
    message = exc.detail if isinstance(exc.detail, str) else "Request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = f"No route for {request.method} {request.url.path}"
    response = error_response(exc.status_code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        # Starlette names only the methods of the first route on the path; RFC 9110
        # wants every method the resource has
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


#: The methods a 405's `Allow` may name.
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers on the request's path. Asked of the routes
    themselves, one method at a time: FastAPI keeps an included router as one route
    (its own routes are not in `app.router.routes`)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]


def _issues(exc: RequestValidationError) -> list[dict[str, str]]:
    issues = []
    for item in exc.errors():
        loc = [str(p) for p in item.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            where, rest = loc[0], loc[1:]
            path = ".".join(rest) or where
            path = f"{where}.{path}" if where != "body" else path
        else:
            path = ".".join(loc) or "(root)"
        issues.append({"path": path, "message": str(item.get("msg", "invalid"))})
    return issues
