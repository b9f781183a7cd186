"""The `jira` tracker against a loopback fake of Jira's REST API, and the ADF converter."""

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
from coro.plugins.trackers.adf import adf_to_text, text_to_adf
from coro.plugins.trackers.base import TrackerPlugin, Transition
from coro.plugins.trackers.jira import JiraTracker, create, retry_after_seconds
from coro.plugins.trackers.jira_events import iso_timestamp
from tests.fakes.jira_server import FakeJira, adf_problem

EMAIL = "dev@example.com"
TOKEN = "ATATT3xFfGF0-jiraSecretToken-7Qw9Zx"
BASIC = base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
PAT = "NjM4OTk5MzE5MDQ4OpatSecretForDataCenter"


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def para(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "paragraph", "content": list(nodes)}


def item(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"type": "listItem", "content": list(blocks)}


DESCRIPTION: dict[str, Any] = {
    "type": "doc",
    "version": 1,
    "content": [
        {"type": "heading", "attrs": {"level": 2}, "content": [text("Context")]},
        para(
            text("Login fails for "),
            {"type": "mention", "attrs": {"id": "acc-1", "text": "@Alice Smith"}},
            text(" since "),
            {"type": "text", "text": "v2.3", "marks": [{"type": "code"}]},
            text("; see "),
            {
                "type": "text",
                "text": "the runbook",
                "marks": [{"type": "link", "attrs": {"href": "https://wiki.example.com/rb"}}],
            },
            text("."),
            {"type": "hardBreak"},
            {"type": "text", "text": "Second line.", "marks": [{"type": "strong"}]},
        ),
        {
            "type": "bulletList",
            "content": [
                item(
                    para(text("Reproduce")),
                    {
                        "type": "orderedList",
                        "attrs": {"order": 1},
                        "content": [
                            item(para(text("open /login"))),
                            item(
                                para(text("submit")),
                                {"type": "bulletList", "content": [item(para(text("deepest")))]},
                            ),
                        ],
                    },
                ),
                item(para(text("Fix"))),
            ],
        },
        {
            "type": "codeBlock",
            "attrs": {"language": "python"},
            "content": [text("def login():\n    return None")],
        },
        {
            "type": "table",
            "content": [
                {
                    "type": "tableRow",
                    "content": [
                        {"type": "tableHeader", "content": [para(text("Env"))]},
                        {"type": "tableHeader", "content": [para(text("Result"))]},
                    ],
                },
                {
                    "type": "tableRow",
                    "content": [
                        {"type": "tableCell", "content": [para(text("staging"))]},
                        {"type": "tableCell", "content": [para(text("fails"))]},
                    ],
                },
            ],
        },
        para({"type": "inlineCard", "attrs": {"url": "https://example.atlassian.net/browse/X-2"}}),
    ],
}

DESCRIPTION_TEXT = """\
## Context

Login fails for @Alice Smith since `v2.3`; see the runbook (https://wiki.example.com/rb).
Second line.

- Reproduce
  1. open /login
  2. submit
     - deepest
- Fix

```python
def login():
    return None
```

| Env | Result |
| --- | --- |
| staging | fails |

https://example.atlassian.net/browse/X-2"""


@pytest.fixture
async def jira() -> AsyncIterator[FakeJira]:
    async with FakeJira(email=EMAIL, api_token=TOKEN) as fake:
        yield fake


def make(fake: FakeJira, **extra: Any) -> JiraTracker:
    return create({"baseUrl": fake.base_url, "email": EMAIL, "apiToken": TOKEN, **extra})


@pytest.fixture
async def tracker(jira: FakeJira) -> AsyncIterator[JiraTracker]:
    plugin = make(jira)
    yield plugin
    await plugin.aclose()


def assert_no_secret(message: str) -> None:
    for secret in (TOKEN, BASIC, PAT):
        assert secret not in message


# --- reading issues -------------------------------------------------------------------


