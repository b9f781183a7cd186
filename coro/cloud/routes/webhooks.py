"""`/teams/{teamId}/webhooks`: webhook secrets per plugin, write-only (admins set and
delete them; members see which plugins have one, never the secret)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse

from coro.cloud.broker import WEBHOOKS_CHANGED
from coro.cloud.deps import ServicesDep, TeamAccessDep, errors
from coro.cloud.models import PLUGIN_ID, WebhookSecretBody, WebhookSecretOut

router = APIRouter(prefix="/teams/{team_id}/webhooks", tags=["webhook secrets"])

PluginId = Annotated[str, Path(pattern=PLUGIN_ID)]


@router.get("", response_model=list[WebhookSecretOut], responses=errors(400, 401, 404))
async def list_secrets(access: TeamAccessDep, found: ServicesDep) -> list[WebhookSecretOut]:
    secrets = await found.webhook_secrets.of_team(access)
    return [WebhookSecretOut.model_validate(s, from_attributes=True) for s in secrets]


@router.get("/{plugin_id}", response_model=WebhookSecretOut, responses=errors(400, 401, 404))
async def get_secret(
    plugin_id: PluginId, access: TeamAccessDep, found: ServicesDep
) -> WebhookSecretOut:
    """Whether and since when a secret is set (never the secret)."""
    meta = await found.webhook_secrets.get(access, plugin_id)
    return WebhookSecretOut.model_validate(meta, from_attributes=True)


@router.put(
    "/{plugin_id}",
    response_model=WebhookSecretOut,
    responses={
        201: {"model": WebhookSecretOut, "description": "Set for the first time"},
        **errors(400, 401, 403, 404, 409, 413),
    },
)
async def put_secret(
    plugin_id: PluginId, body: WebhookSecretBody, access: TeamAccessDep, found: ServicesDep
) -> JSONResponse:
    """Set or replace the plugin's secret: 201 when new, 200 when replaced."""
    meta, created = await found.webhook_secrets.put(access, plugin_id, body.secret)
    await found.broker.publish(WEBHOOKS_CHANGED, {"teamId": access.team_id})
    out = WebhookSecretOut.model_validate(meta, from_attributes=True)
    return JSONResponse(
        out.model_dump(mode="json", by_alias=True), status_code=201 if created else 200
    )


@router.delete("/{plugin_id}", status_code=204, responses=errors(400, 401, 403, 404))
async def delete_secret(plugin_id: PluginId, access: TeamAccessDep, found: ServicesDep) -> Response:
    await found.webhook_secrets.delete(access, plugin_id)
    await found.broker.publish(WEBHOOKS_CHANGED, {"teamId": access.team_id})
    return Response(status_code=204)
