"""Self-improvement proposals kept on disk in the tenant layer (SPEC §4.8).

A local proposal lives in `<tenant>/proposals/<id>/proposal.json` (its files are also
copied under `<id>/files/` for people to read) and never touches live intelligence
until it is approved:

- `tenant` proposals are written into the tenant layer on approval, all files or none;
- `repo` proposals become a branch with the files under `.coro/` and a pull request on
  the job's repository (see `coro.engine.insights.ProposalService`).

There is at most one proposal per (job, layer): while it is `pending`, proposing again
replaces its content; once decided (`approved`/`rejected`) it cannot be changed.

Proposed paths are layer-relative and limited to the kinds of intelligence:
`workflows/<id>/workflow.md`, `agents/<name>.md`, `memory/**/*.md`, `.claude/CLAUDE.md`
and `.claude/skills/**` (`skills/**` is read as `.claude/skills/**`). A leading `.coro/`
(how the files sit in a repository) means the repo layer and is removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError

from coro.domain.models import CamelModel, iso_now, random_suffix, utcnow
from coro.domain.paths import check_relative_path
from coro.domain.workflows import WorkflowError, parse_workflow

logger = logging.getLogger(__name__)

ProposalStatus = Literal["pending", "approved", "rejected"]
PROPOSAL_STATUSES: tuple[str, ...] = ("pending", "approved", "rejected")
Layer = Literal["tenant", "repo"]
LAYERS: tuple[str, ...] = ("tenant", "repo")

#: The runner's own tenant (a local runner serves one).
LOCAL_TENANT = "local"

ProposalType = Literal[
    "new-tool",
    "modify-tool",
    "new-workflow",
    "modify-workflow",
    "new-agent",
    "modify-agent",
    "memory-update",
    "skill-create",
    "skill-update",
    "claude-md-update",
]
PROPOSAL_TYPES: tuple[str, ...] = get_args(ProposalType)

#: how a repository carries its intelligence layer
REPO_PREFIX = ".coro/"

MAX_FILES = 20
MAX_FILE_BYTES = 256 * 1024
MAX_TOTAL_BYTES = 1024 * 1024
MAX_TITLE_CHARS = 200
MAX_RATIONALE_CHARS = 20_000
MAX_DESCRIPTION_CHARS = 50_000

_WORKFLOW = re.compile(r"workflows/[A-Za-z0-9][A-Za-z0-9._-]*/workflow\.md")
_AGENT = re.compile(r"agents/[A-Za-z0-9][A-Za-z0-9._-]*\.md")
_MEMORY = re.compile(r"memory/(?:[^/]+/)*[^/]+\.md")
_CLAUDE_MD = ".claude/CLAUDE.md"
_SKILL = re.compile(r"\.claude/skills/[^/]+/.+")
_PROPOSAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

KIND_HINT = (
    "workflows/<id>/workflow.md, agents/<name>.md, memory/**/*.md, .claude/CLAUDE.md, "
    ".claude/skills/<name>/… (or skills/<name>/…)"
)


class ProposalError(ValueError):
    """The proposal (or a decision on it) is invalid; the message says why."""


class ProposalNotFound(LookupError):
    def __init__(self, proposal_id: str) -> None:
        super().__init__(f"Proposal not found: {proposal_id}")
        self.proposal_id = proposal_id


class ProposalConflict(RuntimeError):
    """The proposal's state does not allow this (already decided, being decided)."""


class ProposalFile(CamelModel):
    path: str
    content: str


