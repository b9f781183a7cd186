"""Replicating a hybrid runner's jobs, log lines and proposals to its team cloud.

The local backend is the truth and the buffer: what changed is only *noted* here (a job
or proposal id), and the replicator reads the stored state when it sends, so nothing is
lost while the link is down and a burst of changes is sent as one. Per job it sends
`job:update{jobId, rev, job}` (the whole job) before `job:log{jobId, entries}` (the lines
the cloud lacks, in order), and advances its cursor only once the cloud acknowledged.

The cursor is durable (`SyncCursors`, a small SQLite file beside the runner's home): per
job the last revision *sent* (saved before sending, so a revision is never reused even
after a crash — the cloud keeps only higher ones), the fingerprint of the document the
cloud acknowledged, and how many lines it acknowledged. At start and after every
reconnect every local job is compared with its cursor and what the cloud lacks is sent;
the cloud's revision and line-index checks make a replay store nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import aiosqlite
from pydantic import ValidationError

from coro.domain.cloud_protocol import (
    LOG_BATCH_INTERVAL_SECONDS,
    MAX_FRAME_BYTES,
    MAX_LOG_LINES_PER_FRAME,
    JobLog,
    JobUpdate,
    LogLine,
    ProposalCreate,
)
from coro.domain.models import LogEntry
from coro.state.backend import JobQuery, StateBackend
from coro.state.cloud.link import CloudLink, LinkDown, RpcError, new_message_id

logger = logging.getLogger(__name__)

#: what one frame may carry, leaving room for the envelope
FRAME_BUDGET = MAX_FRAME_BYTES - 64 * 1024
#: the protocol's bound on one line
MAX_LINE_CHARS = 1_000_000
#: jobs (or proposals) replicated at once; one job's changes are always sent in order
DEFAULT_WORKERS = 4
_PAGE = 200

Kind = Literal["job", "proposal"]
Key = tuple[Kind, str]


def fingerprint(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class JobCursor:
    #: the last revision sent (saved before it is sent: never reused)
    rev: int = 0
    #: the document the cloud acknowledged
    fingerprint: str | None = None
    #: lines the cloud acknowledged (indexes below this)
    logs: int = 0


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, rev INTEGER NOT NULL, "
    "fingerprint TEXT, logs INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS proposals (proposal_id TEXT PRIMARY KEY, "
    "fingerprint TEXT NOT NULL)",
)


class SyncCursors:
    """The replication cursors, kept in `path` (SQLite) and in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jobs: dict[str, JobCursor] = {}
        self.proposals: dict[str, str] = {}
        #: the team the cursors are about (another team's cloud has none of it)
        self.team_id: str | None = None
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
        db = await aiosqlite.connect(self.path)
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA:
            await db.execute(statement)
        await db.commit()
        async with db.execute("SELECT job_id, rev, fingerprint, logs FROM jobs") as rows:
            async for job_id, rev, fp, logs in rows:
                self.jobs[job_id] = JobCursor(rev, fp, logs)
        async with db.execute("SELECT proposal_id, fingerprint FROM proposals") as rows:
            async for proposal_id, fp in rows:
                self.proposals[proposal_id] = fp
        async with db.execute("SELECT value FROM meta WHERE key = 'team_id'") as rows:
            found = await rows.fetchone()
            self.team_id = found[0] if found else None
        self._db = db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    def job(self, job_id: str) -> JobCursor:
        return self.jobs.get(job_id) or JobCursor()

    async def save_job(self, job_id: str, cursor: JobCursor) -> None:
        self.jobs[job_id] = cursor
        await self._write(
            "INSERT INTO jobs (job_id, rev, fingerprint, logs) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET rev = excluded.rev, "
            "fingerprint = excluded.fingerprint, logs = excluded.logs",
            (job_id, cursor.rev, cursor.fingerprint, cursor.logs),
        )

    async def save_proposal(self, proposal_id: str, fp: str) -> None:
        self.proposals[proposal_id] = fp
        await self._write(
            "INSERT INTO proposals (proposal_id, fingerprint) VALUES (?, ?) "
            "ON CONFLICT (proposal_id) DO UPDATE SET fingerprint = excluded.fingerprint",
            (proposal_id, fp),
        )

    async def change_team(self, team_id: str) -> None:
        """Another team's cloud has nothing of ours: forget what was acknowledged (the
        revisions sent stay, they only ever grow)."""
        self.team_id = team_id
        self.jobs = {k: JobCursor(rev=c.rev) for k, c in self.jobs.items()}
        self.proposals = {}
        db = self._require()
        await db.execute("UPDATE jobs SET fingerprint = NULL, logs = 0")
        await db.execute("DELETE FROM proposals")
        await db.execute(
            "INSERT INTO meta (key, value) VALUES ('team_id', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (team_id,),
        )
        await db.commit()

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        db = self._require()
        await db.execute(sql, params)
        await db.commit()

    def _require(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the sync cursors are not open")
        return self._db


class Replicator:
    """Sends what changed locally to the cloud, in order per job, durably."""

    def __init__(
        self,
        local: StateBackend,
        link: CloudLink,
        cursors: SyncCursors,
        *,
        batch_interval: float = LOG_BATCH_INTERVAL_SECONDS,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.local = local
        self.link = link
        self.cursors = cursors
        self.batch_interval = batch_interval
        self.worker_count = workers
        self._scheduled: dict[Key, asyncio.TimerHandle] = {}
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._busy: set[Key] = set()
        self._again: set[Key] = set()
        self._resyncs: set[asyncio.Task[None]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        #: jobs whose change the cloud refused (logged once per document)
        self._refused: dict[str, str] = {}

    async def start(self) -> None:
        await self.cursors.open()
        self.link.on_connected.append(self._connected)
        self._workers = [
            asyncio.create_task(self._work(), name=f"coro-cloud-replicator-{n}")
            for n in range(self.worker_count)
        ]
        if self.link.state == "connected":
            self._connected()

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.link.on_connected.remove(self._connected)
        for handle in self._scheduled.values():
            handle.cancel()
        self._scheduled.clear()
        tasks = [*self._workers, *self._resyncs]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers = []
        await self.cursors.close()

    # --- what changed -------------------------------------------------------------------

    def job_changed(self, job_id: str) -> None:
        self._changed(("job", job_id), self.batch_interval)

    def proposal_changed(self, proposal_id: str) -> None:
        self._changed(("proposal", proposal_id), self.batch_interval)

    def _changed(self, key: Key, delay: float) -> None:
        if key in self._busy:
            self._again.add(key)
        elif key not in self._queued and key not in self._scheduled:
            if delay > 0:
                loop = asyncio.get_running_loop()
                self._scheduled[key] = loop.call_later(delay, self._ready, key)
            else:
                self._ready(key)
        self._update_idle()

    def _ready(self, key: Key) -> None:
        self._scheduled.pop(key, None)
        if key in self._busy:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
        self._update_idle()

    def _update_idle(self) -> None:
        if self._scheduled or self._queued or self._busy or self._resyncs:
            self._idle.clear()
        else:
            self._idle.set()

    async def flush(self) -> None:
        """Wait until everything noted so far is acknowledged by the cloud (bound it with
        a timeout: while the link is down this waits for it)."""
        for key in list(self._scheduled):
            self._scheduled.pop(key).cancel()
            self._ready(key)
        await self._idle.wait()

    # --- resync -------------------------------------------------------------------------

    def _connected(self) -> None:
        task = asyncio.create_task(self._resync())
        self._resyncs.add(task)
        self._update_idle()

        def done(finished: asyncio.Task[None]) -> None:
            self._resyncs.discard(finished)
            self._update_idle()

        task.add_done_callback(done)

    async def _resync(self) -> None:
        """Note every local job and proposal: the workers send what the cloud lacks."""
        try:
            team_id = self.link.team_id
            if team_id is not None and team_id != self.cursors.team_id:
                await self.cursors.change_team(team_id)
            offset = 0
            while True:
                page, total = await self.local.list_jobs(JobQuery(limit=_PAGE, offset=offset))
                for job in page:
                    self._changed(("job", job.id), 0)
                offset += len(page)
                if not page or offset >= total:
                    break
            for proposal in await self.local.proposals.list():
                self._changed(("proposal", proposal.id), 0)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("cloud resync: listing the local jobs failed")

    # --- the workers ----------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._busy.add(key)
            try:
                await self._sync_when_connected(key)
            finally:
                self._busy.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self._ready(key)
                self._update_idle()

    async def _sync_when_connected(self, key: Key) -> None:
        while True:
            await self.link.wait_for("connected")
            try:
                await self._sync(key)
                return
            except LinkDown:
                await asyncio.sleep(0)  # the link is down now: wait for it to come back
            except RpcError as exc:
                logger.warning("cloud refused the %s %s: %s", key[0], key[1], exc)
                return
            except ValidationError as exc:
                logger.warning("cannot replicate the %s %s: %s", key[0], key[1], exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("replicating the %s %s failed", key[0], key[1])
                return

    async def _sync(self, key: Key) -> None:
        kind, name = key
        if kind == "job":
            await self._sync_job(name)
        else:
            await self._sync_proposal(name)

    async def _sync_job(self, job_id: str) -> None:
        job = await self.local.get_job(job_id)
        if job is None:  # lines of a job that does not exist (yet) wait for it
            return
        # counted after the job was read: every line committed with or before this
        # version of it (the lines of a status change are written with it)
        count = await self.local.count_logs(job_id)
        cursor = self.cursors.job(job_id)
        if cursor.fingerprint is not None:
            # The cloud has the job: its lines go first, so a stream through the cloud
            # never sees a final status before the lines that led to it.
            cursor = await self._send_lines(job_id, cursor, count)
            cursor = await self._send_job(job_id, cursor, job.to_json())
        else:  # the lines need the job's row in the cloud
            cursor = await self._send_job(job_id, cursor, job.to_json())
            cursor = await self._send_lines(job_id, cursor, count)

    async def _send_job(self, job_id: str, cursor: JobCursor, doc: dict[str, Any]) -> JobCursor:
        fp = fingerprint(doc)
        if fp == cursor.fingerprint:
            return cursor
        rev = cursor.rev + 1
        frame = JobUpdate(
            type="job:update", message_id=new_message_id(), job_id=job_id, rev=rev, job=doc
        )
        if len(json.dumps(frame.to_wire())) > FRAME_BUDGET:
            if self._refused.get(job_id) != fp:
                self._refused[job_id] = fp
                logger.error("job %s is too large to replicate to the cloud", job_id)
            return cursor
        cursor = replace(cursor, rev=rev)
        await self.cursors.save_job(job_id, cursor)
        await self.link.call(frame)
        cursor = replace(cursor, fingerprint=fp)
        await self.cursors.save_job(job_id, cursor)
        return cursor

    async def _send_lines(self, job_id: str, cursor: JobCursor, count: int) -> JobCursor:
        while cursor.logs < count:
            entries = await self.local.read_logs(
                job_id,
                after=cursor.logs - 1,
                limit=min(MAX_LOG_LINES_PER_FRAME, count - cursor.logs),
            )
            if not entries:
                break
            lines = _frame_lines(entries)
            await self.link.call(
                JobLog(type="job:log", message_id=new_message_id(), job_id=job_id, entries=lines)
            )
            cursor = replace(cursor, logs=lines[-1].index + 1)
            await self.cursors.save_job(job_id, cursor)
        return cursor

    async def _sync_proposal(self, proposal_id: str) -> None:
        proposal = await self.local.proposals.get(proposal_id)
        if proposal is None:
            return
        doc = proposal.to_json()
        fp = fingerprint(doc)
        if self.cursors.proposals.get(proposal_id) == fp:
            return
        await self.link.call(
            ProposalCreate(type="proposal:create", message_id=new_message_id(), proposal=doc)
        )
        await self.cursors.save_proposal(proposal_id, fp)


def _frame_lines(entries: list[LogEntry]) -> list[LogLine]:
    """The first lines of `entries` that fit one frame (at least one, cut to the
    protocol's line bound)."""
    lines: list[LogLine] = []
    size = 0
    for entry in entries:
        text = entry.line[:MAX_LINE_CHARS]
        cost = len(json.dumps(text)) + 32
        if lines and size + cost > FRAME_BUDGET:
            break
        lines.append(LogLine(index=entry.index, line=text))
        size += cost
    return lines
