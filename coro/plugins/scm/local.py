"""The offline `local` SCM plugin: bare git repositories on disk, pull requests in the
runner's database (SPEC §4.7).

Settings (`plugins.installed.local.config`, camelCase, all optional):

* `reposDir` (default `$CORO_HOME/repos`): where the bare repositories live, one
  `<name>.git` directory per repository.
* `defaultBranch` (default `main`): the first branch of a repository created here.

A repository is named by its `name` (letters, digits, `.`, `_`, `-`; at most 100
characters; no `..`); its clone URL is the absolute path of the bare repository, which
`GitWorkspace.clone` takes like any URL, and jobs push their branches back to it.

Pull requests, their comments, approvals and requested reviewers are rows of the
`local_*` tables of the runner's SQLite database (`$CORO_HOME/state.db`; see
`coro.state.schema`), migrated by Alembic on first use. Pull request numbers are one
sequence across every repository, so a number alone names a pull request (`coro pr
approve 3`); the protocol methods, which also take the repository, check that it
matches. Developers review through the CLI (`coro pr …`), the dashboard and the HTTP
API (`/scm/local/…`); agents through the `ScmPlugin` protocol.

Merging happens inside the bare repository, without a working tree: `git merge-tree
--write-tree` computes the merged tree (or the conflicting files, in which case the
pull request stays open), `git commit-tree` records a merge commit (always one, even
when a fast-forward was possible, so the history shows the pull request) and `git
update-ref` moves the target branch with a compare-and-swap on its old value.

Every change (created, approved, commented, reviewers requested, merged, declined)
calls the listeners registered with `add_listener`, so the runner can poll at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from sqlalchemy import URL, event, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from coro.domain.errors import PluginError, PluginNotFoundError
from coro.domain.models import iso_now
from coro.plugins.context import PluginContext
from coro.plugins.http import config_error
from coro.plugins.scm.base import (
    ConnectionCheck,
    MergeResult,
    PrComment,
    PrStateName,
    PrStatus,
    PullRequest,
)
from coro.state.schema import local_pr_approvals, local_pr_comments, local_pull_requests
from coro.state.sqlite import configure_sqlite_connection, upgrade_sqlite
from coro.system.git import (
    MAX_DIFF_RESPONSE_BYTES,
    GitCredentials,
    GitDiff,
    GitError,
    GitWorkspace,
    strip_userinfo,
)

logger = logging.getLogger(__name__)

PLUGIN_ID = "local"
#: Who commits what the plugin itself writes (imported files, merge commits).
COMMITTER_NAME = "Coro"
COMMITTER_EMAIL = "coro@localhost"
#: Author of pull requests and comments made through the protocol (by agents).
AGENT_AUTHOR = "coro"

REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_PERSON_CHARS = 100
MAX_TITLE_CHARS = 1_000
MAX_BODY_CHARS = 256 * 1024
MAX_COMMENT_CHARS = 64 * 1024
MAX_DESCRIPTION_CHARS = 1_000
MAX_REVIEWERS = 50
#: The diff of a pull request is cut after this many bytes (`diffTruncated: true`).
MAX_DIFF_BYTES = MAX_DIFF_RESPONSE_BYTES
#: Attempts at moving the target branch when another writer moved it meanwhile.
_MERGE_ATTEMPTS = 3

_STATES: tuple[PrStateName, ...] = ("open", "merged", "declined")
_GIT_DEFAULT_DESCRIPTION = "Unnamed repository"


# --- errors -------------------------------------------------------------------------------


class LocalScmError(PluginError):
    """A request the local SCM refuses; the message is safe to show and `status` is the
    HTTP status that fits (400 invalid input, 409 conflict with the current state)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message, status=status)


class LocalScmConflict(LocalScmError):
    """The repository already exists, the pull request is not open, or a second open
    pull request for the same branches was asked for."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=409)


class LocalScmNotFound(PluginNotFoundError):
    """No such repository, pull request or comment."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404)


# --- settings -----------------------------------------------------------------------------


