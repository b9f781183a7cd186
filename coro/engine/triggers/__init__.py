"""Triggers: jobs started by what happens in a tracker or on a pull request (an issue
labelled or assigned, a comment mentioning Coro's handle, a Jira transition), by the
rules of `triggers` in config.json (`coro.config.triggers`).

The parts, for the local poller and the team cloud alike:

* `events` — `TriggerEvent`, the normalised event (with its `event_key`), and
  `TriggerFeed`, what a pollable tracker offers;
* `rules` — `matches(rule, event)`, `job_for(rule, event)` (the `NewJob`, `origin` set),
  `trigger_job_id(rule_id, event)`: pure functions;
* `launch` — `TriggerLauncher.launch(rule, event, feed)`: the job created once per event,
  and Coro's reply with a link to the run;
* `poller` — `TriggerPoller`, the local runner's source (polls the feeds, keeps cursors);
* `state` — the cursors in `$CORO_HOME/triggers/cursors.json`.
"""

from __future__ import annotations

from coro.engine.triggers.events import FeedPage, TriggerEvent, TriggerFeed, TriggerKind
from coro.engine.triggers.launch import Launched, TriggerLauncher, reply_text
from coro.engine.triggers.poller import TriggerPoller
from coro.engine.triggers.rules import (
    description_for,
    job_for,
    matches,
    mentions,
    permitted,
    trigger_job_id,
    without_handle,
)

__all__ = [
    "FeedPage",
    "Launched",
    "TriggerEvent",
    "TriggerFeed",
    "TriggerKind",
    "TriggerLauncher",
    "TriggerPoller",
    "description_for",
    "job_for",
    "matches",
    "mentions",
    "permitted",
    "reply_text",
    "trigger_job_id",
    "without_handle",
]
