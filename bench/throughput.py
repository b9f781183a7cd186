"""End-to-end throughput of two-phase `script` jobs (SPEC §7: ≥ 100 jobs/s on 2 cores).

Each job runs a two-phase workflow whose phases each emit one `text` step. N jobs are
submitted as fast as possible with `jobs.maxConcurrent` 8 and the clock stops when the
dispatcher is idle (every job complete). Two runs, each in a fresh CORO_HOME:

* in-process: `runner.jobs.create(NewJob(...))` in a loop, then `dispatcher.wait_idle()`;
* HTTP: the real API over loopback (uvicorn + httpx), `POST /jobs` from 16 concurrent
  httpx requests, then `dispatcher.wait_idle()` (the server's HTTP cost is included,
  the SSE stream is not). The clients run in a child process by default, as real ones
  would, so the runner's event loop serves but does not also drive the requests;
  `--http-client-in-process` puts them in the runner's loop (both ends on one core).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    base_parser,
    make_runner,
    print_table,
    save,
    temp_home,
    verdict,
    write_workflow,
)
from coro.api.server import serve
from coro.domain.models import COMPLETE
from coro.engine.service import NewJob
from coro.runner import Runner
from coro.state.backend import JobQuery

NAME = "throughput"
TARGET_JOBS_PER_S = 100.0
SCRIPT = {"a": [{"text": "hello from a"}], "b": [{"text": "hello from b"}]}
HTTP_CLIENTS = 16
REPO_ROOT = Path(__file__).resolve().parent.parent


def _workflow(runner: Runner) -> str:
    return write_workflow(runner.home, "two", [{"name": "a"}, {"name": "b"}])


async def _check_complete(runner: Runner, count: int) -> None:
    _, done = await runner.jobs.list(JobQuery(statuses=[COMPLETE], limit=0))
    _, total = await runner.jobs.list(JobQuery(limit=0))
    if done != count or total != count:
        raise RuntimeError(f"{done}/{total} jobs complete, expected {count}")


async def run_in_process(jobs: int, backend: str) -> dict[str, Any]:
    async with temp_home(backend) as home:
        runner = make_runner(home, max_concurrent=8, backend=backend)
        workflow = _workflow(runner)
        async with runner.running():
            started = time.perf_counter()
            for _ in range(jobs):
                await runner.jobs.create(NewJob(workflow_path=workflow, params={"script": SCRIPT}))
            submitted = time.perf_counter()
            await runner.dispatcher.wait_idle()
            elapsed = time.perf_counter() - started
            await _check_complete(runner, jobs)
    return {
        "jobs": jobs,
        "seconds": elapsed,
        "submit_seconds": submitted - started,
        "jobs_per_s": jobs / elapsed,
    }


async def post_jobs(base_url: str, body: dict[str, Any], jobs: int) -> None:
    """POST `jobs` jobs from HTTP_CLIENTS concurrent requests (one connection each)."""
    limits = httpx.Limits(max_connections=HTTP_CLIENTS, max_keepalive_connections=HTTP_CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        remaining = [jobs]

        async def poster() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                response = await client.post("/jobs", json=body)
                if response.status_code != 201:
                    raise RuntimeError(f"POST /jobs: {response.status_code} {response.text}")

        await asyncio.gather(*(poster() for _ in range(HTTP_CLIENTS)))


async def poster_process(base_url: str, body: dict[str, Any], jobs: int) -> None:
    """The child side of an HTTP run: `ready`, wait for `go`, post, then `posted`."""
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await post_jobs(base_url, body, jobs)
    print("posted", flush=True)


async def _child_posts(base_url: str, body: dict[str, Any], jobs: int) -> Any:
    """Start a poster process; returns an awaitable that posts once awaited."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.throughput",
        "--post-to",
        base_url,
        "--body",
        json.dumps(body),
        "--jobs",
        str(jobs),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    if (await stdout.readline()).strip() != b"ready":
        raise RuntimeError("poster process did not start")

    async def post() -> None:
        stdin.write(b"go\n")
        await stdin.drain()
        said = (await stdout.readline()).strip()
        if await proc.wait() != 0 or said != b"posted":
            raise RuntimeError("poster process failed")

    return post


async def run_http(jobs: int, backend: str, client_process: bool = True) -> dict[str, Any]:
    async with temp_home(backend) as home:
        runner = make_runner(home, max_concurrent=8, backend=backend)
        workflow = _workflow(runner)
        body = {"workflowPath": workflow, "params": {"script": SCRIPT}}
        async with serve(runner, "127.0.0.1", 0) as served:
            if client_process:
                post = await _child_posts(served.url, body, jobs)
                started = time.perf_counter()
                await post()
            else:
                started = time.perf_counter()
                await post_jobs(served.url, body, jobs)
            submitted = time.perf_counter()
            await runner.dispatcher.wait_idle()
            elapsed = time.perf_counter() - started
            await _check_complete(runner, jobs)
    return {
        "jobs": jobs,
        "clients": HTTP_CLIENTS,
        "client": "child process" if client_process else "this process",
        "seconds": elapsed,
        "submit_seconds": submitted - started,
        "jobs_per_s": jobs / elapsed,
    }


async def run(
    jobs: int = 500,
    http_jobs: int = 500,
    backend: str = "sqlite",
    http_client_process: bool = True,
) -> dict[str, Any]:
    in_process = await run_in_process(jobs, backend)
    http = (
        await run_http(http_jobs, backend, client_process=http_client_process)
        if http_jobs > 0
        else None
    )
    return {
        "backend": backend,
        "max_concurrent": 8,
        "in_process": in_process,
        "http": http,
        "target": {"jobs_per_s": TARGET_JOBS_PER_S},
        "pass": in_process["jobs_per_s"] >= TARGET_JOBS_PER_S,
    }


def report(result: dict[str, Any]) -> None:
    ip = result["in_process"]
    rows = [
        (
            f"in-process jobs/s ({ip['jobs']} jobs, {ip['seconds']:.2f} s)",
            f"{ip['jobs_per_s']:.1f}",
            verdict(ip["jobs_per_s"], TARGET_JOBS_PER_S, higher_is_better=True),
        )
    ]
    http = result["http"]
    if http is not None:
        rows.append(
            (
                f"HTTP jobs/s ({http['jobs']} jobs, {http['seconds']:.2f} s, "
                f"clients in {http['client']})",
                f"{http['jobs_per_s']:.1f}",
                "",
            )
        )
    print_table(f"throughput ({result['backend']}, maxConcurrent 8, two-phase script jobs)", rows)


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--http-jobs", type=int, default=500, help="0 to skip the HTTP run")
    parser.add_argument(
        "--http-client-in-process",
        action="store_true",
        help="run the HTTP clients in the runner's event loop (default: a child process)",
    )
    parser.add_argument("--post-to", help=argparse.SUPPRESS)  # child mode: base URL
    parser.add_argument("--body", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.post_to:
        asyncio.run(poster_process(args.post_to, json.loads(args.body), args.jobs))
        return
    result = asyncio.run(
        run(
            jobs=args.jobs,
            http_jobs=args.http_jobs,
            backend=args.backend,
            http_client_process=not args.http_client_in_process,
        )
    )
    report(result)
    save(NAME, args, result)


if __name__ == "__main__":
    main()
