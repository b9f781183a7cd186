"""Team cloud dispatch: `POST /teams/:t/jobs` → the runner receiving `event:dispatch`, with
1,000 runners connected to one cloud (issue #12: p99 ≤ 200 ms), and the cloud's memory
per connected runner.

A `coro cloud` child process on a throw-away PostgreSQL database; 100 teams, each with a
runner token and 10 simulated runners (protocol-level clients: `websockets`
connections that register with a large capacity, heartbeat once a minute and answer
every `event:dispatch` with ok at once), run in child processes of their own so the
cloud's event loop is what is measured. Then jobs are created through the REST API
from this process, round robin over the teams, at a steady rate (default 10 jobs/s,
open loop, at most 8 requests in flight; `--rate 0` sends as fast as `--concurrency`
allows, which measures the cloud saturated: latency is then mostly queueing); per
job, the latency is from just before its POST is sent to the moment a runner's socket
delivers the dispatch frame (both read on CLOCK_MONOTONIC, shared by every process).
The POST's own round trip (which includes the runner's answer) is reported apart.

Memory per runner: the cloud process's VmRSS with every runner connected minus VmRSS
before (after one runner connected and left, so one-time costs are not counted), / N.

`--instances 2`: two cloud processes on the one database and one Redis (a random channel
prefix); the runners dial instance 2, the jobs are created through instance 1, so every
dispatch crosses instances (wake-up and answer notices over Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from typing import Any

import httpx

from bench._cloud import (
    WAIT_LIMIT,
    CloudProcess,
    LineChild,
    ProtocolRunner,
    Team,
    clock_ns,
    clouds,
    finish,
    make_teams,
    read_parent_line,
)
from bench._common import ms, print_table, summarize, verdict

NAME = "cloud_dispatch"
TARGET_P99_MS = 200.0
#: room for far more jobs than a run creates: no runner is ever full
CAPACITY = 10_000
#: seconds the cloud is left to settle before its memory is read
SETTLE_SECONDS = 2.0


# --- the simulated runners (a child process) ------------------------------------------


async def runner_process() -> None:
    """The child side: `{"url", "runners": [[token, runnerId], ...], "heartbeat"}` on
    stdin; prints `ready <n>`, then on `end` one JSON line with every dispatch received
    (`[jobId, runnerId, clock ns]`)."""
    config = json.loads(await read_parent_line())
    url, heartbeat = str(config["url"]), float(config["heartbeat"])
    received: list[tuple[str, str, int]] = []
    other_commands = 0

    def on_command_for(runner_id: str) -> Any:
        async def on_command(runner: ProtocolRunner, frame: dict[str, Any], at: int) -> None:
            nonlocal other_commands
            if frame.get("type") != "event:dispatch":
                other_commands += 1
                return
            job_id = str(frame.get("jobId"))
            received.append((job_id, runner_id, at))
            await runner.answer(
                str(frame["messageId"]), {"jobId": job_id, "type": "standard", "status": "queued"}
            )

        return on_command

    gate = asyncio.Semaphore(32)  # connects at once, at most

    async def connect(token: str, runner_id: str) -> ProtocolRunner:
        async with gate:
            runner = await ProtocolRunner.connect(url, token, on_command_for(runner_id))
            await runner.register(runner_id, capacity=CAPACITY)
            return runner

    async def beat(runner: ProtocolRunner) -> None:
        await asyncio.sleep(random.uniform(0, heartbeat))  # spread over the interval
        while True:
            await runner.heartbeat(CAPACITY)
            await asyncio.sleep(heartbeat)

    runners: list[ProtocolRunner] = []
    beats: list[asyncio.Task[None]] = []
    try:
        try:
            runners = list(
                await asyncio.gather(*(connect(str(t), str(r)) for t, r in config["runners"]))
            )
        except Exception as exc:
            print(f"error connecting: {exc!r}", flush=True)
            return
        beats = [asyncio.create_task(beat(r)) for r in runners]
        print(f"ready {len(runners)}", flush=True)
        await read_parent_line()  # "end"
        dropped = sum(1 for r in runners if r.socket.close_code is not None)
        print(
            json.dumps({"received": received, "dropped": dropped, "other": other_commands}),
            flush=True,
        )
    finally:
        for task in beats:
            task.cancel()
        await asyncio.gather(*(r.close() for r in runners), return_exceptions=True)


# --- the benchmark ----------------------------------------------------------------------


async def _connect_warmup_runner(cloud: CloudProcess, team: Team) -> None:
    """One runner in and out: the cloud's first-socket costs (imports, caches) are then
    paid before the baseline memory is read."""
    runner = await ProtocolRunner.connect(cloud.url, team.token)
    try:
        await runner.register("bench-warmup", capacity=0)
    finally:
        await runner.close()


async def run(
    *,
    runners: int = 1000,
    teams: int = 100,
    jobs: int = 1000,
    warmup: int = 20,
    concurrency: int = 8,
    rate: float = 10.0,
    instances: int = 1,
    client_processes: int = 2,
    heartbeat: float = 60.0,
) -> dict[str, Any]:
    teams = max(1, min(teams, runners))
    async with clouds(instances) as started:
        front, back = started[0], started[-1]  # jobs through the first, runners on the last
        made = await make_teams(front.url, teams)
        await _connect_warmup_runner(back, made[0])
        await asyncio.sleep(SETTLE_SECONDS)
        rss_before = back.rss_kib()

        plan = [[made[i % teams].token, f"bench-{i}"] for i in range(runners)]
        shares = [plan[p::client_processes] for p in range(client_processes)]
        children: list[LineChild] = []
        try:
            connect_started = clock_ns()
            for share in shares:
                child = await LineChild.spawn("bench.cloud_dispatch", "--runner-process")
                children.append(child)
                await child.tell(
                    json.dumps({"url": back.url, "runners": share, "heartbeat": heartbeat})
                )
            for child in children:
                await child.expect("ready", WAIT_LIMIT * 5)
            connect_seconds = (clock_ns() - connect_started) / 1e9
            await asyncio.sleep(SETTLE_SECONDS)
            rss_connected = back.rss_kib()

            jobs_started = 0
            sent_at: dict[str, int] = {}
            post_ns: dict[str, int] = {}
            warned: list[str] = []
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(warmup + jobs):
                queue.put_nowait(n)

            late: list[int] = []  # how far behind schedule sends were (rate > 0)

            async def worker(client: httpx.AsyncClient) -> None:
                while not queue.empty():
                    n = queue.get_nowait()
                    team = made[n % teams]
                    if rate > 0:  # open loop: job n is due n/rate seconds in
                        due = jobs_started + int(n * 1e9 / rate)
                        if (wait := due - clock_ns()) > 0:
                            await asyncio.sleep(wait / 1e9)
                        late.append(clock_ns() - due)
                    started_ns = clock_ns()
                    response = await client.post(
                        f"/teams/{team.id}/jobs",
                        json={
                            "workflowPath": "workflows/bench/workflow.md",
                            "description": f"bench job {n}",
                        },
                        headers=team.headers,
                    )
                    done_ns = clock_ns()
                    if response.status_code != 201:
                        raise RuntimeError(
                            f"POST /teams/:t/jobs: {response.status_code} {response.text[:300]}"
                        )
                    body = response.json()
                    job_id = str(body["jobId"])
                    if n >= warmup:
                        sent_at[job_id] = started_ns
                        post_ns[job_id] = done_ns - started_ns
                    if body.get("warning"):
                        warned.append(job_id)

            async with httpx.AsyncClient(
                base_url=front.url,
                timeout=WAIT_LIMIT,
                limits=httpx.Limits(max_connections=concurrency),
            ) as client:
                jobs_started = clock_ns()
                await asyncio.gather(*(worker(client) for _ in range(concurrency)))
            jobs_seconds = (clock_ns() - jobs_started) / 1e9

            received: dict[str, tuple[str, int]] = {}
            dropped = other = 0
            for child in children:
                await child.tell("end")
                payload = json.loads(await child.expect("{"))
                for job_id, runner_id, at in payload["received"]:
                    received.setdefault(job_id, (runner_id, at))
                dropped += int(payload["dropped"])
                other += int(payload["other"])
            rss_after = back.rss_kib()
        finally:
            await asyncio.gather(*(c.close() for c in children), return_exceptions=True)

    latencies = [ms(received[j][1] - t) for j, t in sent_at.items() if j in received]
    # when the slowest ones were sent: together (a stall of the cloud) or spread out
    slowest = sorted(
        (
            (ms(received[j][1] - t), (t - jobs_started) / 1e9)
            for j, t in sent_at.items()
            if j in received
        ),
        reverse=True,
    )[:10]
    missing = sorted(set(sent_at) - set(received))
    per_runner_kib = (rss_connected - rss_before) / runners if runners else 0.0
    summary = summarize(latencies)
    return {
        "instances": instances,
        "runners": runners,
        "teams": teams,
        "runner_processes": client_processes,
        "jobs": jobs,
        "warmup_jobs": warmup,
        "concurrency": concurrency,
        "rate_per_s": rate,
        "sends_late_over_50ms": sum(1 for v in late if v > 50_000_000),
        "connect_seconds": connect_seconds,
        "jobs_per_s": (warmup + jobs) / jobs_seconds if jobs_seconds else 0.0,
        "dispatch_ms": summary,
        "post_round_trip_ms": summarize([ms(v) for v in post_ns.values()]),
        "slowest": [{"ms": v, "sent_at_s": at} for v, at in slowest],
        "missing": len(missing),
        "queued_warnings": len(warned),
        "runners_used": len({received[j][0] for j in sent_at if j in received}),
        "runners_dropped": dropped,
        "other_commands": other,
        "rss_kib": {"before": rss_before, "connected": rss_connected, "after_jobs": rss_after},
        "rss_per_runner_kib": per_runner_kib,
        "target": {"p99_ms": TARGET_P99_MS},
        "pass": summary.get("p99", float("inf")) <= TARGET_P99_MS and not missing,
    }


def report(result: dict[str, Any]) -> None:
    lat, post = result["dispatch_ms"], result["post_round_trip_ms"]
    nan = float("nan")
    rss = result["rss_kib"]
    print_table(
        f"{NAME} ({result['runners']} runners in {result['teams']} teams, "
        f"{result['instances']} instance(s), {result['jobs']} jobs, "
        + (f"at {result['rate_per_s']:g}/s, " if result["rate_per_s"] > 0 else "")
        + f"≤ {result['concurrency']} in flight)",
        [
            ("POST → event:dispatch p50 (ms)", f"{lat.get('p50', nan):.2f}", ""),
            (
                "POST → event:dispatch p99 (ms)",
                f"{lat.get('p99', nan):.2f}",
                verdict(lat.get("p99", float("inf")), TARGET_P99_MS),
            ),
            ("POST → event:dispatch max (ms)", f"{lat.get('max', nan):.2f}", ""),
            ("POST round trip p50 (ms)", f"{post.get('p50', nan):.2f}", ""),
            ("jobs created per second", f"{result['jobs_per_s']:.1f}", ""),
            ("sends over 50 ms behind schedule", str(result["sends_late_over_50ms"]), ""),
            ("dispatches missing", str(result["missing"]), "0"),
            ("runners that got a job", str(result["runners_used"]), ""),
            (
                "cloud RSS per connected runner (KiB)",
                f"{result['rss_per_runner_kib']:.1f}",
                f"({rss['before'] // 1024} → {rss['connected'] // 1024} MiB)",
            ),
            (
                f"{result['runners']} runners connected in (s)",
                f"{result['connect_seconds']:.2f}",
                "",
            ),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runners", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="jobs first, not measured")
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="jobs created per second (open loop); 0: as fast as --concurrency allows",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="POSTs in flight at most")
    parser.add_argument("--instances", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--runner-processes", type=int, default=2, help="child processes the runners run in"
    )
    parser.add_argument("--heartbeat", type=float, default=60.0, help="seconds between heartbeats")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 runners, 50 jobs")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="only the result table")
    parser.add_argument("--runner-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runner_process:
        asyncio.run(runner_process())
        return
    if args.quick:
        args.runners, args.teams, args.jobs, args.warmup = 50, 5, 50, 5
    if min(args.runners, args.teams, args.jobs, args.concurrency, args.runner_processes) < 1:
        parser.error("--runners, --teams, --jobs, --concurrency, --runner-processes: at least 1")
    if args.rate < 0:
        parser.error("--rate: 0 or more")
    try:
        result = asyncio.run(
            run(
                runners=args.runners,
                teams=args.teams,
                jobs=args.jobs,
                warmup=args.warmup,
                concurrency=args.concurrency,
                rate=args.rate,
                instances=args.instances,
                client_processes=min(args.runner_processes, args.runners),
                heartbeat=args.heartbeat,
            )
        )
    except KeyboardInterrupt:  # everything started is stopped by then
        sys.exit(130)
    name = NAME + ("-2instances" if args.instances == 2 else "") + ("-quick" if args.quick else "")
    finish(result, name, as_json=args.json, quiet=args.quiet, report=report)


if __name__ == "__main__":
    main()
