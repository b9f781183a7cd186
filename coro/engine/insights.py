"""Developer curation of insights, and decisions on proposals (SPEC §2.1, §4.8).

`InsightService` approves, rejects, edits and deletes the insights agents recorded on a
job. Edits are kept beside the agent's text (`editedSummary`, …) and win wherever the
insight is shown. A soft delete rejects the insight (so it stops propagating) and hides
it from listings; a hard delete removes it. Insights a campaign child inherited from a
sibling (`sourceChildName`) belong to the job that recorded them: the child may reject,
edit or soft-delete its copy but not hard-delete it.

`ProposalService` approves or rejects a job's proposal: a `tenant` proposal is written
into the tenant layer (all files or none); a `repo` proposal becomes a branch with the
files under `.coro/`, pushed to the job's repository through its SCM plugin, with a pull
request and an internal `self-update` job that parks until the PR is merged or declined.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coro.domain.errors import PluginError
from coro.domain.models import ExternalRef, Insight, Job, PrMapping, PrSeen, iso_now
from coro.engine.env import EngineEnv
from coro.engine.service import (
    Conflict,
    InvalidRequest,
    JobService,
    NewJob,
    PluginRequired,
    UpstreamFailed,
)
from coro.intelligence.proposals import (
    REPO_PREFIX,
    get_proposal,
    proposal_branch,
    write_files_atomically,
)
from coro.plugins.registry import PluginResolutionError
from coro.plugins.scm.base import PullRequest, ScmPlugin
from coro.state.backend import JobNotFound
from coro.state.proposals import Proposal, ProposalStore
from coro.state.store import JobStore
from coro.system.git import GitError, GitWorkspace
from coro.tools.intelligence import job_repository
from coro.tools.scm import COMMIT_AUTHOR

DEFAULT_ACTOR = "dashboard-user"
SELF_UPDATE_WORKFLOW = "workflows/self-update/workflow.md"
INSIGHT_STATUSES = ("pending", "approved", "rejected")
INSIGHT_LAYERS = ("tenant", "repo")
MAX_EDIT_CHARS = 20_000
MAX_ACTOR_CHARS = 200


class InsightNotFound(LookupError):
    def __init__(self, job_id: str, insight_id: str) -> None:
        super().__init__(f"Insight not found: {insight_id} (job {job_id})")


# --- insights ---------------------------------------------------------------------------------


def _backfill(job: Job) -> bool:
    """Give duplicate ids fresh ones, so every insight can be addressed; True if changed."""
    seen: set[str] = set()
    changed = False
    for index, insight in enumerate(job.insights):
        if not insight.id or insight.id in seen:
            base = insight.id or f"ins-legacy-{index}"
            candidate, n = f"{base}-{index}", 1
            while candidate in seen:
                n += 1
                candidate = f"{base}-{index}-{n}"
            insight.id = candidate
            changed = True
        seen.add(insight.id)
    return changed


#: PATCH keys and what they set: `summary` is `editedSummary` (the agent's text is kept)
_EDIT_KEYS = {
    "editedSummary": "edited_summary",
    "editedDetail": "edited_detail",
    "editedSuggestion": "edited_suggestion",
    "summary": "edited_summary",
    "detail": "edited_detail",
    "suggestion": "edited_suggestion",
}
_LAYER_KEYS = ("userLayer", "suggestedLayer")
PATCH_KEYS = frozenset({"status", "editedBy", *_EDIT_KEYS, *_LAYER_KEYS})


@dataclass(frozen=True)
class InsightPatch:
    """A validated `PATCH` body: only keys that were present are applied."""

    status: str | None = None
    layer: tuple[str | None] | None = None  # (value,) when present; value None clears
    edits: Mapping[str, str | None] | None = None  # field → text (None clears)
    editor: str = DEFAULT_ACTOR

    @classmethod
    def parse(cls, body: Any) -> InsightPatch:
        if not isinstance(body, dict):
            raise InvalidRequest("The body must be a JSON object")
        unknown = sorted(set(body) - PATCH_KEYS)
        if unknown:
            allowed = ", ".join(sorted(PATCH_KEYS))
            raise InvalidRequest(f"Unknown field(s): {', '.join(unknown)} (allowed: {allowed})")
        status = body.get("status")
        if "status" in body and status not in INSIGHT_STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(INSIGHT_STATUSES)}")
        layer: tuple[str | None] | None = None
        given = [k for k in _LAYER_KEYS if k in body]
        if len(given) > 1:
            raise InvalidRequest("Give userLayer or suggestedLayer, not both")
        if given:
            value = body[given[0]]
            if value is not None and value not in INSIGHT_LAYERS:
                raise InvalidRequest(f"{given[0]} must be one of tenant, repo or null")
            layer = (value,)
        edits: dict[str, str | None] = {}
        for key, field in _EDIT_KEYS.items():
            if key not in body:
                continue
            if field in edits:
                raise InvalidRequest(f"{key} repeats another field that edits the same text")
            value = body[key]
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"{key} must be a string when present")
            if isinstance(value, str) and len(value) > MAX_EDIT_CHARS:
                raise InvalidRequest(f"{key} is longer than {MAX_EDIT_CHARS} characters")
            edits[field] = value or None
        editor = body.get("editedBy")
        if editor is not None and not isinstance(editor, str):
            raise InvalidRequest("editedBy must be a string when present")
        editor = (editor or "").strip()[:MAX_ACTOR_CHARS] or DEFAULT_ACTOR
        return cls(status=status, layer=layer, edits=edits or None, editor=editor)


class InsightService:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    async def _job(self, job_id: str) -> Job:
        job = await self.store.get(job_id)
        if _backfill(job):

            def apply(j: Job) -> bool:
                return _backfill(j)

            job, _ = await self.store.update(job_id, apply)
        return job

    async def list(
        self, job_id: str, *, include_inherited: bool = False, include_deleted: bool = False
    ) -> dict[str, Any]:
        job = await self._job(job_id)
        inherited = [i for i in job.insights if i.source_child_name]
        deleted = [i for i in job.insights if i.deleted_at]
        shown = [
            i
            for i in job.insights
            if (include_inherited or not i.source_child_name)
            and (include_deleted or not i.deleted_at)
        ]
        return {
            "jobId": job.id,
            "insights": [i.to_json() for i in shown],
            "inheritedCount": len(inherited),
            "deletedCount": len(deleted),
        }

    async def patch(self, job_id: str, insight_id: str, patch: InsightPatch) -> dict[str, Any]:
        await self._job(job_id)
        found: list[Insight] = []

        def apply(job: Job) -> bool:
            insight = next((i for i in job.insights if i.id == insight_id), None)
            if insight is None:
                return False
            now = iso_now()
            decided = edited = False
            if patch.status is not None:
                decided = True
                if patch.status != insight.status or insight.deleted_at:
                    insight.status = patch.status  # type: ignore[assignment]
                    insight.deleted_at = None  # a decision restores a soft-deleted insight
            if patch.layer is not None:
                insight.user_layer = patch.layer[0]  # type: ignore[assignment]
                decided = True
            for field, value in (patch.edits or {}).items():
                if getattr(insight, field) != value:
                    setattr(insight, field, value)
                    edited = True
            if edited:
                insight.edited_by, insight.edited_at = patch.editor, now
            if decided:
                insight.decided_by, insight.decided_at = patch.editor, now
            found[:] = [insight]
            return decided or edited

        job, _ = await self.store.update(job_id, apply)
        insight = found[0] if found else next((i for i in job.insights if i.id == insight_id), None)
        if insight is None:
            raise InsightNotFound(job_id, insight_id)
        if found and (patch.status or patch.layer or patch.edits):
            what = []
            if patch.status:
                what.append(f"status {insight.status}")
            if patch.layer is not None:
                what.append(f"layer {insight.user_layer or 'unset'}")
            if patch.edits:
                what.append("edited")
            await self.store.log(
                job_id, f"[insight] {insight_id} {', '.join(what)} by {patch.editor}"
            )
        return {"insight": insight.to_json(), "totalInsights": len(job.insights)}

    async def delete(self, job_id: str, insight_id: str, *, hard: bool) -> dict[str, Any]:
        job = await self._job(job_id)
        target = next((i for i in job.insights if i.id == insight_id), None)
        if target is None:
            raise InsightNotFound(job_id, insight_id)
        if hard and target.source_child_name:
            raise Conflict(
                f"Insight {insight_id} was inherited from campaign child "
                f"{target.source_child_name!r}; it can only be rejected or soft-deleted here "
                "(hard-delete it on the job that recorded it)"
            )
        outcome: list[bool] = []

        def apply(j: Job) -> bool:
            insight = next((i for i in j.insights if i.id == insight_id), None)
            if insight is None:
                return False
            outcome[:] = [True]
            if hard:
                j.insights = [i for i in j.insights if i.id != insight_id]
                return True
            if insight.deleted_at and insight.status == "rejected":
                return False  # already soft-deleted
            now = iso_now()
            insight.status = "rejected"
            insight.deleted_at = now
            insight.decided_by, insight.decided_at = DEFAULT_ACTOR, now
            return True

        job, written = await self.store.update(job_id, apply)
        if not outcome:
            raise InsightNotFound(job_id, insight_id)
        if written:
            how = "removed" if hard else "deleted (rejected, hidden)"
            await self.store.log(job_id, f"[insight] {insight_id} {how} by {DEFAULT_ACTOR}")
        return {"removed": hard, "insightId": insight_id, "totalInsights": len(job.insights)}


# --- proposals --------------------------------------------------------------------------------


class ProposalService:
    def __init__(self, env: EngineEnv, jobs: JobService) -> None:
        self.env = env
        self.jobs = jobs
        self.store: ProposalStore = env.store.backend.proposals

    async def get(self, proposal_id: str) -> Proposal:
        return await get_proposal(self.store, proposal_id)

    async def approve(
        self, proposal_id: str, *, reviewer: str | None = None, note: str | None = None
    ) -> Proposal:
        who = (reviewer or "").strip() or DEFAULT_ACTOR
        async with self.store.deciding(proposal_id) as proposal:
            if proposal.layer == "repo":
                return await self._approve_repo(proposal, who, note)
            return await self._approve_tenant(proposal, who, note)

    async def reject(
        self, proposal_id: str, *, reason: str | None = None, reviewer: str | None = None
    ) -> Proposal:
        who = (reviewer or "").strip() or DEFAULT_ACTOR
        async with self.store.deciding(proposal_id) as proposal:
            now = iso_now()
            proposal = await self.store.update(
                proposal.id,
                status="rejected",
                reviewed_by=who,
                review_note=(reason or "").strip() or None,
                decided_at=now,
            )
        suffix = f": {proposal.review_note}" if proposal.review_note else ""
        await self._note(proposal.job_id, f"[proposal] {proposal.id} rejected by {who}{suffix}")
        return proposal

    async def _approved(
        self, proposal: Proposal, who: str, note: str | None, **fields: Any
    ) -> Proposal:
        """Record the approval (and what applying it produced) on the stored proposal."""
        return await self.store.update(
            proposal.id,
            status="approved",
            reviewed_by=who,
            review_note=(note or "").strip() or None,
            decided_at=iso_now(),
            **fields,
        )

    # -- tenant --

    async def _approve_tenant(self, proposal: Proposal, who: str, note: str | None) -> Proposal:
        root = self.env.layers.tenant_dir
        try:
            written = await asyncio.to_thread(write_files_atomically, root, proposal.files)
        except OSError as exc:
            raise Conflict(f"Could not write the tenant layer ({root}): {exc}") from exc
        proposal = await self._approved(proposal, who, note, applied_at=iso_now())
        await self._note(
            proposal.job_id,
            f"[proposal] {proposal.id} approved by {who}: wrote {len(written)} file(s) to the "
            f"tenant layer ({', '.join(written)})",
        )
        return proposal

    # -- repo --

    def _scm_for(self, job: Job, repo: str) -> ScmPlugin:
        try:
            plugin: ScmPlugin = self.env.plugins.resolve("scm", job.scm_plugin_id(repo=repo))
        except PluginResolutionError as exc:
            raise PluginRequired("scm", str(exc)) from exc
        return plugin

    async def _approve_repo(self, proposal: Proposal, who: str, note: str | None) -> Proposal:
        try:
            job = await self.env.store.get(proposal.job_id)
        except JobNotFound:
            raise Conflict(
                f"Job {proposal.job_id} no longer exists: its repository is unknown"
            ) from None
        repo = job_repository(job)
        if repo is None:
            raise Conflict(f"Job {job.id} has no repository to open the pull request on")
        plugin = self._scm_for(job, repo)
        try:
            branch, pr = await self._open_pr(proposal, job, repo, plugin)
        except PluginError as exc:  # git and provider failures: nothing was decided
            raise UpstreamFailed(f"{plugin.id}: {exc}") from exc
        # The PR exists: the decision is recorded whatever happens to the tracking job.
        proposal = await self._approved(
            proposal,
            who,
            note,
            repo=repo,
            plugin_id=plugin.id,
            branch=branch,
            pr_url=pr.url,
            pr_id=pr.id,
        )
        await self._note(
            job.id,
            f"[proposal] {proposal.id} approved by {who}: opened {plugin.id} PR #{pr.id} "
            f"({branch}) on {repo} {pr.url}",
        )
        tracking = await self._track(proposal, job, repo, plugin, pr)
        return await self.store.update(proposal.id, tracking_job_id=tracking.id)

    async def _open_pr(
        self, proposal: Proposal, job: Job, repo: str, plugin: ScmPlugin
    ) -> tuple[str, PullRequest]:
        """Clone the repository aside, commit the files under `.coro/` on a new branch
        from the default branch, push it and open the pull request."""
        credentials = plugin.git_credentials()
        scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="coro-proposal-"))
        try:
            workspace = await GitWorkspace.clone(
                plugin.clone_url(repo), scratch / "repo", credentials=credentials
            )
            base = await workspace.default_branch() or await workspace.current_branch()
            if base is None:
                raise Conflict(f"{repo} has no default branch (is it empty?)")
            wanted = proposal_branch(job.id, "repo", proposal.title)
            branch, n = wanted, 1
            while await _remote_branch_exists(workspace, branch):
                n += 1
                branch = f"{wanted}-{n}"
            await workspace.create_branch(branch, from_ref=f"origin/{base}")
            await asyncio.to_thread(
                write_files_atomically, workspace.path / REPO_PREFIX.rstrip("/"), proposal.files
            )
            message = (
                f"Coro proposal (repo): {proposal.title}\n\n{proposal.rationale}\n\n"
                f"Type: {proposal.type}\nProposal: {proposal.id}\n"
            )
            commit = await workspace.commit_all(
                message, author_name=COMMIT_AUTHOR[0], author_email=COMMIT_AUTHOR[1]
            )
            if commit is None:
                raise Conflict(
                    f"The proposal changes nothing in {repo}: its .coro/ files already have "
                    "this content"
                )
            await workspace.push(branch, credentials=credentials)
            reviewers = job.params.get("reviewers")
            pr = await plugin.create_pr(
                repo,
                source_branch=branch,
                target_branch=base,
                title=f"Coro proposal: {proposal.title}"[:300],
                body=_pr_body(proposal, job),
                reviewers=[str(r) for r in reviewers] if isinstance(reviewers, list) else None,
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        return branch, pr

    async def _track(
        self, proposal: Proposal, job: Job, repo: str, plugin: ScmPlugin, pr: PullRequest
    ) -> Job:
        """The internal `self-update` job that parks until the PR is merged or declined."""
        tracking = await self.jobs.create(
            NewJob(
                workflow_path=SELF_UPDATE_WORKFLOW,
                type="self-update",
                repo=repo,
                git_provider=plugin.id,
                description=f"Intelligence update: {proposal.title} (proposal {proposal.id})",
                trigger_source="internal",
                params={"proposalId": proposal.id, "proposedByJobId": job.id},
            )
        )
        mapping = PrMapping(
            pr_id=pr.id,
            work_item=proposal.id,
            repo_slug=repo,
            plugin_id=plugin.id,
            url=pr.url,
            opened_at=iso_now(),
            seen=PrSeen(),  # anything after the opening is news for the poller
        )
        ref = ExternalRef(
            kind="pull_request",
            plugin_id=plugin.id,
            repo_key=repo,
            external_id=str(pr.id),
            url=pr.url,
        )

        def record(j: Job) -> None:
            j.pr_mappings.append(mapping)
            j.external_refs.append(ref)

        tracking, _ = await self.env.store.update(tracking.id, record)
        await self.env.store.log(
            tracking.id,
            f"[proposal] Tracking PR #{pr.id} on {repo} for proposal {proposal.id} "
            f"(proposed by job {job.id}) {pr.url}",
        )
        await self._note(job.id, f"[proposal] {proposal.id}: self-update job {tracking.id}")
        return tracking

    async def _note(self, job_id: str, text: str) -> None:
        """Log on the proposing job, if it still exists."""
        if await self.env.store.find(job_id) is not None:
            await self.env.store.log(job_id, text)


async def _remote_branch_exists(workspace: GitWorkspace, branch: str) -> bool:
    try:
        await workspace.resolve_commit(f"refs/remotes/origin/{branch}")
    except GitError as exc:
        if exc.kind == "invalid":
            return False
        raise
    return True


def _pr_body(proposal: Proposal, job: Job) -> str:
    files = "\n".join(f"- `{REPO_PREFIX}{f.path}`" for f in proposal.files)
    phase = f" (phase {proposal.phase})" if proposal.phase else ""
    return (
        f"Proposed by Coro job `{job.id}`{phase}.\n\n"
        f"- Type: {proposal.type}\n- Target layer: repo\n- Proposal: {proposal.id}\n\n"
        f"### Files\n{files}\n\n### Rationale\n{proposal.rationale}\n\n"
        f"### Description\n{proposal.description or '(none)'}\n\n"
        "_Filed automatically by Coro. Review and merge to apply._"
    )[:60_000]
