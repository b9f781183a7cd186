"""`coro pr …` and `coro repo …` against a real runner (the `api` fixture), whose `local`
SCM holds real bare repositories and pull requests.

The CLI is synchronous and the runner lives in the test's event loop, so commands run
off the loop (`asyncio.to_thread`, see `tests.test_cli.cli`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coro.cli.main import app
from tests.conftest import Api
from tests.test_cli import cli, json_of
from tests.test_scm_local import (  # noqa: F401  (git_env: an autouse fixture)
    git,
    git_env,
    local_of,
    push_change,
    repo_with_pr,
    seed_dir,
)


async def test_list_approve_comment_and_merge(api: Api, tmp_path: Path) -> None:
    scm = local_of(api)
    pr_id = await repo_with_pr(scm, tmp_path)

    listed = json_of(await cli(api, "pr", "list", "--json"))
    table = await cli(api, "pr", "list")
    approved = json_of(await cli(api, "pr", "approve", str(pr_id), "--as", "alice", "--json"))
    approved_text = await cli(api, "pr", "approve", str(pr_id), "--as", "bob")
    commented = json_of(
        await cli(api, "pr", "comment", str(pr_id), "Please add a test", "--as", "bob", "--json")
    )
    replied = await cli(
        api,
        "pr",
        "comment",
        str(pr_id),
        "Done",
        "--as",
        "alice",
        "--reply-to",
        str(commented["id"]),
    )
    shown = await cli(api, "pr", "show", str(pr_id))
    shown_json = json_of(await cli(api, "pr", "show", str(pr_id), "--json"))

    assert [(p["id"], p["state"]) for p in listed["pullRequests"]] == [(pr_id, "open")]
    assert table.exit_code == 0, table.output
    assert "Greet the world" in table.stdout
    assert "feature → main" in table.stdout
    assert approved["approvals"] == ["alice"]
    assert approved_text.exit_code == 0, approved_text.output
    assert "alice, bob" in approved_text.stdout
    assert commented["author"] == "bob"
    assert replied.exit_code == 0, replied.output
    assert shown.exit_code == 0, shown.output
    for text in ("Greet the world", "Please add a test", "Done", "reply to #", "hello, world"):
        assert text in shown.stdout, text
    assert [c["body"] for c in shown_json["comments"]] == ["Please add a test", "Done"]
    assert shown_json["comments"][1]["inReplyTo"] == commented["id"]

    merged = await cli(api, "pr", "merge", str(pr_id), "--message", "Ship it")
    again = await cli(api, "pr", "merge", str(pr_id))
    merged_list = json_of(await cli(api, "pr", "list", "--state", "merged", "--json"))
    open_list = await cli(api, "pr", "list", "--state", "open")

    assert merged.exit_code == 0, merged.output
    assert "Merged pull request" in merged.stdout
    bare = scm.repos_dir / "shop.git"
    assert git("log", "-1", "--format=%s", "main", cwd=bare).strip() == "Ship it"
    assert git("show", "main:src/app.py", cwd=bare) == "print('hello, world')\n"
    assert again.exit_code == 1
    assert "already merged" in again.output
    assert [p["id"] for p in merged_list["pullRequests"]] == [pr_id]
    assert open_list.exit_code == 0
    assert "No pull requests match." in open_list.stdout


async def test_conflict_decline_and_unknown(api: Api, tmp_path: Path) -> None:
    scm = local_of(api)
    pr_id = await repo_with_pr(scm, tmp_path)
    await push_change(scm, "shop", "main", {"src/app.py": "print('bonjour')\n"}, tmp_path)

    conflict = await cli(api, "pr", "merge", str(pr_id))
    declined = json_of(await cli(api, "pr", "decline", str(pr_id), "--json"))
    unknown = await cli(api, "pr", "show", "999")
    bad_number = await cli(api, "pr", "approve", "0")

    assert conflict.exit_code == 1
    assert "src/app.py" in conflict.output
    assert declined["state"] == "declined"
    assert unknown.exit_code == 1
    assert "no pull request #999" in unknown.output
    assert bad_number.exit_code == 2


async def test_default_identity_is_user_else_developer(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scm = local_of(api)
    pr_id = await repo_with_pr(scm, tmp_path)

    monkeypatch.setenv("USER", "dana")
    as_user = json_of(await cli(api, "pr", "approve", str(pr_id), "--json"))
    monkeypatch.delenv("USER")
    anonymous = json_of(await cli(api, "pr", "comment", str(pr_id), "hi", "--json"))

    assert as_user["approvals"] == ["dana"]
    assert anonymous["author"] == "developer"


async def test_repo_create_and_list(api: Api) -> None:
    empty = await cli(api, "repo", "list")
    created = await cli(api, "repo", "create", "blog", "--description", "The blog")
    duplicate = await cli(api, "repo", "create", "blog")
    listed = json_of(await cli(api, "repo", "list", "--json"))
    table = await cli(api, "repo", "list")

    assert empty.exit_code == 0
    assert "No local repositories yet" in empty.stdout
    assert created.exit_code == 0, created.output
    assert "Created blog" in created.stdout
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output
    assert [(r["name"], r["description"]) for r in listed["repos"]] == [("blog", "The blog")]
    assert "blog" in table.stdout


async def test_list_on_a_narrow_terminal_breaks_no_word(api: Api, tmp_path: Path) -> None:
    """Too narrow for the table: each pull request on two lines, every word whole."""
    scm = local_of(api)
    await scm.create_repo("shop", from_dir=seed_dir(tmp_path / "shop"))
    await push_change(scm, "shop", "feature/rate-limits", {"src/app.py": "limits\n"}, tmp_path)
    pr = await scm.create_pr(
        "shop",
        source_branch="feature/rate-limits",
        target_branch="main",
        title="Limit the request rate of the public endpoints",
        body="",
        reviewers=[],
    )
    await scm.approve(pr.id, "alice")

    for columns in ("60", "200"):
        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["pr", "list"],
            env={"CORO_URL": api.served.url, "CORO_API_TOKEN": None, "COLUMNS": columns},
        )
        assert result.exit_code == 0, result.output
        words = set(result.stdout.split())
        for word in ("Limit", "request", "endpoints", "feature/rate-limits", "alice", "open"):
            assert word in words, (columns, word, result.stdout)
        assert ("APPROVALS" in result.stdout) == (columns == "200")  # the table when it fits
