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

Errors: 401/403 → `PluginAuthError`, 404 → `PluginNotFoundError`, 429 (and 503 with
`Retry-After`) → `PluginRateLimited`, anything else → `PluginError` with Jira's
`errorMessages`/`errors`. Issue keys are validated before any request. Credentials
never appear in a message: every text that leaves this module is scrubbed.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

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
from coro.plugins.trackers.base import Issue, TrackerComment, Transition

logger = logging.getLogger(__name__)

PLUGIN_ID = "jira"
USER_AGENT = "coro-runner (jira tracker)"
ISSUE_FIELDS = "summary,description,status,issuetype,assignee,labels,comment"
#: Comments asked for per page (Jira may return fewer; we follow what it reports).
COMMENT_PAGE_SIZE = 100
#: A guard against a server that never reaches `total`.
MAX_COMMENT_PAGES = 200
RATE_LIMIT_FALLBACK_SECONDS = 30.0

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
        if status == 204 or not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "unknown content type").split(";")[0]
            raise PluginError(
                f"Jira sent a response that is not JSON ({what}, HTTP {status}, {kind}); "
                f"is {self.base_url} the Jira site?",
                status=status,
            ) from None

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
            title=_text_field(fields.get("summary")),
            description=adf_to_text(fields.get("description")),
            status=_name(fields.get("status")) or "unknown",
            url=f"{self.base_url}/browse/{key}",
            issue_type=_name(fields.get("issuetype")),
            assignee=_person(fields.get("assignee")),
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
        total: int | None = None
        start = 0
        if isinstance(embedded, Mapping) and isinstance(embedded.get("comments"), list):
            page = embedded["comments"]
            for raw in page:
                comment = self._comment(raw, key)
                collected.setdefault(comment.id, comment)
            total = _int(embedded.get("total"))
            start = (_int(embedded.get("startAt")) or 0) + len(page)
            if total is None:
                return list(collected.values())
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
            for raw in page:
                comment = self._comment(raw, key)
                collected.setdefault(comment.id, comment)
            total = _int(data.get("total"))
            if not page or total is None:
                break
            start = (_int(data.get("startAt")) or start) + len(page)
        return list(collected.values())

    def _comment(self, raw: Any, key: str) -> TrackerComment:
        data = _object(raw, f"a comment of {key}")
        comment_id = data.get("id")
        if not isinstance(comment_id, str | int) or isinstance(comment_id, bool):
            raise PluginError(f"Jira sent a comment of {key} without an id.")
        return TrackerComment(
            id=str(comment_id),
            author=_person(data.get("author")) or "unknown",
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
            name = _text_field(entry.get("name")) or str(transition_id)
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
        user = _person(me) or "an unnamed account"
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
            details["project"] = _text_field(found.get("name")) or project
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


def _text_field(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _name(value: Any) -> str | None:
    if isinstance(value, Mapping):
        name = value.get("name")
        if isinstance(name, str) and name.strip():
            return name.strip()
    return None


def _person(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return None
    for field in ("displayName", "name", "emailAddress", "accountId"):
        candidate = value.get(field)
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def iso_timestamp(value: Any) -> str:
    """Jira's `2024-01-15T10:30:00.000+0000` as ISO 8601 (`…+00:00`); anything
    unparseable as it came (or "")."""
    if not isinstance(value, str):
        return ""
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").isoformat()
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return value


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
