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
from coro.api.schemas import HealthcheckBody, TestConnectionBody, TestLlmBody
from coro.config import mask_config
from coro.domain.errors import PluginError
from coro.engine.service import Conflict, InvalidRequest
from coro.executors import (
    Executor,
    Health,
    PluginConfigError,
    PluginLoadError,
    PluginNotFound,
    close_executor,
    create_executor,
)
from coro.plugins.dropins import Dropin, InstallError
from coro.plugins.manifest import HOST_API_VERSION, PLUGIN_ID_PATTERN, PluginManifest
from coro.plugins.registry import (
    BUILTIN_IDS,
    BUILTINS,
    KIND_NAMES,
    LOCAL_SCM,
    PluginKind,
    PluginResolutionError,
    builtin_manifest,
    create_plugin,
)

router = APIRouter(tags=["plugins"])

#: Plugins that are on without a `plugins.installed` slot.
ON_BY_DEFAULT = frozenset({LOCAL_SCM, "script"})

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
    keys = {b.id: builtin_manifest(b.id).secret_keys() for b in BUILTINS}
    for dropin in runner.dropins.entries:
        if dropin.manifest is not None:
            keys.setdefault(dropin.id, dropin.manifest.secret_keys())
    return keys


def _entry(
    runner: Any,
    plugin_id: str,
    manifest: PluginManifest | None,
    masked: dict[str, Any],
    dropin: Dropin | None = None,
) -> dict[str, Any]:
    slot = runner.config.plugins.installed.get(plugin_id)
    active = plugin_id in runner.plugins.instances() or runner.env.executors.get(plugin_id)
    error = (
        (dropin.error if dropin is not None else None)
        or runner.plugins.failed.get(plugin_id)
        or runner.env.executors.failed.get(plugin_id)
    )
    enabled = slot.enabled if slot is not None else plugin_id in ON_BY_DEFAULT
    slot_json = masked.get("plugins", {}).get("installed", {}).get(plugin_id)
    hint = None
    if slot is None and not active and error is None:
        hint = f"Installed. Add plugins.installed.{plugin_id} (PUT /config) to use it in jobs."
    entry: dict[str, Any] = {
        "id": plugin_id,
        "kind": manifest.kind if manifest else (dropin.kind if dropin else None),
        "version": manifest.version if manifest else None,
        "displayName": manifest.display_name if manifest else plugin_id,
        "description": manifest.description if manifest else "",
        "source": "dropin" if dropin is not None else "builtin",
        "builtin": dropin is None,
        "configured": slot is not None,
        "enabled": enabled,
        # its code imported and its manifest accepted (built-ins: always)
        "loaded": dropin.loaded if dropin is not None else True,
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


def plugin_entries(runner: Any, only: list[Dropin] | None = None) -> list[dict[str, Any]]:
    """`GET /plugins` entries: every built-in and every drop-in (or just `only`)."""
    masked = mask_config(runner.config.to_json(), secret_keys(runner))
    if only is not None:
        return [_entry(runner, d.id, d.manifest, masked, d) for d in only]
    entries = [_entry(runner, b.id, builtin_manifest(b.id), masked) for b in BUILTINS]
    entries += [_entry(runner, d.id, d.manifest, masked, d) for d in runner.dropins.entries]
    return entries


@router.get("/plugins")
async def list_plugins(runner: RunnerDep) -> dict[str, Any]:
    return {
        "plugins": plugin_entries(runner),
        "defaults": dict(runner.config.plugins.defaults),
        "hostApiVersion": HOST_API_VERSION,
        "pluginsDir": str(runner.dropins.site),
    }


def _local_path(raw: str) -> str:
    """A local wheel or project directory, absolute (pip reads it, not the client)."""
    local = Path(raw).expanduser()
    if not local.exists():
        raise InvalidRequest(f"No such file or directory: {raw}")
    return str(local.resolve())


@router.post("/plugins/install", response_model=None)
async def install_plugin(runner: RunnerDep, body: InstallBody) -> dict[str, Any] | JSONResponse:
    """pip-install a drop-in into `$CORO_HOME/plugins/site` and load it without a restart."""
    given = [v for v in (body.spec, body.package, body.path) if v is not None]
    if len(given) != 1:
        raise InvalidRequest("Give exactly one of: spec, package, path")
    spec = given[0] if body.path is None else _local_path(body.path)
    async with runner.config_lock:
        try:
            outcome = await runner.dropins.install(spec)
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


@router.delete("/plugins/{plugin_id}")
async def remove_plugin(runner: RunnerDep, plugin_id: PluginId) -> dict[str, Any]:
    """Uninstall the drop-in distribution that provides `plugin_id` (its config stays)."""
    if plugin_id in BUILTIN_IDS:
        raise Conflict(
            f"{plugin_id} is built in and cannot be removed; "
            f"disable it with plugins.installed.{plugin_id}.enabled = false"
        )
    async with runner.config_lock:
        try:
            removed = await runner.dropins.uninstall(plugin_id)
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
            return create_executor(
                plugin_id, draft, catalog=runner.dropins, context=runner.plugin_context
            )
        except (PluginConfigError, PluginLoadError) as exc:
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
            plugin = create_plugin(
                kind, body.plugin_id, body.config, runner.plugin_context, runner.dropins
            )
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
