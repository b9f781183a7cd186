"""Git workspaces: the real `git` CLI, run safely, with credentials kept out of sight.

Every git command is an argument list (never a shell string) run in its own process
group with a timeout that kills the group, output caps, and the runner's environment
minus secret-looking variables (the helpers of `coro.tools.shell`). Coro's own commands
always run with

* `credential.helper=` (no stored helper is asked or written to),
* `core.hooksPath=/dev/null` and `core.fsmonitor=false` (a checkout of an untrusted
  repository cannot make the runner execute its code),
* `GIT_TERMINAL_PROMPT=0` and no `SSH_ASKPASS` (git fails instead of waiting for input),
* `GIT_CEILING_DIRECTORIES` = the parent of the workspace (git never wanders up into an
  enclosing repository).

Credentials reach git through `GIT_ASKPASS`: a small script, written to a fresh private
temporary directory for the one git process that needs it and removed when it ends,
that prints the username or the password from two environment variables set only for
that process. So the password is never in a URL, in `.git/config`, in any argv (`ps`),
in the script file, or in an error: stderr is scrubbed of it (and of any URL userinfo)
before it becomes a `GitError` message. A clone URL that carries a password is refused.

`diff()` without `head` compares the working tree with `base` (default HEAD) and shows
untracked, non-ignored files as additions. It does so through a throw-away copy of the
index (`GIT_INDEX_FILE`) in which untracked files are marked intent-to-add: the user's
own index is never written, and no object is added to the repository.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from coro.domain.errors import PluginAuthError, PluginError, PluginNotFoundError
from coro.system.process import command_env, run_process

GIT = "git"
#: default limits: local commands, and commands that talk to a remote
LOCAL_TIMEOUT_SECONDS = 120.0
NETWORK_TIMEOUT_SECONDS = 900.0
#: stdout kept from an ordinary git command (stderr is kept to the same cap)
OUTPUT_CAP_BYTES = 16 * 1024 * 1024
#: `diff()` refuses to return more than this; `diff_capped()` truncates instead
MAX_DIFF_BYTES = 64 * 1024 * 1024
#: what `GET /jobs/:id/diff` returns at most (the rest is cut, `truncated: true`)
MAX_DIFF_RESPONSE_BYTES = 2 * 1024 * 1024
DEFAULT_REMOTE = "origin"

#: the environment variables the askpass helper answers from
ASKPASS_USERNAME_VAR = "CORO_GIT_ASKPASS_USERNAME"
ASKPASS_PASSWORD_VAR = "CORO_GIT_ASKPASS_PASSWORD"
_ASKPASS_SCRIPT = f"""#!/bin/sh
# Coro's git askpass helper. It holds no secret: it answers from the environment of
# the one git process it was created for, and is deleted when that process ends.
case "$1" in
  [Uu]sername*) printf '%s\\n' "${ASKPASS_USERNAME_VAR}" ;;
  *) printf '%s\\n' "${ASKPASS_PASSWORD_VAR}" ;;
