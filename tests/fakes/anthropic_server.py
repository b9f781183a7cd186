"""A loopback fake of the Anthropic Messages API that speaks the real wire format.

A real HTTP/1.1 server on 127.0.0.1 (`LoopbackServer` of `tests/fakes/http_server.py`:
keep-alive, chunked event streams), listening as soon as `async with FakeAnthropic()`
returns. Tests queue what
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
import dataclasses
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from tests.fakes import http_server
from tests.fakes.http_server import Answer, LoopbackServer

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


class RecordedRequest(http_server.RecordedRequest):
    """A recorded request with the credential and the Messages body's parts at hand."""

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


class FakeAnthropic(LoopbackServer):
    json_type = "application/json"
    request_type = RecordedRequest

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: tuple[tuple[str, str], ...] = DEFAULT_MODELS,
    ) -> None:
        super().__init__()
        self.api_key = api_key  # None: any credential (or none) is accepted
        self.models = models
        self.models_error: ErrorReply | None = None  # answer GET /v1/models with this
        self.release = asyncio.Event()  # lets held streams go on
        self.holding = asyncio.Event()  # set while a stream is held after message_start
        #: a small model's window: a request larger than this (estimated at 4 characters
        #: a token) is refused as too long, and every reply reports the request's
        #: estimated size as its `input_tokens`
        self.context_window: int | None = None
        self._script: list[Scripted] = []
        #: the answer to every message request once the queue is empty (a model that
        #: repeats itself forever); None: a 500 saying nothing is left
        self.fallback: Scripted | None = None
        self._counter = 0

    # -- test API --

    @property
    def base_url(self) -> str:
        """What the SDK takes as `base_url` (it appends `/v1/...`)."""
        return self.root

    @property
    def anthropic_requests(self) -> list[RecordedRequest]:
        """Every request, with the Anthropic views (`api_key`, `messages`)."""
        return [r for r in self.requests if isinstance(r, RecordedRequest)]

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [
            r for r in self.anthropic_requests if r.method == "POST" and r.path == "/v1/messages"
        ]

    def queue(self, *replies: Scripted) -> None:
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        return len(self._script)

    async def wait_for_requests(
        self, count: int, path: str = "/v1/messages"
    ) -> list[http_server.RecordedRequest]:
        """Block until `count` requests to `path` arrived (an event, not a poll)."""
        async with self._arrived:
            await self._arrived.wait_for(
                lambda: sum(r.path == path for r in self.requests) >= count
            )
        return self.requests

    # -- lifecycle --

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        await super().__aexit__(exc_type, exc, tb)

    # -- answering --

    def server_headers(self) -> dict[str, str]:
        return {
            "request-id": self._request_id(),
            "anthropic-organization-id": "00000000-0000-4000-8000-000000000000",
        }

    async def respond(
        self,
        request: http_server.RecordedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        outcome = self._outcome(request)
        if isinstance(outcome, Reply):
            request.status = 200
            return await self._stream(reader, writer, outcome, str(request.body["model"]))
        request.status = outcome.status
        await self.send(writer, outcome)
        return True

    def _outcome(self, request: http_server.RecordedRequest) -> Answer | Reply:
        """The answer to `request`, or the reply to stream to it."""
        denied = self._check_key(request)
        if denied is not None:
            return self._error(denied)
        method, path, body = request.method, request.path, request.body
        if method == "GET" and path == "/v1/models":
            return self._models(request.query)
        if method == "POST" and path == "/v1/messages/count_tokens":
            size = len(json.dumps(body)) if body is not None else 0
            return Answer(200, {"input_tokens": max(1, size // 4)})
        if method != "POST" or path != "/v1/messages":
            return self._error(ErrorReply(404, "not_found_error", f"Not found: {method} {path}"))
        if not isinstance(body, dict) or not all(k in body for k in ("model", "max_tokens")):
            return self._error(invalid_request("model: Field required"))
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._error(invalid_request("messages: Field required"))
        used = request_tokens(body)
        if self.context_window is not None and used > self.context_window:
            return self._error(prompt_too_long(used, self.context_window))
        if not self._script and self.fallback is None:
            return self._error(ErrorReply(500, "api_error", "fake server: no scripted reply left"))
        step = self._script.pop(0) if self._script else self.fallback
        assert step is not None
        if not isinstance(step, Reply | ErrorReply):
            assert isinstance(request, RecordedRequest)
            step = step(request)
        if isinstance(step, ErrorReply):
            return self._error(step)
        if self.context_window is not None:
            step = dataclasses.replace(
                step, usage=dataclasses.replace(step.usage, input_tokens=used)
            )
        if body.get("stream"):
            return step
        message_id, model = self._next_id(), step.model or str(body["model"])
        return Answer(200, _message(step, message_id, model))

    def _check_key(self, request: http_server.RecordedRequest) -> ErrorReply | None:
        if self.api_key is None:
            return None
        assert isinstance(request, RecordedRequest)
        presented = request.api_key or ""
        return None if presented == self.api_key else authentication_error(presented)

    def _models(self, query: dict[str, str]) -> Answer:
        if self.models_error is not None:
            return self._error(self.models_error)
        limit = len(self.models)
        if query.get("limit", "").isdigit():
            limit = int(query["limit"])
        data = [
            {
                "type": "model",
                "id": model_id,
                "display_name": name,
                "created_at": "2026-10-07T00:00:00Z",
            }
            for model_id, name in self.models[:limit]
        ]
        return Answer(
            200,
            {
                "data": data,
                "has_more": limit < len(self.models),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        step: Reply,
        requested_model: str,
    ) -> bool:
        message_id, model = self._next_id(), step.model or requested_model
        await self.send_stream_head(
            writer, 200, "text/event-stream; charset=utf-8", {"cache-control": "no-cache"}
        )
        for name, payload in _stream_events(step, message_id, model):
            frame = f"event: {name}\ndata: {json.dumps(payload)}\n\n"
            await self.send_chunk(writer, frame.encode())
            if step.hold and name == "ping" and not await self._held(reader):
                return False  # the client went away
        if step.error_after is not None:
            error = _error_body(step.error_after, self._request_id())
            frame = f"event: error\ndata: {json.dumps(error)}\n\n"
            await self.send_chunk(writer, frame.encode())
        await self.send_chunk(writer, b"")
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

    def _next_id(self) -> str:
        self._counter += 1
        return f"msg_fake{self._counter:04d}"

    def _request_id(self) -> str:
        return f"req_fake{len(self.requests):04d}"

    def _error(self, error: ErrorReply) -> Answer:
        headers = {"x-should-retry": "true" if error.status >= 500 else "false", **error.headers}
        return Answer(error.status, _error_body(error, self._request_id()), headers)


def request_tokens(body: dict[str, Any]) -> int:
    """A request's size in tokens as this fake counts them: 4 characters a token."""
    parts = [body.get("system", ""), body.get("tools", []), body.get("messages", [])]
    return len(json.dumps(parts)) // 4


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
