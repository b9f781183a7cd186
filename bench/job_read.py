"""Reads of a job: `GET /jobs/:id` on the runner against a bare Starlette JSON endpoint.

A `coro start` child (the default config: loopback, no API token; uvicorn with the
slow-client protocol and the security middleware, as a user runs it) runs one
five-phase `script` job to completion — work items, an artefact per phase, usage per
phase, tool calls and their results in the transcript, ~100 log lines. A second child
serves a bare Starlette app whose `GET /jobs/{id}` answers `JSONResponse(<that job's
JSON>)`, encoded per request as such an endpoint does, on uvicorn with the same
settings minus Coro's protocol subclass (`coro.api.listen.http_server`). One load
generator child (raw HTTP/1.1 keep-alive connections on an asyncio protocol, far
cheaper per request than an HTTP library) drives each server in turn at 32 concurrent
connections for `--seconds`, alternating for `--rounds`; the figure of each is the
median of its rounds, and the ratio runner / bare.

The machine has 2 cores: by default the server being measured (every thread of it)
is pinned to CPU 0 and the load generator to CPU 1 (`--no-pin` leaves it to the
kernel); the table says how busy each was, so a saturated client shows, and each
server's CPU time per request (from the scheduler's count), whose ratio hardly
depends on other work competing for CPU 0, unlike the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    base_parser,
    make_config,
    print_table,
    save,
    temp_home,
    verdict,
    write_workflow,
)
from bench.crash_safety import runner_child
from coro.api.listen import listening_socket, start_serving
from coro.api.server import free_port
from coro.config import CoroHome

NAME = "job_read"
#: the runner's reads should reach this share of the bare endpoint's rate
TARGET_RATIO = 1 / 3
CONNECTIONS = 32
PHASES = ("planning", "design", "implementation", "review", "evaluation")
WORK_ITEMS = ("parse-config", "rate-limiter", "docs")
REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, CLIENT_CPU = 0, 1
WAIT_LIMIT = 120.0


# --- the job ----------------------------------------------------------------------------


def _tool(name: str, /, **tool_input: Any) -> dict[str, Any]:
    return {"tool": name, "input": tool_input}


def _prose(topic: str, paragraphs: int) -> str:
    sentence = (
        f"The {topic} keeps the request path free of blocking calls, names every limit "
        "in the configuration and says in the log why it refused a request. "
    )
    return "\n\n".join(sentence * 4 for _ in range(paragraphs))


def job_script() -> dict[str, Any]:
    """What a model would do in five phases, replayed by the `script` executor: texts,
    file writes and reads, work items, an artefact per phase and usage per phase."""
    code = "".join(
        f"def limit_{n}(requests: int, window: float) -> bool:\n"
        f"    # bucket {n}: refill at the configured rate, refuse when empty\n"
        f"    return requests <= {n + 10} * window\n\n\n"
        for n in range(12)
    )
    script: dict[str, Any] = {}
    for n, phase in enumerate(PHASES):
        path = f"{phase}.md"
        steps: list[dict[str, Any]] = [{"text": f"{phase.title()}: {_prose(phase, 1)}"}]
        if phase == "planning":
            steps.append(_tool("set_work_items", workItems=list(WORK_ITEMS)))
        if phase == "implementation":
            for item in WORK_ITEMS:
                steps.append(_tool("update_work_item", name=item, status="in-progress"))
            steps.append(_tool("file_write", path="limiter.py", content=code))
            steps.append(_tool("file_read", path="limiter.py"))
            steps.append(_tool("file_glob", pattern="*.py"))
            for item in WORK_ITEMS:
                steps.append(_tool("update_work_item", name=item, status="complete"))
        steps += [
            _tool("file_write", path=path, content=f"# {phase.title()}\n\n{_prose(phase, 3)}\n"),
            _tool("file_read", path=path),
            _tool("post_artifact", kind=f"{phase}-md", title=f"{phase} notes", data={"path": path}),
            {"text": f"{phase.title()} done; the notes are in {path}."},
            {
                "usage": {
                    "inputTokens": 1800 + 400 * n,
                    "outputTokens": 350 + 60 * n,
                    "cacheReadInputTokens": 900 * n,
                    "costUsd": 0.011 + 0.004 * n,
                }
            },
        ]
        script[phase] = steps
    return script


async def run_job(client: httpx.AsyncClient, workflow: str) -> str:
    """POST the five-phase job and follow its stream to `done`; its id."""
    body = {
        "workflowPath": workflow,
        "description": "Add rate limiting to the public API",
        "repo": "api",
        "params": {"script": job_script()},
    }
    created = await client.post("/jobs", json=body)
    created.raise_for_status()
    job_id = str(created.json()["jobId"])
    async with asyncio.timeout(WAIT_LIMIT):
        async with client.stream("GET", f"/jobs/{job_id}/stream") as stream:
            async for line in stream.aiter_lines():
                if line == "event: done":
                    break
    return job_id


# --- the bare endpoint (child process) ----------------------------------------------------


async def serve_bare(job: dict[str, Any], port: int) -> None:
    """A bare Starlette app answering `job` at `/jobs/{job_id}` until stdin
    closes; prints `ready` once it accepts connections."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def get_job(request: Request) -> JSONResponse:
        return JSONResponse(job)

    app = Starlette(routes=[Route("/jobs/{job_id}", get_job)])
    # what coro.api.listen.http_server sets, on uvicorn's own httptools protocol
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = await start_serving(server, listening_socket("127.0.0.1", port))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.should_exit = True
    await task


