"""Shared fixtures: an isolated CORO_HOME, a real runner on a loopback port, SSE helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from coro.api.server import Served, serve
from coro.config import CoroConfig, CoroHome
from coro.runner import Runner
from tests.pg import fresh_database
from tests.real_model import LocalModel, local_model
from tests.sse import frames

WAIT_LIMIT = 60  # a guard against hangs, not a timing assertion


#: The browser fixture (`chromium`) for the dashboard tests.
pytest_plugins = ("tests.browser",)


#: `record_property(SUMMARY, line)`: a line the run prints at its end (under xdist too:
#: workers relay a test's properties, not its output), e.g. the crash suite's figures.
SUMMARY = "summary"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        str(value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == SUMMARY
    ]
    if lines:
        terminalreporter.section("summaries")
        for line in lines:
            terminalreporter.write_line(line)


def schemathesis_summary(name: str, report: str) -> str:
    """One line of a schemathesis run's report: what it tested and found."""
    picked = [
        line.strip()
        for line in report.splitlines()
        if line.strip().startswith(("Tested:", "Selected:")) or " generated" in line
    ]
    return f"schemathesis ({name}): " + "; ".join(picked)


def schemathesis_failures(report: str) -> str:
    """A failed run's report from its failures on, each line cut to 300 characters (a
    generated request can be kilobytes long), so every failing operation is named."""
    start = report.find("FAILURES")
    lines = report[start if start >= 0 else 0 :].splitlines()
    return "\n".join(line if len(line) <= 300 else line[:300] + "…" for line in lines)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`@pytest.mark.backends("sqlite", "postgres")`: run the test once per state backend
    (its runners get that backend through the `state_url` fixture)."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None and "state_url" in metafunc.fixturenames:
        metafunc.parametrize("state_url", marker.args, indirect=True)


@pytest.fixture
async def state_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """The `state.url` of the runners a test starts: None (SQLite in `$CORO_HOME`, the
    default) or, for a test marked `backends(..., "postgres")`, a fresh PostgreSQL
    database of its own."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
    else:
        async with fresh_database() as url:
            yield url


def on_backend(config: CoroConfig, state_url: str | None) -> CoroConfig:
    """`config` keeping its state at `state_url` (unchanged when that is None)."""
    if state_url is None:
        return config
    return config.model_copy(update={"state": config.state.model_copy(update={"url": state_url})})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CoroHome:
    root = tmp_path / "coro-home"
    monkeypatch.setenv("CORO_HOME", str(root))
    home = CoroHome(root)
    home.ensure()
    return home


def write_workflow(home: CoroHome, name: str, phases: list[dict[str, Any]], **extra: Any) -> str:
    """A workflow in the tenant layer; returns its workflowPath."""
    import yaml

    front = {"description": f"test workflow {name}", **extra, "phases": phases}
    path = home.root / "intelligence" / "workflows" / name / "workflow.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n# {name}\n\nTest workflow.\n"
    )
    return f"workflows/{name}/workflow.md"


def provider_config(provider: str, **settings: Any) -> CoroConfig:
    """A runner whose default executor is `provider`, configured with `settings`."""
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": provider},
            "plugins": {"installed": {provider: {"config": settings}}},
        }
    )


def make_config(**jobs: Any) -> CoroConfig:
    return CoroConfig.model_validate({"llm": {"defaultProvider": "script"}, "jobs": jobs})


@dataclass
class Api:
    """A client of one served runner."""

    served: Served
    client: httpx.AsyncClient
    home: CoroHome

    @property
    def runner(self) -> Runner:
        return self.served.runner

    async def create(
        self, workflow_path: str, script: dict[str, Any] | None = None, **body: Any
    ) -> str:
        params = dict(body.pop("params", {}))
        if script is not None:
            params["script"] = script
        response = await self.client.post(
            "/jobs", json={"workflowPath": workflow_path, "params": params, **body}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["jobId"])

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def follow(
        self,
        job_id: str,
        until: Callable[[str], bool] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        limit: float = WAIT_LIMIT,
    ) -> StreamResult:
        """Read the SSE stream until `until(line)` matches or `event: done` arrives."""
        result = StreamResult()
        async with (
            asyncio.timeout(limit),
            self.client.stream(
                "GET", f"/jobs/{job_id}/stream", headers=headers or {}, params=params or {}
            ) as response,
        ):
            assert response.status_code == 200, await response.aread()
            async for frame in frames(response):
                if frame.id is None and frame.event == "message":
                    continue  # a heartbeat comment
                if frame.event == "done":
                    result.done = frame.data
                    return result
                result.ids.append(int(frame.id or -1))
                result.lines.append(frame.data)
                if until is not None and until(frame.data):
                    return result
        return result

    async def wait_for_line(self, job_id: str, text: str) -> StreamResult:
        return await self.follow(job_id, until=lambda line: text in line)

    async def finish(self, job_id: str, limit: float = WAIT_LIMIT) -> StreamResult:
        result = await self.follow(job_id, limit=limit)
        assert result.done is not None, "stream ended without event: done"
        return result


@dataclass
class StreamResult:
    lines: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    done: str | None = None

    def texts(self) -> list[str]:
        """Lines without their ISO timestamp."""
        return [line.split(" ", 1)[1] if " " in line else line for line in self.lines]


ApiFactory = Callable[..., AbstractAsyncContextManager[Api]]


@pytest.fixture
def api_factory(home: CoroHome, state_url: str | None) -> ApiFactory:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(config: CoroConfig | None = None, **runner_kwargs: Any) -> AsyncIterator[Api]:
        config = on_backend(config or make_config(), state_url)
        home.save_config(config)
        runner = Runner(home, config, **runner_kwargs)
        async with (
            serve(runner, "127.0.0.1", 0) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
        ):
            yield Api(served=served, client=client, home=home)

    return start


@pytest.fixture
async def api(api_factory: ApiFactory) -> AsyncIterator[Api]:
    async with api_factory() as api:
        yield api


def user_prompts(job: dict[str, Any]) -> list[str]:
    """The prompts the agent was given, oldest first."""
    return [m["content"] for m in job["conversationHistory"] if m["role"] == "user"]


@pytest.fixture(scope="session")
def real_llm() -> Iterator[LocalModel]:
    """SmolLM2-135M-Instruct served by llama.cpp on the CPU, once per test worker."""
    with local_model() as served:
        yield served
