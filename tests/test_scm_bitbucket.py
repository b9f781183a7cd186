"""The `bitbucket` SCM plugin against a loopback fake of the Bitbucket Cloud REST API."""

from __future__ import annotations

import base64
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
from coro.plugins.scm.bitbucket import WEBHOOK, BitbucketPlugin, create, parse_settings
from coro.system.git import GitCredentials
from tests.fakes.bitbucket_server import Answer, FakeBitbucket

PASSWORD = "ATBBtestAppPassword0123456789abcdefXY"
WRONG = "ATBBwrongAppPassword9876543210zyxwvuTS"
TOKEN = "ATCTTtestAccessToken0123456789abcdefghij"
REPO = "acme/svc"
NOW = 1_900_000_000.0


def settings(fake: FakeBitbucket, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "username": "coro-bot",
        "appPassword": PASSWORD,
        "baseUrl": fake.base_url,
        "workspace": "acme",
        "retryBackoffSeconds": 0,
    }
    config.update(extra)
    return {k: v for k, v in config.items() if v is not None}


@pytest.fixture
async def fake() -> AsyncIterator[FakeBitbucket]:
    async with FakeBitbucket(app_password=PASSWORD, token=TOKEN, page_size=2) as server:
        server.add_user("alice", "Alice Liddell")
        server.add_user("bob", "Bob Builder")
        server.add_repo(REPO, branches=("main", "develop"))
        yield server


@pytest.fixture
async def plugin(fake: FakeBitbucket) -> AsyncIterator[BitbucketPlugin]:
    bitbucket = BitbucketPlugin(parse_settings(settings(fake)), clock=lambda: NOW)
    yield bitbucket
    await bitbucket.aclose()


async def open_pr(plugin: BitbucketPlugin, branch: str = "feature/x") -> int:
    pr = await plugin.create_pr(
        "svc", source_branch=branch, target_branch="main", title="Add x", body="Adds x."
    )
    return pr.id


# --- pull requests ----------------------------------------------------------------------


async def test_create_pr_with_reviewers(fake: FakeBitbucket, plugin: BitbucketPlugin):
    alice = fake.users["alice"]
    pr = await plugin.create_pr(
        "svc",
        source_branch="feature/x",
        target_branch="main",
        title="Add x",
        body="Adds x.",
        reviewers=["alice", "Bob Builder", alice.uuid],
    )

    assert pr.id == 1
    assert pr.url == f"{fake.root}/acme/svc/pull-requests/1"
    assert (pr.title, pr.state, pr.source_branch, pr.target_branch, pr.author) == (
        "Add x",
        "open",
        "feature/x",
        "main",
        "coro-bot",
    )
    created = fake.requests_to("/2.0/repositories/acme/svc/pullrequests", "POST")[0]
    assert created.body["source"] == {"branch": {"name": "feature/x"}}
    assert created.body["destination"] == {"branch": {"name": "main"}}
    assert created.body["description"] == "Adds x."
    assert created.body["close_source_branch"] is True
    assert created.body["reviewers"] == [{"uuid": alice.uuid}, {"uuid": fake.users["bob"].uuid}]
    expected = base64.b64encode(f"coro-bot:{PASSWORD}".encode()).decode()
    assert created.headers["authorization"] == f"Basic {expected}"
    assert fake.pull(REPO, 1).reviewers == ["alice", "bob"]


async def test_create_pr_with_an_unknown_reviewer_still_opens(
    fake: FakeBitbucket, plugin: BitbucketPlugin
):
    pr = await plugin.create_pr(
        "svc",
        source_branch="feature/x",
        target_branch="main",
        title="Add x",
        body="",
        reviewers=["nobody-here"],
    )
    assert pr.id == 1 and fake.pull(REPO, 1).reviewers == []


