"""SSE fan-out: append→delivery latency at 500 subscribers of one job (SPEC §7: p99 ≤ 100 ms).

One job is parked (its only phase waits for an event) so its stream stays open. 500
clients connect to `GET /jobs/:id/stream?tail=0` over real loopback HTTP (raw asyncio
streams speaking HTTP/1.1 with chunked decoding: cheaper than an HTTP library, so the
clients disturb the measure less). By default the clients run in a child process, as
real subscribers would (the runner keeps its event loop and core to itself);
`--in-process-clients` runs them in the runner's own event loop instead, which makes
the runner's loop carry both ends of every delivery.

Once every stream reads live lines (warm-up lines, not measured, reached them all),
lines are appended in-process with `runner.store.log(job_id, text)` at a modest rate
(default 10 lines/s, i.e. 5,000 deliveries/s), each embedding `time.perf_counter_ns()`
taken just before the append (so the durable commit is included; CLOCK_MONOTONIC is
shared by both processes). Every client notes the latency when the line's `data:`
frame arrives; the table gives p50/p99 over all deliveries, and how long one line took
to reach every stream (first to last delivery). That spread is the event loop's cost
of one fan-out: once `rate × spread` nears 1 s/s the loop is saturated and latencies
measure queueing instead (try `--rate 20`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from bench._common import (
    base_parser,
    make_runner,
    ms,
    print_table,
    summarize,
    temp_home,
    verdict,
    write_result,
    write_workflow,
)
from bench._sse import MARK, WARMUP, SseReader, until
from coro.api.server import serve
from coro.domain.models import is_running
from coro.engine.service import NewJob

NAME = "sse_fanout"
TARGET_P99_MS = 100.0
WAIT_LIMIT = 60.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def subscriber(host: str, port: int, job_id: str) -> SseReader:
    """One SSE subscriber of the job on its own TCP connection."""
    return SseReader(host, port, f"/jobs/{job_id}/stream?tail=0", {})


class Clients(Protocol):
    """The subscribers, wherever they run."""

    async def connected(self) -> None: ...
    async def warm(self) -> None: ...
    async def results(self, lines: int) -> tuple[list[tuple[int, int]], int]:
        """`(line number, latency ns)` of every delivery, and how many clients failed."""
        ...

    async def close(self) -> None:
        """Disconnect whatever is left (also after a failure)."""
        ...


async def _until(check: Any, what: str) -> None:
    await until(check, what, WAIT_LIMIT)


class LocalClients:
    """Clients in this event loop (also what the child process runs)."""

    def __init__(self, host: str, port: int, job_id: str, count: int) -> None:
        self.clients = [subscriber(host, port, job_id) for _ in range(count)]
        self.tasks = [asyncio.create_task(c.run()) for c in self.clients]

    def _check_errors(self) -> None:
        failed = [c.error for c in self.clients if c.error is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} clients failed, first: {failed[0]!r}")

    async def connected(self) -> None:
        def done() -> bool:
            self._check_errors()
            return all(c.connected for c in self.clients)

        await _until(done, "the streams to connect")

    async def warm(self) -> None:
        await _until(lambda: all(c.warmups > 0 for c in self.clients), "warm-up lines")

    async def results(self, lines: int) -> tuple[list[tuple[int, int]], int]:
        expected = lines * len(self.clients)
        with contextlib.suppress(TimeoutError):  # then report what arrived
            await until(
                lambda: (
                    sum(len(c.latencies_ns) for c in self.clients) >= expected
                    or all(t.done() for t in self.tasks)
                ),
                "deliveries",
                30.0,
            )
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        latencies = [v for c in self.clients for v in c.latencies_ns]
        return latencies, sum(1 for c in self.clients if c.error is not None)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class ChildClients:
    """Clients in a child process (`python -m bench.sse_fanout --client-of ...`)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, host: str, port: int, job_id: str, count: int) -> ChildClients:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sse_fanout",
            "--client-of",
            f"{host}:{port}",
            "--job",
            job_id,
            "--subscribers",
            str(count),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,
        )
        return cls(proc)

    async def _expect(self, word: str) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT_LIMIT):
            line = (await self.proc.stdout.readline()).decode().strip()
        if not line.startswith(word):
            raise RuntimeError(f"client process said {line[:200]!r}, expected {word!r}")
        return line

    async def connected(self) -> None:
        await self._expect("connected")

    async def warm(self) -> None:
        await self._expect("warm")

    async def results(self, lines: int) -> tuple[list[tuple[int, int]], int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"end {lines}\n".encode())
        await self.proc.stdin.drain()
        payload = json.loads(await self._expect("{"))
        await self.proc.wait()
        return [(n, v) for n, v in payload["latencies"]], payload["errors"]

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def client_process(host: str, port: int, job_id: str, count: int) -> None:
    """The child side of `ChildClients`: talks to the parent over stdin/stdout."""
    loop = asyncio.get_running_loop()
    clients = LocalClients(host, port, job_id, count)
    await clients.connected()
    print("connected", flush=True)
    await clients.warm()
    print("warm", flush=True)
    command = await loop.run_in_executor(None, sys.stdin.readline)
    lines = int(command.split()[1])
    latencies, errors = await clients.results(lines)
    print(json.dumps({"latencies": latencies, "errors": errors}), flush=True)


