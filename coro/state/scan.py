"""Walking every job of some statuses a page at a time (start-up scans of parked jobs).

`StateBackend.jobs_with_status` parses every matching job at once: for 10,000 parked
jobs that is ~200 MB of documents alive together, and the process keeps most of that
memory after they are freed. `walk_jobs` reads them a page at a time instead.

Pages come from `list_jobs` (newest first, by offset), and the listing may change
between two pages: a job that leaves the statuses moves every later job up by one,
so a plain offset would skip one. Each page is therefore read from a little before
where the last one ended (`OVERLAP` jobs) and joined to it at the last job both have;
a job yielded before is not yielded again. If none of those jobs is in the new page
(that many left at once), the walk starts again from the top, and after
`MAX_RESTARTS` it reads the rest with one `jobs_with_status`. So every job that keeps
its status throughout the walk is yielded exactly once; one that enters or leaves the
statuses meanwhile may or may not be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

from coro.domain.models import Job
from coro.state.backend import JobQuery, StateBackend

#: jobs parsed at a time
PAGE = 500
#: jobs of the previous page read again to join the next one to it
OVERLAP = 50
MAX_RESTARTS = 3


async def walk_jobs(
    backend: StateBackend,
    statuses: Collection[str],
    *,
    page: int = PAGE,
    overlap: int = OVERLAP,
) -> AsyncIterator[Job]:
    """Every job whose status is in `statuses`, newest first, `page` at a time."""
    if not 0 < overlap < page:
        raise ValueError(f"the overlap ({overlap}) must be above 0 and below the page ({page})")
    wanted = sorted(statuses)
    if not wanted:
        return
    yielded: set[str] = set()
    offset, tail, restarts = 0, set[str](), 0
    while True:
        start = max(offset - overlap, 0) if tail else 0
        jobs, _ = await backend.list_jobs(JobQuery(statuses=wanted, limit=page, offset=start))
        fresh = jobs
        if tail:
            joined = max((i for i, job in enumerate(jobs) if job.id in tail), default=None)
            if joined is None:  # every job it would be joined at left meanwhile
                restarts += 1
                if restarts > MAX_RESTARTS:
                    for job in await backend.jobs_with_status(set(wanted)):
                        if job.id not in yielded:
                            yield job
                    return
                offset, tail = 0, set()
                continue
            fresh = jobs[joined + 1 :]
        for job in fresh:
            if job.id not in yielded:
                yielded.add(job.id)
                yield job
        if len(jobs) < page:
            return
        offset = start + len(jobs)
        tail = {job.id for job in jobs[-overlap:]}
