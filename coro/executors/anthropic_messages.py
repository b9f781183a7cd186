"""The provider-neutral transcript as Messages API requests: content blocks, prompt-cache
breakpoints, and a history repaired into what the API accepts."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from anthropic.types import ContentBlock

from coro.domain.models import ConversationMessage
from coro.tools.registry import Tool

_EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
_TOOL_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")

Block = dict[str, Any]
Msg = dict[str, Any]  # {"role": "user" | "assistant", "content": [Block, ...]}


def text_block(text: str) -> Block:
    return {"type": "text", "text": text}


def tool_result_block(tool_use_id: str, output: str, is_error: bool) -> Block:
    return {
        "type": "tool_result",
        "tool_use_id": tool_use_id,
        "content": output if output.strip() else "(no output)",
        "is_error": is_error,
    }


def system_param(system_prompt: str) -> list[Block]:
    """The system prompt as one cached text block (none for an empty prompt)."""
    if not system_prompt.strip():
        return []
    return [{"type": "text", "text": system_prompt, "cache_control": dict(_EPHEMERAL)}]


def tool_params(tools: Sequence[Tool[Any]]) -> list[Block]:
    """Tool definitions, with a cache breakpoint on the last one (tools come first in the
    cached prefix, so it covers all of them)."""
    params: list[Block] = []
    for tool in tools:
        schema = dict(tool.input_schema)
        schema.setdefault("type", "object")
        params.append({"name": tool.name, "description": tool.description, "input_schema": schema})
    if params:
        params[-1]["cache_control"] = dict(_EPHEMERAL)
    return params


def append_blocks(messages: list[Msg], role: str, blocks: list[Block]) -> None:
    """Append content, merging into the last message when it has the same role."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def build_messages(
    history: Sequence[ConversationMessage], prompt: str, *, tools_available: bool
) -> list[Msg]:
    """Provider-neutral transcript + this turn's prompt → valid Messages API messages.

    Consecutive same-role entries merge; tool results become `tool_result` blocks in a
    user message right after the assistant's `tool_use` blocks. The transcript is
    repaired where the API would refuse it: a call without a recorded result gets an
    error result, a result without its call is dropped, repeated call ids are renamed,
    the conversation starts with the user, and without tools in this phase earlier tool
    blocks are replayed as text.
    """
    messages: list[Msg] = []
    for entry in history:
        if entry.role == "assistant":
            blocks = [text_block(entry.content)] if entry.content.strip() else []
            blocks += [
                {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.input)}
                for call in entry.tool_calls
            ]
            append_blocks(messages, "assistant", blocks)
        else:
            blocks = [
                tool_result_block(result.tool_call_id, result.output, result.is_error)
                for result in entry.tool_results
            ]
            if entry.content.strip():
                blocks.append(text_block(entry.content))
            append_blocks(messages, "user", blocks)
    if prompt.strip():
        append_blocks(messages, "user", [text_block(prompt)])
    return _repair(messages, tools_available)


def _repair(messages: list[Msg], tools_available: bool) -> list[Msg]:
    repaired: list[Msg] = []
    used_ids: set[str] = set()
    open_calls: dict[str, str] = {}  # recorded id -> id sent, for the previous assistant turn
    for message in messages:
        if message["role"] == "assistant":
            if open_calls:  # calls whose results were never recorded
                append_blocks(repaired, "user", _missing_results(open_calls))
            open_calls = {}
            blocks = []
            for block in message["content"]:
                if block["type"] == "tool_use":
                    sent = _unique_id(block["id"], used_ids)
                    open_calls[block["id"]] = sent
                    block = {**block, "id": sent}
                blocks.append(block)
            append_blocks(repaired, "assistant", blocks)
            continue
        results, others = [], []
        for block in message["content"]:
            if block["type"] != "tool_result":
                others.append(block)
            elif block["tool_use_id"] in open_calls:
                results.append({**block, "tool_use_id": open_calls.pop(block["tool_use_id"])})
        results += _missing_results(open_calls)
        open_calls = {}
        append_blocks(repaired, "user", results + others)
    if open_calls:
        append_blocks(repaired, "user", _missing_results(open_calls))
    if not tools_available:
        repaired = _tools_as_text(repaired)
    if repaired and repaired[0]["role"] != "user":
        repaired.insert(0, {"role": "user", "content": [text_block("(continuing the job)")]})
    return repaired


def _unique_id(recorded: str, used: set[str]) -> str:
    base = _TOOL_ID_UNSAFE.sub("_", recorded) or "call"
    candidate, n = base, 1
    while candidate in used:
        n += 1
        candidate = f"{base}_{n}"
    used.add(candidate)
    return candidate


def _missing_results(open_calls: Mapping[str, str]) -> list[Block]:
    return [
        tool_result_block(sent, "This tool call was not run: the phase was interrupted.", True)
        for sent in open_calls.values()
    ]


def _tools_as_text(messages: list[Msg]) -> list[Msg]:
    """Tool blocks need tool definitions in the request; without any, replay them as text."""
    flat: list[Msg] = []
    for message in messages:
        blocks = []
        for block in message["content"]:
            if block["type"] == "tool_use":
                arguments = json.dumps(block["input"], ensure_ascii=False)
                blocks.append(text_block(f"[called tool {block['name']} with {arguments}]"))
            elif block["type"] == "tool_result":
                label = "tool error" if block.get("is_error") else "tool result"
                blocks.append(text_block(f"[{label}: {block['content']}]"))
            else:
                blocks.append(block)
        append_blocks(flat, message["role"], blocks)
    return flat


def with_cache_breakpoint(messages: list[Msg]) -> list[Msg]:
    """A copy whose newest block carries a cache breakpoint, so the next round trip reads
    the whole conversation so far from the cache (earlier messages stay unmarked: the
    API allows four breakpoints per request)."""
    if not messages:
        return []
    last = messages[-1]
    content = [dict(block) for block in last["content"]]
    if content and content[-1].get("type") in ("text", "tool_result", "tool_use"):
        content[-1]["cache_control"] = dict(_EPHEMERAL)
    return [*messages[:-1], {"role": last["role"], "content": content}]


def assistant_blocks(content: Sequence[ContentBlock]) -> list[Block]:
    """A response's content as request blocks, thinking signatures included (the API
    needs them back unchanged while a tool-use turn is in progress)."""
    blocks: list[Block] = []
    for block in content:
        if block.type == "text":
            if block.text:
                blocks.append(text_block(block.text))
        elif block.type == "thinking":
            blocks.append(
                {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
            )
        elif block.type == "redacted_thinking":
            blocks.append({"type": "redacted_thinking", "data": block.data})
        elif block.type == "tool_use":
            arguments = block.input if isinstance(block.input, dict) else {}
            blocks.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": arguments}
            )
    return blocks
