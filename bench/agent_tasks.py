"""Real-model agent tasks: can a local model fix a failing test through Coro?

Eight tiny repositories on the offline `local` SCM, each with one bug, a failing test and
a one-paragraph request. Each task is one job on the base `job-fast` workflow (plan →
code with a reviewed pull request → review and verify), driven by the real `openai`
executor against an OpenAI-compatible server: by default the SmolLM2-135M-Instruct
model shipped on PyPI, served by llama.cpp on this machine's CPU (`tests.real_model`);
`--base-url` / `--model` point it at any other server (Ollama, vLLM, llama.cpp with a
bigger model). The benchmark plays the human: it approves every pull request the job
opens and answers questions with "Use your judgement." A task is solved when its test
passes on the repository's `main` after the job.

Reported per task: solved, the job's final status, tokens, model round trips and wall
time. Bounded: each job has a token budget and a wall-time limit, after which it is
cancelled; stuck detection ends a looping model earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import base_parser, make_backend, print_table, save, state_section, temp_home
from coro.config import CoroConfig
from coro.domain.models import (
    AWAITING_BUDGET,
    AWAITING_DEVELOPER_INPUT,
    AWAITING_PLAN_APPROVAL,
    AWAITING_PR_MERGE,
    Budget,
    Job,
    is_terminal,
)
from coro.engine.polling import PollingTransport
from coro.engine.service import NewJob
from coro.plugins.scm.local import PLUGIN_ID as LOCAL_SCM
from coro.plugins.scm.local import LocalScm
from coro.runner import Runner

NAME = "agent_tasks"
WORKFLOW = "workflows/job-fast/workflow.md"
TEST_COMMAND = [sys.executable, "-m", "unittest", "-q"]
ANSWER = "Use your judgement and carry on."


@dataclass(frozen=True)
class Task:
    name: str
    request: str
    files: dict[str, str]


def _module_task(name: str, request: str, module: str, code: str, test: str) -> Task:
    return Task(
        name=name,
        request=request,
        files={
            f"{module}.py": code,
            f"test_{module}.py": f"import unittest\n\nfrom {module} import *\n\n\n{test}",
            "README.md": f"# {name}\n\nRun the tests with `python -m unittest`.\n",
        },
    )


def _case(body: str) -> str:
    main = "if __name__ == '__main__':\n    unittest.main()\n"
    return f"class Test(unittest.TestCase):\n{body}\n\n{main}"


TASKS: list[Task] = [
    _module_task(
        "add",
        "`add(a, b)` in calc.py subtracts instead of adding. Make it return the sum so the "
        "test passes.",
        "calc",
        "def add(a, b):\n    return a - b\n",
        _case("    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"),
    ),
    _module_task(
        "is-even",
        "`is_even(n)` in numbers.py is wrong for every input. Fix it so it returns True "
        "exactly for even integers.",
        "numbers",
        "def is_even(n):\n    return n % 2 == 1\n",
        _case(
            "    def test_even(self):\n        self.assertTrue(is_even(4))\n"
            "        self.assertFalse(is_even(7))\n"
        ),
    ),
    _module_task(
        "reverse",
        "`reverse(text)` in strings.py should return the text reversed; today it returns "
        "it unchanged. Fix it.",
        "strings",
        "def reverse(text):\n    return text\n",
        _case("    def test_reverse(self):\n        self.assertEqual(reverse('abc'), 'cba')\n"),
    ),
    _module_task(
        "largest",
        "`largest(values)` in stats.py skips the last element of the list. Make it return "
        "the largest value of the whole list.",
        "stats",
        "def largest(values):\n    best = values[0]\n    for v in values[:-1]:\n"
        "        if v > best:\n            best = v\n    return best\n",
        _case("    def test_largest(self):\n        self.assertEqual(largest([1, 5, 9]), 9)\n"),
    ),
    _module_task(
        "fizzbuzz",
        "`fizzbuzz(n)` in game.py returns 'Fizz' for multiples of 15; it must return "
        "'FizzBuzz' for them (and keep 'Fizz' for 3, 'Buzz' for 5).",
        "game",
        "def fizzbuzz(n):\n    if n % 3 == 0:\n        return 'Fizz'\n    if n % 5 == 0:\n"
        "        return 'Buzz'\n    if n % 15 == 0:\n        return 'FizzBuzz'\n"
        "    return str(n)\n",
        _case(
            "    def test_fizzbuzz(self):\n        self.assertEqual(fizzbuzz(15), 'FizzBuzz')\n"
            "        self.assertEqual(fizzbuzz(9), 'Fizz')\n"
            "        self.assertEqual(fizzbuzz(10), 'Buzz')\n"
        ),
    ),
    _module_task(
        "word-count",
        "`word_count(text)` in words.py counts characters instead of words. Make it return "
        "the number of whitespace-separated words.",
        "words",
        "def word_count(text):\n    return len(text)\n",
        _case("    def test_count(self):\n        self.assertEqual(word_count('a bb  ccc'), 3)\n"),
    ),
    _module_task(
        "fahrenheit",
        "`to_fahrenheit(celsius)` in temperature.py forgets to add 32. Fix the formula.",
        "temperature",
        "def to_fahrenheit(celsius):\n    return celsius * 9 / 5\n",
        _case("    def test_boiling(self):\n        self.assertEqual(to_fahrenheit(100), 212)\n"),
    ),
    _module_task(
        "factorial",
        "`factorial(n)` in maths.py returns 0 for every input because of its base case. "
        "Fix it so factorial(0) is 1 and factorial(5) is 120.",
        "maths",
        "def factorial(n):\n    if n == 0:\n        return 0\n    return n * factorial(n - 1)\n",
        _case(
            "    def test_factorial(self):\n        self.assertEqual(factorial(0), 1)\n"
            "        self.assertEqual(factorial(5), 120)\n"
        ),
    ),
]


@dataclass
class Outcome:
    task: str
    solved: bool
    status: str
    tokens: int
    round_trips: int
    seconds: float
    note: str = ""


def tests_pass(bare_repo: Path) -> bool:
    """Does the task's test pass on the repository's `main`?"""
    with tempfile.TemporaryDirectory(prefix="coro-task-") as tmp:
        clone = subprocess.run(
            ["git", "clone", "-q", "--branch", "main", str(bare_repo), tmp],
            capture_output=True,
            check=False,
        )
        if clone.returncode != 0:
            return False
        run = subprocess.run(TEST_COMMAND, cwd=tmp, capture_output=True, timeout=60, check=False)
        return run.returncode == 0


async def _drive(runner: Runner, job: Job, limit_seconds: float) -> Job:
    """Play the human until the job stops or runs out of time: approve every open pull
    request, answer every question, approve checkpoints."""
    local = runner.plugins.get("scm", LOCAL_SCM)
    assert isinstance(local, LocalScm)
    approved: set[int] = set()
    deadline = time.monotonic() + limit_seconds
    while (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left):  # a phase may run past the limit
                await runner.dispatcher.wait_idle()
        job = await runner.jobs.get(job.id)
        if is_terminal(job.status) or job.status in ("failed", "escalated", AWAITING_BUDGET):
            return job
        if job.status == AWAITING_PR_MERGE:
            fresh = [p.pr_id for p in job.open_prs() if p.pr_id not in approved]
            if not fresh:
                return job  # waiting on something only a person could decide
            for pr_id in fresh:
                approved.add(pr_id)
                await local.approve(pr_id, "benchmark")
            assert isinstance(runner.transport, PollingTransport)
            await runner.transport.poll_once()
        elif job.status == AWAITING_PLAN_APPROVAL:
            await runner.jobs.resume(job.id)
        elif job.status == AWAITING_DEVELOPER_INPUT:
            await runner.jobs.message(job.id, ANSWER)
        else:
            await asyncio.sleep(0.5)  # parked on a rate limit (it resumes by itself)
    await runner.jobs.cancel(job.id, "benchmark time limit")
    await runner.dispatcher.wait_idle()  # the running phase stops at its next boundary
    return await runner.jobs.get(job.id)


async def run_task(
    task: Task,
    *,
    server: dict[str, Any],
    backend: str,
    limit_seconds: float,
    max_tokens: int,
) -> Outcome:
    async with temp_home(backend) as home:
        config = CoroConfig.model_validate(
            {
                "llm": {"defaultProvider": "openai"},
                "polling": {"intervalSeconds": 86_400},
                "plugins": {"installed": {"openai": {"config": server}}},
                **state_section(home),
            }
        )
        home.save_config(config)
        runner = Runner(home, config, backend=make_backend(backend, home))
        local = runner.plugins.get("scm", LOCAL_SCM)
        assert isinstance(local, LocalScm)
        source = home.root / f"{task.name}-source"
        source.mkdir()
        for relative, content in task.files.items():
            (source / relative).write_text(content)
        started = time.monotonic()
        async with runner.running():
            await local.create_repo(task.name, from_dir=source)
            job = await runner.jobs.create(
                NewJob(
                    workflow_path=WORKFLOW,
                    repo=task.name,
                    description=task.request,
                    interactive=False,
                    budget=Budget(max_tokens=max_tokens),
                )
            )
            job = await _drive(runner, job, limit_seconds)
            seconds = time.monotonic() - started
            solved = await asyncio.to_thread(tests_pass, local.repo_path(task.name))
        usage = job.token_usage
        return Outcome(
            task=task.name,
            solved=solved,
            status=job.status,
            tokens=usage.input_tokens + usage.output_tokens + usage.cache_read_input_tokens,
            round_trips=sum(p.num_turns for p in job.phase_usage),
            seconds=seconds,
            note=(job.escalation_message or "")[:160],
        )


@contextlib.contextmanager
def model_server(base_url: str | None, model: str | None) -> Iterator[dict[str, Any]]:
    """The `openai` plugin's settings for the server the tasks run on."""
    if base_url:
        yield {"baseUrl": base_url, "defaultModel": model or "default"}
        return
    from tests.real_model import local_model

    with local_model() as served:
        # as the real-model tests drive it: too small to call tools unconstrained
        yield {
            "baseUrl": served.base_url,
            "defaultModel": served.model,
            "toolCalling": "constrained",
            "contextWindow": served.context_window,
            "temperature": 0,
            "frequencyPenalty": 0.5,
            "maxTokens": 400,
        }


