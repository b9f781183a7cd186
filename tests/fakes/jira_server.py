"""A loopback fake of the Jira Cloud REST API (v3, and v2 for Data Center clients).

A real HTTP/1.1 server on 127.0.0.1 (`TrackerServer` of `tests/fakes/http_server.py`,
listening as soon as `async with FakeJira()` returns). It keeps issues, comments
(stored as ADF), a workflow of statuses and transitions, and answers the documented
endpoints with Jira's JSON shapes and status codes:

    GET  /rest/api/{2,3}/myself
    GET  /rest/api/{2,3}/project/{key}
    GET  /rest/api/{2,3}/issue/{key}?fields=…          (embeds the first comments)
    GET  /rest/api/{2,3}/issue/{key}/comment?startAt&maxResults&orderBy
    POST /rest/api/{2,3}/issue/{key}/comment          (v3: ADF body, v2: string)
    GET  /rest/api/{2,3}/issue/{key}/transitions
    POST /rest/api/{2,3}/issue/{key}/transitions      (204; 400 for an invalid id or a
                                                       missing required field)
    GET  /rest/api/3/issue/{key}/changelog?startAt&maxResults      (oldest first)
    POST /rest/api/3/search/jql   {jql, fields, expand: "changelog", maxResults,
                                   nextPageToken}       (the enhanced search)
    POST /rest/api/2/search       {jql, fields, expand: ["changelog"], startAt,
                                   maxResults}

Time is the fake's own clock: every change (a comment, a transition, `move`,
`add_labels`, `assign_to`) happens one minute after the one before (from
2024-03-01T09:00Z), bumps the issue's `updated` and records a changelog history (status,
labels, assignee items as Jira writes them); every answer's `Date` is half a minute
after the latest change. The searches understand the JQL the trigger feed sends:
`project = KEY` (or `project in (A, B)`), `AND updated >= "yyyy/MM/dd HH:mm"` in the
account's time zone (Europe/Berlin) and `ORDER BY updated ASC|DESC`; other JQL is a 400
as Jira answers it. An issue found by a search embeds its newest `embedded_histories`
changelog histories, the rest is on `/changelog`.

Errors use `{"errorMessages": [...], "errors": {...}}`. A wrong credential gets 401
(`text/plain`, `X-Seraph-LoginReason: AUTHENTICATED_FAILED`), `rate_limit_retry_after`
makes every request a 429 with `Retry-After`, and `respond_once` scripts a raw answer
for the next matching request. Every request is recorded:

    async with FakeJira(email="dev@example.com", api_token="tok") as jira:
        jira.add_issue("PROJ-1", "Fix login", description=adf_doc, status="To Do")
        ...  # point the plugin at jira.base_url
        assert jira.requests[-1].path == "/rest/api/3/issue/PROJ-1/transitions"
"""

from __future__ import annotations

import base64
import email.utils
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.fakes.http_server import Answer, RecordedRequest, TrackerServer

#: the fake's clock starts here; change n happens n minutes later
EPOCH = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
#: the account's time zone (what `/myself` says, and what JQL dates are read in)
TIME_ZONE = "Europe/Berlin"
_JQL = re.compile(
    r'^project\s*(?:=\s*"?(?P<one>[A-Z][A-Z0-9_]*)"?|in\s*\((?P<many>[^)]*)\))'
    r'(?:\s+AND\s+updated\s*>=\s*"(?P<since>\d{4}/\d{2}/\d{2} \d{2}:\d{2})")?'
    r"(?:\s+ORDER\s+BY\s+updated(?:\s+(?P<order>ASC|DESC))?)?\s*$",
    re.IGNORECASE,
)

# --- state ----------------------------------------------------------------------------


@dataclass
class Account:
    account_id: str
    display_name: str
    email: str = ""

    def json(self, base: str) -> dict[str, Any]:
        return {
            "self": f"{base}/rest/api/3/user?accountId={self.account_id}",
            "accountId": self.account_id,
            "emailAddress": self.email,
            "displayName": self.display_name,
            "active": True,
            "timeZone": TIME_ZONE,
            "accountType": "atlassian",
        }


@dataclass
class FakeComment:
    id: str
    author: Account
    body: dict[str, Any]  # ADF
    created: str


