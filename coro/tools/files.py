"""File tools confined to the job directory `work/<jobId>/`.

Every path an agent gives is relative to `ctx.workdir`. `confined_path` is the one
place that decides whether a path is acceptable: it resolves symlinks and `..` and
refuses anything that lands outside the job directory. Work on disk happens in a
thread so a large file never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from coro.tools.registry import ToolContext, ToolError, ToolInput, ToolRegistry

MAX_READ_BYTES = 10 * 1024 * 1024
MAX_WRITE_BYTES = 5 * 1024 * 1024
DEFAULT_READ_LIMIT = 2000
MAX_LINE_CHARS = 2000
MAX_GLOB_RESULTS = 1000
MAX_GREP_MATCHES = 500
MAX_GREP_TEXT_CHARS = 1000
_BINARY_SNIFF_BYTES = 8192
_SKIPPED_DIRS = frozenset({".git"})


# --------------------------------------------------------------------------- inputs


class FileReadInput(ToolInput):
    path: str = Field(min_length=1, description="File path relative to the job directory.")
    offset: int = Field(default=0, ge=0, description="First line to show (0-based).")
    limit: int = Field(
        default=DEFAULT_READ_LIMIT, ge=1, description="Maximum number of lines to show."
    )


class FileWriteInput(ToolInput):
    path: str = Field(min_length=1, description="File path relative to the job directory.")
    content: str = Field(description="Full new content of the file (UTF-8, at most 5 MiB).")


class FileEditInput(ToolInput):
    path: str = Field(min_length=1, description="File path relative to the job directory.")
    old_text: str = Field(min_length=1, description="Exact text to replace.")
    new_text: str = Field(description="Replacement text.")
    replace_all: bool = Field(
        default=False, description="Replace every occurrence instead of exactly one."
    )


class FileGlobInput(ToolInput):
    pattern: str = Field(
        min_length=1, description="Glob relative to the job directory, e.g. `src/**/*.py`."
    )


class FileGrepInput(ToolInput):
    pattern: str = Field(min_length=1, description="Python regular expression, matched per line.")
    path: str | None = Field(
        default=None, description="File or directory to search (default: the job directory)."
    )
    glob: str | None = Field(
        default=None,
        description="Only search files matching this glob (`*.py` matches by file name at any "
        "depth; a glob with `/` matches the path relative to `path`).",
    )


# --------------------------------------------------------------------------- confinement


def job_root(ctx: ToolContext) -> Path:
    """The job directory, created if missing, fully resolved."""
    try:
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        return ctx.workdir.resolve()
    except OSError as exc:
        raise ToolError(f"job directory unavailable: {exc}") from exc


def confined_path(ctx: ToolContext, raw: str, *, must_exist: bool) -> Path:
    """Resolve `raw` (relative to the job directory) and refuse anything outside it.

    Absolute paths, `..` escapes and symlinks (also dangling ones, and symlinked parent
    directories of a file about to be created) that resolve outside the job directory
    raise `ToolError("path escapes the job directory: ...")`. Returns the resolved path.
    """
    root = job_root(ctx)
    return _confine(root, raw, must_exist=must_exist)


def _confine(root: Path, raw: str, *, must_exist: bool) -> Path:
    if not raw.strip():
        raise ToolError("path must not be empty")
    if "\x00" in raw:
        raise ToolError(f"invalid path: {raw!r}")
    candidate = Path(raw)
    if candidate.is_absolute():
        raise ToolError(
            f"path escapes the job directory: {raw} (paths are relative to the job directory)"
        )
    try:
        resolved = (root / candidate).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, odd names
        raise ToolError(f"cannot resolve path {raw}: {exc}") from exc
    if not resolved.is_relative_to(root):
        raise ToolError(f"path escapes the job directory: {raw}")
    if must_exist and not resolved.exists():
        raise ToolError(f"no such file or directory: {raw}")
    return resolved


def _is_inside(root: Path, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError, ValueError):
        return False


def _display(root: Path, path: Path) -> str:
    """A path as the agent should see it: relative to the job directory, `/`-separated."""
    rel = path.relative_to(root).as_posix()
    return rel or "."


# --------------------------------------------------------------------------- helpers


def _split_lines(text: str) -> list[str]:
    """Lines as an editor numbers them: split on `\\n`, trailing `\\r` dropped."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _looks_binary(data: bytes) -> bool:
    return b"\x00" in data[:_BINARY_SNIFF_BYTES]


