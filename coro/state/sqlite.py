"""The SQLite `StateBackend`: the local runner's durable store (`$CORO_HOME/state.db`).

Concurrency model
-----------------
* Every connection runs in WAL mode with `synchronous=NORMAL`, a busy timeout and
  foreign keys on. The sqlite3 driver's implicit transactions are switched off: a
  single-statement write runs as its own (autocommit) transaction, and multi-statement
  writes are explicit `BEGIN IMMEDIATE … COMMIT`, so a writer takes SQLite's write lock
  up front (waiting up to the busy timeout for other processes) instead of failing
  when upgrading a read lock.
* Within one backend instance, writers queue on an `asyncio.Lock` rather than on
  SQLite's lock, whose busy handler polls with sleeps.
* `update_job` is optimistic: read `doc` and `version`, apply the mutation, then
  `UPDATE … WHERE id = ? AND version = ?`; if another writer (another process or
  backend instance) got in first, re-read and re-apply. Updates of one job within this
  instance are also serialised by a per-job lock, so they do not retry against each
  other.
* `append_logs` is group-committed: callers enqueue their lines and a single writer
  task inserts everything queued in one transaction, then resolves each caller once it
  has committed. Being the only appender of this instance, the writer numbers lines
  from a per-job counter (read from `MAX(seq)` the first time a job is seen); if
  another process appended meanwhile the primary key refuses the stale numbers and the
  batch is renumbered from the database and retried. If a batch fails otherwise, its
  requests are retried one by one, so a bad request fails only its own caller.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    URL,
    ColumnElement,
    Executable,
    create_engine,
    event,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from coro.engine.models import Job, LogEntry, iso_now
from coro.state.backend import JobExists, JobMutation, JobNotFound, JobQuery
from coro.state.schema import job_logs, jobs

if TYPE_CHECKING:
    from alembic.config import Config

#: Where `env.py`, `script.py.mako` and `versions/` live.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: How long a writer waits for another process's write lock before failing.
BUSY_TIMEOUT_MS = 30_000

#: Alembic keeps the running migration's context in module globals: one at a time.
_ALEMBIC_LOCK = threading.Lock()

#: Bound parameters per `IN (...)` list (well under SQLite's variable limit).
_IN_CHUNK = 500


# --- connections and migrations -------------------------------------------------------


def configure_sqlite_connection(dbapi_connection: Any, _connection_record: Any) -> None:
    """Engine "connect" hook: pragmas, and no implicit BEGIN from the sqlite3 driver."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the state store's migrations, built in code (no .ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_sqlite(path: Path) -> None:
    """Create or migrate the database at `path` to the newest schema (blocking).

    Runs in one `BEGIN IMMEDIATE` transaction, so concurrent openers of one file
    migrate it once and a failed migration leaves it untouched. A no-op when current.
    """
    from alembic import command

    engine = create_engine(URL.create("sqlite", database=str(path)), poolclass=NullPool)
    event.listen(engine, "connect", configure_sqlite_connection)
    try:
        with _ALEMBIC_LOCK, engine.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
            connection.commit()
    finally:
        engine.dispose()


def current_revision(path: Path) -> str | None:
    """The schema revision stored in the database at `path` (None if never migrated)."""
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(URL.create("sqlite", database=str(path)), poolclass=NullPool)
    event.listen(engine, "connect", configure_sqlite_connection)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


# --- row <-> job ----------------------------------------------------------------------


def _search_text(job: Job) -> str:
    """What `JobQuery.text` is matched against (same haystack as the memory backend)."""
    parts = (job.id, job.params.get("description"), job.params.get("repo"))
    return " ".join(str(part) for part in parts if part).lower()


def _columns(job: Job) -> dict[str, Any]:
    """Every `jobs` column but `id` and `version`, from the job."""
    return {
        "type": job.type,
        "status": job.status,
        "workflow_path": job.workflow_path,
        "campaign_parent_id": job.campaign_parent_id,
        "search_text": _search_text(job),
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "doc": job.model_dump_json(by_alias=True),
    }


def _load(doc: str) -> Job:
    return Job.model_validate_json(doc)