async def test_duplicate_pr_is_a_plugin_error_with_bitbuckets_message(plugin: BitbucketPlugin):
    await open_pr(plugin)
    with pytest.raises(PluginError) as caught:
        await open_pr(plugin)
    assert caught.value.status == 400
    assert "There is already an open pull request from feature/x to main" in str(caught.value)


async def test_field_errors_are_named(plugin: BitbucketPlugin):
    with pytest.raises(PluginError, match="destination: nope not found"):
        await plugin.create_pr(
            "svc", source_branch="feature/x", target_branch="nope", title="T", body=""
        )


async def test_pr_status_pages_comments_and_counts_approvals(
    fake: FakeBitbucket, plugin: BitbucketPlugin
):
    number = await open_pr(plugin)
    first = fake.comment(REPO, number, "alice", "one")
    fake.comment(REPO, number, "bob", "two", path="src/x.py", line=4)
    fake.comment(REPO, number, "alice", "reply to one", parent=first)
    gone = fake.comment(REPO, number, "bob", "deleted later")
    fake.delete_comment(REPO, number, gone)
    fake.comment(REPO, number, "alice", "four")
    fake.approve(REPO, number, "alice")
    fake.approve(REPO, number, "bob")
    fake.unapprove(REPO, number, "bob")
    fake.request_changes(REPO, number, "bob")

    status = await plugin.pr_status("svc", number)

    assert [c.body for c in status.comments] == ["one", "two", "reply to one", "four"]
    assert status.comments[1].path == "src/x.py"
    assert status.comments[2].in_reply_to == str(first)
    assert status.comments[0].author == "alice"
    assert status.approved_by == ["alice"] and status.approval_count == 1
    pages = fake.requests_to(f"/2.0/repositories/acme/svc/pullrequests/{number}/comments", "GET")
    assert [r.query.get("page", "1") for r in pages] == ["1", "2", "3"]
    assert pages[0].query["pagelen"] == "50"


async def test_pr_states(fake: FakeBitbucket, plugin: BitbucketPlugin):
    merged = fake.open_pr(REPO, "a", author="alice")
    fake.merge(REPO, merged)
    declined = fake.open_pr(REPO, "b", author="alice")
    fake.decline(REPO, declined)
    superseded = fake.open_pr(REPO, "c", author="alice")
    fake.pull(REPO, superseded).state = "SUPERSEDED"
    assert (await plugin.pr_status(REPO, merged)).pull_request.state == "merged"
    assert (await plugin.pr_status(REPO, declined)).pull_request.state == "declined"
    assert (await plugin.pr_status(REPO, superseded)).pull_request.state == "declined"
    fake.pull(REPO, merged).state = "HALF_MERGED"
    with pytest.raises(PluginError, match="unknown state"):
        await plugin.pr_status(REPO, merged)


async def test_post_comment_and_reply(fake: FakeBitbucket, plugin: BitbucketPlugin):
    number = await open_pr(plugin)
    parent = fake.comment(REPO, number, "alice", "rename this")

    plain = await plugin.post_comment(REPO, number, "Thanks!")
    reply = await plugin.post_comment(REPO, number, "Renamed.", in_reply_to=str(parent))

    assert (plain.author, plain.body, plain.in_reply_to) == ("coro-bot", "Thanks!", None)
    assert reply.in_reply_to == str(parent)
    posted = fake.requests_to(f"/2.0/repositories/acme/svc/pullrequests/{number}/comments", "POST")
    assert posted[1].body == {"content": {"raw": "Renamed."}, "parent": {"id": parent}}
    with pytest.raises(PluginError, match="comment ids are numbers"):
        await plugin.post_comment(REPO, number, "x", in_reply_to="review-1")
    with pytest.raises(PluginError, match="Invalid parent comment"):
        await plugin.post_comment(REPO, number, "x", in_reply_to="424242")


