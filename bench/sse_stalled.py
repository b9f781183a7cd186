"""Hostile clients: SSE subscribers that never read, and requests that never finish.

Part 1 (issue #13, point 1). One parked job with a ~3.5 MB log (35,000 lines of ~100
bytes); 50 clients in a child process connect to `GET /jobs/:id/stream` over loopback
with real sockets, send the request and never read. The runner (in this process)
replays the log into them until their sockets' buffers are full; once writing to one
has been blocked for the server's send limit (`ClientTimeouts.send`, default 30 s) the
server resets it. Reported: the runner's RSS before, at its peak and after the last
reset (target: at most 50 MB above before), how long until every stalled connection
was reset, and the log records written meanwhile (one warning per client, no
traceback).

Part 2 (point 2). 1,000 connections from a child process: half send part of a request
head and stop, half a whole head announcing `Content-Length: 100` and 10 bytes of
body. Reported: the time until the server closed the last of them (target ≤ 30 s;
the limits are `ClientTimeouts.head`/`.body`, 10 s and 20 s), what they were answered
(408), and `GET /health` latency, asked every 100 ms meanwhile from this process.

`--stalled N --log-mb M --send-timeout S` and `--slow N` change the sizes (`--slow 0`
skips part 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    base_parser,
    make_runner,
    print_table,
    save,
    summarize,
    temp_home,
    verdict,
    write_workflow,
)
from coro.api.server import Served, serve
from coro.api.slow_clients import ClientTimeouts
from coro.domain.models import is_running
from coro.engine.service import NewJob

NAME = "sse_stalled"
TARGET_RSS_MB = 50.0
TARGET_CLOSE_S = 30.0
LINE_BYTES = 100
WAIT_LIMIT = 90.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Records(logging.Handler):
    """Every log record of the runner and uvicorn while a part runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def summary(self) -> dict[str, Any]:
        by_logger = Counter(f"{r.levelname} {r.name}" for r in self.records)
        return {
            "records": len(self.records),
            "tracebacks": sum(1 for r in self.records if r.exc_info),
            "resets": sum(1 for r in self.records if "read nothing" in r.getMessage()),
            "by_logger": dict(by_logger),
            "first": self.records[0].getMessage() if self.records else None,
        }


@contextlib.contextmanager
def recording() -> Any:
    records = Records()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(records)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(records)


# --- the child process ------------------------------------------------------------------


async def stalled_clients(host: str, port: int, job_id: str, count: int) -> None:
    """Connect, send the stream request, never read; exit when stdin closes."""
    loop = asyncio.get_running_loop()
    writers = []
    request = f"GET /jobs/{job_id}/stream HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    for _ in range(count):
        _, writer = await asyncio.open_connection(host, port)
        transport = writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()  # never read a byte
        writer.write(request)
        writers.append(writer)
    print("connected", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)


async def slow_clients(host: str, port: int, count: int) -> None:
    """Half stop inside their head, half inside their body; each waits for the server
    to close. Prints {"closed_after_s": [...], "answers": {...}}."""
    started = time.monotonic()
    head_only = f"POST /jobs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Ty".encode()
    with_body = (
        f"POST /jobs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode() + b'{"workflo\n'

    async def one(n: int) -> tuple[float, str]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(head_only if n % 2 else with_body)
        try:
            answer = await reader.read()
        except ConnectionResetError:
            answer = b"reset"
        finally:
            writer.close()
        return time.monotonic() - started, answer[:12].decode(errors="replace")

    tasks = [asyncio.create_task(one(n)) for n in range(count)]
    print("connected", flush=True)
    done = await asyncio.gather(*tasks, return_exceptions=True)
    closed = [d[0] for d in done if isinstance(d, tuple)]
    answers = Counter(d[1] if isinstance(d, tuple) else repr(d) for d in done)
    print(json.dumps({"closed_after_s": closed, "answers": dict(answers)}), flush=True)


async def spawn(*args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sse_stalled",
        *args,
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), WAIT_LIMIT)
    if line.strip() != b"connected":
        raise RuntimeError(f"client process failed: {line!r}")
    return proc


# --- the runner side --------------------------------------------------------------------


