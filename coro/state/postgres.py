"""The PostgreSQL `StateBackend` (`state.url: postgresql+asyncpg://user@host/database`).

Several runner processes (and `coro mcp` servers) may share one database.

Concurrency model
-----------------
* The hot operations (create/get/update a job, append/read/count log lines,
  transcripts) each run one hand-written statement, outside any explicit transaction,
  on a connection of the backend's own small asyncpg pool (`_Pool`: a free list, as a
  SQLAlchemy checkout costs more than such a statement): one round trip, prepared once
  per connection by asyncpg's statement cache. Commits are asynchronous
  (`_SESSION_SETTINGS`). Listings, the pull request and proposal stores (`prs`,
  `proposals`) and migrations go through a SQLAlchemy async engine (asyncpg), Core and
  Alembic.
* `update_job` is optimistic, as in the SQLite backend: apply the mutation to the job's
  `doc` at some `version`, then `UPDATE … WHERE id = $1 AND version = $2`; if another
  writer got in first, re-read and re-apply. The last `(version, doc)` this instance
  wrote or read is kept in a bounded cache, so an update usually needs no read; a stale
  copy only costs a failed compare-and-set, and a mutation that declines to write (or
  raises) on a cached copy is decided again on the stored job. Updates and appends
  of one job within this instance are serialised by a per-job lock (so they do not
  retry against each other, and lines keep the order they were appended in).
* Log lines are numbered from a per-job counter row (`job_log_heads`) that the appending
  statement itself advances (`INSERT … ON CONFLICT DO UPDATE … RETURNING`): its row lock
  orders concurrent appenders of one job, in any process, until they commit, so the
  indexes of a job are contiguous and never collide.
* Live logs across processes: an append, and an update that logs lines or changes the
  job's status, also run `pg_notify('coro_state', <job id>)` in the same statement
  (delivered when it commits). Once a subscriber follows a job, the backend LISTENs on
  a dedicated connection (reconnecting if it drops, then catching up every watched
  job; closing it once no job is followed: an idle runner holds no listener and no
  liveness timer); for a job with
  subscribers on this backend's `bus`, a `CatchUp` reads the lines after the bus's
  high-water mark and the job's status, and publishes them. Notifications from this
  backend's own connections are skipped: those writes were published as they
  returned.
* PostgreSQL text cannot hold NUL characters: in log lines (and in the copy of the
  description searched by `JobQuery.text`) they are stored as U+FFFD. Job documents
  and transcripts are JSON, where NUL is escaped, so they are kept exactly.
* The password in the URL never appears in errors, logs or `repr()`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    URL,
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Identity,
    MetaData,
    Table,
    Text,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from coro.domain.models import ConversationMessage, Job, LogEntry
from coro.state import schema
from coro.state.backend import JobExists, JobMutation, JobQuery, StatusTotal, StoredJob
from coro.state.doc_cache import JobDocCache
from coro.state.logbus import CatchUp, LogBus
from coro.state.migrate import ALEMBIC_LOCK, alembic_config
from coro.state.proposals_sql import SqlProposalStore
from coro.state.prs_sql import SqlPullRequestStore
from coro.state.rows import dump_job, job_columns, job_conditions, load_job

logger = logging.getLogger(__name__)

#: Where `env.py`, `script.py.mako` and `versions/` live.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations_postgres"

#: The LISTEN/NOTIFY channel; the payload is a job id.
CHANNEL = "coro_state"

#: `pg_advisory_xact_lock` key held while migrating, so concurrent openers of a new
#: database migrate it once.
_MIGRATION_LOCK = 0x636F726F_6D696772  # "coromigr"


#: The listener's liveness check of an idle connection, and its reconnection backoff.
_LISTENER_PING_SECONDS = 30.0
_RECONNECT_SECONDS = (0.1, 5.0)

#: Settings of the backend's sessions. Commits are asynchronous: the server acknowledges
#: a commit before its WAL reaches the disk (flushed within ~0.6 s), so a write costs a
#: round trip rather than a disk flush (a phase transition makes several). A crash of
#: the runner loses nothing; a crash of the database server itself may lose the last
#: fraction of a second of writes, never corrupt them: the trade-off the SQLite backend
#: makes with `synchronous=NORMAL`.
_SESSION_SETTINGS = {"application_name": "coro", "synchronous_commit": "off"}

#: SQLSTATE of a unique violation (a duplicate key).
_UNIQUE_VIOLATION = "23505"


# --- the tables, as PostgreSQL keeps them ---------------------------------------------


def _postgres_metadata() -> MetaData:
    """`coro.state.schema`'s tables plus what PostgreSQL needs besides.

    * `seq` columns are BIGINT (an SSE client may resume from any 64-bit index);
    * `jobs.rowid` is an identity column standing in for SQLite's implicit rowid: it
      orders jobs created within the same millisecond;
    * `job_log_heads` holds each job's next log index (see the module docstring).
    """
    pg = MetaData()
    for table in schema.metadata.sorted_tables:
        table.to_metadata(pg)
    for name in ("job_logs", "job_transcripts"):
        pg.tables[name].c.seq.type = BigInteger()
    pg.tables["jobs"].append_column(
        Column("rowid", BigInteger, Identity(always=True), nullable=False)
    )
    Table(
        "job_log_heads",
        pg,
        Column("job_id", Text, primary_key=True),
        Column("next_seq", BigInteger, nullable=False),
    )
    return pg


metadata = _postgres_metadata()
jobs = metadata.tables["jobs"]


# --- URLs and migrations --------------------------------------------------------------


def postgres_url(url: str | URL) -> URL:
    """`url` as a `postgresql+asyncpg` URL; a ValueError that never shows the URL."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        raise ValueError("state.url: not a valid postgresql:// URL") from None
    if parsed.drivername not in ("postgresql", "postgresql+asyncpg"):
        raise ValueError("state.url: expected a postgresql:// or postgresql+asyncpg:// URL")
    if not parsed.database:
        raise ValueError("state.url: a postgresql URL needs a database name (…/database)")
    return parsed.set(drivername="postgresql+asyncpg")


