"""Self-improvement proposals: what they may contain and how an approved one is applied
(SPEC §4.8). They are kept by the state backend (`backend.proposals`, see
`coro.state.proposals`) and never touch live intelligence until approved:

- `tenant` proposals are written into the tenant layer on approval, all files or none;
- `repo` proposals become a branch with the files under `.coro/` and a pull request on
  the job's repository (see `coro.engine.insights.ProposalService`).

There is at most one proposal per (job, layer): while it is `pending`, proposing again
replaces its content; once decided (`approved`/`rejected`) it cannot be changed.

Proposed paths are layer-relative and limited to the kinds of intelligence:
`workflows/<id>/workflow.md`, `agents/<name>.md`, `memory/**/*.md`, `.claude/CLAUDE.md`
and `.claude/skills/**` (`skills/**` is read as `.claude/skills/**`). A leading `.coro/`
(how the files sit in a repository) means the repo layer and is removed.

Runners before this one kept proposals as `<tenant>/proposals/<id>/proposal.json`;
`import_disk_proposals` (run at start-up) moves them into the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

from pydantic import ValidationError

from coro.domain.models import iso_now, random_suffix, utcnow
from coro.domain.paths import check_relative_path
from coro.domain.workflows import WorkflowError, parse_workflow
from coro.state.proposals import (
    Layer,
    Proposal,
    ProposalFile,
    ProposalNotFound,
    ProposalStore,
    Proposed,
)

logger = logging.getLogger(__name__)

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


# --- the store's side -------------------------------------------------------------------


def check_proposal_id(proposal_id: str) -> str:
    """A proposal id as proposals are named (anything else names none): `ProposalNotFound`."""
    if not isinstance(proposal_id, str) or not _PROPOSAL_ID.fullmatch(proposal_id):
        raise ProposalNotFound(str(proposal_id)[:200])
    return proposal_id


async def get_proposal(store: ProposalStore, proposal_id: str) -> Proposal:
    """The stored proposal; `ProposalNotFound`."""
    found = await store.get(check_proposal_id(proposal_id))
    if found is None:
        raise ProposalNotFound(proposal_id)
    return found


async def propose(
    store: ProposalStore,
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
    """Check a proposal and store it as this job's proposal for its layer (replacing the
    pending one). `ProposalError` for invalid content, `ProposalConflict` if the job's
    proposal for the layer is decided or being decided."""
    check_text(title, "title", MAX_TITLE_CHARS)
    check_text(rationale, "rationale", MAX_RATIONALE_CHARS)
    check_text(description, "description", MAX_DESCRIPTION_CHARS, required=False)
    layer, checked = route_files(proposal_type, files, target_layer)
    now = iso_now()
    stamp = int(utcnow().timestamp() * 1000)
    return await store.propose(
        Proposal(
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
    )


# --- proposals an older runner kept on disk ----------------------------------------------

#: Where they were: `<tenant layer>/proposals/<id>/proposal.json`.
DISK_DIRNAME = "proposals"
DISK_RECORD = "proposal.json"
#: What a record is renamed to once it is in the store (kept for people, never re-read).
DISK_IMPORTED = "proposal.imported.json"


def _read_disk_records(root: Path) -> list[tuple[Path, Proposal]]:
    """Every readable `<root>/*/proposal.json`, newest first (blocking). Unreadable ones
    are logged and left where they are."""
    found: list[tuple[Path, Proposal]] = []
    for file in sorted(root.glob(f"*/{DISK_RECORD}")):
        try:
            proposal = Proposal.model_validate(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError) as exc:
            logger.warning("not importing unreadable proposal %s: %s", file, exc)
            continue
        found.append((file, proposal))
    found.sort(key=lambda item: item[1].created_at, reverse=True)
    return found


async def import_disk_proposals(store: ProposalStore, tenant_dir: Path) -> int:
    """Move the proposals an older runner kept under `<tenant_dir>/proposals/` into
    `store` (idempotent: a record is renamed `proposal.imported.json` once stored, and
    one stored already is not stored again). Newest first, so that of two for one job
    and layer, the newer stays the one proposing replaces, as it was. Returns how many
    were added."""
    records = await asyncio.to_thread(_read_disk_records, tenant_dir / DISK_DIRNAME)
    added = 0
    for file, proposal in records:
        if await store.adopt(proposal):
            added += 1
        await asyncio.to_thread(file.replace, file.with_name(DISK_IMPORTED))
    if added:
        logger.info("imported %d proposal(s) from %s", added, tenant_dir / DISK_DIRNAME)
    return added
