"""The runner's OpenAPI document, as the API really answers (issue #13): the error
statuses of every operation with one error schema, and the real content types."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from coro.api.errors import ERROR_DESCRIPTIONS, ErrorBody
from coro.api.security import PUBLIC_PREFIXES, STATE_CHANGING

#: One Server-Sent Event, as OpenAPI 3.1 has a `text/event-stream` schema describe each.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "Its kind; none for a log line"},
        "data": {"type": "string", "description": "Its payload (JSON, or `done`'s status)"},
        "id": {"type": "string", "description": "A log line's index (Last-Event-ID)"},
        "retry": {"type": "integer"},
    },
}

#: A `200` of Server-Sent Events.
SSE_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    }
}

#: A `200` of a file's bytes, typed as its name says.
FILE_BYTES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes (Content-Type from its name)",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def truthful_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, made truthful: invalid requests are 400 `{error, issues}`,
    not FastAPI's 422 shape; and every operation lists the errors the security
    middleware answers before any route runs (403 foreign Host or cross-site, 401
    without the token, 400/413/415 for a state-changing request's body)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components[ErrorBody.__name__] = body
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            statuses = {403}
            default_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
            if default_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
                statuses.add(400)
            if not path.startswith(PUBLIC_PREFIXES):
                statuses.add(401)
            if method.upper() in STATE_CHANGING:
                statuses |= {400, 413, 415}
            for status in sorted(statuses):
                responses.setdefault(str(status), _error_schema(status))
            operation["responses"] = dict(sorted(responses.items()))
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    app.openapi_schema = schema
    return schema


def _error_schema(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}}
        },
    }
