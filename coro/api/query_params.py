"""One value per single-valued query parameter, for the runner's and the cloud's APIs.

FastAPI takes the last of `?type=a&type=b` for a parameter declared as one string, so a
request the OpenAPI document does not allow would be answered as if it were another
one. This app-wide dependency refuses it with 400 instead, naming the parameter; which
parameters take several values is read from the app's own OpenAPI document, so it
always agrees with what the document says.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection


class OneValueEach:
    """The dependency (one per app): `RequestValidationError` (400 `query.<name>`) for a
    single-valued query parameter given more than once."""

    def __init__(self) -> None:
        self._single: dict[tuple[str, str], frozenset[str]] = {}

    async def __call__(self, request: HTTPConnection) -> None:
        # (an HTTPConnection: the app's WebSocket routes get this dependency as well)
        route = request.scope.get("route")
        if not isinstance(route, APIRoute) or not request.url.query:
            return
        counts = Counter(name for name, _ in request.query_params.multi_items())
        repeated = [name for name, count in counts.items() if count > 1]
        if not repeated:
            return
        single = self._single_valued(request.app, route.path_format, request.scope["method"])
        errors = [
            {"loc": ("query", name), "msg": "must be given at most once", "type": "value_error"}
            for name in repeated
            if name in single
        ]
        if errors:
            raise RequestValidationError(errors)

    def _single_valued(self, app: FastAPI, path: str, method: str) -> frozenset[str]:
        key = (path, method)
        if key not in self._single:
            operation = app.openapi().get("paths", {}).get(path, {}).get(method.lower(), {})
            self._single[key] = frozenset(
                p["name"]
                for p in operation.get("parameters", [])
                if p.get("in") == "query" and not _takes_several(p.get("schema", {}))
            )
        return self._single[key]


def _takes_several(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "array":
        return True
    return any(_takes_several(option) for option in schema.get("anyOf", []))