# --- the load generator (child process) ----------------------------------------------------


class _Load:
    """What every connection shares: the request, the clock, the counts."""

    def __init__(self, request: bytes, body_size: int) -> None:
        self.request = request
        self.body_size = body_size
        self.measuring = False
        self.stopped = False
        self.done = 0  # responses completed while measuring
        self.wrong = 0  # responses not 200 or not of the expected size, while measuring
        self.lost: list[str] = []


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending the next request once a response is whole."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.buffer = bytearray()
        self.need = -1  # the whole response's size, once its head is in
        self.status = b""
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = head[9:12]
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self.load.lost.append(f"no content-length: {head[:200]!r}")
                self._close()
                return
            stop = head.find(b"\r\n", at + 2)
            self.need = end + 4 + int(head[at + 17 : stop if stop > 0 else None])
        if len(self.buffer) < self.need:
            return
        load = self.load
        if load.measuring:
            load.done += 1
            if (
                self.status != b"200"
                or self.need - self.buffer.find(b"\r\n\r\n") - 4 != load.body_size
            ):
                load.wrong += 1
        self.buffer.clear()
        self.need = -1
        if load.stopped:
            self._close()
        else:
            assert self.transport is not None
            self.transport.write(load.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.load.stopped:
            self.load.lost.append(repr(exc) if exc else "closed by the server")
        if not self.closed.done():
            self.closed.set_result(None)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _cpu_seconds(pid: int | str = "self") -> float:
    """CPU time of a process's live threads, from the scheduler's own count (finer
    than /proc/<pid>/stat's ticks, which a busy VM misses)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def drive(
    host: str, port: int, path: str, body_size: int, connections: int, warmup: float, seconds: float
) -> dict[str, Any]:
    """Keep `connections` requests in flight for `warmup + seconds`; counts the last
    `seconds`, between a `measuring` and a `stopped` line on stdout (the parent counts
    the server's CPU time between the two)."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode()
    load = _Load(request, body_size)
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(lambda: _Connection(load), host, port)
        conns.append(protocol)
    await asyncio.sleep(warmup)
    print("measuring", flush=True)
    load.measuring = True
    cpu, started = _cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    load.measuring = False
    elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    print("stopped", flush=True)
    load.stopped = True
    async with asyncio.timeout(30):
        await asyncio.gather(*(c.closed for c in conns))
    return {
        "requests": load.done,
        "seconds": elapsed,
        "req_per_s": load.done / elapsed,
        "wrong": load.wrong,
        "lost": load.lost[:5],
        "client_cpu": cpu / elapsed,
    }


# --- the parent ------------------------------------------------------------------------------


def pin(pid: int, cpu: int) -> None:
    """Every thread of `pid` on `cpu` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), {cpu})


async def measure(
    server_pid: int, port: int, path: str, body_size: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One load generator child against the server on `port`; its counts plus the
    server's CPU use meanwhile."""
    command = [
        sys.executable,
        "-m",
        "bench.job_read",
        "--load",
        str(port),
        "--path",
        path,
        "--body-size",
        str(body_size),
        "--connections",
        str(args.connections),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
    ]
    if not args.no_pin:
        command += ["--cpu", str(CLIENT_CPU)]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    said = [await proc.stdout.readline()]
    cpu, started = _cpu_seconds(server_pid), time.perf_counter()
    said.append(await proc.stdout.readline())
    server_cpu = (_cpu_seconds(server_pid) - cpu) / (time.perf_counter() - started)
    if said != [b"measuring\n", b"stopped\n"]:
        raise RuntimeError(f"load generator said {said}")
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    if result["wrong"] or result["lost"]:
        raise RuntimeError(f"bad answers: {result}")
    cpu_us = server_cpu * result["seconds"] / result["requests"] * 1e6
    return {**result, "server_cpu": server_cpu, "server_cpu_us_per_request": cpu_us}


@contextlib.asynccontextmanager
async def bare_child(document: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.job_read",
        "--serve-bare",
        str(document),
        "--port",
        str(port),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT_LIMIT)
        if line.strip() != b"ready":
            raise RuntimeError("the bare server did not start")
        yield proc
    finally:
        proc.stdin.close()
        await proc.wait()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with temp_home(args.backend) as home:
        home.save_config(make_config(CoroHome(home.root), max_concurrent=4))
        workflow = write_workflow(home, "five", [{"name": p} for p in PHASES])
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        async with runner_child(home, port) as runner:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                job_id = await run_job(client, workflow)
                answer = await client.get(f"/jobs/{job_id}")
                answer.raise_for_status()
            job = answer.json()
            if job["status"] != "complete":
                raise RuntimeError(f"the job ended {job['status']}: {job.get('escalationMessage')}")
            path = f"/jobs/{job_id}"
            with tempfile.TemporaryDirectory(prefix="coro-bench-doc-") as tmp:
                document = Path(tmp) / "job.json"
                document.write_bytes(answer.content)
                bare_port = free_port()
                async with bare_child(document, bare_port) as bare:
                    if not args.no_pin:
                        pin(runner.pid, SERVER_CPU)
                        pin(bare.pid, SERVER_CPU)
                    size = len(answer.content)
                    bare_size = len(
                        json.dumps(job, ensure_ascii=False, separators=(",", ":")).encode()
                    )
                    rounds: dict[str, list[dict[str, Any]]] = {"runner": [], "bare": []}
                    for _ in range(args.rounds):
                        rounds["runner"].append(await measure(runner.pid, port, path, size, args))
                        rounds["bare"].append(
                            await measure(bare.pid, bare_port, path, bare_size, args)
                        )
    runner_rate = statistics.median(r["req_per_s"] for r in rounds["runner"])
    bare_rate = statistics.median(r["req_per_s"] for r in rounds["bare"])
    ratio = runner_rate / bare_rate
    # what the rates would be with a core each to themselves: unlike req/s, the CPU
    # time per request hardly depends on other work on the machine
    runner_us = statistics.median(r["server_cpu_us_per_request"] for r in rounds["runner"])
    bare_us = statistics.median(r["server_cpu_us_per_request"] for r in rounds["bare"])
    return {
        "backend": args.backend,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "pinned": None if args.no_pin else {"server": SERVER_CPU, "client": CLIENT_CPU},
        "document_bytes": size,
        "transcript_messages": len(job.get("conversationHistory") or []),
        "artifacts": len(job.get("artifacts") or []),
        "phase_usage": len(job.get("phaseUsage") or []),
        "runner": {"req_per_s": runner_rate, "rounds": rounds["runner"]},
        "bare": {"req_per_s": bare_rate, "rounds": rounds["bare"]},
        "ratio": ratio,
        "cpu_ratio": bare_us / runner_us,
        "target": {"ratio": TARGET_RATIO},
        "pass": ratio >= TARGET_RATIO,
    }


def _cpu(rounds: list[dict[str, Any]]) -> str:
    server = statistics.median(r["server_cpu"] for r in rounds)
    client = statistics.median(r["client_cpu"] for r in rounds)
    per_request = statistics.median(r["server_cpu_us_per_request"] for r in rounds)
    return f"server {server:.0%} ({per_request:.0f} µs/request), client {client:.0%} of a core"


def report(result: dict[str, Any]) -> None:
    pinned = result["pinned"]
    where = (
        f"server on CPU {pinned['server']}, client on CPU {pinned['client']}"
        if pinned
        else "not pinned"
    )
    rows = [
        (
            f"runner GET /jobs/:id (req/s; {_cpu(result['runner']['rounds'])})",
            f"{result['runner']['req_per_s']:.0f}",
            "",
        ),
        (
            f"bare Starlette JSONResponse (req/s; {_cpu(result['bare']['rounds'])})",
            f"{result['bare']['req_per_s']:.0f}",
            "",
        ),
        (
            "runner / bare (req/s)",
            f"{result['ratio']:.2f}",
            verdict(result["ratio"], TARGET_RATIO, higher_is_better=True),
        ),
        ("runner / bare (by server CPU per request)", f"{result['cpu_ratio']:.2f}", ""),
    ]
    print_table(
        f"job_read ({result['backend']}; {result['document_bytes']:,}-byte job with "
        f"{result['transcript_messages']} transcript messages, {result['artifacts']} artefacts; "
        f"{result['connections']} connections, {result['rounds']}×{result['seconds']:g} s each; "
        f"{where})",
        rows,
    )


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured, before each")
    parser.add_argument("--rounds", type=int, default=3, help="runner and bare, alternating")
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--no-pin", action="store_true", help="leave CPUs to the kernel")
    # child modes
    parser.add_argument("--serve-bare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)  # the server's port
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--body-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        asyncio.run(serve_bare(json.loads(args.serve_bare.read_text()), args.port))
        return
    if args.load is not None:
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        result = asyncio.run(
            drive(
                "127.0.0.1",
                args.load,
                args.path,
                args.body_size,
                args.connections,
                args.warmup,
                args.seconds,
            )
        )
        print(json.dumps(result), flush=True)
        return
    if args.backend == "memory":
        raise SystemExit("job_read runs `coro start`, whose store is sqlite or postgres")
    result = asyncio.run(run(args))
    report(result)
    save(NAME, args, result)


if __name__ == "__main__":
    main()
