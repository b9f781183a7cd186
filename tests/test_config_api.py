"""`GET /config` and `PUT /config`: secrets never shown, masked values mean "unchanged",
invalid configs refused with their paths (file untouched), valid ones hot-reloaded."""

from __future__ import annotations

import json
import stat
from typing import Any

import pytest

from coro.config import CoroConfig, apply_config_patch, mask_config, merge_config
from tests.conftest import Api, ApiFactory, write_workflow
from tests.fakes.anthropic_server import FakeAnthropic, text
from tests.fakes.jira_server import FakeJira
from tests.pg import fresh_database

ONE_PHASE = [{"name": "work", "agent": None, "status": "working"}]

SECRETS = {
    "apiToken": "runner-api-token-0123456789abcdef",
    "github": "ghp_" + "G1thubT0ken" * 3,
    "bitbucket": "ATBB" + "b1tbuck3tPassw0rd" * 2,
    "jira": "jira-api-token-" + "j1r4" * 6,
    "anthropic": "sk-ant-api03-" + "4nthr0p1c" * 5,
    "env": "mcp-env-secret-" + "e" * 20,
    "header": "Bearer mcp-header-secret-" + "h" * 20,
    "short": "tiny-pw",
}


def secret_config() -> dict[str, Any]:
    return {
        "apiToken": SECRETS["apiToken"],
        "llm": {"defaultProvider": "script"},
        "plugins": {
            "installed": {
                "github": {"config": {"token": SECRETS["github"], "owner": "acme"}},
                "bitbucket": {
                    "enabled": False,
                    "config": {
                        "username": "coder@example.com",
                        "appPassword": SECRETS["bitbucket"],
                        "workspace": "acme",
                    },
                },
                "jira": {
                    "config": {
                        "baseUrl": "https://acme.atlassian.net",
                        "email": "dev@example.com",
                        "apiToken": SECRETS["jira"],
                    }
                },
                "anthropic": {"config": {"apiKey": SECRETS["anthropic"]}},
            },
            "defaults": {"scm": "github"},
        },
        "mcpServers": {
            "tools": {
                "type": "stdio",
                "command": "mcp-tools",
                "env": {"TOOLS_TOKEN": SECRETS["env"], "PLAIN": SECRETS["short"]},
                "enabled": False,
            },
            "remote": {
                "type": "http",
                "url": "https://mcp.example.com/mcp",
                "headers": {"Authorization": SECRETS["header"]},
                "enabled": False,
            },
        },
    }


def assert_no_secret(body: str) -> None:
    for name, secret in SECRETS.items():
        assert secret not in body, f"{name} leaked"
        if len(secret) >= 12:
            assert secret[4:-4] not in body, f"the middle of {name} leaked"


def headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS['apiToken']}"}


async def test_get_config_never_reveals_a_secret(api_factory: ApiFactory) -> None:
    async with api_factory(CoroConfig.model_validate(secret_config())) as api:
        response = await api.client.get("/config", headers=headers())
        plugins = await api.client.get("/plugins", headers=headers())
    assert response.status_code == 200
    assert_no_secret(response.text)
    assert_no_secret(plugins.text)
    body = response.json()
    config = body["config"]
    assert body["configPath"] == str(api.home.config_file)
    assert config["apiToken"] == "runn...cdef"
    github = config["plugins"]["installed"]["github"]["config"]
    assert github == {**github, "token": "ghp_...0ken", "owner": "acme"}
    assert config["plugins"]["installed"]["bitbucket"]["config"]["appPassword"] == "ATBB...w0rd"
    assert config["mcpServers"]["tools"]["env"] == {"TOOLS_TOKEN": "mcp-...eeee", "PLAIN": "***"}
    assert config["mcpServers"]["remote"]["headers"]["Authorization"] == "Bear...hhhh"
    assert config["llm"]["defaultProvider"] == "script"  # the rest as stored
    assert config["jobs"]["maxConcurrent"] == 4  # defaults filled in


