"""`GET /config` and `PUT /config` (SPEC §2.6).

- GET: config.json (as validated, defaults filled in) with every secret masked
  (`coro.config.mask_config`: `first4...last4`, short ones `***`).
- PUT: a partial config merged section by section into what is stored
  (`coro.config.apply_config_patch`): objects merge key by key, `null` removes a key, an
  MCP server or model alias is replaced whole, and a secret sent back exactly as GET
  showed it means "unchanged". The result is validated — the config schema, and the
  settings of every plugin slot the body touches — and refused with
  `400 {error, issues:[{path, message}]}` leaving config.json untouched; otherwise it is
  written atomically (0600) and the runner reloads plugins and executors at once.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from coro.api.deps import RunnerDep
from coro.api.routes.plugins import secret_keys
from coro.config import (
    LOOPBACK_HOSTS,
    ConfigError,
    CoroConfig,
    apply_config_patch,
    mask_config,
    validation_issues,
)

router = APIRouter(tags=["config"])


def _stored(runner: Any) -> tuple[dict[str, Any], str | None]:
    """What a PUT merges into: config.json when it is valid, else the config the runner
    is running with (a broken file never blocks a repair); and the file's problem."""
    try:
        config: CoroConfig = runner.home.load_config()
    except ConfigError as exc:
        return runner.config.to_json(), str(exc)
    return config.to_json(), None


def _plugin_issues(runner: Any, body: dict[str, Any], config: CoroConfig) -> list[dict[str, str]]:
    """Settings of the enabled plugin slots the body touches, checked by their plugins."""
    plugins = body.get("plugins")
    touched = plugins.get("installed") if isinstance(plugins, dict) else None
    if not isinstance(touched, dict):
        return []
    issues = []
    for plugin_id, sent in touched.items():
        slot = config.plugins.installed.get(plugin_id)
        if sent is None or slot is None or not slot.enabled:
            continue
        entry = runner.catalog.get(plugin_id)
        found = entry.settings_issues(slot.config) if entry is not None else []
        prefix = f"plugins.installed.{plugin_id}.config"
        for issue in found:
            where = issue["path"]
            path = prefix if where == "(root)" else f"{prefix}.{where}"
            issues.append({"path": path, "message": issue["message"]})
    return issues


@router.get("/config")
async def get_config(runner: RunnerDep) -> dict[str, Any]:
    stored, problem = _stored(runner)
    body: dict[str, Any] = {
        "config": mask_config(stored, secret_keys(runner)),
        "configPath": str(runner.home.config_file),
        "mode": runner.mode,
    }
    if problem is not None:
        body["configError"] = problem
    return body


@router.put("/config", response_model=None)
async def put_config(
    runner: RunnerDep, request: Request, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any] | JSONResponse:
    async with runner.config_lock:
        stored, _ = _stored(runner)
        keys = secret_keys(runner)
        merged, issues = apply_config_patch(stored, body, keys)
        try:
            config = CoroConfig.model_validate(merged)
        except ValidationError as exc:
            issues += validation_issues(exc)
        else:
            issues += _plugin_issues(runner, body, config)
            bound = request.app.state.bind_host
            if bound not in LOOPBACK_HOSTS and not config.api_token:
                message = f"required while the runner listens on {bound} (beyond loopback)"
                issues.append({"path": "apiToken", "message": message})
        if issues:
            return JSONResponse(
                {"error": "Invalid configuration", "issues": issues}, status_code=400
            )
        await asyncio.to_thread(runner.home.save_config, config)
        reload = await runner.reload_config(config)
    return {
        "saved": True,
        "configPath": str(runner.home.config_file),
        "config": mask_config(config.to_json(), secret_keys(runner)),
        "reload": reload.to_json(),
    }
