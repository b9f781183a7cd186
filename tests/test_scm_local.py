"""The offline `local` SCM: bare repositories on disk, pull requests in the runner's
state backend (a real SQLite file, and a real PostgreSQL database), merges with real
git — through the plugin and through `/scm/local/…`.

The user's git configuration is never read: HOME and GIT_CONFIG_GLOBAL point at the
test's own directory and the system configuration is off.
"""

# Blocking file-system and subprocess calls are fine here: they set up and inspect repos.
# ruff: noqa: ASYNC240

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coro.config import CoroConfig, CoroHome
from coro.domain.errors import PluginConfigError, PluginError, PluginNotFoundError
from coro.extensions import Extensions
from coro.plugins.context import PluginContext
from coro.plugins.scm.local import (
    LocalScm,
    LocalScmConflict,
    LocalScmError,
    check_repo_name,
    create,
)
from coro.state.factory import state_backend
from coro.state.prs import MemoryPullRequestStore
from coro.state.sqlite import SqliteStateBackend
from coro.system.git import GitWorkspace
from tests.conftest import Api, ApiFactory, on_backend

#: the tests of pull requests (kept by the state backend), once per backend
pytestmark = pytest.mark.backends("sqlite", "postgres")

AUTHOR = {"author_name": "Dev", "author_email": "dev@coro.test"}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(autouse=True)
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private HOME and global git config (the user's is never read)."""
    git_home = tmp_path / "git-home"
    git_home.mkdir()
    config = git_home / ".gitconfig"
    config.write_text("[init]\n\tdefaultBranch = trunk\n")  # the plugin must not rely on it
    monkeypatch.setenv("HOME", str(git_home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
async def scm(home: CoroHome, state_url: str | None) -> AsyncIterator[LocalScm]:
    backend = state_backend(home, on_backend(CoroConfig(), state_url))
    await backend.open()
    try:
        yield create({}, PluginContext(home, prs=backend.prs))
    finally:
        await backend.close()


def context(home: CoroHome) -> PluginContext:
    """For what needs no stored pull request."""
    return PluginContext(home, prs=MemoryPullRequestStore())


def seed_dir(tmp_path: Path) -> Path:
    source = tmp_path / "seed"
    (source / "src").mkdir(parents=True)
    (source / "README.md").write_text("# Shop\n")
    (source / "src" / "app.py").write_text("print('hello')\n")
    (source / ".gitignore").write_text("*.log\n")
    (source / "debug.log").write_text("not imported\n")
    return source


async def push_change(
    scm: LocalScm,
    repo: str,
    branch: str,
    files: dict[str, str],
    where: Path,
    *,
    base: str = "main",
) -> GitWorkspace:
    """Clone `repo`, commit `files` on `branch` (new unless it is `base`) and push it."""
    checkout = where / f"checkout-{repo}-{branch}-{len(list(where.glob('checkout-*')))}"
    workspace = await GitWorkspace.clone(scm.clone_url(repo), checkout, credentials=None)
    if branch != base:
        await workspace.create_branch(branch, from_ref=f"origin/{base}")
    for name, content in files.items():
        path = workspace.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    assert await workspace.commit_all(f"change on {branch}", **AUTHOR) is not None
    await workspace.push(branch, credentials=None)
    return workspace


async def repo_with_pr(scm: LocalScm, tmp_path: Path, repo: str = "shop") -> int:
    """`repo` seeded from a directory, `feature` changing src/app.py, and an open PR."""
    await scm.create_repo(repo, from_dir=seed_dir(tmp_path / repo))
    await push_change(scm, repo, "feature", {"src/app.py": "print('hello, world')\n"}, tmp_path)
    pr = await scm.create_pr(
        repo,
        source_branch="feature",
        target_branch="main",
        title="Greet the world",
        body="Says hello to everyone.",
        reviewers=["alice"],
    )
    return pr.id


# --------------------------------------------------------------------------- settings


def test_settings_default_and_custom(home: CoroHome, tmp_path: Path) -> None:
    default = create({}, context(home))
    custom = create(
        {"reposDir": str(tmp_path / "elsewhere"), "defaultBranch": "trunk"}, context(home)
    )

    assert default.id == "local"
    assert default.webhook is None
    assert default.git_credentials() is None
    assert default.repos_dir == home.root / "repos"
    assert custom.repos_dir == tmp_path / "elsewhere"
    assert custom.default_branch == "trunk"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"reposDirectory": "/x"}, "reposDirectory"),
        ({"defaultBranch": "-evil"}, "defaultBranch"),
        ({"defaultBranch": "a..b"}, "defaultBranch"),
        ({"reposDir": ""}, "reposDir"),
    ],
)
def test_invalid_settings_name_the_field(
    home: CoroHome, settings: dict[str, str], field: str
) -> None:
    with pytest.raises(PluginConfigError) as raised:
        create(settings, context(home))
    assert field in str(raised.value)


