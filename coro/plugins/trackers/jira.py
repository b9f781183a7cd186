"""The `jira` tracker: Jira Cloud REST v3 (or Data Center REST v2) over httpx.

Settings (`plugins.installed.jira.config`, camelCase):

* `baseUrl` — `https://<site>.atlassian.net` (Data Center: the site URL, context path
  included). `http://` only for loopback hosts unless `allowInsecureHttp` is set.
* `email` + `apiToken` — Basic auth (Jira Cloud), or `bearerToken` — a Data Center
  personal access token. Exactly one of the two.
* `apiVersion` — 3 (ADF bodies) or 2 (plain-text bodies); default 3, or 2 with a
  `bearerToken` (Data Center has no v3).
* `defaultProject` — lets keys be given as bare numbers (`123` → `PROJ-123`).
* `timeoutSeconds` — per request (default 30).

Operations: `get_issue` (summary, ADF description as text, status, type, assignee,
labels and every comment — the issue embeds the first page, the rest is read from
`/comment` with `startAt`/`maxResults`/`total`), `comment` (text → ADF), `transitions`,
`transition` (by transition name, target status name or id, case-insensitively; an
issue already in the requested status is left alone), `test_connection` (`/myself`,
and the default project when set).

It is a trigger feed (`TriggerFeed`, polled by `coro.engine.triggers`): per project, a
JQL search `project = "PROJ" AND updated >= "<since>" ORDER BY updated ASC` with the
changelog expanded (`POST /rest/api/3/search/jql` with `nextPageToken`; REST v2:
`POST /rest/api/2/search` with `startAt`), whose histories give status changes
(`issue.transitioned`), labels added and assignments at or after `since`, and whose
comments give the new ones (an issue's further changelog and comment pages are read
when the search holds only the first). JQL compares minutes in the account's time zone
(`/myself`), so the search starts at that minute and what is older than `since` is
dropped here. A new watch starts at the `Date` of Jira's answer for the project.

Errors: 401/403 → `PluginAuthError`, 404 → `PluginNotFoundError`, 429 (and 503 with
`Retry-After`) → `PluginRateLimited`, anything else → `PluginError` with Jira's
`errorMessages`/`errors`. Issue keys are validated before any request. Credentials
never appear in a message: every text that leaves this module is scrubbed.

In the team cloud its events come as webhooks (`WEBHOOK`: an admin webhook with a
secret, which Jira signs as `X-Hub-Signature: sha256=<hex>`), read by
`coro.plugins.trackers.jira_webhooks` into the same events (and event keys) as this
feed's: `jira:issue_updated` with its changelog, `comment_created`.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC, timedelta, tzinfo
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from coro.domain.errors import (
    PluginAuthError,
    PluginError,
    PluginNotFoundError,
    PluginRateLimited,
)
from coro.plugins.context import PluginContext
from coro.plugins.http import (
    TrackerHttp,
    body_excerpt,
    check_secret,
    is_loopback,
    json_or_none,
    normalize_base_url,
    parse_config,
    parse_retry_after,
    wait_or_fallback,
)
from coro.plugins.scm.base import ConnectionCheck
from coro.plugins.trackers.adf import adf_to_text, text_to_adf
from coro.plugins.trackers.base import (
    FeedPage,
    Issue,
    TrackerComment,
    Transition,
    TriggerEvent,
    date_header_time,
    feed_iso,
    feed_time,
)
from coro.plugins.trackers.jira_events import (
    FeedIssue,
    comment_event,
    history_events,
    iso_timestamp,
    person,
    text_field,
)

logger = logging.getLogger(__name__)

PLUGIN_ID = "jira"
#: How Jira signs the deliveries of a webhook with a secret (a Jira admin's webhook:
#: HMAC-SHA256 of the raw body in `X-Hub-Signature`, WebSub style), and what reads their
#: trigger events.
WEBHOOK: dict[str, Any] = {
    "algorithm": "hmac-sha256",
    "header": "X-Hub-Signature",
    "format": "sha256=<hex>",
    "deliveryIdHeader": "X-Atlassian-Webhook-Identifier",
    "eventField": "webhookEvent",
    "triggerParser": "coro.plugins.trackers.jira_webhooks:parse_trigger_webhook",
}
USER_AGENT = "coro-runner (jira tracker)"
ISSUE_FIELDS = "summary,description,status,issuetype,assignee,labels,comment"
#: Comments asked for per page (Jira may return fewer; we follow what it reports).
COMMENT_PAGE_SIZE = 100
#: A guard against a server that never reaches `total`.
MAX_COMMENT_PAGES = 200
RATE_LIMIT_FALLBACK_SECONDS = 30.0
#: what the trigger feed's search reads of each issue
FEED_FIELDS = ["summary", "description", "status", "labels", "assignee", "comment", "updated"]
FEED_PAGE_SIZE = 50
#: a guard against a search (or a changelog) whose pages never end
MAX_FEED_PAGES = 200
CHANGELOG_PAGE_SIZE = 100

ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9_]+-\d+$")
_PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]+$")
_BROWSE_URL = re.compile(r"/browse/([A-Za-z][A-Za-z0-9_]+-\d+)(?:[/?#]|$)")
_BARE_NUMBER = re.compile(r"^#?(\d+)$")
_LOGIN_FAILED = frozenset({"AUTHENTICATED_FAILED", "AUTHENTICATION_DENIED"})


# --- settings -------------------------------------------------------------------------


class JiraSettings(BaseModel):
    """`plugins.installed.jira.config` (camelCase in config.json)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    base_url: str
    email: str | None = None
    api_token: SecretStr | None = None
    bearer_token: SecretStr | None = None
    api_version: Literal[2, 3] | None = None
    default_project: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    allow_insecure_http: bool = False

    @field_validator("base_url")
    @classmethod
    def _site_url(cls, value: str) -> str:
        return normalize_base_url(value, strip_suffix=r"/rest/api/(?:2|3|latest)")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or any(ch.isspace() for ch in value) or ":" in value:
            raise ValueError("must be the account's email address")
        return value

    @field_validator("api_token", "bearer_token")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else check_secret(value)

    @field_validator("default_project")
    @classmethod
    def _project_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if not _PROJECT_KEY.match(value):
            raise ValueError("must be a Jira project key such as PROJ")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> JiraSettings:
        if self.api_token is not None and self.bearer_token is not None:
            raise ValueError("set either email + apiToken (Jira Cloud) or bearerToken, not both")
        if self.api_token is None and self.bearer_token is None:
            raise ValueError(
                "email + apiToken (Jira Cloud) or bearerToken (Data Center) is required"
            )
        if self.api_token is not None and not self.email:
            raise ValueError("email is required with apiToken")
        url = urlsplit(self.base_url)
        if url.scheme == "http" and not self.allow_insecure_http and not is_loopback(url.hostname):
            raise ValueError(
                "baseUrl must use https:// (plain http:// sends the credentials unencrypted; "
                "set allowInsecureHttp to accept that)"
            )
        return self

    @property
    def effective_api_version(self) -> int:
        if self.api_version is not None:
            return self.api_version
        return 2 if self.bearer_token is not None else 3


