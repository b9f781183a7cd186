"""One place that builds the state backend config.json asks for (`state.url`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from coro.config import CoroConfig, CoroHome
from coro.state.backend import StateBackend
from coro.state.postgres import PostgresStateBackend
from coro.state.sqlite import SqliteStateBackend


def state_backend(home: CoroHome, config: CoroConfig) -> StateBackend:
    """The backend of `config.state.url`; `$CORO_HOME/state.db` when none is set.

    Errors never show the URL itself (it may carry a password).
    """
    url = config.state.url
    if url is None:
        return SqliteStateBackend(home.state_db)
    if config.state.backend == "postgres":
        return PostgresStateBackend(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError("state.url: not a valid sqlite:/// URL") from None
    if not parsed.database:
        raise ValueError("state.url: a sqlite URL needs a file path (sqlite:////abs/path.db)")
    return SqliteStateBackend(Path(parsed.database).expanduser())
