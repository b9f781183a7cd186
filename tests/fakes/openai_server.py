"""A loopback fake of the OpenAI Chat Completions API that speaks the real wire format.

It is a real HTTP/1.1 server on 127.0.0.1 (hand-written on asyncio streams, so it is
listening as soon as `async with FakeOpenAI()` returns — nothing to poll for). Tests
queue what the "model" does next and read back every request the server received:

    async with FakeOpenAI(api_key="sk-test") as fake:
        fake.queue(
            Reply(tool_calls=[ToolCall("file_write", {"path": "a.txt", "content": "hi"})]),
            Reply(text="Done.", prompt_tokens=120, completion_tokens=8, cached_tokens=64),
        )
        ...  # point an OpenAI client at fake.base_url
        assert fake.chat_requests[1].body["messages"][-1]["role"] == "tool"

Streaming requests (`"stream": true`) are answered with `text/event-stream` frames of
`chat.completion.chunk` objects: the assistant role first, `delta.content` pieces,
`delta.tool_calls` (index, id, name, then `function.arguments` split across chunks), a
`finish_reason` chunk, the usage chunk (`choices: []`) when
`stream_options.include_usage` is set, then `data: [DONE]`. Errors use the API's JSON
shape `{"error": {message, type, param, code}}` and its statuses and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

# --- what tests queue ---------------------------------------------------------------


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | str  # a str is sent verbatim (e.g. deliberately broken JSON)
    id: str | None = None


@dataclass
class Reply:
    """One assistant message, streamed (or returned whole to a non-streaming request)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 11
    completion_tokens: int = 7
    cached_tokens: int = 0
    reasoning: str = ""  # streamed as `delta.reasoning_content`, as vLLM and DeepSeek do
    finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop"
    fragment: int = 5  # size of the text and argument pieces
    interleave: bool = False  # alternate argument fragments of parallel calls
    send_usage: bool = True
    hold: bool = False  # send the first chunk, then keep the stream open until released
    model: str | None = None  # the `model` the chunks report (default: the requested one)


