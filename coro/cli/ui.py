"""Terminal presentation the commands share: one time format, listings that never cut
what a user copies (job ids, branch names), and `--help` without value types on flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from typer.core import TyperOption

Row = TypeVar("Row")

#: Every time the CLI shows (log lines, listings, `coro status`, the demo): the local
#: time, ISO-like, to the second. `coro logs --raw` prints the stored UTC stamps instead.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_time(raw: str) -> datetime | None:
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def local_time(raw: object) -> str:
    """An ISO timestamp from the runner as local `YYYY-MM-DD HH:MM:SS`; `-` when absent."""
    if not isinstance(raw, str) or not raw:
        return "-"
    parsed = parse_time(raw)
    return parsed.astimezone().strftime(TIME_FORMAT) if parsed else raw


def fits(console: Console, table: Table) -> bool:
    """Whether the table shows at its natural width, no cell wrapped or cut."""
    wide = console.options.update(width=1_000_000)
    return Measurement.get(console, wide, table).maximum <= console.width


def print_listing(
    console: Console,
    table: Table,
    rows: Iterable[Row],
    stacked: Callable[[Row], tuple[Text, Text]],
) -> None:
    """A table when it fits the terminal; otherwise each row as two lines — its key
    (a job id, a PR title) whole on the first, the other columns below it — so nothing
    is truncated or broken mid-word."""
    if fits(console, table):
        console.print(table, soft_wrap=False)
        return
    for row in rows:
        head, rest = stacked(row)
        console.print(head)
        console.print(Text.assemble("  ", rest))


_display_type_rich = TyperOption.display_type_rich


def _no_type_on_flags(self: TyperOption, ctx: Any) -> str | None:
    # A flag takes no value: Typer 0.29's rich help shows `<bool>` beside every one
    # (`--json <bool>`), which reads as if a value were expected.
    if self.is_flag and self.metavar is None:
        return None
    return _display_type_rich(self, ctx)


def hide_flag_types() -> None:
    """Show no value type beside flags in `--help` (options that take a value keep it)."""
    TyperOption.display_type_rich = _no_type_on_flags  # type: ignore[method-assign]
