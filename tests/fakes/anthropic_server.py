"""A loopback fake of the Anthropic Messages API that speaks the real wire format.

A real HTTP/1.1 server on 127.0.0.1 (asyncio streams, keep-alive, chunked event
streams), listening as soon as `async with FakeAnthropic()` returns. Tests queue what
the "model" does next and read back every request the server received:

    async with FakeAnthropic(api_key="sk-ant-test") as fake:
        fake.queue(
            Reply([Text("Writing it."), ToolUse("file_write", {"path": "a", "content": "x"})]),
            Reply([Text("Done.")], usage=Usage(input_tokens=12, cache_read_input_tokens=900)),
        )
        ...  # point the SDK at fake.base_url
        assert fake.message_requests[1].body["messages"][-1]["content"][0]["type"] == "tool_result"

`POST /v1/messages` with `"stream": true` answers `text/event-stream` with the real event
sequence: `message_start` (usage with the cache counters), `ping`, per content block
`content_block_start` / `content_block_delta` (`text_delta`, `thinking_delta` +
`signature_delta`, `input_json_delta` split across several deltas) / `content_block_stop`,
`message_delta` (`stop_reason`, output usage), `message_stop`. Without `stream` the same
reply comes back as one Message object. Errors use the API's JSON shape
`{"type": "error", "error": {"type", "message"}, "request_id"}`, its statuses and headers
(`retry-after`, `anthropic-ratelimit-*-reset`); `Reply(error_after=...)` sends an
`event: error` in the middle of a 200 stream, as the API does when it overloads
mid-generation. `GET /v1/models` lists models and `POST /v1/messages/count_tokens`
counts roughly. A queued callable gets the `RecordedRequest` and returns the reply, for
scripts that depend on what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

# --- what tests queue ---------------------------------------------------------------


@dataclass
class Text:
    text: str


@dataclass
class Thinking:
    thinking: str
    signature: str = "fake-signature"


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"toolu_{secrets.token_hex(12)}")
    raw_json: str | None = None  # sent verbatim instead of json.dumps(input)


Block = Text | Thinking | ToolUse


@dataclass
class Usage:
    input_tokens: int = 25
    output_tokens: int = 12
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


@dataclass
class ErrorReply:
    status: int
    type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Reply:
    """One assistant message, streamed (or returned whole to a non-streaming request)."""

    content: list[Block] = field(default_factory=lambda: [Text("Done.")])
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None  # default: "tool_use" if a ToolUse is present, else "end_turn"
    model: str | None = None  # the model the message reports (default: the requested one)
    fragment: int = 7  # size of the text / thinking / JSON pieces of the deltas
    hold: bool = False  # after message_start, keep the stream open until `release` is set
    error_after: ErrorReply | None = None  # an `event: error` after the content blocks

    @property
    def final_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.content) else "end_turn"


def text(value: str, **kwargs: Any) -> Reply:
    return Reply([Text(value)], **kwargs)


def tools(*calls: ToolUse, say: str | None = None, **kwargs: Any) -> Reply:
    content: list[Block] = [Text(say)] if say else []
    return Reply([*content, *calls], **kwargs)


Scripted = Reply | ErrorReply | Callable[["RecordedRequest"], "Reply | ErrorReply"]


# --- error replies as the API sends them --------------------------------------------


def invalid_request(message: str) -> ErrorReply:
    return ErrorReply(400, "invalid_request_error", message)


def prompt_too_long(tokens: int = 1_048_577, limit: int = 1_000_000) -> ErrorReply:
    return invalid_request(f"prompt is too long: {tokens} tokens > {limit} maximum")


def authentication_error(presented: str = "") -> ErrorReply:
    # The real API never echoes the key; a careless proxy might, so this one does: no
    # message a client shows from it may contain the key.
    return ErrorReply(401, "authentication_error", f"invalid x-api-key: {presented}")


def permission_error() -> ErrorReply:
    return ErrorReply(
        403, "permission_error", "Your API key does not have permission to use this resource."
    )


def not_found(model: str) -> ErrorReply:
    return ErrorReply(404, "not_found_error", f"model: {model}")


def rate_limited(retry_after: float | None = 1, reset_in: float | None = None) -> ErrorReply:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    if reset_in is not None:
        reset = datetime.now(UTC) + timedelta(seconds=reset_in)
        headers["anthropic-ratelimit-requests-reset"] = reset.isoformat().replace("+00:00", "Z")
        headers["anthropic-ratelimit-requests-remaining"] = "0"
    return ErrorReply(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests "
        "per minute. Please reduce the prompt length or the maximum tokens requested, or "
        "try again later.",
        headers,
    )


def overloaded() -> ErrorReply:
    return ErrorReply(529, "overloaded_error", "Overloaded")


def api_error(status: int = 500) -> ErrorReply:
    return ErrorReply(status, "api_error", "Internal server error")


def unavailable() -> ErrorReply:
    return ErrorReply(503, "api_error", "Service Unavailable")


# --- what the server saw ------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None

    @property
    def api_key(self) -> str | None:
        """The credential presented, from `x-api-key` or `Authorization: Bearer`."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.body.get("tools", [])) if isinstance(self.body, dict) else []

    @property
    def system(self) -> list[dict[str, Any]]:
        """The system prompt as blocks (a plain string becomes one text block)."""
        system = self.body.get("system") if isinstance(self.body, dict) else None
        if isinstance(system, str):
            return [{"type": "text", "text": system}]
        return list(system or [])

    def blocks(self, kind: str) -> list[dict[str, Any]]:
        """Every content block of `kind` in the request's messages, in order."""
        found = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, list):
                found += [b for b in content if isinstance(b, dict) and b.get("type") == kind]
        return found


