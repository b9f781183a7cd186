"""Run every benchmark (each in its own process) and print the SPEC §7 figures.

`python -m bench.all [--backend sqlite|postgres|memory]`; the summary also goes to
`bench/results/all.json`. The team cloud's benchmarks always use PostgreSQL for the
cloud; `--backend` is the hybrid runner's own store in `cloud_webhook`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench._common import RESULTS_DIR, base_parser, print_table, write_result

BENCHMARKS = (
    "phase_overhead",
    "throughput",
    "sse_fanout",
    "event_wake",
    "sse_stalled",
    "job_read",
    "idle",
)
CLOUD_BENCHMARKS = ("cloud_dispatch", "cloud_webhook", "cloud_sse")
#: benchmarks whose results depend on the runner's store (`--backend`)
_BACKEND_BOUND = {*BENCHMARKS, "cloud_webhook"}
#: benchmarks of a `coro start` child, whose store is SQLite or PostgreSQL (not `memory`)
_DURABLE_STORE = {"job_read", "idle"}


def _result_name(name: str, backend: str) -> str:
    return name if backend == "sqlite" or name not in _BACKEND_BOUND else f"{name}-{backend}"


def _figures(name: str, result: dict[str, Any]) -> list[tuple[str, str, str]]:
    ok = "PASS" if result.get("pass") else "FAIL"
    if name == "phase_overhead":
        t = result["transition_ms"]
        return [
            ("phase transition median (ms)", f"{t['p50']:.2f}", f"≤ 5  {ok}"),
            ("phase transition p95 (ms)", f"{t['p95']:.2f}", ""),
        ]
    if name == "throughput":
        rows = [
            (
                "throughput in-process (jobs/s)",
                f"{result['in_process']['jobs_per_s']:.1f}",
                f"≥ 100  {ok}",
            )
        ]
        if result.get("http"):
            rows.append(
                ("throughput over HTTP (jobs/s)", f"{result['http']['jobs_per_s']:.1f}", "")
            )
        return rows
    if name == "sse_fanout":
        lat = result["latency_ms"]
        nan = float("nan")
        return [
            ("SSE append→delivery p50 (ms)", f"{lat.get('p50', nan):.2f}", ""),
            ("SSE append→delivery p99 (ms)", f"{lat.get('p99', nan):.2f}", f"≤ 100  {ok}"),
            ("SSE deliveries missing", str(result["missing"]), "0"),
        ]
    if name == "event_wake":
        wake = result["poll_to_phase_start_ms"]
        return [
            ("event (poll) → phase started p50 (ms)", f"{wake['p50']:.2f}", f"≤ 100  {ok}"),
            ("event (poll) → phase started p95 (ms)", f"{wake['p95']:.2f}", ""),
        ]
    if name == "sse_stalled":
        stalled, slow = result["stalled"], result.get("slow", {})
        rows = [
            (
                "RSS growth after SSE cut-off, 50 stalled (MB)",
                f"{stalled['rss_growth_after_cutoff_mb']:.1f}",
                f"≤ 50  {ok}",
            ),
            (
                "stalled streams reset / tracebacks",
                f"{stalled['reset']} / {stalled['log']['tracebacks']}",
                "50 / 0",
            ),
        ]
        if slow:
            closed = f"{slow['all_closed_after_s']:.1f}"
            rows.append(("1,000 stuck requests closed after (s)", closed, "≤ 30"))
        return rows
    if name == "job_read":
        return [
            ("GET /jobs/:id, runner (req/s)", f"{result['runner']['req_per_s']:.0f}", ""),
            ("GET /jobs/:id, bare Starlette (req/s)", f"{result['bare']['req_per_s']:.0f}", ""),
            ("GET /jobs/:id runner / bare", f"{result['ratio']:.2f}", f"≥ 0.33  {ok}"),
            ("GET /jobs/:id runner / bare, by CPU per request", f"{result['cpu_ratio']:.2f}", ""),
        ]
    if name == "idle":
        first, again = result["first_start"], result["after_restart"]
        jobs = f"{result['jobs']:,} parked jobs"
        return [
            (f"idle CPU, {jobs} (% of a core)", f"{first['cpu_pct_of_core']:.3f}", f"≤ 0.1  {ok}"),
            (f"idle wake-ups per second, {jobs}", f"{first['wakeups_per_s']:.2f}", ""),
            (f"RSS after start, {jobs} (MB)", f"{first['rss_mb']:.0f}", ""),
            (f"RSS after restart, {jobs} (MB)", f"{again['rss_mb']:.0f}", ""),
        ]
    if name == "cloud_dispatch":
        lat = result["dispatch_ms"]
        return [
            ("cloud POST → event:dispatch p99 (ms)", f"{lat['p99']:.2f}", f"≤ 200  {ok}"),
            ("cloud RSS per connected runner (KiB)", f"{result['rss_per_runner_kib']:.1f}", ""),
        ]
    if name == "cloud_webhook":
        wake = result["webhook_to_phase_start_ms"]
        return [
            ("cloud webhook → phase started p50 (ms)", f"{wake['p50']:.2f}", f"≤ 100  {ok}"),
            ("cloud webhook → phase started p99 (ms)", f"{wake['p99']:.2f}", ""),
        ]
    if name == "cloud_sse":
        lat = result["latency_ms"]
        nan = float("nan")
        return [
            ("cloud SSE append→delivery p99 (ms)", f"{lat.get('p99', nan):.2f}", f"≤ 100  {ok}"),
            ("cloud SSE deliveries missing", str(result["missing"]), "0"),
        ]
    return []


def main() -> None:
    parser = base_parser(__doc__ or "all")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    summary: dict[str, Any] = {"backend": args.backend, "results": {}}
    failed: list[str] = []
    for name in (*BENCHMARKS, *CLOUD_BENCHMARKS):
        if args.backend == "memory" and name in _DURABLE_STORE:
            continue
        started = time.perf_counter()
        command = [sys.executable, "-m", f"bench.{name}", "--quiet"]
        if name in _BACKEND_BOUND:
            command += ["--backend", args.backend]
        done = subprocess.run(command, check=False)
        seconds = time.perf_counter() - started
        path = RESULTS_DIR / f"{_result_name(name, args.backend)}.json"
        if done.returncode != 0 or not path.exists():
            failed.append(name)
            rows.append((name, "error", f"exit {done.returncode}"))
            continue
        result = json.loads(path.read_text())
        summary["results"][name] = {**result, "bench_seconds": seconds}
        rows.extend(_figures(name, result))
    print_table(f"SPEC §7 figures ({args.backend})", rows)
    path = write_result(_result_name("all", args.backend), summary)
    if not args.quiet:
        print(f"  → {path}")
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