class Proposal(CamelModel):
    id: str
    tenant_id: str
    job_id: str
    phase: str | None = None
    type: str
    title: str
    rationale: str = ""
    description: str = ""
    status: ProposalStatus = "pending"
    files: list[ProposalFile] = Field(default_factory=list)
    target_layer: Layer | None = None
    #: repo proposals: where the pull request went
    repo: str | None = None
    plugin_id: str | None = None
    branch: str | None = None
    pr_url: str | None = None
    pr_id: int | None = None
    tracking_job_id: str | None = None
    reviewed_by: str | None = None
    review_note: str | None = None
    decided_at: str | None = None
    #: tenant proposals: when the files were written into the layer
    applied_at: str | None = None
    created_at: str
    updated_at: str

    def summary(self) -> dict[str, Any]:
        data = self.to_json(
            include={
                "id",
                "job_id",
                "type",
                "title",
                "status",
                "target_layer",
                "pr_url",
                "branch",
                "created_at",
                "updated_at",
            }
        )
        data["fileCount"] = len(self.files)
        return data

    @property
    def layer(self) -> Layer:
        return self.target_layer or "tenant"


# --- validation --------------------------------------------------------------------------


def _kind_of(path: str) -> str | None:
    if _WORKFLOW.fullmatch(path):
        return "workflow"
    if _AGENT.fullmatch(path):
        return "agent"
    if _MEMORY.fullmatch(path):
        return "memory"
    if path == _CLAUDE_MD:
        return "claude-md"
    if _SKILL.fullmatch(path):
        return "skill"
    return None


#: which kinds of file each type may change (tool types: any kind)
_TYPE_KINDS: dict[str, frozenset[str]] = {
    "new-workflow": frozenset({"workflow"}),
    "modify-workflow": frozenset({"workflow"}),
    "new-agent": frozenset({"agent"}),
    "modify-agent": frozenset({"agent"}),
    "memory-update": frozenset({"memory"}),
    "skill-create": frozenset({"skill"}),
    "skill-update": frozenset({"skill"}),
    "claude-md-update": frozenset({"claude-md"}),
}


def check_proposal_path(path: str) -> str:
    """A layer-relative path of one of the intelligence kinds, normalised; ProposalError
    otherwise (absolute, `..`, or not a kind of intelligence file)."""
    try:
        relative = check_relative_path(path)
    except ValueError as exc:
        raise ProposalError(f"files: {exc}") from None
    if relative.startswith("skills/"):
        relative = f".claude/{relative}"  # where the layers keep skills
    if _kind_of(relative) is None:
        raise ProposalError(
            f"files: {relative!r} is not an intelligence file (allowed: {KIND_HINT})"
        )
    return relative


def route_files(
    proposal_type: str, files: Iterable[ProposalFile], target_layer: Layer | None
) -> tuple[Layer, list[ProposalFile]]:
    """Check a proposal's files and decide its layer.

    A path starting with `.coro/` is a repository path (repo layer, prefix removed); an
    explicit `target_layer` that contradicts one is an error. Returns the layer and the
    files with normalised layer-relative paths."""
    if proposal_type not in PROPOSAL_TYPES:
        raise ProposalError(f"type must be one of {', '.join(PROPOSAL_TYPES)}")
    files = list(files)
    if not files:
        raise ProposalError("files: a proposal changes at least one file")
    if len(files) > MAX_FILES:
        raise ProposalError(f"files: at most {MAX_FILES} files per proposal")
    layer: Layer | None = target_layer
    seen: set[str] = set()
    checked: list[ProposalFile] = []
    total = 0
    for file in files:
        raw = file.path.strip()
        in_repo = raw.startswith(REPO_PREFIX)
        if in_repo:
            if layer == "tenant":
                raise ProposalError(
                    f"Layer mismatch: {raw!r} is a repository path (.coro/…) but targetLayer "
                    "is tenant"
                )
            layer = "repo"
            raw = raw.removeprefix(REPO_PREFIX)
        relative = check_proposal_path(raw)
        kinds = _TYPE_KINDS.get(proposal_type)
        kind = _kind_of(relative)
        if kinds is not None and kind not in kinds:
            raise ProposalError(
                f"files: a {proposal_type} proposal cannot change {relative!r} (a {kind} file)"
            )
        if relative in seen:
            raise ProposalError(f"files: {relative!r} is listed twice")
        seen.add(relative)
        content = file.content
        if "\x00" in content:
            raise ProposalError(f"files: {relative!r} contains a NUL byte")
        if not content.strip():
            raise ProposalError(f"files: {relative!r} has no content")
        size = len(content.encode("utf-8"))
        if size > MAX_FILE_BYTES:
            raise ProposalError(f"files: {relative!r} is larger than {MAX_FILE_BYTES} bytes")
        total += size
        if kind == "workflow":
            try:
                parse_workflow(content, source=relative, path=relative)
            except WorkflowError as exc:
                raise ProposalError(f"files: {relative!r} is not a valid workflow: {exc}") from None
        checked.append(ProposalFile(path=relative, content=content))
    if total > MAX_TOTAL_BYTES:
        raise ProposalError(f"files: more than {MAX_TOTAL_BYTES} bytes in total")
    return layer or "tenant", checked


