"""Plugins: the installed ones (`GET /plugins`), drop-in install and removal
(`POST /plugins/install`, `DELETE /plugins/{id}`), model catalogues, health checks, and
the connection tests `POST /test/llm`, `POST /test/git`, `POST /test/tracker`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from coro.api.deps import RunnerDep
from coro.api.errors import errors
from coro.api.schemas import HealthcheckBody, TestConnectionBody, TestLlmBody
from coro.config import mask_config
from coro.domain.errors import PluginConfigError, PluginError
from coro.engine.service import Conflict, InvalidRequest
from coro.executors import Executor, Health, PluginNotFound, close_executor
from coro.extensions import EXECUTOR, SCM, TRACKER
from coro.plugins.dropins import InstallError, PluginEntry
from coro.plugins.manifest import HOST_API_VERSION, PLUGIN_ID_PATTERN, PluginLoadError
from coro.plugins.registry import PluginKind, PluginResolutionError, create_plugin
from coro.plugins.scm.base import ScmPlugin
from coro.plugins.trackers.base import TrackerPlugin

router = APIRouter(tags=["plugins"])

PluginId = Annotated[str, PathParam(pattern=PLUGIN_ID_PATTERN, max_length=64)]


class InstallBody(BaseModel):
    """One of `spec`/`package` (a pip requirement, wheel or directory) or `path`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    spec: str | None = Field(default=None, min_length=1, max_length=2000)
    package: str | None = Field(default=None, min_length=1, max_length=2000)
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    #: the plugin id the package must provide (checked after the install)
    id: str | None = Field(default=None, pattern=PLUGIN_ID_PATTERN)


def secret_keys(runner: Any) -> dict[str, set[str]]:
    """Plugin id -> config keys its manifest's schema marks secret."""
    keys: dict[str, set[str]] = {}
    for entry in runner.catalog.entries:
        if entry.manifest is not None:
            keys.setdefault(entry.id, entry.manifest.secret_keys())
    return keys


def _entry(runner: Any, plugin: PluginEntry, masked: dict[str, Any]) -> dict[str, Any]:
    plugin_id, manifest = plugin.id, plugin.manifest
    dropin = plugin if plugin.source == "dropin" else None
    slot = runner.config.plugins.installed.get(plugin_id)
    tools = runner.tool_plugins
    active = (
        plugin_id in runner.plugins.instances()
        or runner.env.executors.get(plugin_id)
        or (tools is not None and tools.get(plugin_id) is not None)
        or plugin_id in runner.extensions.chosen.values()
        or plugin_id in runner.notifications.kinds()  # a notifier: a channel uses it
    )
    error = (
        plugin.error
        or runner.plugins.failed.get(plugin_id)
        or runner.env.executors.failed.get(plugin_id)
        or (tools.failed.get(plugin_id) if tools is not None else None)
    )
    enabled = slot.enabled if slot is not None else plugin.enabled_by_default
    slot_json = masked.get("plugins", {}).get("installed", {}).get(plugin_id)
    hint = None
    if manifest is not None and manifest.kind == "notifier":
        hint = "Its channels are in config.json's notifications (GET /notifications)."
    elif slot is None and not active and error is None:
        hint = f"Installed. Add plugins.installed.{plugin_id} (PUT /config) to use it in jobs."
    entry: dict[str, Any] = {
        "id": plugin_id,
        "kind": manifest.kind if manifest else plugin.kind,
        "version": manifest.version if manifest else None,
        "displayName": manifest.display_name if manifest else plugin_id,
        "description": manifest.description if manifest else "",
        "source": plugin.source,
        "builtin": plugin.builtin,
        "configured": slot is not None,
        "enabled": enabled,
        # its code imported and its manifest accepted
        "loaded": plugin.loaded,
        # an instance exists: jobs can use it
        "active": bool(active),
        "error": error,
        "hostCompatibility": manifest.host_compatibility if manifest else None,
        "capabilities": manifest.capabilities if manifest else {},
        "configSchema": manifest.config_schema if manifest else None,
        "webhook": manifest.to_json().get("webhook") if manifest else None,
        "config": slot_json.get("config") if isinstance(slot_json, dict) else None,
        "manifest": manifest.to_json() if manifest else None,
        "hint": hint,
    }
    if dropin is not None:
        entry["distribution"] = {"name": dropin.distribution, "version": dropin.dist_version}
        entry["entryPoint"] = dropin.entry_point
    return entry


def plugin_entries(runner: Any, only: list[PluginEntry] | None = None) -> list[dict[str, Any]]:
    """`GET /plugins` entries: every plugin of the catalog, built-in or drop-in (or just
    `only`)."""
    masked = mask_config(runner.config.to_json(), secret_keys(runner))
    return [_entry(runner, e, masked) for e in (runner.catalog.entries if only is None else only)]


@router.get("/plugins")
async def list_plugins(runner: RunnerDep) -> dict[str, Any]:
    return {
        "plugins": plugin_entries(runner),
        "defaults": dict(runner.config.plugins.defaults),
        "hostApiVersion": HOST_API_VERSION,
        "pluginsDir": str(runner.catalog.site),
    }


