"""The cloud's mirror of team jobs (`team_jobs`, `team_job_logs`, `team_job_refs`).

Runners replicate the jobs they own here: the whole job with a revision that only grows
(`store` keeps a write only when its revision is higher than the stored one) and their
indexed log lines (`append_logs` keeps the ones it lacks), so a replay after a reconnect
stores nothing twice. The cloud writes a job itself only while no runner owns it
(`create_provisional`, `set_status`). Every query names the team: a team never sees,
changes or routes to another team's rows.

Listing follows the runner's `GET /jobs` (`coro.state.rows`): the same filters, the same
search haystack, newest first.

A write that moves a job the mirror had (a higher revision from its runner, or the
cloud's own `set_status`) is told to `observers` once committed: the team, and the job
with its status and number of pull requests before (`JobChange`, as the runner's
`JobStore.observers` see theirs). The team notifier (`coro.cloud.notifications`) hears
moves there: a write is kept by one instance only, and a replayed revision is not kept.

A job started by a trigger is also found by the thread it came from (`Job.origin`: a ref
of kind `thread`, its key case-folded): a comment there reaches the job's runner. The
newest job a team trigger starts in a thread takes it over (`create_provisional`); a
replicated job claims its thread only when no job has it.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import JSON, ColumnElement, and_, cast, func, or_, select
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.cloud.db import Database
from coro.cloud.schema import team_job_logs, team_job_refs, team_jobs
from coro.domain.models import ExternalRef, Job, JobOrigin, LogEntry, iso_now
from coro.state.backend import JobExists, JobNotFound, JobQuery
from coro.state.rows import dump_job, load_job, search_text
from coro.state.store import JobChange

logger = logging.getLogger(__name__)

#: told of a stored move: the team and the change (it must not block)
MoveObserver = Callable[[str, JobChange], None]


@dataclass(frozen=True)
class StoredJob:
    job: Job
    rev: int
    runner_id: str | None  # the runner that owns it; None while it waits for one


def job_refs(job: Job) -> Iterator[ExternalRef]:
    """What webhooks find the job by: its external refs and its pull requests (those of
    an unknown plugin cannot be routed and are left out)."""
    yield from job.external_refs
    for mapping in job.pr_mappings:
        plugin_id = job.scm_plugin_id(mapping.plugin_id, mapping.repo_slug)
        if plugin_id is not None:
            yield ExternalRef(
                kind="pull_request",
                plugin_id=plugin_id,
                repo_key=mapping.repo_slug,
                external_id=str(mapping.pr_id),
            )


def _ref_key(ref: ExternalRef) -> tuple[str, str, str, str]:
    return ref.kind, ref.plugin_id, ref.repo_key or "", ref.external_id


#: the ref kind of a job's origin thread
THREAD = "thread"


def thread_ref(origin: JobOrigin) -> tuple[str, str, str, str]:
    """The ref of the thread a job came from (`owner/name#12`, `PROJ-12`; any case)."""
    return THREAD, origin.plugin_id, "", origin.key.casefold()


@dataclass(frozen=True)
class ThreadJob:
    """The job a thread's comments go to, and the plugin of the thread."""

    job_id: str
    plugin_id: str


def _row(team_id: str, job: Job, rev: int, runner_id: str | None) -> dict[str, object]:
    return {
        "team_id": team_id,
        "id": job.id,
        "rev": rev,
        "runner_id": runner_id,
        "status": job.status,
        "type": job.type,
        "workflow_path": job.workflow_path,
        "campaign_parent_id": job.campaign_parent_id,
        "created_at": job.created_at,
        # PostgreSQL text cannot hold NUL (the JSON document escapes it)
        "search": search_text(job).replace("\x00", ""),
        "cost_usd": job.token_usage.total_cost_usd,
        # the conversation is not replicated (dump_job leaves it out)
        "doc": dump_job(job),
    }


