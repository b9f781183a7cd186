"""Self-improvement tools: propose a change to the intelligence, list proposals, read
the memory (SPEC §4.6, §4.8).

`propose_change` only records a proposal (in the state backend): nothing a job reads
changes until a developer approves it (`POST /proposals/:id/approve`). A job has
at most one proposal per layer; proposing again while it is pending replaces it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from coro.domain.models import Job
from coro.domain.paths import check_relative_path
from coro.intelligence.layers import IntelligenceLayers, LayerStack
from coro.intelligence.materialise import append_part
from coro.intelligence.proposals import (
    MAX_DESCRIPTION_CHARS,
    MAX_FILES,
    MAX_RATIONALE_CHARS,
    MAX_TITLE_CHARS,
    ProposalError,
    ProposalType,
    propose,
    route_files,
)
from coro.state.proposals import (
    Layer,
    Proposal,
    ProposalConflict,
    ProposalFile,
    ProposalStatus,
)
from coro.tools.registry import ToolContext, ToolError, ToolInput, ToolRegistry

MEMORY_INDEX = "memory/MEMORY.md"
RATIONALE_PREVIEW = 240


class ProposedFile(ToolInput):
    path: str = Field(min_length=1, max_length=1024)
    content: str = Field(max_length=512 * 1024)


class ProposeChangeInput(ToolInput):
    type: ProposalType
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    rationale: str = Field(min_length=1, max_length=MAX_RATIONALE_CHARS)
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)
    files: list[ProposedFile] = Field(default_factory=list, max_length=MAX_FILES)
    target_layer: Layer | None = None


class ListProposalsInput(ToolInput):
    limit: int = Field(default=20, ge=1, le=100)
    type: ProposalType | None = None
    status: ProposalStatus | None = None


class ReadMemoryInput(ToolInput):
    file: str | None = Field(default=None, min_length=1, max_length=1024)


def _layers(ctx: ToolContext) -> IntelligenceLayers:
    if ctx.layers is None:
        raise ToolError("The intelligence layers are not available in this context")
    return ctx.layers


def job_repository(job: Job) -> str | None:
    """The repository a job works on: `params.repo`, else its only checkout."""
    repo = job.params.get("repo")
    if isinstance(repo, str) and repo.strip():
        return repo.strip()
    if len(job.checkouts) == 1:
        return job.checkouts[0].repo
    return None


def _listing(proposal: Proposal) -> dict[str, Any]:
    rationale = proposal.rationale
    if len(rationale) > RATIONALE_PREVIEW:
        rationale = rationale[:RATIONALE_PREVIEW] + "…"
    return {
        "id": proposal.id,
        "type": proposal.type,
        "title": proposal.title,
        "status": proposal.status,
        "targetLayer": proposal.layer,
        "prUrl": proposal.pr_url,
        "branch": proposal.branch,
        "rationalePreview": rationale,
        "fileCount": len(proposal.files),
        "files": [f.path for f in proposal.files],
        "createdAt": proposal.created_at,
        "jobId": proposal.job_id,
    }


# --- memory through the layers --------------------------------------------------------------


def _read_merged(stack: LayerStack, relative: str) -> tuple[str, list[str]] | None:
    """The file as the job's `_intelligence/` has it: memory files are appended layer by
    layer (lowest first), each part under its layer's banner."""
    text: str | None = None
    present: list[str] = []
    for layer in stack.layers:
        try:
            data = layer.read_bytes(relative)
        except ValueError:  # a symlink leading out of a trusted layer
            continue
        if data is None:
            continue
        text = append_part(text, layer, relative, data.decode("utf-8", errors="replace"))
        present.append(layer.name)
    return (text, present) if text is not None else None


def _memory_files(stack: LayerStack) -> list[dict[str, Any]]:
    seen: dict[str, list[str]] = {}
    for layer in stack.layers:
        for relative in layer.files():
            if relative.startswith("memory/") and relative.endswith(".md"):
                seen.setdefault(relative, []).append(layer.name)
    return [{"path": path, "layers": names} for path, names in sorted(seen.items())]


def _memory_path(raw: str) -> str:
    try:
        relative = check_relative_path(raw)
    except ValueError as exc:
        raise ToolError(f"file: {exc}") from None
    if not relative.startswith("memory/"):
        relative = f"memory/{relative}"
    if not relative.endswith(".md"):
        raise ToolError(f"file: {raw!r} is not a memory file (memory/**/*.md)")
    return relative


