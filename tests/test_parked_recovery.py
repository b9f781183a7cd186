"""A restarted runner with many parked jobs: idle until something happens, then each job
wakes on its own event (the PR poller's index is rebuilt at start, nothing is timed)."""

from __future__ import annotations

import asyncio

import pytest

from bench.idle import write_parked_jobs
from coro.config import CoroConfig, CoroHome
from coro.domain.models import AWAITING_PR_MERGE, QUEUED, WAITING_FOR_EVENTS
from coro.engine.polling import PollingTransport
from coro.extensions import Extensions
from coro.plugins.scm.local import LocalScm
from coro.runner import Runner
from coro.state.backend import JobQuery
from coro.state.store import JobChange
from tests.conftest import on_backend

JOBS = 50


class Woken:
    """A `JobStore` observer: the jobs that left a park, once `count` did."""

    def __init__(self, count: int) -> None:
        self.ids: set[str] = set()
        self._count = count
        self.all = asyncio.Event()

    def __call__(self, change: JobChange) -> None:
        if change.before_status in WAITING_FOR_EVENTS and change.job.status == QUEUED:
            self.ids.add(change.job.id)
            if len(self.ids) >= self._count:
                self.all.set()


def poller(runner: Runner) -> PollingTransport:
    assert isinstance(runner.transport, PollingTransport)
    return runner.transport


@pytest.mark.backends("sqlite", "postgres")
async def test_after_a_restart_each_parked_job_wakes_on_its_own_event(
    home: CoroHome, state_url: str | None
) -> None:
    config = on_backend(
        CoroConfig.model_validate(
            {
                "llm": {"defaultProvider": "script"},
                # the shortest timer there is, and local changes polled at once
                "polling": {"intervalSeconds": 1, "localChangeDelaySeconds": 0},
            }
        ),
        state_url,
    )
    home.save_config(config)
    backend = Extensions(home).state_backend(config)
    await backend.open()
    try:
        await write_parked_jobs(backend, JOBS)  # as a runner that stopped left them
        on_prs, _ = await backend.list_jobs(JobQuery(statuses=[AWAITING_PR_MERGE], limit=JOBS))
    finally:
        await backend.close()
    prs = {job.id: job.pr_mappings[0].pr_id for job in on_prs}
    assert len(prs) == (JOBS + 2) // 3

    for _ in range(2):  # a start, then a restart
        async with Runner(home, config).running() as runner:
            await poller(runner).wait_idle()
            assert poller(runner).indexed_jobs == set(prs)
            assert not poller(runner).timer_armed  # local PRs announce their changes

    async with Runner(home, config).running() as runner:
        await poller(runner).wait_idle()
        woken = Woken(len(prs))
        runner.store.observers.append(woken)
        local = runner.plugins.get("scm", "local")
        assert isinstance(local, LocalScm)
        for pr_id in prs.values():
            await local.approve(pr_id, "alice")
        await asyncio.wait_for(woken.all.wait(), 60)
        assert woken.ids == set(prs)
        for job_id in prs:
            lines = [entry.line for entry in await runner.backend.read_logs(job_id)]
            assert any("[event] Received event: pullrequest:approved" in line for line in lines)
        parked, _ = await runner.backend.list_jobs(
            JobQuery(statuses=sorted(WAITING_FOR_EVENTS), limit=JOBS)
        )
        # the jobs waiting for a developer are still parked: nothing woke them
        assert len({job.id for job in parked} - set(prs)) == JOBS - len(prs)
        await runner.dispatcher.wait_idle()
