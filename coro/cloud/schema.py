"""The cloud's PostgreSQL tables (SQLAlchemy Core); `migrations/` creates them.

Secrets at rest: passwords are argon2id hashes; refresh and runner tokens are stored as
the SHA-256 of a 256-bit random token (see `coro.cloud.tokens`); webhook secrets are
stored as given, because verifying an HMAC needs the key itself.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
)

metadata = MetaData()

ROLES = ("admin", "member")


def _now(name: str, *, nullable: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable, server_default=func.now())


def _when(name: str) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=True)


users = Table(
    "users",
    metadata,
    Column("id", Text, primary_key=True),
    # normalised (trimmed, lower-cased) by the application: one account per address
    Column("email", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    # NULL for an account that only signs in with GitHub
    Column("password_hash", Text, nullable=True),
    Column("github_id", BigInteger, nullable=True, unique=True),
    _now("created_at"),
)

#: One signed-in client: the family of its refresh tokens. Access tokens name it (`sid`)
#: and stop working when it is revoked (logout, or a refresh token presented twice).
auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    _now("created_at"),
    _when("revoked_at"),
    Index("auth_sessions_user_idx", "user_id"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, ForeignKey("auth_sessions.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    _now("created_at"),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # set when the token is exchanged (rotation) or its session ends
    _when("revoked_at"),
    Index("refresh_tokens_session_idx", "session_id"),
)

#: Failed logins in the current window, per key (`account:<email>` or `ip:<address>`).
login_failures = Table(
    "login_failures",
    metadata,
    Column("key", Text, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Index("login_failures_window_idx", "window_start"),
)

teams = Table(
    "teams",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("slug", Text, nullable=False, unique=True),
    _now("created_at"),
    _now("updated_at"),
)

team_members = Table(
    "team_members",
    metadata,
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", Text, nullable=False),
    _now("joined_at"),
    CheckConstraint("role IN ('admin', 'member')", name="team_members_role_check"),
    Index("team_members_user_idx", "user_id"),
)

runner_tokens = Table(
    "runner_tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_by", Text, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    _now("created_at"),
    _when("last_used_at"),
    _when("revoked_at"),
    Index("runner_tokens_team_idx", "team_id"),
)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("plugin_id", Text, primary_key=True),
    Column("secret", Text, nullable=False),
    _now("created_at"),
    _now("updated_at"),
)