@dataclass
class FakeHistory:
    """One changelog entry: who changed which fields when."""

    id: str
    author: Account
    created: str
    items: list[dict[str, Any]]


@dataclass
class FakeIssue:
    id: str
    key: str
    summary: str
    description: dict[str, Any] | None  # ADF
    status: str
    issue_type: str = "Task"
    assignee: Account | None = None
    labels: list[str] = field(default_factory=list)
    comments: list[FakeComment] = field(default_factory=list)
    histories: list[FakeHistory] = field(default_factory=list)
    updated: str = "2024-03-01T08:00:00.000+0000"


@dataclass(frozen=True)
class WorkflowTransition:
    id: str
    name: str
    to: str
    required_fields: tuple[str, ...] = ()  # the transition screen requires these


def default_workflow() -> dict[str, list[WorkflowTransition]]:
    done = WorkflowTransition("31", "Done", "Done")
    reopen = WorkflowTransition("71", "Reopen", "To Do")
    return {
        "To Do": [
            WorkflowTransition("11", "Start Progress", "In Progress"),
            done,
            WorkflowTransition("41", "Won't Do", "Won't Do", required_fields=("resolution",)),
        ],
        "In Progress": [
            WorkflowTransition("21", "Stop Progress", "To Do"),
            WorkflowTransition("51", "Send to Review", "In Review"),
            done,
        ],
        "In Review": [WorkflowTransition("61", "Request Changes", "In Progress"), done],
        "Done": [reopen],
        "Won't Do": [reopen],
    }


_CATEGORIES = {
    "To Do": ("new", "To Do", 2),
    "Done": ("done", "Done", 3),
    "Won't Do": ("done", "Done", 3),
}


# --- the server -----------------------------------------------------------------------


