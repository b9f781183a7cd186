"""Atlassian document format (ADF) ⇄ readable plain text.

Jira Cloud (REST v3) stores descriptions and comments as ADF: a JSON tree of block
nodes (`paragraph`, `heading`, `bulletList`, `codeBlock`, `table` …) holding inline
nodes (`text` with marks, `mention`, `hardBreak`, `inlineCard` …).

`adf_to_text` flattens a document into markdown-flavoured plain text an agent reads
easily: blank lines between blocks, `#` headings, `-`/`1.` list markers with nested
lists indented under their item, fenced code blocks, `> ` quotes, `| a | b |` table
rows, links as `text (url)`, mentions as `@Name`. It never raises: unknown nodes fall
back to their children or their `text`, malformed parts are skipped, and very deep
trees are cut off.

`text_to_adf` goes the other way for what agents write: paragraphs separated by blank
lines (single newlines become hard breaks), `#` headings, `-`/`*`/`+` and `1.` lists
(nested by indentation), fenced code blocks, `> ` quotes, `---` rules, and inline
`` `code` ``, `**bold**`, `[text](url)` and bare `http(s)://` links. The result is
always a valid ADF `doc` (no empty text nodes, list items starting with a paragraph).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["adf_to_text", "text_to_adf"]

#: Deeper trees are cut off (a guard against hostile or broken documents).
MAX_DEPTH = 48

_INLINE_TYPES = frozenset(
    {
        "text",
        "hardBreak",
        "mention",
        "emoji",
        "inlineCard",
        "date",
        "status",
        "mediaInline",
        "placeholder",
        "inlineExtension",
    }
)

# --- ADF → text -----------------------------------------------------------------------


def adf_to_text(document: Any) -> str:
    """Readable plain text of an ADF document (a `str` is returned as it is, so REST v2
    bodies and already-flattened text pass through; anything else yields "")."""
    if document is None:
        return ""
    if isinstance(document, str):
        return document.strip("\n")
    if not isinstance(document, Mapping):
        return ""
    if document.get("type") in _INLINE_TYPES:
        return _inline([document], 0).strip("\n")
    return "\n".join(_blocks(_children(document), 0)).strip("\n")


def _children(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = node.get("content")
    if not isinstance(content, list):
        return []
    return [child for child in content if isinstance(child, Mapping)]


def _attrs(node: Mapping[str, Any]) -> Mapping[str, Any]:
    attrs = node.get("attrs")
    return attrs if isinstance(attrs, Mapping) else {}


def _attr_str(node: Mapping[str, Any], name: str) -> str:
    value = _attrs(node).get(name)
    return value if isinstance(value, str) else ""


def _is_inline(node: Mapping[str, Any]) -> bool:
    return node.get("type") in _INLINE_TYPES


def _blocks(nodes: list[Mapping[str, Any]], depth: int, *, tight: bool = False) -> list[str]:
    """Lines of a sequence of block nodes; a blank line between blocks unless `tight`.
    Runs of stray inline nodes are treated as one paragraph."""
    rendered: list[list[str]] = []
    run: list[Mapping[str, Any]] = []

    def flush() -> None:
        if run:
            text = _inline(run, depth + 1)
            if text.strip():
                rendered.append(text.split("\n"))
            run.clear()

    for node in nodes:
        if _is_inline(node):
            run.append(node)
            continue
        flush()
        lines = _block(node, depth + 1)
        if lines:
            rendered.append(lines)
    flush()
    out: list[str] = []
    for index, lines in enumerate(rendered):
        if index and not tight:
            out.append("")
        out.extend(lines)
    return out


def _block(node: Mapping[str, Any], depth: int) -> list[str]:
    if depth > MAX_DEPTH:
        return []
    kind = node.get("type")
    children = _children(node)
    if kind == "paragraph":
        text = _inline(children, depth)
        return text.split("\n") if text.strip() else []
    if kind == "heading":
        level = _attrs(node).get("level")
        hashes = "#" * (level if isinstance(level, int) and 1 <= level <= 6 else 1)
        text = " ".join(_inline(children, depth).split())
        return [f"{hashes} {text}"] if text else []
    if kind in ("bulletList", "orderedList", "taskList", "decisionList"):
        return _list(node, depth)
    if kind == "codeBlock":
        language = _attr_str(node, "language").strip()
        code = "".join(
            str(child.get("text", "")) for child in children if child.get("type") == "text"
        )
        return [f"```{language}", *code.rstrip("\n").split("\n"), "```"]
    if kind == "blockquote":
        return [f"> {line}" if line else ">" for line in _blocks(children, depth)]
    if kind == "rule":
        return ["---"]
    if kind == "panel":
        lines = _blocks(children, depth)
        label = _attr_str(node, "panelType")
        if lines and label:
            lines[0] = f"[{label}] {lines[0]}"
        return lines
    if kind in ("expand", "nestedExpand"):
        title = _attr_str(node, "title").strip()
        lines = _blocks(children, depth)
        return [title, *lines] if title else lines
    if kind == "table":
        return _table(node, depth)
    if kind in ("mediaSingle", "mediaGroup"):
        return [line for child in children for line in _block(child, depth + 1)]
    if kind == "media":
        name = _attr_str(node, "alt") or _attr_str(node, "filename") or _attr_str(node, "id")
        return [f"[attachment: {name}]" if name else "[attachment]"]
    if kind in ("blockCard", "embedCard"):
        url = _card_url(node)
        return [url] if url else []
    if kind in ("extension", "bodiedExtension"):
        return _blocks(children, depth)
    if _is_inline(node):
        text = _inline([node], depth)
        return text.split("\n") if text.strip() else []
    if children:
        return _blocks(children, depth)
    raw = node.get("text")
    return raw.split("\n") if isinstance(raw, str) and raw.strip() else []


def _list(node: Mapping[str, Any], depth: int) -> list[str]:
    kind = node.get("type")
    number = 1
    if kind == "orderedList":
        order = _attrs(node).get("order")
        if isinstance(order, int) and not isinstance(order, bool) and order >= 0:
            number = order
    lines: list[str] = []
    for item in _children(node):
        item_kind = item.get("type")
        if item_kind in ("bulletList", "orderedList", "taskList", "decisionList"):
            # A nested list directly inside a list (as task lists allow): indent it.
            lines.extend(f"  {line}" if line else "" for line in _list(item, depth + 1))
            continue
        if kind == "orderedList":
            marker = f"{number}. "
            number += 1
        elif kind == "taskList":
            done = _attr_str(item, "state").upper() == "DONE"
            marker = "- [x] " if done else "- [ ] "
        else:
            marker = "- "
        body = _blocks(_children(item), depth + 1, tight=True) or [""]
        pad = " " * len(marker)
        lines.append(f"{marker}{body[0]}".rstrip())
        lines.extend(f"{pad}{line}" if line else "" for line in body[1:])
    return lines


def _table(node: Mapping[str, Any], depth: int) -> list[str]:
    lines: list[str] = []
    for index, row in enumerate(_children(node)):
        cells = [
            cell for cell in _children(row) if cell.get("type") in ("tableHeader", "tableCell")
        ]
        if not cells:
            continue
        texts = []
        for cell in cells:
            flat = " ".join(line.strip() for line in _blocks(_children(cell), depth + 1))
            texts.append(" ".join(flat.split()).replace("|", "\\|"))
        lines.append("| " + " | ".join(texts) + " |")
        if index == 0 and all(cell.get("type") == "tableHeader" for cell in cells):
            lines.append("|" + "|".join(" --- " for _ in cells) + "|")
    return lines


def _card_url(node: Mapping[str, Any]) -> str:
    url = _attr_str(node, "url")
    if url:
        return url
    data = _attrs(node).get("data")
    if isinstance(data, Mapping) and isinstance(data.get("url"), str):
        return str(data["url"])
    return ""


def _inline(nodes: list[Mapping[str, Any]], depth: int) -> str:
    if depth > MAX_DEPTH:
        return ""
    parts: list[str] = []
    for node in nodes:
        kind = node.get("type")
        if kind == "text":
            parts.append(_text(node))
        elif kind == "hardBreak":
            parts.append("\n")
        elif kind == "mention":
            name = _attr_str(node, "text").strip() or _attr_str(node, "id").strip() or "someone"
            parts.append(name if name.startswith("@") else f"@{name}")
        elif kind == "emoji":
            parts.append(_attr_str(node, "text") or _attr_str(node, "shortName"))
        elif kind == "inlineCard":
            parts.append(_card_url(node))
        elif kind == "date":
            parts.append(_date(_attrs(node).get("timestamp")))
        elif kind == "status":
            label = _attr_str(node, "text").strip()
            parts.append(f"[{label}]" if label else "")
        elif kind == "mediaInline":
            name = _attr_str(node, "alt") or _attr_str(node, "filename")
            parts.append(f"[attachment: {name}]" if name else "[attachment]")
        elif kind == "placeholder":
            continue
        elif _children(node):
            parts.append(_inline(_children(node), depth + 1))
        elif isinstance(node.get("text"), str):
            parts.append(str(node["text"]))
    return "".join(parts)


def _text(node: Mapping[str, Any]) -> str:
    text = node.get("text")
    if not isinstance(text, str):
        return ""
    marks = node.get("marks")
    href = ""
    code = False
    if isinstance(marks, list):
        for mark in marks:
            if not isinstance(mark, Mapping):
                continue
            if mark.get("type") == "code":
                code = True
            elif mark.get("type") == "link":
                href = _attr_str(mark, "href")
    if code and text.strip():
        text = f"`{text}`"
    if href and href not in (text, f"`{href}`"):
        text = f"{text} ({href})" if text.strip() else href
    return text


def _date(timestamp: Any) -> str:
    try:
        millis = int(timestamp)
        return datetime.fromtimestamp(millis / 1000, tz=UTC).date().isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return str(timestamp) if isinstance(timestamp, str) else ""


# --- text → ADF -----------------------------------------------------------------------

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})\s*([\w+#.\-]*)\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_QUOTE = re.compile(r"^\s{0,3}> ?(.*)$")
_ITEM = re.compile(r"^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$")
_INLINE = re.compile(
    r"(?P<code>`[^`\n]+`)"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<href>https?://[^\s)]+|mailto:[^\s)]+)\)"
    r"|\*\*(?P<bold>[^*\n]+)\*\*"
    r"|<(?P<angle>https?://[^\s>]+)>"
    r"|(?P<url>https?://[^\s<>\"]+)"
)
_TRAILING_PUNCTUATION = ".,;:!?)]}'\""


def text_to_adf(text: str) -> dict[str, Any]:
    """A valid ADF `doc` for markdown-ish plain text (see the module docstring)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return {"type": "doc", "version": 1, "content": _parse_blocks(lines)}


