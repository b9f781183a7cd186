"""Contract tests of what the SQLite backend's fast paths rely on (see `coro.state.sqlite`).

The backend keeps the last `(version, doc)` of each job it touched, so an update
usually starts from a cached copy; group-commits every queued write in one transaction;
and numbers log lines from in-memory counters while no other connection has written.
These tests pin down that none of that is visible: other writers (another backend on
the same file, or another process) are never overwritten or renumbered, one bad write
fails only its caller, and what was queued before `close()` is committed.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coro.domain.models import Job
from coro.state import doc_cache
from coro.state.backend import JobExists
from coro.state.sqlite import SqliteStateBackend
from tests.test_state import add_work_item, db_path, make_job

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[SqliteStateBackend, SqliteStateBackend]]:
    """Two backends on one file, as two processes would be."""
    path = db_path(tmp_path)
    left, right = SqliteStateBackend(path), SqliteStateBackend(path)
    await left.open()
    await right.open()
    try:
        yield left, right
    finally:
        await left.close()
        await right.close()


def item_names(job: Job | None) -> list[str]:
    assert job is not None
    return sorted(item.name for item in job.work_items)


async def test_update_after_another_writer_keeps_its_fields(
    pair: tuple[SqliteStateBackend, SqliteStateBackend],
) -> None:
    left, right = pair
    await left.create_job(make_job("job-1"))
    await left.update_job("job-1", add_work_item("left-1"))  # left now has a copy

    await right.update_job("job-1", add_work_item("right"))
    updated, written = await left.update_job("job-1", add_work_item("left-2"))

    assert written is True
    assert item_names(updated) == ["left-1", "left-2", "right"]
    assert item_names(await right.get_job("job-1")) == ["left-1", "left-2", "right"]


async def test_a_declining_mutation_is_decided_again_on_the_stored_job(
    pair: tuple[SqliteStateBackend, SqliteStateBackend],
) -> None:
    left, right = pair
    await left.create_job(make_job("job-1", status="planning"))

    def finish(job: Job) -> None:
        job.status = "complete"

    await right.update_job("job-1", finish)
    seen: list[str] = []

    def only_when_complete(job: Job) -> bool:
        seen.append(job.status)
        if job.status != "complete":
            return False
        job.params["archived"] = True
        return True

    updated, written = await left.update_job("job-1", only_when_complete)

    assert written is True
    assert seen[-1] == "complete"
    assert updated.status == "complete" and updated.params["archived"] is True


async def test_a_mutation_failing_on_an_outdated_copy_runs_again_on_the_stored_job(
    pair: tuple[SqliteStateBackend, SqliteStateBackend],
) -> None:
    left, right = pair
    await left.create_job(make_job("job-1"))
    await right.update_job("job-1", add_work_item("needed"))

    def start_needed(job: Job) -> None:
        item = job.find_work_item("needed")
        if item is None:
            raise LookupError("no such work item")
        item.status = "in-progress"

    updated, written = await left.update_job("job-1", start_needed)

    assert written is True
    assert [(w.name, w.status) for w in updated.work_items] == [("needed", "in-progress")]


async def test_a_declining_mutation_on_the_current_job_writes_nothing(
    pair: tuple[SqliteStateBackend, SqliteStateBackend],
) -> None:
    left, right = pair
    await left.create_job(make_job("job-1"))
    await left.update_job("job-1", add_work_item("a"))
    before = await right.get_job("job-1")

    returned, written = await left.update_job("job-1", lambda job: False)

    assert written is False
    assert returned == before
    assert await right.get_job("job-1") == before


async def test_updates_are_visible_to_another_backend_once_returned(
    pair: tuple[SqliteStateBackend, SqliteStateBackend],
) -> None:
    left, right = pair
    for n in range(5):
        await left.create_job(make_job(f"job-{n}"))

    await asyncio.gather(
        *(left.update_job(f"job-{n}", add_work_item(f"item-{n}")) for n in range(5))
    )

    for n in range(5):
        assert item_names(await right.get_job(f"job-{n}")) == [f"item-{n}"]


async def test_a_failing_write_fails_only_its_caller(tmp_path: Path) -> None:
    store = SqliteStateBackend(db_path(tmp_path))
    await store.open()
    try:
        await store.create_job(make_job("job-1"))

        # queued together, so they share a transaction until the duplicate fails it
        results = await asyncio.gather(
            store.append_logs("job-1", ["first"]),
            store.create_job(make_job("job-1")),
            store.update_job("job-1", add_work_item("kept")),
            store.create_job(make_job("job-2")),
            store.append_logs("job-1", ["second"]),
            return_exceptions=True,
        )

        assert isinstance(results[1], JobExists)
        assert not any(isinstance(r, BaseException) for i, r in enumerate(results) if i != 1)
        assert item_names(await store.get_job("job-1")) == ["kept"]
        assert await store.get_job("job-2") is not None
        lines = [(e.index, e.line) for e in await store.read_logs("job-1")]
        assert lines == [(0, "first"), (1, "second")]
    finally:
        await store.close()


async def test_close_commits_what_was_queued_before_it(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    store = SqliteStateBackend(path)
    await store.open()
    await store.create_job(make_job("job-1"))
    appends = [asyncio.create_task(store.append_logs("job-1", [f"line {n}"])) for n in range(20)]
    update = asyncio.create_task(store.update_job("job-1", add_work_item("late")))
    await asyncio.sleep(0)  # every task has queued its write

    await store.close()

    appended = await asyncio.gather(*appends)
    assert sorted(e.index for entries in appended for e in entries) == list(range(20))
    assert (await update)[1] is True
    with pytest.raises(RuntimeError):
        await store.append_logs("job-1", ["after close"])
    reopened = SqliteStateBackend(path)
    await reopened.open()
    try:
        assert await reopened.count_logs("job-1") == 20
        assert item_names(await reopened.get_job("job-1")) == ["late"]
    finally:
        await reopened.close()


async def test_a_cancelled_append_leaves_the_indexes_contiguous(tmp_path: Path) -> None:
    store = SqliteStateBackend(db_path(tmp_path))
    await store.open()
    try:
        for _ in range(10):
            task = asyncio.create_task(store.append_logs("job-1", ["maybe"]))
            await asyncio.sleep(0)
            task.cancel()
            await store.append_logs("job-1", ["sure"])

        stored = await store.read_logs("job-1")
        assert [e.index for e in stored] == list(range(len(stored)))
        assert [e.line for e in stored].count("sure") == 10
    finally:
        await store.close()


async def test_documents_larger_than_the_cache_still_update_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doc_cache, "DOC_CACHE_CHARS", 10)  # nothing stays cached
    store = SqliteStateBackend(db_path(tmp_path))
    await store.open()
    try:
        await store.create_job(make_job("job-1"))

        await asyncio.gather(
            *(store.update_job("job-1", add_work_item(f"item-{n}")) for n in range(20))
        )

        assert item_names(await store.get_job("job-1")) == sorted(f"item-{n}" for n in range(20))
    finally:
        await store.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from coro.domain.models import Job, WorkItem
    from coro.state.sqlite import SqliteStateBackend

    async def main(path: str, rounds: int) -> None:
        store = SqliteStateBackend(Path(path))
        await store.open()
        print("ready", flush=True)
        sys.stdin.readline()

        def add(n: int):
            def mutate(job: Job) -> None:
                job.work_items.append(WorkItem(name=f"child-{n}"))
            return mutate

        for n in range(rounds):
            await store.update_job("job-1", add(n))
            await store.append_logs("job-1", [f"child {n}a", f"child {n}b"])
        await store.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_two_processes_on_one_file_lose_no_update_and_no_line(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    rounds = 60
    store = SqliteStateBackend(path)
    await store.open()
    try:
        await store.create_job(make_job("job-1"))
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            str(path),
            str(rounds),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        assert (await child.stdout.readline()).strip() == b"ready"
        child.stdin.write(b"go\n")
        await child.stdin.drain()

        async def parent_round(n: int) -> Any:
            await store.update_job("job-1", add_work_item(f"parent-{n}"))
            return await store.append_logs("job-1", [f"parent {n}a", f"parent {n}b"])

        mine = [await parent_round(n) for n in range(rounds)]
        assert await asyncio.wait_for(child.wait(), 60) == 0

        expected = sorted(
            [f"parent-{n}" for n in range(rounds)] + [f"child-{n}" for n in range(rounds)]
        )
        assert item_names(await store.get_job("job-1")) == expected
        stored = await store.read_logs("job-1")
        assert [e.index for e in stored] == list(range(4 * rounds))
        by_index = {e.index: e.line for e in stored}
        for entries in mine:  # what this process was told is what is stored
            assert [by_index[e.index] for e in entries] == [e.line for e in entries]
            assert entries[1].index == entries[0].index + 1
        for n in range(rounds):  # each call's lines stay together, in order
            first = next(e.index for e in stored if e.line == f"child {n}a")
            assert by_index[first + 1] == f"child {n}b"
    finally:
        await store.close()
