"""The SQLite state store's tables: the one definition the queries are written against.

Migrations under `coro/state/migrations/versions/` are frozen copies of how this schema
evolved; when you change a table here, add a revision that brings existing databases
to the same shape (`tests/test_state.py` checks that a migrated database matches it).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, MetaData, Table, Text, text

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

#: One row per message of a job's conversation (`ConversationMessage` JSON); `seq` is its
#: 0-based position. Kept apart from the job document so that saving the transcript after
#: each tool call appends a row instead of rewriting an ever larger document.
job_transcripts = Table(
    "job_transcripts",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("message", Text, nullable=False),
    sqlite_with_rowid=False,
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

# --- the offline `local` SCM (`coro.plugins.scm.local`) ----------------------------------

#: Pull requests between branches of the bare repositories under `reposDir`. Ids are one
#: sequence across every repository (`coro pr approve 3` needs no repository), made by
#: the database (SQLite's rowid, PostgreSQL's SERIAL), so concurrent creators never share
#: one. `state` is open | merged | declined; `reviewers` is a JSON list of requested
#: reviewers. At most one pull request between two branches of a repository is open.
local_pull_requests = Table(
    "local_pull_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("repo", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("source_branch", Text, nullable=False),
    Column("target_branch", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("author", Text, nullable=True),
    Column("reviewers", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("merged_at", Text, nullable=True),
    Column("merge_sha", Text, nullable=True),
    Index("ix_local_pull_requests_repo_state", "repo", "state"),
    Index(
        "ux_local_pull_requests_open_branches",
        "repo",
        "source_branch",
        "target_branch",
        unique=True,
        sqlite_where=text("state = 'open'"),
        postgresql_where=text("state = 'open'"),
    ),
)

#: Comments on local pull requests; `in_reply_to` is the id of another comment of the
#: same pull request.
local_pr_comments = Table(
    "local_pr_comments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "pr_id",
        Integer,
        ForeignKey("local_pull_requests.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("author", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("in_reply_to", Integer, nullable=True),
    Column("created_at", Text, nullable=False),
    Index("ix_local_pr_comments_pr_id", "pr_id"),
)

#: One row per (pull request, reviewer) that approved it.
local_pr_approvals = Table(
    "local_pr_approvals",
    metadata,
    Column(
        "pr_id",
        Integer,
        ForeignKey("local_pull_requests.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("reviewer", Text, primary_key=True),
    Column("created_at", Text, nullable=False),
)

# --- self-improvement proposals (`coro.state.proposals`) ---------------------------------

#: One row per proposal; `doc` is the whole proposal (`Proposal.to_json()` as JSON text),
#: the other columns are copies of its fields kept for filtering, ordering and the rules.
#: `slot` is "<layer>:<job id>": a job makes one proposal per layer (NULL only for the
#: extra ones of a pair imported from an older runner's files). `claim` / `claimed_at`
#: (epoch milliseconds) mark a decision in progress (approve or reject): taken with a
#: compare-and-set, so two deciders (in any process) never both hold one proposal.
proposals = Table(
    "proposals",
    metadata,
    Column("id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("job_id", Text, nullable=False),
    Column("layer", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("slot", Text, nullable=True),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("claim", Text, nullable=True),
    Column("claimed_at", BigInteger, nullable=True),
    Column("doc", Text, nullable=False),
    Index("ux_proposals_slot", "slot", unique=True),
    Index("ix_proposals_status", "status"),
    Index("ix_proposals_created_at", "created_at"),
)
