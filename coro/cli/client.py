"""A small synchronous client of the runner's HTTP API, used by the `coro` commands.

- Base URL from `CORO_URL` (default `http://127.0.0.1:3000`).
- `Authorization: Bearer $CORO_API_TOKEN` when that variable is set. Without it, a CLI
  talking to a loopback runner falls back to `apiToken` from the local `config.json`
  (never sent anywhere else: a token must not leak to a foreign server).
- Errors become `ClientError`s; `connect()` turns them into a red message and exit 1.
- `stream_log()` reads `GET /jobs/:id/stream` (SSE), follows `id:` lines and reconnects
  with `Last-Event-ID` when the connection drops, until `event: done`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import typer
from rich.console import Console
from rich.text import Text

DEFAULT_URL = "http://127.0.0.1:3000"
REQUEST_TIMEOUT = 30.0
#: The runner sends a heartbeat every 15 s; silence for this long means a dead link.
STREAM_READ_TIMEOUT = 60.0
MAX_RECONNECTS = 8
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


# --------------------------------------------------------------------------- errors


class ClientError(Exception):
    """Something the CLI reports to the user and exits 1 for."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RunnerUnreachable(ClientError):
    def __init__(self, url: str) -> None:
        super().__init__(
            f"The runner is not reachable at {url} — start it with `coro start` "
            "(or point CORO_URL at a running one)."
        )
        self.url = url


class ApiError(ClientError):
    """The runner answered with an error status (`{"error": ...}` body)."""

    def __init__(self, status: int, error: str, body: Any = None) -> None:
        detail = error
        if isinstance(body, dict):
            issues = body.get("issues")
            if isinstance(issues, list) and issues:
                lines = [
                    f"  - {i.get('path', '?')}: {i.get('message', '')}"
                    for i in issues
                    if isinstance(i, dict)
                ]
                detail = "\n".join([error, *lines])
            elif error == "plugin_required" and isinstance(body.get("message"), str):
                detail = body["message"]  # names what is missing and how to set it up
            elif isinstance(body.get("message"), str) and body["message"] != error:
                detail = f"{error}: {body['message']}"
        if status == 401:
            detail += " (set CORO_API_TOKEN to the runner's apiToken)"
        super().__init__(f"{detail} (HTTP {status})")
        self.status = status
        self.error = error
        self.body = body


class StreamLost(ClientError):
    pass


# --------------------------------------------------------------------------- SSE parsing


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None