async def test_request_reviewers_merges_with_existing(fake: FakeBitbucket, plugin: BitbucketPlugin):
    number = await open_pr(plugin)
    await plugin.request_reviewers(REPO, number, ["alice"])
    await plugin.request_reviewers(REPO, number, ["bob", "alice"])
    assert fake.pull(REPO, number).reviewers == ["alice", "bob"]
    put = fake.requests_to(f"/2.0/repositories/acme/svc/pullrequests/{number}", "PUT")[-1]
    assert put.body["title"] == "Add x"
    assert put.body["reviewers"] == [
        {"uuid": fake.users["alice"].uuid},
        {"uuid": fake.users["bob"].uuid},
    ]
    with pytest.raises(PluginError, match="no member of workspace acme is called 'carol'"):
        await plugin.request_reviewers(REPO, number, ["carol"])
    with pytest.raises(PluginError, match="author and cannot be a reviewer"):
        await plugin.request_reviewers(REPO, number, ["coro-bot"])


async def test_merge_with_strategy_and_message(fake: FakeBitbucket):
    async with FakeBitbucket(app_password=PASSWORD) as server:
        server.add_repo(REPO)
        plugin = create(settings(server, mergeStrategy="squash", closeSourceBranch=False))
        try:
            number = await open_pr(plugin)
            result = await plugin.merge("svc", number, message="Add x (#1)")
        finally:
            await plugin.aclose()
        pull = server.pull(REPO, number)
    assert result.merged and result.sha == pull.merge_hash
    assert (pull.state, pull.merge_strategy, pull.merge_message) == (
        "MERGED",
        "squash",
        "Add x (#1)",
    )
    assert pull.close_source_branch is False


async def test_merge_refused_is_a_result_not_an_error(fake: FakeBitbucket, plugin: BitbucketPlugin):
    number = await open_pr(plugin)
    fake.pull(REPO, number).conflicted = True
    conflicted = await plugin.merge(REPO, number)
    assert not conflicted.merged and "resolve all merge conflicts" in conflicted.message

    fake.pull(REPO, number).conflicted = False
    fake.repo(REPO).merge_strategies = {"squash"}
    refused = await plugin.merge(REPO, number)
    assert not refused.merged and "merge_commit is not allowed" in refused.message

    fake.repo(REPO).merge_strategies = {"merge_commit"}
    assert (await plugin.merge(REPO, number)).merged
    again = await plugin.merge(REPO, number)
    assert not again.merged and "400" in again.message

    fake.respond_once(
        "POST", f"/2.0/repositories/acme/svc/pullrequests/{number}/merge", Answer(202, None)
    )
    pending = await plugin.merge(REPO, number)
    assert not pending.merged and "background" in pending.message


# --- polling --------------------------------------------------------------------------------


async def test_poll_pr_is_none_on_304(fake: FakeBitbucket, plugin: BitbucketPlugin):
    number = await open_pr(plugin)
    for i in range(5):
        fake.comment(REPO, number, "alice", f"c{i}")
    first = await plugin.poll_pr("svc", number)
    assert isinstance(first, PrStatus) and first.comment_count == 5

    mark, served = fake.mark(), fake.requests_served
    assert await plugin.poll_pr("svc", number) is None

    seen = fake.since(mark)
    assert len(seen) == 4  # the pull request and three pages of comments
    assert all(r.method == "GET" and r.conditional and r.status == 304 for r in seen)
    assert fake.requests_served == served


async def test_poll_pr_reports_each_change(fake: FakeBitbucket, plugin: BitbucketPlugin):
    number = await open_pr(plugin)
    assert await plugin.poll_pr(REPO, number) is not None
    assert await plugin.poll_pr(REPO, number) is None

    fake.comment(REPO, number, "alice", "Please add a test.")
    commented = await plugin.poll_pr(REPO, number)
    assert commented is not None and commented.comments[-1].body == "Please add a test."
    assert await plugin.poll_pr(REPO, number) is None

    fake.approve(REPO, number, "bob")
    approved = await plugin.poll_pr(REPO, number)
    assert approved is not None and approved.approved_by == ["bob"]
    assert await plugin.poll_pr(REPO, number) is None

    fake.merge(REPO, number)
    merged = await plugin.poll_pr(REPO, number)
    assert merged is not None and merged.pull_request.state == "merged"
    assert await plugin.poll_pr(REPO, number) is None


