"""What a SQL backend remembers of the jobs it wrote or read: each job's last known
`(version, doc)`, so an `update_job` usually needs no read round trip (a stale entry
costs one failed compare-and-set and a retry), and one lock per job, so updates of a job
within one backend object do not retry against each other."""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict

#: Characters of job documents kept (the least recently used go first).
DOC_CACHE_CHARS = 8 * 1024 * 1024


class JobDocCache:
    def __init__(self) -> None:
        self._docs: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._chars = 0
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def get(self, job_id: str) -> tuple[int, str] | None:
        return self._docs.get(job_id)

    def remember(self, job_id: str, version: int, doc: str) -> None:
        """Keep a job's document unless a newer version is already kept."""
        old = self._docs.get(job_id)
        if old is not None:
            if old[0] > version:
                return
            self._chars -= len(old[1])
        self._docs[job_id] = (version, doc)
        self._docs.move_to_end(job_id)
        self._chars += len(doc)
        while self._chars > DOC_CACHE_CHARS and self._docs:
            _, (_, evicted) = self._docs.popitem(last=False)
            self._chars -= len(evicted)

    def forget(self, job_id: str) -> None:
        old = self._docs.pop(job_id, None)
        if old is not None:
            self._chars -= len(old[1])

    def clear(self) -> None:
        self._docs.clear()
        self._chars = 0

    def lock(self, job_id: str) -> asyncio.Lock:
        """The job's update lock (dropped once nobody holds or waits for it)."""
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = asyncio.Lock()
        return lock
