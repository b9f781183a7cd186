"""Live usage: a running phase's tokens and cost show in the job after every round trip
(job JSON, `[usage]` log lines), and count once when the phase ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coro.config import CoroConfig
from tests.conftest import WAIT_LIMIT, Api, ApiFactory, provider_config, write_workflow
from tests.fakes.anthropic_server import FakeAnthropic, Reply, Text, ToolUse, Usage

KEY = "sk-ant-test-live-usage-0123456789"
ONE_PHASE = [{"name": "work", "agent": None}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY) as server:
        yield server


def anthropic_config(fake: FakeAnthropic) -> CoroConfig:
    return provider_config("anthropic", apiKey=KEY, baseUrl=fake.base_url, retryBackoffSeconds=0)


def counts(usage: dict[str, Any]) -> tuple[int, int]:
    return usage["inputTokens"], usage["outputTokens"]


async def test_a_running_phase_shows_its_usage_after_each_round_trip(
    api_factory: ApiFactory, fake: FakeAnthropic
) -> None:
    first = Usage(input_tokens=1200, output_tokens=300)
    second = Usage(input_tokens=800, output_tokens=50)
    fake.queue(
        Reply([ToolUse("log", {"message": "working"})], usage=first),
        # The second round trip stays open until the test has looked at the job.
        Reply([Text("Done.")], usage=second, hold=True),
    )
    async with api_factory(anthropic_config(fake)) as api:
        workflow = write_workflow(api.home, "live", ONE_PHASE)
        job_id = await api.create(workflow)
        async with asyncio.timeout(WAIT_LIMIT):
            await fake.holding.wait()
        running = await api.job(job_id)
        so_far = await api.wait_for_line(job_id, "[usage] Phase work: +")
        fake.release.set()
        result = await api.finish(job_id)
        job = await api.job(job_id)

    assert running["status"] == "work"  # still in the phase
    (live,) = running["phaseUsage"]
    assert live["inProgress"] is True
    assert counts(live) == (1200, 300)
    assert live["numTurns"] == 1
    assert live["costUsd"] > 0
    assert counts(running["tokenUsage"]) == (1200, 300)
    assert running["tokenUsage"]["totalCostUsd"] == pytest.approx(live["costUsd"])
    assert so_far.texts()[-1] == (
        f"[usage] Phase work: +1,200 in / 300 out — phase 1,200 in / 300 out, "
        f"${live['costUsd']:.4f}"
    )

    assert result.done == "complete", result.texts()
    (final,) = job["phaseUsage"]  # the running entry became the final one: no copy
    assert final["inProgress"] is False
    assert counts(final) == (2000, 350)
    assert final["numTurns"] == 2
    assert counts(job["tokenUsage"]) == (2000, 350)  # each round trip counted once
    assert job["tokenUsage"]["totalCostUsd"] == pytest.approx(final["costUsd"], abs=1e-6)
    per_trip = [t for t in result.texts() if t.startswith("[usage] Phase work: +")]
    assert len(per_trip) == 2
    assert per_trip[1].startswith("[usage] Phase work: +800 in / 50 out — phase 2,000 in")


async def test_usage_before_a_rate_limit_is_counted_once(api: Api) -> None:
    workflow = write_workflow(api.home, "limited", ONE_PHASE)
    script = {
        "work": [
            [{"usage": {"inputTokens": 40, "outputTokens": 10, "costUsd": 0.5}}, {"rateLimit": 0}],
            [{"usage": {"inputTokens": 5, "outputTokens": 1}}],
        ]
    }
    job_id = await api.create(workflow, script)
    result = await api.finish(job_id)
    job = await api.job(job_id)

    assert result.done == "complete", result.texts()
    assert [(u["visit"], *counts(u), u["inProgress"]) for u in job["phaseUsage"]] == [
        (1, 40, 10, False),
        (2, 5, 1, False),
    ]
    assert counts(job["tokenUsage"]) == (45, 11)
    assert job["tokenUsage"]["totalCostUsd"] == pytest.approx(0.5)


async def test_a_phase_without_usage_writes_no_usage_lines_per_round_trip(api: Api) -> None:
    workflow = write_workflow(api.home, "quiet", ONE_PHASE)
    job_id = await api.create(workflow, {"work": [{"text": "nothing to pay for"}]})
    result = await api.finish(job_id)
    job = await api.job(job_id)

    assert result.done == "complete"
    assert not [t for t in result.texts() if t.startswith("[usage] Phase work: +")]
    assert [counts(u) for u in job["phaseUsage"]] == [(0, 0)]