def create(settings: dict[str, Any], context: PluginContext | None = None) -> JiraTracker:
    """The tracker for `plugins.installed.jira.config`; `PluginConfigError` names the
    failing fields, never their values."""
    return JiraTracker(parse_config(JiraSettings, settings))


# --- the plugin -----------------------------------------------------------------------


class JiraTracker:
    id = PLUGIN_ID

    def __init__(self, settings: JiraSettings) -> None:
        self.settings = settings
        self.base_url = settings.base_url
        self.api_version = settings.effective_api_version
        self._api = f"{self.base_url}/rest/api/{self.api_version}"
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        auth: httpx.Auth | None = None
        secrets: list[str] = []
        if settings.api_token is not None:
            token = settings.api_token.get_secret_value()
            basic = f"{settings.email}:{token}".encode()
            secrets += [token, base64.b64encode(basic).decode()]
        if settings.bearer_token is not None:
            secrets.append(settings.bearer_token.get_secret_value())
            headers["Authorization"] = f"Bearer {settings.bearer_token.get_secret_value()}"
        elif settings.api_token is not None:
            auth = httpx.BasicAuth(settings.email or "", settings.api_token.get_secret_value())
        self._http = TrackerHttp(
            "Jira",
            self.base_url,
            headers=headers,
            auth=auth,
            timeout_seconds=settings.timeout_seconds,
            secrets=secrets,
        )
        #: the account's time zone, which JQL dates are in (read once)
        self._zone: tzinfo | None = None

    def __repr__(self) -> str:
        return f"JiraTracker(base_url={self.base_url!r}, api_version={self.api_version})"

    # -- plumbing --

    async def aclose(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        await self._http.aclose()

    def scrub(self, text: str) -> str:
        """`text` without the credentials (raw or Basic-encoded)."""
        return self._http.scrub(text)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        issue: str | None = None,
        params: dict[str, str | int] | None = None,
        body: Any = None,
    ) -> Any:
        """The parsed JSON of a successful response (None for an empty one); every
        failure is a `PluginError` whose message is safe to show."""
        response = await self._response(
            method, path, what=what, issue=issue, params=params, body=body
        )
        if response.status_code == 204 or not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "unknown content type").split(";")[0]
            raise PluginError(
                f"Jira sent a response that is not JSON ({what}, HTTP "
                f"{response.status_code}, {kind}); is {self.base_url} the Jira site?",
                status=response.status_code,
            ) from None

    async def _response(
        self,
        method: str,
        path: str,
        *,
        what: str,
        issue: str | None = None,
        params: dict[str, str | int] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """A successful response; every failure is a `PluginError`."""
        response = await self._http.request(
            method, f"{self._api}{path}", what=what, params=params, json=body
        )
        status = response.status_code
        logger.debug("jira %s %s -> %s", method, path, status)
        reason = response.headers.get("x-seraph-loginreason", "").upper()
        if any(part.strip() in _LOGIN_FAILED for part in reason.split(",")):
            raise PluginAuthError(
                f"Jira rejected the credentials ({what}): login failed"
                + (
                    " and a CAPTCHA is now required — sign in once in a browser"
                    if "AUTHENTICATION_DENIED" in reason
                    else ""
                )
                + ". Check email and apiToken (or bearerToken).",
                status=status,
            )
        if status >= 400:
            raise self._error(response, what, issue)
        if 300 <= status < 400:
            raise self._http.redirect_error(response, what, f"; check baseUrl ({self.base_url}).")
        return response

    def _error(self, response: httpx.Response, what: str, issue: str | None) -> PluginError:
        status = response.status_code
        detail = self.scrub(_jira_error_detail(response))
        suffix = f": {detail}" if detail else ""
        if status == 401:
            return PluginAuthError(
                f"Jira rejected the credentials (HTTP 401) while {what}. Check email and "
                "apiToken (or bearerToken) and that the token has not expired.",
                status=status,
            )
        if status == 403:
            return PluginAuthError(
                f"Jira rejected the credentials or their permissions (HTTP 403) while "
                f"{what}{suffix or ': the account lacks the permission'}.",
                status=status,
            )
        if status == 404:
            if issue is not None:
                return PluginNotFoundError(
                    f"Jira issue {issue} does not exist or this account cannot see it.",
                    status=status,
                )
            return PluginNotFoundError(
                f"Jira answered 404 Not Found while {what}{suffix}; check baseUrl "
                f"({self.base_url}).",
                status=status,
            )
        if status == 429 or (status == 503 and "retry-after" in response.headers):
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            return PluginRateLimited(
                f"Jira rate limit reached while {what}; retry in {retry_after:g}s.",
                retry_after=retry_after,
                status=status,
            )
        if status >= 500:
            return PluginError(
                f"Jira failed while {what} (HTTP {status}){suffix}; try again later.",
                status=status,
            )
        return PluginError(f"Jira refused {what} (HTTP {status}){suffix}", status=status)

    # -- keys --

    def normalize_key(self, key: str) -> str:
        """`PROJ-12` from `PROJ-12`, `proj-12`, a browse URL, or `12` / `#12` with
        `defaultProject`; `PluginError` (before any request) for anything else."""
        if not isinstance(key, str):
            raise PluginError("A Jira issue key must be text such as PROJ-123.")
        candidate = key.strip()
        if match := _BROWSE_URL.search(candidate):
            candidate = match.group(1)
        candidate = candidate.upper()
        if (number := _BARE_NUMBER.match(candidate)) and self.settings.default_project:
            candidate = f"{self.settings.default_project}-{number.group(1)}"
        if len(candidate) > 64 or not ISSUE_KEY.match(candidate):
            shown = self.scrub(key.strip())[:64]
            hint = "" if self.settings.default_project else " (no defaultProject is configured)"
            if _BARE_NUMBER.match(key.strip()):
                raise PluginError(f"Not a Jira issue key: {shown!r}{hint}; expected e.g. PROJ-123.")
            raise PluginError(f"Not a Jira issue key: {shown!r}; expected e.g. PROJ-123.")
        return candidate

    # -- operations --

    async def get_issue(self, key: str) -> Issue:
        key = self.normalize_key(key)
        data = _object(
            await self._call(
                "GET",
                f"/issue/{key}",
                what=f"reading issue {key}",
                issue=key,
                params={"fields": ISSUE_FIELDS},
            ),
            f"issue {key}",
        )
        fields = _object(data.get("fields"), f"the fields of issue {key}")
        actual_key = data.get("key")
        if isinstance(actual_key, str) and ISSUE_KEY.match(actual_key):
            key = actual_key  # the issue may have moved to another project
        comments = await self._comments(key, fields.get("comment"))
        labels = fields.get("labels")
        return Issue(
            key=key,
            title=text_field(fields.get("summary")),
            description=adf_to_text(fields.get("description")),
            status=_name(fields.get("status")) or "unknown",
            url=f"{self.base_url}/browse/{key}",
            issue_type=_name(fields.get("issuetype")),
            assignee=person(fields.get("assignee")),
            labels=[label for label in labels if isinstance(label, str)]
            if isinstance(labels, list)
            else [],
            comments=comments,
        )

    async def list_comments(self, key: str) -> list[TrackerComment]:
        """Every comment of the issue, oldest first."""
        key = self.normalize_key(key)
        return await self._comments(key, None)

    async def _comments(self, key: str, embedded: Any) -> list[TrackerComment]:
        collected: dict[str, TrackerComment] = {}
        for raw in await self._raw_comments(key, embedded):
            comment = self._comment(raw, key)
            collected.setdefault(comment.id, comment)
        return list(collected.values())

    async def _raw_comments(self, key: str, embedded: Any) -> list[Any]:
        """Every comment of the issue as Jira sent it: the page the issue embeds, then
        the rest from `/comment`."""
        found: list[Any] = []
        total: int | None = None
        start = 0
        if isinstance(embedded, Mapping) and isinstance(embedded.get("comments"), list):
            page = embedded["comments"]
            found.extend(page)
            total = _int(embedded.get("total"))
            start = (_int(embedded.get("startAt")) or 0) + len(page)
            if total is None:
                return found
        for _ in range(MAX_COMMENT_PAGES):
            if total is not None and start >= total:
                break
            data = _object(
                await self._call(
                    "GET",
                    f"/issue/{key}/comment",
                    what=f"reading the comments of {key}",
                    issue=key,
                    params={
                        "startAt": start,
                        "maxResults": COMMENT_PAGE_SIZE,
                        "orderBy": "created",
                    },
                ),
                f"the comments of {key}",
            )
            page = data.get("comments")
            if not isinstance(page, list):
                raise PluginError(
                    f"Jira sent an unexpected response for the comments of {key}: "
                    "no 'comments' list."
                )
            found.extend(page)
            total = _int(data.get("total"))
            if not page or total is None:
                break
            start = (_int(data.get("startAt")) or start) + len(page)
        return found

    def _comment(self, raw: Any, key: str) -> TrackerComment:
        data = _object(raw, f"a comment of {key}")
        comment_id = data.get("id")
        if not isinstance(comment_id, str | int) or isinstance(comment_id, bool):
            raise PluginError(f"Jira sent a comment of {key} without an id.")
        return TrackerComment(
            id=str(comment_id),
            author=person(data.get("author")) or "unknown",
            body=adf_to_text(data.get("body")),
            created_at=iso_timestamp(data.get("created")),
        )

    async def comment(self, key: str, body: str) -> TrackerComment:
        key = self.normalize_key(key)
        if not isinstance(body, str) or not body.strip():
            raise PluginError(f"Refusing to post an empty comment on {key}.")
        payload: Any = text_to_adf(body.strip()) if self.api_version >= 3 else body.strip()
        data = await self._call(
            "POST",
            f"/issue/{key}/comment",
            what=f"posting a comment on {key}",
            issue=key,
            body={"body": payload},
        )
        return self._comment(data, key)

    async def transitions(self, key: str) -> list[Transition]:
        key = self.normalize_key(key)
        return await self._transitions(key)

    async def _transitions(self, key: str) -> list[Transition]:
        data = _object(
            await self._call(
                "GET",
                f"/issue/{key}/transitions",
                what=f"listing the transitions of {key}",
                issue=key,
            ),
            f"the transitions of {key}",
        )
        raw = data.get("transitions")
        if not isinstance(raw, list):
            raise PluginError(
                f"Jira sent an unexpected response for the transitions of {key}: "
                "no 'transitions' list."
            )
        found: list[Transition] = []
        for entry in raw:
            if not isinstance(entry, Mapping) or entry.get("isAvailable") is False:
                continue
            transition_id = entry.get("id")
            if not isinstance(transition_id, str | int) or isinstance(transition_id, bool):
                continue
            name = text_field(entry.get("name")) or str(transition_id)
            found.append(Transition(str(transition_id), name, _name(entry.get("to")) or name))
        return found

    async def transition(self, key: str, to: str) -> Transition:
        """Move the issue by the transition named `to` or to the status named `to`
        (case-insensitively; a transition id works too). An issue already in that
        status is left alone: the result then has an empty `id` and `name`."""
        key = self.normalize_key(key)
        wanted = to.strip() if isinstance(to, str) else ""
        if not wanted:
            raise PluginError(f"Name the status (or transition) to move {key} to.")
        options = await self._transitions(key)
        chosen = _pick(options, wanted)
        if chosen is None:
            current = await self._status(key)
            if current is not None and current.casefold() == wanted.casefold():
                return Transition(id="", name="", to_status=current)
            available = ", ".join(f"{t.name} → {t.to_status}" for t in options) or "none"
            where = f" (now {current})" if current else ""
            raise PluginError(
                f'No Jira transition reaches "{wanted}" from issue {key}\'s current '
                f"state{where}. Available: {available}."
            )
        await self._call(
            "POST",
            f"/issue/{key}/transitions",
            what=f'moving {key} by "{chosen.name}"',
            issue=key,
            body={"transition": {"id": chosen.id}},
        )
        return chosen

    async def _status(self, key: str) -> str | None:
        try:
            data = await self._call(
                "GET",
                f"/issue/{key}",
                what=f"reading the status of {key}",
                issue=key,
                params={"fields": "status"},
            )
        except PluginError:
            return None
        fields = data.get("fields") if isinstance(data, Mapping) else None
        return _name(fields.get("status")) if isinstance(fields, Mapping) else None

    # -- the trigger feed (`TriggerFeed`) --

    def feed_project(self, scope: str) -> str:
        """The project key a watch names (`PROJ`); `PluginError` for anything else."""
        project = scope.strip().upper() if isinstance(scope, str) else ""
        if not _PROJECT_KEY.match(project) or len(project) > 64:
            shown = self.scrub(str(scope))[:64]
            raise PluginError(f"Not a Jira project key: {shown!r}; expected e.g. PROJ.")
        return project

    async def feed_start(self, scope: str) -> str:
        project = self.feed_project(scope)
        response = await self._response(
            "GET", f"/project/{project}", what=f"reading project {project}"
        )
        return feed_iso(date_header_time(response.headers.get("date")))

    async def feed_poll(self, scope: str, since: str) -> FeedPage:
        project = self.feed_project(scope)
        since_at = feed_time(since)
        if since_at is None:
            raise PluginError(f"Not a time to poll {project} from: {since!r}.")
        zone = await self._time_zone()
        # JQL compares whole minutes in the account's zone; unknown zone: a day earlier
        start = since_at if zone is not None else since_at - timedelta(days=1)
        minute = start.astimezone(zone or UTC).strftime("%Y/%m/%d %H:%M")
        jql = f'project = "{project}" AND updated >= "{minute}" ORDER BY updated ASC'
        newest = since_at
        events: list[TriggerEvent] = []
        for raw in await self._search(jql, f"searching {project} for issues updated since {since}"):
            issue = _object(raw, f"an issue of {project}")
            key = issue.get("key")
            fields = issue.get("fields")
            if not isinstance(key, str) or not ISSUE_KEY.match(key) or not isinstance(fields, dict):
                continue
            newest = max(newest, feed_time(iso_timestamp(fields.get("updated"))) or newest)
            thread = FeedIssue(
                key=key,
                project=project,
                title=text_field(fields.get("summary")),
                body=adf_to_text(fields.get("description")),
                url=f"{self.base_url}/browse/{key}",
            )
            for history in await self._histories(key, issue.get("changelog")):
                at = feed_time(iso_timestamp(history.get("created")))
                if at is not None and at >= since_at:
                    newest = max(newest, at)
                    events.extend(history_events(self.id, thread, history, at))
            for comment in await self._raw_comments(key, fields.get("comment")):
                event = comment_event(self.id, thread, comment)
                at = feed_time(event.at) if event is not None else None
                if event is not None and at is not None and at >= since_at:
                    newest = max(newest, at)
                    events.append(event)
        events.sort(key=lambda e: (feed_time(e.at) or since_at, e.event_key))
        return FeedPage(events, feed_iso(newest))

    async def feed_details(self, event: TriggerEvent) -> TriggerEvent:
        return event  # a Jira issue has no branch; the search gave everything else

    async def _time_zone(self) -> tzinfo | None:
        """The account's time zone (JQL dates are in it); None when Jira does not say."""
        if self._zone is None:
            me = await self._call("GET", "/myself", what="reading the account's time zone")
            name = me.get("timeZone") if isinstance(me, Mapping) else None
            try:
                self._zone = ZoneInfo(name) if isinstance(name, str) and name else None
            except (ZoneInfoNotFoundError, ValueError):
                self._zone = None
            if self._zone is None:
                return None
        return self._zone

    async def _search(self, jql: str, what: str) -> list[Any]:
        """Every issue the JQL finds, with its changelog (v3: `nextPageToken`, v2:
        `startAt`)."""
        found: list[Any] = []
        token: str | None = None
        for _ in range(MAX_FEED_PAGES):
            body: dict[str, Any] = {"jql": jql, "fields": FEED_FIELDS, "maxResults": FEED_PAGE_SIZE}
            if self.api_version >= 3:
                body["expand"] = "changelog"
                if token is not None:
                    body["nextPageToken"] = token
                path = "/search/jql"
            else:
                body["expand"] = ["changelog"]
                body["startAt"] = len(found)
                path = "/search"
            data = _object(await self._call("POST", path, what=what, body=body), what)
            page = data.get("issues")
            if not isinstance(page, list):
                raise PluginError(f"Jira sent an unexpected response for {what}: no 'issues' list.")
            found.extend(page)
            if self.api_version >= 3:
                next_token = data.get("nextPageToken")
                if data.get("isLast") is True or not isinstance(next_token, str) or not next_token:
                    break
                token = next_token
            else:
                total = _int(data.get("total"))
                if not page or total is None or len(found) >= total:
                    break
        return found

    async def _histories(self, key: str, embedded: Any) -> list[dict[str, Any]]:
        """Every changelog history of the issue: what the search embedded, then (REST
        v3) the rest from `/changelog`."""
        histories: dict[str, dict[str, Any]] = {}

        def keep(page: Any) -> int:
            items = page if isinstance(page, list) else []
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("id"), str | int):
                    histories.setdefault(str(item["id"]), item)
            return len(items)

        changelog = embedded if isinstance(embedded, Mapping) else {}
        keep(changelog.get("histories"))
        total = _int(changelog.get("total"))
        start = 0
        for _ in range(MAX_FEED_PAGES):
            if self.api_version < 3 or total is None or len(histories) >= total:
                break
            data = _object(
                await self._call(
                    "GET",
                    f"/issue/{key}/changelog",
                    what=f"reading the changelog of {key}",
                    issue=key,
                    params={"startAt": start, "maxResults": CHANGELOG_PAGE_SIZE},
                ),
                f"the changelog of {key}",
            )
            count = keep(data.get("values"))
            total = _int(data.get("total"))
            if count == 0:
                break
            start += count
        return list(histories.values())

    async def test_connection(self) -> ConnectionCheck:
        details = {"baseUrl": self.base_url, "apiVersion": str(self.api_version)}
        try:
            me = _object(
                await self._call("GET", "/myself", what="checking the connection"),
                "the signed-in user",
            )
        except PluginError as exc:
            if exc.status is not None:
                details["status"] = str(exc.status)
            return ConnectionCheck(False, str(exc), details)
        user = person(me) or "an unnamed account"
        details["user"] = user
        project = self.settings.default_project
        if project:
            try:
                found = _object(
                    await self._call(
                        "GET", f"/project/{project}", what=f"reading project {project}"
                    ),
                    f"project {project}",
                )
            except PluginError as exc:
                if exc.status is not None:
                    details["status"] = str(exc.status)
                if isinstance(exc, PluginNotFoundError):
                    message = (
                        f"Signed in to Jira at {self.base_url} as {user}, but project "
                        f"{project} (defaultProject) does not exist or is not visible."
                    )
                else:
                    message = f"Signed in to Jira as {user}, but {exc}"
                return ConnectionCheck(False, message, details)
            details["project"] = text_field(found.get("name")) or project
        return ConnectionCheck(True, f"Connected to Jira at {self.base_url} as {user}.", details)


