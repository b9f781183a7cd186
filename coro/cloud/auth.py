"""Users and their sessions: sign-up, login, rotating refresh tokens, logout.

A *session* is one signed-in client. It holds a family of refresh tokens of which at
most one is live: `refresh` revokes the presented token and issues its successor in the
same session. A refresh token presented again after it was exchanged (a stolen copy, or
the client's own copy replayed by an attacker) revokes the whole session, so whichever
party holds the newer token is signed out too and must log in again. Access tokens name
their session (`sid`) and stop working the moment it is revoked: every request reads
the user and the session from the database (`authenticate`).
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.cloud.db import AnyRow, Database
from coro.cloud.errors import Conflict, Unauthorized
from coro.cloud.passwords import Passwords
from coro.cloud.schema import auth_sessions, refresh_tokens, team_members, users
from coro.cloud.throttle import Throttle
from coro.cloud.tokens import (
    REFRESH_PREFIX,
    Jwt,
    TokenError,
    looks_opaque,
    new_opaque,
    opaque_hash,
)

logger = logging.getLogger(__name__)

INVALID_REFRESH = "Invalid or expired refresh token"


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Issued:
    """What a successful sign-in or refresh hands the client."""

    user: User
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class Principal:
    """The caller of an authenticated request."""

    user: User
    session_id: str


class _Refresh(enum.Enum):
    ROTATED = "rotated"
    REUSED = "reused"
    INVALID = "invalid"


def user_from_row(row: AnyRow) -> User:
    return User(id=row.id, email=row.email, name=row.name, created_at=row.created_at)


USER_COLUMNS = (users.c.id, users.c.email, users.c.name, users.c.created_at)


class Auth:
    def __init__(
        self,
        db: Database,
        jwt: Jwt,
        passwords: Passwords,
        throttle: Throttle,
        refresh_ttl_seconds: int,
    ) -> None:
        self.db = db
        self.jwt = jwt
        self.passwords = passwords
        self.throttle = throttle
        self.refresh_ttl = timedelta(seconds=refresh_ttl_seconds)

    # ------------------------------------------------------------------ sign-up, login

    async def signup(self, email: str, name: str, password: str, address: str | None) -> Issued:
        await self.throttle.check_signup(address)
        password_hash = await self.passwords.hash(password)
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    insert(users)
                    .values(
                        id=str(uuid.uuid4()), email=email, name=name, password_hash=password_hash
                    )
                    .on_conflict_do_nothing(index_elements=[users.c.email])
                    .returning(*USER_COLUMNS)
                )
            ).first()
            if row is None:
                raise Conflict("Email already registered")
            return await self.start_session(connection, user_from_row(row))

    async def login(self, email: str, password: str, address: str | None) -> Issued:
        await self.throttle.check(email, address)
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    select(*USER_COLUMNS, users.c.password_hash).where(users.c.email == email)
                )
            ).first()
        stored = row.password_hash if row is not None else None
        if not await self.passwords.verify(stored, password) or row is None:
            await self.throttle.failed(email, address)
            raise Unauthorized("Invalid credentials")
        await self.throttle.succeeded(email)
        async with self.db.begin() as connection:
            if stored is not None and self.passwords.needs_rehash(stored):
                await connection.execute(
                    update(users)
                    .where(users.c.id == row.id)
                    .values(password_hash=await self.passwords.hash(password))
                )
            return await self.start_session(connection, user_from_row(row))

    async def start_session(self, connection: AsyncConnection, user: User) -> Issued:
        """A new session for `user` with its first refresh token (inside the caller's
        transaction)."""
        session_id = str(uuid.uuid4())
        await connection.execute(auth_sessions.insert().values(id=session_id, user_id=user.id))
        return await self._issue(connection, user, session_id)

    async def _issue(self, connection: AsyncConnection, user: User, session_id: str) -> Issued:
        refresh = new_opaque(REFRESH_PREFIX)
        await connection.execute(
            refresh_tokens.insert().values(
                id=str(uuid.uuid4()),
                session_id=session_id,
                token_hash=opaque_hash(refresh),
                expires_at=func.now() + self.refresh_ttl,
            )
        )
        team_ids = (
            await connection.scalars(
                select(team_members.c.team_id)
                .where(team_members.c.user_id == user.id)
                .order_by(team_members.c.joined_at)
            )
        ).all()
        access = self.jwt.access_token(
            user_id=user.id, email=user.email, session_id=session_id, team_ids=list(team_ids)
        )
        return Issued(user, access, refresh, self.jwt.access_ttl_seconds)

    # ------------------------------------------------------------------ refresh, logout

    async def refresh(self, token: str) -> Issued:
        if not looks_opaque(token, REFRESH_PREFIX):
            raise Unauthorized(INVALID_REFRESH)
        token_hash = opaque_hash(token)
        async with self.db.begin() as connection:
            outcome, issued = await self._rotate(connection, token_hash)
        if outcome is _Refresh.REUSED:
            logger.warning("a refresh token was presented twice: its session is revoked")
        if issued is None:
            raise Unauthorized(INVALID_REFRESH)
        return issued

    async def _rotate(
        self, connection: AsyncConnection, token_hash: str
    ) -> tuple[_Refresh, Issued | None]:
        # One statement both checks and consumes the token, so of two concurrent
        # refreshes with the same token exactly one rotates (the other is a reuse).
        consumed = (
            await connection.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.token_hash == token_hash,
                    refresh_tokens.c.revoked_at.is_(None),
                    refresh_tokens.c.expires_at > func.now(),
                )
                .values(revoked_at=func.now())
                .returning(refresh_tokens.c.session_id)
            )
        ).first()
        if consumed is None:
            known = (
                await connection.execute(
                    select(refresh_tokens.c.session_id, refresh_tokens.c.revoked_at).where(
                        refresh_tokens.c.token_hash == token_hash
                    )
                )
            ).first()
            if known is None or known.revoked_at is None:
                return _Refresh.INVALID, None  # unknown, or merely expired
            await self._revoke_session(connection, known.session_id)
            return _Refresh.REUSED, None
        row = (
            await connection.execute(
                select(*USER_COLUMNS)
                .join(auth_sessions, auth_sessions.c.user_id == users.c.id)
                .where(
                    auth_sessions.c.id == consumed.session_id,
                    auth_sessions.c.revoked_at.is_(None),
                )
            )
        ).first()
        if row is None:
            return _Refresh.INVALID, None
        return _Refresh.ROTATED, await self._issue(
            connection, user_from_row(row), consumed.session_id
        )

    async def logout(self, token: str) -> None:
        """End the session `token` belongs to; unknown tokens are ignored (no oracle)."""
        if not looks_opaque(token, REFRESH_PREFIX):
            return
        async with self.db.begin() as connection:
            session_id = (
                await connection.execute(
                    select(refresh_tokens.c.session_id).where(
                        refresh_tokens.c.token_hash == opaque_hash(token)
                    )
                )
            ).scalar_one_or_none()
            if session_id is not None:
                await self._revoke_session(connection, session_id)

    async def _revoke_session(self, connection: AsyncConnection, session_id: str) -> None:
        await connection.execute(
            update(auth_sessions)
            .where(auth_sessions.c.id == session_id, auth_sessions.c.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
        await connection.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.session_id == session_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )

    # ------------------------------------------------------------------ every request

    async def authenticate(self, access_token: str) -> Principal:
        try:
            claims = self.jwt.verify_access(access_token)
        except TokenError as exc:
            raise Unauthorized(str(exc)) from None
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    select(*USER_COLUMNS)
                    .join(auth_sessions, auth_sessions.c.user_id == users.c.id)
                    .where(
                        users.c.id == claims.user_id,
                        auth_sessions.c.id == claims.session_id,
                        auth_sessions.c.revoked_at.is_(None),
                    )
                )
            ).first()
        if row is None:
            raise Unauthorized("Invalid or expired token")
        return Principal(user=user_from_row(row), session_id=claims.session_id)
