"""What the local SCM's protocol side and review side share: where the repositories
are, how a repository is named, the pull request store it was given, and the listeners
that hear about every change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from coro.plugins.context import PluginContext
from coro.plugins.scm.local.bare import BareRepo, is_bare_repo
from coro.plugins.scm.local.validation import (
    CONTROL,
    MAX_COMMENT_CHARS,
    LocalScmConflict,
    LocalScmError,
    LocalScmNotFound,
    LocalScmSettings,
    check_comment_id,
    check_person,
    check_pr_id,
    check_repo_name,
    check_text,
    is_repo_name,
)
from coro.state.prs import (
    CommentNotOnPullRequest,
    PrCommentRecord,
    PullRequestNotFound,
    PullRequestNotOpen,
    PullRequestRecord,
)
from coro.system.git import strip_userinfo

logger = logging.getLogger(__name__)

PLUGIN_ID = "local"


@contextlib.contextmanager
def store_errors(action: str) -> Iterator[None]:
    """The store's refusals as the local SCM's errors (`action`: what was refused)."""
    try:
        yield
    except PullRequestNotFound as exc:
        raise LocalScmNotFound(f"no pull request #{exc.pr_id}") from None
    except PullRequestNotOpen as exc:
        raise LocalScmConflict(
            f"cannot {action} pull request #{exc.pr_id}: it is already {exc.state}"
        ) from None
    except CommentNotOnPullRequest as exc:
        raise LocalScmError(
            f"comment {exc.comment_id} is not on pull request #{exc.pr_id}"
        ) from None


class LocalRepos:
    """Bare repositories under `reposDir`; pull requests in the runner's state backend
    (`context.prs`)."""

    def __init__(self, settings: LocalScmSettings, context: PluginContext) -> None:
        self.settings = settings
        self.home = context.home
        self.prs = context.prs
        root = (
            Path(settings.repos_dir).expanduser()
            if settings.repos_dir
            else context.home.root / "repos"
        )
        self.repos_dir = root.absolute()
        self.default_branch = settings.default_branch
        self._listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"LocalScm(repos_dir={str(self.repos_dir)!r})"

    # -- listeners --

    def add_listener(self, callback: Callable[[], None]) -> None:
        """`callback()` runs after every change (synchronously; errors are logged)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:
                logger.exception("a local SCM change listener failed")

    # -- naming repositories --

    def repo_path(self, repo: str) -> Path:
        return self.repos_dir / f"{check_repo_name(repo)}.git"

    def repo_for_remote(self, remote_url: str) -> str | None:
        """The repository name of a remote (a path or `file://` URL of a bare repository
        under `reposDir`), or None."""
        text = strip_userinfo(remote_url.strip())
        if text.startswith("file://"):
            text = text.removeprefix("file://")
        if not text or "://" in text or CONTROL.search(text):
            return None
        try:
            path = Path(text).expanduser()
            if not path.is_absolute():
                return None
            path = path.resolve()
            root = self.repos_dir.resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        if path.parent != root or not path.name.endswith(".git"):
            return None
        name = path.name[:-4]
        if not is_repo_name(name):
            return None
        return name if path.is_dir() else None

    def _repo_key(self, repo: str) -> str:
        """`name`, `name.git`, or the path / `file://` URL of one of our repositories
        (which costs a look at the disk: from async code, use `_key`)."""
        found = self.repo_for_remote(repo) if isinstance(repo, str) and "/" in repo else None
        return found if found is not None else check_repo_name(repo)

    async def _key(self, repo: str) -> str:
        if isinstance(repo, str) and "/" in repo:
            return await asyncio.to_thread(self._repo_key, repo)
        return check_repo_name(repo)

    def _bare(self, name: str) -> BareRepo:
        return BareRepo(self.repo_path(name))

    async def _existing(self, name: str) -> BareRepo:
        bare = self._bare(name)
        if not await asyncio.to_thread(is_bare_repo, bare.path):
            raise LocalScmNotFound(f"no local repository {name!r}")
        return bare

    def _repo_names(self) -> list[str]:
        """Every repository under `reposDir`, by name (blocking)."""
        try:
            entries = list(self.repos_dir.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for entry in entries:
            name = entry.name[:-4] if entry.name.endswith(".git") else ""
            if is_repo_name(name) and is_bare_repo(entry):
                names.append(name)
        return sorted(names)

    # -- pull requests --

    async def _record(self, pr_id: int) -> PullRequestRecord:
        record = await self.prs.get(check_pr_id(pr_id))
        if record is None:
            raise LocalScmNotFound(f"no pull request #{pr_id}")
        return record

    async def _record_of(self, repo: str, pr_id: int) -> PullRequestRecord:
        """The pull request `pr_id`, which must belong to `repo`."""
        key = await self._key(repo)
        record = await self._record(pr_id)
        if record.repo != key:
            raise LocalScmNotFound(f"no pull request #{pr_id} in local repository {key!r}")
        return record

    async def _add_comment(
        self, pr_id: int, body: str, author: str, in_reply_to: str | int | None
    ) -> PrCommentRecord:
        """A comment on pull request `pr_id` (any state), optionally a reply to another
        comment of the same pull request."""
        pr_id = check_pr_id(pr_id)
        body = check_text(body, "the comment", MAX_COMMENT_CHARS)
        author = check_person(author, "the author")
        parent = check_comment_id(in_reply_to)
        with store_errors("comment on"):
            comment = await self.prs.add_comment(pr_id, author, body, parent)
        self._notify()
        return comment
