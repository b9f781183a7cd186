"""Walking parked jobs a page at a time while others leave (`coro.state.scan`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from coro.domain.models import AWAITING_DEVELOPER_INPUT, QUEUED, WAITING_FOR_EVENTS, Job
from coro.state.backend import JobQuery
from coro.state.scan import walk_jobs
from coro.state.sqlite import SqliteStateBackend

#: What happens after each page the walk reads (another process waking jobs, say).
AfterPage = Callable[[list[Job]], list[str]]


class ChurningBackend(SqliteStateBackend):
    """The SQLite backend; after every page of `list_jobs`, the jobs `after_page` names
    leave the waiting statuses (as if woken meanwhile)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.after_page: AfterPage = lambda page: []
        self.woken: list[str] = []

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        page, total = await super().list_jobs(query)
        for job_id in self.after_page(page):
            await self.update_job(job_id, _wake)
            self.woken.append(job_id)
        return page, total


def _wake(job: Job) -> None:
    job.status = QUEUED


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[ChurningBackend]:
    backend = ChurningBackend(tmp_path / "state.db")
    await backend.open()
    for n in range(30):
        stamp = f"2026-01-01T00:00:{n:02d}.000Z"  # job-29 is the newest
        await backend.create_job(
            Job(
                id=f"job-{n:02d}",
                workflow_path="workflows/job/workflow.md",
                status=AWAITING_DEVELOPER_INPUT,
                phase="planning",
                created_at=stamp,
                updated_at=stamp,
            )
        )
    yield backend
    await backend.close()


async def walked(backend: ChurningBackend) -> list[str]:
    return [job.id async for job in walk_jobs(backend, WAITING_FOR_EVENTS, page=5, overlap=2)]


async def test_every_job_comes_once_newest_first(backend: ChurningBackend) -> None:
    assert await walked(backend) == [f"job-{n:02d}" for n in range(29, -1, -1)]


async def test_jobs_that_leave_meanwhile_make_the_walk_skip_no_other(
    backend: ChurningBackend,
) -> None:
    # after each page, the newest job still waiting among those already walked leaves,
    # moving every job not walked yet up by one in the listing
    walked_so_far: list[str] = []

    def wake_one(page: list[Job]) -> list[str]:
        walked_so_far.extend(job.id for job in page)
        gone = set(backend.woken)
        left = [job_id for job_id in walked_so_far if job_id not in gone]
        return left[:1]

    backend.after_page = wake_one
    ids = await walked(backend)
    assert len(ids) == len(set(ids))
    assert set(ids) == {f"job-{n:02d}" for n in range(30)}  # the woken ones were walked first


async def test_more_leaving_at_once_than_the_overlap_starts_the_walk_again(
    backend: ChurningBackend,
) -> None:
    # after the first page, its five jobs all leave: nothing joins the next page to it
    first = True

    def wake_page(page: list[Job]) -> list[str]:
        nonlocal first
        if not first:
            return []
        first = False
        return [job.id for job in page]

    backend.after_page = wake_page
    ids = await walked(backend)
    assert len(ids) == len(set(ids)) == 30
