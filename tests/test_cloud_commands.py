"""The durable command queue: a command waits for a runner, reaches the right one
(the job's owner; for a dispatch the least busy with room), is answered back to the
waiting `Commands.submit`, is re-sent after a reconnect, and is sent once even with two
cloud instances (Redis between them) claiming at the same time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from coro.cloud.broker import RUNNER_WAKE, RedisBroker
from coro.cloud.commands import Commands
from coro.domain.cloud_protocol import EventCancel, EventDispatch, EventPluginWebhook
from coro.domain.models import Job
from tests.cloud_helpers import WAIT_LIMIT, Cloud, CloudFactory
from tests.cloud_runner_client import RunnerClient, runner_client, team_runner

pytest_plugins = ("tests.cloud_fixtures",)

REDIS_URL = "redis://127.0.0.1:6379/0"


def dispatch(job_id: str) -> EventDispatch:
    return EventDispatch(
        message_id=uuid.uuid4().hex, job_id=job_id, request={"workflowPath": "w.md"}
    )


def make_job(job_id: str, status: str = "queued") -> Job:
    stamp = "2025-01-01T00:00:00.000Z"
    return Job(
        id=job_id,
        workflow_path="w.md",
        status=status,
        phase="plan",
        created_at=stamp,
        updated_at=stamp,
    )


class Wakes:
    """Counts the `runner-wake` notices an instance publishes (a command is stored)."""

    def __init__(self, cloud: Cloud) -> None:
        self.seen = 0
        self._changed = asyncio.Condition()
        cloud.served.services.broker.subscribe(RUNNER_WAKE, self._on_wake)

    def _on_wake(self, payload: dict[str, Any]) -> None:
        self.seen += 1
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def reach(self, count: int) -> None:
        async with asyncio.timeout(WAIT_LIMIT), self._changed:
            await self._changed.wait_for(lambda: self.seen >= count)


async def command_rows(cloud: Cloud) -> list[dict[str, Any]]:
    return await cloud.rows(
        "SELECT message_id, job_id, runner_id, state, attempts, sent_by FROM runner_commands "
        "ORDER BY id"
    )


async def test_a_command_queued_without_runners_is_answered_once_one_registers(
    cloud: Cloud,
) -> None:
    team = await team_runner(cloud)
    commands = cloud.served.services.commands
    wakes = Wakes(cloud)
    frame = dispatch("j1")
    waiting = asyncio.create_task(
        commands.submit(team.team_id, frame, job_id="j1", wait_seconds=WAIT_LIMIT)
    )
    await wakes.reach(1)
    [row] = await command_rows(cloud)
    assert (row["runner_id"], row["state"]) == (None, "pending")
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        command = await client.command()
        assert command == frame.to_wire()
        await client.answer(command, data={"id": "j1", "status": "queued"}, status=201)
        outcome = await waiting
    assert (outcome.state, outcome.message_id) == ("done", frame.message_id)
    assert outcome.response is not None
    assert outcome.response.data == {"id": "j1", "status": "queued"}
    [row] = await command_rows(cloud)
    assert (row["runner_id"], row["state"], row["attempts"]) == ("r1", "done", 1)
    assert row["sent_by"] == cloud.served.services.instance_id


async def test_no_answer_in_time_leaves_the_command_queued(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    outcome = await cloud.served.services.commands.submit(
        team.team_id, dispatch("j1"), job_id="j1", wait_seconds=0
    )
    assert outcome.state == "queued" and outcome.response is None


async def test_a_command_for_a_job_waits_for_the_runner_that_owns_it(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    services = cloud.served.services
    await services.mirror.store(team.team_id, make_job("j1", "running"), 1, "owner")
    async with runner_client(cloud.served.url, team.token) as other:
        await other.register("other", capacity=5)
        cancel = EventCancel(message_id=uuid.uuid4().hex, job_id="j1")
        outcome = await services.commands.submit(team.team_id, cancel, job_id="j1", wait_seconds=0)
        assert outcome.state == "queued"
        [row] = await command_rows(cloud)
        assert (row["runner_id"], row["state"]) == ("owner", "pending")
        async with runner_client(cloud.served.url, team.token) as owner:
            await owner.register("owner")
            command = await owner.command()
            assert command["messageId"] == cancel.message_id
        assert other.commands.empty()


async def test_a_refused_dispatch_fails_the_job_with_the_runners_reason(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    services = cloud.served.services
    await services.mirror.create_provisional(team.team_id, make_job("j1"))
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register("r1")
        waiting = asyncio.create_task(
            services.commands.submit(
                team.team_id, dispatch("j1"), job_id="j1", wait_seconds=WAIT_LIMIT
            )
        )
        command = await client.command()
        await client.answer(command, ok=False, error="Unknown workflow: w.md", status=400)
        outcome = await waiting
    assert outcome.state == "failed"
    assert outcome.response is not None and outcome.response.status == 400
    stored = await services.mirror.get(team.team_id, "j1")
    assert stored is not None and stored.job.status == "failed"
    [line] = await services.mirror.read_logs(team.team_id, "j1")
    assert line.line.endswith("The runner refused the job: Unknown workflow: w.md")


async def test_cancelling_pending_commands_wakes_their_waiter(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    commands = cloud.served.services.commands
    wakes = Wakes(cloud)
    waiting = asyncio.create_task(
        commands.submit(team.team_id, dispatch("j1"), job_id="j1", wait_seconds=WAIT_LIMIT)
    )
    await wakes.reach(1)
    assert await commands.cancel_pending(team.team_id, "j1") == 1
    assert (await waiting).state == "cancelled"
    assert await commands.cancel_pending(team.team_id, "j1") == 0


async def test_a_command_sent_but_never_answered_is_sent_again_at_the_next_register(
    cloud: Cloud,
) -> None:
    team = await team_runner(cloud)
    commands = cloud.served.services.commands
    async with runner_client(cloud.served.url, team.token) as first:
        await first.register("r1")
        await commands.submit(team.team_id, dispatch("j1"), job_id="j1", wait_seconds=0)
        sent = await first.command()
    async with runner_client(cloud.served.url, team.token) as second:
        await second.register("r1")
        again = await second.command()
        assert again == sent  # the same messageId: the runner de-duplicates it
        await second.answer(again, data={"id": "j1"})
        # frames of one socket are handled in order: once a later request is answered,
        # the answer before it is stored
        await second.rpc({"type": "job:list"})
    [row] = await command_rows(cloud)
    assert (row["state"], row["attempts"]) == ("done", 2)


async def test_dispatches_go_to_the_least_busy_runner_with_room(cloud: Cloud) -> None:
    team = await team_runner(cloud)
    commands = cloud.served.services.commands
    async with (
        runner_client(cloud.served.url, team.token) as full,
        runner_client(cloud.served.url, team.token) as half,
        runner_client(cloud.served.url, team.token) as empty,
    ):
        await full.register("full", capacity=1, active=["x"])
        await half.register("half", capacity=4, active=["p", "q"])
        await empty.register("empty", capacity=2)
        chosen = []
        for n in range(5):
            await commands.submit(team.team_id, dispatch(f"d{n}"), job_id=f"d{n}", wait_seconds=0)
            chosen.append((await command_rows(cloud))[-1]["runner_id"])
        # by load (busy / capacity), then the most free slots: nobody is over capacity,
        # and the fifth waits for room
        assert chosen == ["empty", "half", "empty", "half", None]
        for client, count in ((half, 2), (empty, 2)):
            got = [(await client.command())["jobId"] for _ in range(count)]
            assert len(got) == count
        # the full runner finishes its job: its heartbeat claims the waiting dispatch
        await full.heartbeat([])
        assert (await full.command())["jobId"] == "d4"
    assert full.commands.empty() and half.commands.empty() and empty.commands.empty()


async def test_a_command_for_a_dispatched_job_follows_its_dispatch(cloud: Cloud) -> None:
    """Until its runner reports the job, its commands go where its dispatch went (not to
    whichever runner of the team claims first)."""
    team = await team_runner(cloud)
    commands = cloud.served.services.commands
    async with (
        runner_client(cloud.served.url, team.token) as taker,
        runner_client(cloud.served.url, team.token) as other,
    ):
        await taker.register("taker", capacity=1)
        await commands.submit(team.team_id, dispatch("j1"), job_id="j1", wait_seconds=0)
        assert (await taker.command())["jobId"] == "j1"
        await other.register("other", capacity=4)
        cancel = EventCancel(message_id=uuid.uuid4().hex, job_id="j1")
        await commands.submit(team.team_id, cancel, job_id="j1", wait_seconds=0)
        assert (await taker.command())["messageId"] == cancel.message_id
    assert other.commands.empty()


@asynccontextmanager
async def two_instances(cloud_factory: CloudFactory) -> AsyncIterator[tuple[Cloud, Cloud]]:
    prefix = f"coro-test-{uuid.uuid4().hex}:"
    async with (
        cloud_factory(redis_url=REDIS_URL, redis_channel_prefix=prefix) as one,
        cloud_factory(redis_url=REDIS_URL, redis_channel_prefix=prefix) as two,
    ):
        yield one, two


async def test_a_command_submitted_on_one_instance_reaches_a_runner_on_another_once(
    cloud_factory: CloudFactory,
) -> None:
    async with two_instances(cloud_factory) as (one, two):
        team = await team_runner(one)
        async with runner_client(two.served.url, team.token) as client:
            await client.register("r1", capacity=4)
            commands: Commands = one.served.services.commands
            first = dispatch("j1")
            waiting = asyncio.create_task(
                commands.submit(team.team_id, first, job_id="j1", wait_seconds=WAIT_LIMIT)
            )
            command = await client.command()
            assert command["messageId"] == first.message_id
            await client.answer(command, data={"id": "j1"})
            outcome = await waiting
            assert outcome.state == "done"  # the answer came back through instance two
            second = dispatch("j2")
            waiting = asyncio.create_task(
                commands.submit(team.team_id, second, job_id="j2", wait_seconds=WAIT_LIMIT)
            )
            # commands reach a runner in id order: a second copy of the first would be next
            command = await client.command()
            assert command["messageId"] == second.message_id
            await client.answer(command, data={"id": "j2"})
            assert (await waiting).state == "done"
        rows = await command_rows(one)
        assert [(r["attempts"], r["sent_by"]) for r in rows] == [
            (1, two.served.services.instance_id),
            (1, two.served.services.instance_id),
        ]


async def test_two_instances_claiming_at_once_send_each_command_once(
    cloud_factory: CloudFactory,
) -> None:
    async with two_instances(cloud_factory) as (one, two):
        team = await team_runner(one)
        commands = one.served.services.commands
        for n in range(20):
            await commands.submit(team.team_id, dispatch(f"d{n}"), job_id=f"d{n}", wait_seconds=0)
        webhook = EventPluginWebhook(
            message_id=uuid.uuid4().hex,
            plugin_id="github",
            headers={},
            raw_body_base64="",
            received_at="2025-01-01T00:00:00Z",
        )
        await commands.submit(team.team_id, webhook, job_id=None, wait_seconds=0)
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(runner_client(one.served.url, team.token))
            b = await stack.enter_async_context(runner_client(two.served.url, team.token))
            await asyncio.gather(a.register("ra", capacity=10), b.register("rb", capacity=10))
            received = await _collect([a, b], 21)
        ids = [frame["messageId"] for frames in received for frame in frames]
        assert len(ids) == len(set(ids)) == 21
        # each took what it had room for: 10 dispatches, and one took the webhook too
        assert sorted(len(frames) for frames in received) == [10, 11]
        rows = await command_rows(one)
        assert all(r["attempts"] == 1 and r["state"] == "sent" for r in rows)


async def _collect(clients: list[RunnerClient], total: int) -> list[list[dict[str, Any]]]:
    received: list[list[dict[str, Any]]] = [[] for _ in clients]
    async with asyncio.timeout(WAIT_LIMIT):
        while sum(len(r) for r in received) < total:
            gets = {asyncio.create_task(c.commands.get()): n for n, c in enumerate(clients)}
            done, pending = await asyncio.wait(gets, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                received[gets[task]].append(task.result())
    return received


class Proxy:
    """A TCP relay to Redis whose connections the test can cut."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()


async def test_the_redis_broker_reconnects_after_its_connection_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = f"coro-test-{uuid.uuid4().hex}:"
    async with Proxy() as proxy:
        broker = RedisBroker(f"redis://127.0.0.1:{proxy.port}/0", prefix)
        peer = RedisBroker(REDIS_URL, prefix)
        await broker.start()
        await peer.start()
        try:
            got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            broker.subscribe("wake", got.put_nowait)
            await peer.publish("wake", {"n": 1})
            async with asyncio.timeout(WAIT_LIMIT):
                assert await got.get() == {"n": 1}
            proxy.cut()
            # notices sent while it is away are lost (the database is the truth): publish
            # until one arrives through the new subscription
            async with asyncio.timeout(WAIT_LIMIT):
                while True:
                    await peer.publish("wake", {"n": 2})
                    try:
                        async with asyncio.timeout(0.2):
                            assert await got.get() == {"n": 2}
                        break
                    except TimeoutError:
                        continue
            assert "redis broker: connection failed" in caplog.text
        finally:
            await broker.close()
            await peer.close()
