"""The error bodies of Coro's HTTP APIs (the runner's and the cloud's, SPEC §2):
`{"error": "<message>"}` plus optional fields, with a meaningful status."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route


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


def allowed_methods(request: Request) -> list[str]:
    """The methods of every route matching the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**request.scope, "method": "GET"})
            if match != Match.NONE:
                methods |= route.methods
    return sorted(methods)


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
