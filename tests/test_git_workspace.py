"""Git workspaces with the real `git` CLI: a bare origin on disk, an authenticated HTTP
origin (`git http-backend` behind Basic auth on 127.0.0.1), diffs, and `/jobs/:id/diff`.

The user's git configuration is never read or written: HOME and GIT_CONFIG_GLOBAL point
at the test's own directory and the system configuration is off.
"""

# Blocking file-system and subprocess calls are fine here: they set up and inspect repos.
# ruff: noqa: ASYNC240

from __future__ import annotations

import base64
import hmac
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from coro.domain.errors import PluginAuthError
from coro.system.git import (
    GitCredentials,
    GitError,
    GitWorkspace,
    find_checkout,
    strip_userinfo,
)
from tests.conftest import Api, ApiFactory, make_config, write_workflow

USER = "coro-bot"
PASSWORD = "pa55-W0rd:with/odd&chars"
AUTHOR = {"author_name": "Coro Bot", "author_email": "bot@coro.test"}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(autouse=True)
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and global config; identity for the tests' own commits."""
    home = tmp_path / "git-home"
    home.mkdir()
    config = home / ".gitconfig"
    config.write_text("[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Seed")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "seed@coro.test")
    # askpass helpers are created here, so a test can see what is left on disk
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare repository with one commit on `main` (README.md, app.py)."""
    bare = tmp_path / "repos" / "repo.git"
    bare.parent.mkdir()
    git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    seed = tmp_path / "seed"
    git("init", "--quiet", "-b", "main", str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("# Widget\n")
    (seed / "app.py").write_text("print('hello')\n")
    git("add", "-A", cwd=seed)
    git("commit", "--quiet", "-m", "initial", cwd=seed)
    git("push", "--quiet", str(bare), "main", cwd=seed)
    return bare


def file_url(path: Path) -> str:
    return path.as_uri()


# --------------------------------------------------------------------------- file origin


async def test_clone_branch_commit_push_to_a_bare_origin(tmp_path: Path, origin: Path) -> None:
    checkout = tmp_path / "work" / "widget"
    ws = await GitWorkspace.clone(file_url(origin), checkout, credentials=None)
    assert ws.path == checkout
    assert (checkout / "README.md").read_text() == "# Widget\n"
    assert await ws.current_branch() == "main"
    assert await ws.remote_url() == file_url(origin)
    initial = await ws.head_sha()
    assert initial == git("rev-parse", "main", cwd=origin).strip()

    await ws.create_branch("coro/add-greeting")
    assert await ws.current_branch() == "coro/add-greeting"
    assert await ws.commit_all("nothing yet", **AUTHOR) is None

    (checkout / "app.py").write_text("print('hello, world')\n")
    (checkout / "docs").mkdir()
    (checkout / "docs" / "greeting.md").write_text("Greets the world.\n")
    (checkout / "README.md").unlink()
    sha = await ws.commit_all("Add a greeting\n\nLonger body.", **AUTHOR)
    assert sha is not None and sha == await ws.head_sha() and sha != initial
    await ws.push("coro/add-greeting", credentials=None)

    assert git("rev-parse", "refs/heads/coro/add-greeting", cwd=origin).strip() == sha
    assert git("rev-parse", "refs/heads/main", cwd=origin).strip() == initial
    shown = git("log", "-1", "--format=%an <%ae>|%cn|%s|%b", sha, cwd=origin)
    assert shown.strip() == "Coro Bot <bot@coro.test>|Coro Bot|Add a greeting|Longer body."
    files = git("show", "--name-status", "--format=", sha, cwd=origin).split("\n")
    assert sorted(f for f in files if f) == ["A\tdocs/greeting.md", "D\tREADME.md", "M\tapp.py"]
    upstream = git("rev-parse", "--abbrev-ref", "coro/add-greeting@{upstream}", cwd=checkout)
    assert upstream.strip() == "origin/coro/add-greeting"

    # the origin moves on; fetch sees it, checkout switches back
    other = tmp_path / "other"
    ws2 = await GitWorkspace.clone(file_url(origin), other, credentials=None, depth=1)
    (other / "CHANGELOG.md").write_text("v2\n")
    main2 = await ws2.commit_all("changelog", **AUTHOR)
    await ws2.push("main", credentials=None)
    await ws.fetch(credentials=None)
    assert git("rev-parse", "origin/main", cwd=checkout).strip() == main2
    await ws.checkout("main")
    assert await ws.current_branch() == "main"
    assert not (checkout / "docs").exists()

    on_branch = await GitWorkspace.clone(
        file_url(origin), tmp_path / "b", credentials=None, branch="coro/add-greeting"
    )
    assert await on_branch.current_branch() == "coro/add-greeting"
    assert await on_branch.head_sha() == sha
    with pytest.raises(GitError) as caught:
        await GitWorkspace.clone(file_url(origin), tmp_path / "n", credentials=None, branch="nope")
    assert caught.value.kind == "not_found"


async def test_a_rejected_push_is_a_clear_error(tmp_path: Path, origin: Path) -> None:
    a = await GitWorkspace.clone(file_url(origin), tmp_path / "a", credentials=None)
    b = await GitWorkspace.clone(file_url(origin), tmp_path / "b", credentials=None)
    (a.path / "x.txt").write_text("a\n")
    await a.commit_all("from a", **AUTHOR)
    await a.push("main", credentials=None)
    (b.path / "x.txt").write_text("b\n")
    await b.commit_all("from b", **AUTHOR)
    with pytest.raises(GitError) as caught:
        await b.push("main", credentials=None)
    assert caught.value.kind == "rejected"
    assert "rejected" in str(caught.value)


async def test_branch_names_are_validated_and_never_overwritten(
    tmp_path: Path, origin: Path
) -> None:
    ws = await GitWorkspace.clone(file_url(origin), tmp_path / "c", credentials=None)
    for bad in ("a..b", "-f", "--force", "@{-1}", "has space", "ends.lock", "x\ny", ""):
        with pytest.raises(GitError) as caught:
            await ws.create_branch(bad)
        assert caught.value.kind == "invalid", bad
    with pytest.raises(GitError) as caught:
        await ws.create_branch("main")
    assert caught.value.kind == "exists"
    assert "already exists" in str(caught.value)

    first = await ws.head_sha()
    (ws.path / "n.txt").write_text("n\n")
    await ws.commit_all("second", **AUTHOR)
    await ws.create_branch("from-first", from_ref=first)
    assert await ws.head_sha() == first
    with pytest.raises(GitError) as caught:
        await ws.create_branch("from-nowhere", from_ref="no-such-ref")
    assert caught.value.kind == "invalid"
    with pytest.raises(GitError) as caught:
        await ws.checkout("no-such-branch")
    assert caught.value.kind == "not_found"
    with pytest.raises(GitError):
        await ws.checkout("--orphan")
    assert await ws.current_branch() == "from-first"


async def test_clone_refuses_a_used_target_and_credentials_in_the_url(
    tmp_path: Path, origin: Path
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine\n")
    with pytest.raises(GitError) as caught:
        await GitWorkspace.clone(file_url(origin), used, credentials=None)
    assert caught.value.kind == "exists"
    assert (used / "keep.txt").read_text() == "mine\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    await GitWorkspace.clone(file_url(origin), empty, credentials=None)
    assert (empty / "README.md").exists()

    with pytest.raises(GitError) as caught:
        await GitWorkspace.clone(
            "https://bot:hunter2@example.invalid/x.git", tmp_path / "n", credentials=None
        )
    assert caught.value.kind == "invalid"
    assert "hunter2" not in str(caught.value)
    with pytest.raises(GitError) as caught:
        await GitWorkspace.clone("--upload-pack=touch /tmp/x", tmp_path / "n", credentials=None)
    assert caught.value.kind == "invalid"
    with pytest.raises(GitError) as caught:
        await GitWorkspace.clone(file_url(tmp_path / "nope.git"), tmp_path / "n", credentials=None)
    assert caught.value.kind == "not_found"
    assert not (tmp_path / "n").exists() or not any((tmp_path / "n").iterdir())


def test_userinfo_is_stripped_from_urls() -> None:
    assert strip_userinfo("https://u:p@host.test/a/b.git") == "https://host.test/a/b.git"
    assert strip_userinfo("https://x-access-token@host.test/r") == "https://host.test/r"
    assert strip_userinfo("https://host.test:8443/r") == "https://host.test:8443/r"
    assert strip_userinfo("git@github.com:o/r.git") == "git@github.com:o/r.git"
    assert strip_userinfo("/srv/repos/r.git") == "/srv/repos/r.git"


async def test_hooks_of_the_checkout_never_run(tmp_path: Path, origin: Path) -> None:
    ws = await GitWorkspace.clone(file_url(origin), tmp_path / "h", credentials=None)
    marker = tmp_path / "hook-ran"
    hook = ws.path / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch '{marker}'\n")
    hook.chmod(0o755)
    git("config", "core.hooksPath", str(hook.parent), cwd=ws.path)
    (ws.path / "f.txt").write_text("f\n")
    assert await ws.commit_all("with a hook around", **AUTHOR) is not None
    assert not marker.exists()


# --------------------------------------------------------------------------- HTTP origin


class GitHttpServer(ThreadingHTTPServer):
    """`git http-backend` (smart HTTP, push enabled) behind Basic auth."""

    daemon_threads = True

    def __init__(self, root: Path, username: str, password: str, askpass_dir: Path) -> None:
        super().__init__(("127.0.0.1", 0), _GitHttpHandler)
        self.root = root
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.username = username
        self.password = password
        self.askpass_dir = askpass_dir
        self.authenticated = 0
        self.askpass_files: set[str] = set()
        self.leaks: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def inspect_client(self) -> None:
        """While git waits on us: is the password in any argv or any askpass file?"""
        secret = self.password.encode()
        for entry in self.askpass_dir.rglob("*"):
            if entry.is_file():
                self.askpass_files.add(entry.name)
                if secret in entry.read_bytes():
                    self.leaks.append(f"askpass file {entry}")
        proc = Path("/proc")
        if proc.is_dir():
            for pid in proc.iterdir():
                if not pid.name.isdigit():
                    continue
                try:
                    argv = (pid / "cmdline").read_bytes()
                except OSError:
                    continue
                if secret in argv:
                    self.leaks.append(f"argv of pid {pid.name}")


class _GitHttpHandler(BaseHTTPRequestHandler):
    server: GitHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        body = self._body()
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), self.server.expected.encode()):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="coro-test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.authenticated += 1
        self.server.inspect_client()
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "GIT_CONFIG_GLOBAL": os.environ.get("GIT_CONFIG_GLOBAL", "/dev/null"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(path),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": self.server.username,
            "REMOTE_ADDR": "127.0.0.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
        }
        for header, var in (
            ("Git-Protocol", "GIT_PROTOCOL"),
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
        ):
            if self.headers.get(header):
                env[var] = self.headers[header]
        backend = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60
        )
        head, _, payload = backend.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def http_origin(origin: Path, git_env: Path) -> Iterator[GitHttpServer]:
    server = GitHttpServer(origin.parent, USER, PASSWORD, askpass_dir=git_env)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert "pa55-W0rd" not in text


async def test_clone_push_fetch_over_authenticated_http(
    tmp_path: Path, origin: Path, http_origin: GitHttpServer, git_env: Path
) -> None:
    url = f"{http_origin.base_url}/repo.git"
    creds = GitCredentials(USER, PASSWORD)
    ws = await GitWorkspace.clone(url, tmp_path / "job" / "repo", credentials=creds)
    await ws.create_branch("feature")
    (ws.path / "app.py").write_text("print('over http')\n")
    sha = await ws.commit_all("over http", **AUTHOR)
    assert sha is not None
    await ws.push("feature", credentials=creds)
    await ws.fetch(credentials=creds)

    assert git("rev-parse", "refs/heads/feature", cwd=origin).strip() == sha
    assert http_origin.authenticated >= 3
    # the helper existed while git talked to the server, without the password in it,
    # and no process had the password in its argv
    assert http_origin.askpass_files == {"askpass.sh"}
    assert http_origin.leaks == []
    assert list(git_env.iterdir()) == []  # helpers and scratch files are gone

    assert await ws.remote_url() == url
    config = (ws.path / ".git" / "config").read_text()
    assert_no_password(config, git("remote", "-v", cwd=ws.path), repr(creds))
    assert USER not in config
    for entry in (ws.path / ".git").rglob("*"):
        if entry.is_file():
            assert PASSWORD.encode() not in entry.read_bytes(), entry


async def test_wrong_or_missing_credentials_fail_clearly_without_the_password(
    tmp_path: Path, origin: Path, http_origin: GitHttpServer, git_env: Path
) -> None:
    url = f"{http_origin.base_url}/repo.git"
    wrong = GitCredentials(USER, PASSWORD + "-but-wrong")
    with pytest.raises(GitError) as caught:
        await GitWorkspace.clone(url, tmp_path / "w", credentials=wrong)
    error = caught.value
    assert error.kind == "auth" and error.status == 401
    assert isinstance(error, PluginAuthError)
    assert "authentication failed" in str(error)
    assert_no_password(str(error), repr(error), str(error.args))
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())

    with pytest.raises(GitError) as caught:  # no credentials: fails, never prompts
        await GitWorkspace.clone(url, tmp_path / "w", credentials=None)
    assert caught.value.kind == "auth"

    ws = await GitWorkspace.clone(url, tmp_path / "ok", credentials=GitCredentials(USER, PASSWORD))
    (ws.path / "f.txt").write_text("f\n")
    await ws.commit_all("f", **AUTHOR)
    with pytest.raises(GitError) as caught:
        await ws.push("main", credentials=wrong)
    assert caught.value.kind == "auth"
    assert_no_password(str(caught.value))
    assert http_origin.leaks == []
    assert list(git_env.iterdir()) == []


async def test_the_password_is_scrubbed_from_git_output(
    tmp_path: Path, http_origin: GitHttpServer
) -> None:
    # git echoes the URL, here containing the (URL-encoded) password, in its message
    url = f"{http_origin.base_url}/{quote(PASSWORD, safe='')}.git"
    with pytest.raises(GitError) as caught:
        await GitWorkspace.clone(url, tmp_path / "x", credentials=GitCredentials(USER, PASSWORD))
    assert caught.value.kind == "not_found"
    assert_no_password(str(caught.value))
    assert quote(PASSWORD, safe="") not in str(caught.value)
    assert "***" in str(caught.value)


# --------------------------------------------------------------------------- diff


@pytest.fixture
async def workspace(tmp_path: Path, origin: Path) -> GitWorkspace:
    return await GitWorkspace.clone(file_url(origin), tmp_path / "d", credentials=None)


async def test_diff_of_the_working_tree_includes_untracked_files(
    workspace: GitWorkspace,
) -> None:
    root = workspace.path
    assert await workspace.diff() == ""
    (root / "app.py").write_text("print('changed')\n")
    (root / "README.md").unlink()
    (root / "new").mkdir()
    (root / "new" / "file.txt").write_text("brand new\n")
    (root / ".gitignore").write_text("*.log\n")
    (root / "noise.log").write_text("ignored\n")
    git("add", "app.py", cwd=root)  # a staged change shows too
    index_before = (root / ".git" / "index").read_bytes()
    status_before = git("status", "--porcelain", cwd=root)

    text = await workspace.diff()
    assert "diff --git a/app.py b/app.py" in text
    assert "-print('hello')\n+print('changed')" in text
    assert "diff --git a/README.md b/README.md\ndeleted file mode" in text
    assert "diff --git a/new/file.txt b/new/file.txt\nnew file mode 100644" in text
    assert "+brand new" in text
    assert "b/.gitignore" in text
    assert "noise.log" not in text

    assert (root / ".git" / "index").read_bytes() == index_before
    assert git("status", "--porcelain", cwd=root) == status_before
    assert "?? new/" in status_before

    result = await workspace.diff_capped(max_bytes=200)
    assert result.truncated and len(result.text.encode()) <= 200
    assert result.text.endswith("\n")
    assert result.head is None and result.base == await workspace.head_sha()


async def test_diff_between_refs_and_against_a_base(workspace: GitWorkspace) -> None:
    root = workspace.path
    first = await workspace.head_sha()
    await workspace.create_branch("topic")
    (root / "app.py").write_text("print('topic')\n")
    second = await workspace.commit_all("topic change", **AUTHOR)
    assert second is not None

    between = await workspace.diff("main", "topic")
    assert "-print('hello')\n+print('topic')" in between
    assert await workspace.diff(first, second) == between
    assert await workspace.diff("topic", "main") != between
    assert await workspace.diff("HEAD") == ""

    (root / "extra.txt").write_text("x\n")
    against_main = await workspace.diff("main")
    assert "+print('topic')" in against_main and "b/extra.txt" in against_main
    result = await workspace.diff_capped("main~0", "HEAD", max_bytes=10_000)
    assert (result.base, result.head, result.truncated) == (first, second, False)


async def test_bad_refs_are_refused(tmp_path: Path, workspace: GitWorkspace) -> None:
    for base, head in (
        ("--output=" + str(tmp_path / "owned"), None),
        ("-R", None),
        ("no-such-ref", None),
        ("main", "--cached"),
        ("main", "no-such-ref"),
        ("HEAD:README.md", None),  # a blob, not a commit
        ("main\nx", None),
        (None, "main"),  # head needs a base
    ):
        with pytest.raises(GitError) as caught:
            await workspace.diff(base, head)
        assert caught.value.kind == "invalid", (base, head)
    assert not (tmp_path / "owned").exists()


async def test_diff_of_a_repository_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    git("init", "--quiet", "-b", "main", str(root), cwd=tmp_path)
    (root / "a.txt").write_text("a\n")
    ws = GitWorkspace(root)
    text = await ws.diff()
    assert "diff --git a/a.txt b/a.txt\nnew file mode" in text
    assert (await ws.diff_capped(max_bytes=1000)).base is None
    assert await ws.current_branch() == "main"
    with pytest.raises(GitError) as caught:
        await ws.head_sha()
    assert caught.value.kind == "not_found"
    sha = await ws.commit_all("first", **AUTHOR)
    assert sha is not None and sha == await ws.head_sha()
    assert await ws.diff() == ""


async def test_a_directory_that_is_no_repository_is_a_clear_error(tmp_path: Path) -> None:
    plain = tmp_path / "outer" / "plain"
    plain.mkdir(parents=True)
    git("init", "--quiet", str(tmp_path / "outer"), cwd=tmp_path)  # an enclosing repo
    with pytest.raises(GitError) as caught:
        await GitWorkspace(plain).diff()
    assert caught.value.kind == "not_found"
    with pytest.raises(GitError) as caught:
        await GitWorkspace(tmp_path / "missing").current_branch()
    assert caught.value.kind == "not_found"


def test_find_checkout_resolves_names_inside_the_job_directory(tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / "plan").mkdir(parents=True)
    with pytest.raises(LookupError):
        find_checkout(job, None)
    (job / "one" / ".git").mkdir(parents=True)
    assert find_checkout(job, None) == ("one", job / "one")
    (job / "two" / ".git").mkdir(parents=True)
    with pytest.raises(ValueError, match="several"):
        find_checkout(job, None)
    assert find_checkout(job, None, default="two") == ("two", job / "two")
    assert find_checkout(job, "one", default="two") == ("one", job / "one")
    for bad in ("..", ".", "../x", "/etc", "a/b", ""):
        with pytest.raises(ValueError):
            find_checkout(job, bad)
    (job / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / ".git").mkdir(parents=True)
    with pytest.raises(ValueError, match="outside"):
        find_checkout(job, "link")


# --------------------------------------------------------------------------- HTTP API


async def test_diff_endpoint_shows_what_the_job_changed(
    api_factory: ApiFactory, origin: Path
) -> None:
    # The job clones with plain git from a file:// origin under /tmp, which the sandboxed
    # shell cannot see; a clone no SCM plugin made is still a checkout the endpoint finds.
    config = make_config()
    config.tools.shell.sandbox = "off"
    async with api_factory(config) as api:
        await _diff_endpoint_shows_what_the_job_changed(api, origin)


async def _diff_endpoint_shows_what_the_job_changed(api: Api, origin: Path) -> None:
    workflow = write_workflow(api.home, "edit-repo", [{"name": "coding", "agent": None}])
    script = {
        "coding": [
            {"tool": "shell", "input": {"command": f"git clone --quiet {file_url(origin)} widget"}},
            {"tool": "file_write", "input": {"path": "widget/src/new.py", "content": "x = 1\n"}},
            {
                "tool": "file_edit",
                "input": {"path": "widget/app.py", "oldText": "hello", "newText": "hi"},
            },
            {"tool": "file_write", "input": {"path": "notes.md", "content": "not in the repo\n"}},
        ]
    }
    job_id = await api.create(workflow, script, repo="acme/widget")
    result = await api.finish(job_id)
    assert result.done == "complete", result.lines

    response = await api.client.get(f"/jobs/{job_id}/diff")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["repo"] == "widget"
    assert body["truncated"] is False
    assert body["head"] is None
    assert body["base"] == git("rev-parse", "main", cwd=origin).strip()
    diff = body["diff"]
    assert "diff --git a/src/new.py b/src/new.py\nnew file mode" in diff
    assert "-print('hello')\n+print('hi')" in diff
    assert "notes.md" not in diff

    explicit = await api.client.get(f"/jobs/{job_id}/diff", params={"repo": "widget"})
    assert explicit.json() == body
    refs = await api.client.get(f"/jobs/{job_id}/diff", params={"base": "HEAD", "head": "HEAD"})
    assert refs.status_code == 200 and refs.json()["diff"] == ""

    for params in ({"base": "--output=/tmp/x"}, {"base": "nope"}, {"head": "HEAD"}):
        bad = await api.client.get(f"/jobs/{job_id}/diff", params=params)
        assert bad.status_code == 400, (params, bad.text)
        assert "error" in bad.json()
    for repo in ("../x", "..", "/etc"):
        bad = await api.client.get(f"/jobs/{job_id}/diff", params={"repo": repo})
        assert bad.status_code == 400, (repo, bad.text)
    missing = await api.client.get(f"/jobs/{job_id}/diff", params={"repo": "other"})
    assert missing.status_code == 404
    assert "no checkout" in missing.json()["error"]


async def test_diff_endpoint_without_a_checkout_is_404(api: Api) -> None:
    workflow = write_workflow(api.home, "no-repo", [{"name": "coding", "agent": None}])
    script = {"coding": [{"tool": "file_write", "input": {"path": "a.txt", "content": "a"}}]}
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "complete"
    response = await api.client.get(f"/jobs/{job_id}/diff")
    assert response.status_code == 404
    assert response.json()["error"] == "no checkout in the job directory"
    unknown = await api.client.get("/jobs/no-such-job/diff")
    assert unknown.status_code == 404


async def test_diff_endpoint_reads_a_prepared_checkout(
    api: Api, origin: Path, tmp_path: Path
) -> None:
    workflow = write_workflow(api.home, "idle", [{"name": "coding", "agent": None}])
    job_id = await api.create(workflow, {"coding": [{"text": "nothing to do"}]})
    assert (await api.finish(job_id)).done == "complete"
    workdir = api.runner.env.workdir(job_id)
    ws = await GitWorkspace.clone(file_url(origin), workdir / "svc", credentials=None)
    await ws.create_branch("work")
    (ws.path / "app.py").write_text("print('work')\n")
    sha = await ws.commit_all("work", **AUTHOR)
    response = await api.client.get(f"/jobs/{job_id}/diff", params={"base": "main", "head": "work"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["repo"], body["head"]) == ("svc", sha)
    assert "+print('work')" in body["diff"]


async def test_git_never_inherits_tracing_that_would_print_the_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in `git` first on PATH records the environment it was given.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "env.txt"
    (bin_dir / "git").write_text(f"#!/bin/sh\nenv > {seen}\nexit 128\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name, value in {
        "GIT_TRACE": "1",
        "GIT_TRACE_CURL": "1",
        "GIT_CURL_VERBOSE": "1",
        "GIT_TRACE_REDACT": "0",
        "GIT_TRACE2_EVENT": "/tmp/trace2.json",
        "GIT_TRACE2_ENV_VARS": "CORO_GIT_ASKPASS_PASSWORD",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(GitError):
        await GitWorkspace.clone(
            "https://git.example/acme/shop.git",
            tmp_path / "clone",
            credentials=GitCredentials(USER, PASSWORD),
        )
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert env["GIT_TRACE_REDACT"] == "1"
    leaked = {k for k in env if k.startswith(("GIT_TRACE", "GIT_CURL")) and k != "GIT_TRACE_REDACT"}
    assert leaked == set()