def test_the_runner_loads_the_local_scm_without_configuration(home: CoroHome) -> None:
    plugins = Extensions(home).plugins(CoroConfig(), context(home))

    assert isinstance(plugins.get("scm", "local"), LocalScm)
    assert isinstance(plugins.resolve("scm"), LocalScm)
    assert "local" not in plugins.failed


# --------------------------------------------------------------------------- repositories


async def test_repo_created_from_a_directory_can_be_cloned(scm: LocalScm, tmp_path: Path) -> None:
    info = await scm.create_repo("shop", from_dir=seed_dir(tmp_path), description="The shop")

    bare = scm.repos_dir / "shop.git"
    assert info["name"] == "shop"
    assert info["cloneUrl"] == str(bare) == scm.clone_url("shop")
    assert info["defaultBranch"] == "main"
    assert info["branches"] == ["main"]
    assert git("rev-parse", "--is-bare-repository", cwd=bare).strip() == "true"
    assert git("log", "-1", "--format=%an <%ae>", "main", cwd=bare).strip() == (
        "Coro <coro@localhost>"
    )
    # git-ignored files are not imported
    assert git("ls-tree", "-r", "--name-only", "main", cwd=bare).split() == [
        ".gitignore",
        "README.md",
        "src/app.py",
    ]

    workspace = await GitWorkspace.clone(
        scm.clone_url("shop"), tmp_path / "clone", credentials=None
    )
    assert (workspace.path / "src" / "app.py").read_text() == "print('hello')\n"
    assert await workspace.current_branch() == "main"
    assert scm.matches_remote(await workspace.remote_url())
    assert scm.matches_remote(f"file://{bare}")
    assert not scm.matches_remote(str(tmp_path / "clone"))
    assert not scm.matches_remote("https://github.com/acme/shop.git")
    assert not scm.matches_remote(str(scm.repos_dir / "missing.git"))

    repos = await scm.list_repos()
    assert [(r["name"], r["description"], r["openPullRequests"]) for r in repos] == [
        ("shop", "The shop", 0)
    ]


async def test_empty_repo_then_first_push(scm: LocalScm, tmp_path: Path) -> None:
    info = await scm.create_repo("empty")
    assert info["branches"] == []
    checkout = tmp_path / "empty-checkout"
    git("init", "--quiet", "-b", "main", str(checkout), cwd=tmp_path)
    (checkout / "a.txt").write_text("a\n")
    workspace = GitWorkspace(checkout)
    await workspace.commit_all("first", **AUTHOR)
    git("remote", "add", "origin", scm.clone_url("empty"), cwd=checkout)
    await workspace.push("main", credentials=None)

    assert (await scm.list_repos())[0]["branches"] == ["main"]


async def test_creating_an_existing_repo_is_a_conflict(scm: LocalScm) -> None:
    await scm.create_repo("shop")
    with pytest.raises(LocalScmConflict):
        await scm.create_repo("shop")
    with pytest.raises(LocalScmConflict):
        await scm.create_repo("shop.git")  # the same repository
    assert [r["name"] for r in await scm.list_repos()] == ["shop"]
    assert not [p for p in scm.repos_dir.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "name",
    ["", "..", "../x", "a/b", "-x", ".hidden", "a..b", "a b", "x" * 101, "naïve", "a\nb"],
)
async def test_bad_repo_names_are_refused(scm: LocalScm, name: str) -> None:
    with pytest.raises(LocalScmError) as raised:
        await scm.create_repo(name)
    assert raised.value.status == 400
    with pytest.raises(PluginError):
        scm.clone_url(name)
    assert not scm.repos_dir.exists() or not list(scm.repos_dir.iterdir())