def _parse_blocks(lines: list[str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        if fence := _FENCE.match(line):
            block, index = _parse_code(lines, index, fence.group(1), fence.group(2))
            blocks.append(block)
        elif heading := _HEADING.match(line):
            content = _parse_inline(heading.group(2))
            node: dict[str, Any] = {"type": "heading", "attrs": {"level": len(heading.group(1))}}
            node["content"] = content
            blocks.append(node)
            index += 1
        elif _RULE.match(line):
            blocks.append({"type": "rule"})
            index += 1
        elif _QUOTE.match(line):
            quoted: list[str] = []
            while index < len(lines) and (match := _QUOTE.match(lines[index])):
                quoted.append(match.group(1))
                index += 1
            inner = []
            for block in _parse_blocks(quoted):
                if block["type"] == "heading":  # not allowed in a quote: keep its text
                    block = {"type": "paragraph", "content": block["content"]}
                if block["type"] in ("paragraph", "bulletList", "orderedList", "codeBlock"):
                    inner.append(block)
            if inner:
                blocks.append({"type": "blockquote", "content": inner})
        elif item := _ITEM.match(line):
            block, index = _parse_list(lines, index, len(item.group(1)))
            blocks.append(block)
        else:
            paragraph: list[str] = []
            while index < len(lines) and lines[index].strip():
                current = lines[index]
                if paragraph and _starts_block(current):
                    break
                paragraph.append(current.strip())
                index += 1
            blocks.append(_paragraph(paragraph))
    return blocks


def _starts_block(line: str) -> bool:
    return bool(
        _FENCE.match(line)
        or _HEADING.match(line)
        or _QUOTE.match(line)
        or _ITEM.match(line)
        or _RULE.match(line)
    )


def _parse_code(
    lines: list[str], index: int, marker: str, language: str
) -> tuple[dict[str, Any], int]:
    body: list[str] = []
    index += 1
    while index < len(lines):
        stripped = lines[index].strip()
        if stripped.startswith(marker[0] * len(marker)) and not stripped.strip(marker[0]):
            index += 1
            break
        body.append(lines[index])
        index += 1
    code = "\n".join(body)
    node: dict[str, Any] = {"type": "codeBlock"}
    if language:
        node["attrs"] = {"language": language}
    node["content"] = [{"type": "text", "text": code}] if code else []
    return node, index


def _parse_list(lines: list[str], index: int, indent: int) -> tuple[dict[str, Any], int]:
    first = _ITEM.match(lines[index])
    assert first is not None
    ordered = first.group(2)[0].isdigit()
    node: dict[str, Any] = {"type": "orderedList" if ordered else "bulletList"}
    if ordered:
        start = int(first.group(2)[:-1])
        if start != 1:
            node["attrs"] = {"order": start}
    items: list[dict[str, Any]] = []
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            # A blank line inside a list: continue only if the list (or a nested one) goes on.
            ahead = index + 1
            while ahead < len(lines) and not lines[ahead].strip():
                ahead += 1
            following = _ITEM.match(lines[ahead]) if ahead < len(lines) else None
            if following is None or len(following.group(1)) < indent:
                break
            index = ahead
            continue
        match = _ITEM.match(line)
        if match is not None:
            width = len(match.group(1))
            if width < indent:
                break
            if width <= indent + 1:
                if match.group(2)[0].isdigit() != ordered:
                    break
                items.append(
                    {"type": "listItem", "content": [_paragraph([match.group(3).strip()])]}
                )
                index += 1
                continue
            if items:
                nested, index = _parse_list(lines, index, width)
                items[-1]["content"].append(nested)
                continue
            break
        if items and len(line) - len(line.lstrip()) > indent and not _starts_block(line):
            # An indented continuation line of the current item's text.
            last = items[-1]["content"][-1]
            if last["type"] == "paragraph":
                last["content"] = [
                    *last["content"],
                    {"type": "hardBreak"},
                    *_parse_inline(line.strip()),
                ]
                index += 1
                continue
        break
    node["content"] = items
    return node, index


def _paragraph(lines: list[str]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for number, line in enumerate(lines):
        if number:
            content.append({"type": "hardBreak"})
        content.extend(_parse_inline(line))
    return {"type": "paragraph", "content": content}


def _parse_inline(text: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []

    def plain(value: str, marks: list[dict[str, Any]] | None = None) -> None:
        if not value:
            return
        node: dict[str, Any] = {"type": "text", "text": value}
        if marks:
            node["marks"] = marks
        nodes.append(node)

    position = 0
    for match in _INLINE.finditer(text):
        start, end = match.span()
        trailing = ""
        if match.group("code"):
            plain(text[position:start])
            plain(match.group("code")[1:-1], [{"type": "code"}])
        elif match.group("label"):
            plain(text[position:start])
            plain(match.group("label"), [_link(match.group("href"))])
        elif match.group("bold"):
            plain(text[position:start])
            plain(match.group("bold"), [{"type": "strong"}])
        elif match.group("angle"):
            plain(text[position:start])
            plain(match.group("angle"), [_link(match.group("angle"))])
        else:
            url = match.group("url")
            stripped = url.rstrip(_TRAILING_PUNCTUATION)
            # Keep a closing parenthesis that belongs to the URL (…/Foo_(bar)).
            while (
                stripped != url
                and url[len(stripped)] == ")"
                and stripped.count("(") > stripped.count(")")
            ):
                stripped += ")"
            trailing = url[len(stripped) :]
            plain(text[position:start])
            if stripped:
                plain(stripped, [_link(stripped)])
        plain(trailing)
        position = end
    plain(text[position:])
    return nodes


def _link(href: str) -> dict[str, Any]:
    return {"type": "link", "attrs": {"href": href}}
