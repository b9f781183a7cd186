"""Proposals move into the state database; one open pull request per branch pair.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ux_local_pull_requests_open_branches",
        "local_pull_requests",
        ["repo", "source_branch", "target_branch"],
        unique=True,
        postgresql_where=sa.text("state = 'open'"),
    )
    op.create_table(
        "proposals",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("layer", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("slot", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.Column("claim", sa.Text(), nullable=True),
        sa.Column("claimed_at", sa.BigInteger(), nullable=True),
        sa.Column("doc", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ux_proposals_slot", "proposals", ["slot"], unique=True)
    op.create_index("ix_proposals_status", "proposals", ["status"])
    op.create_index("ix_proposals_created_at", "proposals", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_proposals_created_at", table_name="proposals")
    op.drop_index("ix_proposals_status", table_name="proposals")
    op.drop_index("ux_proposals_slot", table_name="proposals")
    op.drop_table("proposals")
    op.drop_index("ux_local_pull_requests_open_branches", table_name="local_pull_requests")