def _chunks(items: list[str], size: int = _IN_CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the backend ----------------------------------------------------------------------


@dataclass(slots=True)
class _LogRequest:
    job_id: str
    lines: list[str]
    future: asyncio.Future[list[LogEntry]]


class SqliteStateBackend:
    """A `StateBackend` over one SQLite file (several instances/processes may share it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock()
        self._job_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # group-committed log appends
        self._log_queue: list[_LogRequest] = []
        self._log_writer: asyncio.Task[None] | None = None
        self._next_seq: dict[str, int] = {}  # job id -> next index (as committed)

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._engine is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(upgrade_sqlite, self.path)
        engine = create_async_engine(URL.create("sqlite+aiosqlite", database=str(self.path)))
        event.listen(engine.sync_engine, "connect", configure_sqlite_connection)
        self._engine = engine

    async def close(self) -> None:
        writer = self._log_writer
        if writer is not None and not writer.done():
            await asyncio.wait([writer])  # let queued appends commit
        self._log_writer = None
        self._next_seq.clear()
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    # -- jobs --------------------------------------------------------------------------

    async def create_job(self, job: Job) -> None:
        values = {"id": job.id, "version": 1, **_columns(job)}
        async with self._connect() as conn:
            try:
                await self._write_statement(conn, insert(jobs).values(values))
            except IntegrityError as exc:
                raise JobExists(job.id) from exc

    async def get_job(self, job_id: str) -> Job | None:
        async with self._connect() as conn:
            doc = await conn.scalar(select(jobs.c.doc).where(jobs.c.id == job_id))
        return _load(doc) if doc is not None else None

    async def update_job(self, job_id: str, mutate: JobMutation) -> tuple[Job, bool]:
        async with self._job_lock(job_id), self._connect() as conn:
            while True:
                row = (
                    await conn.execute(
                        select(jobs.c.doc, jobs.c.version).where(jobs.c.id == job_id)
                    )
                ).first()
                if row is None:
                    raise JobNotFound(job_id)
                doc, version = row
                draft = _load(doc)
                if mutate(draft) is False:
                    return _load(doc), False
                draft.updated_at = iso_now()
                statement = (
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.version == version)
                    .values(version=version + 1, **_columns(draft))
                )
                if await self._write_statement(conn, statement) == 1:
                    return draft, True
                # Another writer updated the job since we read it: start over from
                # its version (the mutation runs again).

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        conditions = _conditions(query)
        count = select(func.count()).select_from(jobs).where(*conditions)
        page = (
            select(jobs.c.doc)
            .where(*conditions)
            .order_by(jobs.c.created_at.desc(), literal_column("jobs.rowid").desc())
            .limit(max(query.limit, 0))
            .offset(max(query.offset, 0))
        )
        async with self._connect() as conn, self._read_transaction(conn):
            total = await conn.scalar(count)
            docs = (await conn.scalars(page)).all()
        return [_load(doc) for doc in docs], int(total or 0)

    async def jobs_with_status(self, statuses: frozenset[str] | set[str]) -> list[Job]:
        if not statuses:
            return []
        statement = (
            select(jobs.c.doc)
            .where(jobs.c.status.in_(sorted(statuses)))
            .order_by(jobs.c.created_at.asc(), literal_column("jobs.rowid").asc())
        )
        async with self._connect() as conn:
            docs = (await conn.scalars(statement)).all()
        return [_load(doc) for doc in docs]

    # -- logs --------------------------------------------------------------------------

    async def append_logs(self, job_id: str, lines: list[str]) -> list[LogEntry]:
        if not lines:
            return []
        self._require_engine()
        loop = asyncio.get_running_loop()
        request = _LogRequest(job_id, list(lines), loop.create_future())
        self._log_queue.append(request)
        if self._log_writer is None or self._log_writer.done():
            self._log_writer = loop.create_task(self._write_logs(), name="coro-sqlite-logs")
        return await request.future

    async def read_logs(
        self, job_id: str, after: int = -1, limit: int | None = None
    ) -> list[LogEntry]:
        if limit is not None and limit <= 0:
            return []
        statement = (
            select(job_logs.c.seq, job_logs.c.line)
            .where(job_logs.c.job_id == job_id, job_logs.c.seq > after)
            .order_by(job_logs.c.seq)
        )
        if limit is not None:
            statement = statement.limit(limit)
        async with self._connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [LogEntry(index=seq, line=line) for seq, line in rows]

    async def count_logs(self, job_id: str) -> int:
        statement = select(func.count()).select_from(job_logs).where(job_logs.c.job_id == job_id)
        async with self._connect() as conn:
            return int(await conn.scalar(statement) or 0)

    async def _write_logs(self) -> None:
        """Drain the append queue, one transaction per batch.

        Returns only once the queue is empty, with no await between that check and the
        return: an `append_logs` that finds this task still running is always served.
        """
        batch: list[_LogRequest] = []
        try:
            while self._log_queue:
                async with self._connect() as conn:
                    while self._log_queue:
                        batch, self._log_queue = self._log_queue, []
                        batch = [r for r in batch if not r.future.cancelled()]
                        if len(batch) > 1 and not await self._commit_logs(conn, batch):
                            # Don't let one bad request fail those queued with it.
                            for request in batch:
                                await self._commit_logs(conn, [request])
                        elif len(batch) == 1:
                            await self._commit_logs(conn, batch)
        except BaseException as exc:
            # No connection, or cancelled: nobody may be left waiting.
            queued, self._log_queue = self._log_queue, []
            _fail([*batch, *queued], exc)
            if not isinstance(exc, Exception):
                raise

    async def _commit_logs(self, conn: AsyncConnection, batch: list[_LogRequest]) -> bool:
        """Insert `batch` in one transaction and resolve its callers.

        On failure, a lone request gets the error; a larger batch is left pending
        (returns False) for the caller to retry request by request.
        """
        try:
            results = await self._insert_log_batch(conn, batch)
        except Exception as exc:
            if len(batch) > 1:
                return False
            _fail(batch, exc)
            return True
        for request, entries in zip(batch, results, strict=True):
            if not request.future.done():
                request.future.set_result(entries)
        return True

    async def _insert_log_batch(
        self, conn: AsyncConnection, batch: list[_LogRequest]
    ) -> list[list[LogEntry]]:
        for attempt in range(3):
            try:
                async with self._write_transaction(conn):
                    job_ids = {request.job_id for request in batch}
                    next_seq = {j: self._next_seq[j] for j in job_ids if j in self._next_seq}
                    next_seq.update(await _next_seqs(conn, sorted(job_ids - next_seq.keys())))
                    results, rows = _number_lines(batch, next_seq)
                    await conn.execute(insert(job_logs), rows)
            except IntegrityError:
                # Another process appended to one of these jobs: renumber from the DB.
                if attempt == 2:
                    raise
                for request in batch:
                    self._next_seq.pop(request.job_id, None)
                continue
            self._next_seq.update(next_seq)
            return results
        raise AssertionError("unreachable")

    # -- plumbing ----------------------------------------------------------------------

    def _require_engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"SqliteStateBackend({self.path}) is not open")
        return self._engine

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        async with self._require_engine().connect() as conn:
            yield conn

    async def _write_statement(self, conn: AsyncConnection, statement: Executable) -> int:
        """Run one INSERT/UPDATE as its own (autocommit) transaction; returns rowcount.

        A single statement is atomic by itself and SQLite commits it when it completes,
        so this needs no BEGIN/COMMIT round trips.
        """
        async with self._write_lock:
            result = await conn.execute(statement)
        return int(result.rowcount)

    @asynccontextmanager
    async def _write_transaction(self, conn: AsyncConnection) -> AsyncIterator[None]:
        """`BEGIN IMMEDIATE … COMMIT` on `conn`, one writer of this instance at a time."""
        async with self._write_lock:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()

    @asynccontextmanager
    async def _read_transaction(self, conn: AsyncConnection) -> AsyncIterator[None]:
        """A deferred transaction: several SELECTs see one snapshot."""
        await conn.exec_driver_sql("BEGIN")
        try:
            yield
        finally:
            await conn.rollback()

    def _job_lock(self, job_id: str) -> asyncio.Lock:
        lock = self._job_locks.get(job_id)
        if lock is None:
            lock = self._job_locks[job_id] = asyncio.Lock()
        return lock


def _fail(requests: Iterable[_LogRequest], exc: BaseException) -> None:
    for request in requests:
        if request.future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            request.future.cancel()
        else:
            request.future.set_exception(exc)


def _conditions(query: JobQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.statuses:
        conditions.append(jobs.c.status.in_(query.statuses))
    if query.exclude_statuses:
        conditions.append(jobs.c.status.not_in(query.exclude_statuses))
    if query.type:
        conditions.append(jobs.c.type == query.type)
    if query.workflow_path:
        conditions.append(jobs.c.workflow_path == query.workflow_path)
    if query.campaign_parent_id:
        conditions.append(jobs.c.campaign_parent_id == query.campaign_parent_id)
    if query.text:
        # instr(), not LIKE: a plain substring test, no wildcards to escape
        conditions.append(func.instr(jobs.c.search_text, query.text.lower()) > 0)
    return conditions


async def _next_seqs(conn: AsyncConnection, job_ids: list[str]) -> dict[str, int]:
    """The next free log index of each job, from the database."""
    found: dict[str, int] = dict.fromkeys(job_ids, 0)
    for chunk in _chunks(job_ids):
        statement = (
            select(job_logs.c.job_id, func.max(job_logs.c.seq))
            .where(job_logs.c.job_id.in_(chunk))
            .group_by(job_logs.c.job_id)
        )
        for job_id, last in (await conn.execute(statement)).all():
            found[job_id] = last + 1
    return found


def _number_lines(
    batch: Iterable[_LogRequest], next_seq: dict[str, int]
) -> tuple[list[list[LogEntry]], list[dict[str, Any]]]:
    """Give each request's lines consecutive indexes; advances `next_seq` in place."""
    results: list[list[LogEntry]] = []
    rows: list[dict[str, Any]] = []
    for request in batch:
        start = next_seq[request.job_id]
        next_seq[request.job_id] = start + len(request.lines)
        entries = [
            LogEntry(index=start + offset, line=line) for offset, line in enumerate(request.lines)
        ]
        rows.extend({"job_id": request.job_id, "seq": e.index, "line": e.line} for e in entries)
        results.append(entries)
    return results, rows


__all__ = [
    "MIGRATIONS_DIR",
    "SqliteStateBackend",
    "alembic_config",
    "configure_sqlite_connection",
    "current_revision",
    "upgrade_sqlite",
]
