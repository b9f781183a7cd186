"""The idle runner: 10,000 parked jobs, nothing happening (issue #13 point 10).

10,000 jobs parked waiting for events are written straight through the state backend
(realistic documents: a third awaiting the merge of a pull request they opened on the
`local` SCM, with its PR mapping and the PR in the local store; a third awaiting
developer input; a third awaiting plan approval), then a real `coro start` child runs on
that CORO_HOME. Once it serves and its start-up work is over (its CPU stays quiet), its
CPU time (utime + stime of /proc/<pid>/stat) is measured over `--seconds`, with what
woke it: context switches per thread (each one a return from sleeping: a timer, a
socket, a lock); and its resident memory (VmRSS, and VmHWM: the peak). Then the runner
is stopped and started again on the same store, and measured the same way. Finally every
job must still be parked: an idle runner wakes nothing.

`--strace` also runs `strace -f -c` on the child during the first window (the system
calls behind the wake-ups; needs strace and ptrace rights).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from bench._common import base_parser, make_config, print_table, save, temp_home
from bench.crash_safety import runner_child
from coro.api.server import free_port
from coro.config import CoroHome
from coro.domain.models import (
    AWAITING_DEVELOPER_INPUT,
    AWAITING_PLAN_APPROVAL,
    AWAITING_PR_MERGE,
    WAITING_FOR_EVENTS,
    Artifact,
    Checkout,
    Insight,
    Job,
    PhaseUsage,
    PrMapping,
    PrSeen,
    TokenUsage,
    WorkflowPhaseSummary,
    WorkItem,
)
from coro.extensions import Extensions
from coro.plugins.scm.local import PLUGIN_ID as LOCAL_SCM
from coro.state.backend import JobQuery, StateBackend
from coro.state.prs import NewPullRequest

NAME = "idle"
JOBS = 10_000
#: log lines each parked job already has (what its runs wrote)
LOG_LINES = 20
#: the quiet a runner must keep before it counts as idle: at most this share of a core
#: over `SETTLE_WINDOW` seconds, sampled every `SETTLE_STEP`
SETTLE_SHARE = 0.02
SETTLE_WINDOW = 3.0
SETTLE_STEP = 0.5
SETTLE_LIMIT = 300.0
#: jobs written at a time (concurrent `create_job`s share the backend's commits)
WRITE_BATCH = 500
#: one CPU percent figure is "idle" below this (a sleeping process shows ~0)
TARGET_CPU_PCT = 0.1
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

WORKFLOW = "workflows/job/workflow.md"
PHASES = [
    ("spec-writing", "spec-writing", "agents/spec-writer.md"),
    ("planning", "planning", "agents/planner.md"),
    ("coding", "coding", "agents/coder.md"),
    ("review", "reviewing", "agents/reviewer.md"),
    ("evaluation", "evaluating", "agents/evaluator.md"),
]
REPOS = ("api", "web", "billing", "search")

_DESCRIPTION = (
    "Add rate limiting to the public API: at most 100 requests a minute per token, "
    "429 with Retry-After beyond that, counters kept in Redis with a sliding window, "
    "limits configurable per plan, and a dashboard card showing the tokens closest to "
    "their limit. Keep the existing middleware order; document the new settings in "
    "the README and add tests for the window edges."
)
_SPEC = (
    "## Acceptance criteria\n"
    + "".join(f"- criterion {n}: the limiter behaves as described at edge {n}\n" for n in range(8))
    + "## Out of scope\n- per-IP limits\n- burst credits\n"
)
_PLAN = "".join(
    f"{n}. Work item {n}: implement and test part {n} of the limiter\n" for n in range(1, 5)
)


def parked_job(n: int, now: str, pr_id: int | None) -> Job:
    """Job `n` as a run leaves it parked: spec and plan written, work under way."""
    kind = n % 3
    repo = REPOS[n % len(REPOS)]
    phase = ("coding", "planning", "planning")[kind]
    usage = [
        PhaseUsage(
            phase=name,
            visit=1,
            input_tokens=41_000 + n % 997,
            output_tokens=3_100,
            cache_read_input_tokens=18_000,
            cost_usd=0.21,
            duration_ms=94_000,
            num_turns=12,
            model="claude-sonnet-5-5",
            provider="anthropic",
        )
        for name, _, _ in PHASES[: 3 if kind == 0 else 2]
    ]
    total = TokenUsage()
    for entry in usage:
        total.add(entry)
    job = Job(
        id=f"job-idle-{n:05d}",
        workflow_path=WORKFLOW,
        params={"description": _DESCRIPTION, "repo": repo, "gitProvider": LOCAL_SCM},
        status=(AWAITING_PR_MERGE, AWAITING_DEVELOPER_INPUT, AWAITING_PLAN_APPROVAL)[kind],
        phase=phase,
        workflow_phases=[
            WorkflowPhaseSummary(name=name, status=status, agent=agent, interactive_checkpoint=True)
            for name, status, agent in PHASES
        ],
        interactive=kind != 0,
        work_items=[
            WorkItem(name=f"part-{i}", status="complete" if i < 2 else "pending")
            for i in range(1, 5)
        ],
        current_work_item="part-2" if kind == 0 else None,
        checkouts=[Checkout(slug=repo, repo=repo, plugin_id=LOCAL_SCM, base_branch="main")],
        artifacts=[
            Artifact(
                id=f"art-{n}-spec",
                phase="spec-writing",
                kind="spec",
                title="Specification",
                data={"path": "spec.md", "summary": _SPEC},
                created_by="agent",
                created_at=now,
            ),
            Artifact(
                id=f"art-{n}-plan",
                phase="planning",
                kind="plan",
                title="Plan",
                data={"path": "plan.md", "summary": _PLAN},
                created_by="agent",
                created_at=now,
            ),
        ],
        insights=[
            Insight(
                id=f"ins-{n}",
                phase="planning",
                category="architecture",
                summary="The middleware order matters for auth",
                detail="Rate limiting must run after authentication to know the token.",
                created_at=now,
            )
        ],
        token_usage=total,
        phase_usage=usage,
        phase_visits={name: 1 for name, _, _ in PHASES[: 3 if kind == 0 else 2]},
        session_id=f"session-{n}",
        created_at=now,
        updated_at=now,
    )
    if kind == 0:
        assert pr_id is not None
        job.pr_mappings = [
            PrMapping(
                pr_id=pr_id,
                work_item="part-2",
                repo_slug=repo,
                plugin_id=LOCAL_SCM,
                opened_at=now,
                seen=PrSeen(),  # what the job saw when it opened the PR
            )
        ]
        job.awaiting_event = "pr:merged"
        job.awaiting_pr_id = pr_id
    elif kind == 1:
        job.awaiting_event = "developer-input: Should the limits apply to internal tokens too?"
    else:
        job.awaiting_event = "plan-approval"
    return job


async def write_parked_jobs(backend: StateBackend, count: int) -> None:
    """`count` parked jobs (and the local PRs a third of them wait on), in batches."""
    now = "2026-01-05T10:00:00.000Z"
    lines = [f"{now} [coding] line {i} of the earlier runs" for i in range(LOG_LINES)]

    async def one(n: int) -> None:
        pr_id = None
        if n % 3 == 0:
            repo = REPOS[n % len(REPOS)]
            record = await backend.prs.create(
                NewPullRequest(
                    repo=repo,
                    title=f"Rate limiting, part 2 (job {n})",
                    body="Implements the sliding window.",
                    source_branch=f"coro/part-2-{n}",
                    target_branch="main",
                    author="coro",
                )
            )
            pr_id = record.id
        job = parked_job(n, now, pr_id)
        await backend.create_job(job)
        await backend.append_logs(job.id, lines)

    for start in range(0, count, WRITE_BATCH):
        await asyncio.gather(*(one(n) for n in range(start, min(start + WRITE_BATCH, count))))


# --- the child's figures from /proc ------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of `pid`, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def memory_kib(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


@dataclass(frozen=True)
class ThreadSample:
    name: str
    ticks: int
    switches: int  # voluntary + involuntary context switches


def threads(pid: int) -> dict[int, ThreadSample]:
    """Every thread of `pid` (tid → its name, CPU ticks, context switches)."""
    found: dict[int, ThreadSample] = {}
    for entry in os.listdir(f"/proc/{pid}/task"):
        tid = int(entry)
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        switches = sum(
            int(line.split()[1])
            for line in status.splitlines()
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
        )
        label = "main (event loop)" if tid == pid else f"{name} {tid}"
        found[tid] = ThreadSample(label, int(fields[11]) + int(fields[12]), switches)
    return found


async def settle(pid: int) -> float:
    """Seconds until the child kept quiet for `SETTLE_WINDOW` (its start-up work done)."""
    started = time.monotonic()
    samples: list[tuple[float, int]] = [(started, cpu_ticks(pid))]
    while True:
        await asyncio.sleep(SETTLE_STEP)
        now, ticks = time.monotonic(), cpu_ticks(pid)
        samples.append((now, ticks))
        # the newest sample at least a window old
        old = [s for s in samples if now - s[0] >= SETTLE_WINDOW]
        if old and (ticks - old[-1][1]) / TICKS <= SETTLE_SHARE * (now - old[-1][0]):
            return now - started
        if now - started > SETTLE_LIMIT:
            raise RuntimeError(f"the runner did not settle within {SETTLE_LIMIT:.0f} s")


async def measure(pid: int, seconds: float, strace: bool) -> dict[str, Any]:
    """CPU share and wake-ups of the child over `seconds`, then its memory."""
    tracer = None
    if strace:
        tracer = await asyncio.create_subprocess_exec(
            *("strace", "-f", "-c", "-q", "-p", str(pid)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.5)  # attached
    before, ticks0, t0 = threads(pid), cpu_ticks(pid), time.monotonic()
    await asyncio.sleep(seconds)
    after, ticks1, t1 = threads(pid), cpu_ticks(pid), time.monotonic()
    elapsed = t1 - t0
    woke: list[dict[str, Any]] = []
    for tid, sample in after.items():
        old = before.get(tid, ThreadSample(sample.name, 0, 0))
        switches = sample.switches - old.switches
        if switches or sample.ticks != old.ticks:
            woke.append(
                {
                    "thread": sample.name,
                    "wakeups_per_s": round(switches / elapsed, 2),
                    "cpu_ms": (sample.ticks - old.ticks) * 1000 // TICKS,
                }
            )
    woke.sort(key=lambda w: -float(w["wakeups_per_s"]))
    result: dict[str, Any] = {
        "seconds": round(elapsed, 2),
        "cpu_pct_of_core": round(100 * (ticks1 - ticks0) / TICKS / elapsed, 3),
        "wakeups_per_s": round(sum(float(w["wakeups_per_s"]) for w in woke), 2),
        "threads": len(after),
        "woken_threads": woke,
    }
    memory = memory_kib(pid)
    result["rss_mb"] = round(memory["VmRSS"] / 1024, 1)
    result["peak_rss_mb"] = round(memory["VmHWM"] / 1024, 1)
    if tracer is not None:
        tracer.terminate()
        _, err = await tracer.communicate()
        result["strace"] = err.decode().strip().splitlines()
    return result


async def run_once(home: CoroHome, seconds: float, strace: bool) -> dict[str, Any]:
    port = free_port()
    started = time.monotonic()
    async with runner_child(home, port) as process:
        serving = time.monotonic() - started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            (await client.get("/health")).raise_for_status()
        settled = await settle(process.pid)
        result = await measure(process.pid, seconds, strace)
        result["serving_after_s"] = round(serving, 2)
        result["idle_after_s"] = round(serving + settled, 2)
        result["startup_cpu_s"] = round(cpu_ticks(process.pid) / TICKS, 2)
    return result


async def still_parked(home: CoroHome) -> dict[str, int]:
    config = home.load_config()
    backend = Extensions(home).state_backend(config)
    await backend.open()
    try:
        totals = await backend.status_totals()
        query = JobQuery(statuses=sorted(WAITING_FOR_EVENTS), limit=0)
        _, parked = await backend.list_jobs(query)
    finally:
        await backend.close()
    counts = Counter({status: total.jobs for status, total in totals.items()})
    return {"parked": parked, **dict(counts)}


async def bench(args: Any) -> dict[str, Any]:
    async with temp_home(args.backend) as home:
        home.save_config(make_config(home))
        backend = Extensions(home).state_backend(home.load_config())
        await backend.open()
        t0 = time.perf_counter()
        try:
            await write_parked_jobs(backend, args.jobs)
        finally:
            await backend.close()
        written = time.perf_counter() - t0
        if not args.quiet:
            print(f"  {args.jobs} parked jobs written in {written:.1f} s; starting the runner")
        first = await run_once(home, args.seconds, args.strace)
        if not args.quiet:
            print(f"  first start: {first['cpu_pct_of_core']:.3f} % of a core; restarting")
        again = await run_once(home, args.seconds, False)
        statuses = await still_parked(home)
    return {
        "backend": args.backend,
        "jobs": args.jobs,
        "written_s": round(written, 1),
        "first_start": first,
        "after_restart": again,
        "statuses": statuses,
        "pass": statuses["parked"] == args.jobs
        and max(first["cpu_pct_of_core"], again["cpu_pct_of_core"]) <= TARGET_CPU_PCT,
    }


def _woken(run: dict[str, Any]) -> str:
    parts = [f"{w['thread']}: {w['wakeups_per_s']}/s" for w in run["woken_threads"][:4]]
    return ", ".join(parts) or "nothing"


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--jobs", type=int, default=JOBS, help="parked jobs (default 10,000)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=75.0,
        help="measuring window (s; the default covers a whole 60-s polling interval)",
    )
    parser.add_argument("--strace", action="store_true", help="strace -f -c the first window")
    args = parser.parse_args()
    if args.backend == "memory":
        raise SystemExit("idle measures a `coro start` child: --backend sqlite or postgres")
    if args.strace and shutil.which("strace") is None:
        raise SystemExit("--strace needs strace")
    result = asyncio.run(bench(args))
    first, again = result["first_start"], result["after_restart"]
    rows = [
        (
            "idle CPU, first start (% of a core)",
            f"{first['cpu_pct_of_core']:.3f}",
            f"≤ {TARGET_CPU_PCT:g}",
        ),
        ("idle CPU, after restart (% of a core)", f"{again['cpu_pct_of_core']:.3f}", ""),
        ("wake-ups per second, first start", f"{first['wakeups_per_s']:.1f}", ""),
        ("RSS after start (MB)", f"{first['rss_mb']:.0f}", ""),
        ("peak RSS during start (MB)", f"{first['peak_rss_mb']:.0f}", ""),
        ("RSS after restart (MB)", f"{again['rss_mb']:.0f}", ""),
        ("peak RSS during restart (MB)", f"{again['peak_rss_mb']:.0f}", ""),
        (
            "start → idle (s), first / restart",
            f"{first['idle_after_s']} / {again['idle_after_s']}",
            "",
        ),
        ("jobs still parked", str(result["statuses"]["parked"]), str(result["jobs"])),
    ]
    print_table(f"{NAME} ({args.backend}, {args.jobs} parked jobs, {args.seconds:g} s)", rows)
    if not args.quiet:
        print(f"  what woke it (first start): {_woken(first)}")
        print(f"  what woke it (restart):     {_woken(again)}")
        for line in first.get("strace", []):
            print(f"    {line}")
    save(NAME, args, result)


if __name__ == "__main__":
    main()
