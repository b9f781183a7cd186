"""Alembic environment of the SQLite state store.

Normally run by `coro.state.sqlite.upgrade_sqlite`, which hands over an open connection
(already inside a `BEGIN IMMEDIATE` transaction) as `config.attributes["connection"]`.
Without one, it connects to the config's `sqlalchemy.url` (e.g. for
`command.revision(alembic_config(url), autogenerate=True, message=...)`).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from coro.state.schema import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite can't ALTER most things: autogenerate table-rebuild ("batch") ops.
        render_as_batch=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: no connection and no sqlalchemy.url configured")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as own_connection:
            _configure(own_connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