async def test_put_of_masked_values_keeps_the_stored_secrets(api_factory: ApiFactory) -> None:
    async with api_factory(CoroConfig.model_validate(secret_config())) as api:
        shown = (await api.client.get("/config", headers=headers())).json()["config"]
        shown["jobs"]["maxConcurrent"] = 7
        shown["plugins"]["installed"]["github"]["config"]["owner"] = "acme-two"
        whole = await api.client.put("/config", json=shown, headers=headers())
        partial = await api.client.put(
            "/config",
            json={"plugins": {"installed": {"jira": {"config": {"apiToken": "jira...j1r4"}}}}},
            headers=headers(),
        )
        rotated = await api.client.put(
            "/config",
            json={
                "plugins": {"installed": {"anthropic": {"config": {"apiKey": "sk-ant-new-key"}}}}
            },
            headers=headers(),
        )
        stale = await api.client.put(
            "/config",
            json={"plugins": {"installed": {"github": {"config": {"token": "ghp_...zzzz"}}}}},
            headers=headers(),
        )
        running = api.runner.config
    assert whole.status_code == 200, whole.text
    assert partial.status_code == 200, partial.text
    assert rotated.status_code == 200, rotated.text
    assert_no_secret(whole.text + partial.text + rotated.text)
    on_disk = json.loads(api.home.config_file.read_text())
    assert stat.S_IMODE(api.home.config_file.stat().st_mode) == 0o600
    installed = on_disk["plugins"]["installed"]
    assert on_disk["apiToken"] == SECRETS["apiToken"]
    assert installed["github"]["config"] == {
        **installed["github"]["config"],
        "token": SECRETS["github"],
        "owner": "acme-two",
    }
    assert installed["bitbucket"]["config"]["appPassword"] == SECRETS["bitbucket"]
    assert installed["jira"]["config"]["apiToken"] == SECRETS["jira"]
    assert installed["anthropic"]["config"]["apiKey"] == "sk-ant-new-key"
    assert on_disk["mcpServers"]["tools"]["env"]["TOOLS_TOKEN"] == SECRETS["env"]
    assert on_disk["mcpServers"]["tools"]["env"]["PLAIN"] == SECRETS["short"]
    assert on_disk["mcpServers"]["remote"]["headers"]["Authorization"] == SECRETS["header"]
    assert on_disk["jobs"]["maxConcurrent"] == 7
    assert running.jobs.max_concurrent == 7  # taken over without a restart
    # a mask that matches nothing stored would overwrite the token with its mask
    assert stale.status_code == 400
    assert stale.json()["issues"] == [
        {
            "path": "plugins.installed.github.config.token",
            "message": "looks like a masked secret but matches no stored value: "
            "send the real value",
        }
    ]


async def test_an_invalid_config_is_refused_and_the_file_is_untouched(
    api_factory: ApiFactory,
) -> None:
    async with api_factory(CoroConfig.model_validate(secret_config())) as api:
        before = api.home.config_file.read_bytes()
        invalid = await api.client.put(
            "/config",
            json={
                "jobs": {"maxConcurrent": 0},
                "colour": "blue",
                "plugins": {"installed": {"github": {"config": {"token": "x y"}}}},
                "mcpServers": {"coro": {"command": "x"}},
            },
            headers=headers(),
        )
        not_an_object = await api.client.put("/config", json=[1, 2], headers=headers())
        malformed = await api.client.put(
            "/config",
            content=b"{nope",
            headers={**headers(), "Content-Type": "application/json"},
        )
        after = api.home.config_file.read_bytes()
        still = (await api.client.get("/config", headers=headers())).json()["config"]
    assert invalid.status_code == 400
    body = invalid.json()
    assert body["error"] == "Invalid configuration"
    paths = {issue["path"] for issue in body["issues"]}
    assert paths == {"jobs.maxConcurrent", "colour", "mcpServers"}
    assert_no_secret(invalid.text)
    assert not_an_object.status_code == 400
    assert malformed.status_code == 400
    assert after == before
    assert still["jobs"]["maxConcurrent"] == 4


async def test_plugin_settings_are_validated_by_their_plugin(api: Api) -> None:
    before = api.home.config_file.read_bytes()
    response = await api.client.put(
        "/config",
        json={
            "plugins": {
                "installed": {
                    "github": {"config": {"token": "x y", "mergeMethod": "yolo"}},
                    "bitbucket": {"config": {"workspace": "acme"}},
                }
            }
        },
    )
    assert response.status_code == 400
    paths = {issue["path"] for issue in response.json()["issues"]}
    assert paths == {
        "plugins.installed.github.config.token",
        "plugins.installed.github.config.mergeMethod",
        "plugins.installed.bitbucket.config",
    }
    assert api.home.config_file.read_bytes() == before


