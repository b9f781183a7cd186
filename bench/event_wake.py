"""Event → parked job's next phase started (SPEC §7: p50 ≤ 100 ms).

An in-process `Runner` (real SQLite in a temp CORO_HOME) with the `local` SCM. Each job
clones a bare repository, opens a pull request and parks (`await_event` on the PR).
The benchmark then approves the PR through the local SCM and runs one cycle of the PR
poller itself (the automatic cycles are pushed out of the way), and measures from the
start of that cycle to the moment the woken job's run starts (its "Runner started" log
line is published). The poll's own share (asking the SCM, comparing, persisting what
it saw) is reported separately. One job at a time, so each cycle polls one PR.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench._common import (
    base_parser,
    make_backend,
    make_config,
    ms,
    print_table,
    save,
    summarize,
    temp_home,
    verdict,
    write_workflow,
)
from coro.domain.models import AWAITING_PR_MERGE, COMPLETE, LogEntry
from coro.engine.polling import PollingTransport
from coro.engine.service import NewJob
from coro.plugins.scm.local import PLUGIN_ID as LOCAL_SCM
from coro.plugins.scm.local import LocalScm
from coro.runner import Runner
from coro.state.logbus import LogBus

NAME = "event_wake"
TARGET_P50_MS = 100.0
REPO = "bench"
RUN_STARTED = "Runner started"


class RunStartClock(LogBus):
    """A log bus that notes when each job's runs start."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[str, list[int]] = {}

    def publish_lines(self, job_id: str, entries: list[LogEntry]) -> None:
        now = time.perf_counter_ns()
        for entry in entries:
            if RUN_STARTED in entry.line:
                self.starts.setdefault(job_id, []).append(now)
        super().publish_lines(job_id, entries)


def job_script(n: int) -> dict[str, Any]:
    def tool(name: str, /, **tool_input: Any) -> dict[str, Any]:
        return {"tool": name, "input": tool_input}

    return {
        "coding": [
            [
                tool("scm_clone_repo", repo=REPO),
                tool("file_write", path=f"{REPO}/change-{n}.txt", content=f"change {n}\n"),
                tool("scm_create_pr", title=f"Change {n}"),
                tool("await_event", eventName="pr:review"),
            ],
            [tool("scm_merge_pr", prId=n + 1)],
        ]
    }


async def run(jobs: int = 30, warmup: int = 3, backend: str = "sqlite") -> dict[str, Any]:
    async with temp_home(backend) as home:
        workflow = write_workflow(home, "reviewed", [{"name": "coding", "agent": None}])
        config = make_config(
            home, polling={"intervalSeconds": 86_400, "localChangeDelaySeconds": 86_400}
        )
        home.save_config(config)
        runner = Runner(home, config, backend=make_backend(backend, home))
        clock = RunStartClock()
        runner.backend.bus = clock  # before start: the backend publishes on it
        poller = runner.transport
        assert isinstance(poller, PollingTransport)
        wake_ns: list[float] = []
        poll_ns: list[float] = []
        async with runner.running():
            local = runner.plugins.get("scm", LOCAL_SCM)
            assert isinstance(local, LocalScm)
            source = home.root / "bench-source"
            source.mkdir()
            (source / "README.md").write_text("# bench\n")
            await local.create_repo(REPO, from_dir=source)
            for n in range(warmup + jobs):
                job = await runner.jobs.create(
                    NewJob(workflow_path=workflow, params={"script": job_script(n), "repo": REPO})
                )
                await runner.dispatcher.wait_idle()
                parked = await runner.jobs.get(job.id)
                if parked.status != AWAITING_PR_MERGE:
                    raise RuntimeError(f"job {job.id} is {parked.status}, not parked on its PR")
                await local.approve(parked.pr_mappings[0].pr_id, "reviewer")
                started = time.perf_counter_ns()
                events = await poller.poll_once()
                polled = time.perf_counter_ns()
                await runner.dispatcher.wait_idle()
                done = await runner.jobs.get(job.id)
                if len(events) != 1 or done.status != COMPLETE:
                    raise RuntimeError(f"job {job.id}: {len(events)} events, ended {done.status}")
                woke = clock.starts.pop(job.id)[-1]
                if n >= warmup:
                    wake_ns.append(woke - started)
                    poll_ns.append(polled - started)
    wake = summarize([ms(v) for v in wake_ns])
    poll = summarize([ms(v) for v in poll_ns])
    return {
        "backend": backend,
        "jobs": jobs,
        "poll_to_phase_start_ms": wake,
        "poll_cycle_ms": poll,
        "target": {"p50_ms": TARGET_P50_MS},
        "pass": wake["p50"] <= TARGET_P50_MS,
    }


def report(result: dict[str, Any]) -> None:
    wake = result["poll_to_phase_start_ms"]
    poll = result["poll_cycle_ms"]
    print_table(
        f"event_wake ({result['backend']}, {result['jobs']} jobs)",
        [
            ("poll → phase started p50 (ms)", f"{wake['p50']:.2f}", verdict(wake["p50"], 100)),
            ("poll → phase started p95 (ms)", f"{wake['p95']:.2f}", ""),
            ("poll cycle p50 (ms)", f"{poll['p50']:.2f}", ""),
        ],
    )


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--jobs", type=int, default=30)
    args = parser.parse_args()
    result = asyncio.run(run(jobs=args.jobs, backend=args.backend))
    report(result)
    save(NAME, args, result)


if __name__ == "__main__":
    main()
