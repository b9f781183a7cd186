"""A job's layers merged into one directory: `work/<jobId>/_intelligence/` (SPEC §4.8).

Merge rules per relative path:

* **append** — `.claude/CLAUDE.md` and `memory/**/*.md`: every layer's file, in layer
  order (lowest first), each part preceded by a provenance banner
  `<!-- ─── coro layer: <name> (<where the file came from>) ─── -->`;
* **replace** — everything else: the highest layer's file wins, copied whole.

The directory is rebuilt from scratch in a fresh temporary sibling and swapped in by
renames, so a reader never sees half a tree and nothing the agent left in the job
directory (a symlink named `_intelligence`, files inside it) can make the runner write
anywhere else: the old entry is renamed away (a symlink is moved, not followed) and
deleted without following links. `.provenance.json` records which layer gave each file.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from coro.intelligence.layers import MAX_FILE_BYTES, Layer, LayerStack

INTELLIGENCE_DIRNAME = "_intelligence"
PROVENANCE_FILE = ".provenance.json"
INSTRUCTIONS_FILE = ".claude/CLAUDE.md"
_SWAP_ATTEMPTS = 3

MergeMode = Literal["append", "replace"]


def merge_mode(relative: str) -> MergeMode:
    """`append` for `.claude/CLAUDE.md` and markdown under `memory/`, else `replace`."""
    if relative == INSTRUCTIONS_FILE:
        return "append"
    if relative.startswith("memory/") and relative.endswith(".md"):
        return "append"
    return "replace"


def banner(layer: Layer, relative: str) -> str:
    where = layer.describe(relative).replace("-->", "--&gt;")
    return f"<!-- ─── coro layer: {layer.name} ({where}) ─── -->"


def append_part(existing: str | None, layer: Layer, relative: str, content: str) -> str:
    """`existing` followed by `content` under its layer's banner."""
    part = f"{banner(layer, relative)}\n\n{content.strip(chr(10))}\n"
    if existing is None:
        return part
    return f"{existing.rstrip(chr(10))}\n\n{part}"


@dataclass
class Materialised:
    """What `materialise()` wrote."""

    directory: Path
    layers: list[dict[str, Any]]
    #: relative path → the layers that contributed (append: all, in order; replace: the
    #: winner only)
    sources: dict[str, list[str]]
    warnings: list[str] = field(default_factory=list)

    def winner(self, relative: str) -> str | None:
        names = self.sources.get(relative)
        return names[-1] if names else None

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "layers": self.layers,
            "files": {path: self.sources[path] for path in sorted(self.sources)},
            "warnings": self.warnings,
        }


def merge(stack: LayerStack, warnings: list[str]) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The merged files (relative path → bytes) and provenance of `stack`."""
    contributions: dict[str, list[tuple[Layer, bytes]]] = {}
    layer_info: list[dict[str, Any]] = []
    for layer in stack.layers:
        count = 0
        for relative, data in _contents(layer, warnings):
            if isinstance(data, ValueError):
                warnings.append(f"layer {layer.name}: skipped {relative}: {data}")
                continue
            if data is None:
                warnings.append(
                    f"layer {layer.name}: skipped {relative} (a symlink, not a regular "
                    f"file, or larger than {MAX_FILE_BYTES} bytes)"
                )
                continue
            contributions.setdefault(relative, []).append((layer, data))
            count += 1
        info: dict[str, Any] = {**layer.to_json(), "fileCount": count}
        if layer.revision:
            info["revision"] = layer.revision
        layer_info.append(info)

    files: dict[str, bytes] = {}
    sources: dict[str, list[str]] = {}
    for relative, parts in sorted(contributions.items()):
        if merge_mode(relative) == "append":
            text: str | None = None
            for layer, data in parts:
                text = append_part(text, layer, relative, data.decode("utf-8", "replace"))
            files[relative] = (text or "").encode("utf-8")
            sources[relative] = [layer.name for layer, _ in parts]
        else:
            layer, data = parts[-1]
            files[relative] = data
            sources[relative] = [layer.name]
    provenance = {"layers": layer_info, "files": sources}
    return files, provenance


#: The base layer is package data that cannot change while the runner runs: read once.
_BASE_CONTENTS: dict[Path, list[tuple[str, bytes | ValueError | None]]] = {}


def _contents(layer: Layer, warnings: list[str]) -> list[tuple[str, bytes | ValueError | None]]:
    """Every file of `layer` with its bytes (None: unreadable; ValueError: refused)."""
    if layer.kind == "base" and layer.root in _BASE_CONTENTS:
        return _BASE_CONTENTS[layer.root]
    contents = layer.contents(warnings)
    if layer.kind == "base":
        _BASE_CONTENTS[layer.root] = contents
    return contents


def materialise(
    stack: LayerStack, target: Path, wanted: Callable[[str], bool] | None = None
) -> Materialised:
    """Rebuild `target` (normally `work/<jobId>/_intelligence`) from `stack`.

    The parent of `target` must exist. Raises OSError when the directory cannot be
    written; problems with single files are reported in `warnings`."""
    warnings = list(stack.warnings)
    files, provenance = merge(stack, warnings)
    if wanted is not None:
        files = {relative: data for relative, data in files.items() if wanted(relative)}
        provenance["files"] = {k: v for k, v in provenance["files"].items() if k in files}
    if _already_there(target, files, provenance):
        # Most phase boundaries change nothing: leave the directory as it is.
        return Materialised(
            directory=target,
            layers=provenance["layers"],
            sources=provenance["files"],
            warnings=warnings,
        )
    provenance = {
        "recordedAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **provenance,
        "warnings": warnings,
    }
    record = json.dumps(provenance, indent=2).encode() + b"\n"
    try:
        # First materialisation of a job (nothing there yet): write in place.
        os.mkdir(target, 0o755)
    except FileExistsError:
        _rebuild(target, files, record)
    else:
        try:
            _write_all(target, files, record)
        except BaseException:
            _remove_tree(target)
            raise
    return Materialised(
        directory=target,
        layers=provenance["layers"],
        sources=provenance["files"],
        warnings=warnings,
    )


def _write_all(root: Path, files: dict[str, bytes], record: bytes) -> None:
    made: set[str] = set()
    for relative, data in files.items():
        _write_new(root, relative, data, made)
    _write_new(root, PROVENANCE_FILE, record, made)


def _rebuild(target: Path, files: dict[str, bytes], record: bytes) -> None:
    """Build the new directory aside, then swap it in: whatever was at `target` (an
    older copy, something an agent left, a symlink) is replaced, never written through."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    try:
        _write_all(staging, files, record)
        os.chmod(staging, 0o755)
        _swap_in(staging, target)
    finally:
        _remove_tree(staging)