async def test_get_issue_converts_the_adf_description(jira: FakeJira, tracker: JiraTracker) -> None:
    jira.add_issue(
        "PROJ-12",
        "Login fails on staging",
        description=DESCRIPTION,
        status="In Progress",
        issue_type="Bug",
        assignee="Bob Jones",
        labels=["auth", "p1"],
    )

    issue = await tracker.get_issue("PROJ-12")

    assert issue.key == "PROJ-12"
    assert issue.title == "Login fails on staging"
    assert issue.description == DESCRIPTION_TEXT
    assert issue.status == "In Progress"
    assert issue.issue_type == "Bug"
    assert issue.assignee == "Bob Jones"
    assert issue.labels == ["auth", "p1"]
    assert issue.url == f"{jira.base_url}/browse/PROJ-12"
    assert issue.comments == []
    [request] = jira.requests
    assert request.path == "/rest/api/3/issue/PROJ-12"
    assert set(request.query["fields"].split(",")) == {
        "summary",
        "description",
        "status",
        "issuetype",
        "assignee",
        "labels",
        "comment",
    }
    assert request.headers["authorization"] == f"Basic {BASIC}"


async def test_comments_are_read_across_pages(jira: FakeJira) -> None:
    jira.embedded_comments = 2
    jira.comment_page_max = 2
    jira.add_issue("PROJ-3", "Many comments")
    for number in range(1, 7):
        jira.add_comment("PROJ-3", f"comment {number}", author=f"User {number}")
    plugin = make(jira)
    try:
        issue = await plugin.get_issue("PROJ-3")
    finally:
        await plugin.aclose()

    assert [c.body for c in issue.comments] == [f"comment {n}" for n in range(1, 7)]
    assert [c.author for c in issue.comments] == [f"User {n}" for n in range(1, 7)]
    assert issue.comments[0].created_at == "2024-03-01T09:01:00+00:00"
    pages = jira.requests_to("/comment")
    assert [r.query["startAt"] for r in pages] == ["2", "4"]
    assert all(r.query["orderBy"] == "created" for r in pages)


async def test_all_comments_embedded_needs_one_request(
    jira: FakeJira, tracker: JiraTracker
) -> None:
    jira.add_issue("PROJ-4", "Few comments")
    jira.add_comment("PROJ-4", "only one", author="Alice")
    issue = await tracker.get_issue("PROJ-4")
    assert [(c.author, c.body) for c in issue.comments] == [("Alice", "only one")]
    assert len(jira.requests) == 1
    assert [c.body for c in await tracker.list_comments("PROJ-4")] == ["only one"]


async def test_a_moved_issue_reports_its_current_key(jira: FakeJira, tracker: JiraTracker) -> None:
    moved = jira.add_issue("NEW-3", "Moved")
    jira.issues["OLD-9"] = moved
    issue = await tracker.get_issue("OLD-9")
    assert issue.key == "NEW-3"
    assert issue.url.endswith("/browse/NEW-3")


# --- commenting -----------------------------------------------------------------------


async def test_comment_sends_adf(jira: FakeJira, tracker: JiraTracker) -> None:
    jira.add_issue("PROJ-5", "Needs a comment")
    body = (
        "Opened a PR: https://github.com/acme/app/pull/7\n\n"
        "Changes:\n- fix `login()`\n- add tests\n  - unit\n\n"
        "```\nmake test\n```"
    )

    comment = await tracker.comment("PROJ-5", body)

    [post] = [r for r in jira.requests if r.method == "POST"]
    assert post.path == "/rest/api/3/issue/PROJ-5/comment"
    adf = post.body["body"]
    assert adf["type"] == "doc" and adf["version"] == 1
    assert adf_problem(adf) is None
    kinds = [node["type"] for node in adf["content"]]
    assert kinds == ["paragraph", "paragraph", "bulletList", "codeBlock"]
    link = adf["content"][0]["content"][1]
    assert link["marks"] == [
        {"type": "link", "attrs": {"href": "https://github.com/acme/app/pull/7"}}
    ]
    assert comment.author == "Dev Example"
    assert comment.body == (
        "Opened a PR: https://github.com/acme/app/pull/7\n\n"
        "Changes:\n\n- fix `login()`\n- add tests\n  - unit\n\n```\nmake test\n```"
    )
    stored = await tracker.get_issue("PROJ-5")
    assert [c.id for c in stored.comments] == [comment.id]