def check_text(value: str, what: str, limit: int, *, required: bool = True) -> str:
    if required and not value.strip():
        raise ProposalError(f"{what} must not be empty")
    if len(value) > limit:
        raise ProposalError(f"{what} is longer than {limit} characters")
    return value


def slug(text: str, limit: int = 60) -> str:
    cut = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return cut or "proposal"


def proposal_branch(job_id: str, layer: str, title: str) -> str:
    """`coro/proposal/<jobId>-<layer>-<slug(title)>`, at most 200 characters."""
    name = f"coro/proposal/{slug(job_id, 120)}-{layer}-{slug(title)}"
    return name[:200].rstrip("-/.")


# --- writing files -----------------------------------------------------------------------


def _inside(root: Path, relative: str) -> Path:
    """`root/relative` with symlinks resolved; ProposalError when that leaves `root`."""
    try:
        real_root = root.resolve()
        target = (real_root / relative).resolve()
    except (OSError, RuntimeError) as exc:
        raise ProposalError(f"{relative!r} cannot be resolved: {exc}") from None
    if not target.is_relative_to(real_root) or target == real_root:
        raise ProposalError(f"{relative!r} resolves outside its layer")
    return target


def write_files_atomically(root: Path, files: Iterable[ProposalFile]) -> list[str]:
    """Write `files` under `root`, all of them or (on a failure) none.

    Every file is first written to a temporary file beside its target; only when all are
    staged are they renamed over their targets (each rename is atomic). Returns the
    relative paths written."""
    plan: list[tuple[Path, bytes, str]] = []
    for file in files:
        relative = check_proposal_path(file.path)
        target = _inside(root, relative)
        if target.is_dir():
            raise ProposalError(f"{relative!r} is a directory in the layer")
        plan.append((target, file.content.encode("utf-8"), relative))
    staged: list[tuple[str, Path]] = []
    try:
        for target, data, relative in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
            _inside(root, relative)  # a directory created meanwhile must not lead out
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    return [relative for _, _, relative in plan]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".proposal.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- the store ---------------------------------------------------------------------------

#: proposals being decided right now, by (store root, id): a second decision is a 409
_BUSY: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Proposed:
    proposal: Proposal
    updated: bool


