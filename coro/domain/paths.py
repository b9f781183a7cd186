"""Paths that come from outside (workflows, agents, API calls, agents' tool calls) are
relative to some root and must stay inside it."""

from __future__ import annotations

import re

_DRIVE = re.compile(r"^[A-Za-z]:")

#: Beyond these the file system refuses the name anyway (ENAMETOOLONG).
MAX_PATH_LENGTH = 1024
MAX_SEGMENT_LENGTH = 255


def check_relative_path(path: str) -> str:
    """Validate a layer-relative path and return it normalised (`a/./b/` → `a/b`).

    Raises ValueError for empty, absolute, drive-qualified or backslashed paths, NUL
    bytes, and any `..` segment.
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError("path is empty")
    if "\x00" in path:
        raise ValueError(f"path {path!r} contains a NUL byte")
    if "\\" in path:
        raise ValueError(f"path {path!r} contains a backslash; use '/' between segments")
    if path.startswith("/") or _DRIVE.match(path):
        raise ValueError(f"path {path!r} is absolute; give a path relative to the layer")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"path is longer than {MAX_PATH_LENGTH} characters")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if any(len(part) > MAX_SEGMENT_LENGTH for part in parts):
        raise ValueError(f"a segment of the path is longer than {MAX_SEGMENT_LENGTH} characters")
    if ".." in parts:
        raise ValueError(f"path {path!r} contains '..'; it must stay inside its layer")
    if not parts:
        raise ValueError(f"path {path!r} is empty")
    return "/".join(parts)