async def test_a_valid_put_takes_effect_for_the_next_job(api_factory: ApiFactory) -> None:
    key = "sk-ant-test-" + "k" * 40
    async with FakeJira() as jira, FakeAnthropic(api_key=key) as fake:
        jira.add_issue("PROJ-3", "Hot reloaded")
        fake.queue(text("Answer from the provider"))
        config = CoroConfig.model_validate(
            {
                "llm": {"defaultProvider": "script"},
                "plugins": {
                    "installed": {
                        "anthropic": {"config": {"apiKey": key, "baseUrl": fake.base_url}}
                    }
                },
            }
        )
        async with api_factory(config) as api:
            workflow = write_workflow(api.home, "ticket", [{**ONE_PHASE[0], "provider": "script"}])
            by_default = write_workflow(api.home, "default", ONE_PHASE)
            script = {"work": [{"tool": "tracker_get_issue", "input": {"key": "PROJ-3"}}]}
            before = await api.finish(await api.create(workflow, script))
            added = await api.client.put(
                "/config",
                json={
                    "plugins": {
                        "installed": {
                            "jira": {
                                "config": {
                                    "baseUrl": jira.base_url,
                                    "email": jira.email,
                                    "apiToken": jira.api_token,
                                }
                            }
                        }
                    }
                },
            )
            after = await api.finish(await api.create(workflow, script))
            switched = await api.client.put(
                "/config", json={"llm": {"defaultProvider": "anthropic"}}
            )
            llm = await api.finish(await api.create(by_default))
            removed = await api.client.put(
                "/config", json={"plugins": {"installed": {"jira": None}}}
            )
            gone = await api.finish(await api.create(workflow, script))
    assert any("No tracker plugin is configured" in t for t in before.texts())
    assert added.status_code == 200, added.text
    reload = added.json()["reload"]
    assert reload["added"] == ["jira"] and reload["failed"] == []
    assert reload["restartRequired"] == []
    assert not [t for t in after.texts() if t.startswith("[tool-error]")]
    assert any("provider=script" in t for t in after.texts())
    assert switched.status_code == 200
    assert llm.done == "complete"
    assert any("provider=anthropic" in t for t in llm.texts())
    assert "Answer from the provider" in llm.texts()
    assert removed.json()["reload"]["removed"] == ["jira"]
    assert any("No tracker plugin is configured" in t for t in gone.texts())


async def test_restart_only_settings_are_named(api: Api) -> None:
    response = await api.client.put("/config", json={"port": 3999})
    assert response.status_code == 200
    assert response.json()["reload"]["restartRequired"] == ["port"]


async def test_a_broken_file_is_reported_and_a_put_repairs_it(api: Api) -> None:
    api.home.config_file.write_text("{oops")
    shown = await api.client.get("/config")
    repaired = await api.client.put("/config", json={"jobs": {"maxConcurrent": 3}})
    on_disk = json.loads(api.home.config_file.read_text())
    assert shown.status_code == 200
    assert "invalid JSON at line 1" in shown.json()["configError"]
    assert shown.json()["config"]["llm"]["defaultProvider"] == "script"  # what runs
    assert repaired.status_code == 200, repaired.text
    assert on_disk["jobs"]["maxConcurrent"] == 3
    assert on_disk["llm"]["defaultProvider"] == "script"


# --- the merge and masking helpers ------------------------------------------------------


def test_merge_is_section_aware() -> None:
    stored = {
        "llm": {"defaultProvider": "a", "aliases": {"x": {"provider": "a", "model": "m"}}},
        "mcpServers": {"s": {"type": "stdio", "command": "c", "env": {"K": "v"}}},
        "plugins": {"installed": {"p": {"config": {"a": 1, "b": 2}}}},
        "jobs": {"maxConcurrent": 2},
    }
    patch = {
        "llm": {"aliases": {"x": {"provider": "b", "model": "n"}}},
        "mcpServers": {"s": {"type": "http", "url": "https://h/mcp"}},
        "plugins": {"installed": {"p": {"config": {"b": None, "c": 3}}}},
        "jobs": None,
    }
    merged = merge_config(stored, patch)
    assert merged == {
        "llm": {"defaultProvider": "a", "aliases": {"x": {"provider": "b", "model": "n"}}},
        "mcpServers": {"s": {"type": "http", "url": "https://h/mcp"}},
        "plugins": {"installed": {"p": {"config": {"a": 1, "c": 3}}}},
    }
    assert stored["jobs"] == {"maxConcurrent": 2}  # the input is not modified


