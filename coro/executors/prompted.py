"""Prompted tool calls: tools for models and servers without native tool calling.

The tool list and a calling convention go into the system prompt; the model calls a
tool by writing a fenced JSON block `{"name": …, "arguments": {…}}` (or a reply that is
nothing but such an object, which small models write too, or a `<tool_call>` element
as Qwen and Hermes models are trained to). `parse_calls` finds those calls in a reply;
the results go back as one user message (servers without tool support refuse
`role: tool`), each labelled with the tool's name.

Constrained calls go one step further for models too small to follow the convention on
their own: the server is asked (`response_format` with a JSON schema, which llama.cpp,
vLLM and Ollama turn into a decoding grammar) to answer with nothing but one call of a
listed tool, or the `end_turn` object that ends the turn with a summary.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from coro.tools.registry import Tool

#: Keys small models use for a call's arguments, besides the one the convention asks for.
ARGUMENT_KEYS = ("arguments", "parameters", "input", "args")
NAME_KEYS = ("name", "tool")

#: ```json … ``` (or an untagged fence); the body is parsed only if it looks like JSON.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)```", re.DOTALL)
_TOOL_CALL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_JSON_FENCES = frozenset({"", "json", "jsonc", "json5", "tool", "tool_call", "tool_code"})
_NAMED = re.compile(r'"(?:name|tool)"\s*:\s*"([^"]+)"')

EXAMPLE = '{"name": "<tool name>", "arguments": {"<argument>": "<value>"}}'
REMINDER = (
    "To call a tool, reply with one fenced block per call:\n"
    f"```json\n{EXAMPLE}\n```\n"
    "naming one of the available tools, with a JSON object of arguments that matches "
    "its input schema."
)


END_TURN = "end_turn"


def convention(tools: Sequence[Tool[Any]], *, constrained: bool = False) -> str:
    """The system-prompt section that lists the tools and says how to call them."""
    lines = [
        "# Calling tools",
        "",
        "This conversation has no built-in tool calling. To call a tool, write a fenced "
        "JSON block that names the tool and gives its arguments:",
        "",
        "```json",
        EXAMPLE,
        "```",
        "",
        "- Write one block per call; several blocks in one reply run in the order written.",
        "- `arguments` is a JSON object matching the tool's input schema below.",
        '- The results come back in the next message, each headed "[tool result: <name>]" '
        'or "[tool error: <name>]". Wait for them before relying on a call\'s outcome.',
        (
            f"- When you are done, answer {_end_turn_example()} to end your turn."
            if constrained
            else "- A reply without a tool call block ends your turn."
        ),
        "",
        "## Available tools",
    ]
    for tool in tools:
        schema = json.dumps(tool.input_schema, ensure_ascii=False, separators=(",", ":"))
        lines += [
            "",
            f"### {tool.name}",
            tool.description.strip(),
            f"Input schema: {schema}",
            "Call it like this:",
            call_block(tool.name, example_arguments(tool.input_schema)),
        ]
    return "\n".join(lines)


_PLACEHOLDERS: dict[str, Any] = {
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "object": {},
}


def example_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """The required arguments of a schema with placeholder values: small models copy the
    shape of an example far more reliably than they read a JSON schema."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = [name for name in schema.get("required", []) if name in properties]
    example: dict[str, Any] = {}
    for name in required or list(properties)[:1]:
        spec = properties[name] if isinstance(properties[name], dict) else {}
        kind = spec.get("type")
        example[name] = (
            _PLACEHOLDERS.get(kind, f"<{name}>") if isinstance(kind, str) else (f"<{name}>")
        )
    return example


def _end_turn_example() -> str:
    return json.dumps({"name": END_TURN, "arguments": {"summary": "<what you did>"}})


def call_schema(tools: Sequence[Tool[Any]]) -> dict[str, Any]:
    """The JSON schema of a constrained reply: one call of one of `tools` (its arguments
    as the tool's input schema) or `end_turn`. Each tool's `$defs` move to the root under
    the tool's name, since a reference inside `anyOf` resolves against the root."""
    definitions: dict[str, Any] = {}
    options: list[dict[str, Any]] = []
    for tool in tools:
        arguments = _hoist_definitions(tool.name, tool.input_schema, definitions)
        options.append(_call_option(tool.name, arguments))
    summary = {"type": "object", "properties": {"summary": {"type": "string"}}}
    options.append(_call_option(END_TURN, {**summary, "required": ["summary"]}))
    schema: dict[str, Any] = {"anyOf": options}
    if definitions:
        schema["$defs"] = definitions
    return schema