async def test_an_empty_comment_is_refused_without_a_request(
    jira: FakeJira, tracker: JiraTracker
) -> None:
    jira.add_issue("PROJ-5", "x")
    with pytest.raises(PluginError, match="empty comment"):
        await tracker.comment("PROJ-5", "  \n ")
    assert jira.requests == []


# --- transitions ----------------------------------------------------------------------


async def test_transitions_are_listed(jira: FakeJira, tracker: JiraTracker) -> None:
    jira.add_issue("PROJ-6", "Workflow", status="To Do")
    assert await tracker.transitions("PROJ-6") == [
        Transition("11", "Start Progress", "In Progress"),
        Transition("31", "Done", "Done"),
        Transition("41", "Won't Do", "Won't Do"),
    ]


async def test_transition_by_status_name(jira: FakeJira, tracker: JiraTracker) -> None:
    issue = jira.add_issue("PROJ-6", "Workflow", status="To Do")
    moved = await tracker.transition("PROJ-6", "in progress")
    assert moved == Transition("11", "Start Progress", "In Progress")
    assert issue.status == "In Progress"
    [post] = [r for r in jira.requests if r.method == "POST"]
    assert post.path == "/rest/api/3/issue/PROJ-6/transitions"
    assert post.body == {"transition": {"id": "11"}}


async def test_transition_by_transition_name(jira: FakeJira, tracker: JiraTracker) -> None:
    issue = jira.add_issue("PROJ-6", "Workflow", status="In Progress")
    moved = await tracker.transition("PROJ-6", "SEND TO REVIEW")
    assert moved.to_status == "In Review"
    assert issue.status == "In Review"
    assert (await tracker.transition("PROJ-6", "31")).name == "Done"
    assert issue.status == "Done"


async def test_unknown_transition_lists_the_options(jira: FakeJira, tracker: JiraTracker) -> None:
    jira.add_issue("PROJ-6", "Workflow", status="To Do")
    with pytest.raises(PluginError) as caught:
        await tracker.transition("PROJ-6", "Deployed")
    message = str(caught.value)
    assert 'No Jira transition reaches "Deployed" from issue PROJ-6' in message
    assert "(now To Do)" in message
    for option in ("Start Progress → In Progress", "Done → Done", "Won't Do → Won't Do"):
        assert option in message
    assert not [r for r in jira.requests if r.method == "POST"]


async def test_transition_to_the_current_status_changes_nothing(
    jira: FakeJira, tracker: JiraTracker
) -> None:
    jira.add_issue("PROJ-6", "Workflow", status="Done")
    assert await tracker.transition("PROJ-6", "done") == Transition("", "", "Done")
    assert not [r for r in jira.requests if r.method == "POST"]


async def test_a_transition_needing_fields_reports_jiras_400(
    jira: FakeJira, tracker: JiraTracker
) -> None:
    issue = jira.add_issue("PROJ-6", "Workflow", status="To Do")
    with pytest.raises(PluginError) as caught:
        await tracker.transition("PROJ-6", "won't do")
    assert not isinstance(caught.value, PluginAuthError | PluginNotFoundError)
    assert caught.value.status == 400
    assert "resolution: Resolution is required." in str(caught.value)
    assert issue.status == "To Do"


# --- keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "PROJ", "PROJ-", "1PROJ-2", "P-1", "PROJ-1/comment", "PROJ-1?x=1", "../PROJ-1", "12"],
)
async def test_invalid_keys_are_refused_without_a_request(
    jira: FakeJira, tracker: JiraTracker, key: str
) -> None:
    with pytest.raises(PluginError, match="Not a Jira issue key"):
        await tracker.get_issue(key)
    with pytest.raises(PluginError, match="Not a Jira issue key"):
        await tracker.transition(key, "Done")
    with pytest.raises(PluginError, match="Not a Jira issue key"):
        await tracker.comment(key, "hello")
    assert jira.requests == []


