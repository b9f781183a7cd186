"""Executor diagnostics over HTTP: models, health checks, `/test/llm`."""

from __future__ import annotations

from coro.config import CoroConfig
from tests.conftest import Api, ApiFactory


async def test_models_and_healthcheck_of_a_loaded_executor(api: Api) -> None:
    models = await api.client.get("/plugins/script/models")
    assert models.status_code == 200
    assert models.json()["models"][0]["id"] == "script"
    health = await api.client.post("/plugins/script/healthcheck")
    assert health.status_code == 200
    assert health.json()["ok"] is True


async def test_unknown_plugins_are_404(api: Api) -> None:
    assert (await api.client.get("/plugins/nope/models")).status_code == 404
    assert (await api.client.post("/plugins/nope/healthcheck", json={})).status_code == 404
    draft = await api.client.post("/plugins/nope/healthcheck", json={"config": {}})
    assert draft.status_code == 404


async def test_llm_uses_the_default_provider(api: Api) -> None:
    response = await api.client.post("/test/llm", json={})
    body = response.json()
    assert body["ok"] is True
    assert body["details"]["pluginId"] == "script"


async def test_llm_without_any_provider_says_what_to_configure(api_factory: ApiFactory) -> None:
    async with api_factory(CoroConfig()) as api:
        body = (await api.client.post("/test/llm")).json()
    assert body["ok"] is False
    assert "llm.defaultProvider" in body["message"]
