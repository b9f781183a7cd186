"""The `github-issues` tracker against a loopback fake of GitHub's issue endpoints."""

from __future__ import annotations

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
from coro.plugins.trackers.base import TrackerPlugin, Transition
from coro.plugins.trackers.github_issues import GitHubIssuesTracker, IssueRef, create
from tests.fakes.github_issues_server import FakeGitHubIssues

TOKEN = "ghp_R8xQ2mZ7vK4pL9sT1wY6nB3cD5fG0hJ2kM4q"
REPO = "acme/app"


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHubIssues]:
    async with FakeGitHubIssues(token=TOKEN) as fake:
        yield fake


def make(fake: FakeGitHubIssues, **extra: Any) -> GitHubIssuesTracker:
    return create({"token": TOKEN, "baseUrl": fake.base_url, "defaultRepo": REPO, **extra})


@pytest.fixture
async def tracker(github: FakeGitHubIssues) -> AsyncIterator[GitHubIssuesTracker]:
    plugin = make(github)
    yield plugin
    await plugin.aclose()


def mutations(fake: FakeGitHubIssues) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests if r.method != "GET"]


# --- reading --------------------------------------------------------------------------


async def test_get_issue_with_comments_across_pages(github: FakeGitHubIssues) -> None:
    github.max_per_page = 2
    github.add_issue(
        REPO,
        12,
        "Login fails",
        body="Steps:\r\n1. open /login\r\n",
        labels=["bug", "auth"],
        assignee="octo-dev",
    )
    for number in range(1, 6):
        github.add_comment(REPO, 12, f"comment {number}", author=f"user{number}")
    plugin = make(github)
    try:
        issue = await plugin.get_issue("acme/app#12")
    finally:
        await plugin.aclose()

    assert issue.key == "acme/app#12"
    assert issue.title == "Login fails"
    assert issue.description == "Steps:\n1. open /login"
    assert issue.status == "open"
    assert issue.labels == ["bug", "auth"]
    assert issue.assignee == "octo-dev"
    assert issue.url == "https://github.com/acme/app/issues/12"
    assert [c.body for c in issue.comments] == [f"comment {n}" for n in range(1, 6)]
    assert [c.author for c in issue.comments] == [f"user{n}" for n in range(1, 6)]
    assert issue.comments[0].created_at == "2024-03-01T09:01:00Z"
    pages = github.requests_to("/comments")
    assert [r.query.get("page") for r in pages] == [None, "2", "3"]
    assert pages[0].query["per_page"] == "100"
    headers = github.requests[0].headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"