def test_repo_names() -> None:
    assert check_repo_name("Shop_2.api-v1") == "Shop_2.api-v1"
    assert check_repo_name("shop.git") == "shop"
    assert check_repo_name("x" * 100) == "x" * 100


async def test_create_repo_from_a_missing_directory(scm: LocalScm, tmp_path: Path) -> None:
    with pytest.raises(LocalScmError):
        await scm.create_repo("shop", from_dir=tmp_path / "nope")
    assert await scm.list_repos() == []


async def test_connection_check(scm: LocalScm, tmp_path: Path) -> None:
    await scm.create_repo("one")
    await scm.create_repo("two")

    check = await scm.test_connection()

    assert check.ok
    assert check.details["repositories"] == "2"
    assert str(scm.repos_dir) in check.message


# --------------------------------------------------------------------------- pull requests


async def test_pull_request_review_and_merge(scm: LocalScm, tmp_path: Path) -> None:
    pr_id = await repo_with_pr(scm, tmp_path)
    bare = scm.repos_dir / "shop.git"
    main_before = git("rev-parse", "main", cwd=bare).strip()

    status = await scm.pr_status("shop", pr_id)
    assert status.pull_request.state == "open"
    assert status.pull_request.url == f"local://shop/pull/{pr_id}"
    assert (status.pull_request.source_branch, status.pull_request.target_branch) == (
        "feature",
        "main",
    )
    assert status.approval_count == 0
    assert status.comments == []

    await scm.approve(pr_id, "alice")
    again = await scm.approve(pr_id, "alice")  # idempotent
    await scm.approve(pr_id, "bob")
    assert again["approvals"] == ["alice"]
    first = await scm.comment(pr_id, "Looks good", "alice")
    reply = await scm.post_comment("shop", pr_id, "Thanks!", in_reply_to=str(first["id"]))
    await scm.comment(pr_id, "One more thing", "bob")

    status = await scm.pr_status("shop", pr_id)
    assert status.approval_count == 2
    assert sorted(status.approved_by) == ["alice", "bob"]
    assert [(c.author, c.body) for c in status.comments] == [
        ("alice", "Looks good"),
        ("coro", "Thanks!"),
        ("bob", "One more thing"),
    ]
    assert [c.created_at for c in status.comments] == sorted(c.created_at for c in status.comments)
    assert status.comments[1].in_reply_to == str(first["id"]) == reply.in_reply_to
    assert await scm.poll_pr("shop", pr_id) == status

    detail = await scm.get_pr(pr_id)
    assert detail["body"] == "Says hello to everyone."
    assert detail["reviewers"] == ["alice"]
    assert detail["commentCount"] == 3
    assert "+print('hello, world')" in detail["diff"]
    assert "-print('hello')" in detail["diff"]
    assert detail["diffTruncated"] is False

    result = await scm.merge("shop", pr_id)

    assert result.merged, result.message
    assert result.sha == git("rev-parse", "main", cwd=bare).strip()
    # always a merge commit (a fast-forward was possible), first parent the old main
    parents = git("rev-list", "--parents", "-n", "1", "main", cwd=bare).split()[1:]
    assert parents == [main_before, git("rev-parse", "feature", cwd=bare).strip()]
    assert git("show", "main:src/app.py", cwd=bare) == "print('hello, world')\n"
    assert f"Merge pull request #{pr_id} from feature" in git(
        "log", "-1", "--format=%B", "main", cwd=bare
    )

    merged = await scm.pr_status("shop", pr_id)
    assert merged.pull_request.state == "merged"
    detail = await scm.get_pr(pr_id)
    assert detail["mergeSha"] == result.sha
    assert detail["mergedAt"] is not None
    assert "+print('hello, world')" in detail["diff"]  # what the merge brought

    again_merge = await scm.merge("shop", pr_id)
    assert not again_merge.merged
    assert "already merged" in again_merge.message
    with pytest.raises(LocalScmConflict):
        await scm.approve(pr_id, "carol")
    with pytest.raises(LocalScmConflict):
        await scm.decline(pr_id)


