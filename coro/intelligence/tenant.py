"""The tenant layer kept in a git remote: a cached shallow clone, refreshed on demand.

The clone lives under `$CORO_HOME/cache/tenant-intelligence/<key>/checkout` (the key is
a digest of URL and branch, so changing either starts a fresh clone). A refresh is
attempted at most once per `refresh_seconds` (successful or not) unless forced:

* no clone yet → `git clone --depth 1 [--branch B] -- <url>` into a temporary
  directory that is renamed into place only once complete;
* a clone → `git fetch --depth 1 origin <B or HEAD>`, `git reset --hard FETCH_HEAD`,
  `git clean -ffdx`.

Every git command goes through `coro.system.git.run_git` (hooks off, no credential
helper, no prompts, secrets scrubbed). A failure never raises: it is recorded in
`status.error` (shown by `GET /intelligence/layers` and logged at phase start) and the
last good clone, if any, stays in use.

Refreshes are serialised by a lock; a caller that finds one under way waits for it, so
the first job of a runner that has never cloned uses the clone the runner started at
start-up (`Runner.start`) rather than an empty layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from coro.system.git import (
    LOCAL_TIMEOUT_SECONDS,
    NETWORK_TIMEOUT_SECONDS,
    GitError,
    run_git,
    scrub,
    strip_userinfo,
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")
_ALLOWED_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
_ERROR_DETAIL = 600


class RemoteConfigError(ValueError):
    """The configured URL or branch is unusable (reported, never raised at a job)."""


def check_remote(url: str, branch: str | None) -> None:
    """Refuse what git could take for an option, odd transports, and passwords in URLs."""
    if not url or url != url.strip() or url.startswith("-") or _CONTROL.search(url):
        raise RemoteConfigError("intelligence.tenantGitUrl is not a usable repository URL")
    if "::" in url.split("/", 1)[0]:
        raise RemoteConfigError("intelligence.tenantGitUrl: remote helpers (<x>::) are refused")
    if "://" in url:
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:
            raise RemoteConfigError("intelligence.tenantGitUrl cannot be parsed") from None
        if parts.scheme.lower() not in _ALLOWED_SCHEMES:
            raise RemoteConfigError(
                f"intelligence.tenantGitUrl: scheme {parts.scheme!r} is not supported "
                f"(use one of {', '.join(sorted(_ALLOWED_SCHEMES))})"
            )
        if password is not None:
            raise RemoteConfigError(
                "intelligence.tenantGitUrl must not contain a password; use an SSH URL "
                "with an agent, or a public URL"
            )
    if branch is not None and (
        not _BRANCH.match(branch) or branch.startswith(("-", "/")) or ".." in branch
    ):
        raise RemoteConfigError(f"intelligence.tenantBranch {branch!r} is not a valid branch")


def display_url(url: str) -> str:
    """The URL as shown to people: no userinfo, no control characters."""
    return _CONTROL.sub("", strip_userinfo(url))


@dataclass
class RemoteStatus:
    """What the last refresh did; all of it safe to show."""

    revision: str | None = None
    refreshed_at: str | None = None  # ISO time of the last successful clone/fetch
    attempted_at: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "refreshedAt": self.refreshed_at,
            "attemptedAt": self.attempted_at,
            "error": self.error,
        }


class TenantRemote:
    """A git remote holding the tenant layer, and its cached clone."""

    def __init__(
        self,
        url: str,
        cache_root: Path,
        *,
        branch: str | None = None,
        refresh_seconds: float = 300.0,
        network_timeout: float = NETWORK_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        self.branch = branch
        self.refresh_seconds = refresh_seconds
        self.network_timeout = network_timeout
        key = hashlib.sha256(f"{url}\n{branch or ''}".encode()).hexdigest()[:16]
        self.cache_dir = cache_root / key
        self.status = RemoteStatus()
        self._lock = asyncio.Lock()
        self._last_attempt: float | None = None
        try:
            check_remote(url, branch)
            self._config_error: str | None = None
        except RemoteConfigError as exc:
            self._config_error = str(exc)
            self.status.error = str(exc)

    @property
    def checkout(self) -> Path:
        """Where the working tree is (it may not exist yet)."""
        return self.cache_dir / "checkout"

    @property
    def display_url(self) -> str:
        return display_url(self.url)

    def is_cloned(self) -> bool:
        return (self.checkout / ".git").is_dir()

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.display_url,
            "branch": self.branch,
            "refreshSeconds": self.refresh_seconds,
            "cloned": self.is_cloned(),
            **self.status.to_json(),
        }

    def due(self) -> bool:
        """True when a refresh should be attempted now (ignoring `force`)."""
        if self._config_error is not None:
            return False
        if self._last_attempt is None:
            return True
        return time.monotonic() - self._last_attempt >= self.refresh_seconds

    async def refresh(self, *, force: bool = False) -> None:
        """Clone or fetch if due (or forced); never raises. If a refresh is under way,
        wait for it instead: its result is what the caller is about to read."""
        if not force and not self.due():
            if self._lock.locked():
                async with self._lock:
                    pass
            return
        async with self._lock:
            if self._config_error is not None:
                return
            # Another caller may have refreshed while this one waited for the lock.
            if not force and not self.due():
                return
            self._last_attempt = time.monotonic()
            self.status.attempted_at = _now()
            try:
                await self._refresh()
            except GitError as exc:
                self.status.error = _short(scrub(str(exc)))
            except OSError as exc:
                self.status.error = _short(f"tenant intelligence cache: {exc}")
            except Exception as exc:  # a refresh must never take a job down
                self.status.error = _short(f"tenant intelligence refresh failed: {exc!r}")
            else:
                self.status.error = None
                self.status.refreshed_at = _now()

    async def _refresh(self) -> None:
        if self.is_cloned():
            await self._fetch()
        else:
            await self._clone()
        self.status.revision = await self._head()

    async def _git(self, cwd: Path, *args: str, network: bool = False) -> str:
        result = await run_git(
            args,
            cwd=cwd,
            timeout_seconds=self.network_timeout if network else LOCAL_TIMEOUT_SECONDS,
            env={"GIT_CEILING_DIRECTORIES": str(cwd.parent)},
        )
        if result.returncode != 0:
            detail = " / ".join(line.strip() for line in result.stderr.splitlines() if line.strip())
            op = next((a for a in args if not a.startswith("-")), "command")
            raise GitError(
                f"git {op} of the tenant intelligence remote {self.display_url} failed "
                f"(exit {result.returncode})" + (f": {detail}" if detail else "")
            )
        return result.stdout

    async def _clone(self) -> None:
        staging = Path(await asyncio.to_thread(self._prepare_staging))
        try:
            options = ["--depth=1", "--no-tags"]
            if self.branch:
                options += [f"--branch={self.branch}", "--single-branch"]
            target = staging / "checkout"
            await self._git(
                staging, "clone", "--quiet", *options, "--", self.url, str(target), network=True
            )
            await asyncio.to_thread(os.replace, target, self.checkout)
        finally:
            await asyncio.to_thread(_remove, staging)

    def _prepare_staging(self) -> str:
        """A fresh private directory to clone into; any leftover checkout removed."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _remove(self.checkout)  # a half-made or foreign leftover
        return tempfile.mkdtemp(prefix=".clone-", dir=self.cache_dir)

    async def _fetch(self) -> None:
        ref = self.branch or "HEAD"
        checkout = self.checkout
        await self._git(
            checkout, "fetch", "--quiet", "--depth=1", "--no-tags", "--", "origin", ref,
            network=True,
        )  # fmt: skip
        await self._git(checkout, "reset", "--quiet", "--hard", "FETCH_HEAD")
        await self._git(checkout, "clean", "-ffdxq")

    async def _head(self) -> str | None:
        with contextlib.suppress(GitError):
            sha = (await self._git(self.checkout, "rev-parse", "--verify", "-q", "HEAD")).strip()
            return sha or None
        return None  # an empty repository


def _remove(path: Path) -> None:
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_DETAIL else text[: _ERROR_DETAIL - 1] + "…"
