"""A child process for tests/test_state_postgres.py: one "runner process" hammering jobs.

`python -m tests.pg_hammer URL NAME ROUNDS JOB...` opens a `PostgresStateBackend` on
URL, prints "ready", waits for a line on stdin (so that every child starts at once),
then for ROUNDS rounds, on every JOB at once: records the round in the job's fields
(a work item `NAME-n`, `phaseVisits[NAME] = n + 1`) with a log line `NAME update n`
in the same update, and appends two lines `NAME n a` and `NAME n b`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from coro.domain.models import Job, WorkItem
from coro.state.postgres import PostgresStateBackend


def record(name: str, n: int) -> Callable[[Job], None]:
    def mutate(job: Job) -> None:
        job.work_items.append(WorkItem(name=f"{name}-{n}"))
        job.phase_visits[name] = n + 1

    return mutate


async def hammer(url: str, name: str, rounds: int, job_ids: list[str]) -> None:
    backend = PostgresStateBackend(url)
    await backend.open()
    try:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for n in range(rounds):
            await asyncio.gather(
                *(
                    backend.update_job(job_id, record(name, n), log=[f"{name} update {n}"])
                    for job_id in job_ids
                ),
                *(
                    backend.append_logs(job_id, [f"{name} {n} a", f"{name} {n} b"])
                    for job_id in job_ids
                ),
            )
    finally:
        await backend.close()


if __name__ == "__main__":
    url, name, rounds, *job_ids = sys.argv[1:]
    asyncio.run(hammer(url, name, int(rounds), job_ids))