@dataclass
class SseParser:
    """Incremental parser of an SSE byte stream already split into lines."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    _touched: bool = False

    def feed(self, line: str) -> SseEvent | None:
        """One line in; an event out when a blank line ends one."""
        if line == "":
            if not self._touched:
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id, self._touched = "", [], None, False
            return event
        if line.startswith(":"):  # comment (heartbeat)
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        else:  # `retry` and unknown fields carry nothing for us
            return None
        self._touched = True
        return None


@dataclass(frozen=True)
class LogLine:
    """One stored log line: `line` is `"<ISO timestamp> <text>"`; `index` is 0-based."""

    index: int
    line: str

    @property
    def timestamp(self) -> str:
        return self.line.split(" ", 1)[0] if " " in self.line else ""

    @property
    def text(self) -> str:
        return self.line.split(" ", 1)[1] if " " in self.line else self.line


@dataclass(frozen=True)
class StreamDone:
    """`event: done`: the job stopped with this status."""

    status: str


StreamItem = LogLine | StreamDone


def reconnect_delay(attempt: int) -> float:
    """0 for the first retry (the server closed cleanly), then exponential up to 5 s."""
    return 0.0 if attempt <= 1 else min(5.0, 0.25 * 2 ** (attempt - 2))


# --------------------------------------------------------------------------- client


def runner_url() -> str:
    url = (os.environ.get("CORO_URL") or DEFAULT_URL).strip().rstrip("/")
    return url if "://" in url else f"http://{url}"  # `localhost:3000` means http


def runner_token(url: str) -> str | None:
    token = os.environ.get("CORO_API_TOKEN")
    if token:
        return token
    if (urlsplit(url).hostname or "").lower() not in _LOOPBACK:
        return None
    raw_home = os.environ.get("CORO_HOME") or str(Path.home() / ".coro")
    try:
        data = json.loads((Path(raw_home).expanduser() / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("apiToken") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


class RunnerClient:
    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.base_url = (base_url or runner_url()).rstrip("/")
        if token is None:
            token = runner_token(self.base_url)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(
                base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
            )
        except httpx.InvalidURL as exc:
            raise ClientError(f"Invalid runner URL {self.base_url!r} (CORO_URL): {exc}") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plain requests ---------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Any = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=json_body, params=params)
        except httpx.TimeoutException as exc:
            raise ClientError(f"The runner at {self.base_url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise RunnerUnreachable(self.base_url) from exc
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    def get(self, path: str, params: Any = None) -> Any:
        return _json(self.request("GET", path, params=params))

    def post(self, path: str, body: Any = None) -> Any:
        return _json(self.request("POST", path, json_body=body if body is not None else {}))

    def content(self, path: str) -> bytes:
        return self.request("GET", path).content

    @staticmethod
    def job_path(job_id: str, *rest: str) -> str:
        return "/".join(["/jobs", quote(job_id, safe=""), *(quote(r, safe="") for r in rest)])

    # --- the log stream ---------------------------------------------------------------

    def stream_log(
        self,
        job_id: str,
        *,
        tail: int | None = None,
        last_event_id: int | None = None,
    ) -> Generator[StreamItem, None, None]:
        """Log lines as they are stored, then `StreamDone` when the job stops.

        Reconnects after a dropped connection (or a server-side close without `done`)
        with `Last-Event-ID`, so no line is repeated or skipped. `tail` applies to the
        first connection only; `last_event_id` starts after that line index.
        """
        path = self.job_path(job_id, "stream")
        last = last_event_id
        attempt = 0
        connected_once = False
        while True:
            headers = {"Accept": "text/event-stream"}
            params: dict[str, int] = {}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            elif tail is not None:
                params["tail"] = tail
            timeout = httpx.Timeout(REQUEST_TIMEOUT, read=STREAM_READ_TIMEOUT)
            try:
                with self._http.stream(
                    "GET", path, headers=headers, params=params, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _api_error(response)
                    connected_once = True
                    parser = SseParser()
                    for raw in response.iter_lines():
                        event = parser.feed(raw)
                        if event is None:
                            continue
                        if event.event == "done":
                            yield StreamDone(event.data)
                            return
                        if event.event != "message":
                            continue
                        index = _index(event.id)
                        if index is not None:
                            if last is not None and index <= last:
                                continue  # already delivered before a reconnect
                            last = index
                        attempt = 0
                        yield LogLine(index if index is not None else -1, event.data)
            except httpx.TransportError as exc:
                if not connected_once and not isinstance(exc, httpx.TimeoutException):
                    raise RunnerUnreachable(self.base_url) from exc
            attempt += 1
            if attempt > MAX_RECONNECTS:
                raise StreamLost(
                    f"Lost the log stream of {job_id} (runner at {self.base_url}); "
                    f"resume with `coro logs {job_id} --follow`"
                )
            time.sleep(reconnect_delay(attempt))


def _index(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise ClientError(
            f"The runner answered {response.request.method} {response.request.url.path} "
            "with something that is not JSON"
        ) from exc


def _api_error(response: httpx.Response) -> ApiError:
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return ApiError(response.status_code, body["error"], body)
    text = response.text.strip()[:300] or response.reason_phrase or "request failed"
    return ApiError(response.status_code, text, body)


# --------------------------------------------------------------------------- CLI glue


def error_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def report_error(message: str) -> None:
    error_console().print(Text(f"Error: {message}", style="bold red"))


@contextlib.contextmanager
def connect(base_url: str | None = None) -> Iterator[RunnerClient]:
    """A client for one command; any `ClientError` prints in red and exits 1."""
    try:
        with RunnerClient(base_url) as client:
            yield client
    except RunnerUnreachable as exc:
        error_console().print(Text(exc.message, style="yellow"))
        raise typer.Exit(1) from None
    except ClientError as exc:
        report_error(exc.message)
        raise typer.Exit(1) from None
