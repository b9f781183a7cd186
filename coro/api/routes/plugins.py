"""Plugin diagnostics: model catalogues, health checks, and the connection tests
`POST /test/llm`, `POST /test/git`, `POST /test/tracker`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body

from coro.api.deps import RunnerDep
from coro.api.schemas import HealthcheckBody, TestConnectionBody, TestLlmBody
from coro.engine.service import InvalidRequest
from coro.executors import (
    Executor,
    Health,
    PluginConfigError,
    PluginNotFound,
    close_executor,
    create_executor,
)
from coro.plugins.context import PluginContext
from coro.plugins.errors import PluginError
from coro.plugins.registry import (
    KIND_NAMES,
    PluginKind,
    PluginResolutionError,
    create_plugin,
)

router = APIRouter(tags=["plugins"])


def _executor(runner: Any, plugin_id: str, draft: dict[str, Any] | None) -> Executor:
    """The running executor, or one built from a draft config (to test before saving)."""
    if draft is not None:
        try:
            return create_executor(plugin_id, draft)
        except PluginConfigError as exc:
            raise InvalidRequest(f"Invalid config for {plugin_id}: {exc}") from exc
    executor: Executor | None = runner.env.executors.get(plugin_id)
    if executor is None:
        failure = runner.env.executors.failed.get(plugin_id)
        if failure:
            raise InvalidRequest(f"Plugin {plugin_id} is not loaded: {failure}")
        raise PluginNotFound(plugin_id)
    return executor


@router.get("/plugins/{plugin_id}/models")
async def plugin_models(runner: RunnerDep, plugin_id: str) -> dict[str, Any]:
    models = await _executor(runner, plugin_id, None).models()
    return {
        "models": [
            {
                "id": m.id,
                "displayName": m.display_name,
                "contextWindow": m.context_window,
                "pricing": m.pricing,
            }
            for m in models
        ]
    }


async def _check(runner: Any, plugin_id: str, draft: dict[str, Any] | None) -> Health:
    executor = _executor(runner, plugin_id, draft)
    try:
        return await executor.healthcheck()
    finally:
        if draft is not None:  # a throwaway built from the draft config
            await close_executor(executor)


@router.post("/plugins/{plugin_id}/healthcheck")
async def plugin_healthcheck(
    runner: RunnerDep,
    plugin_id: str,
    body: Annotated[HealthcheckBody | None, Body()] = None,
) -> dict[str, Any]:
    health = await _check(runner, plugin_id, body.config if body else None)
    return {"ok": health.ok, "message": health.message, "latencyMs": round(health.latency_ms)}


@router.post("/test/llm")
async def test_llm(
    runner: RunnerDep, body: Annotated[TestLlmBody | None, Body()] = None
) -> dict[str, Any]:
    body = body or TestLlmBody()
    plugin_id = body.plugin_id or runner.config.llm.default_provider
    if plugin_id is None:
        return {
            "ok": False,
            "message": "No LLM provider is configured: set llm.defaultProvider.",
            "details": {},
        }
    health = await _check(runner, plugin_id, body.config)
    return {
        "ok": health.ok,
        "message": health.message,
        "details": {"pluginId": plugin_id, **asdict(health)},
    }


async def _test_connection(
    runner: Any, kind: PluginKind, body: TestConnectionBody
) -> dict[str, Any]:
    """A real request through the default (or named, or draft-configured) plugin."""
    if body.config is not None:
        if body.plugin_id is None:
            raise InvalidRequest("pluginId is required with a draft config")
        try:
            plugin = create_plugin(kind, body.plugin_id, body.config, PluginContext(runner.home))
        except PluginConfigError as exc:
            raise InvalidRequest(f"Invalid config for {body.plugin_id}: {exc}") from exc
        except PluginResolutionError as exc:
            raise InvalidRequest(str(exc)) from exc
        try:
            check = await plugin.test_connection()
        finally:
            await plugin.aclose()
    else:
        try:
            plugin = runner.plugins.resolve(kind, body.plugin_id)
        except PluginResolutionError as exc:
            return {"ok": False, "message": str(exc), "details": {}}
        try:
            check = await plugin.test_connection()
        except PluginError as exc:  # the plugin's message is safe to show
            return {"ok": False, "message": str(exc), "details": {"pluginId": plugin.id}}
    return {
        "ok": check.ok,
        "message": check.message,
        "details": {"pluginId": plugin.id, "kind": KIND_NAMES[kind], **check.details},
    }


@router.post("/test/git")
async def test_git(
    runner: RunnerDep, body: Annotated[TestConnectionBody | None, Body()] = None
) -> dict[str, Any]:
    return await _test_connection(runner, "scm", body or TestConnectionBody())


@router.post("/test/tracker")
async def test_tracker(
    runner: RunnerDep, body: Annotated[TestConnectionBody | None, Body()] = None
) -> dict[str, Any]:
    return await _test_connection(runner, "tracker", body or TestConnectionBody())
