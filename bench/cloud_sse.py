"""Team cloud SSE: a line a runner replicates (`job:log`) → delivered to 200 viewers of the
job's team stream (issue #12: p99 ≤ 100 ms).

A `coro cloud` child process on a throw-away PostgreSQL database. A protocol-level
runner (in this process) registers, replicates one running job (`job:update`) and then
appends its lines with `job:log` frames at a steady rate (default 10 lines/s), each
line embedding `clock_ns()` (CLOCK_MONOTONIC, shared by every process) taken just
before its frame is sent, so the cloud's whole path is measured: the RPC, the durable
insert into the mirror, the notice on the broker and the fan-out to every stream.

The viewers run in a child process: raw asyncio streams speaking HTTP/1.1 (chunked
decoding included) to `GET /teams/:t/jobs/:id/stream?tail=0` with the team member's
access token. Warm-up lines (not measured) are appended until every stream has received
one. Every viewer notes the latency when the line's `data:` frame arrives.

`--instances 2`: two cloud processes on the one database and one Redis (a random channel
prefix); the runner replicates to instance 1, the viewers alternate between the two, so
half of the deliveries cross instances.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
from typing import Any

from bench._cloud import (
    WAIT_LIMIT,
    LineChild,
    ProtocolRunner,
    clock_ns,
    clouds,
    finish,
    job_json,
    make_teams,
    read_parent_line,
)
from bench._common import ms, print_table, summarize, verdict
from bench._sse import MARK, WARMUP, SseReader, until
from coro.domain.cloud_protocol import HEARTBEAT_INTERVAL_SECONDS

NAME = "cloud_sse"
TARGET_P99_MS = 100.0


def viewer(url: str, path: str, authorization: str) -> SseReader:
    """One SSE viewer of `url` (an instance of the cloud) on its own TCP connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return SseReader(host, int(port), path, {"Authorization": authorization})


async def _until(check: Any, what: str) -> None:
    await until(check, what, WAIT_LIMIT)


async def viewer_process() -> None:
    """The child side: `{"urls", "path", "authorization", "count"}` on stdin; prints
    `connected`, then `warm`, then on `end <lines>` one JSON line with every delivery
    (`[instance number, line number, latency ns]`) and how many viewers failed."""
    config = json.loads(await read_parent_line())
    urls: list[str] = config["urls"]
    # the viewers take the instances in turn: viewer n is on instance n % len(urls)
    viewers = [
        viewer(urls[n % len(urls)], config["path"], config["authorization"])
        for n in range(int(config["count"]))
    ]
    tasks = [asyncio.create_task(v.run()) for v in viewers]

    def failed() -> list[BaseException]:
        return [v.error for v in viewers if v.error is not None]

    def all_connected() -> bool:
        if errors := failed():
            raise RuntimeError(f"{len(errors)} viewers failed, first: {errors[0]!r}")
        return all(v.connected for v in viewers)

    try:
        await _until(all_connected, "the streams to connect")
        print("connected", flush=True)
        await _until(lambda: all(v.warmups > 0 for v in viewers), "warm-up lines")
        print("warm", flush=True)
        lines = int((await read_parent_line()).split()[1])
        expected = lines * len(viewers)
        with contextlib.suppress(TimeoutError):  # then report what arrived
            await until(
                lambda: (
                    sum(len(v.latencies_ns) for v in viewers) >= expected
                    or all(t.done() for t in tasks)
                ),
                "deliveries",
                30.0,
            )
        deliveries = [
            (index % len(urls), n, value)
            for index, v in enumerate(viewers)
            for n, value in v.latencies_ns
        ]
        print(json.dumps({"deliveries": deliveries, "errors": len(failed())}), flush=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _heartbeats(runner: ProtocolRunner) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL_SECONDS)
        await runner.heartbeat()


