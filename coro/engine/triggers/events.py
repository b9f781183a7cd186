"""The normalised events triggers match: `TriggerEvent` and what a feed answers.

They are defined where the plugins that report them can make them
(`coro.plugins.trackers.base`, below the engine) and named here for the engine and the
cloud: a tracker's poll (`TriggerFeed.feed_poll`) and, in the team cloud, a webhook
delivery are both turned into `TriggerEvent`s, which `coro.engine.triggers.rules`
matches and turns into jobs.

`TriggerEvent.event_key` names the event itself and is the same however it was learnt
(see its docstring for the formats): the job an event starts is named after it
(`rules.trigger_job_id`), so a second delivery or a re-poll finds that job.
"""

from __future__ import annotations

from coro.plugins.trackers.base import (
    FeedPage,
    TriggerEvent,
    TriggerFeed,
    TriggerKind,
    feed_iso,
    feed_time,
)

__all__ = ["FeedPage", "TriggerEvent", "TriggerFeed", "TriggerKind", "feed_iso", "feed_time"]
