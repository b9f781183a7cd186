"""The provider-neutral transcript as Chat Completions messages, natively or as prompted
tool calls, and the arguments of a call as the model wrote them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from coro.domain.models import ConversationMessage
from coro.executors.prompted import call_block, results_text

#: OpenAI refuses tool call ids longer than this; longer ids (from other providers'
#: transcripts) are shortened deterministically.
MAX_TOOL_CALL_ID = 40
ERROR_PREFIX = "ERROR: "


def wire_call_id(call_id: str) -> str:
    """A tool call id OpenAI accepts (≤ 40 chars), stable for the same input."""
    if len(call_id) <= MAX_TOOL_CALL_ID:
        return call_id
    return "call_" + hashlib.sha256(call_id.encode()).hexdigest()[:32]


def tool_message(call_id: str, output: str, is_error: bool) -> dict[str, Any]:
    content = f"{ERROR_PREFIX}{output}" if is_error else output
    return {"role": "tool", "tool_call_id": wire_call_id(call_id), "content": content}


def history_messages(
    history: Sequence[ConversationMessage], *, prompted: bool = False
) -> list[dict[str, Any]]:
    """The provider-neutral transcript as Chat Completions messages.

    Consecutive assistant entries (text, then each recorded tool call) become one
    assistant message; consecutive user entries are joined. Every tool call is answered
    by a `tool` message before the conversation goes on (a call the transcript has no
    result for gets an error result) and results without their call are dropped — the
    API refuses both shapes. `prompted`: calls and results as prompted tool calls write
    them instead (see `prompted_history_messages`).
    """
    if prompted:
        return prompted_history_messages(history)
    merged: list[dict[str, Any]] = []
    for entry in history:
        last = merged[-1] if merged else None
        if entry.role == "user":
            if not entry.content:
                continue
            if last is not None and last["role"] == "user":
                last["content"] = f"{last['content']}\n\n{entry.content}"
            else:
                merged.append({"role": "user", "content": entry.content})
        elif entry.role == "assistant":
            calls = [
                {
                    "id": wire_call_id(call.id),
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": json.dumps(call.input, ensure_ascii=False),
                    },
                }
                for call in entry.tool_calls
            ]
            if not entry.content and not calls:
                continue
            if last is not None and last["role"] == "assistant":
                if entry.content:
                    text = last.get("content") or ""
                    last["content"] = f"{text}\n\n{entry.content}" if text else entry.content
                if calls:
                    last.setdefault("tool_calls", []).extend(calls)
            else:
                message: dict[str, Any] = {"role": "assistant", "content": entry.content or None}
                if calls:
                    message["tool_calls"] = calls
                merged.append(message)
        else:
            merged.extend(
                tool_message(r.tool_call_id, r.output, r.is_error) for r in entry.tool_results
            )
    return pair_tool_results(merged)


def prompted_history_messages(history: Sequence[ConversationMessage]) -> list[dict[str, Any]]:
    """The transcript for a server without tool calling: each recorded call becomes the
    fenced JSON block the model writes, each result a user message naming its tool —
    only `user` and `assistant` messages, same-role neighbours joined."""
    merged: list[dict[str, Any]] = []
    names: dict[str, str] = {}

    def add(role: str, text: str) -> None:
        if not text.strip():
            return
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"] = f"{merged[-1]['content']}\n\n{text}"
        else:
            merged.append({"role": role, "content": text})

    for entry in history:
        if entry.role == "user":
            add("user", entry.content)
        elif entry.role == "assistant":
            add("assistant", entry.content)
            for call in entry.tool_calls:
                names[call.id] = call.name
                add("assistant", call_block(call.name, call.input))
        else:
            results = [
                (names.get(r.tool_call_id, "tool"), r.output, r.is_error)
                for r in entry.tool_results
            ]
            add("user", results_text(results))
    return merged


def pair_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    paired: list[dict[str, Any]] = []
    open_ids: list[str] = []

    def close_open() -> None:
        for call_id in open_ids:
            paired.append(
                tool_message(call_id, "this tool call did not complete (interrupted)", True)
            )
        open_ids.clear()

    for message in messages:
        if message["role"] == "tool":
            if message["tool_call_id"] in open_ids:
                open_ids.remove(message["tool_call_id"])
                paired.append(message)
            continue
        close_open()
        paired.append(message)
        if message["role"] == "assistant":
            open_ids.extend(call["id"] for call in message.get("tool_calls", []))
    close_open()
    return paired


def append_user(messages: list[dict[str, Any]], text: str) -> None:
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "user" and isinstance(last.get("content"), str):
        last["content"] = f"{last['content']}\n\n{text}"
    else:
        messages.append({"role": "user", "content": text})


def parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """A tool call's JSON arguments as an object, or why they are not one."""
    if not raw.strip():
        return {}, None
    try:
        value = json.loads(raw)
        if isinstance(value, str):  # some models double-encode
            value = json.loads(value)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    return value, None