class ProposalStore:
    """`<root>/<id>/proposal.json` (+ `files/`), newest first when listed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- reading --

    def list(self, status: str | None = None, tenant_id: str | None = None) -> list[Proposal]:
        """Proposals newest first; unreadable files are skipped (and logged)."""
        found = []
        for file in sorted(self.root.glob("*/proposal.json")):
            proposal = self._read(file)
            if proposal is None:
                continue
            if status not in (None, proposal.status):
                continue
            if tenant_id not in (None, proposal.tenant_id):
                continue
            found.append(proposal)
        found.sort(key=lambda p: p.created_at, reverse=True)
        return found

    def get(self, proposal_id: str) -> Proposal:
        if not isinstance(proposal_id, str) or not _PROPOSAL_ID.fullmatch(proposal_id):
            raise ProposalNotFound(str(proposal_id)[:200])
        file = self.root / proposal_id / "proposal.json"
        if not file.is_file():
            raise ProposalNotFound(proposal_id)
        proposal = self._read(file)
        if proposal is None or proposal.id != proposal_id:
            raise ProposalNotFound(proposal_id)
        return proposal

    def find(self, job_id: str, layer: str) -> Proposal | None:
        """The proposal of this job for this layer, whatever its status."""
        return next(
            (p for p in self.list() if p.job_id == job_id and p.layer == layer),
            None,
        )

    @staticmethod
    def _read(file: Path) -> Proposal | None:
        try:
            return Proposal.model_validate(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError) as exc:
            logger.warning("skipping unreadable proposal %s: %s", file, exc)
            return None

    # -- writing --

    def save(self, proposal: Proposal) -> Proposal:
        """Write the record (atomically) and the readable copies of its files."""
        directory = self.root / proposal.id
        directory.mkdir(parents=True, exist_ok=True)
        copies = directory / "files"
        if copies.exists():
            shutil.rmtree(copies)
        for file in proposal.files:
            target = copies / check_proposal_path(file.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.content, encoding="utf-8")
        _write_json(directory / "proposal.json", proposal.to_json())
        return proposal

    def propose(
        self,
        *,
        job_id: str,
        phase: str | None,
        proposal_type: str,
        title: str,
        rationale: str,
        description: str,
        files: Iterable[ProposalFile],
        target_layer: Layer | None,
        tenant_id: str = LOCAL_TENANT,
    ) -> Proposed:
        """Create this job's proposal for the layer, or replace the pending one."""
        check_text(title, "title", MAX_TITLE_CHARS)
        check_text(rationale, "rationale", MAX_RATIONALE_CHARS)
        check_text(description, "description", MAX_DESCRIPTION_CHARS, required=False)
        layer, checked = route_files(proposal_type, files, target_layer)
        now = iso_now()
        existing = self.find(job_id, layer)
        if existing is not None:
            if existing.status != "pending":
                raise ProposalConflict(
                    f"This job's {layer} proposal {existing.id} is already {existing.status}; "
                    "a job makes one proposal per layer"
                )
            if self._key(existing.id) in _BUSY:
                raise ProposalConflict(f"Proposal {existing.id} is being decided right now")
            updated = existing.model_copy(
                update={
                    "phase": phase,
                    "type": proposal_type,
                    "title": title.strip(),
                    "rationale": rationale,
                    "description": description,
                    "files": checked,
                    "updated_at": now,
                }
            )
            return Proposed(self.save(updated), updated=True)
        stamp = int(utcnow().timestamp() * 1000)
        proposal = Proposal(
            id=f"proposal-{stamp}-{random_suffix(6)}",
            tenant_id=tenant_id,
            job_id=job_id,
            phase=phase,
            type=proposal_type,
            title=title.strip(),
            rationale=rationale,
            description=description,
            status="pending",
            files=checked,
            target_layer=layer,
            created_at=now,
            updated_at=now,
        )
        return Proposed(self.save(proposal), updated=False)

    def _key(self, proposal_id: str) -> tuple[str, str]:
        return (str(self.root.absolute()), proposal_id)

    @contextlib.contextmanager
    def deciding(self, proposal_id: str) -> Iterator[Proposal]:
        """Hold the proposal for a decision: it must exist and be pending; a concurrent
        decision (or a second one afterwards) is a ProposalConflict."""
        key = self._key(proposal_id)
        if key in _BUSY:
            raise ProposalConflict(f"Proposal {proposal_id} is being decided right now")
        proposal = self.get(proposal_id)
        if proposal.status != "pending":
            raise ProposalConflict(f"Proposal {proposal_id} is already {proposal.status}")
        _BUSY.add(key)
        try:
            yield proposal
        finally:
            _BUSY.discard(key)

    def update(self, proposal: Proposal, **changes: Any) -> Proposal:
        return self.save(proposal.model_copy(update={**changes, "updated_at": iso_now()}))
