"""Coro: a runner for AI software-engineering jobs defined by markdown workflows.

The public API is re-exported here; see the README for the architecture.
"""

__version__ = "0.1.0"

from coro.config import ConfigError, CoroConfig, CoroHome  # noqa: E402
from coro.engine.models import Job, LogEntry  # noqa: E402
from coro.runner import Runner, serve  # noqa: E402

__all__ = ["ConfigError", "CoroConfig", "CoroHome", "Job", "LogEntry", "Runner", "__version__", "serve"]