async def test_merge_with_a_message(scm: LocalScm, tmp_path: Path) -> None:
    pr_id = await repo_with_pr(scm, tmp_path)

    result = await scm.merge_pr(pr_id, message="Ship the greeting\n\nReviewed by alice.")

    assert result.merged
    bare = scm.repos_dir / "shop.git"
    assert git("log", "-1", "--format=%B", "main", cwd=bare).strip() == (
        "Ship the greeting\n\nReviewed by alice."
    )


async def test_conflicting_merge_reports_the_files_and_keeps_the_pr_open(
    scm: LocalScm, tmp_path: Path
) -> None:
    pr_id = await repo_with_pr(scm, tmp_path)
    await push_change(
        scm,
        "shop",
        "main",
        {"src/app.py": "print('bonjour')\n", "README.md": "# Shop v2\n"},
        tmp_path,
    )
    bare = scm.repos_dir / "shop.git"
    main_before = git("rev-parse", "main", cwd=bare).strip()

    result = await scm.merge("shop", pr_id)

    assert not result.merged
    assert "src/app.py" in result.message
    assert "README.md" not in result.message
    assert git("rev-parse", "main", cwd=bare).strip() == main_before
    status = await scm.pr_status("shop", pr_id)
    assert status.pull_request.state == "open"
    assert "mergedAt" in (await scm.get_pr(pr_id))


async def test_non_conflicting_diverged_branches_merge(scm: LocalScm, tmp_path: Path) -> None:
    pr_id = await repo_with_pr(scm, tmp_path)
    await push_change(scm, "shop", "main", {"README.md": "# Shop v2\n"}, tmp_path)

    result = await scm.merge("shop", pr_id)

    assert result.merged
    bare = scm.repos_dir / "shop.git"
    assert git("show", "main:README.md", cwd=bare) == "# Shop v2\n"
    assert git("show", "main:src/app.py", cwd=bare) == "print('hello, world')\n"


async def test_one_open_pr_per_branch_pair(scm: LocalScm, tmp_path: Path) -> None:
    pr_id = await repo_with_pr(scm, tmp_path)

    with pytest.raises(LocalScmConflict) as raised:
        await scm.create_pr(
            "shop", source_branch="feature", target_branch="main", title="Again", body=""
        )
    assert f"#{pr_id}" in str(raised.value)

    declined = await scm.decline(pr_id)
    assert declined["state"] == "declined"
    with pytest.raises(LocalScmConflict):
        await scm.approve(pr_id, "alice")
    assert not (await scm.merge("shop", pr_id)).merged
    reopened = await scm.create_pr(
        "shop", source_branch="feature", target_branch="main", title="Again", body=""
    )
    assert reopened.id == pr_id + 1
    assert [p["id"] for p in await scm.list_prs(state="open")] == [reopened.id]
    assert [p["id"] for p in await scm.list_prs(state="declined")] == [pr_id]


async def test_create_pr_needs_existing_distinct_branches(scm: LocalScm, tmp_path: Path) -> None:
    await scm.create_repo("shop", from_dir=seed_dir(tmp_path))

    with pytest.raises(LocalScmError, match="'nope' does not exist"):
        await scm.create_pr("shop", source_branch="nope", target_branch="main", title="T", body="")
    with pytest.raises(LocalScmError, match="same"):
        await scm.create_pr("shop", source_branch="main", target_branch="main", title="T", body="")
    with pytest.raises(LocalScmError, match="branch name"):
        await scm.create_pr(
            "shop", source_branch="--upload-pack=x", target_branch="main", title="T", body=""
        )
    with pytest.raises(PluginNotFoundError):
        await scm.create_pr("missing", source_branch="a", target_branch="main", title="T", body="")
    with pytest.raises(LocalScmError):
        await scm.create_pr("shop", source_branch="a", target_branch="main", title=" ", body="")
    assert await scm.list_prs() == []


