"""The `bitbucket` SCM plugin: pull requests on Bitbucket Cloud (REST 2.0).

Settings (`plugins.installed.bitbucket.config`, camelCase):

* Credentials, one of:
  - `username` + `appPassword` (secret): HTTP Basic; git gets the same pair;
  - `token` (secret): a repository, project or workspace access token sent as
    `Authorization: Bearer`; git gets it as user `x-token-auth`.
* `workspace`: the workspace of bare repository names.
* `baseUrl` (default `https://api.bitbucket.org/2.0`).
* `mergeStrategy` (`merge_commit` | `squash` | `fast_forward`, default
  `merge_commit`), `closeSourceBranch` (default true).
* `pageSize` (`pagelen`, 1–100, default 50), `timeoutSeconds`, `maxRetries`,
  `retryBackoffSeconds`: tuning.

Pull request status = the pull request (state OPEN/MERGED/DECLINED/SUPERSEDED →
open/merged/declined/declined; approvals = participants with `approved: true`) and
its comments (`content.raw`, `parent.id` for replies, `inline.path`; deleted and
pending comments left out), sorted by time. Lists follow the `next` URL of each page.
GETs are conditional where Bitbucket sends an ETag; `poll_pr` returns None whenever
the status equals the one it returned last, so polling yields changes only.

Reviewers are named by account UUID (`{…}`), account id, or nickname / display name
of a workspace member (looked up in `/workspaces/{workspace}/members`).
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from typing import Any, Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from coro.domain.errors import PluginAuthError, PluginError
from coro.plugins.context import PluginContext
from coro.plugins.http import (
    ForgeHttp,
    Provider,
    check_base_url,
    config_error,
    display_url,
    parse_model,
)
from coro.plugins.scm.base import (
    ConnectionCheck,
    MergeResult,
    PrComment,
    PrStateName,
    PrStatus,
    PullRequest,
)
from coro.plugins.scm.bitbucket_webhooks import parse_webhook
from coro.plugins.scm.repos import (
    check_name,
    check_pr_id,
    remote_pattern,
    sort_comments,
    split_repo,
)
from coro.system.git import GitCredentials

logger = logging.getLogger(__name__)

PLUGIN_ID = "bitbucket"
DEFAULT_BASE_URL = "https://api.bitbucket.org/2.0"
USER_AGENT = "coro-runner"

#: How Bitbucket signs webhook deliveries (the cloud verifies them from this alone).
WEBHOOK: dict[str, str] = {
    "algorithm": "hmac-sha256",
    "header": "X-Hub-Signature",
    "format": "sha256=<hex>",
    "deliveryIdHeader": "X-Request-UUID",
    "eventHeader": "X-Event-Key",
}

#: App passwords (ATBB…) and Atlassian / access tokens (ATATT…, ATCTT…).
_TOKEN_PATTERNS = (re.compile(r"\bAT(?:BB|ATT|CTT)[A-Za-z0-9_\-=]{16,}"),)
_UUID = re.compile(r"^\{[0-9a-fA-F-]{36}\}$")
_ACCOUNT_ID = re.compile(r"^(?:\d+:[0-9a-fA-F-]{36}|[0-9a-f]{24})$")
_STATES: dict[str, PrStateName] = {
    "OPEN": "open",
    "MERGED": "merged",
    "DECLINED": "declined",
    "SUPERSEDED": "declined",
}


# --- settings ---------------------------------------------------------------------------


class BitbucketSettings(BaseModel):
    """`plugins.installed.bitbucket.config` (camelCase in config.json)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    username: str | None = None
    app_password: SecretStr | None = None
    token: SecretStr | None = None
    workspace: str | None = None
    base_url: str = DEFAULT_BASE_URL
    merge_strategy: Literal["merge_commit", "squash", "fast_forward"] = "merge_commit"
    close_source_branch: bool = True
    page_size: int = Field(default=50, ge=1, le=100)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=1.0, ge=0, le=60)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or ":" in value or any(c.isspace() for c in value):
            raise ValueError("must be a Bitbucket username or email (no spaces or ':')")
        return value

    @field_validator("app_password", "token")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value().strip()
        if not secret:
            raise ValueError("must not be blank")
        if len(secret) < 8 or any(c.isspace() for c in secret):
            raise ValueError("does not look like a Bitbucket credential")
        return SecretStr(secret)

    @field_validator("workspace")
    @classmethod
    def _workspace(cls, value: str | None) -> str | None:
        return check_name(value)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_base_url(value)

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> BitbucketSettings:
        if self.token is not None and self.app_password is not None:
            raise ValueError("set either token, or username and appPassword — not both")
        if self.app_password is not None and self.username is None:
            raise ValueError("username is required with appPassword")
        if self.token is None and self.app_password is None:
            raise ValueError("set token, or username and appPassword")
        return self


