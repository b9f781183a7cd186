"""The `github` SCM plugin: pull requests on GitHub or GitHub Enterprise (REST v3).

Settings (`plugins.installed.github.config`, camelCase):

* `token` (required, secret): a personal access token (classic or fine-grained) or an
  app installation token. Sent as `Authorization: Bearer`; git gets it through
  `git_credentials()` as user `x-access-token`.
* `baseUrl` (default `https://api.github.com`): GitHub Enterprise Server uses
  `https://<host>/api/v3`. Clone URLs and remote matching derive from it.
* `owner`: the owner (user or organisation) of bare repository names.
* `mergeMethod` (`merge` | `squash` | `rebase`, default `merge`).
* `pageSize` (1–100, default 100), `timeoutSeconds`, `maxRetries`,
  `retryBackoffSeconds`: tuning.

Pull request status = the pull request, its reviews (approvals = users whose latest
deciding review — APPROVED, CHANGES_REQUESTED or DISMISSED — is APPROVED), and its
comments: issue comments, review (inline) comments and the bodies of submitted reviews
(ids `review-<id>`), merged and sorted by time. Every list is paginated; every GET is
conditional on the ETag of the previous answer, so `poll_pr` on an unchanged pull
request costs only 304s, which GitHub does not count against the rate limit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from coro.domain.errors import PluginError, PluginNotFoundError
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
from coro.plugins.scm.github_webhooks import parse_webhook
from coro.plugins.scm.repos import (
    check_name,
    check_pr_id,
    remote_pattern,
    sort_comments,
    split_repo,
)
from coro.system.git import GitCredentials

logger = logging.getLogger(__name__)

PLUGIN_ID = "github"
DEFAULT_BASE_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
USER_AGENT = "coro-runner"

#: How GitHub signs webhook deliveries (the cloud verifies them from this alone).
WEBHOOK: dict[str, str] = {
    "algorithm": "hmac-sha256",
    "header": "X-Hub-Signature-256",
    "format": "sha256=<hex>",
    "deliveryIdHeader": "X-GitHub-Delivery",
    "eventHeader": "X-GitHub-Event",
}

#: Classic, fine-grained, OAuth, app and refresh tokens.
_TOKEN_PATTERNS = (
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
)
#: Review states that decide a reviewer's verdict (COMMENTED and PENDING do not).
_DECIDING_STATES = frozenset({"APPROVED", "CHANGES_REQUESTED", "DISMISSED"})


# --- settings ---------------------------------------------------------------------------


class GitHubSettings(BaseModel):
    """`plugins.installed.github.config` (camelCase in config.json)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    token: SecretStr
    base_url: str = DEFAULT_BASE_URL
    owner: str | None = None
    merge_method: Literal["merge", "squash", "rebase"] = "merge"
    page_size: int = Field(default=100, ge=1, le=100)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=1.0, ge=0, le=60)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("must not be blank")
        if len(token) < 8 or any(c.isspace() for c in token):
            raise ValueError("does not look like a GitHub token")
        return SecretStr(token)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        return check_name(value)


def parse_settings(settings: dict[str, Any]) -> GitHubSettings:
    try:
        return GitHubSettings.model_validate(settings)
    except ValidationError as exc:
        raise config_error(exc) from None


def create(settings: dict[str, Any], context: PluginContext | None = None) -> GitHubPlugin:
    """The plugin for `plugins.installed.github.config`; `PluginConfigError` names the
    failing fields, never their values."""
    return GitHubPlugin(parse_settings(settings))


# --- response shapes (only what is read; extra fields ignored) ----------------------------


class _User(BaseModel):
    login: str


class _Ref(BaseModel):
    ref: str


class _Pull(BaseModel):
    number: int
    html_url: str
    title: str
    state: str
    merged: bool | None = None
    merged_at: str | None = None
    user: _User | None = None
    head: _Ref
    base: _Ref


class _Review(BaseModel):
    id: int
    user: _User | None = None
    state: str
    body: str | None = None
    submitted_at: str | None = None
    author_association: str | None = None