async def run(
    subscribers: int = 500,
    lines: int = 200,
    rate: float = 10.0,
    backend: str = "sqlite",
    in_process_clients: bool = False,
) -> dict[str, Any]:
    async with temp_home(backend) as home:
        runner = make_runner(home, max_concurrent=8, backend=backend)
        workflow = write_workflow(home, "hold", [{"name": "hold"}])
        script = {
            "hold": [{"tool": "await_event", "input": {"eventName": "developer-input: bench"}}]
        }
        async with serve(runner, "127.0.0.1", 0) as served:
            job = await runner.jobs.create(
                NewJob(workflow_path=workflow, params={"script": script})
            )
            await runner.dispatcher.wait_idle()
            parked = await runner.jobs.get(job.id)
            if is_running(parked.status):
                raise RuntimeError(f"job did not park: {parked.status}")

            connect_started = time.perf_counter()
            clients: Clients
            if in_process_clients:
                clients = LocalClients(served.host, served.port, job.id, subscribers)
            else:
                clients = await ChildClients.spawn(served.host, served.port, job.id, subscribers)
            try:
                await clients.connected()
                await _until(
                    lambda: runner.store.bus.subscriber_count(job.id) >= subscribers,
                    "every stream to subscribe",
                )
                connect_seconds = time.perf_counter() - connect_started

                # Every stream must be past its replay and reading live lines: warm-up lines
                # until one has reached them all (a stream still counting its `tail=0`
                # backlog would skip a line appended just before).
                warmed = asyncio.ensure_future(clients.warm())
                warm = 0
                while not warmed.done():
                    await runner.store.log(job.id, f"{WARMUP.decode()} {warm}")
                    warm += 1
                    await asyncio.wait([warmed], timeout=0.1)
                await warmed
                await asyncio.sleep(0.2)

                interval = 1.0 / rate
                next_at = time.perf_counter()
                append_ns: list[int] = []
                for n in range(lines):
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
                    stamp = time.perf_counter_ns()
                    await runner.store.log(job.id, f"{MARK.decode()} {n} {stamp}")
                    append_ns.append(time.perf_counter_ns() - stamp)
                latencies_ns, errors = await clients.results(lines)
            finally:
                await clients.close()

    latencies = [ms(v) for _, v in latencies_ns]
    by_line: dict[int, list[int]] = {}
    for number, value in latencies_ns:
        by_line.setdefault(number, []).append(value)
    # first to last delivery of one line: what fanning it out to every stream took
    spread = [ms(max(values) - min(values)) for values in by_line.values()]
    expected = subscribers * lines
    summary = summarize(latencies)
    return {
        "backend": backend,
        "clients": "in-process" if in_process_clients else "child process",
        "subscribers": subscribers,
        "lines": lines,
        "rate_per_s": rate,
        "connect_seconds": connect_seconds,
        "deliveries": len(latencies),
        "missing": expected - len(latencies),
        "errors": errors,
        "latency_ms": summary,
        "fanout_spread_ms": summarize(spread),
        "append_ms": summarize([ms(v) for v in append_ns]),
        "target": {"p99_ms": TARGET_P99_MS},
        "pass": summary.get("p99", float("inf")) <= TARGET_P99_MS and len(latencies) == expected,
    }


def report(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    nan = float("nan")
    rows = [
        ("delivery p50 (ms)", f"{lat.get('p50', nan):.2f}", ""),
        (
            "delivery p99 (ms)",
            f"{lat.get('p99', nan):.2f}",
            verdict(lat.get("p99", float("inf")), TARGET_P99_MS),
        ),
        ("delivery max (ms)", f"{lat.get('max', nan):.2f}", ""),
        ("append p50 (ms)", f"{result['append_ms'].get('p50', nan):.2f}", ""),
        (
            "one line to all streams, p50 (ms)",
            f"{result['fanout_spread_ms'].get('p50', nan):.2f}",
            "",
        ),
        ("deliveries / missing", f"{result['deliveries']} / {result['missing']}", "0 missing"),
        (
            f"{result['subscribers']} streams connected in (s)",
            f"{result['connect_seconds']:.2f}",
            "",
        ),
    ]
    print_table(
        f"sse_fanout ({result['backend']}, {result['subscribers']} subscribers in "
        f"{result['clients']}, {result['lines']} lines at {result['rate_per_s']:g}/s)",
        rows,
    )


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="lines per second")
    parser.add_argument(
        "--in-process-clients",
        action="store_true",
        help="run the subscribers in the runner's event loop (default: a child process)",
    )
    parser.add_argument("--client-of", help=argparse.SUPPRESS)  # HOST:PORT, child mode
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_of:
        host, port = args.client_of.rsplit(":", 1)
        asyncio.run(client_process(host, int(port), args.job, args.subscribers))
        return
    result = asyncio.run(
        run(
            subscribers=args.subscribers,
            lines=args.lines,
            rate=args.rate,
            backend=args.backend,
            in_process_clients=args.in_process_clients,
        )
    )
    report(result)
    name = NAME if args.backend == "sqlite" else f"{NAME}-{args.backend}"
    if args.in_process_clients:
        name += "-in-process-clients"
    path = write_result(name, result)
    if not args.quiet:
        print(f"  → {path}")


if __name__ == "__main__":
    main()