# --- the server ---------------------------------------------------------------------

DEFAULT_MODELS = (
    ("claude-sonnet-5-5", "Claude Sonnet 5.5"),
    ("claude-opus-5-5", "Claude Opus 5.5"),
    ("claude-haiku-5-5", "Claude Haiku 5.5"),
)


class FakeAnthropic:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: tuple[tuple[str, str], ...] = DEFAULT_MODELS,
    ) -> None:
        self.api_key = api_key  # None: any credential (or none) is accepted
        self.models = models
        self.requests: list[RecordedRequest] = []
        self.models_error: ErrorReply | None = None  # answer GET /v1/models with this
        self.release = asyncio.Event()  # lets held streams go on
        self.holding = asyncio.Event()  # set while a stream is held after message_start
        self._script: list[Scripted] = []
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._counter = 0
        self.port = 0

    # -- test API --

    @property
    def base_url(self) -> str:
        """What the SDK takes as `base_url` (it appends `/v1/...`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/messages"]

    def queue(self, *replies: Scripted) -> None:
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        return len(self._script)

    async def wait_for_requests(self, count: int, path: str = "/v1/messages") -> None:
        """Block until `count` requests to `path` arrived (an event, not a poll)."""
        async with self._arrived:
            await self._arrived.wait_for(
                lambda: sum(r.path == path for r in self.requests) >= count
            )

    # -- lifecycle --

    async def __aenter__(self) -> FakeAnthropic:
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
        self.release.set()
        # Hang up rather than cancel: a cancelled connection task makes asyncio log an
        # error from its stream callback.
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    # -- HTTP --

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._connections.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        line = await reader.readline()
        if not line.strip():
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        data = await _read_body(reader, headers)
        try:
            body = json.loads(data) if data else None
        except json.JSONDecodeError:
            body = None
        path, _, query = target.partition("?")
        request = RecordedRequest(method, path, query, headers, body)
        async with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
        keep_alive = headers.get("connection", "").lower() != "close"

        denied = self._check_key(request)
        if denied is not None:
            await self._send_error(writer, denied)
        elif method == "GET" and path == "/v1/models":
            await self._models(writer, query)
        elif method == "POST" and path == "/v1/messages/count_tokens":
            size = len(json.dumps(body)) if body is not None else 0
            await self._send_json(writer, 200, {"input_tokens": max(1, size // 4)})
        elif method == "POST" and path == "/v1/messages":
            keep_alive = await self._messages(reader, writer, request) and keep_alive
        else:
            await self._send_error(
                writer, ErrorReply(404, "not_found_error", f"Not found: {method} {path}")
            )
        return keep_alive

    def _check_key(self, request: RecordedRequest) -> ErrorReply | None:
        if self.api_key is None:
            return None
        presented = request.api_key or ""
        return None if presented == self.api_key else authentication_error(presented)

    async def _models(self, writer: asyncio.StreamWriter, query: str) -> None:
        if self.models_error is not None:
            await self._send_error(writer, self.models_error)
            return
        limit = len(self.models)
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == "limit" and value.isdigit():
                limit = int(value)
        data = [
            {
                "type": "model",
                "id": model_id,
                "display_name": name,
                "created_at": "2026-10-07T00:00:00Z",
            }
            for model_id, name in self.models[:limit]
        ]
        await self._send_json(
            writer,
            200,
            {
                "data": data,
                "has_more": limit < len(self.models),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    async def _messages(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: RecordedRequest
    ) -> bool:
        body = request.body
        if not isinstance(body, dict) or not all(k in body for k in ("model", "max_tokens")):
            await self._send_error(writer, invalid_request("model: Field required"))
            return True
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            await self._send_error(writer, invalid_request("messages: Field required"))
            return True
        if not self._script:
            await self._send_error(
                writer, ErrorReply(500, "api_error", "fake server: no scripted reply left")
            )
            return True
        step = self._script.pop(0)
        if not isinstance(step, Reply | ErrorReply):
            step = step(request)
        if isinstance(step, ErrorReply):
            await self._send_error(writer, step)
            return True
        self._counter += 1
        message_id = f"msg_fake{self._counter:04d}"
        model = step.model or str(body["model"])
        if not body.get("stream"):
            await self._send_json(writer, 200, _message(step, message_id, model))
            return True
        await self._send_head(writer, 200, "text/event-stream; charset=utf-8", chunked=True)
        for name, payload in _stream_events(step, message_id, model):
            frame = f"event: {name}\ndata: {json.dumps(payload)}\n\n"
            await self._send_chunk(writer, frame.encode())
            if step.hold and name == "ping" and not await self._held(reader):
                return False  # the client went away
        if step.error_after is not None:
            error = _error_body(step.error_after, f"req_fake{len(self.requests):04d}")
            frame = f"event: error\ndata: {json.dumps(error)}\n\n"
            await self._send_chunk(writer, frame.encode())
        await self._send_chunk(writer, b"")
        return True

    async def _held(self, reader: asyncio.StreamReader) -> bool:
        """Wait for `release` or for the client to hang up; True if released."""
        self.holding.set()
        released = asyncio.ensure_future(self.release.wait())
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            done, _ = await asyncio.wait({released, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (released, hangup):
                task.cancel()
            await asyncio.gather(released, hangup, return_exceptions=True)
            self.holding.clear()
        return released in done

    # -- wire helpers --

    async def _send_head(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        *,
        length: int = 0,
        chunked: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"content-type: {content_type}",
            f"request-id: req_fake{len(self.requests):04d}",
            "anthropic-organization-id: 00000000-0000-4000-8000-000000000000",
            "transfer-encoding: chunked" if chunked else f"content-length: {length}",
        ]
        if chunked:
            lines.append("cache-control: no-cache")
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()

    async def _send_chunk(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _send_json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        await self._send_head(writer, status, "application/json", length=len(data), extra=headers)
        writer.write(data)
        await writer.drain()

    async def _send_error(self, writer: asyncio.StreamWriter, error: ErrorReply) -> None:
        payload = _error_body(error, f"req_fake{len(self.requests):04d}")
        headers = {"x-should-retry": "true" if error.status >= 500 else "false", **error.headers}
        await self._send_json(writer, error.status, payload, headers)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Site Overloaded",
}


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        data = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()  # the blank line after the last chunk
                return data
            data += await reader.readexactly(size)
            await reader.readline()
    length = int(headers.get("content-length", "0"))
    return await reader.readexactly(length) if length else b""


def _error_body(error: ErrorReply, request_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error.type, "message": error.message},
        "request_id": request_id,
    }


def _pieces(value: str, size: int) -> list[str]:
    size = max(size, 1)
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def _tool_json(block: ToolUse) -> str:
    return block.raw_json if block.raw_json is not None else json.dumps(block.input)


def _usage_start(reply: Reply) -> dict[str, Any]:
    u = reply.usage
    return {
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_creation_input_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": min(1, u.output_tokens),
        "service_tier": "standard",
    }


def _stream_events(reply: Reply, message_id: str, model: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": _usage_start(reply),
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(reply.content):

        def delta(payload: dict[str, Any], index: int = index) -> tuple[str, dict[str, Any]]:
            return (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": payload},
            )

        if isinstance(block, Text):
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [
                delta({"type": "text_delta", "text": p})
                for p in _pieces(block.text, reply.fragment)
            ]
        elif isinstance(block, Thinking):
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                delta({"type": "thinking_delta", "thinking": p})
                for p in _pieces(block.thinking, reply.fragment)
            ]
            deltas.append(delta({"type": "signature_delta", "signature": block.signature}))
        else:
            start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            # The API opens with an empty fragment, then the JSON in several pieces.
            pieces = ["", *_pieces(_tool_json(block), reply.fragment)]
            deltas = [delta({"type": "input_json_delta", "partial_json": p}) for p in pieces]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        events += deltas
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    if reply.error_after is not None:
        return events  # the error event replaces the end of the message
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.final_stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": reply.usage.output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _message(reply: Reply, message_id: str, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for block in reply.content:
        if isinstance(block, Text):
            content.append({"type": "text", "text": block.text})
        elif isinstance(block, Thinking):
            content.append(
                {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
            )
        else:
            content.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
    usage = _usage_start(reply)
    usage["output_tokens"] = reply.usage.output_tokens
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.final_stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