async def test_poll_pr_without_etags_compares_content():
    async with FakeBitbucket(app_password=PASSWORD, page_size=2, etags=False) as server:
        server.add_user("alice")
        server.add_repo(REPO)
        plugin = create(settings(server))
        try:
            number = await open_pr(plugin)
            assert await plugin.poll_pr(REPO, number) is not None
            mark = server.mark()
            assert await plugin.poll_pr(REPO, number) is None
            assert not any(r.conditional for r in server.since(mark))
            server.pull(REPO, number).title = "Retitled"  # not part of what polling compares
            server.comment(REPO, number, "alice", "new")
            changed = await plugin.poll_pr(REPO, number)
            assert changed is not None and changed.comments[-1].body == "new"
            assert await plugin.poll_pr(REPO, number) is None
        finally:
            await plugin.aclose()


# --- errors -------------------------------------------------------------------------------


async def test_wrong_password_is_an_auth_error_without_secrets(fake: FakeBitbucket):
    fake.echo_credentials = True  # the server quotes the Authorization header back
    plugin = create(settings(fake, appPassword=WRONG))
    try:
        with pytest.raises(PluginAuthError) as caught:
            await plugin.pr_status(REPO, 1)
    finally:
        await plugin.aclose()
    message = str(caught.value)
    pair = base64.b64encode(f"coro-bot:{WRONG}".encode()).decode()
    assert caught.value.status == 401 and message.startswith("Bitbucket rejected the credentials")
    assert WRONG not in message and pair not in message and PASSWORD not in message


async def test_unknown_repo_or_pr_is_not_found(plugin: BitbucketPlugin):
    with pytest.raises(PluginNotFoundError, match=r"acme/nope#1"):
        await plugin.pr_status("nope", 1)
    with pytest.raises(PluginNotFoundError, match=r"pull request acme/svc#99"):
        await plugin.pr_status("svc", 99)


async def test_rate_limited(fake: FakeBitbucket, plugin: BitbucketPlugin):
    fake.rate_limited = True
    fake.retry_after = 17
    with pytest.raises(PluginRateLimited) as caught:
        await plugin.pr_status(REPO, 1)
    assert caught.value.retry_after == 17 and caught.value.status == 429
    assert "Rate limit for this resource has been exceeded" in str(caught.value)

    fake.retry_after = None
    with pytest.raises(PluginRateLimited) as fallback:
        await plugin.post_comment(REPO, 1, "hi")
    assert fallback.value.retry_after == 60


async def test_unexpected_json_is_a_plugin_error(fake: FakeBitbucket, plugin: BitbucketPlugin):
    number = await open_pr(plugin)
    path = f"/2.0/repositories/acme/svc/pullrequests/{number}"
    fake.respond_once("GET", path, Answer(200, {"id": number, "title": "t"}))
    with pytest.raises(PluginError, match="unexpected response for pull request acme/svc#1"):
        await plugin.pr_status(REPO, number)
    fake.respond_once("GET", f"{path}/comments", Answer(200, [1, 2]))
    with pytest.raises(PluginError, match="unexpected response"):
        await plugin.pr_status(REPO, number)
    fake.respond_once(
        "GET", f"{path}/comments", Answer(200, {"values": [], "next": "https://evil.example/x"})
    )
    with pytest.raises(PluginError, match="refusing to follow"):
        await plugin.pr_status(REPO, number)


# --- access tokens and the connection check -------------------------------------------------