async def test_an_issue_without_comments_needs_one_request(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.add_issue(REPO, 3, "Quiet", state="closed", state_reason="not_planned")
    issue = await tracker.get_issue("#3")
    assert (issue.status, issue.comments, issue.description) == ("closed as not planned", [], "")
    assert len(github.requests) == 1


async def test_pull_requests_are_refused(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.add_issue(REPO, 7, "A PR", pull_request=True)
    for call in (
        tracker.get_issue("7"),
        tracker.comment("acme/app#7", "hello"),
        tracker.transition("7", "closed"),
        tracker.transitions("7"),
    ):
        with pytest.raises(PluginError, match=r"acme/app#7 is a pull request, not an issue"):
            await call
    assert mutations(github) == []
    count = len(github.requests)
    with pytest.raises(PluginError, match="is a pull request"):
        await tracker.get_issue("https://github.com/acme/app/pull/7")
    assert len(github.requests) == count


# --- commenting -----------------------------------------------------------------------


async def test_comment_posts_markdown(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.add_issue(REPO, 12, "Needs a comment")
    comment = await tracker.comment("12", "  Fixed in #13.\n\n- tests added  \n")
    assert comment.body == "Fixed in #13.\n\n- tests added"
    assert comment.author == "coro-bot"
    [post] = [r for r in github.requests if r.method == "POST"]
    assert post.path == "/repos/acme/app/issues/12/comments"
    assert post.body == {"body": "Fixed in #13.\n\n- tests added"}
    assert [c.id for c in (await tracker.get_issue("12")).comments] == [comment.id]


async def test_validation_failures_are_reported(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.add_issue(REPO, 12, "x")
    github.respond_once(
        "POST",
        r"/comments$",
        422,
        {
            "message": "Validation Failed",
            "errors": [
                {"resource": "IssueComment", "code": "custom", "message": "body is too long"}
            ],
            "documentation_url": "https://docs.github.com/rest",
        },
    )
    with pytest.raises(PluginError) as caught:
        await tracker.comment("12", "x" * 10)
    assert caught.value.status == 422
    assert "Validation Failed" in str(caught.value)
    assert "body is too long" in str(caught.value)


# --- transitions ----------------------------------------------------------------------


async def test_transitions_depend_on_the_state(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.add_issue(REPO, 1, "open one")
    github.add_issue(REPO, 2, "closed one", state="closed", state_reason="completed")
    assert await tracker.transitions("1") == [
        Transition("close", "Close as completed", "closed"),
        Transition("close_not_planned", "Close as not planned", "closed as not planned"),
    ]
    assert await tracker.transitions("2") == [
        Transition("reopen", "Reopen", "open"),
        Transition("close_not_planned", "Close as not planned", "closed as not planned"),
    ]


@pytest.mark.parametrize(
    ("to", "state", "reason", "status"),
    [
        ("closed", "closed", "completed", "closed"),
        ("Close as completed", "closed", "completed", "closed"),
        ("DONE", "closed", "completed", "closed"),
        ("closed as not planned", "closed", "not_planned", "closed as not planned"),
        ("Not Planned", "closed", "not_planned", "closed as not planned"),
    ],
)
async def test_close(
    github: FakeGitHubIssues,
    tracker: GitHubIssuesTracker,
    to: str,
    state: str,
    reason: str,
    status: str,
) -> None:
    issue = github.add_issue(REPO, 12, "x")
    moved = await tracker.transition("acme/app#12", to)
    assert moved.to_status == status
    assert (issue.state, issue.state_reason) == (state, reason)
    [patch] = [r for r in github.requests if r.method == "PATCH"]
    assert patch.path == "/repos/acme/app/issues/12"
    assert patch.body == {"state": state, "state_reason": reason}
    assert (await tracker.get_issue("12")).status == status


async def test_reopen_and_idempotence(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    issue = github.add_issue(REPO, 12, "x", state="closed", state_reason="not_planned")
    assert await tracker.transition("12", "open") == Transition("reopen", "Reopen", "open")
    assert (issue.state, issue.state_reason) == ("open", "reopened")
    assert await tracker.transition("12", "reopen") == Transition("", "", "open")
    assert len([r for r in github.requests if r.method == "PATCH"]) == 1


async def test_unknown_transition_lists_the_options(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.add_issue(REPO, 12, "x")
    with pytest.raises(PluginError) as caught:
        await tracker.transition("12", "merged")
    message = str(caught.value)
    assert 'No GitHub issue transition matches "merged"' in message
    for option in (
        "Reopen → open",
        "Close as completed → closed",
        "Close as not planned → closed as not planned",
    ):
        assert option in message
    assert github.requests == []


# --- keys -----------------------------------------------------------------------------


def test_keys_are_parsed() -> None:
    plugin = create({"token": TOKEN, "defaultRepo": "acme/app", "defaultOwner": "acme"})
    assert plugin.parse_key("12") == IssueRef("acme", "app", 12)
    assert plugin.parse_key(" #12 ") == IssueRef("acme", "app", 12)
    assert plugin.parse_key("other#5") == IssueRef("acme", "other", 5)
    assert plugin.parse_key("Oct0/re.po-x#9") == IssueRef("Oct0", "re.po-x", 9)
    assert plugin.parse_key("https://github.com/a-b/c/issues/3#issuecomment-1") == IssueRef(
        "a-b", "c", 3
    )
    assert plugin.parse_key("a/b#7").key == "a/b#7"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "abc",
        "acme/app",
        "acme/app#",
        "acme/app#0",
        "acme/app#-1",
        "a/b/c#1",
        "acme/..#1",
        "-acme/app#1",
        "acme/app#1 extra",
        "acme/app#12345678901",
    ],
)
async def test_invalid_keys_are_refused_without_a_request(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker, key: str
) -> None:
    with pytest.raises(PluginError, match="Not a GitHub issue key"):
        await tracker.get_issue(key)
    with pytest.raises(PluginError, match="Not a GitHub issue key"):
        await tracker.transition(key, "closed")
    assert github.requests == []


async def test_a_bare_number_needs_a_default_repo(github: FakeGitHubIssues) -> None:
    plugin = create({"token": TOKEN, "baseUrl": github.base_url})
    try:
        with pytest.raises(PluginError, match="needs defaultRepo"):
            await plugin.get_issue("12")
    finally:
        await plugin.aclose()
    assert github.requests == []


# --- errors ---------------------------------------------------------------------------


async def test_bad_credentials(github: FakeGitHubIssues) -> None:
    github.add_issue(REPO, 1, "x")
    plugin = create(
        {
            "token": "ghp_wrongWrongWrongWrongWrong1234",
            "baseUrl": github.base_url,
            "defaultRepo": REPO,
        }
    )
    try:
        with pytest.raises(PluginAuthError) as caught:
            await plugin.get_issue("1")
    finally:
        await plugin.aclose()
    assert str(caught.value).startswith("GitHub rejected the token (HTTP 401: Bad credentials)")
    assert "ghp_wrong" not in str(caught.value)


async def test_not_found_and_gone(github: FakeGitHubIssues, tracker: GitHubIssuesTracker) -> None:
    github.add_repo(REPO)
    with pytest.raises(PluginNotFoundError, match=r"GitHub issue acme/app#99 does not exist"):
        await tracker.get_issue("99")
    with pytest.raises(PluginNotFoundError, match=r"acme/nope#1 does not exist"):
        await tracker.get_issue("acme/nope#1")
    github.add_repo("acme/noissues", has_issues=False)
    with pytest.raises(PluginNotFoundError, match="Issues are disabled") as caught:
        await tracker.get_issue("acme/noissues#1")
    assert caught.value.status == 410


async def test_forbidden_without_rate_limit_is_an_auth_error(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.add_issue(REPO, 1, "x")
    github.respond_once("POST", r"/comments$", 403, {"message": "Must have admin rights"})
    with pytest.raises(PluginAuthError, match="Must have admin rights"):
        await tracker.comment("1", "hi")


async def test_primary_rate_limit(github: FakeGitHubIssues, tracker: GitHubIssuesTracker) -> None:
    github.add_issue(REPO, 1, "x")
    github.rate_limit("primary", reset_in=600)
    with pytest.raises(PluginRateLimited) as caught:
        await tracker.get_issue("1")
    assert caught.value.status == 403
    assert 300 < caught.value.retry_after <= 600
    github.rate_limit(None)
    assert (await tracker.get_issue("1")).title == "x"


async def test_secondary_rate_limit(github: FakeGitHubIssues, tracker: GitHubIssuesTracker) -> None:
    github.add_issue(REPO, 1, "x")
    github.rate_limit("secondary", reset_in=45)
    with pytest.raises(PluginRateLimited, match="retry in 45s") as caught:
        await tracker.get_issue("1")
    assert (caught.value.status, caught.value.retry_after) == (429, 45)


async def test_the_token_never_appears_in_messages(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.add_issue(REPO, 1, "x")
    github.respond_once(
        "GET",
        r"/issues/1$",
        400,
        {"message": f"Bad token {TOKEN} and ghp_someOtherTokenValue123456"},
    )
    with pytest.raises(PluginError) as caught:
        await tracker.get_issue("1")
    assert TOKEN not in str(caught.value)
    assert "ghp_someOther" not in str(caught.value)
    assert "Bad token ***" in str(caught.value)


async def test_pagination_never_leaves_the_api_host(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.add_issue(REPO, 1, "x")
    github.add_comment(REPO, 1, "one")
    github.respond_once(
        "GET",
        r"/comments$",
        200,
        [{"id": 1, "body": "one", "user": {"login": "a"}, "created_at": "2024-01-01T00:00:00Z"}],
        headers={"link": '<https://evil.example/steal?page=2>; rel="next"'},
    )
    with pytest.raises(PluginError, match="another host"):
        await tracker.get_issue("1")
    assert len(github.requests) == 2


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        (r"/issues/1$", ["a", "list"], "application/json"),
        (r"/issues/1$", {"title": "no state", "comments": 0}, "application/json"),
        (r"/issues/1$", "<html>login</html>", "text/html"),
        (r"/comments$", {"not": "a list"}, "application/json"),
        (r"/comments$", [{"body": "no id"}], "application/json"),
        (r"/comments$", ["junk"], "application/json"),
    ],
)
async def test_unexpected_shapes_are_plugin_errors(
    github: FakeGitHubIssues,
    tracker: GitHubIssuesTracker,
    path: str,
    body: Any,
    content_type: str,
) -> None:
    github.add_issue(REPO, 1, "x")
    github.add_comment(REPO, 1, "c")
    github.respond_once("GET", path, 200, body, content_type=content_type)
    with pytest.raises(PluginError):
        await tracker.get_issue("1")


async def test_server_errors(github: FakeGitHubIssues, tracker: GitHubIssuesTracker) -> None:
    github.add_issue(REPO, 1, "x")
    github.respond_once(
        "PATCH", r"/issues/1$", 502, "<html>bad gateway</html>", content_type="text/html"
    )
    with pytest.raises(PluginError, match=r"GitHub failed while moving acme/app#1 .*HTTP 502"):
        await tracker.transition("1", "closed")


# --- connection test, settings --------------------------------------------------------


async def test_connection_ok(github: FakeGitHubIssues, tracker: GitHubIssuesTracker) -> None:
    github.add_repo(REPO)
    check = await tracker.test_connection()
    assert check.ok, check.message
    assert (
        check.message
        == f"Connected to GitHub at {github.base_url} as coro-bot; acme/app has issues."
    )
    assert check.details["user"] == "coro-bot"
    assert check.details["scopes"] == "repo, read:org"
    assert [r.path for r in github.requests] == ["/user", "/repos/acme/app"]


async def test_connection_failures(github: FakeGitHubIssues) -> None:
    wrong = create({"token": "ghp_wrongWrongWrongWrongWrong1234", "baseUrl": github.base_url})
    try:
        check = await wrong.test_connection()
    finally:
        await wrong.aclose()
    assert not check.ok
    assert "Bad credentials" in check.message
    assert check.details["status"] == "401"
    assert "ghp_wrong" not in check.message

    plugin = make(github)
    try:
        check = await plugin.test_connection()
        assert not check.ok
        assert "Repository acme/app (defaultRepo) does not exist" in check.message
        github.add_repo(REPO, has_issues=False)
        check = await plugin.test_connection()
        assert (check.ok, check.message) == (
            False,
            "Issues are disabled on acme/app (defaultRepo).",
        )
    finally:
        await plugin.aclose()


async def test_connection_with_an_app_token(
    github: FakeGitHubIssues, tracker: GitHubIssuesTracker
) -> None:
    github.user_forbidden = True
    github.add_repo(REPO)
    check = await tracker.test_connection()
    assert check.ok, check.message
    assert "user" not in check.details


async def test_connection_to_nothing() -> None:
    async with FakeGitHubIssues() as gone:
        url = gone.base_url
    plugin = create({"token": TOKEN, "baseUrl": url})
    try:
        check = await plugin.test_connection()
    finally:
        await plugin.aclose()
    assert not check.ok
    assert check.message.startswith(f"Could not reach GitHub at {url}")


def test_the_plugin_satisfies_the_protocol() -> None:
    plugin: TrackerPlugin = create({"token": TOKEN})
    assert plugin.id == "github-issues"
    assert TOKEN not in repr(plugin)
    assert isinstance(plugin, GitHubIssuesTracker)
    assert plugin.base_url == "https://api.github.com"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "token: Field required"),
        ({"token": "  "}, "token: must not be blank"),
        ({"token": TOKEN, "defaultRepo": "a/b/c"}, 'defaultRepo: must be "owner/name"'),
        ({"token": TOKEN, "defaultRepo": "app"}, "or set defaultOwner"),
        ({"token": TOKEN, "baseUrl": "http://ghe.example.com/api/v3"}, "must use https://"),
        ({"token": TOKEN, "baseUrl": f"https://x:{TOKEN}@ghe.example.com"}, "credentials"),
        ({"token": TOKEN, "owner": "acme"}, "owner"),
        ({"token": 12345}, "token"),
    ],
)
def test_invalid_settings_name_fields_not_values(settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(PluginConfigError) as caught:
        create(settings)
    assert expected in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_enterprise_settings() -> None:
    plugin = create(
        {
            "token": TOKEN,
            "baseUrl": "https://ghe.example.com/api/v3/",
            "defaultRepo": "app",
            "defaultOwner": "acme",
        }
    )
    assert plugin.base_url == "https://ghe.example.com/api/v3"
    assert plugin.parse_key("5") == IssueRef("acme", "app", 5)
