"""Crash safety: `coro start` SIGKILLed at random moments, restarted, every job checked.

Each trial runs a `coro start` child on a fresh CORO_HOME with a few three-phase
`script` jobs: every phase visit logs bursts of lines, reports usage twice (the second
report is its last step, so a kill can land right after a finished turn counted it) and
sleeps a little between. The child is killed with SIGKILL one or two times at seeded
random moments, restarted each time, and finally left to finish every job. Then:

- every job is `complete`;
- its log's indexes are 0..n-1 (no gap, no duplicate), and every line seen over SSE
  before a kill is stored exactly once, at the index it was seen with;
- usage is counted once per phase visit: no (phase, visit) twice in `phaseUsage`, each
  entry what that visit reported before it stopped (nothing, the first report or
  both), the finished visit of each phase both, `tokenUsage` their sum, and a phase
  whose turn ended (its end-of-turn usage line) never ran again;
- SQLite `PRAGMA integrity_check` answers `ok` once the runner has stopped (the
  PostgreSQL backend: the same invariants, through the API).

`python -m bench.crash_safety --trials N [--seed S] [--backend postgres]` prints the
figures; tests/test_crash_safety.py runs a few trials in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._common import base_parser, make_config, print_table, save, temp_home, write_workflow
from coro.api.server import free_port
from coro.config import CoroHome

PHASES = ("design", "build", "verify")
BURST = 12  # text lines per burst, two bursts per visit
#: the two usage reports of a visit of each phase: (input, output) tokens
USAGE = {
    name: ((100 * (i + 1), 10 * (i + 1)), (1000 * (i + 1), 1 * (i + 1)))
    for i, name in enumerate(PHASES)
}
JOBS_PER_TRIAL = 3
LINES_PER_JOB = 90
ROOT = Path(__file__).resolve().parent.parent
START_LIMIT = 60.0
FINISH_LIMIT = 120.0


def script() -> dict[str, Any]:
    def visit(phase: str) -> list[dict[str, Any]]:
        (in1, out1), (in2, out2) = USAGE[phase]
        steps: list[dict[str, Any]] = [{"text": f"{phase} line {n}"} for n in range(BURST)]
        steps.append({"usage": {"inputTokens": in1, "outputTokens": out1}})
        steps.append({"sleep": 0.05})
        steps.extend({"text": f"{phase} late line {n}"} for n in range(BURST))
        steps.append({"usage": {"inputTokens": in2, "outputTokens": out2}})
        return steps

    return {phase: visit(phase) for phase in PHASES}


@dataclass
class Seen:
    """What one job's streams carried: index → line (with its timestamp)."""

    lines: dict[int, str] = field(default_factory=dict)
    done: str | None = None


@dataclass
class Totals:
    trials: int = 0
    kills: int = 0
    kills_mid_run: int = 0  # kills that found a job still running
    jobs: int = 0
    lines: int = 0  # lines seen over SSE before a kill, each checked
    restarted_visits: int = 0  # phase visits cut off by a kill and run again
    problems: list[str] = field(default_factory=list)

    def summary(self, seed: int) -> str:
        verdict = "ok" if not self.problems else f"{len(self.problems)} PROBLEMS"
        return (
            f"crash safety (seed {seed}): {self.trials} trials, {self.kills} kills "
            f"({self.kills_mid_run} mid-run), "
            f"{self.jobs} jobs, {self.lines} lines seen before a kill, "
            f"{self.restarted_visits} visits re-run — {verdict}"
        )