def tcp_kernel_mb() -> float:
    """Memory the kernel holds for all TCP sockets (buffers included), machine-wide."""
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * 4096 / 1e6
    return float("nan")


async def sample(samples: list[tuple[float, float, float]], started: float) -> None:
    while True:
        samples.append((time.monotonic() - started, rss_mb(), tcp_kernel_mb()))
        await asyncio.sleep(0.25)


async def stalled_part(
    served: Served, job_id: str, count: int, send_timeout: float
) -> dict[str, Any]:
    """Until every stalled connection is reset, or none has been for longer than the
    send limit (the kernel took the whole log for those left: nothing blocks)."""
    server_state = served.server.server_state
    baseline = len(server_state.connections)
    before, kernel_before = rss_mb(), tcp_kernel_mb()
    samples: list[tuple[float, float, float]] = []
    started = time.monotonic()
    sampler = asyncio.create_task(sample(samples, started))
    with recording() as records:
        proc = await spawn(
            "--stalled-of", f"{served.host}:{served.port}", "--job", job_id, "--stalled", str(count)
        )
        try:
            deadline = time.monotonic() + WAIT_LIMIT + 3 * send_timeout
            open_now, changed = len(server_state.connections), time.monotonic()
            last_reset_s = 0.0
            while len(server_state.connections) > baseline:
                if len(server_state.connections) != open_now:
                    open_now, changed = len(server_state.connections), time.monotonic()
                    last_reset_s = changed - started
                elif time.monotonic() - changed > send_timeout + 10:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{open_now - baseline} stalled connections still open")
                await asyncio.sleep(0.1)
            else:
                last_reset_s = time.monotonic() - started
            left_open = len(server_state.connections) - baseline
            await asyncio.sleep(2)  # a moment for late frees
            after, kernel_after = rss_mb(), tcp_kernel_mb()
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            await proc.wait()
            sampler.cancel()
    return {
        "stalled_clients": count,
        "rss_mb": {"before": before, "peak": max(s[1] for s in samples), "after_cutoff": after},
        "rss_growth_after_cutoff_mb": after - before,
        "tcp_kernel_mb": {
            "before": kernel_before,
            "peak": max(s[2] for s in samples),
            "after_cutoff": kernel_after,
        },
        "reset": count - left_open,
        "left_open_fully_sent": left_open,
        "last_reset_after_s": last_reset_s,
        "log": records.summary(),
        "pass": after - before <= TARGET_RSS_MB,
    }