class LocalScmSettings(BaseModel):
    """`plugins.installed.local.config` (camelCase in config.json)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    repos_dir: str | None = None
    default_branch: str = "main"

    @field_validator("repos_dir")
    @classmethod
    def _repos_dir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or _CONTROL.search(value):
            raise ValueError("must be a directory path")
        return value

    @field_validator("default_branch")
    @classmethod
    def _default_branch(cls, value: str) -> str:
        return _check_branch_syntax(value.strip(), "must be a plain branch name")


def _check_branch_syntax(value: str, problem: str) -> str:
    """A cheap, conservative check of a branch name (git checks it again)."""
    if (
        not _BRANCH_NAME.fullmatch(value)
        or ".." in value
        or "//" in value
        or value.endswith(("/", ".", ".lock"))
        or "/." in value
        or "@{" in value
    ):
        raise ValueError(problem)
    return value


def parse_settings(settings: dict[str, Any]) -> LocalScmSettings:
    try:
        return LocalScmSettings.model_validate(settings)
    except ValidationError as exc:
        raise config_error(exc) from None


def create(settings: dict[str, Any], context: PluginContext) -> LocalScm:
    """The plugin for `plugins.installed.local.config`; `PluginConfigError` names the
    failing fields. Does no I/O: the database and `reposDir` are touched on first use."""
    return LocalScm(parse_settings(settings), context)


# --- names and texts ----------------------------------------------------------------------


def check_repo_name(name: str) -> str:
    """A repository key: `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`, no `..`; a trailing `.git`
    is dropped (`web.git` and `web` are one repository)."""
    if not isinstance(name, str):
        raise LocalScmError("a repository name must be a string")
    text = name.strip()
    if text.endswith(".git") and len(text) > 4:
        text = text[:-4]
    if not REPO_NAME.fullmatch(text) or ".." in text:
        shown = name if len(name) <= 120 else name[:117] + "..."
        raise LocalScmError(
            f"{shown!r} is not a repository name: use 1-100 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit (no '..')"
        )
    return text


def _check_person(value: str, what: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > MAX_PERSON_CHARS or _CONTROL.search(text):
        raise LocalScmError(
            f"{what} must be 1-{MAX_PERSON_CHARS} characters without control characters"
        )
    return text


def _check_text(value: str, what: str, limit: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise LocalScmError(f"{what} must be text")
    if not allow_empty and not value.strip():
        raise LocalScmError(f"{what} must not be empty")
    if "\x00" in value:
        raise LocalScmError(f"{what} must not contain NUL characters")
    if len(value) > limit:
        raise LocalScmError(f"{what} is longer than {limit} characters")
    return value


def _check_pr_id(pr_id: int) -> int:
    if isinstance(pr_id, bool) or not isinstance(pr_id, int) or pr_id <= 0 or pr_id >= 2**62:
        raise LocalScmNotFound(f"no pull request #{pr_id}")
    return pr_id


def _check_comment_id(value: str | int | None) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or len(text) > 18 or int(text) <= 0:
        raise LocalScmError(f"in_reply_to must be a comment id, not {str(value)[:40]!r}")
    return int(text)


def _reviewer_list(reviewers: Iterable[str] | None) -> list[str]:
    names: list[str] = []
    for reviewer in reviewers or []:
        name = _check_person(reviewer, "a reviewer")
        if name not in names:
            names.append(name)
    if len(names) > MAX_REVIEWERS:
        raise LocalScmError(f"at most {MAX_REVIEWERS} reviewers")
    return names


def _load_reviewers(raw: str | None) -> list[str]:
    try:
        value = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


# --- git in a bare repository -------------------------------------------------------------


class _BareRepo(GitWorkspace):
    """A bare repository, driven through `GitWorkspace`'s safe git runner."""

    @staticmethod
    def identity() -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": COMMITTER_NAME,
            "GIT_AUTHOR_EMAIL": COMMITTER_EMAIL,
            "GIT_COMMITTER_NAME": COMMITTER_NAME,
            "GIT_COMMITTER_EMAIL": COMMITTER_EMAIL,
        }

    async def init(self, branch: str) -> None:
        await self._git(
            "init",
            "--quiet",
            "--bare",
            f"--initial-branch={branch}",
            "--",
            str(self.path),
            cwd=self.path.parent,
        )

    async def check_branch(self, name: str) -> str:
        return await self._branch_name(name)

    async def branch_sha(self, name: str) -> str | None:
        result = await self._git(
            "rev-parse", "--verify", "--quiet", f"refs/heads/{name}^{{commit}}", check=False
        )
        sha = result.stdout.strip()
        return sha if result.returncode == 0 and sha else None

    async def branches(self) -> list[str]:
        result = await self._git("for-each-ref", "--format=%(refname)", "refs/heads/")
        return sorted(
            line.removeprefix("refs/heads/") for line in result.stdout.splitlines() if line
        )

    async def commit_tree(self, tree: str, parents: Sequence[str], message: str) -> str:
        options = [option for parent in parents for option in ("-p", parent)]
        result = await self._git(
            "commit-tree",
            "--no-gpg-sign",
            tree,
            *options,
            "-F",
            "-",
            env=self.identity(),
            stdin=message.encode("utf-8"),
        )
        return result.stdout.strip()

    async def move_branch(self, name: str, new: str, old: str | None, reason: str) -> bool:
        """`refs/heads/<name>`: `old` → `new`, only if it still is `old` (None: absent)."""
        expected = old if old is not None else "0" * len(new)
        result = await self._git(
            "update-ref", "-m", reason, f"refs/heads/{name}", new, expected, check=False
        )
        return result.returncode == 0

    async def import_dir(self, source: Path, branch: str, message: str) -> str:
        """Commit every non-ignored file of `source` as the first commit of `branch`."""
        with tempfile.TemporaryDirectory(prefix="coro-import-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            await self._git(
                f"--git-dir={self.path}",
                f"--work-tree={source}",
                "add",
                "--all",
                env=env,
                cwd=source,
            )
            tree = (await self._git("write-tree", env=env)).stdout.strip()
        sha = await self.commit_tree(tree, [], message)
        if not await self.move_branch(branch, sha, None, "coro: initial import"):
            raise LocalScmConflict(f"branch {branch!r} already exists")
        return sha

    async def merge_tree(self, target: str, source: str) -> tuple[str | None, list[str], str]:
        """(tree, [], "") for a clean merge; (None, conflicting files, "") for conflicts;
        (None, [], why) when git refuses (unrelated histories, …)."""
        result = await self._git(
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            "-z",
            target,
            source,
            check=False,
        )
        fields = result.stdout.split("\0")
        if result.returncode == 0 and fields and fields[0].strip():
            return fields[0].strip(), [], ""
        if result.returncode == 1:
            files: list[str] = []
            for name in fields[1:]:
                if not name:
                    break
                if name not in files:
                    files.append(name)
            return None, files, ""
        why = " / ".join(line.strip() for line in result.stderr.splitlines() if line.strip())
        why = why.removeprefix("fatal: ")
        return None, [], why or f"git merge-tree failed (exit {result.returncode})"

    async def merge_base(self, a: str, b: str) -> str | None:
        result = await self._git("merge-base", a, b, check=False)
        sha = result.stdout.strip()
        return sha if result.returncode == 0 and sha else None


