"""What only the SQLite backend does: its file, its migrations, its journal mode.

The behaviour every backend shares is the contract suite (tests/test_state_contract.py,
which runs on SQLite too); the SQLite backend's fast paths are pinned down in
tests/test_state_sqlite.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coro.state.sqlite import SqliteStateBackend, current_revision, upgrade_sqlite
from tests.test_state_contract import add_work_item, ids, make_job

__all__ = ["add_work_item", "db_path", "make_job"]  # what tests/test_state_sqlite.py uses


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "nested" / "state.db"


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[SqliteStateBackend]:
    store = SqliteStateBackend(db_path(tmp_path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


# --- sqlite only: durability, sharing, migrations -------------------------------------


async def test_sqlite_open_is_idempotent(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    first = SqliteStateBackend(path)
    await first.open()
    await first.create_job(make_job("job-1"))
    await first.close()
    revision = current_revision(path)

    # migrating again (a second open, or a direct upgrade) changes nothing
    upgrade_sqlite(path)
    second = SqliteStateBackend(path)
    await second.open()
    try:
        assert current_revision(path) == revision is not None
        assert await ids(second) == (["job-1"], 1)
    finally:
        await second.close()


async def test_sqlite_database_is_in_wal_mode(sqlite_backend: SqliteStateBackend) -> None:
    await sqlite_backend.create_job(make_job("job-1"))

    with sqlite3.connect(sqlite_backend.path) as connection:
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()

    assert mode == "wal"


def test_sqlite_migrations_produce_the_schema_the_queries_use(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from coro.state.schema import metadata

    path = tmp_path / "state.db"
    upgrade_sqlite(path)
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
            (ddl,) = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'job_logs'"
            ).one()
    finally:
        engine.dispose()

    assert diff == []
    assert "WITHOUT ROWID" in ddl


def test_migration_moves_transcripts_out_of_job_documents(tmp_path: Path) -> None:
    import json

    from alembic import command
    from sqlalchemy import create_engine, event

    from coro.state.sqlite import alembic_config, configure_sqlite_connection

    path = tmp_path / "state.db"
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", configure_sqlite_connection)
    job = make_job("job-1")
    doc = json.loads(job.model_dump_json(by_alias=True))
    doc["conversationHistory"] = [
        {"role": "user", "content": "Begin"},
        {"role": "assistant", "content": "Done"},
    ]
    try:
        with engine.begin() as connection:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0002")  # a database written before this migration
            connection.exec_driver_sql(
                "INSERT INTO jobs (id, type, status, workflow_path, search_text, created_at, "
                "updated_at, version, doc) VALUES (?, 'job', 'planning', ?, '', ?, ?, 1, ?)",
                ("job-1", job.workflow_path, job.created_at, job.updated_at, json.dumps(doc)),
            )
    finally:
        engine.dispose()

    upgrade_sqlite(path)
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT seq, message FROM job_transcripts WHERE job_id = 'job-1' ORDER BY seq"
        ).fetchall()
        (stored_doc,) = connection.execute("SELECT doc FROM jobs WHERE id = 'job-1'").fetchone()
    assert [(seq, json.loads(message)["content"]) for seq, message in rows] == [
        (0, "Begin"),
        (1, "Done"),
    ]
    assert "conversationHistory" not in json.loads(stored_doc)
