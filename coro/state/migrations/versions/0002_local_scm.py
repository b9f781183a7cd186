"""The offline `local` SCM: pull requests, their comments and approvals.

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
    op.create_table(
        "local_pull_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("source_branch", sa.Text(), nullable=False),
        sa.Column("target_branch", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("author", sa.Text(), nullable=True),
        sa.Column("reviewers", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.Column("merged_at", sa.Text(), nullable=True),
        sa.Column("merge_sha", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_local_pull_requests_repo_state", "local_pull_requests", ["repo", "state"])
    op.create_table(
        "local_pr_comments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pr_id", sa.Integer(), nullable=False),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("in_reply_to", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["pr_id"], ["local_pull_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_local_pr_comments_pr_id", "local_pr_comments", ["pr_id"])
    op.create_table(
        "local_pr_approvals",
        sa.Column("pr_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["pr_id"], ["local_pull_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pr_id", "reviewer"),
    )


def downgrade() -> None:
    op.drop_table("local_pr_approvals")
    op.drop_index("ix_local_pr_comments_pr_id", table_name="local_pr_comments")
    op.drop_table("local_pr_comments")
    op.drop_index("ix_local_pull_requests_repo_state", table_name="local_pull_requests")
    op.drop_table("local_pull_requests")
