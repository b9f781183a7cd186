"""Protections of a local server (SPEC §2.8), as one ASGI middleware.

- `Host` must name the bound address or localhost, and the port the request came in on
  (no port: the scheme's default) (DNS rebinding, and other local ports' proxies).
- State-changing requests with a foreign `Origin`, or from another site by the browser's
  `Sec-Fetch-Site` and without an `Origin`, are refused (CSRF from any web page).
- With `apiToken` configured, every API call carries `Authorization: Bearer <token>`.
- Request bodies are capped and must be JSON; oversize bodies get 413, never a hang.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 4 * 1024 * 1024
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Reachable without the token: liveness and the dashboard's static files.
PUBLIC_PREFIXES = ("/health", "/dashboard", "/favicon.ico")


def _hostname(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _split_host(value: str) -> tuple[str, int | None] | None:
    """A `Host` header as (name, port or None); None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    elif value.count(":") > 1:  # a bare IPv6 address, no port
        return value, None
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest in ("", ":"):  # an empty port is the default one (RFC 3986)
        return name, None
    digits = rest[1:]
    if not rest.startswith(":") or not (digits.isascii() and digits.isdigit()):
        return None
    return name, int(digits)


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        bind_host: str,
        port: int,
        api_token: Callable[[], str | None],
        extra_hosts: Iterable[str] = (),
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.port = port
        self.api_token = api_token
        self.max_body = max_body
        bound = _hostname(bind_host)
        self.any_host = bound in ("0.0.0.0", "::", "[::]")
        self.allowed_hosts = {*LOOPBACK_NAMES, bound, *(_hostname(h) for h in extra_hosts)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        path = scope["path"]
        host = headers.get("host", "")
        if not self._host_allowed(host, scope):
            await _error(send, 403, f"Host '{host}' is not allowed")
            return
        origin = headers.get("origin")
        if method in STATE_CHANGING and (
            (origin is not None and not self._same_origin(origin))
            # a browser saying the request comes from another site, without an Origin
            # to check (privacy settings and extensions strip it)
            or (origin is None and headers.get("sec-fetch-site") == "cross-site")
        ):
            await _error(send, 403, "Cross-origin requests are not allowed")
            return
        token = self.api_token()  # read per request: PUT /config can rotate it
        if token and not path.startswith(PUBLIC_PREFIXES) and path != "/":
            supplied = headers.get("authorization", "")
            expected = f"Bearer {token}"
            if not hmac.compare_digest(supplied.encode(), expected.encode()):
                await _error(send, 401, "Missing or invalid API token")
                return
        if method in STATE_CHANGING:
            body_check = await self._read_body(headers, receive, send)
            if body_check is None:
                return
            receive = body_check
        await self.app(scope, receive, send)

    def _host_allowed(self, host: str, scope: Scope) -> bool:
        parsed = _split_host(host)
        if parsed is None:
            return False
        name, port = parsed
        if not self.any_host and name not in self.allowed_hosts:
            return False
        default = 443 if scope.get("scheme") == "https" else 80
        return (port if port is not None else default) == self._local_port(scope, default)

    def _local_port(self, scope: Scope, default: int) -> int:
        """The port the request came in on: the listening socket's (uvicorn's `server`),
        or for an in-process call (httpx's ASGITransport) its URL's."""
        server = scope.get("server")
        if server is None:
            return self.port
        port = server[1]
        return default if port is None else int(port)

    def _same_origin(self, origin: str) -> bool:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        name = parts.hostname.lower()
        name = f"[{name}]" if ":" in name else name
        if not self.any_host and name not in self.allowed_hosts:
            return False
        return (parts.port or (443 if parts.scheme == "https" else 80)) == self.port

    async def _read_body(
        self, headers: dict[str, str], receive: Receive, send: Send
    ) -> Receive | None:
        """Buffer the body (bounded), check its type, and replay it to the app."""
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _error(send, 400, "Invalid Content-Length")
                return None
            if int(declared) > self.max_body:
                await _error(send, 413, f"Request body exceeds {self.max_body} bytes")
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _error(send, 413, f"Request body exceeds {self.max_body} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if body.strip() and not (
            content_type == "application/json" or content_type.endswith("+json")
        ):
            await _error(send, 415, "Request bodies must be application/json")
            return None
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


async def _error(send: Send, status: int, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
