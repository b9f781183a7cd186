"""Job transcripts move out of the job document into their own table.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_transcripts",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq"),
        sqlite_with_rowid=False,
    )
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, doc FROM jobs")).fetchall()
    for job_id, doc in rows:
        data = json.loads(doc)
        history = data.pop("conversationHistory", None)
        if history is None:
            continue
        for seq, message in enumerate(history):
            conn.execute(
                sa.text("INSERT INTO job_transcripts (job_id, seq, message) VALUES (:j, :s, :m)"),
                {"j": job_id, "s": seq, "m": json.dumps(message)},
            )
        conn.execute(
            sa.text("UPDATE jobs SET doc = :doc WHERE id = :id"),
            {"doc": json.dumps(data), "id": job_id},
        )


def downgrade() -> None:
    op.drop_table("job_transcripts")
