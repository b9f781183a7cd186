"""What the backends' Alembic migrations share: a config built in code, and one lock.

Each backend has its own migration history (`migrations/` for SQLite,
`migrations_postgres/` for PostgreSQL), applied when the backend opens.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

#: Alembic keeps the running migration's context in module globals: one at a time in
#: this process, whichever backend runs it.
ALEMBIC_LOCK = threading.Lock()


def alembic_config(script_location: Path, url: str | None = None) -> Config:
    """An Alembic config for the migrations under `script_location` (no .ini file)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
