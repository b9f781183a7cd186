"""Shared HTTP plumbing of the plugins: the forges (`github`, `bitbucket`) and the
trackers (`jira`, `github-issues`).

Every plugin uses the settings helpers (`config_problems`, base URL checks), the
`Retry-After` parsing (`parse_retry_after`), rate-limit detection (`is_rate_limited`),
secret scrubbing (`Scrubber`) and body helpers (`json_or_none`, `body_excerpt`). The
trackers send through `TrackerHttp` (their status mapping and messages stay their
own).

`ForgeHttp` owns one `httpx.AsyncClient` per forge plugin instance and gives both
forges the same behaviour:

* **Conditional GETs.** Every GET that came back with an `ETag` is cached (body and
  pagination link, per full URL, bounded LRU); the next GET of that URL sends
  `If-None-Match` and a `304 Not Modified` is answered from the cache. GitHub does not
  count a 304 against the rate limit, so polling an unchanged pull request is free.
* **Pagination.** `list_link_pages` follows `Link: <…>; rel="next"` (GitHub);
  `list_body_pages` follows the `next` URL in the page body (Bitbucket). A link that
  leaves the API's origin is refused (it would carry the credentials elsewhere).
* **Rate limits.** 429, or 403 with `X-RateLimit-Remaining: 0`, `Retry-After` or a
  "rate limit" message, raise `PluginRateLimited` with `retry_after` from `Retry-After`
  (seconds or an HTTP date), else `X-RateLimit-Reset − now`, else a minute.
* **Errors.** 401 → `PluginAuthError`, 403 → `PluginAuthError`, 404 →
  `PluginNotFoundError` naming the resource, other statuses → `PluginError` with the
  provider's own message; a body that is not the expected JSON → `PluginError`.
  502/503/504 and connection failures of GETs are retried a few times with backoff.
* **Secrets.** Every text that leaves this module (messages, log lines) is scrubbed of
  the credentials and of anything shaped like the provider's tokens.

Naming repositories and pull requests on a forge lives in `coro.plugins.scm.repos`.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from coro.domain.errors import (
    PluginAuthError,
    PluginConfigError,
    PluginError,
    PluginNotFoundError,
    PluginRateLimited,
)

logger = logging.getLogger(__name__)

RATE_LIMIT_FALLBACK_SECONDS = 60.0
RATE_LIMIT_MAX_SECONDS = 3600.0
RETRYABLE_STATUSES = frozenset({502, 503, 504})
BACKOFF_CAP_SECONDS = 8.0
MAX_PAGES = 200
CACHE_ENTRIES = 1024
ERROR_DETAIL_CHARS = 300
OK_STATUSES = frozenset({200, 201, 202, 204})

M = TypeVar("M", bound=BaseModel)


# --- settings helpers -------------------------------------------------------------------


def config_problems(exc: ValidationError) -> str:
    """The fields a validation error is about and what is wrong, never the values."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "config"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def config_error(exc: ValidationError) -> PluginConfigError:
    """A `PluginConfigError` naming the failing fields, never their values."""
    return PluginConfigError(config_problems(exc))


def parse_config(model: type[M], settings: Any) -> M:
    """A tracker's `config` object validated as `model`; `PluginConfigError` names the
    failing fields, never their values. (The forges validate with `config_error`.)"""
    if not isinstance(settings, Mapping):
        raise PluginConfigError("config: must be an object")
    try:
        return model.model_validate(dict(settings))
    except ValidationError as exc:
        raise PluginConfigError(config_problems(exc)) from None


def check_secret(value: SecretStr) -> SecretStr:
    """A trackers' token setting: stripped, not blank, no whitespace or control
    characters."""
    secret = value.get_secret_value().strip()
    if not secret:
        raise ValueError("must not be blank")
    if any(ch.isspace() or ord(ch) < 32 for ch in secret):
        raise ValueError("must not contain whitespace or control characters")
    return SecretStr(secret)


def check_base_url(value: str) -> str:
    """A base URL setting: http(s), a host, no credentials, no trailing slash."""
    value = value.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        raise ValueError("is not a valid URL") from None
    if url.userinfo:
        raise ValueError("must not contain credentials (configure them in their own fields)")
    if url.query or url.fragment:
        raise ValueError("must not have a query or fragment")
    return value


