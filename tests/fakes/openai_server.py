"""A loopback fake of the OpenAI Chat Completions API that speaks the real wire format.

It is a real HTTP/1.1 server on 127.0.0.1 (`LoopbackServer` of
`tests/fakes/http_server.py`, so it is listening as soon as `async with FakeOpenAI()`
returns — nothing to poll for). Tests
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
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from tests.fakes.http_server import Answer, LoopbackServer, RecordedRequest

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


class ChatRequest(RecordedRequest):
    """A recorded request with the chat body's `messages` and `tools` at hand."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.body.get("tools", [])) if isinstance(self.body, dict) else []


# --- the server ---------------------------------------------------------------------


class FakeOpenAI(LoopbackServer):
    json_type = "application/json"
    request_type = ChatRequest

    def __init__(
        self, *, api_key: str | None = None, models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini")
    ) -> None:
        super().__init__()
        self.api_key = api_key  # None: a keyless server (any Authorization accepted)
        self.model_ids = models
        self.models_error: ErrorReply | None = None
        self.release = asyncio.Event()  # lets held streams finish
        #: a small model's window: a request larger than this (estimated at 4 characters
        #: a token) is refused with `context_length_exceeded`, and every reply reports
        #: the request's estimated size as its `prompt_tokens`
        self.context_window: int | None = None
        #: False: a server without tool calling, which refuses `tools` and tool messages
        self.tool_calling = True
        #: answers the requests it recognises (None for the rest, which take the next
        #: queued reply): e.g. a summariser's requests, whenever they come
        self.route: Callable[[ChatRequest], Scripted | None] | None = None
        self._script: list[Scripted] = []
        #: the answer to every chat request once the queue is empty (a model that repeats
        #: itself forever); None: an error saying nothing is left
        self.fallback: Scripted | None = None
        self._counter = 0

    # -- test API --

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    @property
    def chat_requests(self) -> list[ChatRequest]:
        return [
            r
            for r in self.requests
            if isinstance(r, ChatRequest) and r.path.endswith("/chat/completions")
        ]

    def queue(self, *replies: Scripted) -> None:
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        return len(self._script)

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
        return {"x-request-id": f"req_fake{len(self.requests)}", "openai-processing-ms": "1"}

    async def respond(
        self, request: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        outcome = self._outcome(request)
        if isinstance(outcome, Answer):
            request.status = outcome.status
            await self.send(writer, outcome)
            return True
        request.status = 200
        return await self._stream(reader, writer, *outcome)

    def _outcome(self, request: RecordedRequest) -> Answer | tuple[Reply, str, str, bool]:
        """The answer to `request`, or what to stream: (reply, id, model, include_usage)."""
        denied = self._check_key(request.headers)
        if denied is not None:
            return _error_answer(denied)
        method, path, body = request.method, request.path, request.body
        if method == "GET" and path == "/v1/models":
            if self.models_error is not None:
                return _error_answer(self.models_error)
            return Answer(200, self._models_body())
        if method != "POST" or path != "/v1/chat/completions":
            return _error_answer(ErrorReply(404, f"Invalid URL ({method} {path})", code=None))
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return _error_answer(bad_request("'model' and 'messages' are required"))
        refused = self._refuse(body)
        if refused is not None:
            return _error_answer(refused)
        routed = self.route(request) if isinstance(request, ChatRequest) and self.route else None
        if routed is not None:
            self._script.insert(0, routed)
        if not self._script and self.fallback is None:
            return _error_answer(bad_request("fake server: no scripted reply left"))
        step = self._script.pop(0) if self._script else self.fallback
        assert step is not None
        if isinstance(step, ErrorReply):
            return _error_answer(step)
        if self.context_window is not None:
            step = dataclasses.replace(step, prompt_tokens=request_tokens(body))
        self._counter += 1
        completion_id = f"chatcmpl-fake{self._counter}"
        model = step.model or str(body["model"])
        if not body.get("stream"):
            return Answer(200, _completion(step, completion_id, model))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return step, completion_id, model, include_usage

    def _refuse(self, body: dict[str, Any]) -> ErrorReply | None:
        """What this server's limits make of a request (before any scripted reply)."""
        messages = body["messages"] if isinstance(body["messages"], list) else []
        if not self.tool_calling:
            uses_tools = any(
                isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls"))
                for m in messages
            )
            if body.get("tools") or uses_tools:
                return bad_request(f"{body['model']} does not support tools")
        used = request_tokens(body)
        if self.context_window is not None and used > self.context_window:
            return context_length_exceeded(self.context_window, used)
        return None

    def _check_key(self, headers: dict[str, str]) -> ErrorReply | None:
        if self.api_key is None:
            return None
        presented = headers.get("authorization", "").removeprefix("Bearer ").strip()
        return None if presented == self.api_key else invalid_api_key(presented)

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        step: Reply,
        completion_id: str,
        model: str,
        include_usage: bool,
    ) -> bool:
        await self.send_stream_head(writer, 200, "text/event-stream; charset=utf-8")
        frames = _stream_frames(step, completion_id, model, include_usage)
        for number, frame in enumerate(frames):
            await self.send_chunk(writer, f"data: {frame}\n\n".encode())
            if step.hold and number == 0 and not await self._held(reader):
                return False  # the client went away
        await self.send_chunk(writer, b"")
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


def request_tokens(body: dict[str, Any]) -> int:
    """A request's size in tokens as this fake counts them: 4 characters a token."""
    return len(json.dumps(body.get("messages", [])) + json.dumps(body.get("tools", []))) // 4


def _error_answer(error: ErrorReply) -> Answer:
    payload = {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }
    return Answer(error.status, payload, dict(error.headers))


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
