"""What a SQL backend remembers of the jobs it wrote or read: each job's last known
`(version, doc)`, so an `update_job` usually needs no read round trip (a stale entry
costs one failed compare-and-set and a retry), and one lock per job, so updates of a job
within one backend object do not retry against each other; and the optimistic update
loop both SQL backends run on it (`JobDocCache.update`)."""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from coro.domain.models import Job, iso_now
from coro.state.backend import JobMutation, JobNotFound
from coro.state.rows import dump_job, load_job

#: Reads a job's stored `(version, doc)` (remembering it), or None.
ReadJob = Callable[[str], Awaitable[tuple[int, str] | None]]
#: Writes `(draft, new doc)` over `version` if that is still the stored one (a
#: compare-and-set), publishing what it wrote; whether it wrote. The last argument:
#: whether the mutation changed the job's status.
WriteJob = Callable[[int, Job, str, bool], Awaitable[bool]]

#: Characters of job documents kept (the least recently stored go first).
DOC_CACHE_CHARS = 8 * 1024 * 1024

K = TypeVar("K")
V = TypeVar("V")


class SizedLru(Generic[K, V]):
    """A mapping that keeps its most recently stored entries up to a total size (each
    entry's measured by `size`); the least recently stored go first."""

    def __init__(self, limit: int, size: Callable[[V], int]) -> None:
        self.limit = limit
        self._size = size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._total = 0

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        self._entries[key] = value
        self._total += self._size(value)
        while self._total > self.limit and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._total -= self._size(evicted)

    def pop(self, key: K) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._total -= self._size(old)

    def clear(self) -> None:
        self._entries.clear()
        self._total = 0


class JobDocCache:
    def __init__(self) -> None:
        self._docs: SizedLru[str, tuple[int, str]] = SizedLru(
            DOC_CACHE_CHARS, lambda kept: len(kept[1])
        )
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def get(self, job_id: str) -> tuple[int, str] | None:
        return self._docs.get(job_id)

    def remember(self, job_id: str, version: int, doc: str) -> None:
        """Keep a job's document unless a newer version is already kept."""
        old = self._docs.get(job_id)
        if old is None or old[0] <= version:
            self._docs.put(job_id, (version, doc))

    def forget(self, job_id: str) -> None:
        self._docs.pop(job_id)

    def clear(self) -> None:
        self._docs.clear()

    def lock(self, job_id: str) -> asyncio.Lock:
        """The job's update lock (dropped once nobody holds or waits for it)."""
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = asyncio.Lock()
        return lock

    async def update(
        self, job_id: str, mutate: JobMutation, read: ReadJob, write: WriteJob
    ) -> tuple[Job, bool]:
        """`update_job`: apply `mutate` to the latest known document and write it with a
        compare-and-set on its version; when another writer got in first, or the
        mutation failed or declined on a cached copy that is no longer the job, read the
        stored one and apply it again."""
        async with self.lock(job_id):
            cached = self.get(job_id)
            # `fresh`: `current` was just read from the database, not taken from the cache
            fresh = cached is None
            current = cached if cached is not None else await read(job_id)
            while True:
                if current is None:
                    raise JobNotFound(job_id)
                version, doc = current
                draft = load_job(doc)
                before = draft.status
                try:
                    decision = mutate(draft)
                except Exception:
                    if fresh:
                        raise
                    stored = await read(job_id)
                    if stored is not None and stored[0] == version:
                        raise
                    current, fresh = stored, True  # it failed on an outdated copy
                    continue
                if decision is False:
                    if not fresh:  # declined on a cached copy: is that still the job?
                        stored = await read(job_id)
                        if stored is None or stored[0] != version:
                            current, fresh = stored, True
                            continue
                    return load_job(doc), False
                draft.updated_at = iso_now()
                new_doc = dump_job(draft)
                if await write(version, draft, new_doc, draft.status != before):
                    self.remember(job_id, version + 1, new_doc)
                    return draft, True
                # Another writer updated the job since that version: start over from
                # the stored one (the mutation runs again).
                self.forget(job_id)
                current, fresh = await read(job_id), True