async def test_keys_are_normalised(jira: FakeJira) -> None:
    plugin = make(jira, defaultProject="proj")
    try:
        assert plugin.normalize_key(" proj-7 ") == "PROJ-7"
        assert plugin.normalize_key("#7") == "PROJ-7"
        assert plugin.normalize_key("7") == "PROJ-7"
        assert plugin.normalize_key("https://acme.atlassian.net/browse/ab_c-42?x=1") == "AB_C-42"
    finally:
        await plugin.aclose()


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("login_reason", [True, False])
async def test_wrong_credentials_are_an_auth_error(login_reason: bool) -> None:
    async with FakeJira(
        email=EMAIL, api_token="the-right-token", login_reason_header=login_reason
    ) as fake:
        fake.add_issue("PROJ-1", "x")
        plugin = make(fake)
        try:
            with pytest.raises(PluginAuthError) as caught:
                await plugin.get_issue("PROJ-1")
        finally:
            await plugin.aclose()
    message = str(caught.value)
    assert message.startswith("Jira rejected the credentials")
    assert caught.value.status == 401
    assert_no_secret(message)
    assert_no_secret(repr(caught.value.args))


async def test_forbidden_is_an_auth_error(jira: FakeJira, tracker: JiraTracker) -> None:
    jira.respond_once(
        "POST",
        r"/comment$",
        403,
        {"errorMessages": ["You do not have permission to comment on this issue."], "errors": {}},
    )
    jira.add_issue("PROJ-1", "x")
    with pytest.raises(PluginAuthError, match="permission to comment") as caught:
        await tracker.comment("PROJ-1", "hi")
    assert caught.value.status == 403


async def test_missing_issue_is_not_found(tracker: JiraTracker) -> None:
    with pytest.raises(PluginNotFoundError, match="Jira issue PROJ-404 does not exist") as caught:
        await tracker.get_issue("PROJ-404")
    assert caught.value.status == 404
    with pytest.raises(PluginNotFoundError, match="PROJ-404"):
        await tracker.transition("PROJ-404", "Done")


async def test_bad_request_shows_jiras_messages_without_secrets(
    jira: FakeJira, tracker: JiraTracker
) -> None:
    jira.add_issue("PROJ-1", "x")
    jira.respond_once(
        "GET",
        r"/issue/PROJ-1$",
        400,
        {
            "errorMessages": [f"Field 'x' is invalid (auth was {TOKEN})"],
            "errors": {"labels": f"bad label {BASIC}"},
        },
    )
    with pytest.raises(PluginError) as caught:
        await tracker.get_issue("PROJ-1")
    message = str(caught.value)
    assert caught.value.status == 400
    assert "Field 'x' is invalid" in message
    assert "labels: bad label ***" in message
    assert_no_secret(message)


async def test_rate_limit_carries_retry_after(jira: FakeJira, tracker: JiraTracker) -> None:
    jira.add_issue("PROJ-1", "x")
    jira.rate_limit_retry_after = "17"
    with pytest.raises(PluginRateLimited) as caught:
        await tracker.get_issue("PROJ-1")
    assert caught.value.retry_after == 17
    assert caught.value.status == 429
    jira.rate_limit_retry_after = None
    assert (await tracker.get_issue("PROJ-1")).title == "x"
    jira.respond_once("GET", r"/issue/", 503, None, headers={"retry-after": "5"})
    with pytest.raises(PluginRateLimited) as caught:
        await tracker.get_issue("PROJ-1")
    assert (caught.value.status, caught.value.retry_after) == (503, 5)