async def ask_health(url: str, latencies: list[float], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            response = await client.get("/health")
            if response.status_code == 200:
                latencies.append((time.perf_counter() - t0) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


async def slow_part(served: Served, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    stop = asyncio.Event()
    with recording() as records:
        proc = await spawn("--slow-of", f"{served.host}:{served.port}", "--slow", str(count))
        health = asyncio.create_task(ask_health(served.url, latencies, stop))
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), WAIT_LIMIT)
        finally:
            stop.set()
            await health
            assert proc.stdin is not None
            proc.stdin.close()
            await proc.wait()
    outcome = json.loads(line)
    closed = outcome["closed_after_s"]
    last = max(closed) if closed else float("inf")
    return {
        "slow_clients": count,
        "closed": len(closed),
        "all_closed_after_s": last,
        "answers": outcome["answers"],
        "health_ms": summarize(latencies),
        "log": records.summary(),
        "pass": len(closed) == count and last <= TARGET_CLOSE_S,
    }


async def run(
    stalled: int, log_mb: float, send_timeout: float, slow: int, backend: str
) -> dict[str, Any]:
    timeouts = ClientTimeouts(send=send_timeout)
    async with temp_home(backend) as home:
        runner = make_runner(home, backend=backend)
        workflow = write_workflow(home, "hold", [{"name": "hold"}])
        script = {"hold": [{"tool": "await_event", "input": {"eventName": "developer-input: x"}}]}
        async with serve(runner, "127.0.0.1", 0, timeouts=timeouts) as served:
            job = await runner.jobs.create(
                NewJob(workflow_path=workflow, params={"script": script})
            )
            await runner.dispatcher.wait_idle()
            if is_running((await runner.jobs.get(job.id)).status):
                raise RuntimeError("the job did not park")
            lines = int(log_mb * 1_000_000 / LINE_BYTES)
            filler = "x" * (LINE_BYTES - 31)
            for start in range(0, lines, 1000):
                await runner.store.log_many(
                    job.id, [f"{filler} {n}" for n in range(start, min(lines, start + 1000))]
                )
            log_bytes = sum(len(e.line) + 1 for e in await runner.store.backend.read_logs(job.id))
            result: dict[str, Any] = {
                "backend": backend,
                "timeouts": dataclasses.asdict(timeouts),
                "log_lines": lines,
                "log_mb": log_bytes / 1e6,
                "stalled": await stalled_part(served, job.id, stalled, send_timeout),
            }
            if slow:
                result["slow"] = await slow_part(served, slow)
    result["pass"] = result["stalled"]["pass"] and result.get("slow", {"pass": True})["pass"]
    return result


def report(result: dict[str, Any]) -> None:
    stalled = result["stalled"]
    rss = stalled["rss_mb"]
    log = stalled["log"]
    rows = [
        ("RSS before (MB)", f"{rss['before']:.1f}", ""),
        ("RSS peak (MB)", f"{rss['peak']:.1f}", ""),
        ("RSS after the cut-off (MB)", f"{rss['after_cutoff']:.1f}", ""),
        (
            "RSS growth after the cut-off (MB)",
            f"{stalled['rss_growth_after_cutoff_mb']:.1f}",
            verdict(stalled["rss_growth_after_cutoff_mb"], TARGET_RSS_MB),
        ),
        (
            "kernel TCP memory before / peak / after (MB)",
            "{before:.0f} / {peak:.0f} / {after_cutoff:.0f}".format(**stalled["tcp_kernel_mb"]),
            "",
        ),
        (
            "streams reset / left open (log fully sent)",
            f"{stalled['reset']} / {stalled['left_open_fully_sent']}",
            "",
        ),
        ("last reset after (s)", f"{stalled['last_reset_after_s']:.1f}", ""),
        (
            "log records / resets / tracebacks",
            f"{log['records']} / {log['resets']} / {log['tracebacks']}",
            "resets = streams reset, 0 tracebacks",
        ),
    ]
    slow = result.get("slow")
    if slow:
        health = slow["health_ms"]
        nan = float("nan")
        rows += [
            (
                f"{slow['slow_clients']} stuck requests all closed after (s)",
                f"{slow['all_closed_after_s']:.1f}",
                verdict(slow["all_closed_after_s"], TARGET_CLOSE_S),
            ),
            (
                "their answers",
                ", ".join(f"{k.strip()}: {v}" for k, v in slow["answers"].items()),
                "",
            ),
            ("/health meanwhile p50 (ms)", f"{health.get('p50', nan):.1f}", ""),
            ("/health meanwhile max (ms)", f"{health.get('max', nan):.1f}", ""),
        ]
    print_table(
        f"sse_stalled ({result['backend']}, {stalled['stalled_clients']} non-reading "
        f"streams on a {result['log_mb']:.1f} MB log)",
        rows,
    )


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--stalled", type=int, default=50, help="non-reading SSE clients")
    parser.add_argument("--log-mb", type=float, default=3.5, help="size of the job's log")
    parser.add_argument(
        "--send-timeout", type=float, default=ClientTimeouts().send, help="the cut-off (s)"
    )
    parser.add_argument("--slow", type=int, default=1000, help="stuck requests (0: skip)")
    parser.add_argument("--stalled-of", help=argparse.SUPPRESS)  # HOST:PORT, child mode
    parser.add_argument("--slow-of", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stalled_of:
        host, port = args.stalled_of.rsplit(":", 1)
        asyncio.run(stalled_clients(host, int(port), args.job, args.stalled))
        return
    if args.slow_of:
        host, port = args.slow_of.rsplit(":", 1)
        asyncio.run(slow_clients(host, int(port), args.slow))
        return
    result = asyncio.run(run(args.stalled, args.log_mb, args.send_timeout, args.slow, args.backend))
    report(result)
    save(NAME, args, result)


if __name__ == "__main__":
    main()
