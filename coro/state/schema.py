"""The SQLite state store's tables: the one definition the queries are written against.

Migrations under `coro/state/migrations/versions/` are frozen copies of how this schema
evolved; when you change a table here, add a revision that brings existing databases
to the same shape (`tests/test_state.py` checks that a migrated database matches it).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, Table, Text

metadata = MetaData()

#: One row per job. `doc` is the whole job (`Job.to_json()` as JSON text); the other
#: columns are copies of its fields kept for filtering and ordering. `version` grows by
#: one on every write (optimistic concurrency for `update_job`).
jobs = Table(
    "jobs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("workflow_path", Text, nullable=False),
    Column("campaign_parent_id", Text, nullable=True),
    # lower-cased "id description repo", matched by `JobQuery.text`
    Column("search_text", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("doc", Text, nullable=False),
    Index("ix_jobs_status", "status"),
    Index("ix_jobs_created_at", "created_at"),
    Index("ix_jobs_campaign_parent_id", "campaign_parent_id"),
)

#: One row per log line; `seq` is the line's 0-based index within its job. Clustered on
#: the primary key (WITHOUT ROWID) so a job's lines are read back in one range scan.
job_logs = Table(
    "job_logs",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("line", Text, nullable=False),
    sqlite_with_rowid=False,
)