esac
"""

#: configuration forced on every command Coro runs
_SAFE_CONFIG = (
    "-c",
    "credential.helper=",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "protocol.ext.allow=never",
)
#: variables that would point git at another repository, index or configuration
#: (`git rev-parse --local-env-vars`), plus prompts we never want
_DROPPED_ENV = frozenset(
    {
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CONFIG",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_OBJECT_DIRECTORY",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_GRAFT_FILE",
        "GIT_INDEX_FILE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_REPLACE_REF_BASE",
        "GIT_PREFIX",
        "GIT_INTERNAL_SUPER_PREFIX",
        "GIT_SHALLOW_FILE",
        "GIT_COMMON_DIR",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "GIT_EDITOR",
        "GIT_SEQUENCE_EDITOR",
    }
)
_TRACE_PREFIXES = ("GIT_TRACE", "GIT_CURL_VERBOSE")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]*@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_REF_LENGTH = 256
_MAX_MESSAGE_DETAIL = 1500

GitErrorKind = Literal[
    "auth", "not_found", "exists", "invalid", "rejected", "timeout", "unavailable", "failed"
]
_STATUS: dict[str, int] = {
    "auth": 401,
    "not_found": 404,
    "exists": 409,
    "invalid": 400,
    "rejected": 409,
    "timeout": 504,
    "unavailable": 503,
}


@dataclass(frozen=True)
class GitCredentials:
    """Handed to git through an askpass helper, never through URLs or .git/config."""

    username: str
    password: str = field(repr=False)


class GitError(PluginError):
    """A git command failed. The message is safe to show: never contains a credential.

    `kind` says why: `auth` (credentials refused or missing), `not_found` (repository,
    ref or checkout), `exists` (branch or non-empty clone target), `invalid` (bad name,
    ref or argument), `rejected` (push refused by the remote), `timeout`, `unavailable`
    (git cannot be started) or `failed`.
    """

    def __init__(self, message: str, *, kind: GitErrorKind = "failed") -> None:
        super().__init__(message, status=_STATUS.get(kind))
        self.kind: GitErrorKind = kind


class GitAuthError(GitError, PluginAuthError):
    def __init__(self, message: str) -> None:
        super().__init__(message, kind="auth")


class GitNotFoundError(GitError, PluginNotFoundError):
    def __init__(self, message: str) -> None:
        super().__init__(message, kind="not_found")


def _error(message: str, kind: GitErrorKind) -> GitError:
    if kind == "auth":
        return GitAuthError(message)
    if kind == "not_found":
        return GitNotFoundError(message)
    return GitError(message, kind=kind)


@dataclass(frozen=True)
class GitDiff:
    """A unified diff. `base` is the commit compared from (None: no commit yet), `head`
    the commit compared to (None: the working tree, untracked files included)."""

    text: str
    base: str | None
    head: str | None
    truncated: bool = False


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: str
    stderr: str
    truncated: bool


# --------------------------------------------------------------------------- helpers


def strip_userinfo(url: str) -> str:
    """`https://user:pass@host/x` → `https://host/x`; scp-like and plain paths unchanged."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_USERINFO.sub(r"\1", url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _url_has_password(url: str) -> bool:
    if "://" not in url:
        return False
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return True  # unparseable: do not risk it


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove every secret (raw and URL-encoded) and all URL userinfo from `text`."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, "***")
    return _URL_USERINFO.sub(r"\1", text)


def _git_env(extra: Mapping[str, str]) -> dict[str, str]:
    # Tracing (GIT_TRACE_CURL, GIT_TRACE2_ENV_VARS, …) would copy the Authorization
    # header or the askpass variables into stderr, and from there into error messages.
    env = {
        k: v
        for k, v in command_env().items()
        if k not in _DROPPED_ENV and not k.startswith(_TRACE_PREFIXES)
    }
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_TRACE_REDACT": "1",
            "GIT_ASKPASS": "",  # empty: no askpass (and no SSH_ASKPASS fallback)
            "GIT_PAGER": "cat",
            "GIT_OPTIONAL_LOCKS": "0",
            "LC_ALL": "C",
            "LANGUAGE": "C",
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def _askpass(credentials: GitCredentials | None) -> Iterator[dict[str, str]]:
    """Environment for one git process: the helper script and the two answers."""
    if credentials is None:
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="coro-askpass-") as tmp:  # mode 0700
        script = Path(tmp) / "askpass.sh"
        script.write_text(_ASKPASS_SCRIPT)
        script.chmod(0o700)
        yield {
            "GIT_ASKPASS": str(script),
            ASKPASS_USERNAME_VAR: credentials.username,
            ASKPASS_PASSWORD_VAR: credentials.password,
        }


def _secrets(credentials: GitCredentials | None) -> tuple[str, ...]:
    """What must never leave a git error: the password, and the Basic header made of it."""
    if credentials is None:
        return ()
    pair = f"{credentials.username}:{credentials.password}".encode()
    return (credentials.password, base64.b64encode(pair).decode("ascii"))


