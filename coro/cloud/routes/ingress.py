"""`POST /webhook/{teamId}/{pluginId}`: a provider's signed webhook delivery
(`coro.cloud.ingress`). No sign-in: the team's webhook secret is the credential."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from coro.cloud.deps import PathId, ServicesDep, errors
from coro.cloud.ingress import Ingress, builtin_webhook_plugins
from coro.cloud.models import PLUGIN_ID, Wire

router = APIRouter(tags=["webhook ingress"])

PluginId = Annotated[str, Path(pattern=PLUGIN_ID)]


class WebhookReceipt(Wire):
    """What became of a verified delivery."""

    accepted: bool = True
    #: received before (same delivery id): nothing done again
    duplicate: bool = False
    #: queued for the runner of a job (else it concerns no job the cloud knows)
    routed: bool = False
    job_ids: list[str] = Field(default_factory=list)
    command_ids: list[int] = Field(default_factory=list)
    triggered: list[str] = Field(
        default_factory=list,
        description="The team jobs the delivery's events started by the team's trigger rules",
    )


async def ingress(request: Request, found: ServicesDep) -> Ingress:
    """The app's ingress, made on first use (loading the plugins' manifests imports
    their modules: done in a thread; two first requests at once make two, harmlessly)."""
    made: Ingress | None = getattr(request.app.state, "webhook_ingress", None)
    if made is None:
        plugins = await asyncio.to_thread(builtin_webhook_plugins)
        made = Ingress(found.db, found.mirror, found.commands, plugins, team_jobs=found.team_jobs)
        request.app.state.webhook_ingress = made
    return made


IngressDep = Annotated[Ingress, Depends(ingress)]

_BODY = {
    "required": True,
    "description": "The provider's delivery, exactly as sent (signed over its raw bytes)",
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/x-www-form-urlencoded": {
            "schema": {"type": "object", "properties": {"payload": {"type": "string"}}}
        },
    },
}


@router.post(
    "/webhook/{team_id}/{plugin_id}",
    status_code=202,
    response_model=WebhookReceipt,
    responses={
        200: {"model": WebhookReceipt, "description": "Received before: no second effect"},
        202: {
            "model": WebhookReceipt,
            "description": "Verified; queued for the job's runner, and the jobs it triggers",
        },
        **errors(400, 401, 404, 413, 503),
    },
    openapi_extra={"requestBody": _BODY},
)
async def receive_webhook(
    team_id: PathId, plugin_id: PluginId, request: Request, hub: IngressDep
) -> JSONResponse:
    """Verify the delivery's HMAC (the plugin's manifest says how) over the raw body with
    the team's secret, drop a delivery seen before, queue it for the runner of the job it
    concerns (`jobIds`: its pull request's, or the thread's a team job came from), and
    start the team jobs its events ask for by the team's trigger rules (`triggered`).
    401: missing or wrong signature; 404: unknown plugin, or no secret set for it in
    this team."""
    body = await request.body()
    headers: dict[str, str] = {}
    for name, value in request.headers.items():  # lower-cased; the first of repeated ones
        headers.setdefault(name, value)
    receipt = await hub.receive(team_id, plugin_id, headers, body)
    out = WebhookReceipt(
        duplicate=receipt.duplicate,
        routed=receipt.routed,
        job_ids=receipt.job_ids,
        command_ids=receipt.command_ids,
        triggered=receipt.triggered,
    )
    return JSONResponse(
        out.model_dump(mode="json", by_alias=True), status_code=200 if receipt.duplicate else 202
    )
