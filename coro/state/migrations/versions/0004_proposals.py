"""Proposals move into the state store; one open local pull request per branch pair is
enforced by a (partial) unique index.

Proposals an older runner kept as `<tenant>/proposals/<id>/proposal.json` are imported
by the runner at start-up (`coro.intelligence.proposals.import_disk_proposals`), not
here: the migration does not know where the tenant layer is.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
    # Writers were serialised by SQLite's write lock, so no pair is open twice already.
    op.create_index(
        "ux_local_pull_requests_open_branches",
        "local_pull_requests",
        ["repo", "source_branch", "target_branch"],
        unique=True,
        sqlite_where=sa.text("state = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("ux_local_pull_requests_open_branches", table_name="local_pull_requests")
    op.drop_index("ix_proposals_created_at", table_name="proposals")
    op.drop_index("ix_proposals_status", table_name="proposals")
    op.drop_index("ux_proposals_slot", table_name="proposals")
    op.drop_table("proposals")