def _check_arg(value: str, what: str) -> str:
    """Refuse what git could take for an option, and control characters."""
    if not value or value.startswith("-") or _CONTROL.search(value):
        raise GitError(f"invalid {what}: {value!r}", kind="invalid")
    if len(value) > _MAX_REF_LENGTH:
        raise GitError(f"invalid {what}: longer than {_MAX_REF_LENGTH} characters", kind="invalid")
    return value


def _detail(stderr: str, secrets: Sequence[str]) -> str:
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and not line.lstrip().startswith("hint:")
    ]
    text = scrub(" / ".join(lines), secrets)
    if len(text) > _MAX_MESSAGE_DETAIL:
        text = "…" + text[-_MAX_MESSAGE_DETAIL:]
    return text


def _classify(stderr: str) -> GitErrorKind:
    low = stderr.lower()
    if any(
        s in low
        for s in (
            "authentication failed",
            "could not read username",
            "could not read password",
            "terminal prompts disabled",
            "permission denied (publickey",
            "invalid username or password",
            "http basic: access denied",
            "returned error: 401",
            "returned error: 403",
        )
    ):
        return "auth"
    if any(
        s in low
        for s in (
            "[rejected]",
            "[remote rejected]",
            "failed to push some refs",
            "non-fast-forward",
        )
    ):
        return "rejected"
    if (
        re.search(r"repository '[^']*' not found", low)
        or "repository not found" in low
        or "does not appear to be a git repository" in low
        or "not a git repository" in low
        or re.search(r"remote branch .* not found", low)
        or "returned error: 404" in low
        or "invalid reference" in low
        or "did not match any" in low
    ):
        return "not_found"
    if "already exists" in low:
        return "exists"
    return "failed"


_SUMMARY: dict[str, str] = {
    "auth": "authentication failed (check the credentials)",
    "not_found": "not found",
    "rejected": "rejected by the remote",
    "exists": "already exists",
}


async def run_git(
    args: Sequence[str],
    *,
    cwd: Path,
    timeout_seconds: float,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    cap: int = OUTPUT_CAP_BYTES,
    secrets: Sequence[str] = (),
) -> _Result:
    """Run `git <safe config> <args>`; raises `GitError` only if it cannot run or end."""
    op = _operation(args)
    try:
        result = await run_process(
            [GIT, *_SAFE_CONFIG, *args],
            timeout_seconds=timeout_seconds,
            cwd=cwd,
            env=_git_env(env or {}),
            stdin=stdin,
            output_cap=cap,
        )
    except FileNotFoundError as exc:
        if not await asyncio.to_thread(cwd.is_dir):
            raise GitNotFoundError(f"git {op}: no directory {cwd}") from None
        raise GitError("git is not installed (no `git` on PATH)", kind="unavailable") from exc
    except OSError as exc:
        raise GitError(f"could not start git: {exc.strerror}", kind="unavailable") from exc
    if result.timed_out:
        raise GitError(f"git {op} timed out after {timeout_seconds:g}s", kind="timeout")
    return _Result(
        returncode=result.returncode if result.returncode is not None else -1,
        stdout=result.stdout,
        stderr=scrub(result.stderr, secrets),
        truncated=result.stdout_truncated,
    )


def _operation(args: Sequence[str]) -> str:
    return next((a for a in args if not a.startswith("-")), "command")


def _failure(op: str, result: _Result, secrets: Sequence[str]) -> GitError:
    kind = _classify(result.stderr)
    summary = _SUMMARY.get(kind, f"failed (exit {result.returncode})")
    detail = _detail(result.stderr, secrets)
    message = f"git {op}: {summary}" + (f": {detail}" if detail else "")
    return _error(message, kind)


# --------------------------------------------------------------------------- workspace


