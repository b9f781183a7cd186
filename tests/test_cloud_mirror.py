"""The cloud's mirror of team jobs: revisions only grow, log lines are kept once, refs
route webhooks, listings follow the runner's `GET /jobs`, and every team sees only its
own rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import URL

from coro.cloud.db import Database
from coro.cloud.mirror import Mirror
from coro.cloud.schema import teams
from coro.domain.models import (
    Checkout,
    ConversationMessage,
    ExternalRef,
    Job,
    LogEntry,
    PrMapping,
)
from coro.state.backend import JobExists, JobNotFound, JobQuery

pytest_plugins = ("tests.cloud_fixtures",)


def make_job(job_id: str, created_at: str = "2025-01-01T00:00:00.000Z", **fields: Any) -> Job:
    values: dict[str, Any] = {
        "id": job_id,
        "workflow_path": "workflows/fix.md",
        "status": "running",
        "phase": "plan",
        "created_at": created_at,
        "updated_at": created_at,
    }
    values.update(fields)
    return Job(**values)


async def new_team(db: Database) -> str:
    team_id = str(uuid.uuid4())
    async with db.begin() as connection:
        await connection.execute(
            teams.insert().values(id=team_id, name="T", slug=f"t-{team_id[:8]}")
        )
    return team_id


@pytest.fixture
async def db(cloud_db_url: URL) -> AsyncIterator[Database]:
    database = Database(cloud_db_url, pool_size=2)
    try:
        yield database
    finally:
        await database.close()


async def test_a_higher_revision_replaces_and_a_lower_one_is_ignored(db: Database) -> None:
    mirror = Mirror(db)
    team = await new_team(db)
    assert await mirror.store(team, make_job("j1", status="running"), 2, "r1")
    assert not await mirror.store(team, make_job("j1", status="queued"), 1, "r1")
    assert not await mirror.store(team, make_job("j1", status="queued"), 2, "r1")
    stored = await mirror.get(team, "j1")
    assert stored is not None
    assert (stored.job.status, stored.rev, stored.runner_id) == ("running", 2, "r1")
    assert await mirror.store(team, make_job("j1", status="complete"), 3, "r1")
    stored = await mirror.get(team, "j1")
    assert stored is not None and stored.job.status == "complete"
    # another runner of the team does not take the job over
    assert not await mirror.store(team, make_job("j1", status="failed"), 9, "r2")
    stored = await mirror.get(team, "j1")
    assert stored is not None and (stored.job.status, stored.runner_id) == ("complete", "r1")


async def test_the_conversation_is_not_replicated(db: Database) -> None:
    mirror = Mirror(db)
    team = await new_team(db)
    message = ConversationMessage(role="user", content="secret plan")
    await mirror.store(team, make_job("j1", conversation_history=[message]), 1, "r1")
    stored = await mirror.get(team, "j1")
    assert stored is not None and stored.job.conversation_history == []


async def test_a_provisional_job_is_overwritten_by_its_runner(db: Database) -> None:
    mirror = Mirror(db)
    team = await new_team(db)
    await mirror.create_provisional(team, make_job("j1", status="queued"))
    with pytest.raises(JobExists):
        await mirror.create_provisional(team, make_job("j1", status="queued"))
    stored = await mirror.get(team, "j1")
    assert stored is not None and (stored.rev, stored.runner_id) == (0, None)
    assert await mirror.store(team, make_job("j1", status="running"), 1, "r1")
    stored = await mirror.get(team, "j1")
    assert stored is not None and (stored.job.status, stored.runner_id) == ("running", "r1")


async def test_log_lines_are_kept_once_in_index_order(db: Database) -> None:
    mirror = Mirror(db)
    team = await new_team(db)
    await mirror.store(team, make_job("j1"), 1, "r1")
    first = [LogEntry(index=i, line=f"line {i}") for i in range(3)]
    assert await mirror.append_logs(team, "j1", first) == 3
    again = [LogEntry(index=2, line="line 2"), LogEntry(index=3, line="line 3")]
    assert await mirror.append_logs(team, "j1", again) == 1
    assert await mirror.count_logs(team, "j1") == 4
    lines = await mirror.read_logs(team, "j1", after=0, limit=2)
    assert [(e.index, e.line) for e in lines] == [(1, "line 1"), (2, "line 2")]
    with pytest.raises(JobNotFound):
        await mirror.append_logs(team, "missing", first)


async def test_teams_never_see_each_others_jobs(db: Database) -> None:
    mirror = Mirror(db)
    team_a, team_b = await new_team(db), await new_team(db)
    await mirror.store(team_a, make_job("j1"), 1, "r1")
    await mirror.append_logs(team_a, "j1", [LogEntry(index=0, line="a")])
    assert await mirror.get(team_b, "j1") is None
    assert await mirror.list(team_b, JobQuery()) == ([], 0)
    assert await mirror.read_logs(team_b, "j1") == []
    with pytest.raises(JobNotFound):
        await mirror.append_logs(team_b, "j1", [LogEntry(index=1, line="b")])
    assert not await mirror.delete(team_b, "j1")
    # the same id in another team is another job
    assert await mirror.store(team_b, make_job("j1", status="queued"), 1, "r2")
    stored = await mirror.get(team_a, "j1")
    assert stored is not None and stored.job.status == "running"
    assert await mirror.delete(team_a, "j1")
    assert await mirror.get(team_a, "j1") is None
    assert await mirror.get(team_b, "j1") is not None


async def test_listing_filters_pages_and_counts_like_the_runner(db: Database) -> None:
    mirror = Mirror(db)
    team = await new_team(db)
    jobs = [
        make_job("j1", "2025-01-01T00:00:01.000Z", status="complete", params={"repo": "a/b"}),
        make_job("j2", "2025-01-01T00:00:02.000Z", status="running", type="campaign"),
        make_job(
            "j3",
            "2025-01-01T00:00:03.000Z",
            status="failed",
            params={"description": "Fix the Login page"},
            campaign_parent_id="j2",
        ),
        make_job(
            "j4", "2025-01-01T00:00:04.000Z", workflow_path="w/other.md", campaign_parent_id="j2"
        ),
    ]
    for job in jobs:
        await mirror.store(team, job, 1, "r1")

    async def ids(**query: Any) -> tuple[list[str], int]:
        found, total = await mirror.list(team, JobQuery(**query))
        return [j.id for j in found], total

    assert await ids() == (["j4", "j3", "j2", "j1"], 4)
    assert await ids(limit=2, offset=1) == (["j3", "j2"], 4)
    assert await ids(limit=0) == ([], 4)
    assert await ids(statuses=["running"]) == (["j4", "j2"], 2)
    assert await ids(exclude_statuses=["running"]) == (["j3", "j1"], 2)
    assert await ids(type="campaign") == (["j2"], 1)
    assert await ids(workflow_path="w/other.md") == (["j4"], 1)
    assert await ids(campaign_parent_id="j2") == (["j4", "j3"], 2)
    assert await ids(text="LOGIN") == (["j3"], 1)
    assert await ids(text="a/b") == (["j1"], 1)
    assert await ids(text="%") == ([], 0)
    assert [j.id for j in await mirror.children(team, "j2")] == ["j3", "j4"]


async def test_refs_of_a_job_route_to_it(db: Database) -> None:
    mirror = Mirror(db)
    team, other = await new_team(db), await new_team(db)
    ticket = ExternalRef(kind="ticket", plugin_id="jira", external_id="ABC-1")
    job = make_job(
        "j1",
        external_refs=[ticket],
        checkouts=[Checkout(slug="app", repo="acme/app", plugin_id="github", base_branch="main")],
        pr_mappings=[
            PrMapping(pr_id=7, work_item="w", repo_slug="acme/app", opened_at="2025-01-01")
        ],
    )
    await mirror.store(team, job, 1, "r1")
    pr = ExternalRef(kind="pull_request", plugin_id="github", repo_key="acme/app", external_id="7")
    assert await mirror.job_for_ref(team, pr) == "j1"
    assert await mirror.job_for_ref(team, ticket) == "j1"
    assert await mirror.job_for_ref(other, pr) is None
    elsewhere = pr.model_copy(update={"repo_key": "acme/other"})
    assert await mirror.job_for_ref(team, elsewhere) is None
    # an explicit mapping moves a ref, and survives the job's next replication
    await mirror.store(team, make_job("j2"), 1, "r1")
    assert await mirror.map_ref(team, "j2", elsewhere)
    assert not await mirror.map_ref(other, "j2", elsewhere)
    await mirror.store(team, make_job("j2", status="complete"), 2, "r1")
    assert await mirror.job_for_ref(team, elsewhere) == "j2"
    await mirror.delete(team, "j1")
    assert await mirror.job_for_ref(team, pr) is None


async def test_the_cloud_writes_only_jobs_no_runner_owns(db: Database) -> None:
    mirror = Mirror(db)
    team = await new_team(db)
    await mirror.create_provisional(team, make_job("j1", status="queued"))
    await mirror.store(team, make_job("j2"), 1, "r1")

    def cancel(job: Job) -> None:
        job.status = "cancelled"

    cancelled = await mirror.set_status(team, "j1", cancel, "Cancelled before a runner took it")
    assert cancelled is not None and cancelled.status == "cancelled"
    stored = await mirror.get(team, "j1")
    assert stored is not None and stored.job.status == "cancelled"
    lines = await mirror.read_logs(team, "j1")
    assert [e.index for e in lines] == [0]
    assert lines[0].line.endswith(" Cancelled before a runner took it")
    await mirror.set_status(team, "j1", cancel, "again")
    assert [e.index for e in await mirror.read_logs(team, "j1")] == [0, 1]
    assert await mirror.set_status(team, "j2", cancel, None) is None
    stored = await mirror.get(team, "j2")
    assert stored is not None and stored.job.status == "running"