@contextlib.asynccontextmanager
async def runner_child(home: CoroHome, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """`coro start` in a child process, once it prints its dashboard URL. Leaving the
    block stops it with SIGTERM unless the caller killed it already."""
    env = {**os.environ, "CORO_HOME": str(home.root), "CORO_NO_OPEN": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        "start",
        "--port",
        str(port),
        "--no-open",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    assert process.stdout is not None
    said: list[str] = []
    try:
        async with asyncio.timeout(START_LIMIT):
            while "Dashboard:" not in (said[-1] if said else ""):
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"runner exited early: {''.join(said)}")
                said.append(line)
        # Keep draining its output so a chatty runner never blocks on a full pipe.
        drain = asyncio.create_task(_drain(process.stdout))
        try:
            yield process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()
            drain.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


@dataclass
class KillAt:
    """The moment to kill: once this many lines new since the last start went by."""

    lines: int
    moment: asyncio.Event = field(default_factory=asyncio.Event)

    def saw(self) -> None:
        self.lines -= 1
        if self.lines <= 0:
            self.moment.set()


async def follow(
    client: httpx.AsyncClient, job_id: str, seen: Seen, old: int, kill_at: KillAt
) -> None:
    """Record every log line the job's stream carries until `done` or the runner dies;
    lines past index `old` count towards the kill."""
    try:
        async with client.stream("GET", f"/jobs/{job_id}/stream") as response:
            event, index = "message", None
            data: list[str] = []
            async for line in response.aiter_lines():
                if line == "":
                    if event == "done":
                        seen.done = "\n".join(data)
                        return
                    if index is not None and event == "message":
                        seen.lines[int(index)] = "\n".join(data)
                        if int(index) >= old:
                            kill_at.saw()
                    event, data, index = "message", [], None
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "data":
                        data.append(value)
                    elif name == "event":
                        event = value
                    elif name == "id":
                        index = value
    except (httpx.TransportError, httpx.RemoteProtocolError):
        return  # the runner was killed


async def run_trial(rng: random.Random, backend: str, totals: Totals) -> None:
    async with temp_home(backend) as home:
        home.save_config(make_config(home, max_concurrent=JOBS_PER_TRIAL))
        workflow = write_workflow(home, "crashy", [{"name": p, "agent": None} for p in PHASES])
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        kills = rng.choice((1, 2))
        before: dict[str, dict[int, str]] = {}
        job_ids: list[str] = []
        final: dict[str, tuple[Seen, dict[str, Any]]] = {}
        for life in range(kills + 1):
            async with (
                runner_child(home, port) as process,
                httpx.AsyncClient(base_url=url, timeout=30) as client,
            ):
                if life == 0:
                    for _ in range(JOBS_PER_TRIAL):
                        body = {"workflowPath": workflow, "params": {"script": script()}}
                        created = await client.post("/jobs", json=body)
                        created.raise_for_status()
                        job_ids.append(created.json()["jobId"])
                seen = {job_id: Seen() for job_id in job_ids}
                # A random moment of the jobs' run, counted in log lines (a job logs
                # about LINES_PER_JOB), so it does not depend on the machine's speed.
                kill_at = KillAt(rng.randint(1, LINES_PER_JOB * len(job_ids)))
                readers = [
                    asyncio.create_task(follow(client, j, seen[j], len(before.get(j, {})), kill_at))
                    for j in job_ids
                ]
                if life < kills:
                    moment = asyncio.create_task(kill_at.moment.wait())
                    every_job = asyncio.gather(*readers)
                    either: list[asyncio.Future[Any]] = [moment, every_job]
                    async with asyncio.timeout(FINISH_LIMIT):
                        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    moment.cancel()
                    process.send_signal(signal.SIGKILL)
                    await process.wait()
                    totals.kills += 1
                async with asyncio.timeout(FINISH_LIMIT):
                    await asyncio.gather(*readers)
                if life < kills:
                    for job_id, s in seen.items():
                        before.setdefault(job_id, {}).update(s.lines)
                    totals.kills_mid_run += any(s.done is None for s in seen.values())
                else:
                    final = {j: (seen[j], (await client.get(f"/jobs/{j}")).json()) for j in job_ids}
        for job_id, (stream, job) in final.items():
            check_job(job_id, stream, job, before.get(job_id, {}), totals)
        if backend == "sqlite":
            answer = await asyncio.to_thread(integrity_check, home.state_db)
            if answer != "ok":
                totals.problems.append(f"integrity_check: {answer}")
        totals.trials += 1


def integrity_check(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(r[0]) for r in rows)


def check_job(
    job_id: str, stream: Seen, job: dict[str, Any], before: dict[int, str], totals: Totals
) -> None:
    problems = totals.problems
    totals.jobs += 1
    totals.lines += len(before)
    if job["status"] != "complete" or stream.done != "complete":
        problems.append(f"{job_id}: ended {job['status']} (stream: {stream.done})")
    lines = stream.lines
    if sorted(lines) != list(range(len(lines))):
        problems.append(f"{job_id}: log indexes are not 0..{len(lines) - 1}")
    for index, line in before.items():
        if lines.get(index) != line:
            problems.append(f"{job_id}: line {index} seen before a kill is stored differently")
    repeated = [line for line, n in Counter(lines.values()).items() if n > 1]
    if repeated:
        problems.append(f"{job_id}: {len(repeated)} lines stored twice, e.g. {repeated[0]!r}")
    check_usage(job_id, job, list(lines.values()), totals)


def check_usage(job_id: str, job: dict[str, Any], lines: list[str], totals: Totals) -> None:
    problems = totals.problems
    entries = job["phaseUsage"]
    keys = [(u["phase"], u["visit"]) for u in entries]
    if len(set(keys)) != len(keys):
        problems.append(f"{job_id}: a phase visit has two usage entries: {keys}")
    for phase in PHASES:
        (in1, out1), (in2, out2) = USAGE[phase]
        allowed = {(0, 0), (in1, out1), (in1 + in2, out1 + out2)}
        visits = sorted((u for u in entries if u["phase"] == phase), key=lambda u: u["visit"])
        counted = [(u["inputTokens"], u["outputTokens"]) for u in visits]
        if any(c not in allowed for c in counted) or not counted:
            problems.append(f"{job_id}: {phase} usage per visit {counted}")
        elif counted[-1] != (in1 + in2, out1 + out2):
            problems.append(f"{job_id}: {phase}'s finished visit counted {counted[-1]}")
        totals.restarted_visits += max(0, job["phaseVisits"].get(phase, 0) - 1)
        # the end-of-turn line ("… 1100 in / 11 out"), not a round trip's ("… +100 in …")
        texts = [_text(t) for t in lines]
        ended = [t for t in texts if t.startswith(f"[usage] Phase {phase}: ") and "+" not in t]
        if len(ended) != 1:
            problems.append(f"{job_id}: {phase}'s turn ended {len(ended)} times")
    total = job["tokenUsage"]
    summed = (sum(u["inputTokens"] for u in entries), sum(u["outputTokens"] for u in entries))
    if (total["inputTokens"], total["outputTokens"]) != summed:
        problems.append(f"{job_id}: tokenUsage {total} is not the sum of phaseUsage {summed}")


def _text(line: str) -> str:
    """A log line without its timestamp."""
    return line.split(" ", 1)[1] if " " in line else line


async def run(trials: int, seed: int, backend: str = "sqlite") -> Totals:
    rng = random.Random(seed)
    totals = Totals()
    for _ in range(trials):
        await run_trial(rng, backend, totals)
    return totals


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else "crash safety")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    args = parser.parse_args()
    if args.backend == "memory":
        parser.error("a memory backend does not survive a kill: use sqlite or postgres")
    seed = args.seed if args.seed is not None else int(time.time())
    started = time.monotonic()
    totals = asyncio.run(run(args.trials, seed, args.backend))
    elapsed = time.monotonic() - started
    print(totals.summary(seed))
    for problem in totals.problems:
        print(f"  ✗ {problem}")
    print_table(
        f"Crash safety ({args.backend}, seed {seed})",
        [
            ("trials", str(totals.trials), ""),
            ("SIGKILLs", str(totals.kills), ""),
            ("SIGKILLs with a job running", str(totals.kills_mid_run), ""),
            ("jobs checked", str(totals.jobs), ""),
            ("lines seen before a kill", str(totals.lines), "each stored once"),
            ("phase visits re-run", str(totals.restarted_visits), ""),
            ("problems", str(len(totals.problems)), "0"),
            ("seconds", f"{elapsed:.1f}", ""),
        ],
    )
    save(
        "crash_safety",
        args,
        {
            "seed": seed,
            "trials": totals.trials,
            "kills": totals.kills,
            "kills_mid_run": totals.kills_mid_run,
            "jobs": totals.jobs,
            "lines_seen_before_kill": totals.lines,
            "visits_rerun": totals.restarted_visits,
            "problems": totals.problems,
            "seconds": round(elapsed, 1),
        },
    )
    if totals.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
