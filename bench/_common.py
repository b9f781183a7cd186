"""Shared plumbing of the benchmarks: a throw-away CORO_HOME, a runner, statistics, output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

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


#: where `--backend postgres` makes its throw-away database (the machine's own server)
POSTGRES_SERVER = os.environ.get(
    "CORO_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def make_config(home: CoroHome, max_concurrent: int = 8, **sections: Any) -> CoroConfig:
    """A `script` runner's config, on the home's state backend (see `temp_home`)."""
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "jobs": {"maxConcurrent": max_concurrent},
            **state_section(home),
            **sections,
        }
    )


def state_section(home: CoroHome) -> dict[str, Any]:
    """`{"state": …}` of the home's config.json: the database `temp_home` made, if any."""
    state = home.load_config().to_json().get("state")
    return {"state": state} if state else {}


@asynccontextmanager
async def temp_home(backend: str = "sqlite") -> AsyncIterator[CoroHome]:
    """An isolated CORO_HOME (also exported, so nothing touches the user's ~/.coro);
    for `postgres`, a fresh database too, named by the home's `state.url`."""
    previous = os.environ.get("CORO_HOME")
    with tempfile.TemporaryDirectory(prefix="coro-bench-") as tmp:
        home = CoroHome(Path(tmp) / "home")
        home.ensure()
        os.environ["CORO_HOME"] = str(home.root)
        try:
            async with _state_database(backend) as url:
                if url is not None:
                    home.save_config(CoroConfig.model_validate({"state": {"url": url}}))
                yield home
        finally:
            if previous is None:
                os.environ.pop("CORO_HOME", None)
            else:
                os.environ["CORO_HOME"] = previous


@asynccontextmanager
async def _state_database(backend: str) -> AsyncIterator[str | None]:
    """A throw-away PostgreSQL database for `postgres` (dropped afterwards); else None."""
    if backend != "postgres":
        yield None
        return
    import asyncpg

    name = f"coro_bench_{secrets.token_hex(6)}"
    server = await asyncpg.connect(POSTGRES_SERVER)
    try:
        await server.execute(f'CREATE DATABASE "{name}"')
    finally:
        await server.close()
    try:
        yield str(make_url(POSTGRES_SERVER).set(drivername="postgresql+asyncpg", database=name))
    finally:
        server = await asyncpg.connect(POSTGRES_SERVER)
        try:
            await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await server.close()


def make_backend(kind: str, home: CoroHome) -> StateBackend | None:
    """None means the runner's own choice: SQLite in the home, or the PostgreSQL
    database of its `state.url`."""
    if kind == "memory":
        return MemoryStateBackend()
    if kind in ("sqlite", "postgres"):
        return None
    raise SystemExit(f"unknown backend {kind!r} (sqlite, postgres or memory)")


def make_runner(home: CoroHome, *, max_concurrent: int = 8, backend: str = "sqlite") -> Runner:
    config = make_config(home, max_concurrent)
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
        choices=("sqlite", "postgres", "memory"),
        default="sqlite",
        help="state backend (default: sqlite, the runner's own; postgres: a throw-away "
        "database on CORO_BENCH_POSTGRES, default the local server)",
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