class GitWorkspace:
    """A checkout on disk, driven through the `git` CLI."""

    def __init__(
        self,
        path: Path,
        *,
        timeout: float = LOCAL_TIMEOUT_SECONDS,
        network_timeout: float = NETWORK_TIMEOUT_SECONDS,
    ) -> None:
        self.path = Path(path).absolute()
        self.timeout = timeout
        self.network_timeout = network_timeout

    def __repr__(self) -> str:
        return f"GitWorkspace({str(self.path)!r})"

    # --- running ----------------------------------------------------------------------

    async def _git(
        self,
        *args: str,
        check: bool = True,
        credentials: GitCredentials | None = None,
        network: bool = False,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        cap: int = OUTPUT_CAP_BYTES,
        cwd: Path | None = None,
    ) -> _Result:
        secrets = _secrets(credentials)
        workdir = cwd or self.path
        base_env = {"GIT_CEILING_DIRECTORIES": str(self.path.parent)}
        with _askpass(credentials) as askpass_env:
            result = await run_git(
                args,
                cwd=workdir,
                timeout_seconds=self.network_timeout if network else self.timeout,
                env={**base_env, **(env or {}), **askpass_env},
                stdin=stdin,
                cap=cap,
                secrets=secrets,
            )
        if check and result.returncode != 0:
            raise _failure(_operation(args), result, secrets)
        return result

    # --- clone ------------------------------------------------------------------------

    @classmethod
    async def clone(
        cls,
        url: str,
        path: Path,
        *,
        credentials: GitCredentials | None,
        branch: str | None = None,
        depth: int | None = None,
        timeout_seconds: float = NETWORK_TIMEOUT_SECONDS,
    ) -> GitWorkspace:
        """Clone `url` into `path` (absent or an empty directory) and return the workspace.

        `url` must not carry a password: pass `credentials` instead."""
        _check_arg(url, "repository URL")
        if _url_has_password(url):
            raise GitError(
                "the clone URL must not contain credentials; pass them as GitCredentials",
                kind="invalid",
            )
        options: list[str] = []
        if branch is not None:
            options.append(f"--branch={_check_arg(branch, 'branch name')}")
        if depth is not None:
            if depth < 1:
                raise GitError(f"invalid depth: {depth}", kind="invalid")
            options.append(f"--depth={depth}")
        target = await asyncio.to_thread(_prepare_clone_target, path)
        workspace = cls(target, network_timeout=timeout_seconds)
        await workspace._git(
            "clone",
            "--quiet",
            *options,
            "--",
            url,
            str(target),
            credentials=credentials,
            network=True,
            cwd=target.parent,
        )
        return workspace

    # --- reading ----------------------------------------------------------------------

    async def current_branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD."""
        result = await self._git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        if result.returncode == 0:
            return result.stdout.strip() or None
        if result.returncode == 1:
            return None
        raise _failure("symbolic-ref", result, ())

    async def head_sha(self) -> str:
        sha = await self._head_or_none()
        if sha is None:
            raise GitNotFoundError("git rev-parse: the repository has no commit yet")
        return sha

    async def _head_or_none(self) -> str | None:
        result = await self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
        await self._git("rev-parse", "--git-dir")  # not a repository → a clear error
        return None

    async def resolve_commit(self, ref: str) -> str:
        """The commit `ref` names; `GitError(kind="invalid")` if it names none."""
        _check_arg(ref, "revision")
        result = await self._git(
            "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False
        )
        sha = result.stdout.strip()
        if result.returncode != 0 or not sha:
            await self._git("rev-parse", "--git-dir")
            raise GitError(f"unknown revision: {ref!r}", kind="invalid")
        return sha

    async def default_branch(self, remote: str = DEFAULT_REMOTE) -> str | None:
        """The branch the remote's HEAD points at (what a clone checked out), if known."""
        _check_arg(remote, "remote name")
        result = await self._git(
            "symbolic-ref", "--quiet", "--short", f"refs/remotes/{remote}/HEAD", check=False
        )
        name = result.stdout.strip()
        return name.removeprefix(f"{remote}/") if result.returncode == 0 and name else None

    async def remote_url(self, remote: str = DEFAULT_REMOTE) -> str:
        """The remote's URL with any userinfo stripped."""
        result = await self._git("remote", "get-url", _check_arg(remote, "remote name"))
        return strip_userinfo(result.stdout.strip())

    async def branch_exists(self, name: str) -> bool:
        result = await self._git(
            "show-ref", "--verify", "--quiet", f"refs/heads/{name}", check=False
        )
        return result.returncode == 0

    async def _branch_name(self, name: str) -> str:
        _check_arg(name, "branch name")
        result = await self._git("check-ref-format", "--branch", name, check=False)
        if result.returncode != 0 or result.stdout.strip() != name:
            raise GitError(f"invalid branch name: {name!r}", kind="invalid")
        return name

    # --- changing ---------------------------------------------------------------------

    async def create_branch(self, name: str, *, from_ref: str | None = None) -> None:
        """Create branch `name` at `from_ref` (default HEAD) and check it out."""
        await self._branch_name(name)
        if await self.branch_exists(name):
            raise GitError(f"branch {name!r} already exists", kind="exists")
        start = [await self.resolve_commit(from_ref)] if from_ref is not None else []
        await self._git("checkout", "--quiet", "-b", name, *start)

    async def checkout(self, name: str) -> None:
        """Switch to branch `name` (a remote-tracking `origin/<name>` is picked up)."""
        await self._branch_name(name)
        await self._git("switch", "--quiet", name)

    async def commit_all(self, message: str, *, author_name: str, author_email: str) -> str | None:
        """Stage everything (new, changed, deleted) and commit; None if nothing changed."""
        if not message.strip():
            raise GitError("commit message is empty", kind="invalid")
        if not author_name.strip() or not author_email.strip():
            raise GitError("commit author name and email are required", kind="invalid")
        await self._git("add", "--all")
        staged = await self._git("diff", "--cached", "--quiet", check=False)
        if staged.returncode == 0:
            return None
        if staged.returncode != 1:
            raise _failure("diff", staged, ())
        identity = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        await self._git(
            "commit",
            "--quiet",
            "--no-verify",
            "--no-gpg-sign",
            "--file=-",
            env=identity,
            stdin=message.encode("utf-8"),
        )
        return await self.head_sha()

    async def push(
        self,
        branch: str,
        *,
        credentials: GitCredentials | None,
        set_upstream: bool = True,
        remote: str = DEFAULT_REMOTE,
    ) -> None:
        """Push local `branch` to the branch of the same name on `remote`."""
        await self._branch_name(branch)
        _check_arg(remote, "remote name")
        options = ["--set-upstream"] if set_upstream else []
        await self._git(
            "push",
            "--quiet",
            "--no-verify",
            *options,
            "--",
            remote,
            f"refs/heads/{branch}:refs/heads/{branch}",
            credentials=credentials,
            network=True,
        )

    async def fetch(
        self, *, credentials: GitCredentials | None, remote: str = DEFAULT_REMOTE
    ) -> None:
        _check_arg(remote, "remote name")
        await self._git(
            "fetch", "--quiet", "--prune", "--", remote, credentials=credentials, network=True
        )

    # --- diff -------------------------------------------------------------------------

    async def diff(self, base: str | None = None, head: str | None = None) -> str:
        """Unified diff: `base` (default HEAD) against `head`, or against the working tree
        (untracked files included) when `head` is None. Refs are validated."""
        result = await self.diff_capped(base, head, max_bytes=MAX_DIFF_BYTES)
        if result.truncated:
            raise GitError(f"git diff: larger than {MAX_DIFF_BYTES} bytes", kind="failed")
        return result.text

    async def diff_capped(
        self, base: str | None = None, head: str | None = None, *, max_bytes: int
    ) -> GitDiff:
        """Like `diff`, cut after `max_bytes` (at a line end) with `truncated` set."""
        if head is not None and base is None:
            raise GitError("a diff with `head` needs a `base`", kind="invalid")
        options = [
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--src-prefix=a/",
            "--dst-prefix=b/",
        ]
        if head is not None:
            assert base is not None
            base_sha = await self.resolve_commit(base)
            head_sha = await self.resolve_commit(head)
            result = await self._git(*options, base_sha, head_sha, "--", cap=max_bytes)
            return _diff_result(result, base_sha, head_sha)
        from_sha = await self.resolve_commit(base) if base else await self._head_or_none()
        compare_to = from_sha or await self._empty_tree()
        index = Path((await self._git("rev-parse", "--git-path", "index")).stdout.strip())
        if not index.is_absolute():
            index = self.path / index
        with tempfile.TemporaryDirectory(prefix="coro-diff-") as tmp:
            scratch = Path(tmp) / "index"
            await asyncio.to_thread(_copy_if_exists, index, scratch)
            env = {"GIT_INDEX_FILE": str(scratch)}
            # untracked, non-ignored files become intent-to-add entries of the scratch
            # index only, so the working-tree diff shows them as new files
            await self._git("add", "--all", "--intent-to-add", "--ignore-errors", env=env)
            result = await self._git(*options, compare_to, "--", env=env, cap=max_bytes)
        return _diff_result(result, from_sha, None)

    async def _empty_tree(self) -> str:
        result = await self._git("hash-object", "-t", "tree", "--stdin", stdin=b"")
        return result.stdout.strip()