class FakeJira(TrackerServer):
    json_type = "application/json;charset=UTF-8"

    def __init__(
        self,
        *,
        email: str = "dev@example.com",
        api_token: str | None = "jira-api-token",
        bearer_token: str | None = None,
        display_name: str = "Dev Example",
        embedded_comments: int = 5,
        comment_page_max: int = 50,
        login_reason_header: bool = True,
        embedded_histories: int = 100,
    ) -> None:
        super().__init__()
        self.email = email
        self.api_token = api_token
        self.bearer_token = bearer_token
        self.me = Account("5b10a2844c20165700ede21g", display_name, email)
        self.embedded_comments = embedded_comments
        self.comment_page_max = comment_page_max
        self.login_reason_header = login_reason_header
        self.embedded_histories = embedded_histories
        self.projects: dict[str, str] = {}  # key → name
        self.issues: dict[str, FakeIssue] = {}
        self.workflow = default_workflow()
        self.rate_limit_retry_after: str | None = None  # set: every request gets a 429
        self._ids = 10000
        self._status_ids: dict[str, str] = {}
        self._minutes = 0

    # -- test API --

    def _next_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    def _timestamp(self) -> str:
        """The time of a new change: a minute after the one before."""
        self._minutes += 1
        return self._stamp(self._minutes)

    @staticmethod
    def _stamp(minutes: int) -> str:
        return (EPOCH + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")

    @property
    def now(self) -> datetime:
        """What the fake's clock says (its answers' `Date`)."""
        return EPOCH + timedelta(minutes=self._minutes, seconds=30)

    def account(self, name: str | None) -> Account:
        """The account called `name` (the signed-in one for None)."""
        return Account(f"acc-{name.lower().replace(' ', '-')}", name) if name else self.me

    def move(self, key: str, status: str, *, by: str | None = None) -> FakeHistory:
        """`by` moves the issue to `status` (as a transition on the board does)."""
        issue = self.issues[key]
        item = {
            "field": "status",
            "fieldtype": "jira",
            "fieldId": "status",
            "from": self._status_json(issue.status)["id"],
            "fromString": issue.status,
            "to": self._status_json(status)["id"],
            "toString": status,
        }
        issue.status = status
        return self._history(issue, by, [item])

    def add_labels(self, key: str, *labels: str, by: str | None = None) -> FakeHistory:
        issue = self.issues[key]
        before = " ".join(issue.labels)
        issue.labels += [label for label in labels if label not in issue.labels]
        item = {
            "field": "labels",
            "fieldtype": "jira",
            "fieldId": "labels",
            "from": None,
            "fromString": before,
            "to": None,
            "toString": " ".join(issue.labels),
        }
        return self._history(issue, by, [item])

    def assign_to(self, key: str, name: str, *, by: str | None = None) -> FakeHistory:
        issue = self.issues[key]
        old, new = issue.assignee, self.account(name)
        item = {
            "field": "assignee",
            "fieldtype": "jira",
            "fieldId": "assignee",
            "from": old.account_id if old else None,
            "fromString": old.display_name if old else None,
            "to": new.account_id,
            "toString": new.display_name,
        }
        issue.assignee = new
        return self._history(issue, by, [item])

    def _history(
        self, issue: FakeIssue, by: str | None, items: list[dict[str, Any]]
    ) -> FakeHistory:
        stamp = self._timestamp()
        history = FakeHistory(self._next_id(), self.account(by), stamp, items)
        issue.histories.append(history)
        issue.updated = stamp
        return history

    def add_issue(
        self,
        key: str,
        summary: str,
        *,
        description: dict[str, Any] | None = None,
        status: str = "To Do",
        issue_type: str = "Task",
        assignee: str | None = None,
        labels: list[str] | None = None,
    ) -> FakeIssue:
        project = key.rsplit("-", 1)[0]
        self.projects.setdefault(project, f"Project {project}")
        issue = FakeIssue(
            id=self._next_id(),
            key=key,
            summary=summary,
            description=description,
            status=status,
            issue_type=issue_type,
            assignee=Account(f"acc-{assignee.lower().replace(' ', '-')}", assignee)
            if assignee
            else None,
            labels=list(labels or []),
        )
        issue.updated = self._stamp(self._minutes)
        self.issues[key] = issue
        return issue

    def add_comment(
        self, key: str, body: dict[str, Any] | str, *, author: str | None = None
    ) -> FakeComment:
        adf = body if isinstance(body, dict) else _paragraphs(body)
        comment = FakeComment(self._next_id(), self.account(author), adf, self._timestamp())
        self.issues[key].comments.append(comment)
        self.issues[key].updated = comment.created
        return comment

    # -- routing --

    async def handle(self, request: RecordedRequest) -> Answer:
        if not self._authorised(request.headers):
            extra = {"www-authenticate": 'Basic realm="protected-area"'}
            if self.login_reason_header:
                extra["x-seraph-loginreason"] = "AUTHENTICATED_FAILED"
            return Answer(
                401,
                "Client must be authenticated to access this resource.",
                extra,
                content_type="text/plain;charset=UTF-8",
            )
        scripted = self.take_scripted(request)
        if scripted is not None:
            return scripted
        if self.rate_limit_retry_after is not None:
            return Answer(
                429,
                {"errorMessages": ["Rate limit exceeded."], "errors": {}},
                {"retry-after": self.rate_limit_retry_after, "x-ratelimit-remaining": "0"},
            )
        match = re.match(r"^/rest/api/(2|3)(/.*)$", request.path)
        if match is None:
            return Answer(404, _errors(f"null for uri: {self.base_url}{request.path}"))
        version = int(match.group(1))
        route = match.group(2)
        status, payload = self._route(version, request.method, route, request.query, request.body)
        return Answer(status, payload)

    def server_headers(self) -> dict[str, str]:
        return {
            "date": email.utils.format_datetime(self.now, usegmt=True),
            "x-arequestid": f"fake-{len(self.requests)}",
        }

    def _authorised(self, headers: dict[str, str]) -> bool:
        presented = headers.get("authorization", "")
        if self.bearer_token is not None and presented == f"Bearer {self.bearer_token}":
            return True
        if self.api_token is not None:
            expected = base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
            return presented == f"Basic {expected}"
        return False

    def _route(
        self, version: int, method: str, route: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if route == "/myself" and method == "GET":
            return 200, self.me.json(self.base_url)
        if (route, method, version) in (("/search/jql", "POST", 3), ("/search", "POST", 2)):
            return self._search(version, body)
        if (found := re.match(r"^/project/([^/]+)$", route)) and method == "GET":
            key = found.group(1).upper()
            if key not in self.projects:
                return 404, _errors(f"No project could be found with key '{found.group(1)}'.")
            return 200, {"id": "10000", "key": key, "name": self.projects[key]}
        found = re.match(r"^/issue/([^/]+)(/comment|/transitions|/changelog)?$", route)
        if found is None:
            return 404, _errors(f"null for uri: {self.base_url}/rest/api/{version}{route}")
        issue = self.issues.get(found.group(1).upper())
        if issue is None:
            return 404, _errors("Issue does not exist or you do not have permission to see it.")
        sub = found.group(2)
        if sub is None and method == "GET":
            return 200, self._issue_json(issue, version, query.get("fields"))
        if sub == "/comment" and method == "GET":
            return 200, self._comment_page(issue, version, query)
        if sub == "/changelog" and method == "GET" and version >= 3:
            return 200, self._changelog_page(issue, query)
        if sub == "/comment" and method == "POST":
            return self._post_comment(issue, version, body)
        if sub == "/transitions" and method == "GET":
            return 200, {
                "expand": "transitions",
                "transitions": [self._transition_json(t) for t in self._available(issue)],
            }
        if sub == "/transitions" and method == "POST":
            return self._do_transition(issue, body)
        return 405, _errors(f"Method {method} is not allowed here.")

    # -- resources --

    def _available(self, issue: FakeIssue) -> list[WorkflowTransition]:
        return list(self.workflow.get(issue.status, []))

    def _status_json(self, name: str) -> dict[str, Any]:
        status_id = self._status_ids.setdefault(name, str(10000 + len(self._status_ids)))
        key, label, category_id = _CATEGORIES.get(name, ("indeterminate", "In Progress", 4))
        return {
            "self": f"{self.base_url}/rest/api/3/status/{status_id}",
            "description": "",
            "iconUrl": f"{self.base_url}/images/icons/statuses/generic.png",
            "name": name,
            "id": status_id,
            "statusCategory": {"id": category_id, "key": key, "name": label},
        }

    def _transition_json(self, transition: WorkflowTransition) -> dict[str, Any]:
        return {
            "id": transition.id,
            "name": transition.name,
            "to": self._status_json(transition.to),
            "hasScreen": bool(transition.required_fields),
            "isGlobal": False,
            "isInitial": False,
            "isAvailable": True,
            "isConditional": False,
            "isLooped": False,
        }

    def _comment_json(self, issue: FakeIssue, comment: FakeComment, version: int) -> dict[str, Any]:
        return {
            "self": f"{self.base_url}/rest/api/{version}/issue/{issue.id}/comment/{comment.id}",
            "id": comment.id,
            "author": comment.author.json(self.base_url),
            "body": comment.body if version >= 3 else _plain(comment.body),
            "updateAuthor": comment.author.json(self.base_url),
            "created": comment.created,
            "updated": comment.created,
            "jsdPublic": True,
        }

    def _issue_json(self, issue: FakeIssue, version: int, fields: str | None) -> dict[str, Any]:
        wanted = set(fields.split(",")) if fields else None
        shown = issue.comments[: self.embedded_comments]
        every: dict[str, Any] = {
            "summary": issue.summary,
            "description": issue.description
            if version >= 3 or issue.description is None
            else _plain(issue.description),
            "status": self._status_json(issue.status),
            "issuetype": {"id": "10001", "name": issue.issue_type, "subtask": False},
            "assignee": issue.assignee.json(self.base_url) if issue.assignee else None,
            "labels": list(issue.labels),
            "updated": issue.updated,
            "comment": {
                "comments": [self._comment_json(issue, c, version) for c in shown],
                "self": f"{self.base_url}/rest/api/{version}/issue/{issue.id}/comment",
                "maxResults": len(shown),
                "total": len(issue.comments),
                "startAt": 0,
            },
        }
        return {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog",
            "id": issue.id,
            "self": f"{self.base_url}/rest/api/{version}/issue/{issue.id}",
            "key": issue.key,
            "fields": {k: v for k, v in every.items() if wanted is None or k in wanted},
        }

    def _comment_page(self, issue: FakeIssue, version: int, query: dict[str, str]) -> Any:
        start = max(int(query.get("startAt", "0") or 0), 0)
        size = min(max(int(query.get("maxResults", "5000") or 0), 0), self.comment_page_max)
        ordered = list(issue.comments)
        if query.get("orderBy") == "-created":
            ordered.reverse()
        page = ordered[start : start + size]
        return {
            "comments": [self._comment_json(issue, c, version) for c in page],
            "maxResults": size,
            "total": len(ordered),
            "startAt": start,
        }

    def _post_comment(self, issue: FakeIssue, version: int, body: Any) -> tuple[int, Any]:
        raw = body.get("body") if isinstance(body, dict) else None
        if version >= 3:
            if not isinstance(raw, dict):
                return 400, _errors(errors={"comment": "Comment body is not valid!"})
            problem = adf_problem(raw)
            if problem == "empty":
                return 400, _errors(errors={"comment": "Comment body can not be empty!"})
            if problem:
                return 400, _errors("INVALID_INPUT", errors={"comment": problem})
            adf = raw
        else:
            if not isinstance(raw, str) or not raw.strip():
                return 400, _errors(errors={"comment": "Comment body can not be empty!"})
            adf = _paragraphs(raw)
        comment = FakeComment(self._next_id(), self.me, adf, self._timestamp())
        issue.comments.append(comment)
        return 201, self._comment_json(issue, comment, version)

    def _do_transition(self, issue: FakeIssue, body: Any) -> tuple[int, Any]:
        transition = body.get("transition") if isinstance(body, dict) else None
        wanted = transition.get("id") if isinstance(transition, dict) else None
        if not isinstance(wanted, str | int):
            return 400, _errors("Missing 'transition' identifier.")
        chosen = next((t for t in self._available(issue) if t.id == str(wanted)), None)
        if chosen is None:
            return 400, _errors(f"Transition id '{wanted}' is not valid for this issue.")
        given = body.get("fields") if isinstance(body.get("fields"), dict) else {}
        missing = [name for name in chosen.required_fields if name not in given]
        if missing:
            return 400, _errors(errors={name: f"{name.title()} is required." for name in missing})
        self.move(issue.key, chosen.to)
        return 204, None

    # -- search --

    def _search(self, version: int, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("jql"), str):
            return 400, _errors("The JQL query is missing.")
        found = _JQL.match(body["jql"].strip())
        if found is None:
            return 400, _errors(f"Error in the JQL Query: cannot parse {body['jql']!r}.")
        projects = {
            p.strip().strip('"').upper()
            for p in (found.group("one") or found.group("many") or "").split(",")
            if p.strip()
        }
        since: datetime | None = None
        if found.group("since"):
            local = datetime.strptime(found.group("since"), "%Y/%m/%d %H:%M")
            since = local.replace(tzinfo=ZoneInfo(TIME_ZONE)).astimezone(UTC)
        hits = [
            issue
            for issue in self.issues.values()
            if issue.key.rsplit("-", 1)[0] in projects
            and (since is None or _parse(issue.updated) >= since)
        ]
        hits.sort(key=lambda i: (_parse(i.updated), int(i.id)))
        if (found.group("order") or "ASC").upper() == "DESC":
            hits.reverse()
        fields = body.get("fields")
        wanted = ",".join(fields) if isinstance(fields, list) else None
        expand = body.get("expand")
        changelog = "changelog" in (expand if isinstance(expand, list) else str(expand or ""))
        size = min(max(int(body.get("maxResults") or 50), 1), 100)
        if version >= 3:
            token = body.get("nextPageToken")
            start = int(token) if isinstance(token, str) and token.isdigit() else 0
        else:
            start = max(int(body.get("startAt") or 0), 0)
        page = hits[start : start + size]
        issues = [self._found_json(i, version, wanted, changelog) for i in page]
        if version >= 3:
            result: dict[str, Any] = {"issues": issues, "isLast": start + size >= len(hits)}
            if start + size < len(hits):
                result["nextPageToken"] = str(start + size)
            return 200, result
        return 200, {"startAt": start, "maxResults": size, "total": len(hits), "issues": issues}

    def _found_json(
        self, issue: FakeIssue, version: int, fields: str | None, changelog: bool
    ) -> dict[str, Any]:
        data = self._issue_json(issue, version, fields)
        if changelog:
            newest = list(reversed(issue.histories))[: self.embedded_histories]
            data["changelog"] = {
                "startAt": 0,
                "maxResults": len(newest),
                "total": len(issue.histories),
                "histories": [self._history_json(h) for h in newest],
            }
        return data

    def _history_json(self, history: FakeHistory) -> dict[str, Any]:
        return {
            "id": history.id,
            "author": history.author.json(self.base_url),
            "created": history.created,
            "items": history.items,
        }

    def _changelog_page(self, issue: FakeIssue, query: dict[str, str]) -> Any:
        start = max(int(query.get("startAt", "0") or 0), 0)
        size = min(max(int(query.get("maxResults", "100") or 100), 1), 100)
        page = issue.histories[start : start + size]
        return {
            "self": f"{self.base_url}/rest/api/3/issue/{issue.key}/changelog",
            "maxResults": size,
            "startAt": start,
            "total": len(issue.histories),
            "isLast": start + size >= len(issue.histories),
            "values": [self._history_json(h) for h in page],
        }


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")


def _errors(*messages: str, errors: dict[str, str] | None = None) -> dict[str, Any]:
    return {"errorMessages": list(messages), "errors": dict(errors or {})}


def _paragraphs(text: str) -> dict[str, Any]:
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": part}]}
            for part in text.split("\n\n")
            if part
        ],
    }