def normalize_base_url(value: str, *, strip_suffix: str = "") -> str:
    """The trackers' base URL setting: `value` without trailing slashes (nor
    `strip_suffix`); only http(s) URLs without credentials, query or fragment are
    accepted. (The forges use `check_base_url`, which parses with httpx.)"""
    value = value.strip().rstrip("/")
    if strip_suffix:
        value = re.sub(f"(?:{strip_suffix})$", "", value).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value, re.IGNORECASE):
        raise ValueError("must be an http:// or https:// URL")
    url = urlsplit(value)
    if url.username is not None or url.password is not None or "@" in url.netloc:
        raise ValueError("must not contain credentials (use the token settings)")
    if url.query or url.fragment:
        raise ValueError("must not have a query or fragment")
    try:
        _ = url.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not url.hostname:
        raise ValueError("must name a host")
    return value


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def display_url(url: str) -> str:
    """`url` without credentials embedded in it."""
    return re.sub(r"//[^/@]*@", "//", url)


# --- responses --------------------------------------------------------------------------


def parse_model(model: type[M], data: Any, *, provider: str, what: str) -> M:
    """`data` validated as `model`; `PluginError` (not KeyError/TypeError) otherwise.
    The message names the fields, never the values."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = []
        for error in exc.errors()[:3]:
            where = ".".join(str(part) for part in error["loc"]) or "body"
            fields.append(f"{where}: {error['msg']}")
        raise PluginError(
            f"{provider} sent an unexpected response for {what} ({'; '.join(fields)})."
        ) from None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a `Retry-After` value (delta-seconds, or an HTTP date − `now`), not
    yet bounded (NaN and negative numbers pass through); None if missing or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError, IndexError):
        return None


def clamp_wait(seconds: float) -> float:
    """`seconds` within [1 s, 1 h]."""
    return min(max(seconds, 1.0), RATE_LIMIT_MAX_SECONDS)


def wait_or_fallback(seconds: float | None, fallback: float) -> float:
    """`seconds` within [1 s, 1 h]; `fallback` (bounded too) when missing or NaN."""
    if seconds is None or seconds != seconds:
        seconds = fallback
    return float(clamp_wait(seconds))


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float:
    """The forges' wait: `Retry-After` (seconds or an HTTP date), else
    `X-RateLimit-Reset` (epoch seconds) − now, else a minute; within [1 s, 1 h]."""
    seconds = parse_retry_after(headers.get("retry-after"), now)
    if seconds is not None:
        return clamp_wait(seconds)
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            return clamp_wait(float(reset) - now)
        except ValueError:
            pass
    return RATE_LIMIT_FALLBACK_SECONDS


def is_rate_limited(response: httpx.Response, message: str | None = None) -> bool:
    """429, or 403 with `X-RateLimit-Remaining: 0`, a `Retry-After`, or "rate limit" in
    `message` (default: the start of the body) — how GitHub and Bitbucket say it."""
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    headers = response.headers
    if headers.get("x-ratelimit-remaining", "").strip() == "0" or "retry-after" in headers:
        return True
    text = response.text[:2000] if message is None else message
    return "rate limit" in text.lower()


def json_or_none(response: httpx.Response) -> Any:
    """The parsed JSON body, or None if it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def body_excerpt(response: httpx.Response) -> str:
    """A short excerpt of a body that is not JSON (nothing for an HTML page)."""
    if "html" in response.headers.get("content-type", ""):
        return ""
    return " ".join(response.text.split())[:200]