def _read_text_file(path: Path, raw: str) -> bytes:
    """Bytes of a regular, text, ≤ 10 MiB file; `ToolError` otherwise."""
    if path.is_dir():
        raise ToolError(f"is a directory: {raw}")
    if not path.is_file():
        raise ToolError(f"not a regular file: {raw}")
    try:
        size = path.stat().st_size
        if size > MAX_READ_BYTES:
            raise ToolError(
                f"file too large: {raw} is {size} bytes (limit {MAX_READ_BYTES}); "
                "use file_grep or shell (head/sed) to look at parts of it"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ToolError(f"cannot read {raw}: {exc.strerror or exc}") from exc
    if len(data) > MAX_READ_BYTES:  # grew since stat
        raise ToolError(f"file too large: {raw} (limit {MAX_READ_BYTES} bytes)")
    if _looks_binary(data):
        raise ToolError(f"binary file, not shown: {raw}")
    return data


def _write_bytes(path: Path, raw: str, data: bytes) -> None:
    if path.is_dir():
        raise ToolError(f"is a directory: {raw}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise ToolError(f"cannot write {raw}: {exc.strerror or exc}") from exc


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a `/`-separated glob: `*`, `?`, `[...]` within a segment, `**` across them."""
    segments = [s for s in pattern.split("/") if s not in ("", ".")]
    parts: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:.*/)?")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts), re.DOTALL)


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        i += 1
        if c == "*":
            while i < n and segment[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i
            if j < n and segment[j] in "!^":
                j += 1
            if j < n and segment[j] == "]":
                j += 1
            while j < n and segment[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "["
                out.append(re.escape(c))
                continue
            body = segment[i:j]
            i = j + 1
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = "".join("\\" + ch if ch in "\\[]&~|^" else ch for ch in body)
            out.append(f"[^/{body}]" if negate else f"[{body}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def _walk(root: Path, top: Path) -> list[tuple[Path, bool]]:
    """Every entry below `top` as (path, is_dir), skipping `.git`, not following
    symlinked directories, and leaving out symlinks that resolve outside `root`."""
    entries: list[tuple[Path, bool]] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DIRS]
        base = Path(dirpath)
        for name in dirnames:
            path = base / name
            if path.is_symlink() and not _is_inside(root, path):
                continue
            entries.append((path, True))
        for name in filenames:
            if name in _SKIPPED_DIRS:  # `.git` files of worktrees and submodules
                continue
            path = base / name
            if path.is_symlink() and not _is_inside(root, path):
                continue
            entries.append((path, False))
    return entries


@dataclass
class _GrepState:
    matches: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


def _grep_file(
    root: Path, path: Path, regex: re.Pattern[str], data: bytes, state: _GrepState
) -> None:
    text = data.decode("utf-8", errors="replace")
    shown = _display(root, path)
    for number, line in enumerate(_split_lines(text), start=1):
        if regex.search(line) is None:
            continue
        if len(state.matches) >= MAX_GREP_MATCHES:
            state.truncated = True
            return
        if len(line) > MAX_GREP_TEXT_CHARS:
            line = line[:MAX_GREP_TEXT_CHARS] + "…"
        state.matches.append({"path": shown, "line": number, "text": line})


# --------------------------------------------------------------------------- operations


def _file_read(ctx: ToolContext, args: FileReadInput) -> dict[str, Any]:
    root = job_root(ctx)
    path = _confine(root, args.path, must_exist=True)
    text = _read_text_file(path, args.path).decode("utf-8", errors="replace")
    lines = _split_lines(text)
    window = lines[args.offset : args.offset + args.limit]
    numbered: list[str] = []
    for number, line in enumerate(window, start=args.offset + 1):
        if len(line) > MAX_LINE_CHARS:
            line = f"{line[:MAX_LINE_CHARS]}… [line truncated, {len(line)} chars]"
        numbered.append(f"{number:>6}\t{line}")
    return {
        "path": _display(root, path),
        "content": "\n".join(numbered),
        "totalLines": len(lines),
        "truncated": args.offset + len(window) < len(lines),
    }


def _file_write(ctx: ToolContext, args: FileWriteInput) -> dict[str, Any]:
    try:
        data = args.content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(f"content is not valid Unicode: {exc.reason}") from exc
    if len(data) > MAX_WRITE_BYTES:
        raise ToolError(f"content too large: {len(data)} bytes (limit {MAX_WRITE_BYTES})")
    root = job_root(ctx)
    path = _confine(root, args.path, must_exist=False)
    _write_bytes(path, args.path, data)
    return {"path": _display(root, path), "bytesWritten": len(data)}


def _file_edit(ctx: ToolContext, args: FileEditInput) -> dict[str, Any]:
    root = job_root(ctx)
    path = _confine(root, args.path, must_exist=True)
    data = _read_text_file(path, args.path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(f"not a UTF-8 text file, refusing to edit: {args.path}") from exc
    old, new = args.old_text, args.new_text
    count = text.count(old)
    if count == 0 and "\r\n" in text and "\n" in old and "\r\n" not in old:
        # file_read shows CRLF files without their `\r`; match them the same way
        old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
        count = text.count(old)
    if count == 0:
        raise ToolError(f"oldText not found in {args.path}")
    if count > 1 and not args.replace_all:
        raise ToolError(
            f"oldText found {count} times in {args.path}; include more surrounding text "
            "to make it unique, or set replaceAll"
        )
    updated = text.replace(old, new) if args.replace_all else text.replace(old, new, 1)
    try:
        encoded = updated.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(f"newText is not valid Unicode: {exc.reason}") from exc
    if len(encoded) > MAX_WRITE_BYTES:
        raise ToolError(f"edited file too large: {len(encoded)} bytes (limit {MAX_WRITE_BYTES})")
    _write_bytes(path, args.path, encoded)
    return {"path": _display(root, path), "replacements": count if args.replace_all else 1}


def _normalised_pattern(raw: str, what: str) -> str:
    if "\x00" in raw:
        raise ToolError(f"invalid {what}: {raw!r}")
    if raw.startswith("/"):
        raise ToolError(
            f"path escapes the job directory: {raw} (patterns are relative to the job directory)"
        )
    normal = posixpath.normpath(raw)
    if normal == ".." or normal.startswith("../"):
        raise ToolError(f"path escapes the job directory: {raw}")
    return normal


def _file_glob(ctx: ToolContext, args: FileGlobInput) -> dict[str, Any]:
    root = job_root(ctx)
    regex = glob_regex(_normalised_pattern(args.pattern, "pattern"))
    matches = sorted(
        rel
        for path, _ in _walk(root, root)
        if regex.fullmatch(rel := _display(root, path)) is not None
    )
    return {
        "matches": matches[:MAX_GLOB_RESULTS],
        "truncated": len(matches) > MAX_GLOB_RESULTS,
    }


def _file_grep(ctx: ToolContext, args: FileGrepInput) -> dict[str, Any]:
    try:
        regex = re.compile(args.pattern)
    except re.error as exc:
        raise ToolError(f"invalid regular expression {args.pattern!r}: {exc}") from exc
    root = job_root(ctx)
    raw_path = args.path if args.path and args.path.strip() else "."
    top = _confine(root, raw_path, must_exist=True)
    state = _GrepState()
    if not top.is_dir():  # one named file: say plainly why it cannot be searched
        _grep_file(root, top, regex, _read_text_file(top, raw_path), state)
        return {"matches": state.matches, "truncated": state.truncated}

    name_only = False
    file_filter: re.Pattern[str] | None = None
    if args.glob:
        glob = _normalised_pattern(args.glob, "glob")
        name_only = "/" not in glob
        file_filter = glob_regex(glob)
    candidates: list[tuple[str, Path]] = []
    for path, is_dir in _walk(root, top):
        if is_dir:
            continue
        if file_filter is not None:
            subject = path.name if name_only else path.relative_to(top).as_posix()
            if file_filter.fullmatch(subject) is None:
                continue
        candidates.append((_display(root, path), path))
    for _, path in sorted(candidates):
        try:
            if not path.is_file() or path.stat().st_size > MAX_READ_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if _looks_binary(data):
            continue
        _grep_file(root, path, regex, data, state)
        if state.truncated:
            break
    return {"matches": state.matches, "truncated": state.truncated}


# --------------------------------------------------------------------------- registration


def register(registry: ToolRegistry) -> None:
    @registry.tool(
        "file_read",
        "Read a text file of the job directory with numbered lines. `offset` is the first "
        f"line (0-based), `limit` the number of lines (default {DEFAULT_READ_LIMIT}). "
        "Returns {path, content, totalLines, truncated}; binaries and files over 10 MiB "
        "are refused.",
    )
    async def file_read(ctx: ToolContext, args: FileReadInput) -> Any:
        return await asyncio.to_thread(_file_read, ctx, args)

    @registry.tool(
        "file_write",
        "Create or overwrite a file (UTF-8, at most 5 MiB) in the job directory; parent "
        "directories are created. Returns {path, bytesWritten}.",
    )
    async def file_write(ctx: ToolContext, args: FileWriteInput) -> Any:
        return await asyncio.to_thread(_file_write, ctx, args)

    @registry.tool(
        "file_edit",
        "Replace an exact substring `oldText` of a file with `newText`. Fails if `oldText` "
        "is absent, or present more than once unless `replaceAll` is set. "
        "Returns {path, replacements}.",
    )
    async def file_edit(ctx: ToolContext, args: FileEditInput) -> Any:
        return await asyncio.to_thread(_file_edit, ctx, args)

    @registry.tool(
        "file_glob",
        "List files and directories of the job directory matching a glob (`*`, `?`, "
        f"`[...]`, `**`), sorted, at most {MAX_GLOB_RESULTS}; `.git` is skipped. "
        "Returns {matches, truncated}.",
    )
    async def file_glob(ctx: ToolContext, args: FileGlobInput) -> Any:
        return await asyncio.to_thread(_file_glob, ctx, args)

    @registry.tool(
        "file_grep",
        "Search text files under `path` (default: the job directory) for a Python regular "
        "expression, line by line, optionally only files matching `glob`. Returns "
        f"{{matches: [{{path, line, text}}], truncated}}, at most {MAX_GREP_MATCHES} matches.",
    )
    async def file_grep(ctx: ToolContext, args: FileGrepInput) -> Any:
        return await asyncio.to_thread(_file_grep, ctx, args)