def masked(url: URL) -> str:
    """The URL as it may be shown: its password hidden (one given as a query parameter
    left out)."""
    return url.difference_update_query(["password"]).render_as_string(hide_password=True)


def upgrade_postgres(url: URL) -> None:
    """Create or migrate the database at `url` to the newest schema (blocking).

    Runs in one transaction holding an advisory lock, so concurrent openers of one
    database migrate it once and a failed migration leaves it untouched. A no-op when
    current. Call it in a thread: asyncpg is async-only and Alembic is synchronous, so
    this runs its own event loop there (none runs in a worker thread of `to_thread`).
    """
    asyncio.run(_upgrade(url))


async def _upgrade(url: URL) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
            )
            await connection.run_sync(_run_alembic)
    finally:
        await engine.dispose()


def _run_alembic(connection: Connection) -> None:
    from alembic import command

    with ALEMBIC_LOCK:
        cfg = alembic_config(MIGRATIONS_DIR)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def current_revision(url: URL) -> str | None:
    """The schema revision stored in the database at `url` (blocking, like the upgrade)."""
    return asyncio.run(_current_revision(url))


async def _current_revision(url: URL) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            revision: str | None = await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
            return revision
    finally:
        await engine.dispose()


# --- the hot statements -----------------------------------------------------------------

_JOB_COLUMNS = (
    "type",
    "status",
    "workflow_path",
    "campaign_parent_id",
    "search_text",
    "created_at",
    "updated_at",
    "doc",
)
_INSERT_JOB = (
    f"INSERT INTO jobs (id, version, {', '.join(_JOB_COLUMNS)}) "
    f"VALUES ($1, 1, {', '.join(f'${n}' for n in range(2, 2 + len(_JOB_COLUMNS)))})"
)


