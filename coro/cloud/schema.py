"""The cloud's PostgreSQL tables (SQLAlchemy Core); `migrations/` creates them.

Secrets at rest: passwords are argon2id hashes; refresh and runner tokens are stored as
the SHA-256 of a 256-bit random token (see `coro.cloud.tokens`); webhook secrets are
stored as given, because verifying an HMAC needs the key itself, and so are the secrets
of notification channels, because sending needs them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

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

# --------------------------------------------------------------------------- team jobs
# The cloud's copy of each team's jobs. A runner replicates the jobs it owns (their whole
# JSON with a revision that only grows, and their indexed log lines); the cloud writes a
# job itself only while no runner owns it. Every key starts with the team.

team_jobs = Table(
    "team_jobs",
    metadata,
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("id", Text, primary_key=True),
    # the last revision stored: a replayed or late write with a lower one is ignored
    Column("rev", BigInteger, nullable=False),
    # the runner that owns the job (runs it); NULL while it waits for one
    Column("runner_id", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("workflow_path", Text, nullable=False),
    Column("campaign_parent_id", Text, nullable=True),
    Column("created_at", Text, nullable=False),  # the job's own ISO timestamp
    # lower-cased id, description and repository, for the `q` filter
    Column("search", Text, nullable=False),
    Column("cost_usd", Float, nullable=False, server_default="0"),
    Column("doc", Text, nullable=False),  # the job as JSON
    _now("stored_at"),
    Index("team_jobs_created_idx", "team_id", "created_at"),
    Index("team_jobs_parent_idx", "team_id", "campaign_parent_id"),
)

team_job_logs = Table(
    "team_job_logs",
    metadata,
    Column("team_id", Text, primary_key=True),
    Column("job_id", Text, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("line", Text, nullable=False),
    ForeignKeyConstraint(
        ["team_id", "job_id"], ["team_jobs.team_id", "team_jobs.id"], ondelete="CASCADE"
    ),
)

#: What inbound webhooks are routed by: the pull requests and tickets of each job.
team_job_refs = Table(
    "team_job_refs",
    metadata,
    Column("team_id", Text, primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("plugin_id", Text, primary_key=True),
    Column("repo_key", Text, primary_key=True),  # '' when the ref has none
    Column("external_id", Text, primary_key=True),
    Column("job_id", Text, nullable=False),
    ForeignKeyConstraint(
        ["team_id", "job_id"], ["team_jobs.team_id", "team_jobs.id"], ondelete="CASCADE"
    ),
)

#: Runners connected now, on any instance (a row goes when its socket closes; one whose
#: instance died goes stale: `last_heartbeat_at` tells).
runner_sessions = Table(
    "runner_sessions",
    metadata,
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("runner_id", Text, primary_key=True),
    Column("token_id", Text, nullable=False),
    Column("instance_id", Text, nullable=False),
    Column("hostname", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("active_job_ids", JSONB, nullable=False),
    _now("connected_at"),
    _now("last_heartbeat_at"),
)

COMMAND_STATES = ("pending", "sent", "done", "failed", "cancelled")

#: The durable queue of commands for runners (`event:*`, `proposal:apply`): a command
#: waits here until a runner of the team (`runner_id`, or any when NULL) acknowledges it.
#: Instances claim commands with `FOR UPDATE SKIP LOCKED`, so each is sent by one.
runner_commands = Table(
    "runner_commands",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", Text, nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("job_id", Text, nullable=True),
    Column("runner_id", Text, nullable=True),
    Column("frame", JSONB, nullable=False),
    Column("state", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    _now("created_at"),
    _when("sent_at"),
    Column("sent_by", Text, nullable=True),  # the instance that sent it last
    _when("done_at"),
    Column("result", JSONB, nullable=True),  # the runner's rpc:response
    CheckConstraint(
        "state IN ('pending', 'sent', 'done', 'failed', 'cancelled')",
        name="runner_commands_state_check",
    ),
    Index("runner_commands_queue_idx", "team_id", "state", "id"),
    Index("runner_commands_job_idx", "team_id", "job_id"),
)

#: Answers to runners' RPCs, by message id: a retried request gets the same answer and
#: has no second effect.
rpc_results = Table(
    "rpc_results",
    metadata,
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("message_id", Text, primary_key=True),
    Column("response", JSONB, nullable=False),
    _now("created_at"),
    Index("rpc_results_created_idx", "created_at"),
)

#: Webhook deliveries seen, by the provider's delivery id (each is processed once).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("plugin_id", Text, primary_key=True),
    Column("delivery_id", Text, primary_key=True),
    _now("received_at"),
    Index("webhook_deliveries_received_idx", "received_at"),
)

team_proposals = Table(
    "team_proposals",
    metadata,
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("id", Text, primary_key=True),
    Column("job_id", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("doc", Text, nullable=False),  # the proposal as JSON
    Column("reviewed_by", Text, nullable=True),
    Column("review_note", Text, nullable=True),
    _now("created_at"),
    _now("updated_at"),
    _when("applied_at"),
    Index("team_proposals_status_idx", "team_id", "status"),
)

#: Each team's trigger rules (`PUT /teams/:teamId/triggers`): a `triggers.rules[]` entry
#: of config.json per row, in the order given; webhook deliveries are matched against
#: them (`coro.cloud.triggers`).
team_triggers = Table(
    "team_triggers",
    metadata,
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("id", Text, primary_key=True),  # the rule's id
    Column("position", Integer, nullable=False),
    # the rule as config.json spells it, as JSON (text: a rule may hold a NUL, escaped)
    Column("rule", Text, nullable=False),
    Column("updated_by", Text, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    _now("updated_at"),
)

# ------------------------------------------------------------------- team notifications
# (`coro.cloud.notifications`) JSON is kept as text, as `team_jobs.doc`: PostgreSQL's
# jsonb cannot hold a NUL, which a setting or a receiver's answer may carry (escaped).

#: Each team's notification channels (`PUT /teams/:teamId/notifications`): a
#: `notifications.webhooks[]`, `.slack[]` or `.email[]` entry of config.json per row, in
#: the order given, with how its deliveries went. Its secrets (a webhook's signing key,
#: a Slack URL, an SMTP password) are stored as given, as webhook secrets are: sending
#: needs them; the API shows them masked.
team_notification_channels = Table(
    "team_notification_channels",
    metadata,
    Column("team_id", Text, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("id", Text, primary_key=True),  # the channel's id
    Column("position", Integer, nullable=False),
    Column("kind", Text, nullable=False),
    Column("settings", Text, nullable=False),  # the entry as config.json spells it
    Column("last_delivery", Text, nullable=True),  # the last outcome
    Column("recent_failures", Text, nullable=False, server_default="[]"),  # newest first
    Column("updated_by", Text, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    _now("updated_at"),
    CheckConstraint(
        "kind IN ('webhook', 'slack', 'email')", name="team_notification_channels_kind_check"
    ),
)

#: What each member wants by e-mail to their account's address, per team (default:
#: nothing); it goes with their membership.
team_member_notifications = Table(
    "team_member_notifications",
    metadata,
    Column("team_id", Text, primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("email_enabled", Boolean, nullable=False, server_default=false()),
    Column("email_events", Text, nullable=False),  # a JSON list of events
    Column("last_delivery", Text, nullable=True),
    _now("updated_at"),
    ForeignKeyConstraint(
        ["team_id", "user_id"],
        ["team_members.team_id", "team_members.user_id"],
        ondelete="CASCADE",
    ),
)
