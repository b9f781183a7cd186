"""Terminal presentation the commands share: one time format, colours for statuses and
log lines, listings that never cut what a user copies (job ids, branch names), and
`--help` without value types on flags.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from typer.core import TyperOption

from coro.cli.client import LogLine

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


def out() -> Console:
    """Standard output, created per command so test runners can capture it.

    Soft wrap keeps ids, URLs and log lines whole; tables pass `soft_wrap=False`.
    """
    return Console(highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


STATUS_STYLES = {
    "complete": "bold green",
    "cancelled": "dim",
    "failed": "bold red",
    "escalated": "bold red",
    "queued": "cyan",
}


def status_style(status: str) -> str:
    if status in STATUS_STYLES:
        return STATUS_STYLES[status]
    if status.startswith("awaiting-"):
        return "yellow"
    return "blue"  # a phase status: the job is running


def status_text(status: str) -> Text:
    return Text(status, style=status_style(status))


def line_style(text: str) -> str:
    """Colour of one log line, by the runner's line conventions."""
    if text.startswith("→ "):
        return "cyan"
    if text.startswith(("[error]", "[tool-error]", "[escalated]")):
        return "bold red"
    if text.startswith("[control]"):
        return "magenta"
    if text.startswith("Phase advanced"):
        return "bold blue"
    if text.startswith("Phase ") and "(visit " in text:
        return "bold"
    if text.startswith("Job parked"):
        return "bold yellow"
    if text.startswith("All phases complete"):
        return "bold green"
    if text.startswith("[human]"):
        return "bright_magenta"
    if text.startswith(("[approval]", "[manual-resume]", "[work-item", "[artifact")):
        return "green"
    if text.startswith(("[warning]", "[rate-limit]", "[completion-gate]", "[recovery]")):
        return "yellow"
    if text.startswith(("[usage]", "[created]", "Runner started", "[thinking]")):
        return "dim"
    return ""


def render_line(item: LogLine, *, raw: bool = False, clip: int | None = None) -> Text:
    """`<local time> <text>`, coloured; `raw` keeps the stored UTC timestamp.

    `clip` shortens long tool-call lines (their JSON input) for a compact display. Print
    it with soft wrap to keep lines whole.
    """
    stamp, text = item.timestamp, item.text
    if clip is not None and text.startswith("→ ") and len(text) > clip:
        text = text[: clip - 1] + "…"
    if not stamp:
        return Text(text, style=line_style(text))
    if not raw:
        stamp = local_time(stamp)
    return Text.assemble((stamp, "dim"), " ", (text, line_style(text)))


def age(raw: str | None) -> str:
    parsed = parse_time(raw) if raw else None
    if parsed is None:
        return raw or "-"
    seconds = max(0, int((datetime.now(UTC) - parsed).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def cost(value: Any) -> str:
    try:
        return f"${float(value):.4f}"
    except (TypeError, ValueError):
        return "-"


def tokens(usage: dict[str, Any]) -> str:
    return (
        f"{int(usage.get('inputTokens') or 0):,} in / {int(usage.get('outputTokens') or 0):,} out"
    )