def _call_option(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _hoist_definitions(
    owner: str, schema: dict[str, Any], definitions: dict[str, Any]
) -> dict[str, Any]:
    local = schema.get("$defs")
    if not isinstance(local, dict) or not local:
        return schema
    prefix = f"{owner}__"

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            out = {k: rewrite(v) for k, v in node.items() if k != "$defs"}
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                out["$ref"] = f"#/$defs/{prefix}{ref.removeprefix('#/$defs/')}"
            return out
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    for name, definition in local.items():
        definitions[f"{prefix}{name}"] = rewrite(definition)
    rewritten: dict[str, Any] = rewrite(schema)
    return rewritten


def read_constrained(text: str, known: Collection[str]) -> ParsedReply:
    """A constrained reply: `end_turn` ends the turn with its summary as the agent's
    text; anything else is read as prompted calls (a server that ignored the schema). A
    reply that is neither (cut off at the token limit, say) is a malformed call: the
    turn goes on with an error result, never ends on a half-written call."""
    with contextlib.suppress(json.JSONDecodeError):
        value = json.loads(text)
        if isinstance(value, dict) and _name(value) == END_TURN:
            arguments: Any = next((value[k] for k in ARGUMENT_KEYS if k in value), {})
            summary = arguments.get("summary") if isinstance(arguments, dict) else None
            return ParsedReply([], summary if isinstance(summary, str) else "")
    parsed = parse_calls(text, known, strict=True)
    if parsed.calls:
        return parsed
    problem = (
        "The reply was neither a tool call nor end_turn (was it cut off at the output "
        f"token limit? keep arguments short). {REMINDER} To finish, answer "
        f"{_end_turn_example()}."
    )
    return ParsedReply([PromptedCall("reply", problem=problem)], "")


def call_block(name: str, arguments: dict[str, Any]) -> str:
    """A recorded call as the model would have written it (for replaying a transcript)."""
    payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"```json\n{payload}\n```"


def results_text(results: Sequence[tuple[str, str, bool]]) -> str:
    """Tool results `(name, output, is_error)` as the user message that answers them."""
    parts = []
    for name, output, is_error in results:
        label = "tool error" if is_error else "tool result"
        parts.append(f"[{label}: {name}]\n{output if output.strip() else '(no output)'}")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class PromptedCall:
    """A tool call read from a reply's text; `problem` says why it cannot run."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True)
class ParsedReply:
    calls: list[PromptedCall]
    text: str  # the reply without its call blocks (what is shown as the agent's text)


@dataclass
class _Candidate:
    start: int
    end: int
    body: str
    fenced: bool  # inside a fence or a <tool_call> element (vs the whole reply)


def parse_calls(text: str, known: Collection[str], *, strict: bool) -> ParsedReply:
    """The tool calls in a reply's text.

    `strict` (prompted mode, where blocks are the only way to call a tool): every block
    shaped like a call counts, and one naming an unknown tool, with arguments that are not
    an object, or with broken JSON becomes a call with a `problem`. Otherwise (`auto`, on
    a server that also offers native calls) blocks count only when they name a known tool,
    so a reply quoting some unrelated JSON stays plain text.
    """
    candidates = _candidates(text)
    calls: list[PromptedCall] = []
    spans: list[tuple[int, int]] = []
    for candidate in candidates:
        found = _read(candidate, known, strict=strict)
        if found:
            calls += found
            spans.append((candidate.start, candidate.end))
    if not calls:
        return ParsedReply([], text)
    prose, position = [], 0
    for start, end in spans:
        prose.append(text[position:start])
        position = end
    prose.append(text[position:])
    remaining = re.sub(r"\n{3,}", "\n\n", "".join(prose)).strip()
    return ParsedReply(calls, remaining)


def _candidates(text: str) -> list[_Candidate]:
    found = [
        _Candidate(m.start(), m.end(), m.group(2), fenced=True)
        for m in _FENCE.finditer(text)
        if m.group(1).lower() in _JSON_FENCES and m.group(2).lstrip()[:1] in ("{", "[")
    ]
    found += [
        _Candidate(m.start(), m.end(), m.group(1), fenced=True)
        for m in _TOOL_CALL_TAG.finditer(text)
        if not any(c.start <= m.start() < c.end for c in found)
    ]
    if not found:
        stripped = text.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            start = text.index(stripped[0])
            found.append(_Candidate(start, start + len(stripped), stripped, fenced=False))
    return sorted(found, key=lambda c: c.start)


def _read(candidate: _Candidate, known: Collection[str], *, strict: bool) -> list[PromptedCall]:
    """The calls one block holds (none if it is not an attempt at a call)."""
    try:
        value = json.loads(candidate.body)
    except json.JSONDecodeError as exc:
        named = _NAMED.search(candidate.body)
        attempted = named is not None and (strict or named.group(1) in known)
        if not attempted:
            return []
        name = named.group(1) if named else "?"
        where = f"line {exc.lineno} column {exc.colno}"
        problem = f"The tool call block could not be read as JSON ({exc.msg} at {where})."
        return [PromptedCall(name, problem=f"{problem} {REMINDER}")]
    items = value if isinstance(value, list) else [value]
    shaped = [item for item in items if _call_shaped(item)]
    if not shaped or len(shaped) != len(items):
        return []  # not (only) calls: some other JSON the model showed
    if not strict and not any(_name(item) in known for item in shaped):
        return []
    return [_call(item, known) for item in shaped]


def _call_shaped(item: Any) -> bool:
    if not isinstance(item, dict) or not isinstance(_name(item), str):
        return False
    others = set(item) - {*NAME_KEYS, *ARGUMENT_KEYS, "id", "type"}
    return not others


def _name(item: dict[str, Any]) -> Any:
    return next((item[key] for key in NAME_KEYS if key in item), None)


def _call(item: dict[str, Any], known: Collection[str]) -> PromptedCall:
    name = str(_name(item))
    if name not in known:
        available = ", ".join(sorted(known)) or "(none)"
        return PromptedCall(
            name,
            problem=f"There is no tool named {name!r}. Available tools: {available}. {REMINDER}",
        )
    raw: Any = next((item[key] for key in ARGUMENT_KEYS if key in item), {})
    if isinstance(raw, str):  # double-encoded, as some models write them
        with contextlib.suppress(json.JSONDecodeError):
            raw = json.loads(raw) if raw.strip() else {}
    if not isinstance(raw, dict):
        return PromptedCall(
            name,
            problem=(
                f"The arguments of {name} must be a JSON object, not "
                f"{type(raw).__name__}. {REMINDER}"
            ),
        )
    return PromptedCall(name, raw)
