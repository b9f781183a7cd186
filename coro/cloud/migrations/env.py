"""Alembic environment of the cloud's database.

Run by `coro.cloud.migrate.upgrade`, which hands over an open connection (inside a
transaction holding the migration's advisory lock) as `config.attributes["connection"]`.
To write a revision, autogenerate one against a database at the newest revision with
that connection set: `command.revision(cfg, autogenerate=True, message=...)`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from coro.cloud.migrate import VERSION_TABLE
from coro.cloud.schema import metadata

config = context.config


def run_migrations_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("alembic: run the cloud's migrations through coro.cloud.migrate")
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("alembic: the cloud's migrations run online only")
run_migrations_online()
