"""Coro: a runner for AI software-engineering jobs defined by markdown workflows.

The public API is re-exported here; see the README for the architecture.
"""

__version__ = "0.1.0"

from coro.config import ConfigError, CoroConfig, CoroHome
from coro.engine.models import Job, LogEntry
from coro.runner import Runner, serve

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