def _already_there(target: Path, files: dict[str, bytes], provenance: dict[str, Any]) -> bool:
    """Whether `target` holds exactly these files and this provenance (and nothing else,
    no symlink): then rewriting it would change nothing."""
    try:
        if not stat.S_ISDIR(os.lstat(target).st_mode):  # a symlink is not a directory here
            return False
    except OSError:
        return False
    seen: dict[str, str] = {}
    pending = [(str(target), "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                relative = f"{prefix}{entry.name}"
                if entry.is_symlink():
                    return False
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, f"{relative}/"))
                elif entry.is_file(follow_symlinks=False):
                    seen[relative] = entry.path
                else:
                    return False
    if seen.keys() != {*files, PROVENANCE_FILE}:
        return False
    try:
        recorded = json.loads(_read(seen[PROVENANCE_FILE]))
        if {k: recorded.get(k) for k in ("layers", "files")} != provenance:
            return False
        for relative, data in files.items():
            if _read(seen[relative], len(data) + 1) != data:
                return False
    except (OSError, ValueError):
        return False
    return True


def _read(path: str, limit: int = -1) -> bytes:
    """The bytes of a file (at most `limit` of them when that is given), with plain
    system calls: a buffered file object costs several more per file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        remaining = limit
        while remaining != 0:
            chunk = os.read(fd, 65536 if remaining < 0 else min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining = remaining - len(chunk) if remaining > 0 else remaining
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write_new(root: Path, relative: str, data: bytes, made: set[str]) -> None:
    """Create `root/relative` (and its folders, remembered in `made`); nothing there may
    exist already."""
    folder = root
    *folders, name = relative.split("/")
    for depth, part in enumerate(folders, 1):
        folder = folder / part
        key = "/".join(folders[:depth])
        if key in made:
            continue
        try:
            os.mkdir(folder, 0o755)
        except FileExistsError:
            if folder.is_symlink() or not folder.is_dir():
                raise
        made.add(key)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    fd = os.open(folder / name, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _swap_in(staging: Path, target: Path) -> None:
    """Replace whatever is at `target` (a directory, a file, a symlink) by `staging`."""
    for attempt in range(_SWAP_ATTEMPTS):
        old: Path | None = None
        if os.path.lexists(target):
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.rename(target, old / "previous")  # moves a symlink itself, never its target
        try:
            os.rename(staging, target)
            return
        except OSError:
            if attempt == _SWAP_ATTEMPTS - 1:
                raise
        finally:
            if old is not None:
                _remove_tree(old)


def _remove_tree(path: Path) -> None:
    """Delete `path` without following symlinks inside (or at) it."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    shutil.rmtree(path, ignore_errors=True)