# --- tools ---------------------------------------------------------------------------------


def register(registry: ToolRegistry) -> None:
    @registry.tool(
        "propose_change",
        "Propose a change to Coro's intelligence (workflows/<id>/workflow.md, "
        "agents/<name>.md, memory/**/*.md, .claude/CLAUDE.md, skills/…) with a rationale. "
        "Nothing changes until a developer approves it. targetLayer 'tenant' (default) "
        "applies to every job; 'repo' ships the files under .coro/ of this job's "
        "repository as a pull request. One proposal per job and layer: calling again while "
        "it is pending replaces it.",
    )
    async def propose_change(ctx: ToolContext, args: ProposeChangeInput) -> Any:
        store = ctx.store.backend.proposals
        files = [ProposalFile(path=f.path, content=f.content) for f in args.files]
        try:
            layer, _ = route_files(args.type, files, args.target_layer)
        except ProposalError as exc:
            raise ToolError(str(exc)) from None
        job = await ctx.store.get(ctx.job_id)
        if layer == "repo" and job_repository(job) is None:
            raise ToolError(
                "This job has no repository (params.repo) to propose a repo-layer change "
                "to; use targetLayer 'tenant'"
            )
        try:
            proposed = await propose(
                store,
                job_id=ctx.job_id,
                phase=ctx.phase,
                proposal_type=args.type,
                title=args.title,
                rationale=args.rationale,
                description=args.description,
                files=files,
                target_layer=layer,
            )
        except (ProposalError, ProposalConflict) as exc:
            raise ToolError(str(exc)) from None
        proposal = proposed.proposal
        verb = "Updated" if proposed.updated else "Recorded"
        await ctx.log(
            f"[propose_change] {verb} proposal {proposal.id} ({proposal.layer}): "
            f"{proposal.title} — {len(proposal.files)} file(s), awaiting review"
        )
        where = (
            "the tenant layer"
            if proposal.layer == "tenant"
            else "a pull request on this job's repository (files under .coro/)"
        )
        return {
            "proposalId": proposal.id,
            "status": proposal.status,
            "targetLayer": proposal.layer,
            "updated": proposed.updated,
            "files": [f.path for f in proposal.files],
            "nextStep": (
                f"Recorded for review. When a developer approves it, it goes to {where}; "
                "until then every job keeps reading the current intelligence."
            ),
        }

    @registry.tool(
        "list_proposals",
        "Proposals made so far (newest first), to avoid proposing the same thing twice.",
    )
    async def list_proposals(ctx: ToolContext, args: ListProposalsInput) -> Any:
        every = await ctx.store.backend.proposals.list()
        chosen = [
            p for p in every if args.type in (None, p.type) and args.status in (None, p.status)
        ]
        shown = chosen[: args.limit]
        return {
            "proposals": [_listing(p) for p in shown],
            "count": len(shown),
            "totalForTenant": len(every),
        }

    @registry.tool(
        "read_memory",
        "Read Coro's memory. Without `file`: the index (memory/MEMORY.md), the list of "
        "memory files and the pending proposals. With `file` (e.g. 'memory/testing.md'): "
        "that file as jobs see it through the layers.",
    )
    async def read_memory(ctx: ToolContext, args: ReadMemoryInput) -> Any:
        layers = _layers(ctx)
        job = await ctx.store.get(ctx.job_id)
        relative = _memory_path(args.file) if args.file is not None else None
        stack = await asyncio.to_thread(layers.for_job, job, ctx.workdir)
        if relative is not None:
            found = await asyncio.to_thread(_read_merged, stack, relative)
            if found is None:
                known = await asyncio.to_thread(_memory_files, stack)
                names = ", ".join(f["path"] for f in known) or "none"
                raise ToolError(f"No memory file {relative!r} (memory files: {names})")
            content, present = found
            return {"file": relative, "content": content, "layers": present}
        index = await asyncio.to_thread(_read_merged, stack, MEMORY_INDEX)
        files = await asyncio.to_thread(_memory_files, stack)
        pending = await ctx.store.backend.proposals.list("pending")
        return {
            "index": {"path": MEMORY_INDEX, "content": index[0]} if index else None,
            "files": files,
            "pendingProposals": [_listing(p) for p in pending[:20]],
            "pendingCount": len(pending),
        }