async def test_pr_numbers_are_one_sequence_and_repos_are_checked(
    scm: LocalScm, tmp_path: Path
) -> None:
    first = await repo_with_pr(scm, tmp_path, "shop")
    second = await repo_with_pr(scm, tmp_path, "blog")

    assert (first, second) == (1, 2)
    assert [p["id"] for p in await scm.list_prs()] == [2, 1]
    assert [p["repo"] for p in await scm.list_prs(repo="blog")] == ["blog"]
    # the protocol methods name the repository too: it must be the PR's
    with pytest.raises(PluginNotFoundError):
        await scm.pr_status("blog", first)
    with pytest.raises(PluginNotFoundError):
        await scm.merge("blog", first)
    with pytest.raises(PluginNotFoundError):
        await scm.post_comment("blog", first, "hi")
    with pytest.raises(PluginNotFoundError):
        await scm.pr_status("shop", 99)
    with pytest.raises(PluginNotFoundError):
        await scm.get_pr(99)
    with pytest.raises(PluginNotFoundError):
        await scm.approve(0, "alice")
    # a clone URL names the repository as well as its name does
    assert (await scm.pr_status(scm.clone_url("shop"), first)).pull_request.id == first
    assert (await scm.pr_status("shop", first)).pull_request.state == "open"


async def test_reviewers_and_replies(scm: LocalScm, tmp_path: Path) -> None:
    pr_id = await repo_with_pr(scm, tmp_path)

    await scm.request_reviewers("shop", pr_id, ["bob", "alice", "carol"])

    assert (await scm.get_pr(pr_id, diff=False))["reviewers"] == ["alice", "bob", "carol"]
    other = await repo_with_pr(scm, tmp_path, "blog")
    foreign = await scm.comment(other, "elsewhere", "bob")
    with pytest.raises(LocalScmError, match="not on pull request"):
        await scm.comment(pr_id, "reply", "alice", in_reply_to=foreign["id"])
    with pytest.raises(LocalScmError):
        await scm.comment(pr_id, "   ", "alice")
    with pytest.raises(LocalScmError):
        await scm.approve(pr_id, " ")


async def test_listeners_hear_every_change(scm: LocalScm, tmp_path: Path) -> None:
    heard: list[str] = []

    def broken() -> None:
        raise RuntimeError("a listener bug")

    scm.add_listener(broken)  # logged and swallowed
    scm.add_listener(lambda: heard.append("change"))

    pr_id = await repo_with_pr(scm, tmp_path)
    assert len(heard) == 1  # created
    await scm.approve(pr_id, "alice")
    await scm.approve(pr_id, "alice")  # no change, no call
    assert len(heard) == 2
    await scm.comment(pr_id, "hello", "alice")
    await scm.request_reviewers("shop", pr_id, ["bob"])
    await scm.merge("shop", pr_id)
    assert len(heard) == 5
    other = await scm.create_pr(
        "shop", source_branch="feature", target_branch="main", title="again", body=""
    )
    await scm.decline(other.id)
    assert len(heard) == 7


@pytest.mark.backends("sqlite")  # it reads the SQLite file itself
async def test_the_tables_live_in_the_migrated_state_database(
    scm: LocalScm, tmp_path: Path, home: CoroHome
) -> None:
    await repo_with_pr(scm, tmp_path)

    with sqlite3.connect(home.state_db) as connection:
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        (count,) = connection.execute("SELECT COUNT(*) FROM local_pull_requests").fetchone()
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()

    assert {"jobs", "job_logs", "local_pull_requests", "local_pr_comments"} <= tables
    assert "local_pr_approvals" in tables
    assert count == 1
    assert mode == "wal"


