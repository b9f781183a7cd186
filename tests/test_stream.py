"""The SSE log stream: replay, live push, resume with Last-Event-ID, tail, heartbeat."""

from __future__ import annotations

import asyncio

import pytest

from coro.api.routes import stream as stream_module
from coro.domain.models import LogEntry
from coro.state.logbus import LogBus, SubscriptionClosed
from tests.conftest import Api, write_workflow
from tests.sse import frames

#: the tests that run a job, once per state backend (the bus tests need none)
pytestmark = pytest.mark.backends("sqlite", "postgres")

ONE_PHASE = [{"name": "work", "agent": None}]


async def test_reconnect_with_last_event_id_gets_every_line_exactly_once(api: Api) -> None:
    workflow = write_workflow(api.home, "chatty", ONE_PHASE)
    burst = [{"text": f"line {n}"} for n in range(1000)]
    script = {
        "work": [
            [{"tool": "await_event", "input": {"eventName": "developer-input: ready?"}}],
            burst,
        ]
    }
    job_id = await api.create(workflow, script)
    before = await api.wait_for_line(job_id, "Job parked")

    # Start the burst, read part of it, then drop the connection mid-stream.
    await api.client.post(f"/jobs/{job_id}/message", json={"message": "go"})
    first = await api.follow(job_id, until=lambda line: line.endswith(" line 300"))
    last_id = first.ids[-1]
    second = await api.follow(job_id, headers={"Last-Event-ID": str(last_id)})
    assert second.done == "complete"

    ids = first.ids + second.ids
    assert ids == list(range(len(ids)))
    texts = first.texts() + second.texts()
    burst_lines = [t for t in texts if t.startswith("line ")]
    assert burst_lines == [f"line {n}" for n in range(1000)]
    assert first.lines[: len(before.lines)] == before.lines

    via_query = await api.follow(job_id, params={"lastEventId": str(last_id)})
    assert via_query.lines == second.lines


async def test_tail_replays_only_the_last_lines(api: Api) -> None:
    workflow = write_workflow(api.home, "tailed", ONE_PHASE)
    job_id = await api.create(workflow, {"work": [{"text": f"t{n}"} for n in range(20)]})
    full = await api.finish(job_id)
    tail = await api.follow(job_id, params={"tail": 3})
    assert tail.done == "complete"
    assert tail.lines == full.lines[-3:]
    assert tail.ids == full.ids[-3:]


async def test_multiline_text_becomes_several_data_lines(api: Api) -> None:
    workflow = write_workflow(api.home, "multi", ONE_PHASE)
    job_id = await api.create(workflow, {"work": [{"text": "first row\nsecond row"}]})
    async with api.client.stream("GET", f"/jobs/{job_id}/stream") as response:
        raw = (await response.aread()).decode()
    assert "data: second row\n" in raw
    result = await api.finish(job_id)
    assert any(t == "first row\nsecond row" for t in result.texts())


async def test_parked_job_keeps_stream_open_with_heartbeats(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "HEARTBEAT_SECONDS", 0.2)
    workflow = write_workflow(api.home, "idle", ONE_PHASE)
    job_id = await api.create(
        workflow, {"work": [{"tool": "await_event", "input": {"eventName": "developer-input: ?"}}]}
    )
    await api.wait_for_line(job_id, "Job parked")
    async with asyncio.timeout(30), api.client.stream("GET", f"/jobs/{job_id}/stream") as response:
        async for frame in frames(response):
            if "heartbeat" in frame.comments:
                break
    cancel = await api.client.post(f"/jobs/{job_id}/cancel")
    assert cancel.status_code == 200
    assert (await api.finish(job_id)).done == "cancelled"


async def test_slow_subscriber_is_cut_off_without_blocking_others() -> None:
    bus = LogBus(max_buffer=10)
    slow = bus.subscribe("job")
    fast = bus.subscribe("job")
    received = []
    for n in range(25):
        bus.publish_lines("job", [LogEntry(index=n, line=f"l{n}")])
        item = await fast.get()
        received.append(item)
    assert len(received) == 25
    with pytest.raises(SubscriptionClosed):
        await slow.get()
    assert bus.subscriber_count("job") == 1