def _conditions(team_id: str, query: JobQuery) -> list[ColumnElement[bool]]:
    """`coro.state.rows.job_conditions` over `team_jobs`, within one team."""
    c = team_jobs.c
    conditions: list[ColumnElement[bool]] = [c.team_id == team_id]
    if query.statuses:
        conditions.append(c.status.in_(query.statuses))
    if query.exclude_statuses:
        conditions.append(c.status.not_in(query.exclude_statuses))
    if query.type:
        conditions.append(c.type == query.type)
    if query.workflow_path:
        conditions.append(c.workflow_path == query.workflow_path)
    if query.campaign_parent_id:
        conditions.append(c.campaign_parent_id == query.campaign_parent_id)
    if query.text:
        # strpos(), not LIKE: a plain substring test, no wildcards to escape
        conditions.append(func.strpos(c.search, query.text.lower()) > 0)
    return conditions


def _job_key(team_id: str, job_id: str) -> ColumnElement[bool]:
    return and_(team_jobs.c.team_id == team_id, team_jobs.c.id == job_id)


class Mirror:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.observers: list[MoveObserver] = []

    async def _before(
        self, connection: AsyncConnection, team_id: str, job_id: str
    ) -> tuple[str, int] | None:
        """The stored job's status and number of pull requests, its row locked until the
        write commits (so the change told is the one this write made); None if new."""
        prs = func.json_array_length(cast(team_jobs.c.doc, JSON)["prMappings"])
        row = (
            await connection.execute(
                select(team_jobs.c.status, func.coalesce(prs, 0))
                .where(_job_key(team_id, job_id))
                .with_for_update()
            )
        ).first()
        return None if row is None else (row[0], int(row[1]))

    def _moved(self, team_id: str, change: JobChange) -> None:
        for observer in self.observers:
            try:
                observer(team_id, change)
            except Exception:  # an observer's bug never fails the write
                logger.exception("a mirror observer failed on job %s", change.job.id)

    async def store(self, team_id: str, job: Job, rev: int, runner_id: str | None) -> bool:
        """Keep `job` if `rev` is higher than the stored revision and the job is not
        another runner's; whether it was written."""
        row = _row(team_id, job, rev, runner_id)
        upsert = insert(team_jobs).values(**row)
        changed = {k: upsert.excluded[k] for k in row if k not in ("team_id", "id")}
        statement = upsert.on_conflict_do_update(
            index_elements=[team_jobs.c.team_id, team_jobs.c.id],
            set_={**changed, "stored_at": func.now()},
            # a job one runner owns is never taken over by another (nor by the cloud)
            where=and_(
                team_jobs.c.rev < upsert.excluded.rev,
                or_(
                    team_jobs.c.runner_id.is_(None),
                    team_jobs.c.runner_id == upsert.excluded.runner_id,
                ),
            ),
        ).returning(team_jobs.c.id)
        async with self.db.begin() as connection:
            before = await self._before(connection, team_id, job.id) if self.observers else None
            written = (await connection.execute(statement)).first() is not None
            refs = {_ref_key(ref) for ref in job_refs(job)}
            if job.origin is not None:
                refs.add(thread_ref(job.origin))
            if written and refs:
                # Refs are only added: one mapped by `map_ref` alone must outlive the next
                # replication, and a job keeps its PRs and tickets for life. The first job
                # to claim a ref keeps it (routing never flips between two jobs).
                await connection.execute(
                    insert(team_job_refs)
                    .values(
                        [
                            {
                                "team_id": team_id,
                                "kind": kind,
                                "plugin_id": plugin_id,
                                "repo_key": repo_key,
                                "external_id": external_id,
                                "job_id": job.id,
                            }
                            for kind, plugin_id, repo_key, external_id in sorted(refs)
                        ]
                    )
                    .on_conflict_do_nothing()
                )
        # a job first seen now moved from nothing: no notification (a runner's history
        # replicated when it joins the team must not tell of every old job)
        if written and before is not None:
            self._moved(team_id, JobChange(before[0], before[1], job))
        return written

    async def create_provisional(self, team_id: str, job: Job) -> None:
        """A job waiting for a runner (rev 0, no owner); `JobExists` if the id is taken."""
        statement = (
            insert(team_jobs)
            .values(**_row(team_id, job, 0, None))
            .on_conflict_do_nothing()
            .returning(team_jobs.c.id)
        )
        async with self.db.begin() as connection:
            if (await connection.execute(statement)).first() is None:
                raise JobExists(job.id)
            if job.origin is not None:
                await connection.execute(_route_ref(team_id, job.id, thread_ref(job.origin)))

    async def get(self, team_id: str, job_id: str) -> StoredJob | None:
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    select(team_jobs.c.doc, team_jobs.c.rev, team_jobs.c.runner_id).where(
                        _job_key(team_id, job_id)
                    )
                )
            ).first()
        return None if row is None else StoredJob(load_job(row.doc), row.rev, row.runner_id)

    async def list(self, team_id: str, query: JobQuery) -> tuple[builtins.list[Job], int]:
        """A page of the team's jobs matching `query`, newest first, and the total count."""
        conditions = _conditions(team_id, query)
        count = select(func.count()).select_from(team_jobs).where(*conditions)
        page = (
            select(team_jobs.c.doc)
            .where(*conditions)
            .order_by(team_jobs.c.created_at.desc(), team_jobs.c.id.desc())
            .limit(max(query.limit, 0))
            .offset(max(query.offset, 0))
        )
        async with self.db.engine.connect() as connection:
            # one snapshot for both queries
            connection = await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                total = await connection.scalar(count)
                docs = (await connection.scalars(page)).all() if query.limit > 0 else []
        return [load_job(doc) for doc in docs], int(total or 0)

    async def children(self, team_id: str, parent_id: str) -> builtins.list[Job]:
        """The campaign children of `parent_id`, oldest first."""
        async with self.db.begin() as connection:
            docs = (
                await connection.scalars(
                    select(team_jobs.c.doc)
                    .where(
                        team_jobs.c.team_id == team_id,
                        team_jobs.c.campaign_parent_id == parent_id,
                    )
                    .order_by(team_jobs.c.created_at.asc(), team_jobs.c.id.asc())
                )
            ).all()
        return [load_job(doc) for doc in docs]

    async def append_logs(self, team_id: str, job_id: str, entries: builtins.list[LogEntry]) -> int:
        """Keep the lines not stored yet; how many were new. `JobNotFound` if the team
        has no such job."""
        if not entries:
            return 0
        try:
            async with self.db.begin() as connection:
                if (
                    await connection.execute(
                        select(team_jobs.c.id).where(_job_key(team_id, job_id))
                    )
                ).first() is None:
                    raise JobNotFound(job_id)
                # one row per index even when a frame repeats one (the first line wins)
                unique = {entry.index: entry.line for entry in reversed(entries)}
                added = await connection.execute(
                    insert(team_job_logs)
                    .values(
                        [
                            {"team_id": team_id, "job_id": job_id, "idx": idx, "line": line}
                            for idx, line in sorted(unique.items())
                        ]
                    )
                    .on_conflict_do_nothing()
                    .returning(team_job_logs.c.idx)
                )
                return len(added.all())
        except IntegrityError:
            # the job was deleted between the check and the insert
            raise JobNotFound(job_id) from None

    async def read_logs(
        self, team_id: str, job_id: str, after: int = -1, limit: int | None = None
    ) -> builtins.list[LogEntry]:
        """Lines with index > `after`, ascending, at most `limit`."""
        statement = (
            select(team_job_logs.c.idx, team_job_logs.c.line)
            .where(
                team_job_logs.c.team_id == team_id,
                team_job_logs.c.job_id == job_id,
                team_job_logs.c.idx > after,
            )
            .order_by(team_job_logs.c.idx)
        )
        if limit is not None:
            statement = statement.limit(max(limit, 0))
        async with self.db.begin() as connection:
            rows = (await connection.execute(statement)).all()
        return [LogEntry(index=row.idx, line=row.line) for row in rows]

    async def count_logs(self, team_id: str, job_id: str) -> int:
        async with self.db.begin() as connection:
            count = await connection.scalar(
                select(func.count()).where(
                    team_job_logs.c.team_id == team_id, team_job_logs.c.job_id == job_id
                )
            )
        return int(count or 0)

    async def delete(self, team_id: str, job_id: str) -> bool:
        """Forget the job with its lines and refs; whether it existed."""
        async with self.db.begin() as connection:
            gone = await connection.execute(
                team_jobs.delete().where(_job_key(team_id, job_id)).returning(team_jobs.c.id)
            )
            return gone.first() is not None

    async def map_ref(self, team_id: str, job_id: str, ref: ExternalRef) -> bool:
        """Route `ref` to this job from now on (even if another job had it); False if
        the team has no such job."""
        try:
            async with self.db.begin() as connection:
                await connection.execute(_route_ref(team_id, job_id, _ref_key(ref)))
        except IntegrityError:
            return False  # no such job in this team (the foreign key)
        return True

    async def job_for_thread(self, team_id: str, thread: str) -> ThreadJob | None:
        """The team's job a comment in `thread` (`owner/name#12`, `PROJ-12`) goes to."""
        r = team_job_refs.c
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    select(r.job_id, r.plugin_id)
                    .where(
                        r.team_id == team_id,
                        r.kind == THREAD,
                        r.repo_key == "",
                        r.external_id == thread.casefold(),
                    )
                    .order_by(r.plugin_id)
                    .limit(1)
                )
            ).first()
        return None if row is None else ThreadJob(row.job_id, row.plugin_id)

    async def job_for_ref(self, team_id: str, ref: ExternalRef) -> str | None:
        """The id of the team's job `ref` belongs to (webhook routing)."""
        kind, plugin_id, repo_key, external_id = _ref_key(ref)
        async with self.db.begin() as connection:
            found: str | None = await connection.scalar(
                select(team_job_refs.c.job_id).where(
                    team_job_refs.c.team_id == team_id,
                    team_job_refs.c.kind == kind,
                    team_job_refs.c.plugin_id == plugin_id,
                    team_job_refs.c.repo_key == repo_key,
                    team_job_refs.c.external_id == external_id,
                )
            )
        return found

    async def set_status(
        self,
        team_id: str,
        job_id: str,
        mutate: Callable[[Job], None],
        log_line: str | None,
    ) -> Job | None:
        """The cloud's own write of a job no runner owns (cancel a queued job, fail a
        refused dispatch): `mutate` changes it, `updatedAt` is stamped, and `log_line`
        (text; timestamped here like the runner's lines) is appended after its last line.
        None if the team has no such job or a runner owns it."""
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    select(team_jobs.c.doc, team_jobs.c.rev)
                    .where(_job_key(team_id, job_id), team_jobs.c.runner_id.is_(None))
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            job = load_job(row.doc)
            before = JobChange(job.status, len(job.pr_mappings), job)
            mutate(job)
            job.updated_at = iso_now()
            values = _row(team_id, job, row.rev, None)
            await connection.execute(
                team_jobs.update()
                .where(_job_key(team_id, job_id))
                .values(
                    {k: v for k, v in values.items() if k not in ("team_id", "id")}
                    | {"stored_at": func.now()}
                )
            )
            if log_line is not None:
                last = await connection.scalar(
                    select(func.max(team_job_logs.c.idx)).where(
                        team_job_logs.c.team_id == team_id, team_job_logs.c.job_id == job_id
                    )
                )
                await connection.execute(
                    team_job_logs.insert().values(
                        team_id=team_id,
                        job_id=job_id,
                        idx=0 if last is None else last + 1,
                        line=f"{iso_now()} {log_line}",
                    )
                )
        self._moved(team_id, before)
        return job


def _route_ref(team_id: str, job_id: str, key: tuple[str, str, str, str]) -> Insert:
    """The upsert that routes the ref `key` to `job_id` (whichever job had it)."""
    kind, plugin_id, repo_key, external_id = key
    statement = insert(team_job_refs).values(
        team_id=team_id,
        kind=kind,
        plugin_id=plugin_id,
        repo_key=repo_key,
        external_id=external_id,
        job_id=job_id,
    )
    return statement.on_conflict_do_update(
        index_elements=[
            team_job_refs.c.team_id,
            team_job_refs.c.kind,
            team_job_refs.c.plugin_id,
            team_job_refs.c.repo_key,
            team_job_refs.c.external_id,
        ],
        set_={"job_id": statement.excluded.job_id},
    )
