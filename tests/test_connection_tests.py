"""`POST /test/git` and `POST /test/tracker`: real requests through the configured plugin."""

from __future__ import annotations

from typing import Any

from coro.config import CoroConfig
from tests.conftest import ApiFactory
from tests.fakes.github_server import FakeGitHub
from tests.fakes.jira_server import FakeJira


def config_with(installed: dict[str, Any], **defaults: str) -> CoroConfig:
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "plugins": {
                "installed": {k: {"config": v} for k, v in installed.items()},
                "defaults": defaults,
            },
        }
    )


async def test_git_connection_through_the_configured_github(api_factory: ApiFactory) -> None:
    async with FakeGitHub() as github:
        settings = {"token": github.token, "baseUrl": github.base_url}
        async with api_factory(config_with({"github": settings})) as api:
            ok = (await api.client.post("/test/git", json={})).json()
            wrong = "ghp_" + "W" * 36
            draft = await api.client.post(
                "/test/git",
                json={"pluginId": "github", "config": {**settings, "token": wrong}},
            )
    assert ok["ok"] is True
    assert ok["details"]["pluginId"] == "github"
    assert "coro-bot" in ok["message"]
    body = draft.json()
    assert body["ok"] is False
    assert wrong not in draft.text
    assert github.token not in draft.text


async def test_tracker_connection_through_the_configured_jira(api_factory: ApiFactory) -> None:
    async with FakeJira() as jira:
        settings = {"baseUrl": jira.base_url, "email": jira.email, "apiToken": jira.api_token}
        async with api_factory(config_with({"jira": settings})) as api:
            ok = (await api.client.post("/test/tracker")).json()
            bad = (
                await api.client.post(
                    "/test/tracker",
                    json={"pluginId": "jira", "config": {**settings, "apiToken": "not-it"}},
                )
            ).json()
    assert ok["ok"] is True
    assert "Dev Example" in ok["message"]
    assert bad["ok"] is False
    assert "not-it" not in str(bad)


async def test_resolution_errors_say_what_to_configure(api_factory: ApiFactory) -> None:
    async with FakeGitHub() as github:
        gh = {"token": github.token, "baseUrl": github.base_url}
        bb = {"workspace": "team", "username": "bot", "appPassword": "app-password-123"}
        async with api_factory(config_with({})) as api:
            none = (await api.client.post("/test/git")).json()
        async with api_factory(config_with({"github": gh, "bitbucket": bb})) as api:
            two = (await api.client.post("/test/git")).json()
            named = (await api.client.post("/test/git", json={"pluginId": "github"})).json()
            unknown = await api.client.post("/test/git", json={"pluginId": "gitlab", "config": {}})
            missing_id = await api.client.post("/test/git", json={"config": gh})
        async with api_factory(config_with({"github": gh, "bitbucket": bb}, scm="github")) as api:
            defaulted = (await api.client.post("/test/git")).json()
    # With no forge configured, the offline local SCM is the one tested.
    assert none["details"]["pluginId"] == "local"
    assert two["ok"] is False and "bitbucket, github" in two["message"]
    assert "plugins.defaults.scm" in two["message"]
    assert named["ok"] is True
    assert defaulted["ok"] is True and defaulted["details"]["pluginId"] == "github"
    assert unknown.status_code == 400 and "gitlab" in unknown.json()["error"]
    assert missing_id.status_code == 400
