"""The team page: `coro cloud` serves it at `/`.

The page (`coro/dashboard/static/cloud/`) is plain ES modules like the runner's
dashboard and imports the runner dashboard's modules (`/js/…`, `/vendor/…`,
`/app.css`), so both are served from the same package folder. Only those exact
prefixes are mounted: the API (`/auth`, `/teams`, `/ws`, `/webhook`, `/health`,
`/openapi.json`) is never shadowed.

Every file goes out with a strict Content-Security-Policy (scripts only from this
origin, no inline script, no framing): the page holds a session's tokens, so markup
smuggled into a job's text must never run.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(str(files("coro.dashboard") / "static"))
#: the folders of the package's static files the page loads, each at its own prefix
SHARED = ("js", "vendor", "cloud")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
        # the shared components set a few style attributes
        "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class PageFiles(StaticFiles):
    """Static files with the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def _file(path: Path, media_type: str) -> FileResponse:
    return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)


async def index() -> FileResponse:
    # no-cache: a new release's page is picked up at the next visit
    response = _file(STATIC / "cloud" / "index.html", "text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


async def stylesheet() -> FileResponse:
    return _file(STATIC / "app.css", "text/css; charset=utf-8")


def mount_dashboard(app: FastAPI) -> None:
    """Serve the team page at `/` and the files it loads at their own prefixes."""
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/app.css", stylesheet, methods=["GET"], include_in_schema=False)
    for folder in SHARED:
        app.mount(f"/{folder}", PageFiles(directory=STATIC / folder), name=f"page-{folder}")