async def test_server_errors_and_redirects(jira: FakeJira, tracker: JiraTracker) -> None:
    jira.add_issue("PROJ-1", "x")
    jira.respond_once("GET", r"/issue/", 503, "<html>down</html>", content_type="text/html")
    with pytest.raises(PluginError, match=r"Jira failed while reading issue PROJ-1 \(HTTP 503\)"):
        await tracker.get_issue("PROJ-1")
    jira.respond_once(
        "GET", r"/issue/", 302, None, headers={"location": "https://id.example/login"}
    )
    with pytest.raises(PluginError, match="redirected"):
        await tracker.get_issue("PROJ-1")


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        (r"/issue/PROJ-1$", ["not", "an", "object"], "application/json"),
        (r"/issue/PROJ-1$", {"key": "PROJ-1"}, "application/json"),
        (r"/issue/PROJ-1$", {"key": "PROJ-1", "fields": "oops"}, "application/json"),
        (
            r"/issue/PROJ-1$",
            {"fields": {"comment": {"comments": [{"body": None}], "total": 1}}},
            "application/json",
        ),
        (
            r"/issue/PROJ-1$",
            {"fields": {"comment": {"comments": [], "total": 3}}},
            "application/json",
        ),
        (r"/issue/PROJ-1$", "<html><body>Log in</body></html>", "text/html"),
    ],
)
async def test_unexpected_shapes_are_plugin_errors(
    jira: FakeJira, tracker: JiraTracker, path: str, body: Any, content_type: str
) -> None:
    jira.add_issue("PROJ-1", "x")
    jira.respond_once("GET", path, 200, body, content_type=content_type)
    jira.respond_once("GET", r"/comment$", 200, {"comments": "nope", "total": 3})
    with pytest.raises(PluginError):
        await tracker.get_issue("PROJ-1")


async def test_lenient_fields_do_not_break_reading(jira: FakeJira, tracker: JiraTracker) -> None:
    jira.add_issue("PROJ-1", "x")
    jira.respond_once(
        "GET",
        r"/issue/PROJ-1$",
        200,
        {"key": "PROJ-1", "fields": {"summary": None, "labels": [1, "ok"], "status": "weird"}},
    )
    issue = await tracker.get_issue("PROJ-1")
    assert (issue.title, issue.status, issue.labels, issue.description) == (
        "",
        "unknown",
        ["ok"],
        "",
    )


async def test_malformed_transitions_are_plugin_errors(
    jira: FakeJira, tracker: JiraTracker
) -> None:
    jira.respond_once("GET", r"/transitions$", 200, {"transitions": {"id": "1"}})
    with pytest.raises(PluginError, match="no 'transitions' list"):
        await tracker.transitions("PROJ-1")


# --- connection test, settings, lifecycle ---------------------------------------------


async def test_connection_ok(jira: FakeJira) -> None:
    jira.projects["PROJ"] = "Project Phoenix"
    plugin = make(jira, defaultProject="PROJ")
    try:
        check = await plugin.test_connection()
    finally:
        await plugin.aclose()
    assert check.ok, check.message
    assert check.message == f"Connected to Jira at {jira.base_url} as Dev Example."
    assert check.details["user"] == "Dev Example"
    assert check.details["project"] == "Project Phoenix"
    assert [r.path for r in jira.requests] == ["/rest/api/3/myself", "/rest/api/3/project/PROJ"]


async def test_connection_failures_are_reported(jira: FakeJira) -> None:
    wrong = create({"baseUrl": jira.base_url, "email": EMAIL, "apiToken": "wrong-" + TOKEN})
    try:
        check = await wrong.test_connection()
    finally:
        await wrong.aclose()
    assert not check.ok
    assert "rejected the credentials" in check.message
    assert_no_secret(check.message + repr(check.details))

    missing = make(jira, defaultProject="NOPE")
    try:
        check = await missing.test_connection()
    finally:
        await missing.aclose()
    assert not check.ok
    assert "project NOPE (defaultProject) does not exist" in check.message


async def test_connection_to_nothing_is_reported() -> None:
    async with FakeJira() as gone:
        url = gone.base_url
    plugin = create({"baseUrl": url, "email": EMAIL, "apiToken": TOKEN})
    try:
        check = await plugin.test_connection()
    finally:
        await plugin.aclose()
    assert not check.ok
    assert check.message.startswith(f"Could not reach Jira at {url}")


