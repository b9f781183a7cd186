"""Shared plumbing of the benchmarks: a throw-away CORO_HOME, a runner, statistics, output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from coro.config import CoroConfig, CoroHome
from coro.runner import Runner
from coro.state.backend import StateBackend
from coro.state.memory import MemoryStateBackend

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_workflow(home: CoroHome, name: str, phases: list[dict[str, Any]]) -> str:
    """A workflow in the home's tenant layer; returns its workflowPath."""
    front = {"description": f"benchmark workflow {name}", "phases": phases}
    path = home.root / "intelligence" / "workflows" / name / "workflow.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n# {name}\n")
    return f"workflows/{name}/workflow.md"


def make_config(max_concurrent: int = 8) -> CoroConfig:
    return CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "jobs": {"maxConcurrent": max_concurrent}}
    )


@asynccontextmanager
async def temp_home() -> AsyncIterator[CoroHome]:
    """An isolated CORO_HOME (also exported, so nothing touches the user's ~/.coro)."""
    previous = os.environ.get("CORO_HOME")
    with tempfile.TemporaryDirectory(prefix="coro-bench-") as tmp:
        home = CoroHome(Path(tmp) / "home")
        home.ensure()
        os.environ["CORO_HOME"] = str(home.root)
        try:
            yield home
        finally:
            if previous is None:
                os.environ.pop("CORO_HOME", None)
            else:
                os.environ["CORO_HOME"] = previous


def make_backend(kind: str, home: CoroHome) -> StateBackend | None:
    """None means the runner's default (SQLite in the home)."""
    if kind == "memory":
        return MemoryStateBackend()
    if kind == "sqlite":
        return None
    raise SystemExit(f"unknown backend {kind!r} (sqlite or memory)")


def make_runner(home: CoroHome, *, max_concurrent: int = 8, backend: str = "sqlite") -> Runner:
    config = make_config(max_concurrent)
    home.save_config(config)
    return Runner(home, config, backend=make_backend(backend, home))


# --- statistics -----------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": min(values),
        "p50": statistics.median(values),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


# --- output ---------------------------------------------------------------------------


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--backend",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="state backend (default: sqlite, the runner's own)",
    )
    parser.add_argument("--quiet", action="store_true", help="only the result table")
    return parser


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        # Other work on the machine skews every figure: note how busy it was.
        "loadavg": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "environment": environment(), **result}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def save(name: str, args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Write a benchmark's result (`<name>-<backend>.json` off SQLite) and say where."""
    path = write_result(name if args.backend == "sqlite" else f"{name}-{args.backend}", result)
    if not args.quiet:
        print(f"  → {path}")


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """rows: (metric, value, target/verdict)."""
    width = max([len(r[0]) for r in rows] + [6])
    vwidth = max([len(r[1]) for r in rows] + [5])
    print(f"\n{title}")
    print(f"  {'metric'.ljust(width)}  {'value'.rjust(vwidth)}  target")
    print(f"  {'-' * width}  {'-' * vwidth}  ------")
    for metric, value, target in rows:
        print(f"  {metric.ljust(width)}  {value.rjust(vwidth)}  {target}")


def verdict(value: float, limit: float, *, higher_is_better: bool = False) -> str:
    ok = value >= limit if higher_is_better else value <= limit
    sign = "≥" if higher_is_better else "≤"
    return f"{sign} {limit:g}  {'PASS' if ok else 'FAIL'}"


def ms(value_ns: float) -> float:
    return value_ns / 1e6