class _IssueComment(BaseModel):
    id: int
    user: _User | None = None
    body: str | None = None
    created_at: str
    author_association: str | None = None


class _ReviewComment(BaseModel):
    id: int
    user: _User | None = None
    body: str | None = None
    created_at: str
    in_reply_to_id: int | None = None
    path: str | None = None
    author_association: str | None = None


class _Merge(BaseModel):
    merged: bool = True
    sha: str | None = None
    message: str = ""


def _error_detail(body: Any) -> str:
    """GitHub's `message` plus each `errors[]` entry (`message`, or resource/field/code)."""
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    errors = body.get("errors")
    if isinstance(errors, list):
        for error in errors:
            if isinstance(error, str):
                parts.append(error)
            elif isinstance(error, dict):
                if isinstance(error.get("message"), str):
                    parts.append(error["message"])
                else:
                    where = ".".join(
                        str(error[k])
                        for k in ("resource", "field")
                        if isinstance(error.get(k), str)
                    )
                    code = error.get("code")
                    parts.append(f"{where} {code}".strip() if isinstance(code, str) else where)
    message = body.get("message")
    head = message if isinstance(message, str) else ""
    details = "; ".join(part for part in parts if part)
    if head and details:
        return f"{head}: {details}"
    return head or details


PROVIDER = Provider(
    name="GitHub",
    credentials_hint="Check plugins.installed.github.config.token.",
    error_detail=_error_detail,
    token_patterns=_TOKEN_PATTERNS,
    auth_subject="the token",
)


# --- the plugin -------------------------------------------------------------------------


