"""The PR poller against the GitHub fake: one event per change, none without one."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from coro.config import CoroConfig, CoroHome
from coro.domain.models import (
    AWAITING_DEVELOPER_INPUT,
    AWAITING_PR_MERGE,
    QUEUED,
    Job,
    PrMapping,
    PrSeen,
    iso_now,
)
from coro.engine.events import InboundEvent, MemoryEventTransport
from coro.engine.polling import PollingTransport
from coro.extensions import Extensions
from coro.plugins.context import PluginContext
from coro.plugins.registry import PluginSet
from coro.plugins.scm.local import LocalScm
from coro.state.backend import JobQuery
from coro.state.prs import MemoryPullRequestStore, NewPullRequest
from coro.state.sqlite import SqliteStateBackend
from coro.state.store import JobStore
from tests.fakes.github_server import FakeGitHub

TOKEN = "ghp_PollTokenZq8mW3nR5tY7uI9oP1aSdF4gH6"
REPO = "acme/svc"


class Collected:
    """The handler the poller delivers to: every batch it was given."""

    def __init__(self) -> None:
        self.batches: list[list[InboundEvent]] = []
        self._arrived: asyncio.Queue[list[InboundEvent]] = asyncio.Queue()

    async def __call__(self, events: Sequence[InboundEvent]) -> None:
        self.batches.append(list(events))
        self._arrived.put_nowait(list(events))

    async def next_batch(self) -> list[InboundEvent]:
        """The next batch delivered (by the poller's own cycles)."""
        return await asyncio.wait_for(self._arrived.get(), 30)


class CountingBackend(SqliteStateBackend):
    """The SQLite backend, counting the jobs read (`get_job`) and listings made."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads: Counter[str] = Counter()

    async def get_job(self, job_id: str) -> Job | None:
        self.reads["get_job"] += 1
        return await super().get_job(job_id)

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        self.reads["list_jobs"] += 1
        return await super().list_jobs(query)

    async def jobs_with_status(self, statuses: frozenset[str] | set[str]) -> list[Job]:
        self.reads["jobs_with_status"] += 1
        return await super().jobs_with_status(statuses)


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo(REPO, branches=("main", "coro/x"), collaborators=["alice", "bob"])
        yield fake


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[CountingBackend]:
    backend = CountingBackend(tmp_path / "state.db")
    await backend.open()
    yield backend
    await backend.close()


@pytest.fixture
def store(backend: CountingBackend) -> JobStore:
    return JobStore(backend)


@pytest.fixture
def local_prs() -> MemoryPullRequestStore:
    """The pull requests of the `local` SCM the `plugins` have."""
    return MemoryPullRequestStore()


@pytest.fixture
async def plugins(
    tmp_path: Path, github: FakeGitHub, local_prs: MemoryPullRequestStore
) -> AsyncIterator[PluginSet]:
    config = CoroConfig.model_validate(
        {
            "plugins": {
                "installed": {
                    "github": {
                        "config": {
                            "token": TOKEN,
                            "baseUrl": github.base_url,
                            "retryBackoffSeconds": 0,
                        }
                    }
                }
            }
        }
    )
    home = CoroHome(tmp_path / "home")
    context = PluginContext(home, prs=local_prs)
    plugin_set = Extensions(home).plugins(config, context)
    yield plugin_set
    await plugin_set.aclose()


async def parked_job(
    store: JobStore, pr_id: int, *, seen: PrSeen | None, awaiting: str = "pr:review"
) -> str:
    now = iso_now()
    job = Job(
        id=f"svc-job-{pr_id}",
        workflow_path="workflows/job/workflow.md",
        status=AWAITING_PR_MERGE,
        phase="coding",
        awaiting_event=awaiting,
        awaiting_pr_id=pr_id,
        pr_mappings=[
            PrMapping(
                pr_id=pr_id,
                work_item="x",
                repo_slug=REPO,
                plugin_id="github",
                opened_at=now,
                seen=seen,
            )
        ],
        created_at=now,
        updated_at=now,
    )
    await store.create(job)
    return job.id


async def poller_for(store: JobStore, plugins: PluginSet) -> tuple[PollingTransport, Collected]:
    poller = PollingTransport(store, plugins, interval_seconds=3600, failure_threshold=3)
    collected = Collected()
    poller._handler = collected  # cycles are driven by the test, not the loop
    return poller, collected


async def test_each_change_is_one_event_and_no_change_is_none(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    pr_id = github.open_pr(REPO, "coro/x")
    job_id = await parked_job(store, pr_id, seen=PrSeen())
    poller, collected = await poller_for(store, plugins)

    assert await poller.poll_once() == []

    github.approve(REPO, pr_id, "alice")
    github.comment(REPO, pr_id, "bob", "Please rename the flag.")
    events = await poller.poll_once()
    assert [e.event_key for e in events] == [
        "pullrequest:approved",
        "pullrequest:comment_created",
    ]
    assert collected.batches == [events]  # handed over together
    assert all(e.job_id == job_id and e.pr_id == pr_id for e in events)
    assert events[0].payload["approvedBy"] == ["alice"]
    comment = events[1].payload["comment"]
    assert comment["content"]["raw"] == "Please rename the flag."
    assert comment["user"]["display_name"] == "bob"

    assert await poller.poll_once() == []  # unchanged (the plugin's ETag answers 304)
    assert await poller.poll_once() == []

    github.merge(REPO, pr_id)
    merged = await poller.poll_once()
    assert [e.event_key for e in merged] == ["pullrequest:fulfilled"]
    assert merged[0].pr_outcome() == "merged"
    assert len(collected.batches) == 2


async def test_what_was_seen_survives_a_restart(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    pr_id = github.open_pr(REPO, "coro/x")
    await parked_job(store, pr_id, seen=PrSeen())
    github.comment(REPO, pr_id, "bob", "First remark")
    first, _ = await poller_for(store, plugins)
    assert len(await first.poll_once()) == 1

    second, _ = await poller_for(store, plugins)  # a new runner: no ETags, no memory
    assert await second.poll_once() == []
    github.comment(REPO, pr_id, "bob", "Second remark")
    events = await second.poll_once()
    assert [e.payload["comment"]["content"]["raw"] for e in events] == ["Second remark"]


async def test_the_agents_own_comments_are_not_news(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    pr_id = github.open_pr(REPO, "coro/x")
    own = github.comment(REPO, pr_id, "coro-bot", "Fixed in the last push.")
    await parked_job(store, pr_id, seen=PrSeen(comment_ids=[str(own)]))
    poller, _ = await poller_for(store, plugins)
    assert await poller.poll_once() == []


async def test_cold_start_fires_only_what_the_job_waits_for(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    approved = github.open_pr(REPO, "coro/x")
    github.approve(REPO, approved, "alice")
    waiting_for_approval = await parked_job(store, approved, seen=None, awaiting="pr:approved")
    poller, _ = await poller_for(store, plugins)
    events = await poller.poll_once()
    assert [(e.job_id, e.event_key) for e in events] == [
        (waiting_for_approval, "pullrequest:approved")
    ]
    assert await poller.poll_once() == []  # remembered from now on

    github.add_repo("acme/other", branches=("main", "coro/y"))
    other = github.open_pr("acme/other", "coro/y")
    github.approve("acme/other", other, "alice")
    now = iso_now()
    await store.create(
        Job(
            id="other-job",
            workflow_path="workflows/job/workflow.md",
            status=AWAITING_PR_MERGE,
            phase="coding",
            awaiting_event="pr:merged",  # an approval is not what this one waits for
            pr_mappings=[
                PrMapping(pr_id=other, work_item="y", repo_slug="acme/other", opened_at=now)
            ],
            created_at=now,
            updated_at=now,
        )
    )
    assert await poller.poll_once() == []


async def test_a_pr_that_keeps_failing_wakes_its_job_once(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    pr_id = github.open_pr(REPO, "coro/x")
    job_id = await parked_job(store, pr_id, seen=PrSeen())
    poller, _ = await poller_for(store, plugins)
    del github.repos[REPO]  # the repository is gone: every poll is a 404
    assert await poller.poll_once() == []
    assert await poller.poll_once() == []
    events = await poller.poll_once()  # the third failure in a row (threshold 3)
    assert [(e.job_id, e.event_key) for e in events] == [(job_id, "pullrequest:rejected")]
    assert events[0].payload["state"] == "NOT_FOUND"
    assert events[0].payload["statusCode"] == 404
    assert events[0].pr_outcome() is None  # unreachable is not declined
    assert await poller.poll_once() == []  # the count starts again


async def test_the_memory_transport_hands_events_over_as_one_batch() -> None:
    transport = MemoryEventTransport()
    collected = Collected()
    await transport.connect(collected)
    first = InboundEvent(job_id="j", event_key="pullrequest:approved")
    second = InboundEvent(job_id="j", event_key="pullrequest:comment_created")
    await transport.emit(first, second)
    assert collected.batches == [[first, second]]
    await transport.disconnect()
    assert not transport.is_connected


async def test_changes_wait_for_a_job_that_is_not_waiting_on_its_prs(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    pr_id = github.open_pr(REPO, "coro/x")
    job_id = await parked_job(store, pr_id, seen=PrSeen())

    def escalate(job: Job) -> None:
        job.status = "escalated"

    await store.update(job_id, escalate)
    github.approve(REPO, pr_id, "alice")
    poller, _ = await poller_for(store, plugins)
    assert await poller.poll_once() == []  # not polled: nothing is consumed meanwhile
    assert (await store.get(job_id)).pr_mappings[0].seen == PrSeen()

    def park_again(job: Job) -> None:
        job.status = AWAITING_PR_MERGE

    await store.update(job_id, park_again)
    events = await poller.poll_once()
    assert [e.event_key for e in events] == ["pullrequest:approved"]


async def test_prs_whose_events_arrive_as_webhooks_are_not_polled(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    """A hybrid runner's poller leaves the plugins whose webhooks reach it alone, and
    polls them again as soon as they stop (e.g. the link to the cloud dropped)."""
    pr_id = github.open_pr(REPO, "coro/x")
    await parked_job(store, pr_id, seen=PrSeen())
    delivered_as_webhooks = {"github"}
    poller = PollingTransport(
        store, plugins, interval_seconds=3600, webhooks=delivered_as_webhooks.__contains__
    )
    poller._handler = Collected()
    github.approve(REPO, pr_id, "alice")
    before = len(github.requests)
    assert await poller.poll_once() == []
    assert len(github.requests) == before  # GitHub was not asked

    delivered_as_webhooks.clear()
    events = await poller.poll_once()
    assert [e.event_key for e in events] == ["pullrequest:approved"]


# --- what wakes the poller: the index, the timer, announced changes ----------------------


async def local_pr_job(store: JobStore, prs: MemoryPullRequestStore, n: int) -> str:
    """A job parked on a pull request it opened on the `local` SCM (which announces
    its changes)."""
    record = await prs.create(
        NewPullRequest(
            repo="shop",
            title=f"Change {n}",
            body="",
            source_branch=f"coro/change-{n}",
            target_branch="main",
            author="coro",
        )
    )
    now = iso_now()
    mapping = PrMapping(
        pr_id=record.id,
        work_item="x",
        repo_slug="shop",
        plugin_id="local",
        opened_at=now,
        seen=PrSeen(),
    )
    job = Job(
        id=f"shop-job-{n}",
        workflow_path="workflows/job/workflow.md",
        status=AWAITING_PR_MERGE,
        phase="coding",
        awaiting_event="pr:approved",
        awaiting_pr_id=record.id,
        pr_mappings=[mapping],
        created_at=now,
        updated_at=now,
    )
    await store.create(job)
    return job.id


async def asking_job(store: JobStore, n: int) -> str:
    """A job parked on a question to the developer (no pull request)."""
    now = iso_now()
    job = Job(
        id=f"asking-job-{n}",
        workflow_path="workflows/job/workflow.md",
        status=AWAITING_DEVELOPER_INPUT,
        phase="planning",
        awaiting_event="developer-input: which database?",
        created_at=now,
        updated_at=now,
    )
    await store.create(job)
    return job.id


async def test_no_cycle_reads_a_job_while_no_parked_job_waits_on_a_polled_pr(
    github: FakeGitHub,
    backend: CountingBackend,
    store: JobStore,
    plugins: PluginSet,
    local_prs: MemoryPullRequestStore,
) -> None:
    """Jobs parked on local PRs (announced) or on questions: the poller has no timer,
    and a timed cycle would read no job, list none and ask no forge."""
    local_jobs = {await local_pr_job(store, local_prs, n) for n in range(20)}
    for n in range(20):
        await asking_job(store, n)
    poller = PollingTransport(store, plugins, interval_seconds=1)
    await poller.connect(Collected())
    try:
        await poller.wait_idle()
        assert poller.indexed_jobs == local_jobs
        assert not poller.timer_armed
        backend.reads.clear()
        asked = len(github.requests)
        assert await poller.poll_indexed(timed=True, notified=False) == []
        assert backend.reads == Counter()
        assert len(github.requests) == asked
    finally:
        await poller.disconnect()


async def test_a_job_that_parks_on_a_polled_pr_is_polled_at_the_next_cycle(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    poller = PollingTransport(store, plugins, interval_seconds=1)
    collected = Collected()
    await poller.connect(collected)
    try:
        await poller.wait_idle()
        assert not poller.timer_armed  # nothing waits on GitHub yet
        pr_id = github.open_pr(REPO, "coro/x")
        job_id = await parked_job(store, pr_id, seen=PrSeen())

        def run(job: Job) -> None:
            job.status = QUEUED

        def park(job: Job) -> None:
            job.status = AWAITING_PR_MERGE

        await store.update(job_id, run)  # it opened the PR while running …
        assert poller.indexed_jobs == frozenset()
        await store.update(job_id, park)  # … and now waits on it: the timer is armed
        assert poller.indexed_jobs == {job_id}
        assert poller.timer_armed
        github.approve(REPO, pr_id, "alice")
        events = await collected.next_batch()  # the timer's cycle
        assert [(e.job_id, e.event_key) for e in events] == [(job_id, "pullrequest:approved")]

        await store.update(job_id, run)  # woken: nothing is left for the timer
        assert poller.indexed_jobs == frozenset()
        assert not poller.timer_armed
    finally:
        await poller.disconnect()


async def test_an_announced_local_change_is_polled_without_a_timer(
    store: JobStore, plugins: PluginSet, local_prs: MemoryPullRequestStore
) -> None:
    job_id = await local_pr_job(store, local_prs, 1)
    [pr_id] = [m.pr_id for m in (await store.get(job_id)).pr_mappings]
    poller = PollingTransport(store, plugins, interval_seconds=1, change_delay_seconds=0)
    collected = Collected()
    await poller.connect(collected)
    try:
        await poller.wait_idle()
        assert poller.indexed_jobs == {job_id}
        assert not poller.timer_armed  # the local SCM says when something changed
        local = plugins.get("scm", "local")
        assert isinstance(local, LocalScm)
        await local.approve(pr_id, "alice")
        events = await collected.next_batch()
        assert [(e.job_id, e.event_key) for e in events] == [(job_id, "pullrequest:approved")]
    finally:
        await poller.disconnect()


async def test_a_paused_job_is_not_polled_until_it_waits_again(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    pr_id = github.open_pr(REPO, "coro/x")
    job_id = await parked_job(store, pr_id, seen=PrSeen())
    poller = PollingTransport(store, plugins, interval_seconds=3600)
    await poller.connect(Collected())
    try:
        await poller.wait_idle()
        assert poller.indexed_jobs == {job_id} and poller.timer_armed

        def pause(job: Job) -> None:
            job.paused = True

        await store.update(job_id, pause)
        assert poller.indexed_jobs == frozenset()
        assert not poller.timer_armed
    finally:
        await poller.disconnect()
