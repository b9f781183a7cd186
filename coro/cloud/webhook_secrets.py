"""Webhook secrets per team and plugin (`PUT /teams/:teamId/webhooks/:pluginId`).

A secret is write-only through the API: it can be set, replaced and deleted, and the
listing says which plugins have one and since when, never what it is. It is stored as
given because checking a webhook's HMAC needs the key itself (`webhook_secret`, for the
webhook ingress).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, literal_column, select
from sqlalchemy.dialects.postgresql import insert

from coro.cloud.db import AnyRow, Database
from coro.cloud.errors import Conflict, NotFound
from coro.cloud.schema import webhook_secrets
from coro.cloud.teams import TeamAccess

#: Plugins with a secret per team: far more than a team installs.
MAX_SECRETS = 100
NOT_SET = "No webhook secret is set for this plugin"


@dataclass(frozen=True)
class WebhookSecret:
    """A secret's metadata (never the secret)."""

    plugin_id: str
    created_at: datetime
    updated_at: datetime


_COLUMNS = (webhook_secrets.c.plugin_id, webhook_secrets.c.created_at, webhook_secrets.c.updated_at)


def _meta(row: AnyRow) -> WebhookSecret:
    return WebhookSecret(row.plugin_id, row.created_at, row.updated_at)


async def webhook_secret(db: Database, team_id: str, plugin_id: str) -> str | None:
    async with db.begin() as connection:
        secret: str | None = (
            await connection.execute(
                select(webhook_secrets.c.secret).where(
                    webhook_secrets.c.team_id == team_id,
                    webhook_secrets.c.plugin_id == plugin_id,
                )
            )
        ).scalar_one_or_none()
    return secret


class WebhookSecrets:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(
        self, access: TeamAccess, plugin_id: str, secret: str
    ) -> tuple[WebhookSecret, bool]:
        """Set or replace the secret; returns its metadata and whether it is new."""
        access.require_admin("set webhook secrets")
        async with self.db.begin() as connection:
            count = (
                await connection.execute(
                    select(func.count()).where(
                        webhook_secrets.c.team_id == access.team_id,
                        webhook_secrets.c.plugin_id != plugin_id,
                    )
                )
            ).scalar_one()
            if count >= MAX_SECRETS:
                raise Conflict(f"A team may have at most {MAX_SECRETS} webhook secrets")
            statement = insert(webhook_secrets).values(
                team_id=access.team_id, plugin_id=plugin_id, secret=secret
            )
            row = (
                await connection.execute(
                    statement.on_conflict_do_update(
                        index_elements=[webhook_secrets.c.team_id, webhook_secrets.c.plugin_id],
                        set_={"secret": statement.excluded.secret, "updated_at": func.now()},
                    ).returning(
                        *_COLUMNS,
                        # xmax is 0 on a row this statement inserted, not on one it updated
                        (literal_column("xmax") == 0).label("inserted"),
                    )
                )
            ).one()
        return _meta(row), bool(row.inserted)

    async def of_team(self, access: TeamAccess) -> list[WebhookSecret]:
        async with self.db.begin() as connection:
            rows = await connection.execute(
                select(*_COLUMNS)
                .where(webhook_secrets.c.team_id == access.team_id)
                .order_by(webhook_secrets.c.plugin_id)
            )
        return [_meta(row) for row in rows]

    async def get(self, access: TeamAccess, plugin_id: str) -> WebhookSecret:
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    select(*_COLUMNS).where(
                        webhook_secrets.c.team_id == access.team_id,
                        webhook_secrets.c.plugin_id == plugin_id,
                    )
                )
            ).first()
        if row is None:
            raise NotFound(NOT_SET)
        return _meta(row)

    async def delete(self, access: TeamAccess, plugin_id: str) -> None:
        access.require_admin("delete webhook secrets")
        async with self.db.begin() as connection:
            deleted = (
                await connection.execute(
                    webhook_secrets.delete()
                    .where(
                        webhook_secrets.c.team_id == access.team_id,
                        webhook_secrets.c.plugin_id == plugin_id,
                    )
                    .returning(webhook_secrets.c.plugin_id)
                )
            ).first()
        if deleted is None:
            raise NotFound(NOT_SET)