class GitHubPlugin:
    id = PLUGIN_ID
    webhook = WEBHOOK
    #: the webhook parser (`coro.plugins.webhooks.WebhookParser`); needs no settings
    parse_webhook = staticmethod(parse_webhook)

    def __init__(
        self, settings: GitHubSettings, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.settings = settings
        token = settings.token.get_secret_value()
        self.http = ForgeHttp(
            PROVIDER,
            base_url=settings.base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": USER_AGENT,
            },
            secrets=[token],
            timeout=settings.timeout_seconds,
            max_retries=settings.max_retries,
            retry_backoff=settings.retry_backoff_seconds,
            clock=clock,
        )
        self.web_url = web_url(settings.base_url)
        self._remote = remote_pattern([httpx.URL(self.web_url).host])
        self._polled: dict[tuple[str, str, int], PrStatus] = {}

    def __repr__(self) -> str:
        return f"GitHubPlugin(base_url={display_url(self.settings.base_url)!r})"

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- git --

    def repo(self, repo: str) -> tuple[str, str]:
        """(owner, name) of `owner/name`, a bare name or a clone URL."""
        return split_repo("GitHub", repo, self.settings.owner, "owner")

    def clone_url(self, repo: str) -> str:
        owner, name = self.repo(repo)
        return f"{self.web_url}/{owner}/{name}.git"

    def git_credentials(self) -> GitCredentials:
        return GitCredentials("x-access-token", self.settings.token.get_secret_value())

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
        owner, name = self.repo(repo)
        what = f"repository {owner}/{name}"
        response = await self.http.send(
            "POST",
            f"/repos/{owner}/{name}/pulls",
            what=what,
            json={"title": title, "body": body, "head": source_branch, "base": target_branch},
        )
        created = self._pull(self.http.json_body(response, what), what)
        if reviewers:
            # Best effort: the pull request exists either way, and failing here would
            # make a retry run into "a pull request already exists".
            try:
                await self.request_reviewers(repo, created.id, reviewers)
            except PluginError as exc:
                logger.warning(
                    "github: opened %s/%s#%d but could not request reviewers: %s",
                    owner,
                    name,
                    created.id,
                    exc,
                )
        return created

    async def pr_status(self, repo: str, pr_id: int) -> PrStatus:
        owner, name = self.repo(repo)
        number = check_pr_id("GitHub", pr_id)
        base = f"/repos/{owner}/{name}"
        what = f"pull request {owner}/{name}#{number}"
        size = self.settings.page_size
        page = await self.http.get(f"{base}/pulls/{number}", what=what)
        pull = self._pull(page.body, what)
        reviews = [
            parse_model(_Review, item, provider="GitHub", what=f"the reviews of {what}")
            for item in await self.http.list_link_pages(
                f"{base}/pulls/{number}/reviews", what=f"the reviews of {what}", page_size=size
            )
        ]
        issue_comments = [
            parse_model(_IssueComment, item, provider="GitHub", what=f"the comments of {what}")
            for item in await self.http.list_link_pages(
                f"{base}/issues/{number}/comments", what=f"the comments of {what}", page_size=size
            )
        ]
        review_comments = [
            parse_model(
                _ReviewComment, item, provider="GitHub", what=f"the review comments of {what}"
            )
            for item in await self.http.list_link_pages(
                f"{base}/pulls/{number}/comments",
                what=f"the review comments of {what}",
                page_size=size,
            )
        ]
        approved_by = approvals(reviews)
        comments = [_issue_comment(c) for c in issue_comments]
        comments += [_review_comment(c) for c in review_comments]
        comments += [
            PrComment(
                id=f"review-{r.id}",
                author=_login(r.user),
                body=r.body or "",
                created_at=r.submitted_at or "",
                author_association=r.author_association,
            )
            for r in reviews
            if (r.body or "").strip() and r.state != "PENDING" and r.submitted_at
        ]
        return PrStatus(
            pull_request=pull,
            approval_count=len(approved_by),
            approved_by=approved_by,
            comments=sort_comments(comments),
        )

    async def poll_pr(self, repo: str, pr_id: int) -> PrStatus | None:
        owner, name = self.repo(repo)
        key = (owner.lower(), name.lower(), check_pr_id("GitHub", pr_id))
        status = await self.pr_status(repo, pr_id)
        if self._polled.get(key) == status:
            return None
        self._polled[key] = status
        return status

    async def post_comment(
        self, repo: str, pr_id: int, body: str, *, in_reply_to: str | None = None
    ) -> PrComment:
        owner, name = self.repo(repo)
        number = check_pr_id("GitHub", pr_id)
        base = f"/repos/{owner}/{name}"
        what = f"pull request {owner}/{name}#{number}"
        parent = (in_reply_to or "").strip()
        if parent.isdigit():
            # A reply in a review thread; GitHub has no threads for issue comments,
            # so the reply to one of those (404 here) is a new issue comment.
            try:
                response = await self.http.send(
                    "POST",
                    f"{base}/pulls/{number}/comments/{parent}/replies",
                    what=f"review comment {parent} on {what}",
                    json={"body": body},
                )
            except PluginNotFoundError:
                pass
            else:
                reply = parse_model(
                    _ReviewComment,
                    self.http.json_body(response, what),
                    provider="GitHub",
                    what=f"the reply on {what}",
                )
                return _review_comment(reply)
        response = await self.http.send(
            "POST", f"{base}/issues/{number}/comments", what=what, json={"body": body}
        )
        comment = parse_model(
            _IssueComment,
            self.http.json_body(response, what),
            provider="GitHub",
            what=f"the comment on {what}",
        )
        return _issue_comment(comment)

    async def request_reviewers(self, repo: str, pr_id: int, reviewers: list[str]) -> None:
        owner, name = self.repo(repo)
        number = check_pr_id("GitHub", pr_id)
        users: list[str] = []
        teams: list[str] = []
        for reviewer in reviewers:
            handle = reviewer.strip().lstrip("@")
            if not handle:
                continue
            if "/" in handle:  # "org/team-slug"
                teams.append(handle.rsplit("/", 1)[1])
            else:
                users.append(handle)
        if not users and not teams:
            return
        payload: dict[str, list[str]] = {"reviewers": users}
        if teams:
            payload["team_reviewers"] = teams
        await self.http.send(
            "POST",
            f"/repos/{owner}/{name}/pulls/{number}/requested_reviewers",
            what=f"pull request {owner}/{name}#{number}",
            json=payload,
        )

    async def merge(self, repo: str, pr_id: int, *, message: str | None = None) -> MergeResult:
        owner, name = self.repo(repo)
        number = check_pr_id("GitHub", pr_id)
        what = f"pull request {owner}/{name}#{number}"
        payload: dict[str, str] = {"merge_method": self.settings.merge_method}
        if message and message.strip():
            title, _, rest = message.strip().partition("\n")
            payload["commit_title"] = title.strip()
            if rest.strip():
                payload["commit_message"] = rest.strip()
        response = await self.http.send(
            "PUT",
            f"/repos/{owner}/{name}/pulls/{number}/merge",
            what=what,
            json=payload,
            allow=(405, 409),
        )
        if response.status_code in (405, 409):
            reason = self.http.detail(response)
            return MergeResult(merged=False, message=f"{reason} ({response.status_code})")
        body = self.http.json_body(response, what)
        result = parse_model(_Merge, body, provider="GitHub", what=f"the merge of {what}")
        return MergeResult(
            merged=result.merged, sha=result.sha, message=self.http.scrub(result.message)
        )

    async def test_connection(self) -> ConnectionCheck:
        where = display_url(self.settings.base_url)
        try:
            response = await self.http.send("GET", "/user", what="the authenticated user")
            user = parse_model(
                _User,
                self.http.json_body(response, "the authenticated user"),
                provider="GitHub",
                what="the authenticated user",
            )
        except PluginError as exc:
            return ConnectionCheck(ok=False, message=str(exc), details={"baseUrl": where})
        scopes = response.headers.get("x-oauth-scopes")
        details = {"baseUrl": where, "login": user.login}
        if scopes is None:
            said = "fine-grained or app token (no scopes header)"
        else:
            details["scopes"] = scopes
            said = f"scopes: {scopes or 'none'}"
        return ConnectionCheck(
            ok=True,
            message=f"Connected to GitHub at {where} as {user.login} ({said}).",
            details=details,
        )

    # -- helpers --

    def _pull(self, data: Any, what: str) -> PullRequest:
        pull = parse_model(_Pull, data, provider="GitHub", what=what)
        state: PrStateName
        if pull.merged or pull.merged_at:
            state = "merged"
        elif pull.state == "open":
            state = "open"
        elif pull.state == "closed":
            state = "declined"
        else:
            raise PluginError(f"GitHub sent an unknown state for {what}.")
        return PullRequest(
            id=pull.number,
            url=pull.html_url,
            title=pull.title,
            state=state,
            source_branch=pull.head.ref,
            target_branch=pull.base.ref,
            author=pull.user.login if pull.user else None,
        )


