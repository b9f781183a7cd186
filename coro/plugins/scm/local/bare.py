"""Git in a bare repository of the local SCM: the plumbing a server would run (initial
import, branch reads, merges without a working tree) through `GitWorkspace`'s safe git
runner, and the few file-system facts about repositories on disk.

Merging: `git merge-tree --write-tree` computes the merged tree (or the conflicting
files), `git commit-tree` records the merge commit and `git update-ref` moves the
target branch with a compare-and-swap on its old value.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from coro.plugins.scm.local.validation import LocalScmConflict
from coro.system.git import GitWorkspace

#: Who commits what the plugin itself writes (imported files, merge commits).
COMMITTER_NAME = "Coro"
COMMITTER_EMAIL = "coro@localhost"

_GIT_DEFAULT_DESCRIPTION = "Unnamed repository"


class BareRepo(GitWorkspace):
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
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="coro-import-"))
        try:
            env = {"GIT_INDEX_FILE": str(tmp / "index")}
            await self._git(
                f"--git-dir={self.path}",
                f"--work-tree={source}",
                "add",
                "--all",
                env=env,
                cwd=source,
            )
            tree = (await self._git("write-tree", env=env)).stdout.strip()
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
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


# --- on disk (blocking: call through a thread) ----------------------------------------------


def is_bare_repo(path: Path) -> bool:
    return path.is_dir() and (path / "HEAD").is_file() and (path / "objects").is_dir()


def rename_new(source: Path, target: Path) -> None:
    """Rename `source` to `target`, which must not exist (FileExistsError otherwise)."""
    if target.exists():
        raise FileExistsError(target)
    try:
        source.rename(target)
    except OSError as exc:  # a non-empty directory appeared there meanwhile
        if target.exists():
            raise FileExistsError(target) from exc
        raise


def read_description(path: Path) -> str:
    try:
        text = (path / "description").read_text("utf-8", errors="replace").strip()
    except OSError:
        return ""
    return "" if text.startswith(_GIT_DEFAULT_DESCRIPTION) else text
