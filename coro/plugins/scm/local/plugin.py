"""The local SCM as agents see it: the `ScmPlugin` protocol (clone URLs, pull requests,
their status and comments, reviewers, merges, the connection check)."""

from __future__ import annotations

import asyncio
import os

from coro.plugins.context import PluginContext
from coro.plugins.scm.base import (
    ConnectionCheck,
    MergeResult,
    PrComment,
    PrStatus,
    PullRequest,
)
from coro.plugins.scm.local.core import PLUGIN_ID, LocalRepos, store_errors
from coro.plugins.scm.local.validation import (
    MAX_BODY_CHARS,
    MAX_COMMENT_CHARS,
    MAX_REVIEWERS,
    MAX_TITLE_CHARS,
    LocalScmConflict,
    LocalScmError,
    LocalScmSettings,
    check_person,
    check_text,
    reviewer_list,
)
from coro.state.prs import NewPullRequest, OpenPullRequestExists, PrCommentRecord, PullRequestRecord
from coro.system.git import GitCredentials, GitError

#: Author of pull requests and comments made through the protocol (by agents).
AGENT_AUTHOR = "coro"
#: Attempts at moving the target branch when another writer moved it meanwhile.
_MERGE_ATTEMPTS = 3


class LocalScmPlugin(LocalRepos):
    """The `ScmPlugin` protocol over bare repositories and the runner's pull requests."""

    id = PLUGIN_ID
    #: the local SCM has no webhooks: changes reach the runner through `add_listener`
    webhook: dict[str, str] | None = None

    def __init__(self, settings: LocalScmSettings, context: PluginContext) -> None:
        super().__init__(settings, context)
        #: merges in this process one at a time (git's compare-and-swap covers the rest)
        self._merge_lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Nothing to release: the pull requests live in the runner's state backend."""

    def clone_url(self, repo: str) -> str:
        """The absolute path of the bare repository (git clones and pushes to it)."""
        return str(self.repo_path(self._repo_key(repo)))

    def git_credentials(self) -> GitCredentials | None:
        return None

    def matches_remote(self, remote_url: str) -> bool:
        return self.repo_for_remote(remote_url) is not None

    async def create_pr(
        self,
        repo: str,
        *,
        source_branch: str,
        target_branch: str,
        title: str,
        body: str,
        reviewers: list[str] | None = None,
        author: str | None = None,
    ) -> PullRequest:
        """A pull request from `source_branch` into `target_branch`, both existing in the
        repository. `LocalScmConflict` if one is already open for the same branches."""
        key = await self._key(repo)
        title = check_text(title, "the title", MAX_TITLE_CHARS).strip()
        body = check_text(body or "", "the body", MAX_BODY_CHARS, allow_empty=True)
        names = reviewer_list(reviewers)
        who = check_person(author, "the author") if author is not None else AGENT_AUTHOR
        bare = await self._existing(key)
        for branch in (source_branch, target_branch):
            try:
                await bare.check_branch(branch)
            except GitError:
                raise LocalScmError(f"{branch!r} is not a valid branch name") from None
        if source_branch == target_branch:
            raise LocalScmError("the source and target branches are the same")
        for branch in (source_branch, target_branch):
            if not await bare.branch_exists(branch):
                raise LocalScmError(
                    f"branch {branch!r} does not exist in local repository {key!r} (push it first)"
                )
        new = NewPullRequest(
            repo=key,
            title=title,
            body=body,
            source_branch=source_branch,
            target_branch=target_branch,
            author=who,
            reviewers=tuple(names),
        )
        try:
            record = await self.prs.create(new)
        except OpenPullRequestExists as exc:
            raise LocalScmConflict(
                f"pull request #{exc.existing_id} from {source_branch!r} into "
                f"{target_branch!r} is already open"
            ) from None
        self._notify()
        return pull_request(record)

    async def pr_status(self, repo: str, pr_id: int) -> PrStatus:
        record = await self._record_of(repo, pr_id)
        comments = await self.prs.comments(record.id)
        return PrStatus(
            pull_request=pull_request(record),
            approval_count=len(record.approvals),
            approved_by=list(record.approvals),
            comments=[pr_comment(c) for c in comments],
        )

    async def poll_pr(self, repo: str, pr_id: int) -> PrStatus | None:
        """The status (reading it costs one local query; the poller compares)."""
        return await self.pr_status(repo, pr_id)

    async def post_comment(
        self, repo: str, pr_id: int, body: str, *, in_reply_to: str | None = None
    ) -> PrComment:
        await self._record_of(repo, pr_id)
        return pr_comment(await self._add_comment(pr_id, body, AGENT_AUTHOR, in_reply_to))

    async def request_reviewers(self, repo: str, pr_id: int, reviewers: list[str]) -> None:
        names = reviewer_list(reviewers)
        record = await self._record_of(repo, pr_id)

        def add(current: list[str]) -> list[str]:
            merged = current + [name for name in names if name not in current]
            if len(merged) > MAX_REVIEWERS:
                raise LocalScmError(f"at most {MAX_REVIEWERS} reviewers")
            return merged

        with store_errors("request reviewers of"):
            _, changed = await self.prs.change_reviewers(record.id, add)
        if changed:
            self._notify()

    async def merge(self, repo: str, pr_id: int, *, message: str | None = None) -> MergeResult:
        """Merge the open pull request with a merge commit made in the bare repository
        (always one, even when a fast-forward was possible, so the history shows the
        pull request). Conflicts (or a pull request that is not open) → `merged=False`
        and why."""
        if message is not None:
            check_text(message, "the merge message", MAX_COMMENT_CHARS, allow_empty=True)
        async with self._merge_lock:
            record = await self._record_of(repo, pr_id)
            if record.state != "open":
                return MergeResult(
                    merged=False, message=f"pull request #{pr_id} is already {record.state}"
                )
            bare = await self._existing(record.repo)
            source_branch, target_branch = record.source_branch, record.target_branch
            text = (message or "").strip() or (
                f"Merge pull request #{pr_id} from {source_branch}\n\n{record.title}"
            )
            merged_sha: str | None = None
            for _ in range(_MERGE_ATTEMPTS):
                source = await bare.branch_sha(source_branch)
                target = await bare.branch_sha(target_branch)
                if source is None or target is None:
                    gone = source_branch if source is None else target_branch
                    return MergeResult(merged=False, message=f"branch {gone!r} no longer exists")
                tree, conflicts, why = await bare.merge_tree(target, source)
                if tree is None:
                    if conflicts:
                        return MergeResult(
                            merged=False,
                            message=f"Merge conflict in {', '.join(conflicts)}: update "
                            f"{source_branch!r} with {target_branch!r} and resolve them",
                        )
                    return MergeResult(merged=False, message=f"Cannot merge: {why}")
                commit = await bare.commit_tree(tree, [target, source], text + "\n")
                if await bare.move_branch(
                    target_branch, commit, target, f"coro: merge pull request #{pr_id}"
                ):
                    merged_sha = commit
                    break
            if merged_sha is None:
                return MergeResult(
                    merged=False,
                    message=f"{target_branch!r} kept moving while merging; try again",
                )
            await self.prs.mark_merged(record.id, merged_sha)
        self._notify()
        return MergeResult(
            merged=True,
            sha=merged_sha,
            message=f"Merged pull request #{pr_id} into {target_branch} ({merged_sha[:12]})",
        )

    async def test_connection(self) -> ConnectionCheck:
        where = str(self.repos_dir)
        try:
            await asyncio.to_thread(self.repos_dir.mkdir, parents=True, exist_ok=True)
            writable = await asyncio.to_thread(os.access, self.repos_dir, os.W_OK | os.X_OK)
        except OSError as exc:
            return ConnectionCheck(
                ok=False,
                message=f"Cannot use {where}: {exc.strerror or exc}",
                details={"reposDir": where},
            )
        if not writable:
            return ConnectionCheck(
                ok=False, message=f"{where} is not writable", details={"reposDir": where}
            )
        names = await asyncio.to_thread(self._repo_names)
        return ConnectionCheck(
            ok=True,
            message=f"Local repositories in {where}: {len(names)} "
            "(pull requests are kept in the runner's state database).",
            details={"reposDir": where, "repositories": str(len(names))},
        )


def url(repo: str, pr_id: int) -> str:
    return f"local://{repo}/pull/{pr_id}"


def pull_request(record: PullRequestRecord) -> PullRequest:
    return PullRequest(
        id=record.id,
        url=url(record.repo, record.id),
        title=record.title,
        state=record.state,
        source_branch=record.source_branch,
        target_branch=record.target_branch,
        author=record.author,
    )


def pr_comment(comment: PrCommentRecord) -> PrComment:
    return PrComment(
        id=str(comment.id),
        author=comment.author,
        body=comment.body,
        created_at=comment.created_at,
        in_reply_to=str(comment.in_reply_to) if comment.in_reply_to is not None else None,
    )