def web_url(base_url: str) -> str:
    """The web (and git) root of an API base URL: github.com for api.github.com, the
    host of a GitHub Enterprise `…/api/v3`."""
    url = httpx.URL(base_url)
    if url.host.lower() == "api.github.com":
        return "https://github.com"
    path = url.path.rstrip("/")
    path = path.removesuffix("/api/v3")
    netloc = url.host if url.port is None else f"{url.host}:{url.port}"
    return f"{url.scheme}://{netloc}{path}"


def approvals(reviews: list[_Review]) -> list[str]:
    """Reviewers whose latest deciding review is an approval, in order of approval."""
    verdicts: dict[str, tuple[str, int]] = {}
    for order, review in enumerate(reviews):
        if review.state in _DECIDING_STATES and review.user is not None:
            verdicts[review.user.login] = (review.state, order)
    approved = [(order, login) for login, (s, order) in verdicts.items() if s == "APPROVED"]
    return [login for _, login in sorted(approved)]


def _login(user: _User | None) -> str:
    return user.login if user is not None else "ghost"


def _issue_comment(comment: _IssueComment) -> PrComment:
    return PrComment(
        id=str(comment.id),
        author=_login(comment.user),
        body=comment.body or "",
        created_at=comment.created_at,
        author_association=comment.author_association,
    )


def _review_comment(comment: _ReviewComment) -> PrComment:
    return PrComment(
        id=str(comment.id),
        author=_login(comment.user),
        body=comment.body or "",
        created_at=comment.created_at,
        in_reply_to=str(comment.in_reply_to_id) if comment.in_reply_to_id else None,
        path=comment.path,
        author_association=comment.author_association,
    )