async def test_an_old_database_is_migrated_on_first_use(home: CoroHome, tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    from coro.state.sqlite import alembic_config, current_revision

    engine = create_engine(f"sqlite:///{home.state_db}")
    try:
        with engine.connect() as connection:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0001")
            connection.commit()
    finally:
        engine.dispose()
    assert current_revision(home.state_db) == "0001"

    backend = SqliteStateBackend(home.state_db)
    await backend.open()
    try:
        assert await create({}, PluginContext(home, prs=backend.prs)).list_prs() == []
    finally:
        await backend.close()

    assert current_revision(home.state_db) not in (None, "0001")


# --------------------------------------------------------------------------- HTTP


def local_of(api: Api) -> LocalScm:
    plugin = api.runner.plugins.get("scm", "local")
    assert isinstance(plugin, LocalScm)
    return plugin


async def test_http_repositories(api: Api) -> None:
    assert (await api.client.get("/scm/local/repos")).json() == {"repos": []}

    created = await api.client.post(
        "/scm/local/repos", json={"name": "shop", "description": "The shop"}
    )
    duplicate = await api.client.post("/scm/local/repos", json={"name": "shop"})
    bad = await api.client.post("/scm/local/repos", json={"name": "../etc"})
    unknown_field = await api.client.post("/scm/local/repos", json={"name": "x", "path": "/"})
    too_long = await api.client.post("/scm/local/repos", json={"name": "x" * 101})
    listed = (await api.client.get("/scm/local/repos")).json()

    assert created.status_code == 201, created.text
    assert created.json()["name"] == "shop"
    assert created.json()["cloneUrl"] == local_of(api).clone_url("shop")
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["error"]
    assert bad.status_code == 400
    assert "repository name" in bad.json()["error"]
    assert unknown_field.status_code == 400
    assert too_long.status_code == 400
    assert [(r["name"], r["description"]) for r in listed["repos"]] == [("shop", "The shop")]


async def test_http_pull_request_review_and_merge(api: Api, tmp_path: Path) -> None:
    scm = local_of(api)
    pr_id = await repo_with_pr(scm, tmp_path)

    listed = (await api.client.get("/scm/local/prs")).json()["pullRequests"]
    assert len(listed) == 1
    summary = listed[0]
    assert {
        k: summary[k]
        for k in ("id", "repo", "title", "state", "sourceBranch", "targetBranch", "author")
    } == {
        "id": pr_id,
        "repo": "shop",
        "title": "Greet the world",
        "state": "open",
        "sourceBranch": "feature",
        "targetBranch": "main",
        "author": "coro",
    }
    assert summary["approvals"] == []
    assert summary["commentCount"] == 0
    assert summary["url"] == f"local://shop/pull/{pr_id}"
    assert summary["createdAt"] and summary["updatedAt"]
    assert summary["mergedAt"] is None
    assert (await api.client.get("/scm/local/prs", params={"state": "merged"})).json() == {
        "pullRequests": []
    }
    assert (await api.client.get("/scm/local/prs", params={"repo": "shop"})).json()["pullRequests"][
        0
    ]["id"] == pr_id

    approved = await api.client.post(f"/scm/local/prs/{pr_id}/approve")
    approved_by = await api.client.post(
        f"/scm/local/prs/{pr_id}/approve", json={"reviewer": "alice"}
    )
    comment = await api.client.post(f"/scm/local/prs/{pr_id}/comments", json={"body": "Nice"})
    reply = await api.client.post(
        f"/scm/local/prs/{pr_id}/comments",
        json={"body": "Agreed", "author": "alice", "inReplyTo": comment.json()["id"]},
    )
    detail = (await api.client.get(f"/scm/local/prs/{pr_id}")).json()

    assert approved.status_code == 200, approved.text
    assert approved.json()["approvals"] == ["developer"]
    assert approved_by.json()["approvals"] == ["developer", "alice"]
    assert comment.status_code == 201, comment.text
    assert comment.json()["author"] == "developer"
    assert reply.status_code == 201
    assert reply.json()["inReplyTo"] == comment.json()["id"]
    assert [(c["author"], c["body"]) for c in detail["comments"]] == [
        ("developer", "Nice"),
        ("alice", "Agreed"),
    ]
    assert detail["approvals"] == ["developer", "alice"]
    assert "+print('hello, world')" in detail["diff"]
    assert detail["diffTruncated"] is False

    merged = await api.client.post(f"/scm/local/prs/{pr_id}/merge", json={})
    again = await api.client.post(f"/scm/local/prs/{pr_id}/merge")
    decline = await api.client.post(f"/scm/local/prs/{pr_id}/decline")
    approve_merged = await api.client.post(f"/scm/local/prs/{pr_id}/approve")

    assert merged.status_code == 200, merged.text
    assert merged.json()["merged"] is True
    assert merged.json()["pullRequest"]["state"] == "merged"
    assert merged.json()["pullRequest"]["mergedAt"]
    assert merged.json()["sha"] == merged.json()["pullRequest"]["mergeSha"]
    assert again.status_code == 409
    assert "already merged" in again.json()["error"]
    assert decline.status_code == 409
    assert approve_merged.status_code == 409


async def test_http_conflicts_decline_and_errors(api: Api, tmp_path: Path) -> None:
    scm = local_of(api)
    pr_id = await repo_with_pr(scm, tmp_path)
    await push_change(scm, "shop", "main", {"src/app.py": "print('bonjour')\n"}, tmp_path)

    conflict = await api.client.post(f"/scm/local/prs/{pr_id}/merge", json={"message": "Merge it"})
    assert conflict.status_code == 409
    assert "src/app.py" in conflict.json()["error"]
    assert (await api.client.get(f"/scm/local/prs/{pr_id}")).json()["state"] == "open"

    cases = {
        "unknown pr": await api.client.get("/scm/local/prs/999"),
        "unknown pr approve": await api.client.post("/scm/local/prs/999/approve"),
        "unknown pr comment": await api.client.post(
            "/scm/local/prs/999/comments", json={"body": "x"}
        ),
        "unknown pr merge": await api.client.post("/scm/local/prs/999/merge"),
        "unknown pr decline": await api.client.post("/scm/local/prs/999/decline"),
        "zero id": await api.client.get("/scm/local/prs/0"),
        "huge id": await api.client.get(f"/scm/local/prs/{10**30}"),
        "not a number": await api.client.get("/scm/local/prs/abc"),
        "bad state": await api.client.get("/scm/local/prs", params={"state": "closed"}),
        "bad repo filter": await api.client.get("/scm/local/prs", params={"repo": "../x"}),
        "empty comment": await api.client.post(
            f"/scm/local/prs/{pr_id}/comments", json={"body": ""}
        ),
        "huge comment": await api.client.post(
            f"/scm/local/prs/{pr_id}/comments", json={"body": "x" * (64 * 1024 + 1)}
        ),
        "nul in comment": await api.client.post(
            f"/scm/local/prs/{pr_id}/comments", json={"body": "a\u0000b"}
        ),
        "nul in merge message": await api.client.post(
            f"/scm/local/prs/{pr_id}/merge", json={"message": "a\u0000b"}
        ),
        "reply to nothing": await api.client.post(
            f"/scm/local/prs/{pr_id}/comments", json={"body": "x", "inReplyTo": 12345}
        ),
        "unknown approve field": await api.client.post(
            f"/scm/local/prs/{pr_id}/approve", json={"reviewer": "a", "state": "x"}
        ),
        "long reviewer": await api.client.post(
            f"/scm/local/prs/{pr_id}/approve", json={"reviewer": "r" * 101}
        ),
        "blank reviewer": await api.client.post(
            f"/scm/local/prs/{pr_id}/approve", json={"reviewer": "   "}
        ),
        "malformed json": await api.client.post(
            f"/scm/local/prs/{pr_id}/comments",
            content=b"{nope",
            headers={"Content-Type": "application/json"},
        ),
    }
    statuses = {name: response.status_code for name, response in cases.items()}
    assert statuses == {
        "unknown pr": 404,
        "unknown pr approve": 404,
        "unknown pr comment": 404,
        "unknown pr merge": 404,
        "unknown pr decline": 404,
        "zero id": 400,
        "huge id": 400,
        "not a number": 400,
        "bad state": 400,
        "bad repo filter": 400,
        "empty comment": 400,
        "huge comment": 400,
        "nul in comment": 400,
        "nul in merge message": 400,
        "reply to nothing": 400,
        "unknown approve field": 400,
        "long reviewer": 400,
        "blank reviewer": 400,
        "malformed json": 400,
    }
    assert all("error" in response.json() for response in cases.values())

    declined = await api.client.post(f"/scm/local/prs/{pr_id}/decline")
    assert declined.status_code == 200
    assert declined.json()["state"] == "declined"
    assert (await api.client.post(f"/scm/local/prs/{pr_id}/decline")).status_code == 409
    merge_declined = await api.client.post(f"/scm/local/prs/{pr_id}/merge")
    assert merge_declined.status_code == 409
    assert "declined" in merge_declined.json()["error"]


async def test_http_when_the_local_scm_is_disabled(api_factory: ApiFactory) -> None:
    config = CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "plugins": {"installed": {"local": {"enabled": False}}},
        }
    )
    async with api_factory(config) as api:
        repos = await api.client.get("/scm/local/repos")
        prs = await api.client.get("/scm/local/prs/1")

    assert repos.status_code == 404
    assert repos.json()["error"] == "The local SCM is disabled"
    assert prs.status_code == 404
