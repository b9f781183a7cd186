"""Runner overhead per phase transition, executor time excluded (SPEC §7: median ≤ 5 ms).

An in-process `Runner` (real SQLite in a temp CORO_HOME) runs jobs of a 10-phase
workflow whose phases have empty scripts (`params.script = {}`: the script executor
returns at once), one job at a time. Two measures:

* per transition: the time between consecutive phase boundaries of a job, taken when
  the runner publishes the boundary's log line ("Runner started", "Phase advanced",
  "All phases complete") — each interval is one full phase visit: the start write, the
  phase log line, the (empty) executor turn, the usage write and the advance write;
* per job: wall time from `jobs.create` until the dispatcher is idle, divided by the
  number of transitions (10), which also includes creation and the run's start/end.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from bench._common import (
    base_parser,
    make_runner,
    ms,
    print_table,
    save,
    summarize,
    temp_home,
    verdict,
    write_workflow,
)
from coro.domain.models import COMPLETE, LogEntry
from coro.engine.service import NewJob
from coro.state.logbus import LogBus

NAME = "phase_overhead"
PHASES = 10
BOUNDARIES = ("Runner started", "Phase advanced", "All phases complete")
TARGET_MEDIAN_MS = 5.0


class BoundaryClock(LogBus):
    """A log bus that notes when each phase-boundary line is published."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[str, list[int]] = {}

    def publish_lines(self, job_id: str, entries: list[LogEntry]) -> None:
        now = time.perf_counter_ns()
        for entry in entries:
            if any(marker in entry.line for marker in BOUNDARIES):
                self.marks.setdefault(job_id, []).append(now)
        super().publish_lines(job_id, entries)


async def run(jobs: int = 50, warmup: int = 5, backend: str = "sqlite") -> dict[str, Any]:
    async with temp_home(backend) as home:
        workflow = write_workflow(
            home, "ten", [{"name": f"p{n}", "agent": None} for n in range(PHASES)]
        )
        runner = make_runner(home, max_concurrent=1, backend=backend)
        clock = BoundaryClock()
        runner.backend.bus = clock  # before start: the backend publishes on it
        per_job_ns: list[float] = []
        transitions_ns: list[float] = []
        async with runner.running():
            for n in range(warmup + jobs):
                started = time.perf_counter_ns()
                job = await runner.jobs.create(
                    NewJob(workflow_path=workflow, params={"script": {}})
                )
                await runner.dispatcher.wait_idle()
                elapsed = time.perf_counter_ns() - started
                stored = await runner.jobs.get(job.id)
                if stored.status != COMPLETE:
                    raise RuntimeError(f"job {job.id} ended {stored.status}, not complete")
                marks = clock.marks.pop(job.id, [])
                if len(marks) != PHASES + 1:
                    raise RuntimeError(f"job {job.id}: {len(marks)} boundaries, not {PHASES + 1}")
                if n < warmup:
                    continue
                per_job_ns.append(elapsed / PHASES)
                transitions_ns.extend(b - a for a, b in itertools.pairwise(marks))
    transition = summarize([ms(v) for v in transitions_ns])
    job_level = summarize([ms(v) for v in per_job_ns])
    return {
        "backend": backend,
        "jobs": jobs,
        "phases": PHASES,
        "transition_ms": transition,
        "job_wall_per_transition_ms": job_level,
        "target": {"median_ms": TARGET_MEDIAN_MS},
        "pass": transition["p50"] <= TARGET_MEDIAN_MS,
    }


def report(result: dict[str, Any]) -> None:
    t = result["transition_ms"]
    j = result["job_wall_per_transition_ms"]
    print_table(
        f"phase_overhead ({result['backend']}, {result['jobs']} jobs × {result['phases']} phases)",
        [
            ("transition median (ms)", f"{t['p50']:.2f}", verdict(t["p50"], TARGET_MEDIAN_MS)),
            ("transition p95 (ms)", f"{t['p95']:.2f}", ""),
            ("job wall / transition median (ms)", f"{j['p50']:.2f}", ""),
            ("job wall / transition p95 (ms)", f"{j['p95']:.2f}", ""),
        ],
    )


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(run(jobs=args.jobs, backend=args.backend))
    report(result)
    save(NAME, args, result)


if __name__ == "__main__":
    main()
