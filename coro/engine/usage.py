"""A phase visit's usage as it grows: added up from the executor's round trips and written
to the job after each one, each write adding only what is new (SPEC §4.1 tokenUsage,
phaseUsage)."""

from __future__ import annotations

from collections.abc import Callable

from coro.domain.models import Job, PhaseUsage
from coro.executors.base import UsageEvent


def add_usage(usage: PhaseUsage, event: UsageEvent) -> None:
    """Fold one round trip into the visit's usage."""
    usage.input_tokens += event.input_tokens
    usage.output_tokens += event.output_tokens
    usage.cache_read_input_tokens += event.cache_read_input_tokens
    usage.cache_creation_input_tokens += event.cache_creation_input_tokens
    usage.cost_usd = round(usage.cost_usd + event.cost_usd, 6)
    usage.num_turns += event.turns
    usage.model = event.model or usage.model


class LiveUsage:
    """The running visit's usage and what of it the stored job already holds: every
    write adds only what is new, so the end of the turn never counts a round trip twice."""

    def __init__(self, usage: PhaseUsage) -> None:
        self.usage = usage
        self.stored = PhaseUsage(phase=usage.phase)
        self.listed = False  # the job's phaseUsage has an in-progress entry for this visit

    def mutation(self, *, final: bool) -> Callable[[Job], None]:
        entry = self.usage.model_copy(update={"in_progress": not final})
        delta = difference(self.usage, self.stored)
        listed = self.listed

        def apply(j: Job) -> None:
            running = None
            if listed:
                running = next(
                    (
                        i
                        for i, u in enumerate(j.phase_usage)
                        if u.in_progress and (u.phase, u.visit) == (entry.phase, entry.visit)
                    ),
                    None,
                )
            for u in j.phase_usage:
                u.in_progress = False  # only one visit runs; others were cut off by a crash
            if running is None:
                j.phase_usage.append(entry)
            else:
                j.phase_usage[running] = entry
            j.token_usage.add(delta)

        return apply

    def saved(self) -> None:
        """The last mutation was written."""
        self.stored = self.usage.model_copy()
        self.listed = True


def difference(now: PhaseUsage, before: PhaseUsage) -> PhaseUsage:
    return PhaseUsage(
        phase=now.phase,
        input_tokens=now.input_tokens - before.input_tokens,
        output_tokens=now.output_tokens - before.output_tokens,
        cache_read_input_tokens=now.cache_read_input_tokens - before.cache_read_input_tokens,
        cache_creation_input_tokens=(
            now.cache_creation_input_tokens - before.cache_creation_input_tokens
        ),
        cost_usd=round(now.cost_usd - before.cost_usd, 6),
    )
