"""A loopback fake of GitHub's OAuth web flow and the two API calls a login needs.

GitHub's wire format: `GET /login/oauth/authorize` (client_id, redirect_uri, scope,
state, code_challenge[_method]) redirects back to `redirect_uri?code=…&state=…` (the
user of the fake approves at once, unless `deny` is set: `?error=access_denied`);
`POST /login/oauth/access_token` (form body: client_id, client_secret, code,
redirect_uri, code_verifier) answers `access_token`, `token_type`, `scope` — as JSON
when asked with `Accept: application/json`, else form-encoded — and a failure is a
200 with `error` (`bad_verification_code`, `incorrect_client_credentials`,
`redirect_uri_mismatch`); `GET /user` and `GET /user/emails` take
`Authorization: Bearer|token <access token>` (401 `Bad credentials` otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tests.fakes.http_server import Answer, ForgeServer, RecordedRequest


@dataclass
class GitHubUser:
    id: int
    login: str
    name: str | None
    emails: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def with_email(cls, id: int, login: str, email: str, *, verified: bool = True) -> GitHubUser:
        return cls(
            id,
            login,
            login.title(),
            [{"email": email, "primary": True, "verified": verified, "visibility": "private"}],
        )


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str | None
    user: GitHubUser


class GitHubOAuthServer(ForgeServer):
    def __init__(self, client_id: str, client_secret: str) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.user = GitHubUser.with_email(1001, "octocat", "octocat@example.com")
        self.deny = False
        self._codes: dict[str, _Grant] = {}
        self._tokens: dict[str, GitHubUser] = {}

    @property
    def authorize_url(self) -> str:
        return f"{self.root}/login/oauth/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.root}/login/oauth/access_token"

    async def handle(self, request: RecordedRequest) -> Answer:
        route = (request.method, request.path)
        if route == ("GET", "/login/oauth/authorize"):
            return self._authorize(request)
        if route == ("POST", "/login/oauth/access_token"):
            return self._access_token(request)
        if route == ("GET", "/user"):
            return self._api(request, lambda u: {"id": u.id, "login": u.login, "name": u.name})
        if route == ("GET", "/user/emails"):
            return self._api(request, lambda u: u.emails)
        return await super().handle(request)

    def _authorize(self, request: RecordedRequest) -> Answer:
        query = request.query
        if query.get("client_id") != self.client_id or "redirect_uri" not in query:
            return Answer(404, "Not Found", content_type="text/html")
        back = {"state": query.get("state", "")}
        if self.deny:
            back |= {"error": "access_denied", "error_description": "The user denied it."}
        else:
            code = secrets.token_hex(10)
            self._codes[code] = _Grant(
                self.client_id, query["redirect_uri"], query.get("code_challenge"), self.user
            )
            back["code"] = code
        return Answer(302, None, {"location": f"{query['redirect_uri']}?{urlencode(back)}"})

    def _access_token(self, request: RecordedRequest) -> Answer:
        form = dict(parse_qsl(request.raw.decode()))
        grant = self._codes.pop(form.get("code", ""), None)
        if form.get("client_id") != self.client_id or form.get("client_secret") != (
            self.client_secret
        ):
            return self._token_answer(request, {"error": "incorrect_client_credentials"})
        if grant is None or not _pkce_ok(grant.challenge, form.get("code_verifier")):
            return self._token_answer(request, {"error": "bad_verification_code"})
        if form.get("redirect_uri", grant.redirect_uri) != grant.redirect_uri:
            return self._token_answer(request, {"error": "redirect_uri_mismatch"})
        token = "gho_" + secrets.token_hex(18)
        self._tokens[token] = grant.user
        return self._token_answer(
            request,
            {"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"},
        )

    def _token_answer(self, request: RecordedRequest, fields: dict[str, str]) -> Answer:
        if "application/json" in request.headers.get("accept", ""):
            return Answer(200, fields)
        return Answer(200, urlencode(fields), content_type="application/x-www-form-urlencoded")

    def _api(self, request: RecordedRequest, render: Any) -> Answer:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        user = self._tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if user is None:
            return Answer(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                },
            )
        return Answer(200, render(user))


def _pkce_ok(challenge: str | None, verifier: str | None) -> bool:
    if challenge is None:
        return True
    if not verifier:
        return False
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge
