"""The runner's WebSocket link to a real cloud (`coro.state.cloud.link.CloudLink`):
registration, RPCs, revocation, reconnecting after the cloud restarts, and commands
answered once per message id."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coro.cloud.broker import COMMAND_DONE
from coro.cloud.deps import Services
from coro.domain.cloud_protocol import CloudCommand, EventMessage, JobUpdate, RpcResponse
from coro.domain.models import Job, iso_now
from coro.state.cloud.link import (
    CloudLink,
    LinkDown,
    RpcError,
    RunnerLoad,
    load_runner_id,
    new_message_id,
)
from coro.state.cloud.replicator import JobCursor, SyncCursors
from tests.cloud_helpers import WAIT_LIMIT, Cloud, CloudFactory
from tests.hybrid_helpers import (
    FAST,
    Paired,
    mirror_jobs,
    pair,
    revoke,
    wait_registrations,
    wait_state,
)

pytest_plugins = ("tests.cloud_fixtures",)


def make_link(url: str, token: str, tmp_path: Path, **kwargs: Any) -> CloudLink:
    return CloudLink(
        url,
        token,
        cloud_dir=tmp_path / "cloud",
        timings=FAST,
        load=lambda: RunnerLoad(capacity=3, active_job_ids=["job-a"]),
        **kwargs,
    )


@contextlib.asynccontextmanager
async def started(link: CloudLink) -> AsyncIterator[CloudLink]:
    await link.start()
    try:
        yield link
    finally:
        await link.stop()


def services(cloud: Cloud) -> Services:
    found: Services = cloud.served.app.state.services
    return found


def job_update(job_id: str, rev: int) -> JobUpdate:
    now = iso_now()
    job = Job(
        id=job_id,
        workflow_path="workflows/x/workflow.md",
        status="planning",
        phase="planning",
        created_at=now,
        updated_at=now,
    )
    return JobUpdate(
        type="job:update", message_id=new_message_id(), job_id=job_id, rev=rev, job=job.to_json()
    )


@pytest.fixture
async def paired(cloud: Cloud) -> Paired:
    return await pair(cloud)


async def test_the_link_registers_with_its_team_and_keeps_its_runner_id(
    cloud: Cloud, paired: Paired, tmp_path: Path
) -> None:
    async with started(make_link(cloud.served.url, paired.token, tmp_path)) as link:
        assert await wait_state(link, "connected") == "connected"
        assert link.team_id == paired.team_id
        assert link.team_name == paired.team["name"]
        sessions = await cloud.rows(
            "SELECT runner_id, capacity, active_job_ids FROM runner_sessions WHERE team_id = :team",
            team=paired.team_id,
        )
        assert sessions == [
            {"runner_id": link.runner_id, "capacity": 3, "active_job_ids": ["job-a"]}
        ]
        first_id = link.runner_id
    assert link.state == "stopped"

    async with started(make_link(cloud.served.url, paired.token, tmp_path)) as again:
        await wait_state(again, "connected")
        assert again.runner_id == first_id  # kept in $CORO_HOME/cloud/runner-id
    assert load_runner_id(tmp_path / "cloud") == first_id
    assert "Bearer" not in repr(again) and paired.token not in repr(again)


async def test_a_call_is_answered_by_the_cloud(
    cloud: Cloud, paired: Paired, tmp_path: Path
) -> None:
    async with started(make_link(cloud.served.url, paired.token, tmp_path)) as link:
        await wait_state(link, "connected")

        answer = await link.call(job_update("job-1", rev=1))

        assert answer["stored"] is True
        stored = await mirror_jobs(cloud, paired.team_id)
        assert stored["job-1"]["rev"] == 1
        assert stored["job-1"]["runner_id"] == link.runner_id
        bad = job_update("job-2", rev=1)
        bad.job["id"] = "another-id"
        with pytest.raises(RpcError) as refused:
            await link.call(bad)
        assert refused.value.status == 400


async def test_a_call_fails_at_once_while_the_cloud_is_away(
    cloud_factory: CloudFactory, tmp_path: Path
) -> None:
    async with cloud_factory() as cloud:
        paired = await pair(cloud)
        url = cloud.served.url
    # nothing listens there any more
    async with started(make_link(url, paired.token, tmp_path)) as link:
        await wait_state(link, "disconnected")

        with pytest.raises(LinkDown):
            await link.call(job_update("job-1", rev=1))
        assert link.last_error is not None and "cannot connect" in link.last_error


async def test_a_revoked_token_stops_the_link_for_good(
    cloud: Cloud, paired: Paired, tmp_path: Path
) -> None:
    async with started(make_link(cloud.served.url, paired.token, tmp_path)) as link:
        await wait_state(link, "connected")

        await revoke(cloud, paired)

        assert await wait_state(link, "revoked", "incompatible") == "revoked"
        assert link.last_error is not None and "revoked" in link.last_error
        assert not link.running  # no reconnect loop
        assert link.registrations == 1
        with pytest.raises(LinkDown):
            await link.call(job_update("job-1", rev=1))
    assert link.state == "revoked"


async def test_an_unknown_token_is_refused_without_retrying(cloud: Cloud, tmp_path: Path) -> None:
    async with started(make_link(cloud.served.url, "not-a-runner-token-at-all", tmp_path)) as link:
        assert await wait_state(link, "revoked", "connected") == "revoked"
        assert link.last_error is not None and "401" in link.last_error
        assert "not-a-runner-token" not in link.last_error
        assert not link.running


async def test_the_link_reconnects_after_the_cloud_restarts(
    cloud_factory: CloudFactory, tmp_path: Path
) -> None:
    async with cloud_factory() as first:
        paired = await pair(first)
        port = first.served.port
        link = make_link(first.served.url, paired.token, tmp_path)
        await link.start()
        await wait_state(link, "connected")
        await link.call(job_update("job-1", rev=1))
    try:
        await wait_state(link, "disconnected", "connecting")
        async with cloud_factory(port=port) as second:
            await wait_registrations(link, 2)

            answer = await link.call(job_update("job-1", rev=2))

            assert answer["stored"] is True
            assert (await mirror_jobs(second, paired.team_id))["job-1"]["rev"] == 2
    finally:
        await link.stop()


async def test_a_command_sent_again_is_answered_again_without_a_second_effect(
    cloud_factory: CloudFactory, tmp_path: Path
) -> None:
    calls: list[str] = []
    started_once = asyncio.Event()
    release = asyncio.Event()

    async def handler(command: CloudCommand) -> RpcResponse:
        calls.append(command.message_id)
        started_once.set()
        await release.wait()
        return RpcResponse(message_id=command.message_id, ok=True, data={"n": len(calls)})

    async with cloud_factory() as first:
        paired = await pair(first)
        port = first.served.port
        link = make_link(first.served.url, paired.token, tmp_path)
        link.handler = handler
        await link.start()
        await wait_state(link, "connected")
        frame = EventMessage(message_id=new_message_id(), job_id="job-1", message="hello")
        await services(first).commands.submit(paired.team_id, frame, job_id=None, wait_seconds=0)
        async with asyncio.timeout(WAIT_LIMIT):
            await started_once.wait()
    try:
        # the cloud restarts while the command runs: it is sent again at the next connect
        async with cloud_factory(port=port) as second:
            done = asyncio.Event()
            unsubscribe = services(second).broker.subscribe(COMMAND_DONE, lambda _: done.set())
            await wait_registrations(link, 2)
            release.set()
            async with asyncio.timeout(WAIT_LIMIT):
                await done.wait()
            unsubscribe()
            rows = await second.rows(
                "SELECT state, result FROM runner_commands WHERE message_id = :m",
                m=frame.message_id,
            )
            assert rows[0]["state"] == "done"
            first_answer = rows[0]["result"]
            assert first_answer["data"] == {"n": 1}
            # as if the answer had been lost: the cloud sends the command once more
            await second.rows(
                "UPDATE runner_commands SET state = 'sent', result = NULL "
                "WHERE message_id = :m RETURNING id",
                m=frame.message_id,
            )
        async with cloud_factory(port=port) as third:
            done = asyncio.Event()
            unsubscribe = services(third).broker.subscribe(COMMAND_DONE, lambda _: done.set())
            await wait_registrations(link, 3)
            async with asyncio.timeout(WAIT_LIMIT):
                await done.wait()
            unsubscribe()
            rows = await third.rows(
                "SELECT state, result FROM runner_commands WHERE message_id = :m",
                m=frame.message_id,
            )
            assert rows[0]["state"] == "done"
            assert rows[0]["result"] == first_answer
    finally:
        await link.stop()
    assert calls == [frame.message_id]


async def test_sync_cursors_survive_a_reopen(tmp_path: Path) -> None:
    cursors = SyncCursors(tmp_path / "sync.db")
    await cursors.open()
    await cursors.save_job("job-1", JobCursor(rev=3, fingerprint="abc", logs=7))
    await cursors.save_proposal("p-1", "def")
    await cursors.change_team("team-1")
    await cursors.save_job("job-2", JobCursor(rev=1, fingerprint="x", logs=1))
    await cursors.close()

    again = SyncCursors(tmp_path / "sync.db")
    await again.open()
    try:
        assert again.team_id == "team-1"
        # a new team: the revisions sent stay (they only grow), nothing is acknowledged
        assert again.job("job-1") == JobCursor(rev=3, fingerprint=None, logs=0)
        assert again.job("job-2") == JobCursor(rev=1, fingerprint="x", logs=1)
        assert again.proposals == {}
    finally:
        await again.close()
