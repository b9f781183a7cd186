"""Helpers the LLM executors (`anthropic`, `openai`) share.

Secret scrubbing and `Retry-After` parsing are the plugins' (`coro.plugins.http`:
`Scrubber`, `parse_retry_after`), so every provider client reads them the same way.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from coro.domain.errors import PluginConfigError
from coro.executors.base import (
    ExecutorError,
)

S = TypeVar("S", bound=BaseModel)


def parse_settings(model: type[S], settings: dict[str, Any]) -> S:
    """`settings` (an executor's `config`) validated as `model`; `PluginConfigError`
    names the failing fields and pydantic's message, never the values."""
    try:
        return model.model_validate(settings)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "config"
            problems.append(f"{where}: {error['msg']}")
        raise PluginConfigError("; ".join(problems)) from None


def turn_limit_reached(phase: str, cap: int) -> ExecutorError:
    """The agent still wanted to continue after `cap` model calls: hand it to the developer."""
    return ExecutorError(
        f"Phase {phase} reached its limit of {cap} model calls without finishing. "
        "Resume the job to let it continue, or split the phase.",
        escalate=True,
    )
