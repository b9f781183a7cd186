"""One streamed Chat Completions reply folded into a message: text, reasoning, tool
calls whose JSON arguments arrive in fragments, usage; and the size of a request."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from openai.types.chat import ChatCompletionChunk

from coro.executors.base import estimate_tokens
from coro.executors.openai_messages import MAX_TOOL_CALL_ID, wire_call_id


@dataclass
class PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class Reply:
    text: str = ""
    reasoning: str = ""
    calls: list[PartialCall] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    model: str | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.calls
            ]
        return message


class Accumulator:
    """Folds `chat.completion.chunk`s into one reply (choice 0)."""

    def __init__(self) -> None:
        self.reply = Reply()
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._by_index: dict[int, PartialCall] = {}

    def add(self, chunk: ChatCompletionChunk) -> str:
        """Fold one chunk; returns the text it added (for live streaming)."""
        added = ""
        if chunk.model:
            self.reply.model = chunk.model
        if chunk.usage is not None:
            usage = chunk.usage
            self.reply.prompt_tokens = usage.prompt_tokens or 0
            self.reply.completion_tokens = usage.completion_tokens or 0
            details = usage.prompt_tokens_details
            self.reply.cached_tokens = (details.cached_tokens or 0) if details else 0
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            piece = (delta.content or "") + (delta.refusal or "")
            if piece:
                self._text.append(piece)
                added += piece
            extra = delta.model_extra or {}
            thought = extra.get("reasoning_content") or extra.get("reasoning")
            if isinstance(thought, str):
                self._reasoning.append(thought)
            for position, fragment in enumerate(delta.tool_calls or []):
                self._add_call(fragment, position)
            if choice.finish_reason:
                self.reply.finish_reason = choice.finish_reason
        return added

    def _add_call(self, fragment: Any, position: int) -> None:
        index = getattr(fragment, "index", None)
        index = index if isinstance(index, int) else position
        call = self._by_index.get(index)
        # A server that reuses index 0 for every call (older Ollama) still gives each
        # call its own id: a new id at a known index is a new call.
        if call is None or (fragment.id and call.id and fragment.id != call.id):
            call = PartialCall()
            self._by_index[index] = call
            self.reply.calls.append(call)
        if fragment.id:
            call.id = fragment.id
        function = fragment.function
        if function is not None:
            if function.name and not call.name:
                call.name = function.name
            if function.arguments:
                call.arguments += function.arguments

    def finish(self) -> Reply:
        self.reply.text = "".join(self._text)
        self.reply.reasoning = "".join(self._reasoning)
        for call in self.reply.calls:
            call.id = wire_call_id(call.id or f"call_{secrets.token_hex(8)}")
        seen: set[str] = set()
        for number, call in enumerate(self.reply.calls, start=1):
            if call.id in seen:  # servers that send the same id twice
                call.id = f"{call.id[: MAX_TOOL_CALL_ID - 4]}_{number}"
            seen.add(call.id)
        return self.reply


@dataclass
class RequestSize:
    """The conversation's size in tokens: the count the server last reported (when the
    conversation had `at` messages) plus an estimate of what came since; an estimate of
    everything before any count (or from a server that reports none)."""

    tokens: int = 0
    at: int = 0

    def of(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
        if not self.tokens:
            return estimate_tokens(messages) + (estimate_tokens(tools) if tools else 0)
        return self.tokens + (estimate_tokens(messages[self.at :]) if messages[self.at :] else 0)