# --- helpers --------------------------------------------------------------------------


def _pick(options: list[Transition], wanted: str) -> Transition | None:
    """The transition named `wanted`, else the first reaching the status `wanted`, else
    the one whose id is `wanted` (names case-insensitively)."""
    folded = wanted.casefold()
    by_name = [t for t in options if t.name.casefold() == folded]
    by_status = [t for t in options if t.to_status.casefold() == folded]
    by_id = [t for t in options if t.id == wanted]
    for found in (by_name, by_status, by_id):
        if found:
            return found[0]
    return None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PluginError(f"Jira sent an unexpected response for {what}: expected a JSON object.")
    return value


def _name(value: Any) -> str | None:
    if isinstance(value, Mapping):
        name = value.get("name")
        if isinstance(name, str) and name.strip():
            return name.strip()
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def retry_after_seconds(value: str | None, fallback: float = RATE_LIMIT_FALLBACK_SECONDS) -> float:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date)."""
    return wait_or_fallback(parse_retry_after(value, time.time()), fallback)


def _jira_error_detail(response: httpx.Response) -> str:
    """Jira's `errorMessages` and `errors` (or a short excerpt of a non-JSON body)."""
    data = json_or_none(response)
    parts: list[str] = []
    if isinstance(data, Mapping):
        messages = data.get("errorMessages")
        if isinstance(messages, list):
            parts += [str(m).strip() for m in messages if str(m).strip()]
        errors = data.get("errors")
        if isinstance(errors, Mapping):
            parts += [f"{field}: {message}" for field, message in errors.items()]
        message = data.get("message")
        if not parts and isinstance(message, str) and message.strip():
            parts.append(message.strip())
        return "; ".join(parts)[:500]
    return body_excerpt(response)
