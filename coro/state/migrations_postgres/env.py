"""Alembic environment of the PostgreSQL state store.

Run by `coro.state.postgres.upgrade_postgres`, which hands over an open connection
(inside a transaction holding the migration's advisory lock) as
`config.attributes["connection"]`. To write a revision, autogenerate one against a
database at the newest revision, e.g.
`command.revision(cfg, autogenerate=True, message=...)` with that connection set.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from coro.state.postgres import metadata

config = context.config


def run_migrations_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "alembic: run the PostgreSQL migrations through coro.state.postgres "
            "(it hands over a connection)"
        )
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("alembic: the PostgreSQL migrations run online only")
run_migrations_online()
