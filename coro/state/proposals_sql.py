"""`SqlProposalStore`: the `ProposalStore` over the `proposals` table of
`coro.state.schema`, in SQLAlchemy Core that runs unchanged on SQLite and PostgreSQL.

Concurrency: "one proposal per (job, layer)" is the unique `slot` column (a concurrent
first proposal loses the insert and replaces the winner's instead, if still pending); a
replacement locks the row it replaces (`FOR UPDATE`; SQLite writers hold the database's
write lock). A decision takes the row with a compare-and-set (`UPDATE … WHERE status =
'pending' AND claim IS NULL`) and gives it back when done, so only one decider in any
process holds it; a hold older than `DECISION_EXPIRES_AFTER` counts as abandoned.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.domain.models import utcnow
from coro.state.proposals import (
    DECISION_EXPIRES_AFTER,
    Layer,
    Proposal,
    ProposalNotFound,
    Proposed,
    changed,
    refused,
    replaced,
)
from coro.state.schema import proposals as _TABLE
from coro.state.sqlcore import EngineSource, engine_getter, transaction

logger = logging.getLogger(__name__)

#: Tries at a write that lost a race on a unique key (the second sees the winner).
_ATTEMPTS = 2


class SqlProposalStore:
    """Proposals in the state database (the backend's engine; no engine of its own)."""

    def __init__(self, engine: EngineSource) -> None:
        self._engine = engine_getter(engine)

    def _transaction(self, *, write: bool) -> AbstractAsyncContextManager[AsyncConnection]:
        return transaction(self._engine(), write=write)

    # -- reading --

    async def list(self, status: str | None = None, tenant_id: str | None = None) -> list[Proposal]:
        t = _TABLE
        query = select(t.c.doc).order_by(t.c.created_at.desc(), t.c.id.desc())
        if status is not None:
            query = query.where(t.c.status == status)
        if tenant_id is not None:
            query = query.where(t.c.tenant_id == tenant_id)
        async with self._transaction(write=False) as db:
            docs = (await db.scalars(query)).all()
        return [p for p in map(_load, docs) if p is not None]

    async def get(self, proposal_id: str) -> Proposal | None:
        async with self._transaction(write=False) as db:
            row = await _row(db, _TABLE.c.id == proposal_id)
        return _load(row["doc"]) if row is not None else None

    async def find(self, job_id: str, layer: Layer) -> Proposal | None:
        async with self._transaction(write=False) as db:
            row = await _row(db, _TABLE.c.slot == _slot(job_id, layer))
        return _load(row["doc"]) if row is not None else None

    # -- writing --

    async def propose(self, proposal: Proposal) -> Proposed:
        slot = _slot(proposal.job_id, proposal.layer)
        for attempt in range(_ATTEMPTS):
            try:
                async with self._transaction(write=True) as db:
                    row = await _row(db, _TABLE.c.slot == slot, lock=True)
                    if row is None:
                        await db.execute(insert(_TABLE).values(_columns(proposal, slot=slot)))
                        return Proposed(proposal, updated=False)
                    existing = _require(row)
                    if existing.status != "pending" or _held(row):
                        raise refused(existing, proposing=True)
                    updated = replaced(existing, proposal)
                    await _write(db, updated)
                    return Proposed(updated, updated=True)
            except IntegrityError:
                if attempt + 1 == _ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def update(self, proposal_id: str, **changes: Any) -> Proposal:
        async with self._transaction(write=True) as db:
            row = await _row(db, _TABLE.c.id == proposal_id, lock=True)
            if row is None:
                raise ProposalNotFound(proposal_id)
            updated = changed(_require(row), changes)
            await _write(db, updated)
        return updated

    @contextlib.asynccontextmanager
    async def deciding(self, proposal_id: str) -> AsyncIterator[Proposal]:
        t = _TABLE
        token = secrets.token_hex(16)
        async with self._transaction(write=True) as db:
            taken = await db.execute(
                update(t)
                .where(t.c.id == proposal_id, t.c.status == "pending", _free())
                .values(claim=token, claimed_at=_epoch_ms(utcnow()))
            )
            row = await _row(db, t.c.id == proposal_id)
        if row is None:
            raise ProposalNotFound(proposal_id)
        proposal = _require(row)
        if taken.rowcount != 1:
            raise refused(proposal)
        try:
            yield proposal
        finally:
            async with self._transaction(write=True) as db:
                await db.execute(
                    update(t)
                    .where(t.c.id == proposal_id, t.c.claim == token)
                    .values(claim=None, claimed_at=None)
                )

    async def adopt(self, proposal: Proposal) -> bool:
        t = _TABLE
        wanted = _slot(proposal.job_id, proposal.layer)
        for attempt in range(_ATTEMPTS):
            try:
                async with self._transaction(write=True) as db:
                    if await _row(db, t.c.id == proposal.id) is not None:
                        return False
                    taken = await _row(db, t.c.slot == wanted)
                    slot = wanted if taken is None else None
                    await db.execute(insert(t).values(_columns(proposal, slot=slot)))
                    return True
            except IntegrityError:
                if attempt + 1 == _ATTEMPTS:
                    raise
        raise AssertionError("unreachable")


# --- helpers ----------------------------------------------------------------------------


def _slot(job_id: str, layer: str) -> str:
    return f"{layer}:{job_id}"


def _columns(proposal: Proposal, *, slot: str | None) -> dict[str, Any]:
    return {
        "id": proposal.id,
        "tenant_id": proposal.tenant_id,
        "job_id": proposal.job_id,
        "layer": proposal.layer,
        "slot": slot,
        **_changing(proposal),
    }


def _changing(proposal: Proposal) -> dict[str, Any]:
    """The columns a write of `proposal` may change."""
    return {
        "status": proposal.status,
        "created_at": proposal.created_at,
        "updated_at": proposal.updated_at,
        "doc": proposal.model_dump_json(by_alias=True),
    }


async def _write(db: AsyncConnection, proposal: Proposal) -> None:
    t = _TABLE
    await db.execute(update(t).where(t.c.id == proposal.id).values(_changing(proposal)))


async def _row(
    db: AsyncConnection, condition: ColumnElement[bool], *, lock: bool = False
) -> RowMapping | None:
    query = select(_TABLE).where(condition)
    if lock:
        query = query.with_for_update()
    return (await db.execute(query)).mappings().first()


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _expired() -> int:
    """Holds taken before this (epoch milliseconds) are abandoned."""
    return _epoch_ms(utcnow() - DECISION_EXPIRES_AFTER)


def _free() -> ColumnElement[bool]:
    """No decision holds the row (or the one that did was abandoned)."""
    return or_(_TABLE.c.claim.is_(None), _TABLE.c.claimed_at < _expired())


def _held(row: RowMapping) -> bool:
    return row["claim"] is not None and int(row["claimed_at"] or 0) >= _expired()


def _load(doc: str) -> Proposal | None:
    try:
        return Proposal.model_validate_json(doc)
    except ValidationError as exc:
        logger.warning("skipping a stored proposal that no longer reads: %s", exc)
        return None


def _require(row: RowMapping) -> Proposal:
    proposal = _load(row["doc"])
    if proposal is None:
        raise ProposalNotFound(str(row["id"]))
    return proposal
