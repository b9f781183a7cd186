"""A job as the SQL backends keep it: a JSON document plus columns copied out of it.

Shared by `coro.state.sqlite` and `coro.state.postgres`, so both store, search and
filter jobs the same way (the memory backend mirrors the same rules in Python).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Table

from coro.domain.models import Job
from coro.state.backend import JobQuery

#: Builds "this text column contains this (already lower-cased) substring" in a dialect's
#: own terms (a plain substring test: no LIKE wildcards to escape).
Contains = Callable[[ColumnElement[str], str], ColumnElement[bool]]


def dump_job(job: Job) -> str:
    # The transcript has its own table (`append_transcript`): never in the document.
    return job.model_dump_json(by_alias=True, exclude={"conversation_history"})


def load_job(doc: str) -> Job:
    return Job.model_validate_json(doc)


def search_text(job: Job) -> str:
    """What `JobQuery.text` is matched against (same haystack as the memory backend)."""
    parts = (job.id, job.params.get("description"), job.params.get("repo"))
    return " ".join(str(part) for part in parts if part).lower()


def job_columns(job: Job, doc: str) -> dict[str, Any]:
    """Every `jobs` column but `id` and `version`, from the job and its JSON `doc`."""
    return {
        "type": job.type,
        "status": job.status,
        "workflow_path": job.workflow_path,
        "campaign_parent_id": job.campaign_parent_id,
        "search_text": search_text(job),
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "doc": doc,
    }


def job_conditions(jobs: Table, query: JobQuery, contains: Contains) -> list[ColumnElement[bool]]:
    """The WHERE clauses of `query` over the `jobs` table."""
    conditions: list[ColumnElement[bool]] = []
    if query.statuses:
        conditions.append(jobs.c.status.in_(query.statuses))
    if query.exclude_statuses:
        conditions.append(jobs.c.status.not_in(query.exclude_statuses))
    if query.type:
        conditions.append(jobs.c.type == query.type)
    if query.workflow_path:
        conditions.append(jobs.c.workflow_path == query.workflow_path)
    if query.campaign_parent_id:
        conditions.append(jobs.c.campaign_parent_id == query.campaign_parent_id)
    if query.text:
        conditions.append(contains(jobs.c.search_text, query.text.lower()))
    return conditions