def _append(lines: str, head_row: str) -> str:
    """CTEs `head` (the job's counter advanced by the lines in `lines`, a text[]
    parameter; `start`: the first line's index) and `lines` (the lines inserted after
    it), for the job of the row `head_row` (a VALUES row or a SELECT)."""
    n = f"cardinality({lines}::text[])"
    return f"""head AS (
    INSERT INTO job_log_heads AS h (job_id, next_seq) {head_row.format(n=n)}
    ON CONFLICT (job_id) DO UPDATE SET next_seq = h.next_seq + {n}
    RETURNING h.job_id, h.next_seq - {n} AS start
), lines AS (
    INSERT INTO job_logs (job_id, seq, line)
    SELECT head.job_id, head.start + l.n - 1, l.line
    FROM head, unnest({lines}::text[]) WITH ORDINALITY AS l(line, n)
)"""


_NOTIFY = f"pg_notify('{CHANNEL}', $1)"

# $1 job id, $2 lines: advance the job's counter, insert the lines after it, notify
_APPEND_LOGS = f"WITH {_append('$2', 'VALUES ($1, {n})')} SELECT head.start, {_NOTIFY} FROM head"

# $1 job id, $2 the version it must still be at, $3… the columns; one row if written
_SET_JOB = ", ".join(f"{name} = ${n}" for n, name in enumerate(_JOB_COLUMNS, start=3))
_UPDATE_JOB = f"UPDATE jobs SET version = $2 + 1, {_SET_JOB} WHERE id = $1 AND version = $2"
_UPDATED = f"updated AS ({_UPDATE_JOB} RETURNING id)"
_LINES_PARAM = f"${3 + len(_JOB_COLUMNS)}"
_UPDATE_JOB_QUIET = f"{_UPDATE_JOB} RETURNING NULL::bigint"
# … telling listeners that the status changed
_UPDATE_JOB_NOTIFY = f"WITH {_UPDATED} SELECT NULL::bigint, {_NOTIFY} FROM updated"
# … appending the lines of the last parameter too (`start`: the first one's index)
_UPDATE_JOB_LOG = (
    f"WITH {_UPDATED}, "
    f"{_append(_LINES_PARAM, 'SELECT id, {n} FROM updated')} "
    f"SELECT head.start, {_NOTIFY} FROM head"
)

_SELECT_JOB = "SELECT doc, version FROM jobs WHERE id = $1"
# … with its transcript, in one statement (one snapshot, one round trip)
_SELECT_STORED = (
    "SELECT doc, version, ARRAY(SELECT message FROM job_transcripts t WHERE t.job_id = j.id "
    "ORDER BY seq) FROM jobs j WHERE id = $1"
)
_SELECT_STATUS = "SELECT status FROM jobs WHERE id = $1"

_READ_LOGS = "SELECT seq, line FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
_COUNT_LOGS = "SELECT next_seq FROM job_log_heads WHERE job_id = $1"

# $1 job id, $2 messages: after the job's last message (a concurrent appender that
# takes the same positions fails on the primary key and tries again).
_APPEND_MESSAGES = """
INSERT INTO job_transcripts (job_id, seq, message)
SELECT $1, coalesce((SELECT max(seq) FROM job_transcripts WHERE job_id = $1), -1) + m.n, m.message
FROM unnest($2::text[]) WITH ORDINALITY AS m(message, n)
"""
_READ_TRANSCRIPT = "SELECT message FROM job_transcripts WHERE job_id = $1 ORDER BY seq"
_CLEAR_TRANSCRIPT = "DELETE FROM job_transcripts WHERE job_id = $1"

_STATUS_TOTALS = """
SELECT status, count(*),
       coalesce(sum((doc::json #>> '{tokenUsage,totalCostUsd}')::float8), 0)
FROM jobs GROUP BY status
"""