def _diff_result(result: _Result, base: str | None, head: str | None) -> GitDiff:
    text = result.stdout
    if result.truncated:
        cut = text.rfind("\n")
        text = text[: cut + 1] if cut >= 0 else ""
    return GitDiff(text=text, base=base, head=head, truncated=result.truncated)


def _copy_if_exists(source: Path, target: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.copyfile(source, target)


def _prepare_clone_target(path: Path) -> Path:
    target = Path(path).absolute()
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise GitError(
            f"cannot clone into {target}: it exists and is not a directory", kind="exists"
        )
    if target.is_dir() and any(target.iterdir()):
        raise GitError(f"cannot clone into {target}: the directory is not empty", kind="exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


# --------------------------------------------------------------------------- job checkouts


class NoCheckout(LookupError):
    """The job directory holds no (such) git checkout."""


def _checkout_name(name: str) -> str:
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or _CONTROL.search(name)
        or len(name) > 255
    ):
        raise ValueError(f"repo must be the name of a directory in the job directory: {name!r}")
    return name


def _is_checkout(path: Path) -> bool:
    return path.is_dir() and (path / ".git").exists()


def find_checkout(job_dir: Path, repo: str | None, default: str | None = None) -> tuple[str, Path]:
    """The checkout `work/<jobId>/<repo>` to look at.

    `repo` names a directory of the job directory (ValueError if it is a path). Without
    it: `default` (the job's `params.repoSlug`) if that is a checkout, else the only
    checkout in the job directory (ValueError if there are several). `NoCheckout` if
    there is none."""
    root = job_dir.resolve()
    if repo is not None:
        name = _checkout_name(repo)
        candidate = job_dir / name
        if not _is_checkout(candidate):
            raise NoCheckout(f"no checkout {name!r} in the job directory")
    else:
        name = ""
        if default:
            with contextlib.suppress(ValueError):
                if _is_checkout(job_dir / _checkout_name(default)):
                    name = default
        if not name:
            found = (
                sorted(p.name for p in job_dir.iterdir() if _is_checkout(p))
                if job_dir.is_dir()
                else []
            )
            if not found:
                raise NoCheckout("no checkout in the job directory")
            if len(found) > 1:
                raise ValueError(f"several checkouts ({', '.join(found)}): choose one with `repo`")
            name = found[0]
        candidate = job_dir / name
    if not candidate.resolve().is_relative_to(root):
        raise ValueError(f"repo {name!r} leads outside the job directory")
    return name, candidate
