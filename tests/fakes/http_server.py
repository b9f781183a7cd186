"""The HTTP part every loopback fake shares: a real HTTP/1.1 server on 127.0.0.1.

Hand-written on asyncio streams, so it is listening as soon as `async with` returns
(nothing to poll for). `LoopbackServer` accepts connections (keep-alive), parses each
request (request line, headers, a `Content-Length` or chunked body: JSON, else its
text; its bytes and the request target as sent are kept too), records it in `requests`
(`wait_for_requests` blocks on that, `mark`/`since` slice it), answers it and, on exit,
hangs up on every client and waits for their handlers to end.

A fake subclasses one of:

* `LoopbackServer` and answers in `handle(request) -> Answer` (or overrides `respond`
  to write the answer itself, e.g. a chunked stream, as the OpenAI fake does);
* `ForgeServer` (the GitHub and Bitbucket fakes): `respond_once(method, path, Answer)`
  by exact path and `fail_next`, both answered before `handle`;
  `requests_to(path, method)` by exact path;
* `TrackerServer` (the Jira and GitHub-issues fakes): `respond_once(method, regex,
  status, body, headers=, content_type=)`, answered where `handle` calls
  `take_scripted` (after authentication); `requests_to(suffix)`.

Answers: `Answer(status, body, headers, raw, content_type)` — a JSON body (a `str` body
with a non-JSON `content_type` is sent as text, `bytes` or `raw` verbatim); 204 and 304
carry no body and no content headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, unquote, urlsplit


@dataclass
class RecordedRequest:
    method: str
    path: str  # decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, the raw text if it is not JSON, or None
    status: int = 0  # what the fake answered
    target: str = ""  # the request target exactly as sent (path and query, not decoded)
    raw: bytes = field(default=b"", repr=False)  # the body's bytes (de-chunked, as sent)

    @property
    def conditional(self) -> bool:
        return "if-none-match" in self.headers


@dataclass
class Answer:
    status: int
    body: Any = None  # JSON; None: no body (see the module docstring for text and bytes)
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent verbatim instead of `body` (broken responses)
    content_type: str | None = None  # None: the server's `json_type`


REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Request Entity Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Site Overloaded",
}
_NO_BODY = frozenset({204, 304})


def etag_of(body: Any) -> str:
    """A weak ETag computed from a body, as GitHub does (pagination links not included)."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    return f'W/"{digest}"'


def not_modified(request: RecordedRequest, etag: str) -> bool:
    presented = request.headers.get("if-none-match", "")
    return any(tag.strip() == etag for tag in presented.split(",") if tag.strip())


