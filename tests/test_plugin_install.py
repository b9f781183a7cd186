"""Drop-in plugins end to end: a wheel built here (offline) is installed through
`POST /plugins/install` with real pip into `$CORO_HOME/plugins/site`, listed by
`GET /plugins`, used by jobs, and removed by `DELETE /plugins/{id}`; broken plugins are
reported while everything else keeps working."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from coro.cli.main import app
from coro.config import CoroConfig, CoroHome
from coro.plugins.manifest import PluginManifest, host_specifier
from tests.conftest import Api, ApiFactory, write_workflow

FIXTURE = Path(__file__).parent / "plugin_fixtures" / "acme_plugins"
ONE_PHASE = [{"name": "work", "agent": None, "status": "working"}]
TOKEN = "acme-token-" + "s3cr3t" * 6

#: name -> (file edits) of the variants built besides the good plugin
VARIANTS: dict[str, dict[str, list[tuple[str, str]]]] = {
    # the same distribution, one version up
    "v2": {
        "pyproject.toml": [('version = "0.1.0"', 'version = "0.2.0"')],
        "acme_plugins/tracker.py": [('"version": "0.1.0"', '"version": "0.2.0"')],
    },
    "importerror": {
        "acme_plugins/tracker.py": [("from typing import Any\n", "import acme_gone\n")]
    },
    "badmanifest": {"acme_plugins/tracker.py": [('"version": "0.1.0"', '"version": "banana"')]},
    "incompatible": {"acme_plugins/tracker.py": [('"^1.0.0"', '"^9.0.0"')]},
    "notaplugin": {
        "pyproject.toml": [
            ('[project.entry-points."coro.plugins"]\n', ""),
            ('acme-tracker = "acme_plugins.tracker"\n', ""),
            ('acme-echo = "acme_plugins.echo"\n', ""),
        ]
    },
}


@dataclass(frozen=True)
class Wheels:
    good: Path
    variants: dict[str, Path]


def _variant(source: Path, root: Path, name: str, edits: dict[str, list[tuple[str, str]]]) -> Path:
    """A copy of the fixture; all but `v2` renamed (own distribution, package and ids)."""
    target = root / name
    shutil.copytree(source, target)
    renames: list[tuple[str, str]] = []
    if name != "v2":
        renames = [
            ("coro-acme-plugins", f"coro-{name}-plugins"),
            ("acme_plugins", f"{name}_plugins"),
            ("acme-tracker", f"{name}-tracker"),
            ("acme-echo", f"{name}-echo"),
        ]
    for relative, changes in edits.items():
        path = target / relative
        text = path.read_text()
        for old, new in changes:
            assert old in text, (name, relative, old)
            text = text.replace(old, new)
        path.write_text(text)
    for path in [p for p in target.rglob("*") if p.is_file()]:
        text = path.read_text()
        for old, new in renames:
            text = text.replace(old, new)
        path.write_text(text)
    if name != "v2":
        (target / "acme_plugins").rename(target / f"{name}_plugins")
    return target


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    """Wheels of the fixture and its variants: one offline `pip wheel` run."""
    root = tmp_path_factory.mktemp("plugin-src")
    good = root / "good"
    shutil.copytree(FIXTURE, good)  # never build inside the source tree
    sources = {"good": good}
    sources |= {name: _variant(FIXTURE, root, name, e) for name, e in VARIANTS.items()}
    out = tmp_path_factory.mktemp("wheels")
    # two runs: pip refuses two versions of one distribution in one resolution
    upgrade = sources.pop("v2")
    for batch in (list(sources.values()), [upgrade]):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--disable-pip-version-check",
                "-q",
                "-w",
                str(out),
                *(str(source) for source in batch),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    prefixes = {name: f"coro_{name}_plugins-0.1.0-" for name in VARIANTS}
    prefixes |= {"good": "coro_acme_plugins-0.1.0-", "v2": "coro_acme_plugins-0.2.0-"}
    built = {
        name: next(w for w in out.glob("*.whl") if w.name.startswith(prefix))
        for name, prefix in prefixes.items()
    }
    return Wheels(good=built.pop("good"), variants=built)


@pytest.fixture(autouse=True)
def offline_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip never reaches a package index in these tests."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")


def script_config(**extra: Any) -> CoroConfig:
    return CoroConfig.model_validate({"llm": {"defaultProvider": "script"}, **extra})


async def install(api: Api, wheel: Path) -> Any:
    return await api.client.post("/plugins/install", json={"path": str(wheel)})


async def listing(api: Api) -> dict[str, dict[str, Any]]:
    response = await api.client.get("/plugins")
    assert response.status_code == 200, response.text
    return {entry["id"]: entry for entry in response.json()["plugins"]}


async def get_issue_job(api: Api, key: str, **tool_input: Any) -> tuple[dict[str, Any], list[str]]:
    workflow = write_workflow(api.home, "issue", ONE_PHASE)
    script = {"work": [{"tool": "tracker_get_issue", "input": {"key": key, **tool_input}}]}
    job_id = await api.create(workflow, script)
    result = await api.finish(job_id)
    assert result.done == "complete"
    return await api.job(job_id), result.texts()


def tool_outputs(job: dict[str, Any]) -> list[str]:
    return [r["output"] for m in job["conversationHistory"] for r in m.get("toolResults", [])]


ACME_SLOT = {
    "plugins": {
        "installed": {
            "acme-tracker": {
                "config": {
                    "project": "ACME",
                    "token": TOKEN,
                    "issues": {"ACME-1": "Fix the widget"},
                }
            }
        },
        "defaults": {"tracker": "acme-tracker"},
    }
}


async def test_install_list_use_and_remove_a_drop_in(
    api_factory: ApiFactory, wheels: Wheels
) -> None:
    async with api_factory(script_config()) as api:
        before = await listing(api)
        installed = await install(api, wheels.good)
        after_install = await listing(api)
        configured = await api.client.put("/config", json=ACME_SLOT)
        job, _ = await get_issue_job(api, "ACME-1")
        in_use = await listing(api)
        removed = await api.client.delete("/plugins/acme-tracker")
        after_removal = await listing(api)
        job_after, texts_after = await get_issue_job(api, "ACME-1")
        health = await api.client.get("/health")
        site = api.home.plugins_dir / "site"

    assert "acme-tracker" not in before and before["github"]["source"] == "builtin"

    assert installed.status_code == 200, installed.text
    body = installed.json()
    assert body["installed"] == [{"name": "coro-acme-plugins", "version": "0.1.0"}]
    assert {p["id"] for p in body["plugins"]} == {"acme-tracker", "acme-echo"}
    assert all(p["loaded"] and not p["active"] and p["error"] is None for p in body["plugins"])

    tracker = after_install["acme-tracker"]
    assert tracker["source"] == "dropin" and tracker["builtin"] is False
    assert tracker["kind"] == "tracker" and tracker["version"] == "0.1.0"
    assert tracker["distribution"] == {"name": "coro-acme-plugins", "version": "0.1.0"}
    assert tracker["configSchema"]["required"] == ["project", "token"]
    assert tracker["webhook"]["header"] == "X-Acme-Signature"
    assert tracker["manifest"]["hostCompatibility"] == "^1.0.0"
    assert tracker["configured"] is False and "plugins.installed.acme-tracker" in tracker["hint"]
    assert after_install["acme-echo"]["kind"] == "executor"

    assert configured.status_code == 200, configured.text
    assert "acme-tracker" in configured.json()["reload"]["added"]
    assert any("[ACME] Fix the widget" in out for out in tool_outputs(job))
    assert in_use["acme-tracker"]["active"] is True
    assert in_use["acme-tracker"]["config"]["project"] == "ACME"
    assert TOKEN not in json.dumps(in_use)

    assert removed.status_code == 200, removed.text
    assert sorted(removed.json()["removed"]) == ["acme-echo", "acme-tracker"]
    assert "still has plugins.installed.acme-tracker" in removed.json()["hint"]
    assert "acme-tracker" not in after_removal and "acme-echo" not in after_removal
    assert not any(site.glob("acme_plugins*")) and not any(site.glob("coro_acme*"))
    errors = [t for t in texts_after if t.startswith("[tool-error] tracker_get_issue")]
    assert errors and "no plugin with this id is installed" in errors[0]
    assert not tool_outputs(job_after) or "[ACME]" not in " ".join(tool_outputs(job_after))
    assert health.status_code == 200


async def test_a_drop_in_executor_and_its_config_take_effect_without_restart(
    api_factory: ApiFactory, wheels: Wheels
) -> None:
    async with api_factory(script_config()) as api:
        assert (await install(api, wheels.good)).status_code == 200
        workflow = write_workflow(api.home, "echo", ONE_PHASE)
        first = await api.client.put(
            "/config",
            json={
                "llm": {"defaultProvider": "acme-echo"},
                "plugins": {"installed": {"acme-echo": {"config": {"prefix": "hello from"}}}},
            },
        )
        one = await api.finish(await api.create(workflow))
        second = await api.client.put(
            "/config", json={"plugins": {"installed": {"acme-echo": {"config": {"prefix": "now"}}}}}
        )
        two = await api.finish(await api.create(workflow))
        models = await api.client.get("/plugins/acme-echo/models")
        refused = await api.client.put(
            "/config", json={"plugins": {"installed": {"acme-echo": {"config": {"colour": 1}}}}}
        )
    assert first.status_code == 200, first.text
    assert "acme-echo" in first.json()["reload"]["added"]
    assert one.done == "complete" and "hello from work" in one.texts()
    assert second.json()["reload"]["updated"] == ["acme-echo"]
    assert two.done == "complete" and "now work" in two.texts()
    assert models.json()["models"][0]["id"] == "echo-1"
    assert refused.status_code == 400
    assert refused.json()["issues"][0]["path"] == "plugins.installed.acme-echo.config"


async def test_an_upgrade_replaces_the_installed_version(
    api_factory: ApiFactory, wheels: Wheels
) -> None:
    async with api_factory(script_config(**ACME_SLOT)) as api:
        await install(api, wheels.good)
        upgraded = await install(api, wheels.variants["v2"])
        plugins = await listing(api)
        job, _ = await get_issue_job(api, "ACME-1")
        site = api.home.plugins_dir / "site"
    assert upgraded.status_code == 200, upgraded.text
    assert upgraded.json()["installed"] == [{"name": "coro-acme-plugins", "version": "0.2.0"}]
    assert plugins["acme-tracker"]["version"] == "0.2.0"
    assert plugins["acme-tracker"]["active"] is True
    assert [p.name for p in site.glob("coro_acme_plugins-*.dist-info")] == [
        "coro_acme_plugins-0.2.0.dist-info"
    ]
    assert any("[ACME] Fix the widget" in out for out in tool_outputs(job))


def _pip_install_by_hand(site: Path, *wheels: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(site), *map(str, wheels)],
        check=True,
        capture_output=True,
        timeout=300,
    )


async def test_broken_plugins_are_reported_and_the_rest_keeps_working(
    api_factory: ApiFactory, wheels: Wheels, home: CoroHome
) -> None:
    # Already on disk when the runner starts (one good, two broken) ...
    on_disk = [wheels.good, wheels.variants["importerror"], wheels.variants["badmanifest"]]
    _pip_install_by_hand(home.plugins_dir / "site", *on_disk)
    async with api_factory(script_config(**ACME_SLOT)) as api:
        # ... and one more installed through the API
        answer = await install(api, wheels.variants["incompatible"])
        plugins = await listing(api)
        job, _ = await get_issue_job(api, "ACME-1")
        removed = await api.client.delete("/plugins/importerror-tracker")
        after = await listing(api)
        health = await api.client.get("/health")

    expected = {
        "importerror": "No module named 'acme_gone'",
        "badmanifest": "invalid manifest: version",
        "incompatible": "requires Coro plugin API '^9.0.0'; this runner provides 1.0.0",
    }
    assert answer.status_code == 422, answer.text
    assert answer.json()["ok"] is False
    assert expected["incompatible"] in answer.json()["error"]
    for name, fragment in expected.items():
        entry = plugins[f"{name}-tracker"]
        assert entry["loaded"] is False and entry["active"] is False
        assert fragment in entry["error"], entry["error"]
        assert entry["source"] == "dropin"
        # the healthy entry point of the same distribution is fine
        assert plugins[f"{name}-echo"]["loaded"] is True
        assert plugins[f"{name}-echo"]["error"] is None
    assert plugins["badmanifest-tracker"]["kind"] == "tracker"
    assert plugins["acme-tracker"]["active"] is True
    assert any("[ACME] Fix the widget" in out for out in tool_outputs(job))
    assert removed.status_code == 200
    assert "importerror-tracker" not in after and "incompatible-tracker" in after
    assert health.status_code == 200


async def test_a_running_phase_keeps_its_plugin_until_it_ends(
    api_factory: ApiFactory, wheels: Wheels, home: CoroHome
) -> None:
    _pip_install_by_hand(home.plugins_dir / "site", wheels.good)
    async with api_factory(script_config(**ACME_SLOT)) as api:
        workflow = write_workflow(api.home, "held", ONE_PHASE)
        get_issue = {"tool": "tracker_get_issue", "input": {"key": "ACME-1"}}
        wait_for_go = "while [ ! -f go ]; do sleep 0.05; done"
        held = await api.create(
            workflow,
            {"work": [{"tool": "shell", "input": {"command": wait_for_go}}, get_issue]},
        )
        await api.wait_for_line(held, "→ shell")
        old: Any = api.runner.plugins.get("tracker", "acme-tracker")  # an AcmeTracker
        assert old is not None
        changed = await api.client.put(
            "/config",
            json={"plugins": {"installed": {"acme-tracker": {"config": {"project": "NEW"}}}}},
        )
        closed_while_running = old.closed
        later = await api.create(workflow, {"work": [get_issue]})
        await api.finish(later)
        (api.home.root / "work" / held / "go").touch()
        await api.finish(held)
        await api.runner.dispatcher.wait_idle()
        new: Any = api.runner.plugins.get("tracker", "acme-tracker")
        assert new is not None
        old_closed, new_closed = old.closed, new.closed
        outputs = {job_id: tool_outputs(await api.job(job_id)) for job_id in (held, later)}
    assert changed.json()["reload"]["updated"] == ["acme-tracker"]
    assert closed_while_running is False
    assert any("[NEW] Fix the widget" in out for out in outputs[later])
    assert any("[ACME] Fix the widget" in out for out in outputs[held])  # its phase's plugin
    assert old_closed is True and new is not old and new_closed is False


async def test_install_failures_are_clear_and_leave_nothing_behind(
    api_factory: ApiFactory, wheels: Wheels, tmp_path: Path
) -> None:
    async with api_factory(script_config()) as api:
        not_a_plugin = await install(api, wheels.variants["notaplugin"])
        unknown = await api.client.post(
            "/plugins/install", json={"package": "coro-no-such-plugin-xyz"}
        )
        missing = await api.client.post(
            "/plugins/install", json={"path": str(tmp_path / "nope.whl")}
        )
        option = await api.client.post("/plugins/install", json={"spec": "--index-url=x"})
        both = await api.client.post("/plugins/install", json={"spec": "a", "path": "b"})
        builtin = await api.client.delete("/plugins/github")
        absent = await api.client.delete("/plugins/acme-tracker")
        bad_id = await api.client.delete("/plugins/..%2Fetc")
        plugins = await listing(api)
        site = api.home.plugins_dir / "site"
    assert not_a_plugin.status_code == 422
    assert "declares no 'coro.plugins' entry point" in not_a_plugin.json()["error"]
    assert not any(site.glob("notaplugin*")) and not any(site.glob("coro_notaplugin*"))
    assert unknown.status_code == 422
    assert unknown.json()["error"].startswith("pip install failed (exit 1): ERROR:")
    assert "coro-no-such-plugin-xyz" in unknown.json()["output"]
    assert missing.status_code == 400 and "No such file" in missing.json()["error"]
    assert option.status_code == 422
    assert both.status_code == 400
    assert builtin.status_code == 409 and "built in" in builtin.json()["error"]
    assert absent.status_code == 404
    assert bad_id.status_code in (400, 404)
    assert {p["source"] for p in plugins.values()} == {"builtin"}


def _cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"CORO_URL": url, "COLUMNS": "200"})


async def test_the_cli_lists_installs_and_removes(api: Api, wheels: Wheels) -> None:
    url = api.served.url
    installed = await asyncio.to_thread(_cli, url, "plugin", "install", str(wheels.good))
    listed = await asyncio.to_thread(_cli, url, "plugin", "list")
    as_json = await asyncio.to_thread(_cli, url, "plugin", "list", "--json")
    broken = await asyncio.to_thread(
        _cli, url, "plugin", "install", str(wheels.variants["incompatible"])
    )
    removed = await asyncio.to_thread(_cli, url, "plugin", "remove", "acme-echo")
    builtin = await asyncio.to_thread(_cli, url, "plugin", "remove", "github")
    assert installed.exit_code == 0, installed.output
    assert "Installed coro-acme-plugins 0.1.0" in installed.output
    assert "acme-tracker (tracker) not configured" in installed.output
    assert listed.exit_code == 0 and "acme-echo" in listed.output and "dropin" in listed.output
    ids = {p["id"] for p in json.loads(as_json.stdout)["plugins"]}
    assert {"acme-tracker", "acme-echo", "github", "script"} <= ids
    assert broken.exit_code == 1 and "requires Coro plugin API" in broken.output
    assert removed.exit_code == 0 and "Removed acme-echo, acme-tracker" in removed.output
    assert builtin.exit_code == 1 and "built in" in builtin.output


def test_host_compatibility_ranges() -> None:
    def ok(spec: str, host: str = "1.0.0") -> bool:
        return host in host_specifier(spec)

    assert ok("^1.0.0") and ok("^1.0.0", "1.9.3") and not ok("^1.0.0", "2.0.0")
    assert ok("~1.0.0", "1.0.7") and not ok("~1.0.0", "1.1.0")
    assert ok("^0.3.1", "0.3.9") and not ok("^0.3.1", "0.4.0")
    assert ok("*") and ok("") and ok("1.0.0") and not ok("1.0.1")
    assert ok(">=1.0,<2") and not ok(">=1.1")
    with pytest.raises(ValueError, match="not a version range"):
        host_specifier("one point oh")
    manifest = PluginManifest.model_validate(
        {
            "id": "x",
            "kind": "scm",
            "version": "1.0.0",
            "displayName": "X",
            "hostCompatibility": "^1.0.0",
            "configSchema": {
                "type": "object",
                "properties": {"apiKey": {"anyOf": [{"type": "string", "writeOnly": True}]}},
            },
        }
    )
    assert manifest.secret_keys() == {"apiKey"}
    assert manifest.is_compatible()
