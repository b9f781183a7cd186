"""Inbound events (PR approvals, comments, merges, ...) and how they reach the engine.

An `EventTransport` (a `transport` plugin, see `coro.extensions`) delivers
`InboundEvent`s to a handler: polling of SCM plugins in local mode
(`coro.engine.polling`), forwarded webhooks in hybrid mode, or `MemoryEventTransport` in
tests. Events observed together are handed over together, so a job woken by them gets
them in one prompt. A config reload hands a transport the new plugins and config through
`reconfigure`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from coro.config import CoroConfig, CoroHome
from coro.domain.models import ExternalRef, iso_now
from coro.plugins.registry import PluginSet
from coro.state.store import JobStore

EventHandler = Callable[[Sequence["InboundEvent"]], Awaitable[None]]

_MERGED_KEY = re.compile(r"merged|fulfilled", re.IGNORECASE)
_DECLINED_KEY = re.compile(r"declined|rejected", re.IGNORECASE)


@dataclass(frozen=True)
class InboundEvent:
    job_id: str
    event_key: str  # e.g. "pullrequest:approved"
    payload: dict[str, Any] = field(default_factory=dict)
    source: str = "plugin"
    plugin_id: str | None = None
    #: the pull request (or ticket) the event is about, when known
    ref: ExternalRef | None = None
    received_at: str = field(default_factory=iso_now)

    def pr_outcome(self) -> Literal["merged", "declined"] | None:
        """Whether the event says its PR was merged or declined (for merge stamping)."""
        p = self.payload
        raw_pr = p.get("pullrequest")
        pr: dict[str, Any] = raw_pr if isinstance(raw_pr, dict) else {}
        state = str(pr.get("state") or p.get("state") or "").upper()
        if state == "MERGED" or pr.get("merged") is True or _MERGED_KEY.search(self.event_key):
            return "merged"
        if state == "DECLINED" or (state != "NOT_FOUND" and _DECLINED_KEY.search(self.event_key)):
            return "declined"
        return None

    @property
    def pr_id(self) -> int | None:
        if self.ref is not None and self.ref.kind == "pull_request":
            return int(self.ref.external_id) if self.ref.external_id.isdigit() else None
        raw = self.payload.get("prId")
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else None

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

    def reconfigure(self, plugins: PluginSet, config: CoroConfig) -> None:
        """Take over the plugins and config of a reload (the runner calls it once the
        transport is made, and after every reload)."""


def _no_webhooks(plugin_id: str) -> bool:
    return False


@dataclass(frozen=True)
class TransportContext:
    """What a `transport` plugin's factory is given besides its settings."""

    home: CoroHome
    store: JobStore
    plugins: PluginSet
    config: CoroConfig
    #: whether a plugin's events reach the runner as webhooks now (a hybrid runner
    #: connected to a team that set the plugin's secret): a poller leaves those alone
    webhooks: Callable[[str], bool] = _no_webhooks


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

    def reconfigure(self, plugins: PluginSet, config: CoroConfig) -> None:
        """Nothing to take over: events come from the caller."""

    async def emit(self, *events: InboundEvent) -> None:
        """Deliver events observed together (one batch)."""
        if self._handler is None:
            raise RuntimeError("transport is not connected")
        await self._handler(events)
