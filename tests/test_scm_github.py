"""The `github` SCM plugin against a loopback fake of the GitHub REST API."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coro.domain.errors import (
    PluginAuthError,
    PluginConfigError,
    PluginError,
    PluginNotFoundError,
    PluginRateLimited,
)
from coro.plugins.scm.base import PrStatus, ScmPlugin
from coro.plugins.scm.github import WEBHOOK, GitHubPlugin, create, parse_settings
from coro.system.git import GitCredentials
from tests.fakes.github_server import Answer, FakeGitHub

TOKEN = "ghp_TestTokenZq8mW3nR5tY7uI9oP1aSdF4gH6"
WRONG = "ghp_WrongTokenwwwwwwwwwwwwwwwwwwwwwwwwwww"
REPO = "acme/svc"
NOW = 1_900_000_000.0


def settings(fake: FakeGitHub, **extra: Any) -> dict[str, Any]:
    return {
        "token": TOKEN,
        "baseUrl": fake.base_url,
        "owner": "acme",
        "retryBackoffSeconds": 0,
        **extra,
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(token=TOKEN, page_size=2) as server:
        server.add_repo(REPO, branches=("main", "develop"), collaborators=["alice", "bob"])
        yield server


@pytest.fixture
async def plugin(fake: FakeGitHub) -> AsyncIterator[GitHubPlugin]:
    github = GitHubPlugin(parse_settings(settings(fake)), clock=lambda: NOW)
    yield github
    await github.aclose()


async def open_pr(plugin: GitHubPlugin, branch: str = "feature/x") -> int:
    pr = await plugin.create_pr(
        "svc", source_branch=branch, target_branch="main", title="Add x", body="Adds x."
    )
    return pr.id


# --- pull requests ----------------------------------------------------------------------


async def test_create_pr_then_requests_reviewers(fake: FakeGitHub, plugin: GitHubPlugin):
    pr = await plugin.create_pr(
        "svc",
        source_branch="feature/x",
        target_branch="main",
        title="Add x",
        body="Adds x.",
        reviewers=["alice", "@bob"],
    )

    assert pr.id == 1
    assert pr.url == f"{fake.root}/acme/svc/pull/1"
    assert (pr.title, pr.state, pr.source_branch, pr.target_branch) == (
        "Add x",
        "open",
        "feature/x",
        "main",
    )
    assert pr.author == "coro-bot"
    created = fake.requests_to("/repos/acme/svc/pulls", "POST")[0]
    assert created.body == {
        "title": "Add x",
        "body": "Adds x.",
        "head": "feature/x",
        "base": "main",
    }
    assert created.headers["authorization"] == f"Bearer {TOKEN}"
    assert created.headers["accept"] == "application/vnd.github+json"
    assert created.headers["x-github-api-version"] == "2022-11-28"
    requested = fake.requests_to("/repos/acme/svc/pulls/1/requested_reviewers", "POST")
    assert requested[0].body == {"reviewers": ["alice", "bob"]}
    assert fake.pull(REPO, 1).requested_reviewers == ["alice", "bob"]


async def test_create_pr_survives_a_refused_reviewer(fake: FakeGitHub, plugin: GitHubPlugin):
    pr = await plugin.create_pr(
        "svc",
        source_branch="feature/x",
        target_branch="main",
        title="Add x",
        body="",
        reviewers=["mallory"],  # not a collaborator: 422, logged, the PR still stands
    )
    assert pr.id == 1 and fake.pull(REPO, 1).requested_reviewers == []


async def test_duplicate_pr_is_a_plugin_error_with_githubs_message(plugin: GitHubPlugin):
    await open_pr(plugin)
    with pytest.raises(PluginError) as caught:
        await open_pr(plugin)
    assert caught.value.status == 422
    assert "A pull request already exists for acme:feature/x." in str(caught.value)
    assert "Validation Failed" in str(caught.value)


async def test_validation_errors_without_message_name_the_field(plugin: GitHubPlugin):
    with pytest.raises(PluginError) as caught:
        await plugin.create_pr(
            "svc", source_branch="feature/x", target_branch="nope", title="T", body=""
        )
    assert caught.value.status == 422
    assert "PullRequest.base invalid" in str(caught.value)


async def test_pr_status_pages_through_every_list_and_sorts_comments(
    fake: FakeGitHub, plugin: GitHubPlugin
):
    number = await open_pr(plugin)
    for i in range(3):
        fake.comment(REPO, number, "alice", f"issue comment {i}")
    first = fake.review_comment(REPO, number, "bob", "inline remark", path="src/x.py", line=3)
    fake.request_changes(REPO, number, "bob", "Please fix the remark.")
    fake.review_comment(REPO, number, "alice", "agreed", in_reply_to=first)
    fake.comment(REPO, number, "carol", "issue comment 3")
    fake.approve(REPO, number, "alice")
    fake.comment(REPO, number, "alice", "issue comment 4")
    fake.review(REPO, number, "carol", "COMMENTED", "Just a note.")

    status = await plugin.pr_status("svc", number)

    assert status.pull_request.id == number
    assert [c.body for c in status.comments] == [
        "issue comment 0",
        "issue comment 1",
        "issue comment 2",
        "inline remark",
        "Please fix the remark.",
        "agreed",
        "issue comment 3",
        "issue comment 4",
        "Just a note.",
    ]
    times = [c.created_at for c in status.comments]
    assert times == sorted(times)
    inline = status.comments[3]
    assert (inline.id, inline.author, inline.path, inline.in_reply_to) == (
        str(first),
        "bob",
        "src/x.py",
        None,
    )
    assert status.comments[5].in_reply_to == str(first)
    assert status.comments[4].id.startswith("review-")
    assert status.approved_by == ["alice"] and status.approval_count == 1
    # five issue comments in pages of two: three pages, followed through `Link`
    pages = fake.requests_to(f"/repos/acme/svc/issues/{number}/comments", "GET")
    assert [r.query.get("page", "1") for r in pages] == ["1", "2", "3"]
    assert pages[0].query["per_page"] == "100"
    assert len(fake.requests_to(f"/repos/acme/svc/pulls/{number}/reviews", "GET")) == 2


async def test_approvals_follow_each_reviewers_latest_verdict(
    fake: FakeGitHub, plugin: GitHubPlugin
):
    number = await open_pr(plugin)
    fake.approve(REPO, number, "alice")
    fake.request_changes(REPO, number, "alice", "Wait, one more thing.")  # revokes
    fake.approve(REPO, number, "bob")
    fake.review(REPO, number, "bob", "COMMENTED", "a note")  # does not revoke
    dismissed = fake.approve(REPO, number, "carol")
    fake.dismiss(REPO, number, dismissed)
    fake.request_changes(REPO, number, "dave", "No.")
    fake.approve(REPO, number, "dave")  # changed their mind

    status = await plugin.pr_status(REPO, number)

    assert status.approved_by == ["bob", "dave"]
    assert status.approval_count == 2


async def test_pr_states(fake: FakeGitHub, plugin: GitHubPlugin):
    merged = fake.open_pr(REPO, "a", author="dev")
    fake.merge(REPO, merged)
    closed = fake.open_pr(REPO, "b", author="dev")
    fake.close(REPO, closed)
    assert (await plugin.pr_status(REPO, merged)).pull_request.state == "merged"
    assert (await plugin.pr_status(REPO, closed)).pull_request.state == "declined"


async def test_post_comment_and_replies(fake: FakeGitHub, plugin: GitHubPlugin):
    number = await open_pr(plugin)
    inline = fake.review_comment(REPO, number, "alice", "rename this", path="src/x.py")
    conversation = fake.comment(REPO, number, "alice", "general remark")

    plain = await plugin.post_comment(REPO, number, "Thanks!")
    reply = await plugin.post_comment(REPO, number, "Renamed.", in_reply_to=str(inline))
    answer = await plugin.post_comment(REPO, number, "Noted.", in_reply_to=str(conversation))

    assert (plain.author, plain.body, plain.in_reply_to, plain.path) == (
        "coro-bot",
        "Thanks!",
        None,
        None,
    )
    assert (reply.in_reply_to, reply.path) == (str(inline), "src/x.py")
    assert fake.requests_to(f"/repos/acme/svc/pulls/{number}/comments/{inline}/replies", "POST")[
        0
    ].body == {"body": "Renamed."}
    # issue comments have no threads: the answer is a new issue comment
    assert answer.in_reply_to is None
    assert [c.body for c in fake.pull(REPO, number).issue_comments] == [
        "general remark",
        "Thanks!",
        "Noted.",
    ]
    status = await plugin.pr_status(REPO, number)
    assert {c.id for c in (plain, reply, answer)} <= {c.id for c in status.comments}


async def test_request_reviewers_users_and_teams(fake: FakeGitHub, plugin: GitHubPlugin):
    number = await open_pr(plugin)
    await plugin.request_reviewers(REPO, number, ["alice", "acme/platform"])
    assert fake.pull(REPO, number).requested_reviewers == ["alice"]
    assert fake.pull(REPO, number).requested_teams == ["platform"]
    mark = fake.mark()
    await plugin.request_reviewers(REPO, number, [" "])
    assert fake.since(mark) == []
    with pytest.raises(PluginError, match="Reviews may only be requested from collaborators"):
        await plugin.request_reviewers(REPO, number, ["mallory"])


async def test_merge_uses_the_configured_method_and_message(fake: FakeGitHub):
    async with FakeGitHub(token=TOKEN) as server:
        server.add_repo(REPO)
        plugin = create(settings(server, mergeMethod="squash"))
        try:
            number = await open_pr(plugin)
            result = await plugin.merge("svc", number, message="Add x (#1)\n\nLonger text.")
        finally:
            await plugin.aclose()
        pull = server.pull(REPO, number)
        assert result.merged and result.sha == pull.merge_commit_sha
        assert result.message == "Pull Request successfully merged"
        assert (pull.merge_method, pull.merge_title, pull.merge_message) == (
            "squash",
            "Add x (#1)",
            "Longer text.",
        )


async def test_merge_refused_is_a_result_not_an_error(fake: FakeGitHub, plugin: GitHubPlugin):
    number = await open_pr(plugin)
    fake.pull(REPO, number).mergeable = False
    refused = await plugin.merge(REPO, number)
    assert not refused.merged and refused.sha is None
    assert "Pull Request is not mergeable" in refused.message and "405" in refused.message

    fake.pull(REPO, number).mergeable = True
    fake.respond_once(
        "PUT",
        f"/repos/acme/svc/pulls/{number}/merge",
        Answer(409, {"message": "Head branch was modified. Review and try the merge again."}),
    )
    conflict = await plugin.merge(REPO, number)
    assert not conflict.merged and "Head branch was modified" in conflict.message

    fake.repo(REPO).merge_methods = {"squash"}
    not_allowed = await plugin.merge(REPO, number)
    assert not not_allowed.merged
    assert "Merge commits are not allowed" in not_allowed.message


# --- polling with conditional requests ----------------------------------------------------


async def test_poll_pr_is_none_on_304_and_costs_no_rate_limit(
    fake: FakeGitHub, plugin: GitHubPlugin
):
    number = await open_pr(plugin)
    for i in range(5):
        fake.comment(REPO, number, "alice", f"c{i}")
    first = await plugin.poll_pr("svc", number)
    assert isinstance(first, PrStatus) and first.comment_count == 5

    mark, used = fake.mark(), fake.rate_used
    assert await plugin.poll_pr("svc", number) is None

    seen = fake.since(mark)
    assert seen, "the poll made requests"
    assert all(r.method == "GET" and r.conditional and r.status == 304 for r in seen)
    assert fake.rate_used == used  # a 304 does not count against the limit
    pages = [r.query.get("page", "1") for r in seen if r.path.endswith("/issues/1/comments")]
    assert pages == ["1", "2", "3"]


async def test_poll_pr_reports_each_change(fake: FakeGitHub, plugin: GitHubPlugin):
    number = await open_pr(plugin)
    assert await plugin.poll_pr(REPO, number) is not None
    assert await plugin.poll_pr(REPO, number) is None

    fake.comment(REPO, number, "alice", "Please add a test.")
    commented = await plugin.poll_pr(REPO, number)
    assert commented is not None and commented.comments[-1].body == "Please add a test."
    assert await plugin.poll_pr(REPO, number) is None

    fake.approve(REPO, number, "bob")
    approved = await plugin.poll_pr(REPO, number)
    assert approved is not None and approved.approval_count == 1
    assert await plugin.poll_pr(REPO, number) is None

    inline = fake.review_comment(REPO, number, "bob", "nit")
    inlined = await plugin.poll_pr(REPO, number)
    assert inlined is not None and inlined.comments[-1].id == str(inline)

    fake.merge(REPO, number)
    merged = await plugin.poll_pr(REPO, number)
    assert merged is not None and merged.pull_request.state == "merged"
    assert await plugin.poll_pr(REPO, number) is None


async def test_poll_pr_sees_a_new_page_behind_a_full_last_page(fake: FakeGitHub):
    # With per_page equal to the fake's page size, two comments fill the only page; the
    # third lands on page 2 while page 1 (and its ETag) stay the same.
    plugin = create(settings(fake, pageSize=2))
    try:
        number = await open_pr(plugin)
        fake.comment(REPO, number, "alice", "one")
        fake.comment(REPO, number, "alice", "two")
        assert await plugin.poll_pr(REPO, number) is not None
        assert await plugin.poll_pr(REPO, number) is None
        fake.comment(REPO, number, "alice", "three")
        status = await plugin.poll_pr(REPO, number)
        assert status is not None and [c.body for c in status.comments] == ["one", "two", "three"]
    finally:
        await plugin.aclose()


async def test_pr_status_after_a_change_is_still_reported_by_poll(
    fake: FakeGitHub, plugin: GitHubPlugin
):
    number = await open_pr(plugin)
    await plugin.poll_pr(REPO, number)
    fake.comment(REPO, number, "alice", "hello")
    await plugin.pr_status(REPO, number)  # refreshes the ETag cache first
    changed = await plugin.poll_pr(REPO, number)
    assert changed is not None and changed.comment_count == 1


# --- errors -------------------------------------------------------------------------------


async def test_wrong_token_is_an_auth_error_without_the_token(fake: FakeGitHub):
    fake.echo_token = True  # even when the server quotes it back
    plugin = create(settings(fake, token=WRONG))
    try:
        with pytest.raises(PluginAuthError) as caught:
            await plugin.pr_status(REPO, 1)
    finally:
        await plugin.aclose()
    message = str(caught.value)
    assert caught.value.status == 401
    assert message.startswith("GitHub rejected the token")
    assert "Bad credentials" in message
    assert WRONG not in message and TOKEN not in message


async def test_unknown_repo_or_pr_is_not_found(plugin: GitHubPlugin):
    with pytest.raises(PluginNotFoundError, match=r"acme/nope#1"):
        await plugin.pr_status("nope", 1)
    with pytest.raises(PluginNotFoundError, match=r"pull request acme/svc#99"):
        await plugin.pr_status("svc", 99)
    with pytest.raises(PluginNotFoundError, match=r"repository acme/nope"):
        await plugin.create_pr("nope", source_branch="a", target_branch="main", title="t", body="")


async def test_primary_rate_limit_waits_until_reset(fake: FakeGitHub, plugin: GitHubPlugin):
    fake.rate_remaining = 0
    fake.rate_reset = int(NOW) + 42
    with pytest.raises(PluginRateLimited) as caught:
        await plugin.pr_status(REPO, 1)
    assert caught.value.retry_after == 42
    assert caught.value.status == 403
    assert "API rate limit exceeded" in str(caught.value)

    fake.rate_limit_status = 429
    with pytest.raises(PluginRateLimited) as again:
        await plugin.pr_status(REPO, 1)
    assert again.value.status == 429 and again.value.retry_after == 42


async def test_secondary_rate_limit_honours_retry_after(fake: FakeGitHub, plugin: GitHubPlugin):
    fake.secondary_retry_after = 30
    with pytest.raises(PluginRateLimited) as caught:
        await plugin.post_comment(REPO, 1, "hi")
    assert caught.value.retry_after == 30
    assert "secondary rate limit" in str(caught.value)


async def test_server_errors_are_retried_for_reads_only(fake: FakeGitHub, plugin: GitHubPlugin):
    number = await open_pr(plugin)
    fake.fail_next(503, times=2)
    status = await plugin.pr_status(REPO, number)
    assert status.pull_request.id == number

    fake.fail_next(502)
    with pytest.raises(PluginError) as caught:
        await plugin.post_comment(REPO, number, "not twice")
    assert caught.value.status == 502
    assert fake.pull(REPO, number).issue_comments == []


async def test_unexpected_json_is_a_plugin_error(fake: FakeGitHub, plugin: GitHubPlugin):
    number = await open_pr(plugin)
    fake.respond_once("GET", f"/repos/acme/svc/pulls/{number}", Answer(200, {"number": "x"}))
    with pytest.raises(PluginError, match="unexpected response for pull request acme/svc#1"):
        await plugin.pr_status(REPO, number)
    fake.respond_once(
        "GET", f"/repos/acme/svc/issues/{number}/comments", Answer(200, {"not": "a list"})
    )
    with pytest.raises(PluginError, match="expected a list"):
        await plugin.pr_status(REPO, number)
    fake.respond_once("GET", f"/repos/acme/svc/pulls/{number}", Answer(200, raw=b"<html>"))
    with pytest.raises(PluginError, match="not JSON"):
        await plugin.pr_status(REPO, number)


async def test_pagination_link_to_another_host_is_refused(fake: FakeGitHub, plugin: GitHubPlugin):
    number = await open_pr(plugin)
    fake.respond_once(
        "GET",
        f"/repos/acme/svc/issues/{number}/comments",
        Answer(200, [], {"Link": '<https://evil.example/steal?page=2>; rel="next"'}),
    )
    with pytest.raises(PluginError, match="refusing to follow"):
        await plugin.pr_status(REPO, number)
    assert not any("steal" in r.path for r in fake.requests)


async def test_a_token_echoed_in_any_error_is_scrubbed(fake: FakeGitHub, plugin: GitHubPlugin):
    fake.respond_once(
        "POST",
        "/repos/acme/svc/pulls",
        Answer(422, {"message": f"token {TOKEN} and ghp_{'A' * 36} look odd"}),
    )
    with pytest.raises(PluginError) as caught:
        await open_pr(plugin)
    assert TOKEN not in str(caught.value) and "ghp_AAAA" not in str(caught.value)
    assert "***" in str(caught.value)


# --- connection check ---------------------------------------------------------------------


async def test_test_connection_reports_login_and_scopes(fake: FakeGitHub, plugin: GitHubPlugin):
    check = await plugin.test_connection()
    assert check.ok
    assert check.details["login"] == "coro-bot"
    assert check.details["scopes"] == "repo, read:org"
    assert "coro-bot" in check.message and TOKEN not in check.message
    assert fake.requests_to("/user", "GET")


async def test_test_connection_fine_grained_token_has_no_scopes_header():
    async with FakeGitHub(token=TOKEN, scopes=None) as server:
        plugin = create(settings(server))
        try:
            check = await plugin.test_connection()
        finally:
            await plugin.aclose()
    assert check.ok and "scopes" not in check.details and "fine-grained" in check.message


async def test_test_connection_failures(fake: FakeGitHub):
    plugin = create(settings(fake, token=WRONG))
    try:
        check = await plugin.test_connection()
    finally:
        await plugin.aclose()
    assert not check.ok
    assert "GitHub rejected the token" in check.message and WRONG not in check.message

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    offline = create({"token": TOKEN, "baseUrl": f"http://127.0.0.1:{port}", "maxRetries": 0})
    try:
        check = await offline.test_connection()
    finally:
        await offline.aclose()
    assert not check.ok and "Cannot reach GitHub" in check.message


async def test_enterprise_base_url(fake: FakeGitHub):
    async with FakeGitHub(token=TOKEN, prefix="/api/v3") as server:
        server.add_repo(REPO)
        plugin = create({"token": TOKEN, "baseUrl": server.base_url, "owner": "acme"})
        try:
            number = await open_pr(plugin)
            status = await plugin.pr_status("svc", number)
        finally:
            await plugin.aclose()
        assert status.pull_request.url == f"{server.root}/acme/svc/pull/1"
        assert plugin.clone_url("svc") == f"{server.root}/acme/svc.git"
        assert all(r.path.startswith("/api/v3/") for r in server.requests)


# --- git, remotes, settings -----------------------------------------------------------------


def test_clone_url_credentials_and_remotes():
    plugin = create({"token": TOKEN, "owner": "acme"})
    assert plugin.clone_url("svc") == "https://github.com/acme/svc.git"
    assert plugin.clone_url("other/lib") == "https://github.com/other/lib.git"
    assert plugin.clone_url("git@github.com:other/lib.git") == "https://github.com/other/lib.git"
    assert plugin.clone_url("https://github.com/o/r/pull/3") == "https://github.com/o/r.git"
    assert TOKEN not in plugin.clone_url("svc")
    assert plugin.git_credentials() == GitCredentials("x-access-token", TOKEN)
    for remote in (
        "https://github.com/acme/svc.git",
        "http://github.com/acme/svc",
        "git@github.com:acme/svc.git",
        "ssh://git@github.com/acme/svc.git",
        "https://x-access-token@GitHub.com/acme/svc.git",
    ):
        assert plugin.matches_remote(remote), remote
    for remote in (
        "https://bitbucket.org/acme/svc.git",
        "https://notgithub.com/acme/svc.git",
        "https://github.com.evil.example/acme/svc.git",
        "/srv/git/svc.git",
    ):
        assert not plugin.matches_remote(remote), remote
    with pytest.raises(PluginError, match="not a repository name"):
        plugin.clone_url("a/b/c")
    with pytest.raises(PluginError, match="not a repository name"):
        plugin.clone_url("../etc")
    with pytest.raises(PluginError, match="owner is not configured"):
        create({"token": TOKEN}).clone_url("svc")
    with pytest.raises(PluginError) as caught:
        plugin.clone_url(f"https://me:{TOKEN}@github.com/")
    assert TOKEN not in str(caught.value)


def test_enterprise_clone_url_and_remotes():
    plugin = create({"token": TOKEN, "baseUrl": "https://ghe.example.com/api/v3/"})
    assert plugin.clone_url("acme/svc") == "https://ghe.example.com/acme/svc.git"
    assert plugin.matches_remote("git@ghe.example.com:acme/svc.git")
    assert plugin.matches_remote("https://ghe.example.com/acme/svc.git")
    assert not plugin.matches_remote("https://github.com/acme/svc.git")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "token"),
        ({"token": "   "}, "token"),
        ({"token": "short"}, "token"),
        ({"token": TOKEN, "mergeMethod": "octopus"}, "mergeMethod"),
        ({"token": TOKEN, "baseUrl": "ftp://example.com"}, "baseUrl"),
        ({"token": TOKEN, "baseUrl": f"https://me:{TOKEN}@ghe.example.com"}, "baseUrl"),
        ({"token": TOKEN, "owner": "a/b"}, "owner"),
        ({"token": TOKEN, "pageSize": 1000}, "pageSize"),
        ({"token": TOKEN, "tokn": TOKEN}, "tokn"),
    ],
)
def test_invalid_settings_name_the_field_never_the_value(config: dict[str, Any], field: str):
    with pytest.raises(PluginConfigError) as caught:
        create(config)
    message = str(caught.value)
    assert field in message
    assert TOKEN not in message and "octopus" not in message and "short" not in message


def test_webhook_manifest_and_repr():
    assert WEBHOOK == {
        "algorithm": "hmac-sha256",
        "header": "X-Hub-Signature-256",
        "format": "sha256=<hex>",
        "deliveryIdHeader": "X-GitHub-Delivery",
        "eventHeader": "X-GitHub-Event",
    }
    plugin = create({"token": TOKEN})
    assert plugin.id == "github"
    assert TOKEN not in repr(plugin) and TOKEN not in repr(plugin.settings)


async def test_aclose_then_reuse(fake: FakeGitHub, plugin: GitHubPlugin):
    await plugin.aclose()
    assert (await plugin.test_connection()).ok
    await plugin.aclose()
    await plugin.aclose()


def test_implements_the_scm_plugin_protocol():
    scm: ScmPlugin = create({"token": TOKEN})  # checked by mypy
    assert scm.id == "github"
