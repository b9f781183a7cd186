"""Team jobs and their logs and refs, runner sessions, the runner command queue, RPC
results, webhook deliveries, team proposals.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rpc_results",
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("team_id", "message_id"),
    )
    op.create_index("rpc_results_created_idx", "rpc_results", ["created_at"], unique=False)
    op.create_table(
        "runner_commands",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=True),
        sa.Column("runner_id", sa.Text(), nullable=True),
        sa.Column("frame", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_by", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'sent', 'done', 'failed', 'cancelled')",
            name="runner_commands_state_check",
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index(
        "runner_commands_job_idx", "runner_commands", ["team_id", "job_id"], unique=False
    )
    op.create_index(
        "runner_commands_queue_idx", "runner_commands", ["team_id", "state", "id"], unique=False
    )
    op.create_table(
        "runner_sessions",
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("runner_id", sa.Text(), nullable=False),
        sa.Column("token_id", sa.Text(), nullable=False),
        sa.Column("instance_id", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("active_job_ids", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "connected_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_heartbeat_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("team_id", "runner_id"),
    )
    op.create_table(
        "team_jobs",
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("rev", sa.BigInteger(), nullable=False),
        sa.Column("runner_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("workflow_path", sa.Text(), nullable=False),
        sa.Column("campaign_parent_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("search", sa.Text(), nullable=False),
        sa.Column("cost_usd", sa.Float(), server_default="0", nullable=False),
        sa.Column("doc", sa.Text(), nullable=False),
        sa.Column(
            "stored_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("team_id", "id"),
    )
    op.create_index("team_jobs_created_idx", "team_jobs", ["team_id", "created_at"], unique=False)
    op.create_index(
        "team_jobs_parent_idx", "team_jobs", ["team_id", "campaign_parent_id"], unique=False
    )
    op.create_table(
        "team_proposals",
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("doc", sa.Text(), nullable=False),
        sa.Column("reviewed_by", sa.Text(), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("team_id", "id"),
    )
    op.create_index(
        "team_proposals_status_idx", "team_proposals", ["team_id", "status"], unique=False
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("plugin_id", sa.Text(), nullable=False),
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("team_id", "plugin_id", "delivery_id"),
    )
    op.create_index(
        "webhook_deliveries_received_idx", "webhook_deliveries", ["received_at"], unique=False
    )
    op.create_table(
        "team_job_logs",
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id", "job_id"], ["team_jobs.team_id", "team_jobs.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("team_id", "job_id", "idx"),
    )
    op.create_table(
        "team_job_refs",
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("plugin_id", sa.Text(), nullable=False),
        sa.Column("repo_key", sa.Text(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id", "job_id"], ["team_jobs.team_id", "team_jobs.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("team_id", "kind", "plugin_id", "repo_key", "external_id"),
    )
    op.create_index("login_failures_window_idx", "login_failures", ["window_start"], unique=False)


def downgrade() -> None:
    op.drop_index("login_failures_window_idx", table_name="login_failures")
    op.drop_table("team_job_refs")
    op.drop_table("team_job_logs")
    op.drop_index("webhook_deliveries_received_idx", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("team_proposals_status_idx", table_name="team_proposals")
    op.drop_table("team_proposals")
    op.drop_index("team_jobs_parent_idx", table_name="team_jobs")
    op.drop_index("team_jobs_created_idx", table_name="team_jobs")
    op.drop_table("team_jobs")
    op.drop_table("runner_sessions")
    op.drop_index("runner_commands_queue_idx", table_name="runner_commands")
    op.drop_index("runner_commands_job_idx", table_name="runner_commands")
    op.drop_table("runner_commands")
    op.drop_index("rpc_results_created_idx", table_name="rpc_results")
    op.drop_table("rpc_results")
