"""Signing in with GitHub (OAuth 2 authorization code, with PKCE), when configured.

`start` sends the browser to GitHub's authorize endpoint with a random `state` and a
PKCE challenge; both secrets also go into a short-lived cookie (a signed JWT), so the
callback accepts only the browser that started the flow (no login CSRF) and only
within ten minutes. `finish` exchanges the code (authlib), reads `/user` and
`/user/emails`, and signs the person in: the account linked to that GitHub id, else the
account with the same verified primary email (then linked), else a new account without
a password.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.cloud.auth import USER_COLUMNS, Auth, Issued, User, user_from_row
from coro.cloud.db import Database
from coro.cloud.errors import BadGateway, BadRequest, Conflict, Unauthorized
from coro.cloud.schema import users
from coro.cloud.settings import GitHubOAuth
from coro.cloud.tokens import Jwt, TokenError

logger = logging.getLogger(__name__)

STATE_COOKIE = "coro_github_oauth"
STATE_TTL_SECONDS = 600
SCOPE = "read:user user:email"
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Started:
    authorize_url: str
    cookie: str  # the value of STATE_COOKIE


@dataclass(frozen=True)
class GitHubProfile:
    id: int
    login: str
    name: str
    email: str  # the verified primary email


class GitHubLogin:
    def __init__(self, oauth: GitHubOAuth, jwt: Jwt, auth: Auth, db: Database) -> None:
        self.oauth = oauth
        self.jwt = jwt
        self.auth = auth
        self.db = db

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.oauth.client_id,
            client_secret=self.oauth.client_secret,
            # GitHub takes the client's credentials as form fields of the token request
            token_endpoint_auth_method="client_secret_post",
            scope=SCOPE,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=TIMEOUT_SECONDS,
        )

    def start(self, redirect_uri: str) -> Started:
        state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        url, _ = self._client(redirect_uri).create_authorization_url(
            self.oauth.authorize_url, state=state, code_verifier=verifier
        )
        cookie = self.jwt.sign(
            {"type": "github-oauth", "state": state, "verifier": verifier}, STATE_TTL_SECONDS
        )
        return Started(authorize_url=url, cookie=cookie)

    async def finish(
        self, *, code: str, state: str, cookie: str | None, redirect_uri: str
    ) -> Issued:
        if not cookie:
            raise BadRequest(
                "GitHub sign-in expired or was started in another browser; start it again"
            )
        try:
            started = self.jwt.verify(cookie, "github-oauth")
        except TokenError:
            raise BadRequest("GitHub sign-in expired; start it again") from None
        expected = str(started.get("state", ""))
        if not hmac.compare_digest(expected.encode(), state.encode()):
            raise BadRequest("GitHub sign-in state does not match; start it again")
        profile = await self._profile(code, str(started.get("verifier", "")), redirect_uri)
        return await self._sign_in(profile)

    async def _profile(self, code: str, verifier: str, redirect_uri: str) -> GitHubProfile:
        async with self._client(redirect_uri) as client:
            try:
                await client.fetch_token(self.oauth.token_url, code=code, code_verifier=verifier)
                user = await _json(client, f"{self.oauth.api_url}/user")
                emails = await _json(client, f"{self.oauth.api_url}/user/emails")
            except OAuthError as exc:
                raise Unauthorized(f"GitHub refused the sign-in: {exc.error}") from None
            except (httpx.HTTPError, ValueError):
                logger.warning("GitHub sign-in failed: GitHub did not answer as expected")
                raise BadGateway("GitHub did not answer as expected; try again") from None
        if not isinstance(user, dict) or not isinstance(user.get("id"), int):
            raise BadGateway("GitHub returned no user")
        listed = emails if isinstance(emails, list) else []
        primary = next(
            (e for e in listed if isinstance(e, dict) and e.get("primary") and e.get("verified")),
            None,
        )
        if primary is None or not isinstance(primary.get("email"), str):
            raise Unauthorized("Your GitHub account has no verified primary email address")
        login = str(user.get("login") or user["id"])
        return GitHubProfile(
            id=user["id"],
            login=login,
            name=str(user.get("name") or login)[:200],
            email=primary["email"].strip().lower(),
        )

    async def _sign_in(self, profile: GitHubProfile) -> Issued:
        async with self.db.begin() as connection:
            user = await self._account(connection, profile)
            return await self.auth.start_session(connection, user)

    async def _account(self, connection: AsyncConnection, profile: GitHubProfile) -> User:
        """The account linked to this GitHub user, linking or creating one if need be."""
        linked = (
            await connection.execute(select(*USER_COLUMNS).where(users.c.github_id == profile.id))
        ).first()
        if linked is not None:
            return user_from_row(linked)
        by_email = (
            await connection.execute(
                select(*USER_COLUMNS, users.c.github_id)
                .where(users.c.email == profile.email)
                .with_for_update()
            )
        ).first()
        if by_email is not None:
            if by_email.github_id is not None:
                raise Conflict(
                    "This email address belongs to an account linked to another GitHub user"
                )
            await connection.execute(
                update(users).where(users.c.id == by_email.id).values(github_id=profile.id)
            )
            return user_from_row(by_email)
        created = (
            await connection.execute(
                insert(users)
                .values(
                    id=str(uuid.uuid4()),
                    email=profile.email,
                    name=profile.name,
                    github_id=profile.id,
                )
                .on_conflict_do_nothing()
                .returning(*USER_COLUMNS)
            )
        ).first()
        if created is None:  # a concurrent sign-in of the same person got there first
            raise Conflict("Sign-in raced with another; try again")
        return user_from_row(created)


async def _json(client: AsyncOAuth2Client, url: str) -> Any:
    response = await client.get(url, headers={"Accept": "application/vnd.github+json"})
    response.raise_for_status()
    return response.json()