def short_text(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > ERROR_DETAIL_CHARS:
        text = text[:ERROR_DETAIL_CHARS] + "…"
    return text


# --- secrets ----------------------------------------------------------------------------


class Scrubber:
    """Masks credentials in text that leaves a plugin: each secret raw and
    percent-encoded (longest first), then whatever matches `patterns` (token shapes).
    Secrets shorter than `min_length` are left alone (too short to scrub without
    mangling ordinary text)."""

    def __init__(
        self,
        secrets: Iterable[str],
        patterns: Iterable[re.Pattern[str]] = (),
        *,
        min_length: int = 4,
    ) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret or len(secret) < min_length:
                continue
            forms.add(secret)
            forms.add(quote(secret, safe=""))
        self._secrets = sorted(forms, key=len, reverse=True)
        self._patterns = tuple(patterns)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for pattern in self._patterns:
            text = pattern.sub("***", text)
        return text


# --- the trackers' client --------------------------------------------------------------


class TrackerHttp:
    """A tracker's `httpx.AsyncClient` (created on first use, never following
    redirects; `aclose` closes it and a later request opens a new one). Timeouts,
    transport failures and redirects become `PluginError`s naming `service`; every
    secret, however short, is scrubbed (the trackers' settings accept any non-blank
    token)."""

    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        headers: Mapping[str, str],
        auth: httpx.Auth | None = None,
        timeout_seconds: float,
        secrets: Iterable[str],
        token_patterns: Iterable[re.Pattern[str]] = (),
    ) -> None:
        self.service = service
        self.base_url = base_url
        self._headers = dict(headers)
        self._auth = auth
        self._timeout_seconds = timeout_seconds
        self._scrubber = Scrubber(secrets, token_patterns, min_length=1)
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"TrackerHttp({self.service}, {display_url(self.base_url)!r})"

    def scrub(self, text: str) -> str:
        return self._scrubber.scrub(text)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request, whatever its status; a timeout or a transport failure is a
        `PluginError` saying so. `headers` are added to the client's (`If-None-Match`)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                auth=self._auth,
                headers=self._headers,
                timeout=self._timeout_seconds,
                follow_redirects=False,
            )
        try:
            return await self._client.request(
                method, url, params=params, json=json, headers=headers
            )
        except httpx.TimeoutException:
            raise PluginError(
                f"{self.service} at {self.base_url} did not answer within "
                f"{self._timeout_seconds:g}s ({what})."
            ) from None
        except httpx.HTTPError as exc:
            detail = self.scrub(str(exc)) or type(exc).__name__
            raise PluginError(
                f"Could not reach {self.service} at {self.base_url} ({what}): {detail}"
            ) from None

    def redirect_error(self, response: httpx.Response, what: str, hint: str) -> PluginError:
        """The `PluginError` for a 3xx answer; `hint` ends the message."""
        location = self.scrub(response.headers.get("location", ""))
        return PluginError(
            f"{self.service} redirected {what} (HTTP {response.status_code}) to "
            f"{location or 'another address'}{hint}",
            status=response.status_code,
        )


# --- the provider description -----------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """What differs between forges in the shared plumbing."""

    name: str  # "GitHub"
    credentials_hint: str  # e.g. "Check plugins.installed.github.config.token."
    error_detail: Callable[[Any], str]  # the provider's message from an error body
    token_patterns: tuple[re.Pattern[str], ...] = ()
    auth_subject: str = "the credentials"  # "GitHub rejected the token"


@dataclass(frozen=True)
class Page:
    url: str
    body: Any
    next_url: str | None  # from a `Link: rel="next"` header
    fresh: bool  # False: answered 304 from the cache


@dataclass
class _Cached:
    etag: str
    body: Any
    next_url: str | None


@dataclass
class EtagCache:
    """The last `ETag`ed body of each GET URL (least recently used evicted)."""

    limit: int = CACHE_ENTRIES
    _entries: OrderedDict[str, _Cached] = field(default_factory=OrderedDict)

    def get(self, key: str) -> _Cached | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: _Cached) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


# --- the forges' client -----------------------------------------------------------------


