"""The `github-issues` tracker: GitHub issues over the REST API (v3) with httpx.

Settings (`plugins.installed.github-issues.config`, camelCase):

* `token` — a personal access token (classic or fine-grained) or an app token.
* `baseUrl` — default `https://api.github.com` (GitHub Enterprise Server:
  `https://<host>/api/v3`). `http://` only for loopback hosts unless
  `allowInsecureHttp` is set.
* `defaultRepo` — `owner/name`, so keys may be `#12` or `12`; `defaultOwner` — so keys
  may be `name#12`.
* `timeoutSeconds` — per request (default 30).

Keys: `owner/name#12`, `name#12` (with `defaultOwner`), `#12` / `12` (with
`defaultRepo`) or an issue's web URL; validated before any request.

GitHub issues are `open` or `closed` (with a `state_reason`). Statuses read as `open`,
`closed` and `closed as not planned` (`closed as duplicate` …); the transitions are
`Reopen` → open, `Close as completed` → closed and `Close as not planned` → closed as
not planned, matched by name, target status or id (`reopen`, `close`,
`close_not_planned`), plus the aliases `done`/`completed` and `not planned`/`wontfix`.
Moving an issue to the status it already has changes nothing.

The issues API also returns pull requests; they are refused ("… is a pull request, not
an issue") so a tracker call never comments on or closes a PR.

It is a trigger feed (`TriggerFeed`, polled by `coro.engine.triggers`): per repository,
`GET /repos/{o}/{r}/issues?since=…&state=all&sort=updated&direction=asc` (issues and
pull requests updated since), then each one's `GET …/issues/{n}/events` (`labeled`,
`assigned`, `closed`, `reopened` at or after `since`), and `GET
/repos/{o}/{r}/issues/comments?since=…` (new comments on issues and pull requests). Every
feed GET is conditional (`If-None-Match` with the ETag of the last answer to the same
URL, kept per plugin instance): an unchanged list answers 304, which GitHub does not
count against the rate limit, and an unchanged issue's events are not read again. A
new watch starts at the `Date` of GitHub's answer for the repository (its clock, not
ours).

Errors: 401 → `PluginAuthError`; 403 → `PluginRateLimited` when the rate limit is
exhausted (`x-ratelimit-remaining: 0`, `retry-after`), else `PluginAuthError`; 404/410 →
`PluginNotFoundError`; 429 → `PluginRateLimited`; 422 and others → `PluginError` with
GitHub's `message` and `errors`. The token never appears in a message.

In the team cloud its events come as webhooks (`WEBHOOK`): GitHub's `issues` and
`issue_comment` deliveries, read by `coro.plugins.trackers.github_issues_webhooks`; both
make their events with `coro.plugins.trackers.github_issues_events`, so a polled event
and a delivered one have the same event key.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
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
    RATE_LIMIT_FALLBACK_SECONDS,
    EtagCache,
    TrackerHttp,
    _Cached,
    body_excerpt,
    check_secret,
    is_loopback,
    is_rate_limited,
    json_or_none,
    normalize_base_url,
    parse_config,
    parse_retry_after,
    wait_or_fallback,
)
from coro.plugins.scm.base import ConnectionCheck
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
from coro.plugins.trackers.github_issues_events import (
    body_of,
    comment_trigger_event,
    issue_trigger_event,
    login_of,
    text_of,
)

logger = logging.getLogger(__name__)

PLUGIN_ID = "github-issues"
#: How GitHub signs webhook deliveries (the cloud verifies them from this alone), and
#: what reads their trigger events. GitHub sends a repository's issue events on the
#: webhook its pull-request events use: deliveries to the `github` plugin's URL are read
#: too (`readsDeliveriesOf`), so one webhook serves both.
WEBHOOK: dict[str, Any] = {
    "algorithm": "hmac-sha256",
    "header": "X-Hub-Signature-256",
    "format": "sha256=<hex>",
    "deliveryIdHeader": "X-GitHub-Delivery",
    "eventHeader": "X-GitHub-Event",
    "triggerParser": "coro.plugins.trackers.github_issues_webhooks:parse_trigger_webhook",
    "readsDeliveriesOf": ["github"],
}
DEFAULT_BASE_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
USER_AGENT = "coro-runner (github-issues tracker)"
PAGE_SIZE = 100
#: A guard against a Link chain that never ends.
MAX_PAGES = 200

_OWNER = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})"
_NAME = r"[A-Za-z0-9._-]{1,100}"
_FULL_KEY = re.compile(rf"^(?P<owner>{_OWNER})/(?P<name>{_NAME})#(?P<number>\d{{1,10}})$")
_NAME_KEY = re.compile(rf"^(?P<name>{_NAME})#(?P<number>\d{{1,10}})$")
_SHORT_KEY = re.compile(r"^#?(?P<number>\d{1,10})$")
_WEB_URL = re.compile(
    rf"^https?://[^/\s]+/(?P<owner>{_OWNER})/(?P<name>{_NAME})/(?P<kind>issues|pull)/"
    r"(?P<number>\d{1,10})(?:[/?#].*)?$"
)
_REPO = re.compile(rf"^(?:(?P<owner>{_OWNER})/)?(?P<name>{_NAME})$")
_TOKEN_SHAPES = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,})")

REOPEN = Transition("reopen", "Reopen", "open")
CLOSE = Transition("close", "Close as completed", "closed")
CLOSE_NOT_PLANNED = Transition("close_not_planned", "Close as not planned", "closed as not planned")
TRANSITIONS = (REOPEN, CLOSE, CLOSE_NOT_PLANNED)
_ALIASES = {
    "reopened": REOPEN,
    "done": CLOSE,
    "completed": CLOSE,
    "closed as completed": CLOSE,
    "not planned": CLOSE_NOT_PLANNED,
    "not_planned": CLOSE_NOT_PLANNED,
    "wontfix": CLOSE_NOT_PLANNED,
    "won't fix": CLOSE_NOT_PLANNED,
}
_PATCH = {
    REOPEN.id: {"state": "open", "state_reason": "reopened"},
    CLOSE.id: {"state": "closed", "state_reason": "completed"},
    CLOSE_NOT_PLANNED.id: {"state": "closed", "state_reason": "not_planned"},
}


# --- settings -------------------------------------------------------------------------


class GitHubIssuesSettings(BaseModel):
    """`plugins.installed.github-issues.config` (camelCase in config.json)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    token: SecretStr
    base_url: str = DEFAULT_BASE_URL
    default_repo: str | None = None
    default_owner: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    allow_insecure_http: bool = False

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return check_secret(value)

    @field_validator("base_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return normalize_base_url(value)

    @field_validator("default_owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not re.fullmatch(_OWNER, value):
            raise ValueError("must be a GitHub user or organisation name")
        return value

    @field_validator("default_repo")
    @classmethod
    def _repo(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().removesuffix(".git")
        match = _REPO.match(value)
        if match is None or match.group("name") in (".", ".."):
            raise ValueError('must be "owner/name"')
        return value

    @model_validator(mode="after")
    def _checks(self) -> GitHubIssuesSettings:
        if self.default_repo and "/" not in self.default_repo and not self.default_owner:
            raise ValueError('defaultRepo must be "owner/name" (or set defaultOwner)')
        url = urlsplit(self.base_url)
        if url.scheme == "http" and not self.allow_insecure_http and not is_loopback(url.hostname):
            raise ValueError(
                "baseUrl must use https:// (plain http:// sends the token unencrypted; "
                "set allowInsecureHttp to accept that)"
            )
        return self

    @property
    def repo(self) -> tuple[str, str] | None:
        if not self.default_repo:
            return None
        owner, _, name = self.default_repo.rpartition("/")
        return (owner or self.default_owner or ""), name


def create(settings: dict[str, Any], context: PluginContext | None = None) -> GitHubIssuesTracker:
    """The tracker for `plugins.installed.github-issues.config`; `PluginConfigError`
    names the failing fields, never their values."""
    return GitHubIssuesTracker(parse_config(GitHubIssuesSettings, settings))


# --- keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IssueRef:
    owner: str
    name: str
    number: int

    @property
    def repo(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}#{self.number}"

    @property
    def path(self) -> str:
        return f"/repos/{self.owner}/{self.name}/issues/{self.number}"


# --- the plugin -----------------------------------------------------------------------


class GitHubIssuesTracker:
    id = PLUGIN_ID

    def __init__(self, settings: GitHubIssuesSettings) -> None:
        self.settings = settings
        self.base_url = settings.base_url
        self._origin = _origin(settings.base_url)
        token = settings.token.get_secret_value()
        self._http = TrackerHttp(
            "GitHub",
            self.base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": USER_AGENT,
            },
            timeout_seconds=settings.timeout_seconds,
            secrets=[token],
            token_patterns=[_TOKEN_SHAPES],
        )
        #: the last ETag'ed answer of each feed GET (full URL), for conditional requests
        self._etags = EtagCache()

    def __repr__(self) -> str:
        return f"GitHubIssuesTracker(base_url={self.base_url!r})"

    # -- plumbing --

    async def aclose(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        await self._http.aclose()

    def scrub(self, text: str) -> str:
        """`text` without the token (nor anything shaped like a GitHub token)."""
        return self._http.scrub(text)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        not_found: str | None = None,
        params: dict[str, str | int] | None = None,
        body: Any = None,
        etag: str | None = None,
    ) -> httpx.Response:
        """A successful response (2xx, or 304 to a request conditional on `etag`); every
        failure is a `PluginError` whose message is safe to show. `url` is a path below
        baseUrl or an absolute URL on its origin."""
        if url.startswith("/"):
            url = f"{self.base_url}{url}"
        elif _origin(url) != self._origin:
            raise PluginError(
                f"GitHub pointed {what} at another host; refusing to send the token there."
            )
        headers = {"If-None-Match": etag} if etag else None
        response = await self._http.request(
            method, url, what=what, params=params, json=body, headers=headers
        )
        status = response.status_code
        logger.debug("github-issues %s %s -> %s", method, urlsplit(url).path, status)
        if status >= 400:
            raise self._error(response, what, not_found)
        if status == 304 and etag:
            return response
        if 300 <= status < 400:
            raise self._http.redirect_error(
                response, what, " (a renamed or transferred repository?); use its current name."
            )
        return response

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "unknown content type").split(";")[0]
            raise PluginError(
                f"GitHub sent a response that is not JSON for {what} (HTTP "
                f"{response.status_code}, {kind}); is {self.base_url} the GitHub API?",
                status=response.status_code,
            ) from None

    def _error(self, response: httpx.Response, what: str, not_found: str | None) -> PluginError:
        status = response.status_code
        message, details = _github_error(response)
        message, details = self.scrub(message), self.scrub(details)
        said = f": {message}" if message else ""
        if status == 401:
            return PluginAuthError(
                f"GitHub rejected the token (HTTP 401{said}) while {what}. Check the token "
                "setting and that the token has not expired.",
                status=status,
            )
        if is_rate_limited(response, message):
            retry_after = _rate_limit_wait(response.headers)
            return PluginRateLimited(
                f"GitHub rate limit reached while {what}; retry in {retry_after:g}s.",
                retry_after=retry_after,
                status=status,
            )
        if status == 403:
            return PluginAuthError(
                f"GitHub refused {what} (HTTP 403{said}); the token may lack a scope or "
                "access to the repository.",
                status=status,
            )
        if status in (404, 410):
            text = not_found or f"GitHub answered {status} while {what}{said}"
            if status == 410 and message:
                text = f"{text} ({message})"
            return PluginNotFoundError(f"{text}.", status=status)
        if status >= 500:
            return PluginError(
                f"GitHub failed while {what} (HTTP {status}){said}; try again later.",
                status=status,
            )
        extra = f" ({details})" if details else ""
        return PluginError(f"GitHub refused {what} (HTTP {status}){said}{extra}", status=status)

    # -- keys --

    def parse_key(self, key: str) -> IssueRef:
        """`owner/name#12`, `name#12` (defaultOwner), `#12` / `12` (defaultRepo) or an
        issue URL; `PluginError` (before any request) for anything else."""
        if not isinstance(key, str):
            raise PluginError("A GitHub issue key must be text such as owner/name#12.")
        text = key.strip()
        owner = name = None
        number = ""
        if match := _FULL_KEY.match(text):
            owner, name, number = match.group("owner"), match.group("name"), match.group("number")
        elif match := _WEB_URL.match(text):
            owner, name, number = match.group("owner"), match.group("name"), match.group("number")
            if match.group("kind") == "pull":
                raise PluginError(f"{owner}/{name}#{number} is a pull request, not an issue.")
        elif (match := _NAME_KEY.match(text)) and self.settings.default_owner:
            owner, name, number = (
                self.settings.default_owner,
                match.group("name"),
                match.group("number"),
            )
        elif (match := _SHORT_KEY.match(text)) and self.settings.repo is not None:
            (owner, name), number = self.settings.repo, match.group("number")
        if not owner or not name or name in (".", "..") or not number or int(number) < 1:
            shown = self.scrub(text)[:80]
            if _SHORT_KEY.match(text):
                raise PluginError(
                    f"Not a GitHub issue key: {shown!r}; a bare number needs defaultRepo, "
                    "otherwise write owner/name#12."
                )
            raise PluginError(f"Not a GitHub issue key: {shown!r}; expected owner/name#12.")
        return IssueRef(owner, name, int(number))

    # -- operations --

    async def _issue(self, ref: IssueRef, what: str) -> dict[str, Any]:
        response = await self._send("GET", ref.path, what=what, not_found=_not_found(ref))
        data = _object(self._json(response, f"issue {ref.key}"), f"issue {ref.key}")
        if data.get("pull_request") is not None:
            raise PluginError(f"{ref.key} is a pull request, not an issue.")
        return data

    async def get_issue(self, key: str) -> Issue:
        ref = self.parse_key(key)
        data = await self._issue(ref, f"reading issue {ref.key}")
        count = data.get("comments")
        has_comments = not isinstance(count, int) or isinstance(count, bool) or count > 0
        comments = await self._comments(ref) if has_comments else []
        labels: list[str] = []
        raw_labels = data.get("labels")
        if isinstance(raw_labels, list):
            for label in raw_labels:
                if isinstance(label, str):
                    labels.append(label)
                elif isinstance(label, Mapping) and isinstance(label.get("name"), str):
                    labels.append(str(label["name"]))
        html_url = data.get("html_url")
        return Issue(
            key=ref.key,
            title=text_of(data.get("title")),
            description=body_of(data.get("body")),
            status=_status(data),
            url=html_url if isinstance(html_url, str) else "",
            issue_type=_issue_type(data.get("type")),
            assignee=login_of(data.get("assignee")),
            labels=labels,
            comments=comments,
        )

    async def list_comments(self, key: str) -> list[TrackerComment]:
        """Every comment of the issue, oldest first."""
        ref = self.parse_key(key)
        await self._issue(ref, f"reading issue {ref.key}")
        return await self._comments(ref)

    async def _comments(self, ref: IssueRef) -> list[TrackerComment]:
        collected: dict[str, TrackerComment] = {}
        url: str | None = f"{ref.path}/comments"
        params: dict[str, str | int] | None = {"per_page": PAGE_SIZE}
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = await self._send(
                "GET",
                url,
                what=f"reading the comments of {ref.key}",
                not_found=_not_found(ref),
                params=params,
            )
            page = self._json(response, f"the comments of {ref.key}")
            if not isinstance(page, list):
                raise PluginError(
                    f"GitHub sent an unexpected response for the comments of {ref.key}: "
                    "expected a JSON list."
                )
            for raw in page:
                comment = self._comment(raw, ref)
                collected.setdefault(comment.id, comment)
            next_url = response.links.get("next", {}).get("url")
            url = next_url if next_url and page else None
            params = None  # the next link carries its own query
        return list(collected.values())

    def _comment(self, raw: Any, ref: IssueRef) -> TrackerComment:
        data = _object(raw, f"a comment of {ref.key}")
        comment_id = data.get("id")
        if not isinstance(comment_id, str | int) or isinstance(comment_id, bool):
            raise PluginError(f"GitHub sent a comment of {ref.key} without an id.")
        created = data.get("created_at")
        return TrackerComment(
            id=str(comment_id),
            author=login_of(data.get("user")) or "unknown",
            body=body_of(data.get("body")),
            created_at=created if isinstance(created, str) else "",
            author_association=text_of(data.get("author_association")) or None,
        )

    async def comment(self, key: str, body: str) -> TrackerComment:
        ref = self.parse_key(key)
        if not isinstance(body, str) or not body.strip():
            raise PluginError(f"Refusing to post an empty comment on {ref.key}.")
        await self._issue(ref, f"reading issue {ref.key}")
        response = await self._send(
            "POST",
            f"{ref.path}/comments",
            what=f"posting a comment on {ref.key}",
            not_found=_not_found(ref),
            body={"body": body.strip()},
        )
        return self._comment(self._json(response, f"the new comment on {ref.key}"), ref)

    async def transitions(self, key: str) -> list[Transition]:
        """The moves that change the issue's status (all three are accepted by
        `transition`, which leaves an issue already in the target status alone)."""
        ref = self.parse_key(key)
        current = _status(await self._issue(ref, f"reading issue {ref.key}"))
        return [t for t in TRANSITIONS if t.to_status != current]

    async def transition(self, key: str, to: str) -> Transition:
        """Reopen or close the issue (as completed or not planned); `to` names a
        transition, a status or an alias, case-insensitively. An issue already in the
        target status is left alone: the result then has an empty `id` and `name`."""
        ref = self.parse_key(key)
        wanted = to.strip() if isinstance(to, str) else ""
        chosen = _pick(wanted)
        if chosen is None:
            available = ", ".join(f"{t.name} → {t.to_status}" for t in TRANSITIONS)
            raise PluginError(
                f'No GitHub issue transition matches "{wanted}" for {ref.key}. '
                f"Available: {available}."
            )
        current = _status(await self._issue(ref, f"reading issue {ref.key}"))
        if current == chosen.to_status:
            return Transition(id="", name="", to_status=current)
        response = await self._send(
            "PATCH",
            ref.path,
            what=f'moving {ref.key} by "{chosen.name}"',
            not_found=_not_found(ref),
            body=_PATCH[chosen.id],
        )
        updated = _object(self._json(response, f"issue {ref.key}"), f"issue {ref.key}")
        if _status(updated) != chosen.to_status:
            raise PluginError(
                f'GitHub accepted "{chosen.name}" for {ref.key} but the issue is now '
                f"{_status(updated)}."
            )
        return chosen

    # -- the trigger feed (`TriggerFeed`) --

    def feed_repo(self, scope: str) -> tuple[str, str]:
        """(owner, name) of a watched repository: `owner/name`, or `name` with
        defaultOwner; `PluginError` for anything else."""
        match = _REPO.match(scope.strip().removesuffix(".git")) if isinstance(scope, str) else None
        owner = (match.group("owner") or self.settings.default_owner) if match else None
        if match is None or owner is None or match.group("name") in (".", ".."):
            shown = self.scrub(str(scope))[:80]
            raise PluginError(f"Not a GitHub repository: {shown!r}; expected owner/name.")
        return owner, match.group("name")

    async def feed_start(self, scope: str) -> str:
        owner, name = self.feed_repo(scope)
        response = await self._send(
            "GET",
            f"/repos/{owner}/{name}",
            what=f"reading repository {owner}/{name}",
            not_found=f"Repository {owner}/{name} does not exist or the token cannot see it",
        )
        return feed_iso(date_header_time(response.headers.get("date")))

    async def feed_poll(self, scope: str, since: str) -> FeedPage:
        owner, name = self.feed_repo(scope)
        repo = f"{owner}/{name}"
        since_at = feed_time(since)
        if since_at is None:
            raise PluginError(f"Not a time to poll {repo} from: {since!r}.")
        base = f"/repos/{owner}/{name}"
        newest = since_at
        events: list[TriggerEvent] = []
        updated_since: dict[str, str | int] = {
            "since": feed_iso(since_at),
            "sort": "updated",
            "direction": "asc",
        }
        issues = await self._feed_list(
            f"{base}/issues",
            what=f"listing the issues of {repo} updated since {since}",
            params={**updated_since, "state": "all"},
        )
        for raw in issues or []:
            issue = _object(raw, f"an issue of {repo}")
            newest = max(newest, feed_time(issue.get("updated_at")) or newest)
            number = issue.get("number")
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                continue
            history = await self._feed_list(
                f"{base}/issues/{number}/events",
                what=f"reading the events of {repo}#{number}",
                params={},
            )
            for item in history or []:
                event = issue_trigger_event(self.id, repo, issue, item)
                if event is not None and (feed_time(event.at) or since_at) >= since_at:
                    events.append(event)
        comments = await self._feed_list(
            f"{base}/issues/comments",
            what=f"listing the comments of {repo} since {since}",
            params=updated_since,
        )
        for raw in comments or []:
            data = _object(raw, f"a comment of {repo}")
            newest = max(newest, feed_time(data.get("updated_at")) or newest)
            event = comment_trigger_event(self.id, repo, data)
            # an older comment edited since is not a new one
            if event is not None and (feed_time(event.at) or since_at) >= since_at:
                events.append(event)
        events.sort(key=lambda e: (feed_time(e.at) or since_at, e.event_key))
        return FeedPage(events, feed_iso(newest))

    async def feed_details(self, event: TriggerEvent) -> TriggerEvent:
        if event.number is None:
            return event
        owner, name = self.feed_repo(event.scope)
        ref = IssueRef(owner, name, event.number)
        if not event.pull_request:
            if event.title:
                return event
            issue = _object(
                self._json(
                    await self._send(
                        "GET", ref.path, what=f"reading {ref.key}", not_found=_not_found(ref)
                    ),
                    ref.key,
                ),
                ref.key,
            )
            return replace(
                event, title=text_of(issue.get("title")), body=body_of(issue.get("body"))
            )
        what = f"reading pull request {ref.key}"
        pull = _object(
            self._json(
                await self._send(
                    "GET",
                    f"/repos/{owner}/{name}/pulls/{event.number}",
                    what=what,
                    not_found=f"Pull request {ref.key} does not exist, or the token cannot "
                    f"see {ref.repo}",
                ),
                what,
            ),
            what,
        )
        head, base = _mapping(pull.get("head")), _mapping(pull.get("base"))
        head_name = _mapping(head.get("repo")).get("full_name")
        return replace(
            event,
            title=event.title or text_of(pull.get("title")),
            body=event.body or body_of(pull.get("body")),
            head_branch=text_of(head.get("ref")) or None,
            head_repo=head_name if isinstance(head_name, str) and head_name else None,
            base_branch=text_of(base.get("ref")) or None,
        )

    async def _feed_list(
        self, path: str, *, what: str, params: dict[str, str | int]
    ) -> list[Any] | None:
        """Every item of a paginated list, each page asked for conditionally; None when
        nothing changed since the last time (every page answered 304). A full page
        answered 304 is followed by the page after it, where new items would be."""
        items: list[Any] = []
        changed = False
        url: str | None = path
        query: dict[str, str | int] | None = {**params, "per_page": PAGE_SIZE}
        for _ in range(MAX_PAGES):
            if url is None:
                break
            full = f"{self.base_url}{url}" if url.startswith("/") else url
            cache_key = str(httpx.URL(full, params=query))
            cached = self._etags.get(cache_key)
            response = await self._send(
                "GET", full, what=what, params=query, etag=cached.etag if cached else None
            )
            query = None  # a next link carries its own query
            fresh = not (response.status_code == 304 and cached is not None)
            if cached is not None and not fresh:
                page, next_url = cached.body, cached.next_url
            else:
                page = self._json(response, what)
                next_url = response.links.get("next", {}).get("url")
                etag = response.headers.get("etag")
                if etag:
                    self._etags.put(cache_key, _Cached(etag, page, next_url))
                else:
                    self._etags.drop(cache_key)
            if not isinstance(page, list):
                raise PluginError(
                    f"GitHub sent an unexpected response for {what}: expected a list."
                )
            items.extend(page)
            changed = changed or (fresh and bool(page))
            if next_url is None and not fresh and len(page) >= PAGE_SIZE:
                following = httpx.URL(cache_key)
                current = following.params.get("page", "1")
                number = int(current) + 1 if current.isdigit() else 2
                next_url = str(following.copy_set_param("page", str(number)))
            url = next_url if next_url and page else None
        return items if changed else None

    async def test_connection(self) -> ConnectionCheck:
        details = {"baseUrl": self.base_url}
        user: str | None = None
        try:
            response = await self._send("GET", "/user", what="checking the connection")
            user = login_of(_object(self._json(response, "the user"), "the user")) or "unknown"
            details["user"] = user
            scopes = response.headers.get("x-oauth-scopes")
            if scopes is not None:
                details["scopes"] = scopes
        except PluginError as exc:
            # App and some fine-grained tokens cannot read /user; the repository decides.
            if not (exc.status == 403 and self.settings.repo is not None):
                if exc.status is not None:
                    details["status"] = str(exc.status)
                return ConnectionCheck(False, str(exc), details)
        who = f" as {user}" if user else ""
        repo = self.settings.repo
        if repo is None:
            return ConnectionCheck(True, f"Connected to GitHub at {self.base_url}{who}.", details)
        full = f"{repo[0]}/{repo[1]}"
        try:
            response = await self._send(
                "GET",
                f"/repos/{full}",
                what=f"reading repository {full}",
                not_found=f"Repository {full} (defaultRepo) does not exist or the token "
                "cannot see it",
            )
            data = _object(self._json(response, f"repository {full}"), f"repository {full}")
        except PluginError as exc:
            if exc.status is not None:
                details["status"] = str(exc.status)
            return ConnectionCheck(False, str(exc), details)
        details["repo"] = full
        if data.get("has_issues") is False:
            return ConnectionCheck(False, f"Issues are disabled on {full} (defaultRepo).", details)
        return ConnectionCheck(
            True, f"Connected to GitHub at {self.base_url}{who}; {full} has issues.", details
        )


# --- helpers --------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _not_found(ref: IssueRef) -> str:
    return f"GitHub issue {ref.key} does not exist, or the token cannot see {ref.repo}"


def _pick(wanted: str) -> Transition | None:
    folded = wanted.casefold()
    if not folded:
        return None
    for transition in TRANSITIONS:
        if folded in (transition.id, transition.name.casefold(), transition.to_status):
            return transition
    return _ALIASES.get(folded)


def _status(data: Mapping[str, Any]) -> str:
    state = data.get("state")
    if state == "open":
        return "open"
    if state != "closed":
        raise PluginError("GitHub sent an issue without a known state.")
    reason = data.get("state_reason")
    if isinstance(reason, str) and reason and reason != "completed":
        return f"closed as {reason.replace('_', ' ')}"
    return "closed"


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PluginError(f"GitHub sent an unexpected response for {what}: expected a JSON object.")
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _issue_type(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return str(value["name"])
    return None


def _rate_limit_wait(headers: httpx.Headers) -> float:
    """`Retry-After` if sent (a minute when unparseable), else `X-RateLimit-Reset` − now,
    else a minute; within [1 s, 1 h]."""
    now = time.time()
    if "retry-after" in headers:
        seconds = parse_retry_after(headers["retry-after"], now)
        return wait_or_fallback(seconds, RATE_LIMIT_FALLBACK_SECONDS)
    reset = headers.get("x-ratelimit-reset")
    if reset is not None:
        try:
            return wait_or_fallback(float(reset) - now, RATE_LIMIT_FALLBACK_SECONDS)
        except ValueError:
            pass
    return wait_or_fallback(None, RATE_LIMIT_FALLBACK_SECONDS)


def _github_error(response: httpx.Response) -> tuple[str, str]:
    """GitHub's `message` and a summary of its `errors` (or a non-JSON excerpt)."""
    data = json_or_none(response)
    if isinstance(data, Mapping):
        message = data.get("message")
        text = message.strip() if isinstance(message, str) else ""
        parts: list[str] = []
        errors = data.get("errors")
        if isinstance(errors, list):
            for error in errors[:10]:
                if isinstance(error, str):
                    parts.append(error)
                elif isinstance(error, Mapping):
                    if isinstance(error.get("message"), str):
                        parts.append(str(error["message"]))
                    else:
                        bits = [str(error[k]) for k in ("resource", "field", "code") if k in error]
                        parts.append(" ".join(bits))
        return text[:300], "; ".join(p for p in parts if p)[:300]
    return body_excerpt(response), ""
