"""Real git repositories served over smart HTTP by the forge fakes.

`GitHttp(root, realm=…, authorize=…)` keeps bare repositories under
`root/<owner>/<name>.git` and answers the smart-HTTP requests a `git` client makes for
`/<owner>/<name>.git/…` — `info/refs?service=git-upload-pack|git-receive-pack`,
`POST git-upload-pack`, `POST git-receive-pack` — by running `git http-backend` (CGI)
against them: the request body (already de-chunked by the server; a gzip body is passed
through with `HTTP_CONTENT_ENCODING`) goes to its stdin, its CGI answer (`Status`,
`Content-Type` and the other headers, then the raw body) becomes the `Answer`.

Every request must carry HTTP Basic credentials that `authorize(username, password)`
accepts; otherwise it is answered 401 with `WWW-Authenticate: Basic realm="…"`, which is
what makes a git client ask its askpass helper (and fail with "Authentication failed"
when the answer is wrong).

Helpers for tests and for the fakes' own routes (synchronous: each is a quick plumbing
command): `create` a repository with files on its branches, `commit` (someone else's
push), `branch_sha`, `branches`, `is_ancestor`, `log`, `show` (a file on a ref,
`git --git-dir … show main:path`), `merge` (a real merge commit
with `git merge-tree --write-tree` + `commit-tree` + `update-ref`, or a squash or a
fast-forward) and `delete_branch`.

No git command run here sees the user's or the system's git configuration.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from tests.fakes.http_server import Answer, RecordedRequest

__all__ = ["GitHttp", "MergeConflict", "MergeImpossible", "MergeMethod"]

#: what a smart-HTTP client asks for (dumb-protocol paths are not served)
_GIT_PATH = re.compile(
    r"^/(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+\.git)"
    r"/(?P<rest>info/refs|git-upload-pack|git-receive-pack)$"
)
_IDENTITY = {
    "GIT_AUTHOR_NAME": "Fake Forge",
    "GIT_AUTHOR_EMAIL": "forge@example.invalid",
    "GIT_COMMITTER_NAME": "Fake Forge",
    "GIT_COMMITTER_EMAIL": "forge@example.invalid",
}

MergeMethod = Literal["merge", "squash", "fast_forward"]


class MergeConflict(Exception):
    """The head does not merge cleanly into the base."""


class MergeImpossible(Exception):
    """A fast-forward was asked for but the base is not an ancestor of the head."""


class GitHttp:
    def __init__(
        self,
        root: Path,
        *,
        realm: str,
        authorize: Callable[[str, str], bool],
    ) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.realm = realm
        self.authorize = authorize
        #: stderr of every `git http-backend` run that failed (a bug in the fake or client)
        self.backend_errors: list[str] = []

    # -- repositories ---------------------------------------------------------------

    def path(self, full_name: str) -> Path:
        owner, name = full_name.lower().split("/")
        return self.root / owner / f"{name.removesuffix('.git')}.git"

    def has(self, full_name: str) -> bool:
        return (self.path(full_name) / "HEAD").is_file()

    def create(
        self,
        full_name: str,
        files: Mapping[str, str | bytes],
        *,
        branches: tuple[str, ...] = ("main",),
        message: str = "Initial commit",
    ) -> str:
        """A bare repository whose every branch in `branches` points at one commit
        holding `files` (paths may contain `/`); the first branch is HEAD."""
        path = self.path(full_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        _git(["init", "--quiet", "--bare", f"--initial-branch={branches[0]}", str(path)])
        tree = self._tree(full_name, files, None)
        commit = self._git(full_name, "commit-tree", tree, "-m", message, env=_IDENTITY)
        for branch in branches:
            self._git(full_name, "update-ref", f"refs/heads/{branch}", commit)
        self._git(full_name, "symbolic-ref", "HEAD", f"refs/heads/{branches[0]}")
        return commit

    def commit(
        self,
        full_name: str,
        branch: str,
        files: Mapping[str, str | bytes],
        *,
        message: str,
        start: str | None = None,
    ) -> str:
        """Someone else pushes: a commit on `branch` (created at `start` if it does not
        exist yet) that writes `files` over its tree; returns the commit."""
        parent = self.branch_sha(full_name, branch) or (
            self.branch_sha(full_name, start) if start is not None else None
        )
        if parent is None:
            raise ValueError(f"{full_name}: no branch {branch!r} (and no `start`)")
        tree = self._tree(full_name, files, parent)
        commit = self._git(
            full_name, "commit-tree", tree, "-p", parent, "-m", message, env=_IDENTITY
        )
        self._git(full_name, "update-ref", f"refs/heads/{branch}", commit)
        return commit

    def _tree(self, full_name: str, files: Mapping[str, str | bytes], base: str | None) -> str:
        """The tree of `base` (None: empty) with `files` written over it."""
        with tempfile.TemporaryDirectory(prefix="fake-forge-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if base is not None:
                self._git(full_name, "read-tree", base, env=env)
            for name, content in files.items():
                data = content.encode() if isinstance(content, str) else content
                blob = self._git(full_name, "hash-object", "-w", "--stdin", stdin=data)
                cacheinfo = f"100644,{blob},{name}"
                self._git(full_name, "update-index", "--add", "--cacheinfo", cacheinfo, env=env)
            return self._git(full_name, "write-tree", env=env)

    def branch_sha(self, full_name: str, branch: str) -> str | None:
        ref = f"refs/heads/{branch}^{{commit}}"
        result = self._run(full_name, "rev-parse", "--verify", "--quiet", ref)
        sha = result.stdout.decode().strip()
        return sha if result.returncode == 0 and sha else None

    def branches(self, full_name: str) -> list[str]:
        out = self._git(full_name, "for-each-ref", "--format=%(refname:short)", "refs/heads/")
        return out.splitlines()

    def is_ancestor(self, full_name: str, ancestor: str, descendant: str) -> bool:
        return (
            self._run(full_name, "merge-base", "--is-ancestor", ancestor, descendant).returncode
            == 0
        )

    def show(self, full_name: str, ref: str, file: str) -> str:
        """The text of `file` on `ref` (`git --git-dir … show ref:file`)."""
        return self._git(full_name, "show", f"{ref}:{file}", strip=False)

    def log(self, full_name: str, ref: str) -> list[str]:
        """`%H %P %s` of each commit on `ref`, newest first."""
        return self._git(full_name, "log", "--format=%H %P|%s", ref).splitlines()

    def merge(
        self,
        full_name: str,
        head: str,
        base: str,
        *,
        message: str,
        method: MergeMethod = "merge",
    ) -> str:
        """Merge branch `head` into branch `base` as a forge does; returns the new tip of
        `base`. `MergeConflict` / `MergeImpossible` leave the repository unchanged."""
        head_sha = self.branch_sha(full_name, head)
        base_sha = self.branch_sha(full_name, base)
        if head_sha is None or base_sha is None:
            raise MergeImpossible(f"branch {head if head_sha is None else base} not found")
        if method == "fast_forward":
            if not self.is_ancestor(full_name, base_sha, head_sha):
                raise MergeImpossible(f"{base} cannot be fast-forwarded to {head}")
            new = head_sha
        else:
            result = self._run(
                full_name, "merge-tree", "--write-tree", "--no-messages", base_sha, head_sha
            )
            if result.returncode == 1:
                raise MergeConflict(f"{head} does not merge cleanly into {base}")
            if result.returncode != 0:
                raise RuntimeError(result.stderr.decode(errors="replace"))
            tree = result.stdout.decode().splitlines()[0].strip()
            parents = ["-p", base_sha] + (["-p", head_sha] if method == "merge" else [])
            new = self._git(full_name, "commit-tree", tree, *parents, "-m", message, env=_IDENTITY)
        self._git(full_name, "update-ref", f"refs/heads/{base}", new, base_sha)
        return new

    def delete_branch(self, full_name: str, branch: str) -> None:
        self._git(full_name, "update-ref", "-d", f"refs/heads/{branch}")

    def _run(self, full_name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        """`git --git-dir <repo> <args>`, whatever its exit status."""
        return _git(["--git-dir", str(self.path(full_name)), *args], check=False)

    def _git(
        self,
        full_name: str,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        strip: bool = True,
    ) -> str:
        result = _git(["--git-dir", str(self.path(full_name)), *args], stdin=stdin, env=env)
        text = result.stdout.decode()
        return text.strip() if strip else text

    # -- smart HTTP -----------------------------------------------------------------

    def handles(self, path: str) -> bool:
        """Whether `path` (decoded, without the query) is a smart-HTTP git request."""
        return _GIT_PATH.match(path) is not None

    async def serve(self, request: RecordedRequest) -> Answer:
        match = _GIT_PATH.match(request.path)
        assert match is not None, request.path
        user = self._credentials(request)
        if user is None:
            return Answer(
                401,
                "Authentication required\n",
                headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'},
                content_type="text/plain; charset=utf-8",
            )
        repo = match.group("repo").lower()
        if not (self.root / repo / "HEAD").is_file():
            return Answer(404, "Repository not found\n", content_type="text/plain")
        env = {
            **_base_env(),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": f"/{repo}/{match.group('rest')}",
            "QUERY_STRING": urlsplit(request.target).query,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(request.raw)),
            "REMOTE_USER": user,  # lets receive-pack (push) through
            "REMOTE_ADDR": "127.0.0.1",
        }
        if "content-encoding" in request.headers:
            env["HTTP_CONTENT_ENCODING"] = request.headers["content-encoding"]
        if "git-protocol" in request.headers:
            env["HTTP_GIT_PROTOCOL"] = request.headers["git-protocol"]
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            cwd=self.root,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(request.raw)
        if proc.returncode != 0 and err:
            self.backend_errors.append(err.decode(errors="replace"))
        return _cgi_answer(out)

    def _credentials(self, request: RecordedRequest) -> str | None:
        """The user of valid Basic credentials, else None."""
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            pair = base64.b64decode(presented.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = pair.partition(":")
        if not sep or not self.authorize(username, password):
            return None
        return username or "git"


def _cgi_answer(output: bytes) -> Answer:
    """A CGI response (headers, a blank line, the body) as an `Answer`."""
    head, sep, body = output.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = output.partition(b"\n\n")
    if not sep:
        return Answer(502, f"bad CGI output: {output[:200]!r}\n", content_type="text/plain")
    status = 200
    content_type = "application/octet-stream"
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        key, value = name.strip().lower(), value.strip()
        if key == "status":
            status = int(value.split()[0])
        elif key == "content-type":
            content_type = value
        elif key and key != "content-length":
            headers[name.strip()] = value
    return Answer(status, headers=headers, raw=body, content_type=content_type)


def _base_env() -> dict[str, str]:
    """No user or system configuration, no inherited GIT_* variables."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }


def _git(
    args: list[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        ["git", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env={**_base_env(), **(env or {})},
        check=False,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed ({result.returncode}): "
            + result.stderr.decode(errors="replace")
        )
    return result