def _text(value: str) -> str:
    """`value` as PostgreSQL text can hold it (no NUL characters)."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _is_duplicate(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION


def _job_params(job: Job, doc: str) -> list[Any]:
    columns = job_columns(job, doc)
    columns["search_text"] = _text(columns["search_text"])
    return [columns[name] for name in _JOB_COLUMNS]


# --- the backend ----------------------------------------------------------------------


class PostgresStateBackend:
    """A `StateBackend` over one PostgreSQL database (shareable by many processes)."""

    def __init__(self, url: str | URL, bus: LogBus | None = None, *, pool_size: int = 10) -> None:
        self.url = postgres_url(url)
        self.bus = bus if bus is not None else LogBus()
        self.prs = SqlPullRequestStore(self._require_engine)
        self.proposals = SqlProposalStore(self._require_engine)
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None
        self._hot: _Pool | None = None
        self._listener: _Listener | None = None
        self._docs = JobDocCache()

    def __repr__(self) -> str:
        return f"PostgresStateBackend({masked(self.url)})"

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._engine is not None:
            return
        try:
            await asyncio.to_thread(upgrade_postgres, self.url)
        except Exception as exc:
            raise _failure(f"cannot migrate {masked(self.url)}", exc) from None
        self._engine = create_async_engine(
            self.url, connect_args={"server_settings": _SESSION_SETTINGS}
        )
        self._hot = _Pool(self.url, self._pool_size)
        try:  # a first connection: a URL the driver refuses fails here, not later
            async with self._hot.connection():
                pass
        except Exception as exc:
            await self.close()
            raise _failure(f"cannot connect to {masked(self.url)}", exc) from None
        self._listener = _Listener(self)
        self.bus.on_follow = self._listener.follow

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        hot, self._hot = self._hot, None
        engine, self._engine = self._engine, None
        self._docs.clear()
        if listener is not None:
            self.bus.on_follow = None
            await listener.stop()
        if hot is not None:
            await hot.close()
        if engine is not None:
            await engine.dispose()

    # -- jobs --------------------------------------------------------------------------

    async def create_job(self, job: Job) -> None:
        doc = dump_job(job)
        try:
            async with self._driver() as db:
                await db.execute(_INSERT_JOB, job.id, *_job_params(job, doc))
        except Exception as exc:
            if _is_duplicate(exc):
                raise JobExists(job.id) from None
            raise
        self._docs.remember(job.id, 1, doc)

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._read_job(job_id)
        return load_job(row[1]) if row is not None else None

    async def read_stored_job(self, job_id: str) -> StoredJob | None:
        async with self._driver() as db:
            row = await db.fetchrow(_SELECT_STORED, job_id)
        if row is None:
            self._docs.forget(job_id)
            return None
        doc, version, transcript = row
        self._docs.remember(job_id, version, doc)
        return StoredJob(doc, tuple(transcript))

    async def update_job(
        self, job_id: str, mutate: JobMutation, *, log: Sequence[str] = ()
    ) -> tuple[Job, bool]:
        lines = [_text(line) for line in log]

        async def write(version: int, draft: Job, new_doc: str, moved: bool) -> bool:
            params = [job_id, version, *_job_params(draft, new_doc)]
            if lines:
                statement, params = _UPDATE_JOB_LOG, [*params, lines]
            else:
                statement = _UPDATE_JOB_NOTIFY if moved else _UPDATE_JOB_QUIET
            async with self._driver() as db:
                written = await db.fetchrow(statement, *params)
            if written is None:
                return False
            if lines:
                self.bus.publish_lines(job_id, _entries(written[0], lines))
            if moved:
                self.bus.publish_status(job_id, draft.status)
            return True

        return await self._docs.update(job_id, mutate, self._read_job, write)

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        conditions = job_conditions(jobs, query, _contains)
        count = select(func.count()).select_from(jobs).where(*conditions)
        page = (
            select(jobs.c.doc)
            .where(*conditions)
            .order_by(jobs.c.created_at.desc(), jobs.c.rowid.desc())
            .limit(max(query.limit, 0))
            .offset(max(query.offset, 0))
        )
        async with self._connect() as conn:
            # one snapshot for both queries
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                total = await conn.scalar(count)
                docs = (await conn.scalars(page)).all() if query.limit > 0 else []
        return [load_job(doc) for doc in docs], int(total or 0)

    async def jobs_with_status(self, statuses: frozenset[str] | set[str]) -> list[Job]:
        if not statuses:
            return []
        statement = (
            select(jobs.c.doc)
            .where(jobs.c.status.in_(sorted(statuses)))
            .order_by(jobs.c.created_at.asc(), jobs.c.rowid.asc())
        )
        async with self._connect() as conn:
            docs = (await conn.scalars(statement)).all()
        return [load_job(doc) for doc in docs]

    async def status_totals(self) -> dict[str, StatusTotal]:
        async with self._driver() as db:
            rows = await db.fetch(_STATUS_TOTALS)
        return {status: StatusTotal(int(count), float(spent)) for status, count, spent in rows}

    # -- transcripts -------------------------------------------------------------------

    async def append_transcript(self, job_id: str, messages: list[ConversationMessage]) -> None:
        if not messages:
            return
        encoded = [m.model_dump_json(by_alias=True) for m in messages]
        while True:
            try:
                async with self._driver() as db:
                    await db.execute(_APPEND_MESSAGES, job_id, encoded)
                return
            except Exception as exc:
                if not _is_duplicate(exc):
                    raise

    async def read_transcript(self, job_id: str) -> list[ConversationMessage]:
        async with self._driver() as db:
            rows = await db.fetch(_READ_TRANSCRIPT, job_id)
        return [ConversationMessage.model_validate_json(message) for (message,) in rows]

    async def clear_transcript(self, job_id: str) -> None:
        async with self._driver() as db:
            await db.execute(_CLEAR_TRANSCRIPT, job_id)

    async def replace_transcript(self, job_id: str, messages: list[ConversationMessage]) -> None:
        encoded = [m.model_dump_json(by_alias=True) for m in messages]
        while True:
            try:
                async with self._driver() as db, db.transaction():
                    await db.execute(_CLEAR_TRANSCRIPT, job_id)
                    if encoded:
                        await db.execute(_APPEND_MESSAGES, job_id, encoded)
                return
            except Exception as exc:
                if not _is_duplicate(exc):
                    raise

    # -- logs --------------------------------------------------------------------------

    async def append_logs(self, job_id: str, lines: list[str]) -> list[LogEntry]:
        if not lines:
            return []
        stored = [_text(line) for line in lines]
        # the job's lock keeps this process's appends in the order they were made
        async with self._docs.lock(job_id), self._driver() as db:
            start: int = await db.fetchval(_APPEND_LOGS, job_id, stored)
        entries = _entries(start, stored)
        self.bus.publish_lines(job_id, entries)
        return entries

    async def read_logs(
        self, job_id: str, after: int = -1, limit: int | None = None
    ) -> list[LogEntry]:
        if limit is not None and limit <= 0:
            return []
        async with self._driver() as db:
            rows = await db.fetch(_READ_LOGS, job_id, after, limit)
        return [LogEntry(index=seq, line=line) for seq, line in rows]

    async def count_logs(self, job_id: str) -> int:
        async with self._driver() as db:
            count = await db.fetchval(_COUNT_LOGS, job_id)
        return int(count or 0)

    # -- plumbing ----------------------------------------------------------------------

    def _require_engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._engine

    def _connect(self) -> AsyncConnection:
        return self._require_engine().connect()

    def _driver(self) -> _Lease:
        """An asyncpg connection of the hot pool, for one statement (or transaction)."""
        if self._hot is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._hot.connection()

    async def _read_job(self, job_id: str) -> tuple[int, str] | None:
        """`(version, doc)` as stored (and remembered), or None."""
        async with self._driver() as db:
            row = await db.fetchrow(_SELECT_JOB, job_id)
        if row is None:
            self._docs.forget(job_id)
            return None
        doc, version = row
        self._docs.remember(job_id, version, doc)
        return version, doc

    async def _job_status(self, job_id: str) -> str | None:
        async with self._driver() as db:
            status: str | None = await db.fetchval(_SELECT_STATUS, job_id)
        return status


def _entries(start: int, lines: list[str]) -> list[LogEntry]:
    return [LogEntry(index=start + n, line=line) for n, line in enumerate(lines)]


def _contains(column: ColumnElement[str], needle: str) -> ColumnElement[bool]:
    # strpos(), not LIKE: a plain substring test, no wildcards to escape
    return func.strpos(column, _text(needle)) > 0


def _is_server_error(exc: BaseException) -> bool:
    """An error the server reported for one statement (the connection stays usable)."""
    return getattr(exc, "sqlstate", None) is not None and not isinstance(exc, OSError)


def _failure(what: str, exc: Exception) -> RuntimeError:
    """A RuntimeError naming what failed and why, without the URL's password (raise it
    `from None`: the driver's own error may not be so careful)."""
    cause: BaseException = exc
    while isinstance(cause, DBAPIError) and cause.orig is not None:
        cause = cause.orig  # the driver's words, not SQLAlchemy's wrapping of them
    reason = str(cause).strip() or type(cause).__name__
    return RuntimeError(f"PostgreSQL state backend: {what}: {reason}")