async def run(
    *,
    server: dict[str, Any],
    backend: str,
    tasks: int,
    limit_seconds: float,
    max_tokens: int,
) -> dict[str, Any]:
    outcomes = []
    for task in TASKS[:tasks]:
        outcome = await run_task(
            task,
            server=server,
            backend=backend,
            limit_seconds=limit_seconds,
            max_tokens=max_tokens,
        )
        outcomes.append(outcome)
    return {
        "model": server["defaultModel"],
        "settings": {k: v for k, v in server.items() if k != "baseUrl"},
        "solved": sum(o.solved for o in outcomes),
        "tasks": [o.__dict__ for o in outcomes],
    }


def report(result: dict[str, Any]) -> None:
    rows = [
        (
            t["task"],
            f"{'yes' if t['solved'] else 'no'} · {t['status']}",
            f"{t['tokens']:,} tokens · {t['round_trips']} round trips · {t['seconds']:.0f} s",
        )
        for t in result["tasks"]
    ]
    print_table(
        f"agent_tasks ({result['model']}: {result['solved']}/{len(rows)} solved)",
        [(name, verdict, detail) for name, verdict, detail in rows],
    )
    for t in result["tasks"]:
        if t["note"]:
            print(f"  {t['task']}: {t['note']}")


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: SmolLM2)")
    parser.add_argument("--model", help="the model to ask that server for")
    parser.add_argument("--tasks", type=int, default=len(TASKS), help="run the first N tasks")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per task")
    parser.add_argument("--max-tokens", type=int, default=400_000, help="token budget per task")
    args = parser.parse_args()
    with model_server(args.base_url, args.model) as server:
        result = asyncio.run(
            run(
                server=server,
                backend=args.backend,
                tasks=args.tasks,
                limit_seconds=args.time_limit,
                max_tokens=args.max_tokens,
            )
        )
    report(result)
    save(NAME, args, result)


if __name__ == "__main__":
    main()