async def test_bearer_token_uses_rest_v2_with_string_bodies() -> None:
    async with FakeJira(api_token=None, bearer_token=PAT) as fake:
        fake.add_issue("OPS-1", "DC issue", description=DESCRIPTION)
        fake.add_comment("OPS-1", "first")
        plugin = create({"baseUrl": fake.base_url, "bearerToken": PAT})
        try:
            issue = await plugin.get_issue("OPS-1")
            posted = await plugin.comment("OPS-1", "plain *wiki* text")
        finally:
            await plugin.aclose()
    assert "Login fails for" in issue.description
    assert [c.body for c in issue.comments] == ["first"]
    assert posted.body == "plain *wiki* text"
    assert all(r.path.startswith("/rest/api/2/") for r in fake.requests)
    assert fake.requests[-1].body == {"body": "plain *wiki* text"}
    assert fake.requests[0].headers["authorization"] == f"Bearer {PAT}"


async def test_aclose_then_reuse(jira: FakeJira) -> None:
    plugin = make(jira)
    jira.add_issue("PROJ-1", "x")
    await plugin.get_issue("PROJ-1")
    await plugin.aclose()
    await plugin.aclose()
    assert (await plugin.get_issue("PROJ-1")).title == "x"
    await plugin.aclose()


def test_the_plugin_satisfies_the_protocol() -> None:
    plugin: TrackerPlugin = create(
        {"baseUrl": "https://acme.atlassian.net/", "email": EMAIL, "apiToken": TOKEN}
    )
    assert plugin.id == "jira"
    assert TOKEN not in repr(plugin)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"email": EMAIL, "apiToken": TOKEN}, "baseUrl: Field required"),
        ({"baseUrl": "https://a.atlassian.net"}, "config: email + apiToken"),
        ({"baseUrl": "https://a.atlassian.net", "apiToken": TOKEN}, "email is required"),
        (
            {
                "baseUrl": "https://a.atlassian.net",
                "email": EMAIL,
                "apiToken": TOKEN,
                "bearerToken": PAT,
            },
            "not both",
        ),
        ({"baseUrl": "http://jira.example.com", "bearerToken": PAT}, "must use https://"),
        ({"baseUrl": f"https://me:{TOKEN}@a.atlassian.net", "bearerToken": PAT}, "credentials"),
        ({"baseUrl": "ftp://a", "bearerToken": PAT}, "baseUrl: must be an http"),
        (
            {"baseUrl": "https://a.atlassian.net", "bearerToken": "  "},
            "bearerToken: must not be blank",
        ),
        (
            {"baseUrl": "https://a.atlassian.net", "bearerToken": PAT, "defaultProject": "1x"},
            "defaultProject",
        ),
        ({"baseUrl": "https://a.atlassian.net", "bearerToken": PAT, "password": TOKEN}, "password"),
        ({"baseUrl": "https://a.atlassian.net", "bearerToken": PAT, "apiVersion": 4}, "apiVersion"),
    ],
)
def test_invalid_settings_name_fields_not_values(settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(PluginConfigError) as caught:
        create(settings)
    assert expected in str(caught.value)
    assert_no_secret(str(caught.value))


def test_settings_accept_variants() -> None:
    plugin = create(
        {"baseUrl": "https://acme.atlassian.net/rest/api/3/", "email": EMAIL, "apiToken": TOKEN}
    )
    assert plugin.base_url == "https://acme.atlassian.net"
    assert plugin.api_version == 3
    dc = create({"baseUrl": "https://jira.corp.example/jira", "bearerToken": PAT})
    assert (dc.base_url, dc.api_version) == ("https://jira.corp.example/jira", 2)
    forced = create(
        {
            "baseUrl": "http://jira.lan",
            "bearerToken": PAT,
            "apiVersion": 3,
            "allowInsecureHttp": True,
        }
    )
    assert forced.api_version == 3


def test_retry_after_and_timestamps() -> None:
    assert retry_after_seconds("12") == 12
    assert retry_after_seconds("0") == 1
    assert retry_after_seconds(None) == 30
    assert retry_after_seconds("garbage") == 30
    assert 1 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") <= 3600
    assert iso_timestamp("2024-01-15T10:30:00.000+0000") == "2024-01-15T10:30:00+00:00"
    assert iso_timestamp("2024-01-15T10:30:00.123+0200") == "2024-01-15T10:30:00.123000+02:00"
    assert iso_timestamp("yesterday") == "yesterday"
    assert iso_timestamp(None) == ""


# --- ADF ------------------------------------------------------------------------------


def test_adf_to_text_survives_junk() -> None:
    assert adf_to_text(None) == ""
    assert adf_to_text("plain v2 body") == "plain v2 body"
    assert adf_to_text(["not", "a", "doc"]) == ""
    assert adf_to_text({"type": "doc", "content": "oops"}) == ""
    weird = {
        "type": "doc",
        "content": [
            7,
            {"type": "mysteryBlock", "content": [para(text("inside"))]},
            {
                "type": "paragraph",
                "content": [{"type": "text"}, {"type": "emoji", "attrs": {"shortName": ":tada:"}}],
            },
            {
                "type": "panel",
                "attrs": {"panelType": "warning"},
                "content": [para(text("careful"))],
            },
            {"type": "rule"},
            {"type": "blockquote", "content": [para(text("quoted"))]},
            {
                "type": "taskList",
                "content": [
                    {"type": "taskItem", "attrs": {"state": "DONE"}, "content": [text("shipped")]},
                    {"type": "taskItem", "attrs": {"state": "TODO"}, "content": [text("docs")]},
                ],
            },
            para(
                {"type": "date", "attrs": {"timestamp": "1700000000000"}},
                text(" "),
                {"type": "status", "attrs": {"text": "BLOCKED"}},
            ),
            {"type": "mediaSingle", "content": [{"type": "media", "attrs": {"alt": "shot.png"}}]},
        ],
    }
    assert adf_to_text(weird) == (
        "inside\n\n:tada:\n\n[warning] careful\n\n---\n\n> quoted\n\n"
        "- [x] shipped\n- [ ] docs\n\n2023-11-14 [BLOCKED]\n\n[attachment: shot.png]"
    )
    deep: dict[str, Any] = para(text("bottom"))
    for _ in range(500):
        deep = {"type": "blockquote", "content": [deep]}
    assert isinstance(adf_to_text({"type": "doc", "content": [deep]}), str)


@pytest.mark.parametrize(
    "source",
    [
        "Just one line.",
        "Line one\nline two\n\nSecond paragraph.",
        "# Title\n\n## Sub\n\ntext",
        "- a\n- b\n  - b1\n  - b2\n    1. deep\n- c",
        "3. three\n4. four",
        "```js\nconst a = 1;\n\nconsole.log(a);\n```",
        "> quoted\n> more",
        "Before\n\n---\n\nAfter",
        "See [the docs](https://example.com/docs) and <https://x.io> or https://a.b/c_(d).",
        "Use `make test` and **really** do it.",
        "tricky * stars and _underscores_ and [brackets] (parens)",
    ],
)
def test_text_to_adf_is_valid_and_round_trips(source: str) -> None:
    doc = text_to_adf(source)
    assert adf_problem(doc) is None
    again = adf_to_text(doc)
    if "[the docs]" in source:
        assert again == (
            "See the docs (https://example.com/docs) and https://x.io or https://a.b/c_(d)."
        )
    elif "**" in source:
        assert again == "Use `make test` and really do it."
    else:
        assert again == source


def test_text_to_adf_list_after_paragraph_and_trailing_punctuation() -> None:
    doc = text_to_adf("Steps:\n- one\n- two\n\nDone: https://ci.example/run/5.")
    assert [n["type"] for n in doc["content"]] == ["paragraph", "bulletList", "paragraph"]
    last = doc["content"][2]["content"]
    assert last[1]["marks"][0]["attrs"]["href"] == "https://ci.example/run/5"
    assert last[2] == {"type": "text", "text": "."}
    assert adf_problem(text_to_adf("")) == "empty"
