"""The local SCM as developers see it (HTTP `/scm/local/…`, `coro pr …`, the demo):
repositories to create and list, pull requests to list, read (with their diff),
approve, comment on, decline and merge by number alone."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path
from typing import Any

from coro.domain.errors import PluginNotFoundError
from coro.plugins.context import PluginContext
from coro.plugins.scm.base import MergeResult
from coro.plugins.scm.local.bare import BareRepo, read_description, rename_new
from coro.plugins.scm.local.core import store_errors
from coro.plugins.scm.local.plugin import LocalScmPlugin, url
from coro.plugins.scm.local.validation import (
    MAX_DESCRIPTION_CHARS,
    MAX_DIFF_BYTES,
    LocalScmConflict,
    LocalScmError,
    LocalScmNotFound,
    check_person,
    check_pr_id,
    check_repo_name,
    check_text,
    parse_settings,
)
from coro.state.prs import PR_STATES, PrCommentRecord, PullRequestRecord
from coro.system.git import GitDiff, GitError


def create(settings: dict[str, Any], context: PluginContext) -> LocalScm:
    """The plugin for `plugins.installed.local.config`; `PluginConfigError` names the
    failing fields. Does no I/O: `reposDir` and the store are touched on first use."""
    return LocalScm(parse_settings(settings), context)


class LocalScm(LocalScmPlugin):
    """The `local` SCM plugin: the `ScmPlugin` protocol, and the review operations."""

    # -- repositories --

    async def create_repo(
        self, name: str, *, from_dir: Path | None = None, description: str = ""
    ) -> dict[str, Any]:
        """A new bare repository `<reposDir>/<name>.git` whose default branch is
        `defaultBranch`; with `from_dir`, its files (minus git-ignored ones) are the first
        commit of that branch. `LocalScmConflict` if it exists."""
        key = check_repo_name(name)
        description = check_text(
            description, "description", MAX_DESCRIPTION_CHARS, allow_empty=True
        ).strip()
        if from_dir is not None:
            from_dir = await asyncio.to_thread(_absolute, from_dir)
            if not await asyncio.to_thread(from_dir.is_dir):
                raise LocalScmError(f"{from_dir} is not a directory")
        final = self.repo_path(key)
        if await asyncio.to_thread(final.exists):
            raise LocalScmConflict(f"repository {key!r} already exists")
        await asyncio.to_thread(self.repos_dir.mkdir, parents=True, exist_ok=True)
        # built aside, then renamed into place: concurrent creators cannot both win
        staging = self.repos_dir / f".creating-{key}-{secrets.token_hex(4)}"
        bare = BareRepo(staging)
        try:
            await bare.init(self.default_branch)
            if description:
                await asyncio.to_thread(
                    (staging / "description").write_text, description + "\n", "utf-8"
                )
            if from_dir is not None:
                await bare.import_dir(from_dir, self.default_branch, f"Import {key}")
            await asyncio.to_thread(rename_new, staging, final)
        except FileExistsError:
            raise LocalScmConflict(f"repository {key!r} already exists") from None
        finally:
            if await asyncio.to_thread(staging.exists):
                await asyncio.to_thread(shutil.rmtree, staging, True)
        return await self._repo_info(key, open_counts={})

    async def list_repos(self) -> list[dict[str, Any]]:
        """Every repository under `reposDir`, by name."""
        names = await asyncio.to_thread(self._repo_names)
        if not names:
            return []
        counts = await self.prs.open_counts()
        return [await self._repo_info(name, open_counts=counts) for name in names]

    async def _repo_info(self, name: str, *, open_counts: dict[str, int]) -> dict[str, Any]:
        bare = self._bare(name)
        description = await asyncio.to_thread(read_description, bare.path)
        return {
            "name": name,
            "cloneUrl": str(bare.path),
            "description": description,
            "defaultBranch": await bare.current_branch(),
            "branches": await bare.branches(),
            "openPullRequests": open_counts.get(name, 0),
        }

    # -- pull requests --

    async def list_prs(
        self, repo: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Pull requests, newest first, optionally of one repository and/or state."""
        key = await self._key(repo) if repo is not None else None
        chosen = next((s for s in PR_STATES if s == state), None)
        if state is not None and chosen is None:
            raise LocalScmError(f"state must be one of {', '.join(PR_STATES)}")
        return [pr_json(record) for record in await self.prs.list_prs(repo=key, state=chosen)]

    async def get_pr(self, pr_id: int, *, diff: bool = True) -> dict[str, Any]:
        """One pull request with its body, comments (ascending), approvals and, unless
        `diff=False`, its diff: what the source adds to the target since they diverged
        (for a merged pull request, what its merge commit brought), cut after
        `MAX_DIFF_BYTES` (`diffTruncated`; `diffError` says why there is none)."""
        record = await self._record(pr_id)
        comments = await self.prs.comments(record.id)
        result = pr_json(record)
        result["commentCount"] = len(comments)
        result["body"] = record.body
        result["comments"] = [comment_json(c) for c in comments]
        if not diff:
            return result
        found: GitDiff | None = None
        try:
            found = await self._pr_diff(record)
        except (GitError, LocalScmError, PluginNotFoundError) as exc:
            result["diffError"] = str(exc)
        result["diff"] = found.text if found is not None else ""
        result["diffTruncated"] = bool(found and found.truncated)
        return result

    async def _pr_diff(self, record: PullRequestRecord) -> GitDiff:
        bare = await self._existing(record.repo)
        if record.state == "merged" and record.merge_sha:
            sha = record.merge_sha
            return await bare.diff_capped(f"{sha}^1", sha, max_bytes=MAX_DIFF_BYTES)
        source = await bare.branch_sha(record.source_branch)
        target = await bare.branch_sha(record.target_branch)
        if source is None or target is None:
            gone = record.source_branch if source is None else record.target_branch
            raise LocalScmNotFound(f"branch {gone!r} no longer exists")
        base = await bare.merge_base(target, source) or target
        return await bare.diff_capped(base, source, max_bytes=MAX_DIFF_BYTES)

    async def approve(self, pr_id: int, reviewer: str) -> dict[str, Any]:
        """`reviewer` approves the open pull request `pr_id` (again: no change)."""
        pr_id = check_pr_id(pr_id)
        reviewer = check_person(reviewer, "the reviewer")
        with store_errors("approve"):
            record, changed = await self.prs.approve(pr_id, reviewer)
        if changed:
            self._notify()
        return pr_json(record)

    async def comment(
        self,
        pr_id: int,
        body: str,
        author: str,
        in_reply_to: str | int | None = None,
    ) -> dict[str, Any]:
        """A comment on pull request `pr_id` (any state), optionally a reply to another
        comment of the same pull request."""
        return comment_json(await self._add_comment(pr_id, body, author, in_reply_to))

    async def decline(self, pr_id: int) -> dict[str, Any]:
        """Close the open pull request `pr_id` without merging it."""
        pr_id = check_pr_id(pr_id)
        with store_errors("decline"):
            record = await self.prs.decline(pr_id)
        self._notify()
        return pr_json(record)

    async def merge_pr(self, pr_id: int, *, message: str | None = None) -> MergeResult:
        """`merge` by number alone."""
        record = await self._record(pr_id)
        return await self.merge(record.repo, record.id, message=message)


def _absolute(path: Path) -> Path:
    return Path(path).expanduser().absolute()


def pr_json(record: PullRequestRecord) -> dict[str, Any]:
    """A pull request as the HTTP API shows it (camelCase)."""
    return {
        "id": record.id,
        "repo": record.repo,
        "title": record.title,
        "state": record.state,
        "sourceBranch": record.source_branch,
        "targetBranch": record.target_branch,
        "author": record.author,
        "reviewers": list(record.reviewers),
        "approvals": list(record.approvals),
        "commentCount": record.comment_count,
        "url": url(record.repo, record.id),
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
        "mergedAt": record.merged_at,
        "mergeSha": record.merge_sha,
    }


def comment_json(comment: PrCommentRecord) -> dict[str, Any]:
    return {
        "id": comment.id,
        "prId": comment.pr_id,
        "author": comment.author,
        "body": comment.body,
        "inReplyTo": comment.in_reply_to,
        "createdAt": comment.created_at,
    }