async def run(
    *, viewers: int = 200, lines: int = 200, rate: float = 10.0, instances: int = 1
) -> dict[str, Any]:
    async with clouds(instances) as started:
        team = (await make_teams(started[0].url, 1))[0]
        runner = await ProtocolRunner.connect(started[0].url, team.token)
        beating: asyncio.Task[None] | None = None
        child: LineChild | None = None
        try:
            await runner.register("bench-sse-runner")
            beating = asyncio.create_task(_heartbeats(runner))
            job_id = f"bench-sse-{secrets.token_hex(4)}"
            stored = await runner.rpc(
                {"type": "job:update", "jobId": job_id, "rev": 1, "job": job_json(job_id)}
            )
            if not stored.get("ok"):
                raise RuntimeError(f"job:update refused: {stored}")
            index = 0

            async def append(text: str) -> None:
                nonlocal index
                answer = await runner.rpc(
                    {
                        "type": "job:log",
                        "jobId": job_id,
                        "entries": [{"index": index, "line": text}],
                    }
                )
                if not answer.get("ok"):
                    raise RuntimeError(f"job:log refused: {answer}")
                index += 1

            connect_started = clock_ns()
            child = await LineChild.spawn("bench.cloud_sse", "--viewer-process")
            await child.tell(
                json.dumps(
                    {
                        "urls": [c.url for c in started],
                        "path": f"/teams/{team.id}/jobs/{job_id}/stream?tail=0",
                        "authorization": team.headers["Authorization"],
                        "count": viewers,
                    }
                )
            )
            await child.expect("connected")
            connect_seconds = (clock_ns() - connect_started) / 1e9

            # every stream must be past its replay, reading live lines, before measuring
            warmed = asyncio.ensure_future(child.expect("warm"))
            warm = 0
            while not warmed.done():
                await append(f"{WARMUP.decode()} {warm}")
                warm += 1
                await asyncio.wait([warmed], timeout=0.1)
            await warmed
            await asyncio.sleep(0.2)

            interval = 1.0 / rate
            next_at = clock_ns()
            append_ns: list[int] = []
            for n in range(lines):
                delay = (next_at - clock_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += int(interval * 1e9)
                stamp = clock_ns()
                await append(f"{MARK.decode()} {n} {stamp}")
                append_ns.append(clock_ns() - stamp)
            await child.tell(f"end {lines}")
            payload = json.loads(await child.expect("{", WAIT_LIMIT + 30))
        finally:
            if beating is not None:
                beating.cancel()
            if child is not None:
                await child.close()
            await runner.close()

    deliveries: list[tuple[int, int, int]] = [tuple(d) for d in payload["deliveries"]]
    latencies = [ms(v) for _, _, v in deliveries]
    by_line: dict[int, list[int]] = {}
    for _, number, value in deliveries:
        by_line.setdefault(number, []).append(value)
    spread = [ms(max(values) - min(values)) for values in by_line.values()]
    expected = viewers * lines
    summary = summarize(latencies)
    result: dict[str, Any] = {
        "instances": instances,
        "viewers": viewers,
        "lines": lines,
        "rate_per_s": rate,
        "connect_seconds": connect_seconds,
        "deliveries": len(latencies),
        "missing": expected - len(latencies),
        "errors": payload["errors"],
        "latency_ms": summary,
        "fanout_spread_ms": summarize(spread),
        "append_rpc_ms": summarize([ms(v) for v in append_ns]),
        "target": {"p99_ms": TARGET_P99_MS},
        "pass": summary.get("p99", float("inf")) <= TARGET_P99_MS and len(latencies) == expected,
    }
    if instances > 1:
        result["latency_ms_by_instance"] = {
            f"instance {i + 1}": summarize([ms(v) for n, _, v in deliveries if n == i])
            for i in range(instances)
        }
    return result


def report(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    nan = float("nan")
    rows = [
        ("append → delivery p50 (ms)", f"{lat.get('p50', nan):.2f}", ""),
        (
            "append → delivery p99 (ms)",
            f"{lat.get('p99', nan):.2f}",
            verdict(lat.get("p99", float("inf")), TARGET_P99_MS),
        ),
        ("append → delivery max (ms)", f"{lat.get('max', nan):.2f}", ""),
    ]
    for name, by in result.get("latency_ms_by_instance", {}).items():
        rows.append((f"  on {name}: p50 / p99 (ms)", f"{by['p50']:.2f} / {by['p99']:.2f}", ""))
    rows += [
        ("job:log RPC p50 (ms)", f"{result['append_rpc_ms'].get('p50', nan):.2f}", ""),
        (
            "one line to all viewers, p50 (ms)",
            f"{result['fanout_spread_ms'].get('p50', nan):.2f}",
            "",
        ),
        ("deliveries / missing", f"{result['deliveries']} / {result['missing']}", "0 missing"),
        (f"{result['viewers']} streams connected in (s)", f"{result['connect_seconds']:.2f}", ""),
    ]
    print_table(
        f"{NAME} ({result['viewers']} viewers, {result['instances']} instance(s), "
        f"{result['lines']} lines at {result['rate_per_s']:g}/s)",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="lines per second")
    parser.add_argument("--instances", type=int, choices=(1, 2), default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 viewers, 20 lines")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="only the result table")
    parser.add_argument("--viewer-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.viewer_process:
        asyncio.run(viewer_process())
        return
    if args.quick:
        args.viewers, args.lines = 20, 20
    if min(args.viewers, args.lines) < 1 or args.rate <= 0:
        parser.error("--viewers and --lines: at least 1; --rate: above 0")
    try:
        result = asyncio.run(
            run(viewers=args.viewers, lines=args.lines, rate=args.rate, instances=args.instances)
        )
    except KeyboardInterrupt:  # everything started is stopped by then
        sys.exit(130)
    name = NAME + ("-2instances" if args.instances == 2 else "") + ("-quick" if args.quick else "")
    finish(result, name, as_json=args.json, quiet=args.quiet, report=report)


if __name__ == "__main__":
    main()