# --- the plugin ---------------------------------------------------------------------------


class LocalScm:
    """Bare repositories under `reposDir`; pull requests in the runner's database."""

    id = PLUGIN_ID
    #: the local SCM has no webhooks: changes reach the runner through `add_listener`
    webhook: dict[str, str] | None = None

    def __init__(self, settings: LocalScmSettings, context: PluginContext) -> None:
        self.settings = settings
        self.home = context.home
        root = (
            Path(settings.repos_dir).expanduser()
            if settings.repos_dir
            else context.home.root / "repos"
        )
        self.repos_dir = root.absolute()
        self.default_branch = settings.default_branch
        self.db_path = context.home.state_db
        self._engine: AsyncEngine | None = None
        self._engine_lock = asyncio.Lock()
        #: merges in this process one at a time (git's compare-and-swap covers the rest)
        self._merge_lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"LocalScm(repos_dir={str(self.repos_dir)!r})"

    # -- lifecycle and listeners --

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

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

    # -- git --

    def repo_path(self, repo: str) -> Path:
        return self.repos_dir / f"{check_repo_name(repo)}.git"

    def clone_url(self, repo: str) -> str:
        """The absolute path of the bare repository (git clones and pushes to it)."""
        return str(self.repo_path(self._repo_key(repo)))

    def git_credentials(self) -> GitCredentials | None:
        return None

    def matches_remote(self, remote_url: str) -> bool:
        return self.repo_for_remote(remote_url) is not None

    def repo_for_remote(self, remote_url: str) -> str | None:
        """The repository name of a remote (a path or `file://` URL of a bare repository
        under `reposDir`), or None."""
        text = strip_userinfo(remote_url.strip())
        if text.startswith("file://"):
            text = text.removeprefix("file://")
        if not text or "://" in text or _CONTROL.search(text):
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
        if not REPO_NAME.fullmatch(name) or ".." in name:
            return None
        return name if path.is_dir() else None

    def _repo_key(self, repo: str) -> str:
        """`name`, `name.git`, or the path / `file://` URL of one of our repositories."""
        found = self.repo_for_remote(repo) if isinstance(repo, str) and "/" in repo else None
        return found if found is not None else check_repo_name(repo)

    def _bare(self, name: str) -> _BareRepo:
        return _BareRepo(self.repo_path(name))

    async def _existing(self, name: str) -> _BareRepo:
        bare = self._bare(name)
        if not await asyncio.to_thread(_is_bare_repo, bare.path):
            raise LocalScmNotFound(f"no local repository {name!r}")
        return bare

    # -- repositories --

    async def create_repo(
        self, name: str, *, from_dir: Path | None = None, description: str = ""
    ) -> dict[str, Any]:
        """A new bare repository `<reposDir>/<name>.git` whose default branch is
        `defaultBranch`; with `from_dir`, its files (minus git-ignored ones) are the first
        commit of that branch. `LocalScmConflict` if it exists."""
        key = check_repo_name(name)
        description = _check_text(
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
        bare = _BareRepo(staging)
        try:
            await bare.init(self.default_branch)
            if description:
                await asyncio.to_thread(
                    (staging / "description").write_text, description + "\n", "utf-8"
                )
            if from_dir is not None:
                await bare.import_dir(from_dir, self.default_branch, f"Import {key}")
            await asyncio.to_thread(_rename_new, staging, final)
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
        counts = await self._open_counts()
        return [await self._repo_info(name, open_counts=counts) for name in names]

    def _repo_names(self) -> list[str]:
        try:
            entries = list(self.repos_dir.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for entry in entries:
            name = entry.name[:-4] if entry.name.endswith(".git") else ""
            if REPO_NAME.fullmatch(name) and ".." not in name and _is_bare_repo(entry):
                names.append(name)
        return sorted(names)

    async def _repo_info(self, name: str, *, open_counts: dict[str, int]) -> dict[str, Any]:
        bare = self._bare(name)
        description = await asyncio.to_thread(_read_description, bare.path)
        return {
            "name": name,
            "cloneUrl": str(bare.path),
            "description": description,
            "defaultBranch": await bare.current_branch(),
            "branches": await bare.branches(),
            "openPullRequests": open_counts.get(name, 0),
        }

    # -- database --

    async def _db(self) -> AsyncEngine:
        if self._engine is None:
            async with self._engine_lock:
                if self._engine is None:
                    path = self.db_path
                    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
                    await asyncio.to_thread(upgrade_sqlite, path)
                    engine = create_async_engine(URL.create("sqlite+aiosqlite", database=str(path)))
                    event.listen(engine.sync_engine, "connect", configure_sqlite_connection)
                    self._engine = engine
        return self._engine

    @contextlib.asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """One SQLite transaction (`BEGIN IMMEDIATE` for writers: the write lock up
        front, so checks and changes are never interleaved with another writer's)."""
        engine = await self._db()
        async with engine.connect() as connection:
            await connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield connection
            except BaseException:
                await connection.rollback()
                raise
            await connection.commit()

    async def _open_counts(self) -> dict[str, int]:
        t = local_pull_requests
        async with self._transaction(write=False) as db:
            rows = await db.execute(
                select(t.c.repo, func.count()).where(t.c.state == "open").group_by(t.c.repo)
            )
            return {str(repo): int(count) for repo, count in rows.all()}

    @staticmethod
    async def _row(db: AsyncConnection, pr_id: int) -> RowMapping:
        row = (
            (await db.execute(select(local_pull_requests).where(local_pull_requests.c.id == pr_id)))
            .mappings()
            .first()
        )
        if row is None:
            raise LocalScmNotFound(f"no pull request #{pr_id}")
        return row

    async def _row_of(self, db: AsyncConnection, repo: str, pr_id: int) -> RowMapping:
        """The pull request `pr_id`, which must belong to `repo`."""
        key = self._repo_key(repo)
        row = await self._row(db, _check_pr_id(pr_id))
        if row["repo"] != key:
            raise LocalScmNotFound(f"no pull request #{pr_id} in local repository {key!r}")
        return row

    @staticmethod
    async def _approvers(db: AsyncConnection, pr_ids: Sequence[int]) -> dict[int, list[str]]:
        t = local_pr_approvals
        rows = await db.execute(
            select(t.c.pr_id, t.c.reviewer)
            .where(t.c.pr_id.in_(list(pr_ids)))
            .order_by(t.c.created_at, t.c.reviewer)
        )
        found: dict[int, list[str]] = {}
        for pr_id, reviewer in rows.all():
            found.setdefault(int(pr_id), []).append(str(reviewer))
        return found

    @staticmethod
    async def _comment_counts(db: AsyncConnection, pr_ids: Sequence[int]) -> dict[int, int]:
        t = local_pr_comments
        rows = await db.execute(
            select(t.c.pr_id, func.count()).where(t.c.pr_id.in_(list(pr_ids))).group_by(t.c.pr_id)
        )
        return {int(pr_id): int(count) for pr_id, count in rows.all()}

    @staticmethod
    async def _comments(db: AsyncConnection, pr_id: int) -> list[dict[str, Any]]:
        t = local_pr_comments
        rows = await db.execute(
            select(t).where(t.c.pr_id == pr_id).order_by(t.c.created_at, t.c.id)
        )
        return [_comment_json(row) for row in rows.mappings().all()]

    async def _summary(self, db: AsyncConnection, row: RowMapping) -> dict[str, Any]:
        pr_id = int(row["id"])
        approvals = (await self._approvers(db, [pr_id])).get(pr_id, [])
        count = (await self._comment_counts(db, [pr_id])).get(pr_id, 0)
        return _pr_json(row, approvals, count)

    # -- pull requests: the management API (HTTP, CLI, demo) --

    async def list_prs(
        self, repo: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Pull requests, newest first, optionally of one repository and/or state."""
        t = local_pull_requests
        query = select(t).order_by(t.c.id.desc())
        if repo is not None:
            query = query.where(t.c.repo == self._repo_key(repo))
        if state is not None:
            if state not in _STATES:
                raise LocalScmError(f"state must be one of {', '.join(_STATES)}")
            query = query.where(t.c.state == state)
        async with self._transaction(write=False) as db:
            rows = (await db.execute(query)).mappings().all()
            ids = [int(row["id"]) for row in rows]
            approvals = await self._approvers(db, ids) if ids else {}
            counts = await self._comment_counts(db, ids) if ids else {}
        return [
            _pr_json(row, approvals.get(int(row["id"]), []), counts.get(int(row["id"]), 0))
            for row in rows
        ]

    async def get_pr(self, pr_id: int, *, diff: bool = True) -> dict[str, Any]:
        """One pull request with its body, comments (ascending), approvals and, unless
        `diff=False`, its diff: what the source adds to the target since they diverged
        (for a merged pull request, what its merge commit brought), cut after
        `MAX_DIFF_BYTES` (`diffTruncated`; `diffError` says why there is none)."""
        pr_id = _check_pr_id(pr_id)
        async with self._transaction(write=False) as db:
            row = await self._row(db, pr_id)
            approvals = (await self._approvers(db, [pr_id])).get(pr_id, [])
            comments = await self._comments(db, pr_id)
        result = _pr_json(row, approvals, len(comments))
        result["body"] = row["body"]
        result["comments"] = comments
        if not diff:
            return result
        found: GitDiff | None = None
        try:
            found = await self._pr_diff(row)
        except (GitError, LocalScmError, PluginNotFoundError) as exc:
            result["diffError"] = str(exc)
        result["diff"] = found.text if found is not None else ""
        result["diffTruncated"] = bool(found and found.truncated)
        return result

    async def _pr_diff(self, row: RowMapping) -> GitDiff:
        bare = await self._existing(str(row["repo"]))
        merge_sha = row["merge_sha"]
        if row["state"] == "merged" and merge_sha:
            return await bare.diff_capped(f"{merge_sha}^1", merge_sha, max_bytes=MAX_DIFF_BYTES)
        source = await bare.branch_sha(str(row["source_branch"]))
        target = await bare.branch_sha(str(row["target_branch"]))
        if source is None or target is None:
            gone = row["source_branch"] if source is None else row["target_branch"]
            raise LocalScmNotFound(f"branch {gone!r} no longer exists")
        base = await bare.merge_base(target, source) or target
        return await bare.diff_capped(base, source, max_bytes=MAX_DIFF_BYTES)

    async def approve(self, pr_id: int, reviewer: str) -> dict[str, Any]:
        """`reviewer` approves the open pull request `pr_id` (again: no change)."""
        pr_id = _check_pr_id(pr_id)
        reviewer = _check_person(reviewer, "the reviewer")
        now = iso_now()
        async with self._transaction(write=True) as db:
            row = await self._row(db, pr_id)
            _require_open(row, "approve")
            result = await db.execute(
                sqlite_insert(local_pr_approvals)
                .values(pr_id=pr_id, reviewer=reviewer, created_at=now)
                .on_conflict_do_nothing()
            )
            changed = result.rowcount > 0
            if changed:
                await _touch(db, pr_id, now)
                row = await self._row(db, pr_id)
            summary = await self._summary(db, row)
        if changed:
            self._notify()
        return summary

    async def comment(
        self,
        pr_id: int,
        body: str,
        author: str,
        in_reply_to: str | int | None = None,
    ) -> dict[str, Any]:
        """A comment on pull request `pr_id` (any state), optionally a reply to another
        comment of the same pull request."""
        pr_id = _check_pr_id(pr_id)
        body = _check_text(body, "the comment", MAX_COMMENT_CHARS)
        author = _check_person(author, "the author")
        parent = _check_comment_id(in_reply_to)
        now = iso_now()
        c = local_pr_comments
        async with self._transaction(write=True) as db:
            await self._row(db, pr_id)
            if parent is not None:
                found = await db.execute(select(c.c.id).where(c.c.id == parent, c.c.pr_id == pr_id))
                if found.first() is None:
                    raise LocalScmError(f"comment {parent} is not on pull request #{pr_id}")
            result = await db.execute(
                insert(c).values(
                    pr_id=pr_id, author=author, body=body, in_reply_to=parent, created_at=now
                )
            )
            comment_id = int(result.lastrowid)
            await _touch(db, pr_id, now)
            stored = (await db.execute(select(c).where(c.c.id == comment_id))).mappings().one()
        self._notify()
        return _comment_json(stored)

    async def decline(self, pr_id: int) -> dict[str, Any]:
        """Close the open pull request `pr_id` without merging it."""
        pr_id = _check_pr_id(pr_id)
        now = iso_now()
        t = local_pull_requests
        async with self._transaction(write=True) as db:
            _require_open(await self._row(db, pr_id), "decline")
            await db.execute(
                update(t).where(t.c.id == pr_id).values(state="declined", updated_at=now)
            )
            summary = await self._summary(db, await self._row(db, pr_id))
        self._notify()
        return summary

    async def merge_pr(self, pr_id: int, *, message: str | None = None) -> MergeResult:
        """`merge` by number alone."""
        pr_id = _check_pr_id(pr_id)
        async with self._transaction(write=False) as db:
            row = await self._row(db, pr_id)
        return await self.merge(str(row["repo"]), pr_id, message=message)

    # -- pull requests: the ScmPlugin protocol (agents) --

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
        key = self._repo_key(repo)
        title = _check_text(title, "the title", MAX_TITLE_CHARS).strip()
        body = _check_text(body or "", "the body", MAX_BODY_CHARS, allow_empty=True)
        names = _reviewer_list(reviewers)
        who = _check_person(author, "the author") if author is not None else AGENT_AUTHOR
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
        now = iso_now()
        t = local_pull_requests
        async with self._transaction(write=True) as db:
            existing = (
                await db.execute(
                    select(t.c.id).where(
                        t.c.repo == key,
                        t.c.source_branch == source_branch,
                        t.c.target_branch == target_branch,
                        t.c.state == "open",
                    )
                )
            ).first()
            if existing is not None:
                raise LocalScmConflict(
                    f"pull request #{existing[0]} from {source_branch!r} into "
                    f"{target_branch!r} is already open"
                )
            result = await db.execute(
                insert(t).values(
                    repo=key,
                    title=title,
                    body=body,
                    source_branch=source_branch,
                    target_branch=target_branch,
                    state="open",
                    author=who,
                    reviewers=json.dumps(names),
                    created_at=now,
                    updated_at=now,
                )
            )
            pr_id = int(result.lastrowid)
            row = await self._row(db, pr_id)
        self._notify()
        return _pull_request(row)

    async def pr_status(self, repo: str, pr_id: int) -> PrStatus:
        async with self._transaction(write=False) as db:
            row = await self._row_of(db, repo, pr_id)
            approvals = (await self._approvers(db, [pr_id])).get(pr_id, [])
            comments = await self._comments(db, pr_id)
        return PrStatus(
            pull_request=_pull_request(row),
            approval_count=len(approvals),
            approved_by=approvals,
            comments=[
                PrComment(
                    id=str(c["id"]),
                    author=c["author"],
                    body=c["body"],
                    created_at=c["createdAt"],
                    in_reply_to=str(c["inReplyTo"]) if c["inReplyTo"] is not None else None,
                )
                for c in comments
            ],
        )

    async def poll_pr(self, repo: str, pr_id: int) -> PrStatus | None:
        """The status (reading it costs one local query; the poller compares)."""
        return await self.pr_status(repo, pr_id)

    async def post_comment(
        self, repo: str, pr_id: int, body: str, *, in_reply_to: str | None = None
    ) -> PrComment:
        async with self._transaction(write=False) as db:
            await self._row_of(db, repo, pr_id)
        stored = await self.comment(pr_id, body, AGENT_AUTHOR, in_reply_to)
        return PrComment(
            id=str(stored["id"]),
            author=stored["author"],
            body=stored["body"],
            created_at=stored["createdAt"],
            in_reply_to=str(stored["inReplyTo"]) if stored["inReplyTo"] is not None else None,
        )

    async def request_reviewers(self, repo: str, pr_id: int, reviewers: list[str]) -> None:
        names = _reviewer_list(reviewers)
        now = iso_now()
        t = local_pull_requests
        async with self._transaction(write=True) as db:
            row = await self._row_of(db, repo, pr_id)
            current = _load_reviewers(row["reviewers"])
            merged = current + [name for name in names if name not in current]
            if len(merged) > MAX_REVIEWERS:
                raise LocalScmError(f"at most {MAX_REVIEWERS} reviewers")
            changed = merged != current
            if changed:
                await db.execute(
                    update(t)
                    .where(t.c.id == pr_id)
                    .values(reviewers=json.dumps(merged), updated_at=now)
                )
        if changed:
            self._notify()

    async def merge(self, repo: str, pr_id: int, *, message: str | None = None) -> MergeResult:
        """Merge the open pull request with a merge commit made in the bare repository.
        Conflicts (or a pull request that is not open) → `merged=False` and why."""
        if message is not None:
            _check_text(message, "the merge message", MAX_COMMENT_CHARS, allow_empty=True)
        async with self._merge_lock:
            async with self._transaction(write=False) as db:
                row = await self._row_of(db, repo, pr_id)
            if row["state"] != "open":
                return MergeResult(
                    merged=False, message=f"pull request #{pr_id} is already {row['state']}"
                )
            bare = await self._existing(str(row["repo"]))
            source_branch, target_branch = str(row["source_branch"]), str(row["target_branch"])
            text = (message or "").strip() or (
                f"Merge pull request #{pr_id} from {source_branch}\n\n{row['title']}"
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
            now = iso_now()
            t = local_pull_requests
            async with self._transaction(write=True) as db:
                await db.execute(
                    update(t)
                    .where(t.c.id == pr_id)
                    .values(state="merged", merged_at=now, merge_sha=merged_sha, updated_at=now)
                )
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
            f"(pull requests are kept in {self.db_path.name}).",
            details={"reposDir": where, "repositories": str(len(names))},
        )


# --- helpers ------------------------------------------------------------------------------


def _absolute(path: Path) -> Path:
    return Path(path).expanduser().absolute()


def _is_bare_repo(path: Path) -> bool:
    return path.is_dir() and (path / "HEAD").is_file() and (path / "objects").is_dir()


def _rename_new(source: Path, target: Path) -> None:
    """Rename `source` to `target`, which must not exist (FileExistsError otherwise)."""
    if target.exists():
        raise FileExistsError(target)
    try:
        source.rename(target)
    except OSError as exc:  # a non-empty directory appeared there meanwhile
        if target.exists():
            raise FileExistsError(target) from exc
        raise


def _read_description(path: Path) -> str:
    try:
        text = (path / "description").read_text("utf-8", errors="replace").strip()
    except OSError:
        return ""
    return "" if text.startswith(_GIT_DEFAULT_DESCRIPTION) else text


def _require_open(row: RowMapping, action: str) -> None:
    if row["state"] != "open":
        raise LocalScmConflict(
            f"cannot {action} pull request #{row['id']}: it is already {row['state']}"
        )


async def _touch(db: AsyncConnection, pr_id: int, now: str) -> None:
    t = local_pull_requests
    await db.execute(update(t).where(t.c.id == pr_id).values(updated_at=now))


def _url(repo: str, pr_id: int) -> str:
    return f"local://{repo}/pull/{pr_id}"


def _state(value: Any) -> PrStateName:
    for state in _STATES:
        if value == state:
            return state
    return "open"


def _pull_request(row: RowMapping) -> PullRequest:
    return PullRequest(
        id=int(row["id"]),
        url=_url(str(row["repo"]), int(row["id"])),
        title=str(row["title"]),
        state=_state(row["state"]),
        source_branch=str(row["source_branch"]),
        target_branch=str(row["target_branch"]),
        author=row["author"],
    )


def _pr_json(row: RowMapping, approvals: list[str], comment_count: int) -> dict[str, Any]:
    """A pull request as the HTTP API shows it (camelCase)."""
    return {
        "id": int(row["id"]),
        "repo": row["repo"],
        "title": row["title"],
        "state": row["state"],
        "sourceBranch": row["source_branch"],
        "targetBranch": row["target_branch"],
        "author": row["author"],
        "reviewers": _load_reviewers(row["reviewers"]),
        "approvals": approvals,
        "commentCount": comment_count,
        "url": _url(str(row["repo"]), int(row["id"])),
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
        "mergedAt": row["merged_at"],
        "mergeSha": row["merge_sha"],
    }


def _comment_json(row: RowMapping) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "prId": int(row["pr_id"]),
        "author": row["author"],
        "body": row["body"],
        "inReplyTo": row["in_reply_to"],
        "createdAt": row["created_at"],
    }
