"""The crash-safety suite (issue #13, point 6): `coro start` SIGKILLed at seeded random
moments across multi-phase script jobs with log bursts and usage, restarted, and every
job checked (final state, each line seen before a kill stored once at its index, log
indexes contiguous, usage counted once per phase visit, SQLite integrity). The logic is
`bench/crash_safety.py`; the benchmark runs it with more trials."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

from bench.crash_safety import run
from tests.conftest import SUMMARY

TRIALS = 6


async def test_runner_killed_at_random_moments_loses_and_repeats_nothing(
    record_property: Callable[[str, object], None],
) -> None:
    seed = int(os.environ.get("CORO_CRASH_SEED", random.randrange(1_000_000)))
    totals = await run(TRIALS, seed)
    record_property(SUMMARY, totals.summary(seed))  # printed at the end of the run
    assert totals.problems == [], f"seed {seed} (rerun with CORO_CRASH_SEED={seed})"
    assert totals.trials == TRIALS
    assert totals.kills >= TRIALS
    assert totals.jobs == TRIALS * 3