def _plain(node: Any) -> str:
    """A crude wiki-ish rendering of ADF, as REST v2 returns bodies as strings."""
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    if node.get("type") == "hardBreak":
        return "\n"
    parts = [_plain(child) for child in node.get("content", []) or []]
    joiner = "" if node.get("type") in ("paragraph", "heading") else "\n"
    return joiner.join(parts)


_BLOCKS = {
    "paragraph",
    "heading",
    "bulletList",
    "orderedList",
    "listItem",
    "codeBlock",
    "blockquote",
    "rule",
    "table",
    "tableRow",
    "tableHeader",
    "tableCell",
    "panel",
    "mediaSingle",
    "media",
}
_INLINES = {"text", "hardBreak", "mention", "emoji", "inlineCard", "date", "status"}
_MARKS = {"code", "em", "link", "strike", "strong", "subsup", "textColor", "underline"}


def adf_problem(doc: dict[str, Any]) -> str | None:
    """Why `doc` is not a valid ADF document ("empty" for one without content)."""
    if doc.get("type") != "doc" or doc.get("version") != 1:
        return "Comment body is not valid! (expected a doc of version 1)"
    content = doc.get("content")
    if not isinstance(content, list):
        return "Comment body is not valid! (doc.content must be a list)"
    if not content:
        return "empty"

    def check(node: Any, where: str) -> str | None:
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            return f"{where}: not a node"
        kind = node["type"]
        if kind not in _BLOCKS and kind not in _INLINES:
            return f"{where}: unknown node type {kind!r}"
        if kind == "text":
            if not isinstance(node.get("text"), str) or not node["text"]:
                return f"{where}: text nodes must not be empty"
            for mark in node.get("marks", []) or []:
                if not isinstance(mark, dict) or mark.get("type") not in _MARKS:
                    return f"{where}: invalid mark"
                if mark["type"] == "link" and not (mark.get("attrs") or {}).get("href"):
                    return f"{where}: link without href"
        children = node.get("content", [])
        if not isinstance(children, list):
            return f"{where}: content must be a list"
        if kind == "listItem" and (
            not children or children[0].get("type") not in ("paragraph", "codeBlock")
        ):
            return f"{where}: a list item must start with a paragraph"
        if kind in ("bulletList", "orderedList") and any(
            not isinstance(c, dict) or c.get("type") != "listItem" for c in children
        ):
            return f"{where}: lists hold list items"
        for index, child in enumerate(children):
            if problem := check(child, f"{where}.content[{index}]"):
                return problem
        return None

    for index, node in enumerate(content):
        if problem := check(node, f"content[{index}]"):
            return f"Comment body is not valid! ({problem})"
    return None