def parse_settings(settings: dict[str, Any]) -> BitbucketSettings:
    try:
        return BitbucketSettings.model_validate(settings)
    except ValidationError as exc:
        raise config_error(exc) from None


def create(settings: dict[str, Any], context: PluginContext | None = None) -> BitbucketPlugin:
    """The plugin for `plugins.installed.bitbucket.config`; `PluginConfigError` names
    the failing fields, never their values."""
    return BitbucketPlugin(parse_settings(settings))


# --- response shapes (only what is read; extra fields ignored) ----------------------------


class _Account(BaseModel):
    display_name: str | None = None
    nickname: str | None = None
    username: str | None = None
    account_id: str | None = None
    uuid: str | None = None

    @property
    def name(self) -> str:
        return (
            self.nickname
            or self.username
            or self.display_name
            or self.account_id
            or self.uuid
            or "unknown"
        )

    def ref(self) -> dict[str, str] | None:
        if self.uuid:
            return {"uuid": self.uuid}
        if self.account_id:
            return {"account_id": self.account_id}
        return None


class _Branch(BaseModel):
    name: str


class _Endpoint(BaseModel):
    branch: _Branch


class _Href(BaseModel):
    href: str


class _Links(BaseModel):
    html: _Href | None = None


class _Participant(BaseModel):
    user: _Account | None = None
    approved: bool = False


class _Commit(BaseModel):
    hash: str | None = None


class _Pull(BaseModel):
    id: int
    title: str
    state: str
    links: _Links = Field(default_factory=_Links)
    source: _Endpoint
    destination: _Endpoint
    author: _Account | None = None
    participants: list[_Participant] = Field(default_factory=list)
    reviewers: list[_Account] = Field(default_factory=list)
    merge_commit: _Commit | None = None


class _Content(BaseModel):
    raw: str | None = None


class _Parent(BaseModel):
    id: int


class _Inline(BaseModel):
    path: str | None = None


class _Comment(BaseModel):
    id: int
    content: _Content = Field(default_factory=_Content)
    user: _Account | None = None
    created_on: str
    parent: _Parent | None = None
    inline: _Inline | None = None
    deleted: bool = False
    pending: bool = False


class _Membership(BaseModel):
    user: _Account


class _RepositoryPage(BaseModel):
    size: int | None = None


