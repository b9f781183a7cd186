"""State backends: where jobs and logs live."""

from coro.state.backend import JobExists, JobMutation, JobNotFound, JobQuery, StateBackend
from coro.state.memory import MemoryStateBackend

__all__ = [
    "JobExists",
    "JobMutation",
    "JobNotFound",
    "JobQuery",
    "MemoryStateBackend",
    "StateBackend",
]
