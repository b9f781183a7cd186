"""Applying the cloud's Alembic migrations (`coro cloud migrate`, and at every start).

The history lives in `migrations/` and records its revision in `cloud_alembic_version`,
so the cloud's schema can share a database with another Alembic history (the PostgreSQL
state backend's) without either seeing the other's revisions.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, text

from coro.cloud.db import Database
from coro.state.migrate import ALEMBIC_LOCK, alembic_config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "cloud_alembic_version"
#: pg_advisory_xact_lock key: instances starting together migrate one after another.
_MIGRATION_LOCK = 0x636C6F7564  # "cloud"


async def upgrade(db: Database) -> None:
    """Bring the database to the newest revision, in one transaction (a no-op when current)."""
    async with db.begin() as connection:
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
        )
        await connection.run_sync(_run_alembic)


async def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(connection: Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    async with db.begin() as connection:
        return await connection.run_sync(read)


def head_revision() -> str:
    """The newest revision of the history (what `upgrade` brings a database to)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def _run_alembic(connection: Connection) -> None:
    from alembic import command

    with ALEMBIC_LOCK:
        cfg = alembic_config(MIGRATIONS_DIR)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