# --- the hot pool ------------------------------------------------------------------------


class _Lease:
    """One connection of a `_Pool` for the length of an `async with` (a plain class: a
    generator-based context manager costs several more calls per statement)."""

    __slots__ = ("_connection", "_pool")

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._connection: Any = None

    async def __aenter__(self) -> Any:
        self._connection = await self._pool._acquire()
        return self._connection

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        connection, self._connection = self._connection, None
        # a server-side error leaves the connection usable; anything else (a lost
        # connection, a statement cancelled half-way) may not
        broken = exc is not None and (not _is_server_error(exc) or connection.is_in_transaction())
        self._pool._release(connection, broken=broken)


async def _connect(url: URL, settings: dict[str, str]) -> Any:
    """A new asyncpg connection to the database of `url`."""
    import asyncpg

    return await asyncpg.connect(
        **url.translate_connect_args(username="user"), **dict(url.query), server_settings=settings
    )


class _Pool:
    """asyncpg connections for the hot statements, opened on demand, at most `size`.

    SQLAlchemy's pool costs more per checkout than a short statement takes; this one is a
    free list. `pids` are the server processes of its open connections: notifications
    they send are this backend's own.
    """

    def __init__(self, url: URL, size: int) -> None:
        self._url = url
        self._size = size
        self._idle: list[Any] = []
        self._opened = 0  # connections open or being opened
        # callers waiting for a connection: handed one, or None (open one in its place)
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._closed = False
        self.pids: set[int] = set()

    def connection(self) -> _Lease:
        """`async with pool.connection() as connection:` one connection of the pool."""
        return _Lease(self)

    async def _acquire(self) -> Any:
        if self._closed:
            raise RuntimeError("the PostgreSQL state backend is closed")
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():
                return connection
            self._release(connection, broken=True)  # the server went away meanwhile
        if self._opened >= self._size:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._hand_over(waiter.result())  # handed over as it was cancelled
                raise
            if handed is not None:
                return handed
        else:
            self._opened += 1
        try:  # a free place: open a connection in it
            connection = await _connect(self._url, _SESSION_SETTINGS)
        except BaseException:
            self._hand_over(None)
            raise
        self.pids.add(connection.get_server_pid())
        return connection

    def _release(self, connection: Any, *, broken: bool) -> None:
        if broken or self._closed or connection.is_closed():
            self.pids.discard(connection.get_server_pid())
            connection.terminate()
            self._hand_over(None)
        else:
            self._hand_over(connection)

    def _hand_over(self, connection: Any) -> None:
        """Give a connection (or, with None, a free place) to the first waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if connection is None:
            self._opened -= 1
        else:
            self._idle.append(connection)

    async def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the PostgreSQL state backend is closed"))
        idle, self._idle = self._idle, []
        for connection in idle:
            self.pids.discard(connection.get_server_pid())
            await _close_quietly(connection)
        self._opened -= len(idle)


# --- live logs from other processes -------------------------------------------------------


class _Listener:
    """LISTENs on `CHANNEL` over a dedicated connection (reconnecting when it is lost)
    and catches up the backend's bus on the jobs other processes wrote to.

    It connects when a first subscriber follows a job, not before: a process that never
    streams a log (a CLI command, `coro mcp`, a runner nobody watches) holds no extra
    connection and is not woken by every other process's writes. While it listens, it
    checks the connection after `_LISTENER_PING_SECONDS` without a notification; a check
    that finds no job followed any more closes it (the next follower listens again), so
    an idle runner has neither the connection nor the timer.
    """

    def __init__(self, backend: PostgresStateBackend) -> None:
        self._backend = backend
        self._catch_up = CatchUp(backend.bus, backend.read_logs, backend._job_status)
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._catch_up.close()
        connection, self._connection = self._connection, None
        if connection is not None:
            await _close_quietly(connection)

    def follow(self, job_id: str) -> None:
        """`LogBus.on_follow`: a subscriber has replayed storage. Catch it up now if
        listening; otherwise (re)connecting will, once it listens: it catches up every
        watched job."""
        if self._connection is not None:
            self._catch_up.job_changed(job_id)
        elif self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _listen(self) -> Any:
        connection = await _connect(self._backend.url, {"application_name": "coro-listener"})
        try:
            await connection.add_listener(CHANNEL, self._notified)
        except BaseException:
            await _close_quietly(connection)
            raise
        return connection

    async def _run(self) -> None:
        bus = self._backend.bus
        delay = _RECONNECT_SECONDS[0]
        while True:
            connection = self._connection
            if connection is None:
                try:
                    connection = self._connection = await self._listen()
                except Exception as exc:
                    logger.warning(
                        "state: cannot listen on %s (%s); retrying in %.1fs",
                        masked(self._backend.url),
                        type(exc).__name__,
                        delay,
                    )
                    await asyncio.sleep(delay)  # a reconnection backoff, not a poll
                    delay = min(delay * 2, _RECONNECT_SECONDS[1])
                    continue
                delay = _RECONNECT_SECONDS[0]
                # whatever other processes wrote while nobody listened
                for job_id in bus.watched_jobs():
                    self._catch_up.job_changed(job_id)
            lost = await _until_lost(connection, unwatched=lambda: not bus.watched_jobs())
            self._connection = None
            await _close_quietly(connection)
            if not lost and not bus.watched_jobs():  # nobody follows a log any more
                self._task = None  # the next `follow` listens again
                return

    def _notified(self, _connection: Any, pid: int, _channel: str, job_id: str) -> None:
        # this backend's own writes were published when they returned
        hot = self._backend._hot
        if hot is None or pid not in hot.pids:
            self._catch_up.job_changed(job_id)


async def _until_lost(connection: Any, unwatched: Callable[[], bool]) -> bool:
    """Wait while the connection is of use: True once it is gone (checked with a query
    when quiet a while), False when that check finds no job `watched` any more."""
    lost = asyncio.Event()
    connection.add_termination_listener(lambda _conn: lost.set())
    while not connection.is_closed():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lost.wait(), _LISTENER_PING_SECONDS)
            return True
        if unwatched():
            return False
        try:
            await asyncio.wait_for(connection.execute("SELECT 1"), _LISTENER_PING_SECONDS)
        except Exception:
            return True
    return True


async def _close_quietly(connection: Any) -> None:
    try:
        await asyncio.wait_for(connection.close(), 5)
    except Exception:
        connection.terminate()


__all__ = [
    "CHANNEL",
    "MIGRATIONS_DIR",
    "PostgresStateBackend",
    "current_revision",
    "masked",
    "metadata",
    "postgres_url",
    "upgrade_postgres",
]
