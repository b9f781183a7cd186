"""Coro: a runner for AI software-engineering jobs defined by markdown workflows.

The public API is re-exported here lazily: `import coro` (and so `coro --help`, or a
drop-in plugin's import) loads nothing until one of these names is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from coro.version import __version__

if TYPE_CHECKING:  # for type checkers only: at run time the names load on first use
    from coro.api.server import serve
    from coro.config import ConfigError, CoroConfig, CoroHome
    from coro.domain.models import Job, LogEntry
    from coro.runner import Runner

#: public name -> the module that defines it
_EXPORTS = {
    "ConfigError": "coro.config",
    "CoroConfig": "coro.config",
    "CoroHome": "coro.config",
    "Job": "coro.domain.models",
    "LogEntry": "coro.domain.models",
    "Runner": "coro.runner",
    "serve": "coro.api.server",
}

__all__ = [
    "ConfigError",
    "CoroConfig",
    "CoroHome",
    "Job",
    "LogEntry",
    "Runner",
    "__version__",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coro' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
