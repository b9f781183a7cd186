"""What a plugin is given besides its own settings when it is created."""

from __future__ import annotations

from dataclasses import dataclass

from coro.config import CoroHome


@dataclass(frozen=True)
class PluginContext:
    #: the runner's home: plugins that keep files or rows of their own (the `local`
    #: SCM's bare repositories and pull requests) keep them under it
    home: CoroHome
