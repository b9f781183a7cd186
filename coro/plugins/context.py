"""What a plugin is given besides its own settings when it is created."""

from __future__ import annotations

from dataclasses import dataclass

from coro.config import CoroHome
from coro.state.prs import PullRequestStore


@dataclass(frozen=True)
class PluginContext:
    #: the runner's home: plugins that keep files of their own (the `local` SCM's bare
    #: repositories) keep them under it
    home: CoroHome
    #: the runner's state backend's pull requests (`backend.prs`), which the `local` SCM
    #: keeps its pull requests, reviews and comments in
    prs: PullRequestStore