def _local_path(raw: str) -> str:
    """A local wheel or project directory, absolute (pip reads it, not the client)."""
    local = Path(raw).expanduser()
    if not local.exists():
        raise InvalidRequest(f"No such file or directory: {raw}")
    return str(local.resolve())


# 422: pip failed (`output`), or the package did not provide a loadable plugin
@router.post("/plugins/install", response_model=None, responses=errors(422))
async def install_plugin(runner: RunnerDep, body: InstallBody) -> dict[str, Any] | JSONResponse:
    """pip-install a drop-in into `$CORO_HOME/plugins/site` and load it without a restart."""
    given = [v for v in (body.spec, body.package, body.path) if v is not None]
    if len(given) != 1:
        raise InvalidRequest("Give exactly one of: spec, package, path")
    spec = given[0] if body.path is None else _local_path(body.path)
    async with runner.config_lock:
        try:
            outcome = await runner.catalog.install(spec)
        except InstallError as exc:
            return JSONResponse({"error": str(exc), "output": exc.output}, status_code=422)
        reload = await runner.reload_config(runner.config)
    installed = [{"name": n, "version": v} for n, v in outcome.distributions]
    result: dict[str, Any] = {
        "ok": True,
        "installed": installed,
        "plugins": plugin_entries(runner, outcome.plugins),
        "reload": reload.to_json(),
    }
    ids = [p.id for p in outcome.plugins]
    broken = [p for p in outcome.plugins if not p.loaded]
    if body.id is not None and body.id not in ids:
        result.update(ok=False, error=f"The package does not provide {body.id!r} ({ids})")
    elif broken:
        said = "; ".join(f"{p.id}: {p.error}" for p in broken)
        result.update(ok=False, error=f"Installed, but failed to load: {said}")
    if not result["ok"]:
        return JSONResponse(result, status_code=422)
    return result


@router.delete("/plugins/{plugin_id}", responses=errors(404, 409))
async def remove_plugin(runner: RunnerDep, plugin_id: PluginId) -> dict[str, Any]:
    """Uninstall the drop-in distribution that provides `plugin_id` (its config stays)."""
    entry = runner.catalog.get(plugin_id)
    if entry is not None and entry.builtin:
        raise Conflict(
            f"{plugin_id} is built in and cannot be removed; "
            f"disable it with plugins.installed.{plugin_id}.enabled = false"
        )
    async with runner.config_lock:
        try:
            removed = await runner.catalog.uninstall(plugin_id)
        except LookupError:
            raise PluginNotFound(plugin_id) from None
        reload = await runner.reload_config(runner.config)
    kept = [pid for pid in removed if pid in runner.config.plugins.installed]
    result: dict[str, Any] = {"ok": True, "removed": removed, "reload": reload.to_json()}
    if kept:
        result["hint"] = (
            f"config.json still has plugins.installed.{', '.join(kept)}: jobs that need it "
            "fail until it is installed again or the slot is removed (PUT /config)."
        )
    return result


def _executor(runner: Any, plugin_id: str, draft: dict[str, Any] | None) -> Executor:
    """The running executor, or one built from a draft config (to test before saving)."""
    if draft is not None:
        try:
            return create_plugin(EXECUTOR, plugin_id, draft, runner.plugin_context, runner.catalog)
        except PluginResolutionError:
            raise PluginNotFound(plugin_id) from None
        except (PluginConfigError, PluginLoadError) as exc:
            raise InvalidRequest(f"Invalid config for {plugin_id}: {exc}") from exc
    executor: Executor | None = runner.env.executors.get(plugin_id)
    if executor is None:
        failure = runner.env.executors.failed.get(plugin_id)
        if failure:
            raise InvalidRequest(f"Plugin {plugin_id} is not loaded: {failure}")
        raise PluginNotFound(plugin_id)
    return executor


@router.get("/plugins/{plugin_id}/models", responses=errors(404))
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


@router.post("/plugins/{plugin_id}/healthcheck", responses=errors(404))
async def plugin_healthcheck(
    runner: RunnerDep,
    plugin_id: str,
    body: Annotated[HealthcheckBody | None, Body()] = None,
) -> dict[str, Any]:
    health = await _check(runner, plugin_id, body.config if body else None)
    return {"ok": health.ok, "message": health.message, "latencyMs": round(health.latency_ms)}


@router.post("/test/llm", responses=errors(404))
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
    plugin: ScmPlugin | TrackerPlugin
    if body.config is not None:
        if body.plugin_id is None:
            raise InvalidRequest("pluginId is required with a draft config")
        draft = (body.plugin_id, body.config, runner.plugin_context, runner.catalog)
        try:
            plugin = create_plugin(SCM, *draft) if kind == "scm" else create_plugin(TRACKER, *draft)
        except (PluginConfigError, PluginLoadError) as exc:
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
        "details": {
            "pluginId": plugin.id,
            "kind": (SCM if kind == "scm" else TRACKER).title,
            **check.details,
        },
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
