"""The interface of an issue-tracker plugin (SPEC §4.7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from coro.plugins.scm.base import ConnectionCheck


@dataclass(frozen=True)
class TrackerComment:
    id: str
    author: str
    body: str  # plain text (Atlassian document format converted)
    created_at: str
    #: the author's relation to the repository (GitHub: OWNER, MEMBER, COLLABORATOR, …)
    author_association: str | None = None


@dataclass(frozen=True)
class Issue:
    key: str  # "PROJ-12" or "owner/repo#12"
    title: str
    description: str  # plain text
    status: str
    url: str
    issue_type: str | None = None
    assignee: str | None = None
    labels: list[str] = field(default_factory=list)
    comments: list[TrackerComment] = field(default_factory=list)


@dataclass(frozen=True)
class Transition:
    id: str
    name: str
    to_status: str


class TrackerPlugin(Protocol):
    id: str

    async def get_issue(self, key: str) -> Issue: ...

    async def comment(self, key: str, body: str) -> TrackerComment: ...

    async def transitions(self, key: str) -> list[Transition]: ...

    async def transition(self, key: str, to: str) -> Transition:
        """Move the issue to the status (or transition) named `to`, case-insensitively."""

    async def test_connection(self) -> ConnectionCheck: ...

    async def aclose(self) -> None: ...
