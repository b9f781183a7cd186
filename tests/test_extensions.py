"""One place for extension points (`coro.extensions`): a drop-in of every kind —
executor, SCM, tracker, tools, state backend, event transport — is found and used by a
runner exactly like the built-ins, which enter the catalog the same way (the `script`
executor included); the engine knows no executor by name."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from coro.config import CoroConfig, CoroHome
from coro.extensions import BUILTIN_PLUGINS, EXTENSION_POINTS
from tests.conftest import ApiFactory, write_workflow

ONE_PHASE = [{"name": "work", "agent": None, "status": "working"}]

#: A distribution with one plugin of every kind (its manifests name their factories).
EXT_PLUGINS = '''
from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from coro.engine.events import MemoryEventTransport
from coro.executors.base import ExecutorEvent, Health, ModelInfo, PhaseRequest, TextEvent
from coro.plugins.scm.base import ConnectionCheck
from coro.plugins.trackers.base import Issue
from coro.state.memory import MemoryStateBackend
from coro.tools.registry import ToolContext, ToolInput, ToolRegistry


def manifest(plugin_id: str, kind: str, factory: str) -> dict[str, Any]:
    return {
        "id": plugin_id,
        "kind": kind,
        "version": "0.1.0",
        "displayName": plugin_id,
        "hostCompatibility": "^1.0.0",
        "entry": f"ext_plugins:{factory}",
    }


ECHO = manifest("ext-echo", "executor", "make_echo")
SCM = manifest("ext-scm", "scm", "make_scm")
TRACKER = manifest("ext-tracker", "tracker", "make_tracker")
TOOLS = manifest("ext-tools", "tools", "make_tools")
STATE = manifest("ext-state", "state", "make_state")
TRANSPORT = manifest("ext-transport", "transport", "make_transport")
HOLLOW = manifest("ext-hollow", "executor", "make_hollow")


class Echo:
    """Asks the `ext_issue` tool for EXT-1 and says what it answered."""

    id = "ext-echo"

    def validate_params(self, params: dict[str, Any]) -> None:
        if not isinstance(params.get("greeting", "hello"), str):
            raise ValueError("params.greeting must be a string")

    async def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]:
        result = await request.call_tool("ext_issue", {"key": "EXT-1"}, None)
        yield TextEvent(f"{request.params.get('greeting', 'hello')}: {result.text()}")

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="echo", display_name="Echo")]

    async def healthcheck(self) -> Health:
        return Health(ok=True, message="echo is ready")


def make_echo(settings: dict[str, Any], context: Any) -> Echo:
    return Echo()


class Scm:
    """Just enough of an SCM to be tested, and to announce its changes."""

    id = "ext-scm"

    def __init__(self, settings: dict[str, Any]) -> None:
        self.label = settings.get("label", "ext")
        self.listeners: list[Callable[[], None]] = []

    def add_listener(self, callback: Callable[[], None]) -> None:
        self.listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self.listeners.remove(callback)

    async def test_connection(self) -> ConnectionCheck:
        return ConnectionCheck(ok=True, message=f"{self.label} is reachable")

    async def aclose(self) -> None:
        pass

    def _unused(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("this test never uses the SCM's pull requests")

    clone_url = git_credentials = matches_remote = _unused
    create_pr = pr_status = post_comment = request_reviewers = merge = poll_pr = _unused


def make_scm(settings: dict[str, Any], context: Any) -> Scm:
    return Scm(settings)


class Tracker:
    id = "ext-tracker"

    async def get_issue(self, key: str) -> Issue:
        return Issue(
            key=key, title="Ship the extension", description="", status="Open", url="", comments=[]
        )

    async def comment(self, key: str, body: str) -> Any:
        raise AssertionError("this test never comments on an issue")

    async def transitions(self, key: str) -> list[Any]:
        return []

    async def transition(self, key: str, to: str) -> Any:
        raise AssertionError("this test never moves an issue")

    async def test_connection(self) -> ConnectionCheck:
        return ConnectionCheck(ok=True, message="tracker ok")

    async def aclose(self) -> None:
        pass


def make_tracker(settings: dict[str, Any], context: Any) -> Tracker:
    return Tracker()


class IssueInput(ToolInput):
    key: str


def make_tools(settings: dict[str, Any], context: Any) -> list[Any]:
    registry = ToolRegistry()

    @registry.tool("ext_issue", "The title of an issue of the default tracker.")
    async def ext_issue(ctx: ToolContext, args: IssueInput) -> str:
        assert ctx.plugins is not None
        issue = await ctx.plugins.resolve("tracker").get_issue(args.key)
        return f"[{issue.key}] {issue.title}"

    return registry.allowed(None)


class State(MemoryStateBackend):
    """Jobs in memory: nothing reaches $CORO_HOME/state.db."""


def make_state(settings: dict[str, Any], context: Any) -> State:
    return State()


class Transport(MemoryEventTransport):
    def __init__(self) -> None:
        super().__init__()
        self.intervals: list[float] = []

    def reconfigure(self, plugins: Any, config: Any) -> None:
        self.intervals.append(config.polling.interval_seconds)


def make_transport(settings: dict[str, Any], context: Any) -> Transport:
    transport = Transport()
    transport.reconfigure(context.plugins, context.config)
    return transport


class Hollow:
    id = "ext-hollow"  # and nothing an executor needs


def make_hollow(settings: dict[str, Any], context: Any) -> Hollow:
    return Hollow()
'''

KINDS = {
    "ext-echo": "executor",
    "ext-scm": "scm",
    "ext-tracker": "tracker",
    "ext-tools": "tools",
    "ext-state": "state",
    "ext-transport": "transport",
}
ATTRIBUTE = {
    "ext-echo": "ECHO",
    "ext-scm": "SCM",
    "ext-tracker": "TRACKER",
    "ext-tools": "TOOLS",
    "ext-state": "STATE",
    "ext-transport": "TRANSPORT",
    "ext-hollow": "HOLLOW",
    "script": "ECHO",  # a drop-in may not take a built-in's id
}


def put_distribution(home: CoroHome) -> None:
    """What `pip install --target` leaves in the site directory, written directly."""
    site = home.plugins_dir / "site"
    package = site / "ext_plugins"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(EXT_PLUGINS))
    info = site / "coro_ext_plugins-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: coro-ext-plugins\nVersion: 0.1.0\n"
    )
    lines = [f"{pid} = ext_plugins:{attr}" for pid, attr in ATTRIBUTE.items()]
    (info / "entry_points.txt").write_text("[coro.plugins]\n" + "\n".join(lines) + "\n")
    (info / "RECORD").write_text("")


def ext_config(**extra: Any) -> CoroConfig:
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "ext-echo"},
            "plugins": {
                "installed": {pid: {"config": {}} for pid in KINDS},
                "defaults": {"state": "ext-state", "transport": "ext-transport"},
            },
            **extra,
        }
    )


async def test_a_drop_in_of_every_kind_is_used_like_a_built_in(
    api_factory: ApiFactory, home: CoroHome
) -> None:
    put_distribution(home)
    async with api_factory(ext_config()) as api:
        workflow = write_workflow(home, "ext", ONE_PHASE)
        job_id = await api.create(workflow, params={"greeting": "hi"})
        done = await api.finish(job_id)
        listed = {p["id"]: p for p in (await api.client.get("/plugins")).json()["plugins"]}
        git = (await api.client.post("/test/git", json={"pluginId": "ext-scm"})).json()
        reloaded = await api.client.put("/config", json={"polling": {"intervalSeconds": 30}})
        transport = api.runner.transport
        connected = transport.is_connected
        job = await api.job(job_id)

    assert done.done == "complete", done.texts()
    assert "hi: [EXT-1] Ship the extension" in done.texts()  # executor, tool and tracker
    assert job["status"] == "complete"
    assert not home.state_db.exists()  # the jobs live in the drop-in's state backend
    assert git["ok"] is True and git["message"] == "ext is reachable"
    assert reloaded.status_code == 200, reloaded.text
    assert connected and transport.intervals == [60.0, 30.0]  # type: ignore[attr-defined]
    for plugin_id, kind in KINDS.items():
        entry = listed[plugin_id]
        assert (entry["kind"], entry["source"], entry["error"]) == (kind, "dropin", None)
        assert entry["active"] is True, plugin_id
    # the built-ins the drop-ins stand in for are listed, idle
    assert listed["sql"]["active"] is False and listed["polling"]["active"] is False


async def test_built_ins_are_plugins_like_any_other(
    api_factory: ApiFactory, home: CoroHome
) -> None:
    put_distribution(home)
    without_script = CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "plugins": {"installed": {"script": {"enabled": False}}},
        }
    )
    async with api_factory(without_script) as api:
        workflow = write_workflow(home, "one", ONE_PHASE)
        refused = await api.client.post("/jobs", json={"workflowPath": workflow})
        plugins = (await api.client.get("/plugins")).json()["plugins"]
        listed: dict[str, dict[str, Any]] = {}
        for plugin in plugins:
            listed.setdefault(plugin["id"], plugin)
        taken = [p for p in plugins if p["id"] == "script"]
        hollow = listed["ext-hollow"]
        configured = await api.client.put(
            "/config", json={"plugins": {"installed": {"ext-hollow": {"config": {}}}}}
        )
    # the script executor is off like any disabled plugin, nothing keeps it on
    assert refused.status_code == 409 and "not installed" in refused.json()["message"]
    assert listed["script"]["enabled"] is False and listed["script"]["active"] is False
    # a drop-in cannot take a built-in's id; the built-in is listed first
    assert [p["source"] for p in taken] == ["builtin", "dropin"]
    assert "belongs to a built-in plugin" in taken[1]["error"]
    # what a drop-in's factory made is checked against its kind's Protocol
    assert hollow["loaded"] is True
    failed = {f["id"]: f["error"] for f in configured.json()["reload"]["failed"]}
    assert "lacks execute_phase, healthcheck, models" in failed["ext-hollow"]
    # every kind has built-ins, all of them listed with their kind
    kinds = {p.kind for p in EXTENSION_POINTS}
    assert {b.kind for b in BUILTIN_PLUGINS} == kinds
    assert all(listed[b.id]["kind"] == b.kind for b in BUILTIN_PLUGINS)


async def test_executors_check_their_own_params_at_job_creation(
    api_factory: ApiFactory, home: CoroHome
) -> None:
    put_distribution(home)
    async with api_factory() as api:  # the script executor
        workflow = write_workflow(home, "one", ONE_PHASE)
        bad_script = await api.client.post(
            "/jobs", json={"workflowPath": workflow, "params": {"script": {"work": "nope"}}}
        )
    async with api_factory(ext_config()) as api:
        bad_greeting = await api.client.post(
            "/jobs", json={"workflowPath": workflow, "params": {"greeting": 5}}
        )
        # params.script means nothing to ext-echo
        unread = await api.client.post(
            "/jobs", json={"workflowPath": workflow, "params": {"script": {"work": "nope"}}}
        )
    assert bad_script.status_code == 400
    assert "params.script.work must be a list" in bad_script.json()["error"]
    assert bad_greeting.status_code == 400
    assert "params.greeting must be a string" in bad_greeting.json()["error"]
    assert unread.status_code == 201, unread.text


async def test_the_polling_transport_follows_every_scm_that_announces_changes(
    api_factory: ApiFactory, home: CoroHome
) -> None:
    put_distribution(home)
    config = CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "plugins": {"installed": {"ext-scm": {"config": {"label": "one"}}}},
        }
    )
    async with api_factory(config) as api:
        first: Any = api.runner.plugins.get("scm", "ext-scm")
        listening_first = len(first.listeners)
        changed = await api.client.put(
            "/config", json={"plugins": {"installed": {"ext-scm": {"config": {"label": "two"}}}}}
        )
        second: Any = api.runner.plugins.get("scm", "ext-scm")
        git = (await api.client.post("/test/git", json={"pluginId": "ext-scm"})).json()
    assert listening_first == 1
    assert changed.json()["reload"]["updated"] == ["ext-scm"]
    assert second is not first and len(second.listeners) == 1 and first.listeners == []
    assert git["message"] == "two is reachable"


def test_the_engine_never_imports_the_script_executor(tmp_path: Path) -> None:
    """Every module of `coro.engine` imported, `coro.executors.script` never was."""
    probe = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import coro.engine
        names = [m.name for m in pkgutil.walk_packages(coro.engine.__path__, "coro.engine.")]
        for name in names:
            importlib.import_module(name)
        print(json.dumps({"modules": len(names), "script": "coro.executors.script" in sys.modules}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["modules"] > 10 and found["script"] is False