async def test_access_token_auth(fake: FakeBitbucket):
    plugin = create(
        {"token": TOKEN, "baseUrl": fake.base_url, "workspace": "acme", "username": "ignored"}
    )
    try:
        number = await open_pr(plugin)
        check = await plugin.test_connection()
    finally:
        await plugin.aclose()
    assert number == 1
    assert fake.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert check.ok and check.details["workspace"] == "acme"
    assert plugin.git_credentials() == GitCredentials("x-token-auth", TOKEN)


async def test_test_connection(fake: FakeBitbucket, plugin: BitbucketPlugin):
    check = await plugin.test_connection()
    assert check.ok and check.details["user"] == "coro-bot"
    assert "workspace acme" in check.message and PASSWORD not in check.message

    wrong = create(settings(fake, appPassword=WRONG))
    try:
        failed = await wrong.test_connection()
    finally:
        await wrong.aclose()
    assert not failed.ok and "rejected the credentials" in failed.message
    assert WRONG not in failed.message

    elsewhere = create(settings(fake, workspace="other"))
    try:
        missing = await elsewhere.test_connection()
    finally:
        await elsewhere.aclose()
    assert not missing.ok and "workspace other" in missing.message


# --- git, remotes, settings -----------------------------------------------------------------


def test_clone_url_credentials_and_remotes():
    plugin = create({"username": "dev@example.com", "appPassword": PASSWORD, "workspace": "acme"})
    assert plugin.clone_url("svc") == "https://bitbucket.org/acme/svc.git"
    assert plugin.clone_url("team/lib") == "https://bitbucket.org/team/lib.git"
    assert (
        plugin.clone_url("git@bitbucket.org:team/lib.git") == "https://bitbucket.org/team/lib.git"
    )
    assert plugin.git_credentials() == GitCredentials("dev@example.com", PASSWORD)
    for remote in (
        "https://bitbucket.org/acme/svc.git",
        "https://dev@bitbucket.org/acme/svc.git",
        "git@bitbucket.org:acme/svc.git",
        "ssh://git@bitbucket.org/acme/svc.git",
    ):
        assert plugin.matches_remote(remote), remote
    for remote in ("https://github.com/acme/svc.git", "https://bitbucket.org.evil.example/a/b"):
        assert not plugin.matches_remote(remote), remote
    with pytest.raises(PluginError, match="workspace is not configured"):
        create({"token": TOKEN}).clone_url("svc")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "token"),
        ({"username": "dev"}, "appPassword"),
        ({"appPassword": PASSWORD}, "username"),
        ({"token": TOKEN, "username": "dev", "appPassword": PASSWORD}, "not both"),
        ({"token": "   "}, "token"),
        ({"token": TOKEN, "mergeStrategy": "octopus"}, "mergeStrategy"),
        ({"token": TOKEN, "baseUrl": f"https://x:{TOKEN}@api.bitbucket.org/2.0"}, "baseUrl"),
        ({"token": TOKEN, "workspace": "../x"}, "workspace"),
        ({"token": TOKEN, "password": PASSWORD}, "password"),
    ],
)
def test_invalid_settings_name_the_field_never_the_value(config: dict[str, Any], field: str):
    with pytest.raises(PluginConfigError) as caught:
        create(config)
    message = str(caught.value)
    assert field in message
    assert TOKEN not in message and PASSWORD not in message and "octopus" not in message


def test_webhook_manifest():
    assert WEBHOOK == {
        "algorithm": "hmac-sha256",
        "header": "X-Hub-Signature",
        "format": "sha256=<hex>",
        "deliveryIdHeader": "X-Request-UUID",
        "eventHeader": "X-Event-Key",
    }
    plugin = create({"token": TOKEN})
    assert plugin.id == "bitbucket"
    assert TOKEN not in repr(plugin) and TOKEN not in repr(plugin.settings)


def test_implements_the_scm_plugin_protocol():
    scm: ScmPlugin = create({"token": TOKEN})  # checked by mypy
    assert scm.id == "bitbucket"
