"""Intelligence layers: where workflow and agent markdown is looked up (SPEC §4.8).

Two layers are searched, highest first:

- **tenant** — the user's directory (`$CORO_HOME/intelligence` or a checkout of a git
  remote), editable;
- **base** — the markdown shipped inside this package, read-only.

For any relative path the highest layer that has the file wins. Paths come from job
records, API requests and workflow files, so they are checked before use: a path must
be relative, must not climb out with `..`, and must still be inside its layer once
symlinks are resolved.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from coro.engine.workflows import Workflow, WorkflowError, load_workflow_file, strip_front_matter

BASE_LAYER_DIR = Path(__file__).parent / "base"

TENANT = "tenant"
BASE = "base"

_DRIVE = re.compile(r"^[A-Za-z]:")


class WorkflowNotFound(Exception):
    """No layer has a file at the requested workflow path."""

    def __init__(self, workflow_path: str) -> None:
        self.workflow_path = workflow_path
        super().__init__(
            f"workflow '{workflow_path}' was not found in the tenant or the base intelligence "
            "layer (expected a file such as 'workflows/job/workflow.md')"
        )


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


def _within(root: Path, relative: str) -> Path:
    """`root/relative` with symlinks resolved; ValueError when that leaves the root."""
    try:
        real_root = root.resolve()
        target = (real_root / relative).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops end up here
        raise ValueError(f"path '{relative}' cannot be resolved in {root}: {exc}") from None
    if not target.is_relative_to(real_root):
        raise ValueError(f"path '{relative}' resolves outside its layer ({root})")
    return target


def summarize_workflow(workflow: Workflow, layer: str) -> dict[str, Any]:
    """The `GET /workflows` entry of a workflow found in `layer`."""
    return {
        "id": workflow.id,
        "workflowPath": workflow.path,
        "name": workflow.display_name,
        "description": workflow.description,
        "kind": workflow.kind,
        "source": layer,
        "phases": [
            {
                "name": phase.name,
                "status": phase.status,
                "agent": phase.agent,
                "model": phase.model,
                "tier": phase.tier,
                "interactiveCheckpoint": phase.interactive_checkpoint,
                "subagents": [sub.name for sub in phase.subagents],
            }
            for phase in workflow.phases
        ],
        "initialPhase": workflow.initial_phase,
    }


class IntelligenceLayers:
    """Lookups through the tenant layer, then the base layer."""

    def __init__(self, tenant_dir: Path, base_dir: Path = BASE_LAYER_DIR) -> None:
        self.tenant_dir = tenant_dir
        self.base_dir = base_dir

    @property
    def layers(self) -> list[tuple[str, Path]]:
        """`(name, root)` pairs, highest priority first."""
        return [(TENANT, self.tenant_dir), (BASE, self.base_dir)]

    def locate(self, path: str) -> tuple[str, Path] | None:
        """`(layer name, real file path)` of the winning file, or None when no layer has it.

        Raises ValueError for an unsafe path or one that a symlink leads out of its layer.
        """
        relative = check_relative_path(path)
        for name, root in self.layers:
            if not root.is_dir():
                continue
            target = _within(root, relative)
            if target.is_file():
                return name, target
        return None

    def resolve(self, path: str) -> Path | None:
        """The real path of the winning file for `path`, or None."""
        found = self.locate(path)
        return found[1] if found else None

    def load_workflow(self, workflow_path: str) -> Workflow:
        """Parse the winning workflow file. The tenant file wins even when it is invalid,
        so the person who wrote it sees their error instead of a silent fallback."""
        relative = check_relative_path(workflow_path)
        found = self.locate(relative)
        if found is None:
            raise WorkflowNotFound(workflow_path)
        return load_workflow_file(found[1], relative)

    def read_agent(self, agent_path: str) -> str | None:
        """The prose of an agent file (`agents/<name>.md`, or just `<name>`), front matter
        removed; None when no layer has it or it cannot be read."""
        if "/" not in agent_path and not agent_path.endswith(".md"):
            agent_path = f"agents/{agent_path}.md"
        found = self.locate(agent_path)
        if found is None:
            return None
        try:
            text = found[1].read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        return strip_front_matter(text)

    def list_workflows(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every usable `workflows/<id>/workflow.md`, tenant first (it wins per path),
        sorted by name. An invalid tenant file still shadows the base file of the same
        path (that is the one a job would load), and invalid files are left out."""
        seen: set[str] = set()
        entries: list[dict[str, Any]] = []
        for layer, root in self.layers:
            workflows_dir = root / "workflows"
            if not workflows_dir.is_dir():
                continue
            for candidate in sorted(workflows_dir.glob("*/workflow.md")):
                relative = PurePosixPath("workflows", candidate.parent.name, "workflow.md")
                key = relative.as_posix()
                if key in seen:
                    continue
                seen.add(key)
                try:
                    target = _within(root, key)
                    if not target.is_file():
                        continue
                    workflow = load_workflow_file(target, key)
                except (ValueError, WorkflowError):
                    continue
                if kind is None or workflow.kind == kind:
                    entries.append(summarize_workflow(workflow, layer))
        entries.sort(key=lambda entry: (str(entry["name"]).lower(), entry["workflowPath"]))
        return entries