def _error_detail(body: Any) -> str:
    """Bitbucket's `error.message`, `error.detail` and per-field messages."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if not isinstance(error, dict):
        return ""
    parts = [error[k] for k in ("message", "detail") if isinstance(error.get(k), str)]
    fields = error.get("fields")
    if isinstance(fields, dict):
        for name, messages in fields.items():
            if isinstance(messages, list):
                said = "; ".join(m for m in messages if isinstance(m, str))
            else:
                said = str(messages) if isinstance(messages, str) else ""
            if said:
                parts.append(f"{name}: {said}")
    return " — ".join(part for part in parts if part)


PROVIDER = Provider(
    name="Bitbucket",
    credentials_hint=(
        "Check plugins.installed.bitbucket.config (username and appPassword, or token)."
    ),
    error_detail=_error_detail,
    token_patterns=_TOKEN_PATTERNS,
    auth_subject="the credentials",
)


# --- the plugin -------------------------------------------------------------------------


class BitbucketPlugin:
    id = PLUGIN_ID
    webhook = WEBHOOK
    #: the webhook parser (`coro.plugins.webhooks.WebhookParser`); needs no settings
    parse_webhook = staticmethod(parse_webhook)

    def __init__(
        self, settings: BitbucketSettings, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.settings = settings
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        secrets: list[str] = []
        if settings.token is not None:
            token = settings.token.get_secret_value()
            headers["Authorization"] = f"Bearer {token}"
            secrets.append(token)
        else:
            assert settings.username is not None and settings.app_password is not None
            password = settings.app_password.get_secret_value()
            pair = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
            secrets += [password, pair]
        self.http = ForgeHttp(
            PROVIDER,
            base_url=settings.base_url,
            headers=headers,
            secrets=secrets,
            timeout=settings.timeout_seconds,
            max_retries=settings.max_retries,
            retry_backoff=settings.retry_backoff_seconds,
            clock=clock,
        )
        self.web_url = web_url(settings.base_url)
        self._remote = remote_pattern(["bitbucket.org", httpx.URL(self.web_url).host])
        self._polled: dict[tuple[str, str, int], PrStatus] = {}

    def __repr__(self) -> str:
        return f"BitbucketPlugin(base_url={display_url(self.settings.base_url)!r})"

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- git --

    def repo(self, repo: str) -> tuple[str, str]:
        """(workspace, slug) of `workspace/slug`, a bare slug or a clone URL."""
        return split_repo("Bitbucket", repo, self.settings.workspace, "workspace")

    def clone_url(self, repo: str) -> str:
        workspace, slug = self.repo(repo)
        return f"{self.web_url}/{workspace}/{slug}.git"

    def git_credentials(self) -> GitCredentials:
        if self.settings.token is not None:
            return GitCredentials("x-token-auth", self.settings.token.get_secret_value())
        assert self.settings.username is not None and self.settings.app_password is not None
        return GitCredentials(self.settings.username, self.settings.app_password.get_secret_value())

    def matches_remote(self, remote_url: str) -> bool:
        return bool(self._remote.search(remote_url.strip()))

    # -- pull requests --

    async def create_pr(
        self,
        repo: str,
        *,
        source_branch: str,
        target_branch: str,
        title: str,
        body: str,
        reviewers: list[str] | None = None,
    ) -> PullRequest:
        workspace, slug = self.repo(repo)
        what = f"repository {workspace}/{slug}"
        payload: dict[str, Any] = {
            "title": title,
            "description": body,
            "source": {"branch": {"name": source_branch}},
            "destination": {"branch": {"name": target_branch}},
            "close_source_branch": self.settings.close_source_branch,
        }
        refs: list[dict[str, str]] = []
        for reviewer in reviewers or []:
            # Best effort: an unknown reviewer must not keep the pull request from opening.
            try:
                ref = await self._account_ref(workspace, reviewer)
            except PluginError as exc:
                logger.warning("bitbucket: reviewer not added to the new pull request: %s", exc)
                continue
            if ref not in refs:
                refs.append(ref)
        path = f"/repositories/{workspace}/{slug}/pullrequests"
        try:
            response = await self.http.send(
                "POST", path, what=what, json={**payload, "reviewers": refs} if refs else payload
            )
        except PluginError as exc:
            if not refs or exc.status != 400:
                raise
            logger.warning("bitbucket: pull request refused with reviewers, retrying without")
            response = await self.http.send("POST", path, what=what, json=payload)
        return self._pull(self.http.json_body(response, what), what, workspace, slug)

    async def pr_status(self, repo: str, pr_id: int) -> PrStatus:
        workspace, slug = self.repo(repo)
        number = check_pr_id("Bitbucket", pr_id)
        path = f"/repositories/{workspace}/{slug}/pullrequests/{number}"
        what = f"pull request {workspace}/{slug}#{number}"
        page = await self.http.get(path, what=what)
        raw = parse_model(_Pull, page.body, provider="Bitbucket", what=what)
        pull = self._pull(page.body, what, workspace, slug)
        approved_by: list[str] = []
        for participant in raw.participants:
            if participant.approved and participant.user is not None:
                name = participant.user.name
                if name not in approved_by:
                    approved_by.append(name)
        items = await self.http.list_body_pages(
            f"{path}/comments", what=f"the comments of {what}", page_size=self.settings.page_size
        )
        comments = []
        for item in items:
            comment = parse_model(
                _Comment, item, provider="Bitbucket", what=f"the comments of {what}"
            )
            if not comment.deleted and not comment.pending:
                comments.append(_comment(comment))
        return PrStatus(
            pull_request=pull,
            approval_count=len(approved_by),
            approved_by=approved_by,
            comments=sort_comments(comments),
        )

    async def poll_pr(self, repo: str, pr_id: int) -> PrStatus | None:
        workspace, slug = self.repo(repo)
        key = (workspace.lower(), slug.lower(), check_pr_id("Bitbucket", pr_id))
        status = await self.pr_status(repo, pr_id)
        if self._polled.get(key) == status:
            return None
        self._polled[key] = status
        return status

    async def post_comment(
        self, repo: str, pr_id: int, body: str, *, in_reply_to: str | None = None
    ) -> PrComment:
        workspace, slug = self.repo(repo)
        number = check_pr_id("Bitbucket", pr_id)
        what = f"pull request {workspace}/{slug}#{number}"
        payload: dict[str, Any] = {"content": {"raw": body}}
        parent = (in_reply_to or "").strip()
        if parent:
            if not parent.isdigit():
                raise PluginError(
                    f"Bitbucket: comment ids are numbers; cannot reply to {parent!r} on {what}."
                )
            payload["parent"] = {"id": int(parent)}
        response = await self.http.send(
            "POST",
            f"/repositories/{workspace}/{slug}/pullrequests/{number}/comments",
            what=what,
            json=payload,
        )
        comment = parse_model(
            _Comment,
            self.http.json_body(response, what),
            provider="Bitbucket",
            what=f"the comment on {what}",
        )
        return _comment(comment)

    async def request_reviewers(self, repo: str, pr_id: int, reviewers: list[str]) -> None:
        workspace, slug = self.repo(repo)
        number = check_pr_id("Bitbucket", pr_id)
        wanted = [r for r in reviewers if r.strip()]
        if not wanted:
            return
        path = f"/repositories/{workspace}/{slug}/pullrequests/{number}"
        what = f"pull request {workspace}/{slug}#{number}"
        refs = [await self._account_ref(workspace, reviewer) for reviewer in wanted]
        pull = parse_model(
            _Pull, (await self.http.get(path, what=what)).body, provider="Bitbucket", what=what
        )
        merged: list[dict[str, str]] = []
        for ref in [r for r in (a.ref() for a in pull.reviewers) if r is not None] + refs:
            if ref not in merged:
                merged.append(ref)
        await self.http.send(
            "PUT", path, what=what, json={"title": pull.title, "reviewers": merged}
        )

    async def merge(self, repo: str, pr_id: int, *, message: str | None = None) -> MergeResult:
        workspace, slug = self.repo(repo)
        number = check_pr_id("Bitbucket", pr_id)
        what = f"pull request {workspace}/{slug}#{number}"
        payload: dict[str, Any] = {
            "type": "pullrequest_merge_parameters",
            "merge_strategy": self.settings.merge_strategy,
            "close_source_branch": self.settings.close_source_branch,
        }
        if message and message.strip():
            payload["message"] = message.strip()
        response = await self.http.send(
            "POST",
            f"/repositories/{workspace}/{slug}/pullrequests/{number}/merge",
            what=what,
            json=payload,
            allow=(400, 409),
        )
        if response.status_code in (400, 409):
            reason = self.http.detail(response)
            return MergeResult(merged=False, message=f"{reason} ({response.status_code})")
        if response.status_code == 202:
            return MergeResult(
                merged=False,
                message=(
                    "Bitbucket accepted the merge and is completing it in the background; "
                    "check the pull request's status before merging again."
                ),
            )
        pull = parse_model(
            _Pull, self.http.json_body(response, what), provider="Bitbucket", what=what
        )
        if pull.state != "MERGED":
            return MergeResult(
                merged=False, message=f"Bitbucket left the pull request {pull.state.lower()}."
            )
        sha = pull.merge_commit.hash if pull.merge_commit else None
        return MergeResult(merged=True, sha=sha, message="Merged.")

    async def test_connection(self) -> ConnectionCheck:
        where = display_url(self.settings.base_url)
        details = {"baseUrl": where}
        said: list[str] = []
        try:
            try:
                response = await self.http.send("GET", "/user", what="the authenticated user")
            except PluginAuthError:
                # Access tokens act for a repository or workspace, not for a user.
                if self.settings.token is None or not self.settings.workspace:
                    raise
            else:
                user = parse_model(
                    _Account,
                    self.http.json_body(response, "the authenticated user"),
                    provider="Bitbucket",
                    what="the authenticated user",
                )
                details["user"] = user.name
                said.append(f"as {user.name}")
                scopes = response.headers.get("x-oauth-scopes")
                if scopes:
                    details["scopes"] = scopes
                    said.append(f"scopes: {scopes}")
            if self.settings.workspace:
                what = f"workspace {self.settings.workspace}"
                listing = await self.http.send(
                    "GET",
                    f"/repositories/{self.settings.workspace}",
                    what=what,
                    params={"pagelen": 1},
                )
                page = parse_model(
                    _RepositoryPage,
                    self.http.json_body(listing, what),
                    provider="Bitbucket",
                    what=what,
                )
                details["workspace"] = self.settings.workspace
                visible = "" if page.size is None else f" ({page.size} repositories visible)"
                said.append(f"workspace {self.settings.workspace}{visible}")
        except PluginError as exc:
            return ConnectionCheck(ok=False, message=str(exc), details=details)
        return ConnectionCheck(
            ok=True,
            message=f"Connected to Bitbucket at {where} {', '.join(said)}.",
            details=details,
        )

    # -- helpers --

    async def _account_ref(self, workspace: str, reviewer: str) -> dict[str, str]:
        """A reviewer as Bitbucket wants it: `{"uuid"}` or `{"account_id"}`."""
        handle = reviewer.strip().lstrip("@")
        if _UUID.match(handle):
            return {"uuid": handle}
        if _ACCOUNT_ID.match(handle):
            return {"account_id": handle}
        what = f"the members of workspace {workspace}"
        members = await self.http.list_body_pages(
            f"/workspaces/{workspace}/members", what=what, page_size=self.settings.page_size
        )
        wanted = handle.lower()
        for item in members:
            account = parse_model(_Membership, item, provider="Bitbucket", what=what).user
            names = (account.nickname, account.username, account.display_name, account.account_id)
            if any(name and name.lower() == wanted for name in names):
                ref = account.ref()
                if ref is not None:
                    return ref
        raise PluginError(
            f"Bitbucket: no member of workspace {workspace} is called {handle!r}; name "
            "reviewers by nickname, display name, account id or account UUID ({…})."
        )

    def _pull(self, data: Any, what: str, workspace: str, slug: str) -> PullRequest:
        pull = parse_model(_Pull, data, provider="Bitbucket", what=what)
        state = _STATES.get(pull.state.upper())
        if state is None:
            raise PluginError(f"Bitbucket sent an unknown state for {what}.")
        url = (
            pull.links.html.href
            if pull.links.html is not None
            else f"{self.web_url}/{workspace}/{slug}/pull-requests/{pull.id}"
        )
        return PullRequest(
            id=pull.id,
            url=url,
            title=pull.title,
            state=state,
            source_branch=pull.source.branch.name,
            target_branch=pull.destination.branch.name,
            author=pull.author.name if pull.author is not None else None,
        )


def web_url(base_url: str) -> str:
    """The web (and git) root of an API base URL: bitbucket.org for api.bitbucket.org."""
    url = httpx.URL(base_url)
    if url.host.lower() == "api.bitbucket.org":
        return "https://bitbucket.org"
    path = url.path.rstrip("/").removesuffix("/2.0").removesuffix("/api")
    netloc = url.host if url.port is None else f"{url.host}:{url.port}"
    return f"{url.scheme}://{netloc}{path}"


def _comment(comment: _Comment) -> PrComment:
    return PrComment(
        id=str(comment.id),
        author=comment.user.name if comment.user is not None else "unknown",
        body=comment.content.raw or "",
        created_at=comment.created_on,
        in_reply_to=str(comment.parent.id) if comment.parent is not None else None,
        path=comment.inline.path if comment.inline is not None else None,
    )
