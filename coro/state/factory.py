"""One place that builds the state backend config.json asks for (`state.url`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from coro.config import CoroConfig, CoroHome
from coro.state.backend import StateBackend
from coro.state.sqlite import SqliteStateBackend


def state_backend(home: CoroHome, config: CoroConfig) -> StateBackend:
    """The backend of `config.state.url`; `$CORO_HOME/state.db` when none is set."""
    url = config.state.url
    if url is None:
        return SqliteStateBackend(home.state_db)
    parsed = make_url(url)
    if config.state.backend == "sqlite":
        if not parsed.database:
            raise ValueError("state.url: a sqlite URL needs a file path (sqlite:////abs/path.db)")
        return SqliteStateBackend(Path(parsed.database).expanduser())
    raise ValueError(f"state.url: no backend for {parsed.drivername!r} yet")