class ForgeHttp:
    """One plugin instance's HTTP client (created lazily, closed by `aclose`)."""

    def __init__(
        self,
        provider: Provider,
        *,
        base_url: str,
        headers: Mapping[str, str],
        auth: httpx.Auth | None = None,
        secrets: Iterable[str] = (),
        timeout: float = 30.0,
        max_retries: int = 2,
        retry_backoff: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.clock: Callable[[], float] = clock or time.time
        self.cache = EtagCache()
        self._headers = dict(headers)
        self._auth = auth
        self._timeout = timeout
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        self._origin = _origin(httpx.URL(self.base_url))
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scrubber = Scrubber(secrets, provider.token_patterns)

    def __repr__(self) -> str:
        return f"ForgeHttp({self.provider.name}, {display_url(self.base_url)!r})"

    # -- lifecycle --

    def client(self) -> httpx.AsyncClient:
        """The client of the running event loop (a connection pool belongs to its loop;
        a plugin reused after `aclose` or from another loop gets a fresh one)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.base_url + "/",
                headers=self._headers,
                auth=self._auth,
                timeout=self._timeout,
                follow_redirects=True,
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        loop, self._loop = self._loop, None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    # -- secrets --

    def scrub(self, text: str) -> str:
        return self._scrubber.scrub(text)

    # -- requests --

    async def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        allow: Collection[int] = (),
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request; a 2xx (or a status in `allow`) is returned, anything else
        raised as the matching `PluginError`."""
        request = self._build(method, url, json=json, params=params, headers=headers)
        response = await self._send(request, what)
        if response.status_code in OK_STATUSES or response.status_code in allow:
            return response
        raise self.error_for(response, what)

    async def get(
        self, url: str, *, what: str, params: Mapping[str, str | int] | None = None
    ) -> Page:
        """A conditional GET: `If-None-Match` with the cached ETag, a 304 answered from
        the cache. The body is parsed JSON."""
        request = self._build("GET", url, params=params)
        key = str(request.url)
        cached = self.cache.get(key)
        if cached is not None:
            request.headers["If-None-Match"] = cached.etag
        response = await self._send(request, what)
        if response.status_code == 304 and cached is not None:
            next_url = _next_link(response) or cached.next_url
            return Page(key, cached.body, next_url, fresh=False)
        if response.status_code not in OK_STATUSES:
            raise self.error_for(response, what)
        body = self.json_body(response, what)
        next_url = _next_link(response)
        etag = response.headers.get("etag")
        if etag:
            self.cache.put(key, _Cached(etag, body, next_url))
        else:
            self.cache.drop(key)
        return Page(key, body, next_url, fresh=True)

    async def list_link_pages(
        self,
        path: str,
        *,
        what: str,
        page_size: int,
        params: Mapping[str, str | int] | None = None,
    ) -> list[Any]:
        """Every item of a list paginated with `Link: rel="next"` (`per_page`/`page`).

        A last page that is full is followed by a probe of the page after it: an ETag
        is computed from the body, so a page that did not change answers 304 even when
        a new page was appended behind it."""
        items: list[Any] = []
        url: str | None = path
        query: Mapping[str, str | int] | None = {**(params or {}), "per_page": page_size}
        visited: set[str] = set()
        while url is not None:
            page = await self.get(url, what=what, params=query)
            query = None
            self._note_page(visited, page.url, what)
            if not isinstance(page.body, list):
                raise PluginError(
                    f"{self.provider.name} sent an unexpected response for {what} "
                    "(expected a list)."
                )
            items.extend(page.body)
            url = page.next_url
            if url is None and len(page.body) >= page_size:
                url = _following_page(page.url)
            if url is not None:
                url = self.same_origin(url, what)
        return items

    def _note_page(self, visited: set[str], url: str, what: str) -> None:
        """Guard against pagination that loops or never ends."""
        if url in visited or len(visited) >= MAX_PAGES:
            raise PluginError(f"{self.provider.name}: the pages of {what} do not end.")
        visited.add(url)

    async def list_body_pages(
        self,
        path: str,
        *,
        what: str,
        page_size: int,
        params: Mapping[str, str | int] | None = None,
    ) -> list[Any]:
        """Every item of a list paginated by a `next` URL in the body (`values`)."""
        items: list[Any] = []
        url: str | None = path
        query: Mapping[str, str | int] | None = {**(params or {}), "pagelen": page_size}
        visited: set[str] = set()
        while url is not None:
            page = await self.get(url, what=what, params=query)
            query = None
            self._note_page(visited, page.url, what)
            parsed = parse_model(_BodyPage, page.body, provider=self.provider.name, what=what)
            items.extend(parsed.values)
            url = self.same_origin(parsed.next, what) if parsed.next else None
        return items

    def same_origin(self, url: str, what: str) -> str:
        """`url` if it is on the API's scheme, host and port (credentials go with it)."""
        try:
            origin = _origin(httpx.URL(url))
        except httpx.InvalidURL:
            origin = None
        if origin != self._origin:
            raise PluginError(
                f"{self.provider.name} sent a pagination link for {what} that leaves "
                f"{display_url(self.base_url)}; refusing to follow it."
            )
        return url

    def json_body(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise PluginError(
                f"{self.provider.name} sent a response for {what} that is not JSON "
                f"(status {response.status_code})."
            ) from None

    # -- internals --

    def _build(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        if "://" not in url:
            url = url.lstrip("/")
        return self.client().build_request(
            method, url, json=json, params=dict(params) if params else None, headers=headers
        )

    async def _send(self, request: httpx.Request, what: str) -> httpx.Response:
        idempotent = request.method in ("GET", "HEAD")
        attempt = 0
        while True:
            try:
                response = await self.client().send(request)
            except httpx.TransportError as exc:
                if idempotent and attempt < self._max_retries:
                    attempt = await self._backoff(attempt, f"{type(exc).__name__} for {what}")
                    continue
                detail = self.scrub(str(exc)) or type(exc).__name__
                raise PluginError(
                    f"Cannot reach {self.provider.name} at {display_url(self.base_url)} "
                    f"({what}): {detail}"
                ) from None
            if (
                response.status_code in RETRYABLE_STATUSES
                and idempotent
                and attempt < self._max_retries
            ):
                attempt = await self._backoff(attempt, f"{response.status_code} for {what}")
                continue
            if is_rate_limited(response):
                raise self._rate_limited(response, what)
            return response

    async def _backoff(self, attempt: int, summary: str) -> int:
        delay = min(BACKOFF_CAP_SECONDS, self._retry_backoff * 2**attempt)
        logger.warning(
            "%s: %s; retry %d/%d in %.1fs",
            self.provider.name,
            self.scrub(summary),
            attempt + 1,
            self._max_retries,
            delay,
        )
        await asyncio.sleep(delay)
        return attempt + 1

    def _rate_limited(self, response: httpx.Response, what: str) -> PluginRateLimited:
        wait = retry_after_seconds(response.headers, self.clock())
        detail = self.detail(response)
        resource = response.headers.get("x-ratelimit-resource")
        which = f" ({resource})" if resource else ""
        return PluginRateLimited(
            f"{self.provider.name} rate limit{which} reached ({response.status_code}) for "
            f"{what}: {detail}. Retry in {wait:.0f}s.",
            retry_after=wait,
            status=response.status_code,
        )

    def error_for(self, response: httpx.Response, what: str) -> PluginError:
        """The `PluginError` for a failed response (message scrubbed)."""
        status = response.status_code
        name = self.provider.name
        detail = self.detail(response)
        if status == 401:
            return PluginAuthError(
                f"{name} rejected {self.provider.auth_subject} (401: {detail}). "
                f"{self.provider.credentials_hint}",
                status=status,
            )
        if status == 403:
            return PluginAuthError(
                f"{name} refused access to {what} (403: {detail}). Check that "
                f"{self.provider.auth_subject} may do this.",
                status=status,
            )
        if status == 404:
            return PluginNotFoundError(
                f"{name}: {what} not found (404: {detail}). Check the name, and that "
                f"{self.provider.auth_subject} can see it.",
                status=status,
            )
        if status >= 500:
            return PluginError(f"{name} failed on {what} ({status}: {detail}).", status=status)
        return PluginError(
            f"{name} refused the request on {what} ({status}): {detail}", status=status
        )

    def detail(self, response: httpx.Response) -> str:
        """The provider's message from a failed response (scrubbed, shortened)."""
        body = json_or_none(response)
        detail = ""
        if body is not None:
            try:
                detail = self.provider.error_detail(body)
            except Exception:  # a provider's message extractor must never mask the error
                detail = ""
        if not detail:
            detail = short_text(response.text) if response.text.strip() else response.reason_phrase
        return self.scrub(short_text(detail)) or str(response.status_code)


class _BodyPage(BaseModel):
    values: list[Any]
    next: str | None = None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host.lower(), url.port or default)


def _next_link(response: httpx.Response) -> str | None:
    link = response.links.get("next")
    url = link.get("url") if link else None
    return url or None


def _following_page(url: str) -> str:
    parsed = httpx.URL(url)
    try:
        current = int(parsed.params.get("page", "1"))
    except ValueError:
        current = 1
    return str(parsed.copy_set_param("page", str(current + 1)))
