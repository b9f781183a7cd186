"""Inbound events (PR approvals, comments, merges, ...) and how they reach the engine.

An `EventTransport` delivers `InboundEvent`s to a handler: polling of SCM plugins in
local mode, forwarded webhooks in hybrid mode, or `MemoryEventTransport` in tests.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from coro.engine.models import iso_now

EventHandler = Callable[["InboundEvent"], Awaitable[None]]


@dataclass(frozen=True)
class InboundEvent:
    job_id: str
    event_key: str  # e.g. "pullrequest:approved"
    payload: dict[str, Any] = field(default_factory=dict)
    source: str = "plugin"
    plugin_id: str | None = None
    received_at: str = field(default_factory=iso_now)

    def describe(self) -> str:
        """Human-readable body for the agent's prompt."""
        p = self.payload
        lines = []
        raw_pr = p.get("pullrequest")
        pr: dict[str, Any] = raw_pr if isinstance(raw_pr, dict) else {}
        if p.get("prId") is not None or pr.get("id") is not None:
            lines.append(f"PR #{p.get('prId', pr.get('id'))}")
        if pr.get("state") or p.get("state"):
            lines.append(f"State: {pr.get('state') or p.get('state')}")
        if p.get("approvalCount") is not None:
            lines.append(f"Approvals: {p['approvalCount']}")
        comment = p.get("comment") if isinstance(p.get("comment"), dict) else None
        if comment:
            author = (comment.get("user") or {}).get("display_name") or "someone"
            body = (comment.get("content") or {}).get("raw") or comment.get("body") or ""
            lines.append(f"Comment by {author}:")
            lines.append(body)
        if not lines:
            lines.append(json.dumps(p, ensure_ascii=False) if p else f"(event: {self.event_key})")
        return "\n".join(lines)


class EventTransport(Protocol):
    async def connect(self, handler: EventHandler) -> None: ...

    async def disconnect(self) -> None: ...

    @property
    def is_connected(self) -> bool: ...


class MemoryEventTransport:
    """Events pushed by the caller (tests, the local SCM's own actions)."""

    def __init__(self) -> None:
        self._handler: EventHandler | None = None

    async def connect(self, handler: EventHandler) -> None:
        self._handler = handler

    async def disconnect(self) -> None:
        self._handler = None

    @property
    def is_connected(self) -> bool:
        return self._handler is not None

    async def emit(self, event: InboundEvent) -> None:
        if self._handler is None:
            raise RuntimeError("transport is not connected")
        await self._handler(event)