@dataclass
class ErrorReply:
    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def invalid_api_key(presented: str = "") -> ErrorReply:
    # The real API masks the key; a careless proxy may not, so this echoes it in full:
    # whatever a client shows from this message must not contain it.
    return ErrorReply(
        401,
        f"Incorrect API key provided: {presented}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def model_not_found(model: str) -> ErrorReply:
    return ErrorReply(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def context_length_exceeded(limit: int = 128_000, used: int = 131_072) -> ErrorReply:
    return ErrorReply(
        400,
        f"This model's maximum context length is {limit} tokens. However, your messages "
        f"resulted in {used} tokens. Please reduce the length of the messages.",
        code="context_length_exceeded",
        param="messages",
    )


def bad_request(message: str, param: str | None = None) -> ErrorReply:
    return ErrorReply(400, message, param=param)


def rate_limited(
    retry_after: str | None = "2", retry_after_ms: str | None = None, *, quota: bool = False
) -> ErrorReply:
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    if quota:
        return ErrorReply(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type="insufficient_quota",
            code="insufficient_quota",
            headers=headers,
        )
    return ErrorReply(
        429,
        "Rate limit reached for gpt-4o in organization org-fake on tokens per min (TPM): "
        "Limit 30000, Used 30000, Requested 900. Please try again in 1.8s.",
        type="tokens",
        code="rate_limit_exceeded",
        headers=headers,
    )


def server_error(status: int = 500) -> ErrorReply:
    if status == 503:
        return ErrorReply(
            503, "The engine is currently overloaded, please try again later", type="server_error"
        )
    return ErrorReply(
        status,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )


Scripted = Reply | ErrorReply


# --- what the server saw ------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.body.get("tools", [])) if isinstance(self.body, dict) else []


# --- the server ---------------------------------------------------------------------


class FakeOpenAI:
    def __init__(
        self, *, api_key: str | None = None, models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini")
    ) -> None:
        self.api_key = api_key  # None: a keyless server (any Authorization accepted)
        self.model_ids = models
        self.requests: list[RecordedRequest] = []
        self.models_error: ErrorReply | None = None
        self.release = asyncio.Event()  # lets held streams finish
        self._script: list[Scripted] = []
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._counter = 0
        self.port = 0

    # -- test API --

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def queue(self, *replies: Scripted) -> None:
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        return len(self._script)

    async def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Block until the server has received `count` requests (an event, not a poll)."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    # -- lifecycle --

    async def __aenter__(self) -> FakeOpenAI:
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
        # Hang up on every client rather than cancelling handlers: each one then sees
        # EOF and ends normally.
        for writer in self._connections.values():
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

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
        length = int(headers.get("content-length", "0"))
        data = await reader.readexactly(length) if length else b""
        body = json.loads(data) if data else None
        path = target.split("?", 1)[0]
        async with self._arrived:
            self.requests.append(RecordedRequest(method, path, headers, body))
            self._arrived.notify_all()
        keep_alive = headers.get("connection", "").lower() != "close"

        denied = self._check_key(headers)
        if denied is not None:
            await self._send_error(writer, denied)
        elif method == "GET" and path == "/v1/models":
            if self.models_error is not None:
                await self._send_error(writer, self.models_error)
            else:
                await self._send_json(writer, 200, self._models_body())
        elif method == "POST" and path == "/v1/chat/completions":
            keep_alive = await self._chat(reader, writer, body) and keep_alive
        else:
            await self._send_error(
                writer, ErrorReply(404, f"Invalid URL ({method} {path})", code=None)
            )
        return keep_alive

    def _check_key(self, headers: dict[str, str]) -> ErrorReply | None:
        if self.api_key is None:
            return None
        presented = headers.get("authorization", "").removeprefix("Bearer ").strip()
        return None if presented == self.api_key else invalid_api_key(presented)

    async def _chat(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any
    ) -> bool:
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            await self._send_error(writer, bad_request("'model' and 'messages' are required"))
            return True
        if not self._script:
            await self._send_error(writer, bad_request("fake server: no scripted reply left"))
            return True
        step = self._script.pop(0)
        if isinstance(step, ErrorReply):
            await self._send_error(writer, step)
            return True
        self._counter += 1
        completion_id = f"chatcmpl-fake{self._counter}"
        model = step.model or str(body["model"])
        if not body.get("stream"):
            await self._send_json(writer, 200, _completion(step, completion_id, model))
            return True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        await self._send_head(writer, 200, "text/event-stream; charset=utf-8", chunked=True)
        frames = _stream_frames(step, completion_id, model, include_usage)
        for number, frame in enumerate(frames):
            await self._send_chunk(writer, f"data: {frame}\n\n".encode())
            if step.hold and number == 0 and not await self._held(reader):
                return False  # the client went away
        await self._send_chunk(writer, b"")
        return True

    async def _held(self, reader: asyncio.StreamReader) -> bool:
        """Wait for `release` or for the client to hang up; True if released."""
        released = asyncio.ensure_future(self.release.wait())
        hangup = asyncio.ensure_future(reader.read(1))
        done, pending = await asyncio.wait({released, hangup}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return released in done

    def _models_body(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "openai"}
                for m in self.model_ids
            ],
        }

    # -- wire helpers --

    async def _send_head(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        *,
        length: int | None = None,
        chunked: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"content-type: {content_type}",
            f"x-request-id: req_fake{len(self.requests)}",
            "openai-processing-ms: 1",
        ]
        if chunked:
            lines.append("transfer-encoding: chunked")
        else:
            lines.append(f"content-length: {length or 0}")
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
        payload = {
            "error": {
                "message": error.message,
                "type": error.type,
                "param": error.param,
                "code": error.code,
            }
        }
        await self._send_json(writer, error.status, payload, error.headers)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _pieces(text: str, size: int) -> list[str]:
    size = max(size, 1)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _arguments(call: ToolCall) -> str:
    return call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)


def _call_id(call: ToolCall, completion_id: str, index: int) -> str:
    return call.id or f"call_{completion_id.removeprefix('chatcmpl-')}_{index}"


def _finish_reason(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _stream_frames(reply: Reply, completion_id: str, model: str, include_usage: bool) -> list[str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            payload["usage"] = None
        return json.dumps(payload)

    first_content = "" if reply.text or not reply.tool_calls else None
    frames = [chunk({"role": "assistant", "content": first_content, "refusal": None})]
    frames += [chunk({"reasoning_content": p}) for p in _pieces(reply.reasoning, reply.fragment)]
    frames += [chunk({"content": p}) for p in _pieces(reply.text, reply.fragment)]

    openers: list[str] = []
    fragments: list[list[str]] = []
    for index, call in enumerate(reply.tool_calls):
        opener = {
            "index": index,
            "id": _call_id(call, completion_id, index),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        openers.append(chunk({"tool_calls": [opener]}))
        fragments.append(
            [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _pieces(_arguments(call), reply.fragment)
            ]
        )
    if reply.interleave:
        frames += openers
        longest = max((len(f) for f in fragments), default=0)
        for step in range(longest):
            frames += [f[step] for f in fragments if step < len(f)]
    else:
        for opener_frame, pieces in zip(openers, fragments, strict=True):
            frames.append(opener_frame)
            frames += pieces

    frames.append(chunk({}, _finish_reason(reply)))
    if include_usage and reply.send_usage:
        frames.append(
            json.dumps(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": _usage(reply),
                }
            )
        )
    frames.append("[DONE]")
    return frames


def _completion(reply: Reply, completion_id: str, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text or None,
        "refusal": None,
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": _call_id(call, completion_id, index),
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call)},
            }
            for index, call in enumerate(reply.tool_calls)
        ]
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
        ],
    }
    if reply.send_usage:
        body["usage"] = _usage(reply)
    return body
