"""Access tokens (HS256 JWTs) and opaque secrets (refresh and runner tokens).

Access tokens are short-lived and carry `sub` (user id), `email`, `sid` (the session,
see `auth`), `teamIds` (informational: a snapshot at issue time, never used to
authorise — membership and role are read from the database on every request),
`type: "access"`, `iat`, `exp`, `iss`.

Refresh and runner tokens are opaque: a prefix and 256 random bits. The database keeps
their SHA-256 only. A slow password hash (argon2, bcrypt) exists to make guessing a
low-entropy secret expensive; a 256-bit random token cannot be guessed however fast the
hash, and a fast hash is an indexed lookup on every runner connect instead of a
CPU-priced KDF anyone can make the server run. A pepper would add nothing to that and
tie every token to one more server secret.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

REFRESH_PREFIX = "coro_rf_"
RUNNER_PREFIX = "coro_rt_"
#: The longest opaque token accepted as input (a prefix and 43 base64url characters).
MAX_OPAQUE_LENGTH = 64


class TokenError(Exception):
    """A JWT that does not verify; the message is safe to return to the client."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    session_id: str


class Jwt:
    """Signs and verifies the cloud's HS256 JWTs (`JWT_SECRET`, `JWT_ISSUER`)."""

    def __init__(self, secret: str, issuer: str, access_ttl_seconds: int) -> None:
        self._key = secret.encode()
        self.issuer = issuer
        self.access_ttl_seconds = access_ttl_seconds

    def __repr__(self) -> str:
        return f"Jwt(issuer={self.issuer!r})"

    def sign(self, claims: dict[str, Any], ttl_seconds: int) -> str:
        now = int(time.time())
        payload = {**claims, "iat": now, "exp": now + ttl_seconds, "iss": self.issuer}
        return jwt.encode(payload, self._key, algorithm="HS256")

    def verify(self, token: str, kind: str) -> dict[str, Any]:
        """The claims of a valid, unexpired token of this `type`; else TokenError."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss"]},
            )
        except jwt.PyJWTError:
            raise TokenError("Invalid or expired token") from None
        if claims.get("type") != kind:
            raise TokenError("Invalid token type")
        return claims

    def access_token(
        self, *, user_id: str, email: str, session_id: str, team_ids: list[str]
    ) -> str:
        claims = {
            "sub": user_id,
            "email": email,
            "sid": session_id,
            "teamIds": team_ids,
            "type": "access",
        }
        return self.sign(claims, self.access_ttl_seconds)

    def verify_access(self, token: str) -> AccessClaims:
        claims = self.verify(token, "access")
        user_id, session_id = claims.get("sub"), claims.get("sid")
        if not isinstance(user_id, str) or not isinstance(session_id, str):
            raise TokenError("Invalid or expired token")
        return AccessClaims(user_id=user_id, session_id=session_id)


def new_opaque(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def opaque_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_opaque(token: str, prefix: str) -> bool:
    """Cheap shape check before a lookup: the right prefix, a sane length."""
    return token.startswith(prefix) and len(token) <= MAX_OPAQUE_LENGTH