@pytest.mark.parametrize(
    ("stored", "shown"),
    [("0123456789abcdef", "0123...cdef"), ("short", "***"), ("", "")],
)
def test_masks_and_their_round_trip(stored: str, shown: str) -> None:
    data = {"plugins": {"installed": {"p": {"config": {"secretish": stored, "other": 5}}}}}
    masked = mask_config(data, {"p": {"secretish"}})
    assert masked["plugins"]["installed"]["p"]["config"] == {"secretish": shown, "other": 5}
    merged, issues = apply_config_patch(data, masked, {"p": {"secretish"}})
    assert merged == data and issues == []


async def test_the_state_url_is_shown_and_kept_without_its_password(
    api_factory: ApiFactory,
) -> None:
    password = "pg-" + "s3cr3t" * 4
    async with fresh_database() as url:
        secret_url = url.replace("postgres@", f"postgres:{password}@")
        config = CoroConfig.model_validate(
            {"llm": {"defaultProvider": "script"}, "state": {"url": secret_url}}
        )
        async with api_factory(config) as api:
            got = await api.client.get("/config")
            shown = got.json()["config"]["state"]["url"]
            kept = await api.client.put(
                "/config", json={"state": {"url": shown}, "jobs": {"maxConcurrent": 3}}
            )
            elsewhere = await api.client.put(
                "/config", json={"state": {"url": shown.replace("127.0.0.1", "db.example")}}
            )
        on_disk = json.loads(api.home.config_file.read_text())
    assert password not in got.text + kept.text + elsewhere.text
    assert shown == url.replace("postgres@", "postgres:pg-s...cr3t@")  # the rest readable
    assert kept.status_code == 200, kept.text
    assert on_disk["state"]["url"] == secret_url
    assert on_disk["jobs"]["maxConcurrent"] == 3
    # a masked password sent with another URL would be saved as the password
    assert elsewhere.status_code == 400
    assert [issue["path"] for issue in elsewhere.json()["issues"]] == ["state.url"]


async def test_a_rotated_api_token_is_enforced_at_once(api_factory: ApiFactory) -> None:
    old, new = "old-token-" + "o" * 24, "new-token-" + "n" * 24
    config = CoroConfig.model_validate({"llm": {"defaultProvider": "script"}, "apiToken": old})
    async with api_factory(config) as api:
        before = await api.client.get("/jobs", headers={"Authorization": f"Bearer {old}"})
        rotated = await api.client.put(
            "/config", json={"apiToken": new}, headers={"Authorization": f"Bearer {old}"}
        )
        with_old = await api.client.get("/jobs", headers={"Authorization": f"Bearer {old}"})
        with_new = await api.client.get("/jobs", headers={"Authorization": f"Bearer {new}"})
    assert before.status_code == 200
    assert rotated.status_code == 200, rotated.text
    assert new not in rotated.text and old not in rotated.text
    assert with_old.status_code == 401
    assert with_new.status_code == 200


async def test_a_public_runner_cannot_drop_its_api_token(home: Any) -> None:
    import httpx

    from coro.api.server import serve
    from coro.runner import Runner

    token = "public-token-" + "p" * 24
    config = CoroConfig.model_validate({"llm": {"defaultProvider": "script"}, "apiToken": token})
    home.save_config(config)
    async with (
        serve(Runner(home, config), "0.0.0.0", 0) as served,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client,
    ):
        refused = await client.put(
            "/config", json={"apiToken": None}, headers={"Authorization": f"Bearer {token}"}
        )
    assert refused.status_code == 400
    assert [i["path"] for i in refused.json()["issues"]] == ["apiToken"]
    assert json.loads(home.config_file.read_text())["apiToken"] == token