class Clock:
    """Deterministic timestamps: each event one minute after the previous one."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2024, 5, 1, 9, 0, tzinfo=UTC)

    def tick(self) -> datetime:
        self._now += timedelta(minutes=1)
        return self._now


class LoopbackServer:
    """HTTP/1.1 with keep-alive on 127.0.0.1; subclasses answer in `handle`."""

    #: The content type of JSON answers (an `Answer` without its own `content_type`).
    json_type: ClassVar[str] = "application/json; charset=utf-8"
    #: What each request is recorded as (a subclass may add properties).
    request_type: ClassVar[type[RecordedRequest]] = RecordedRequest

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self.errors: list[Exception] = []  # exceptions raised while answering
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._arrived = asyncio.Condition()
        self._scripted: list[tuple[str, Callable[[str], object], Answer]] = []
        self._failures: list[int] = []

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root

    # -- test API --

    def mark(self) -> int:
        """The number of requests so far; `since(mark)` lists the ones after it."""
        return len(self.requests)

    def since(self, mark: int) -> list[RecordedRequest]:
        return self.requests[mark:]

    async def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Block until the server has received `count` requests (an event, not a poll)."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    # -- one-shot answers --

    def script(self, method: str, matches: Callable[[str], object], answer: Answer) -> None:
        """Answer the next `method` request whose path `matches` with `answer`."""
        self._scripted.append((method.upper(), matches, answer))

    def take_scripted(self, request: RecordedRequest) -> Answer | None:
        """The one-shot answer for `request`: an injected failure, else the first
        scripted answer that matches it (used up either way); None if there is none."""
        if self._failures:
            status = self._failures.pop(0)
            return Answer(status, {"message": "Server Error"})
        for index, (method, matches, answer) in enumerate(self._scripted):
            if method == request.method and matches(request.path):
                del self._scripted[index]
                return answer
        return None

    # -- lifecycle --

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Hang up on every client rather than cancelling handlers: each one then sees
        # EOF and ends normally.
        for writer in self._connections.values():
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    # -- answering (what subclasses override) --

    async def handle(self, request: RecordedRequest) -> Answer:
        """A fake's routes; the base knows none (fakes that stream override `respond`)."""
        return Answer(404, {"message": f"no route for {request.method} {request.path}"})

    async def answer(self, request: RecordedRequest) -> Answer:
        """`handle`'s answer; a bug in the fake is answered 500 and kept in `errors`."""
        try:
            return await self.handle(request)
        except Exception as exc:
            self.errors.append(exc)
            return Answer(500, {"message": f"fake server error: {exc!r}"})

    async def respond(
        self, request: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer `request` on `writer`; False closes the connection afterwards."""
        answer = await self.answer(request)
        request.status = answer.status
        await self.send(writer, answer)
        return True

    def server_headers(self) -> dict[str, str]:
        """Headers sent with every answer (request ids and the like)."""
        return {}

    # -- the wire --

    async def send(self, writer: asyncio.StreamWriter, answer: Answer) -> None:
        content_type = answer.content_type or self.json_type
        payload = b"" if answer.status in _NO_BODY else _payload(answer, content_type)
        fields: list[tuple[str, str]] = []
        if payload:
            fields.append(("content-type", content_type))
        if answer.status not in _NO_BODY:
            fields.append(("content-length", str(len(payload))))
        fields += answer.headers.items()
        writer.write(self._head(answer.status, fields) + payload)
        await writer.drain()

    async def send_stream_head(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The head of a chunked answer; `send_chunk` sends its parts, `b""` ends it."""
        fields = [("content-type", content_type), ("transfer-encoding", "chunked")]
        fields += (headers or {}).items()
        writer.write(self._head(status, fields))
        await writer.drain()

    async def send_chunk(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    def _head(self, status: int, fields: Iterable[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in fields]
        lines += [f"{name}: {value}" for name, value in self.server_headers().items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            # Only now: `__aexit__` waits for every task still registered here.
            self._connections.pop(task, None)

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        data = await _read_body(reader, headers)
        body: Any = None
        if data:
            try:
                body = json.loads(data)
            except ValueError:
                body = data.decode("utf-8", "replace")
        split = urlsplit(target)
        request = self.request_type(
            method.upper(),
            unquote(split.path),
            dict(parse_qsl(split.query)),
            headers,
            body,
            target=target,
            raw=data,
        )
        async with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
        keep_alive = await self.respond(request, reader, writer)
        return keep_alive and headers.get("connection", "").lower() != "close"


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """A request body: `Content-Length` bytes, or a chunked one put together."""
    if headers.get("transfer-encoding", "").lower() != "chunked":
        length = int(headers.get("content-length", "0"))
        return await reader.readexactly(length) if length else b""
    data = b""
    while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
        data += await reader.readexactly(size)
        await reader.readline()
    await reader.readline()  # the blank line after the last chunk
    return data


def _payload(answer: Answer, content_type: str) -> bytes:
    if answer.raw is not None:
        return answer.raw
    body = answer.body
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str) and not content_type.startswith("application/json"):
        return body.encode()
    return json.dumps(body).encode()


class ForgeServer(LoopbackServer):
    """The test API of the forge fakes: one-shot answers (`respond_once`, `fail_next`)
    come before `handle`, matched by exact path."""

    def respond_once(self, method: str, path: str, answer: Answer) -> None:
        """Answer the next `method path` (path without the query) with `answer`."""
        self.script(method, lambda candidate: candidate == path, answer)

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        """The next `times` requests fail with `status` (a 5xx, before authentication)."""
        self._failures += [status] * times

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]

    async def answer(self, request: RecordedRequest) -> Answer:
        scripted = self.take_scripted(request)
        return scripted if scripted is not None else await super().answer(request)


class TrackerServer(LoopbackServer):
    """The test API of the tracker fakes: one-shot answers matched by a regex searched
    in the path, given where `handle` calls `take_scripted` (after authentication)."""

    def respond_once(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        """Answer the next `method` request whose path `path` (a regex) is found in.
        A `str` body with a non-JSON `content_type` is sent as text."""
        answer = Answer(status, body, dict(headers or {}), content_type=content_type)
        self.script(method, re.compile(path).search, answer)

    def requests_to(self, suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(suffix)]
