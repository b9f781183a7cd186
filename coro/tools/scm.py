"""Source-control and tracker tools: the agent's hands on repositories, PRs and tickets.

Each call goes to a plugin (`ctx.plugins`): the one named by `pluginId`, else the one
the job's checkout or PR came from, else the job's `params.gitProvider`, else the
configured default. Git work happens in `work/<jobId>/<repoSlug>` with the real `git`
CLI; credentials reach git through `GitWorkspace`'s askpass, never a URL.

What the job must remember is recorded on it: each clone (`checkouts`), each PR opened
(`prMappings` + an `externalRefs` entry, so events find the job) and each merge.
Plugin failures come back to the agent as tool errors with the plugin's own (scrubbed)
message; the job carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from pydantic import Field

from coro.domain.errors import PluginError
from coro.domain.models import Checkout, ExternalRef, Job, PrMapping, PrSeen, iso_now
from coro.plugins.registry import PluginKind, PluginResolutionError
from coro.plugins.scm.base import PrComment, PrStatus, ScmPlugin
from coro.plugins.trackers.base import TrackerPlugin
from coro.system.git import GitError, GitWorkspace, NoCheckout, find_checkout
from coro.tools.registry import ToolContext, ToolError, ToolInput, ToolRegistry

#: who the runner's commits are by
COMMIT_AUTHOR = ("Coro", "coro@localhost")
MAX_BODY = 64 * 1024


class CloneRepoInput(ToolInput):
    repo: str = Field(min_length=1, max_length=300)
    branch: str | None = Field(default=None, max_length=200)
    plugin_id: str | None = Field(default=None, max_length=100)


class CreatePrInput(ToolInput):
    title: str = Field(min_length=1, max_length=300)
    body: str = Field(default="", max_length=MAX_BODY)
    repo: str | None = Field(default=None, max_length=300)
    source_branch: str | None = Field(default=None, max_length=200)
    target_branch: str | None = Field(default=None, max_length=200)
    reviewers: list[str] | None = Field(default=None, max_length=50)
    commit_message: str | None = Field(default=None, max_length=MAX_BODY)
    plugin_id: str | None = Field(default=None, max_length=100)


class PushInput(ToolInput):
    message: str = Field(min_length=1, max_length=MAX_BODY)
    repo: str | None = Field(default=None, max_length=300)


class PrInput(ToolInput):
    pr_id: int = Field(ge=1)
    repo: str | None = Field(default=None, max_length=300)
    plugin_id: str | None = Field(default=None, max_length=100)


class PostCommentInput(PrInput):
    body: str = Field(min_length=1, max_length=MAX_BODY)
    in_reply_to: str | None = Field(default=None, max_length=100)


class AddReviewersInput(PrInput):
    reviewers: list[str] = Field(min_length=1, max_length=50)


class MergePrInput(PrInput):
    message: str | None = Field(default=None, max_length=MAX_BODY)


class IssueInput(ToolInput):
    key: str = Field(min_length=1, max_length=200)
    plugin_id: str | None = Field(default=None, max_length=100)


class CommentIssueInput(IssueInput):
    body: str = Field(min_length=1, max_length=MAX_BODY)


class TransitionIssueInput(IssueInput):
    to: str = Field(min_length=1, max_length=200)


# --- resolution --------------------------------------------------------------------------


def _plugin(ctx: ToolContext, kind: PluginKind, plugin_id: str | None) -> Any:
    if ctx.plugins is None:
        raise ToolError("Source control and trackers are not available in this context")
    try:
        return ctx.plugins.resolve(kind, plugin_id)
    except PluginResolutionError as exc:
        raise ToolError(str(exc)) from exc


def _scm(ctx: ToolContext, job: Job, plugin_id: str | None) -> ScmPlugin:
    plugin: ScmPlugin = _plugin(ctx, "scm", job.scm_plugin_id(plugin_id))
    return plugin


def _checkout(job: Job, repo: str | None) -> Checkout:
    """The clone a call is about: named by repository key or directory, else the only one."""
    if repo is not None:
        for checkout in job.checkouts:
            if repo in (checkout.repo, checkout.slug):
                return checkout
        raise ToolError(f"{repo!r} has not been cloned in this job: call scm_clone_repo first")
    if len(job.checkouts) == 1:
        return job.checkouts[0]
    if not job.checkouts:
        raise ToolError("No repository is cloned in this job: call scm_clone_repo first")
    names = ", ".join(c.repo for c in job.checkouts)
    raise ToolError(f"Several repositories are cloned ({names}): say which with `repo`")


def _pr_target(ctx: ToolContext, job: Job, args: PrInput) -> tuple[ScmPlugin, str]:
    """The plugin and repository key of PR `args.pr_id`."""
    repo = args.repo
    for mapping in job.pr_mappings:
        slug = repo_slug(mapping.repo_slug)
        if mapping.pr_id == args.pr_id and repo in (None, mapping.repo_slug, slug):
            return _scm(ctx, job, args.plugin_id or mapping.plugin_id), mapping.repo_slug
    if repo is not None:
        checkout = next((c for c in job.checkouts if repo in (c.repo, c.slug)), None)
        if checkout is not None:
            return _scm(ctx, job, args.plugin_id or checkout.plugin_id), checkout.repo
        return _scm(ctx, job, args.plugin_id), repo
    if len(job.checkouts) == 1:
        checkout = job.checkouts[0]
        return _scm(ctx, job, args.plugin_id or checkout.plugin_id), checkout.repo
    param = job.params.get("repo")
    if isinstance(param, str) and param:
        return _scm(ctx, job, args.plugin_id), param
    raise ToolError(f"Which repository is PR #{args.pr_id} in? Pass `repo`")


def repo_slug(repo: str) -> str:
    """The directory a repository is cloned into: the last part of its key."""
    return repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


def _branch_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50].strip("-")
    return f"coro/{slug or 'change'}"


def _status_json(status: PrStatus) -> dict[str, Any]:
    pr = status.pull_request
    return {
        "prId": pr.id,
        "title": pr.title,
        "state": pr.state,
        "url": pr.url,
        "sourceBranch": pr.source_branch,
        "targetBranch": pr.target_branch,
        "author": pr.author,
        "approvalCount": status.approval_count,
        "approvedBy": status.approved_by,
        "commentCount": status.comment_count,
    }


def _comment_json(comment: PrComment) -> dict[str, Any]:
    return {
        "id": comment.id,
        "author": comment.author,
        "body": comment.body,
        "createdAt": comment.created_at,
        "inReplyTo": comment.in_reply_to,
        "path": comment.path,
    }


@contextlib.contextmanager
def _plugin_errors() -> Iterator[None]:
    """A plugin's failure (its message is scrubbed) becomes the agent's tool error."""
    try:
        yield
    except PluginError as exc:
        raise ToolError(str(exc)) from exc


async def _cloned(
    ctx: ToolContext, repo: str | None, plugin_id: str | None = None
) -> tuple[Job, Checkout, ScmPlugin, GitWorkspace]:
    """The job, the clone a call is about, its plugin and its git workspace."""
    job = await ctx.store.get(ctx.job_id)
    checkout = _checkout(job, repo)
    plugin = _scm(ctx, job, plugin_id or checkout.plugin_id)
    return job, checkout, plugin, await _workspace(ctx, checkout)


async def _on_remote(workspace: GitWorkspace, branch: str) -> bool:
    """Whether `origin` has `branch` (fetched by the clone or refresh)."""
    try:
        await workspace.resolve_commit(f"origin/{branch}")
    except GitError:
        return False
    return True


async def _workspace(ctx: ToolContext, checkout: Checkout) -> GitWorkspace:
    try:
        _, path = find_checkout(ctx.workdir, checkout.slug)
    except (NoCheckout, ValueError) as exc:
        raise ToolError(f"{checkout.repo}: {exc}; clone it again with scm_clone_repo") from exc
    return GitWorkspace(path)


# --- tools -------------------------------------------------------------------------------


def register(registry: ToolRegistry) -> None:
    @registry.tool(
        "scm_clone_repo",
        "Clone a repository into work/<jobId>/<repoSlug> (or refresh an existing clone). "
        "`branch` checks out that branch (the remote's, e.g. a pull request's head branch, "
        "when it has one), else creates it from the base branch.",
    )
    async def scm_clone_repo(ctx: ToolContext, args: CloneRepoInput) -> Any:
        job = await ctx.store.get(ctx.job_id)
        plugin = _scm(ctx, job, args.plugin_id)
        slug = repo_slug(args.repo)
        if not slug or slug in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._-]+", slug):
            raise ToolError(f"Not a repository name: {args.repo!r}")
        known = next((c for c in job.checkouts if c.slug == slug), None)
        if known is not None and known.repo != args.repo:
            raise ToolError(f"{known.repo} is already cloned into {slug}/")
        credentials = plugin.git_credentials()
        base: str | None
        with _plugin_errors():
            cloned_before = await asyncio.to_thread((ctx.workdir / slug / ".git").exists)
            if known is not None and cloned_before:
                workspace = GitWorkspace(ctx.workdir / slug)
                await workspace.fetch(credentials=credentials)
                base, cloned = known.base_branch, False
            else:
                workspace = await GitWorkspace.clone(
                    plugin.clone_url(args.repo), ctx.workdir / slug, credentials=credentials
                )
                base = await workspace.default_branch() or await workspace.current_branch()
                cloned = True
            if base is None:
                raise ToolError(f"{args.repo} has no default branch (is it empty?)")
            if args.branch:
                if await workspace.branch_exists(args.branch) or await _on_remote(
                    workspace, args.branch
                ):
                    await workspace.checkout(args.branch)  # picks up origin/<branch>
                else:
                    await workspace.create_branch(args.branch, from_ref=f"origin/{base}")
            branch = await workspace.current_branch()
        if known is None:
            record = Checkout(slug=slug, repo=args.repo, plugin_id=plugin.id, base_branch=base)

            def remember(j: Job) -> None:
                j.checkouts = [c for c in j.checkouts if c.slug != slug] + [record]

            await ctx.store.update(ctx.job_id, remember)
        verb = "Cloned" if cloned else "Refreshed"
        await ctx.log(f"[scm] {verb} {args.repo} ({plugin.id}) into {slug}/ on {branch}")
        return {
            "path": slug,
            "repo": args.repo,
            "pluginId": plugin.id,
            "baseBranch": base,
            "branch": branch,
            "cloned": cloned,
        }

    @registry.tool(
        "scm_create_pr",
        "Commit the checkout's changes, push its branch (a new `coro/<work item>` branch "
        "when still on the base branch) and open a pull request for the current work item.",
    )
    async def scm_create_pr(ctx: ToolContext, args: CreatePrInput) -> Any:
        job, checkout, plugin, workspace = await _cloned(ctx, args.repo, args.plugin_id)
        target = args.target_branch or checkout.base_branch
        work_item = job.current_work_item or ctx.phase
        with _plugin_errors():
            current = await workspace.current_branch()
            branch = args.source_branch or current
            if branch is None or branch == target:
                branch = _branch_for(work_item)
                suffix = 2
                while await workspace.branch_exists(branch):
                    branch = f"{_branch_for(work_item)}-{suffix}"
                    suffix += 1
                await workspace.create_branch(branch)
            elif branch != current:
                if await workspace.branch_exists(branch):
                    await workspace.checkout(branch)
                else:
                    await workspace.create_branch(branch)
            await workspace.commit_all(
                args.commit_message or args.title,
                author_name=COMMIT_AUTHOR[0],
                author_email=COMMIT_AUTHOR[1],
            )
            commit = await workspace.head_sha()
            await workspace.push(branch, credentials=plugin.git_credentials())
            reviewers = args.reviewers
            if reviewers is None and isinstance(job.params.get("reviewers"), list):
                reviewers = [str(r) for r in job.params["reviewers"]]
            pr = await plugin.create_pr(
                checkout.repo,
                source_branch=branch,
                target_branch=target,
                title=args.title,
                body=args.body,
                reviewers=reviewers or None,
            )
        mapping = PrMapping(
            pr_id=pr.id,
            work_item=work_item,
            repo_slug=checkout.repo,
            plugin_id=plugin.id,
            url=pr.url,
            opened_at=iso_now(),
            seen=PrSeen(),  # everything after this moment is news for the poller
        )
        ref = ExternalRef(
            kind="pull_request",
            plugin_id=plugin.id,
            repo_key=checkout.repo,
            external_id=str(pr.id),
            url=pr.url,
        )

        def record(j: Job) -> None:
            j.pr_mappings.append(mapping)
            j.external_refs.append(ref)

        await ctx.store.update(ctx.job_id, record)
        await ctx.log(f"[scm] Opened PR #{pr.id} ({branch} → {target}): {args.title} {pr.url}")
        return {
            "prId": pr.id,
            "url": pr.url,
            "branch": branch,
            "targetBranch": target,
            "commit": commit,
        }

    @registry.tool(
        "scm_push",
        "Commit every change in the checkout on its current branch and push it (how review "
        "fixes reach an open pull request). Never pushes the base branch.",
    )
    async def scm_push(ctx: ToolContext, args: PushInput) -> Any:
        _, checkout, plugin, workspace = await _cloned(ctx, args.repo)
        with _plugin_errors():
            branch = await workspace.current_branch()
            if branch is None or branch == checkout.base_branch:
                raise ToolError(
                    f"The checkout is on {branch or 'a detached HEAD'}: changes to "
                    f"{checkout.base_branch} go through a pull request (scm_create_pr)"
                )
            commit = await workspace.commit_all(
                args.message, author_name=COMMIT_AUTHOR[0], author_email=COMMIT_AUTHOR[1]
            )
            await workspace.push(branch, credentials=plugin.git_credentials())
            head = await workspace.head_sha()
        await ctx.log(f"[scm] Pushed {branch} ({head[:12]})")
        return {"branch": branch, "commit": head, "committed": commit is not None}

    @registry.tool("scm_get_pr_status", "A pull request's state, approvals and comment count.")
    async def scm_get_pr_status(ctx: ToolContext, args: PrInput) -> Any:
        job = await ctx.store.get(ctx.job_id)
        plugin, repo = _pr_target(ctx, job, args)
        with _plugin_errors():
            status = await plugin.pr_status(repo, args.pr_id)
        state = status.pull_request.state
        if state in ("merged", "declined"):
            await ctx.store.mark_pr(ctx.job_id, args.pr_id, repo, state)
        return _status_json(status)

    @registry.tool("scm_list_pr_comments", "Every comment on a pull request, oldest first.")
    async def scm_list_pr_comments(ctx: ToolContext, args: PrInput) -> Any:
        job = await ctx.store.get(ctx.job_id)
        plugin, repo = _pr_target(ctx, job, args)
        with _plugin_errors():
            status = await plugin.pr_status(repo, args.pr_id)
        return {"prId": args.pr_id, "comments": [_comment_json(c) for c in status.comments]}

    @registry.tool(
        "scm_post_pr_comment",
        "Comment on a pull request; `inReplyTo` answers a comment in its thread.",
    )
    async def scm_post_pr_comment(ctx: ToolContext, args: PostCommentInput) -> Any:
        job = await ctx.store.get(ctx.job_id)
        plugin, repo = _pr_target(ctx, job, args)
        with _plugin_errors():
            comment = await plugin.post_comment(
                repo, args.pr_id, args.body, in_reply_to=args.in_reply_to
            )

        def own_comment(j: Job) -> bool:
            # The agent's own comment is not news to wake it with.
            mapping = j.find_pr(args.pr_id, repo)
            if mapping is None or mapping.seen is None:
                return False
            mapping.seen.comment_ids.append(comment.id)
            return True

        await ctx.store.update(ctx.job_id, own_comment)
        await ctx.log(f"[scm] Commented on PR #{args.pr_id}")
        return _comment_json(comment)

    @registry.tool("scm_add_pr_reviewers", "Ask people to review a pull request.")
    async def scm_add_pr_reviewers(ctx: ToolContext, args: AddReviewersInput) -> Any:
        job = await ctx.store.get(ctx.job_id)
        plugin, repo = _pr_target(ctx, job, args)
        with _plugin_errors():
            await plugin.request_reviewers(repo, args.pr_id, args.reviewers)
        return {"prId": args.pr_id, "requested": args.reviewers}

    @registry.tool(
        "scm_merge_pr",
        "Merge a pull request (only once it is approved and its comments are answered).",
    )
    async def scm_merge_pr(ctx: ToolContext, args: MergePrInput) -> Any:
        job = await ctx.store.get(ctx.job_id)
        plugin, repo = _pr_target(ctx, job, args)
        with _plugin_errors():
            # an agent's work is merged only once a person approved it (no tool approves)
            status = await plugin.pr_status(repo, args.pr_id)
            if status.approval_count < 1:
                raise ToolError(
                    f"PR #{args.pr_id} has no approval: it can be merged once a reviewer "
                    "approves it (wait for the review with await_event)"
                )
            result = await plugin.merge(repo, args.pr_id, message=args.message)
        if not result.merged:
            raise ToolError(f"PR #{args.pr_id} was not merged: {result.message}")
        await ctx.store.mark_pr(ctx.job_id, args.pr_id, repo, "merged")
        return {"prId": args.pr_id, "merged": True, "sha": result.sha}

    @registry.tool("tracker_get_issue", "A tracker issue: title, description, status, comments.")
    async def tracker_get_issue(ctx: ToolContext, args: IssueInput) -> Any:
        tracker: TrackerPlugin = _plugin(ctx, "tracker", args.plugin_id)
        with _plugin_errors():
            issue = await tracker.get_issue(args.key)
        return asdict(issue)

    @registry.tool("tracker_comment_issue", "Comment on a tracker issue.")
    async def tracker_comment_issue(ctx: ToolContext, args: CommentIssueInput) -> Any:
        tracker: TrackerPlugin = _plugin(ctx, "tracker", args.plugin_id)
        with _plugin_errors():
            comment = await tracker.comment(args.key, args.body)
        await ctx.log(f"[tracker] Commented on {args.key}")
        return asdict(comment)

    @registry.tool(
        "tracker_transition_issue",
        "Move a tracker issue to a status (or through a transition) named `to`.",
    )
    async def tracker_transition_issue(ctx: ToolContext, args: TransitionIssueInput) -> Any:
        tracker: TrackerPlugin = _plugin(ctx, "tracker", args.plugin_id)
        with _plugin_errors():
            transition = await tracker.transition(args.key, args.to)
        await ctx.log(f"[tracker] {args.key} → {transition.to_status}")
        return asdict(transition)
