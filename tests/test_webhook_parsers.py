"""The GitHub and Bitbucket webhook parsers: deliveries as the providers send them →
the PR poller's event keys and payloads; anything malformed → no event, no exception."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest

from coro.plugins.scm import bitbucket_webhooks, github_webhooks
from coro.plugins.scm.bitbucket import create as create_bitbucket
from coro.plugins.scm.github import create as create_github
from coro.plugins.webhooks import WebhookEvent, WebhookParser, repo_names_match

PR_URL = "https://github.com/acme/svc/pull/7"
REPO = {"full_name": "acme/svc", "name": "svc"}


def github(event: str, payload: Any, *, content_type: str = "application/json"):
    headers = {"x-github-event": event, "content-type": content_type}
    if content_type == "application/x-www-form-urlencoded":
        body = urlencode({"payload": json.dumps(payload)}).encode()
    else:
        body = json.dumps(payload).encode()
    return github_webhooks.parse_webhook(headers, body)


def pull(state: str = "open", merged: bool = False) -> dict[str, Any]:
    return {
        "number": 7,
        "state": state,
        "merged": merged,
        "merged_at": "2024-05-02T10:00:00Z" if merged else None,
        "html_url": PR_URL,
    }


def review(state: str, body: str | None = "") -> dict[str, Any]:
    return {
        "action": "submitted",
        "review": {
            "id": 80001,
            "state": state,
            "body": body,
            "user": {"login": "alice"},
            "submitted_at": "2024-05-01T09:00:00Z",
        },
        "pull_request": pull(),
        "repository": REPO,
    }


def keys(events: list[WebhookEvent]) -> list[str]:
    return [e.event_key for e in events]


def test_a_github_approval_is_the_pollers_approval_event() -> None:
    [event] = github("pull_request_review", review("approved"))
    assert event.event_key == "pullrequest:approved"
    assert event.payload == {"approvedBy": ["alice"]}
    assert event.state == "OPEN"
    assert event.pr_id == 7
    assert event.ref.kind == "pull_request"
    assert (event.ref.plugin_id, event.ref.repo_key, event.ref.external_id) == (
        "github",
        "acme/svc",
        "7",
    )
    assert event.ref.url == PR_URL


def test_a_github_review_note_is_also_a_comment_with_the_review_id() -> None:
    events = github("pull_request_review", review("changes_requested", "Rename the flag."))
    assert keys(events) == ["pullrequest:changes_request_created", "pullrequest:comment_created"]
    assert events[0].payload == {"changesRequestedBy": "alice"}
    comment = events[1].payload["comment"]
    assert comment["id"] == "review-80001" == events[1].comment_id
    assert comment["content"] == {"raw": "Rename the flag."}
    assert comment["user"] == {"display_name": "alice"}
    commented = github("pull_request_review", review("commented", "Looks fine"))
    assert keys(commented) == ["pullrequest:comment_created"]
    assert github("pull_request_review", review("commented", "")) == []


@pytest.mark.parametrize(
    ("action", "state", "merged", "expected", "said"),
    [
        ("closed", "closed", True, "pullrequest:fulfilled", "MERGED"),
        ("closed", "closed", False, "pullrequest:rejected", "DECLINED"),
        ("reopened", "open", False, "pullrequest:updated", "OPEN"),
    ],
)
def test_github_pull_request_state_changes(
    action: str, state: str, merged: bool, expected: str, said: str
) -> None:
    payload = {"action": action, "pull_request": pull(state, merged), "repository": REPO}
    [event] = github("pull_request", payload)
    assert event.event_key == expected
    assert event.payload == {"state": said}
    assert event.state == said


def test_github_pushes_pings_and_other_actions_wake_nothing() -> None:
    assert (
        github(
            "pull_request", {"action": "synchronize", "pull_request": pull(), "repository": REPO}
        )
        == []
    )
    assert (
        github("pull_request", {"action": "labeled", "pull_request": pull(), "repository": REPO})
        == []
    )
    assert github("ping", {"zen": "Keep it logically awesome.", "hook_id": 1}) == []
    assert github("push", {"ref": "refs/heads/main", "repository": REPO}) == []
    assert github("pull_request_review", {**review("approved"), "action": "edited"}) == []


def test_github_comments_on_a_pull_request() -> None:
    inline = {
        "action": "created",
        "comment": {
            "id": 5001,
            "body": "nit: typo",
            "user": {"login": "bob"},
            "created_at": "2024-05-01T10:00:00Z",
            "in_reply_to_id": 5000,
            "path": "src/app.py",
        },
        "pull_request": pull(),
        "repository": REPO,
    }
    [event] = github("pull_request_review_comment", inline)
    assert event.event_key == "pullrequest:comment_created"
    assert event.comment_id == "5001"
    assert event.payload["comment"] == {
        "id": "5001",
        "content": {"raw": "nit: typo"},
        "user": {"display_name": "bob"},
        "created_on": "2024-05-01T10:00:00Z",
        "inReplyTo": "5000",
        "path": "src/app.py",
    }
    on_issue = {
        "action": "created",
        "issue": {
            "number": 7,
            "state": "open",
            "pull_request": {"html_url": PR_URL, "merged_at": None},
        },
        "comment": {
            "id": 1001,
            "body": "Thanks!",
            "user": {"login": "carol"},
            "created_at": "2024-05-01T11:00:00Z",
        },
        "repository": REPO,
    }
    [event] = github("issue_comment", on_issue)
    assert (event.event_key, event.comment_id, event.pr_id) == (
        "pullrequest:comment_created",
        "1001",
        7,
    )
    assert event.ref.url == PR_URL
    plain_issue = {**on_issue, "issue": {"number": 7, "state": "open"}}
    assert github("issue_comment", plain_issue) == []  # an issue, not a pull request


def test_github_form_encoded_deliveries_parse_like_json() -> None:
    events = github(
        "pull_request_review", review("approved"), content_type="application/x-www-form-urlencoded"
    )
    assert keys(events) == ["pullrequest:approved"]


def bitbucket(key: str, payload: Any) -> list[WebhookEvent]:
    headers = {"x-event-key": key, "content-type": "application/json"}
    return bitbucket_webhooks.parse_webhook(headers, json.dumps(payload).encode())


def bb_pull(state: str = "OPEN", approved: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "id": 12,
        "state": state,
        "links": {"html": {"href": "https://bitbucket.org/team/app/pull-requests/12"}},
        "participants": [
            {"user": {"nickname": name}, "approved": True, "role": "REVIEWER"} for name in approved
        ],
    }


BB_REPO = {"full_name": "team/app"}


def test_bitbucket_approvals_count_the_participants() -> None:
    approval = {"approval": {"user": {"nickname": "dana"}}, "repository": BB_REPO}
    [event] = bitbucket("pullrequest:approved", {**approval, "pullrequest": bb_pull()})
    assert event.event_key == "pullrequest:approved"
    assert event.payload == {"approvedBy": ["dana"]}
    assert event.approval_count == 1
    assert (event.ref.plugin_id, event.ref.repo_key, event.ref.external_id) == (
        "bitbucket",
        "team/app",
        "12",
    )
    assert event.ref.url == "https://bitbucket.org/team/app/pull-requests/12"
    both = bitbucket(
        "pullrequest:approved", {**approval, "pullrequest": bb_pull(approved=("erin", "dana"))}
    )
    assert both[0].approval_count == 2
    [withdrawn] = bitbucket(
        "pullrequest:unapproved", {**approval, "pullrequest": bb_pull(approved=("erin",))}
    )
    assert withdrawn.event_key == "pullrequest:unapproved"
    assert withdrawn.payload == {"unapprovedBy": "dana"}
    assert withdrawn.approval_count == 1


def test_bitbucket_changes_comments_merges_and_declines() -> None:
    [asked] = bitbucket(
        "pullrequest:changes_request_created",
        {
            "changes_request": {"user": {"display_name": "Erin"}},
            "pullrequest": bb_pull(),
            "repository": BB_REPO,
        },
    )
    assert asked.event_key == "pullrequest:changes_request_created"
    assert asked.payload == {"changesRequestedBy": "Erin"}
    comment = {
        "id": 301,
        "content": {"raw": "Please add a test"},
        "user": {"nickname": "erin"},
        "created_on": "2024-05-01T12:00:00+00:00",
        "parent": {"id": 300},
        "inline": {"path": "app.py"},
    }
    [said] = bitbucket(
        "pullrequest:comment_created",
        {"comment": comment, "pullrequest": bb_pull(), "repository": BB_REPO},
    )
    assert said.comment_id == "301"
    assert said.payload["comment"]["inReplyTo"] == "300"
    assert said.payload["comment"]["path"] == "app.py"
    deleted = {**comment, "deleted": True}
    assert (
        bitbucket(
            "pullrequest:comment_created",
            {"comment": deleted, "pullrequest": bb_pull(), "repository": BB_REPO},
        )
        == []
    )
    [merged] = bitbucket(
        "pullrequest:fulfilled", {"pullrequest": bb_pull("MERGED"), "repository": BB_REPO}
    )
    assert (merged.event_key, merged.payload, merged.state) == (
        "pullrequest:fulfilled",
        {"state": "MERGED"},
        "MERGED",
    )
    [declined] = bitbucket(
        "pullrequest:rejected", {"pullrequest": bb_pull("DECLINED"), "repository": BB_REPO}
    )
    assert declined.payload == {"state": "DECLINED"}
    assert bitbucket("repo:push", {"repository": BB_REPO}) == []


STRANGE_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe\x00",
    b"[1, 2, 3]",
    b"null",
    b'"a string"',
    b"{}",
    b'{"pull_request": "seven", "repository": {"full_name": "acme/svc"}}',
    b'{"action": "submitted", "review": [], "pull_request": {"number": 7}, "repository": {}}',
    b'{"action": "submitted", "review": {"id": "x", "state": 5}, "pull_request": {"number": -1},'
    b' "repository": {"full_name": "acme/svc"}}',
    b'{"action": "closed", "pull_request": {"number": true}, "repository": {"full_name": 3}}',
    b'{"action": "closed", "pull_request": {"number": 7}, "repository": {"full_name": "../x"}}',
    b'{"action": "created", "comment": {"id": 1}, "issue": {"number": 7, "pull_request": 1},'
    b' "repository": {"full_name": "acme/svc"}}',
    b'{"pullrequest": {"id": "12x"}, "repository": {"full_name": "team/app"}}',
    b'{"pullrequest": {"id": 12, "participants": "all"}, "repository": {"full_name": "t/a"},'
    b' "approval": {"user": 5}, "comment": {"id": 9, "created_on": 4}}',
    b"[" * 100_000,
]


@pytest.mark.parametrize("body", STRANGE_BODIES)
@pytest.mark.parametrize(
    ("parse", "event_header", "events"),
    [
        (github_webhooks.parse_webhook, "x-github-event", github_webhooks._HANDLERS),
        (bitbucket_webhooks.parse_webhook, "x-event-key", bitbucket_webhooks._KEYS),
    ],
)
def test_malformed_deliveries_give_no_event_and_never_raise(
    parse: Any, event_header: str, events: Any, body: bytes
) -> None:
    for name in events:
        results = parse({event_header: name, "content-type": "application/json"}, body)
        # only a delivery with a real pull request number and repository gives events
        for event in results:
            assert event.pr_id > 0 and "/" in (event.ref.repo_key or "")


def test_the_plugins_offer_their_parser() -> None:
    github_plugin = create_github({"token": "ghp_ParserTokenZq8mW3nR5tY7uI9oP1a"})
    bitbucket_plugin = create_bitbucket({"token": "ATBBParserTokenZq8mW3nR5tY7uI9oP"})
    assert isinstance(github_plugin, WebhookParser)
    assert isinstance(bitbucket_plugin, WebhookParser)
    body = json.dumps(review("approved")).encode()
    assert github_plugin.parse_webhook({"x-github-event": "pull_request_review"}, body)


@pytest.mark.parametrize(
    ("job_repo", "matches"),
    [
        ("acme/svc", True),
        ("ACME/Svc", True),
        ("svc", True),
        ("https://github.com/acme/svc.git", True),
        ("git@github.com:acme/svc.git", True),
        ("other/svc", False),
        ("acme/svc2", False),
        ("", False),
    ],
)
def test_a_jobs_repository_names_the_deliverys(job_repo: str, matches: bool) -> None:
    assert repo_names_match(job_repo, "acme/svc") is matches
