"""Notifications in the team cloud: each team's channels, and members' own e-mails.

**Channels** (`GET`/`PUT /teams/:teamId/notifications`): a team's webhooks, Slack
incoming webhooks and e-mail addresses, each a `notifications.webhooks[]`, `.slack[]` or
`.email[]` entry of config.json (the same schemas; an e-mail channel carries its own
SMTP server), kept in `team_notification_channels` in the order given. Members read
them (targets masked, as the runner's `GET /notifications`); admins replace the list
and test a channel. Secrets are stored as given (sending needs them) and shown masked
(`coro.config.mask_config`); a mask sent back unchanged keeps the stored secret of the
entry with the same id (`coro.config.apply_config_patch`).

**Members' e-mails** (`GET`/`PUT /teams/:teamId/notifications/me`): each member chooses,
per team, the events they want by e-mail to their account's address (default: none),
sent through the cloud's SMTP server (`CLOUD_SMTP_URL`); without one they are not
offered.

**Deciding and delivering.** The mirror tells `observe` of every write that moved a job
it had (`Mirror.observers`: a higher revision from the job's runner, or the cloud's own
`set_status`), once committed. The event is decided exactly as the runner decides its
own (`coro.engine.notifications.notification_for`), with the team page's link to the job
(`<CLOUD_PUBLIC_URL>/#/t/<teamId>/jobs/<jobId>`), and queued: replication never waits
for a channel. The worker reads the team's channels and opted-in members and delivers
through the runner's machinery (`DeliveryQueue`: at most 100 deliveries at once, each
retried with backoff under `NotificationRetries`); every outcome is stored with its
channel (`lastDelivery`, `recentFailures`) or member, so every instance answers the
same. A revision is kept by one write on one instance, and a replayed one is not kept:
each move is told once, by the instance whose write made it. A job the cloud sees for
the first time tells nothing (a joining runner's history).

A hybrid runner with channels in its own config.json keeps sending to them too: the
team's channels are another configuration, of the team, not of the runner.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.cloud.db import AnyRow, Database
from coro.cloud.schema import (
    team_member_notifications,
    team_members,
    team_notification_channels,
    teams,
    users,
)
from coro.cloud.settings import CloudSettings
from coro.cloud.teams import TeamAccess
from coro.config import apply_config_patch, mask_config, validation_issues
from coro.config.notifications import (
    DEFAULT_EVENTS,
    NOTIFICATION_EVENTS,
    ChannelKind,
    EmailChannel,
    NotificationEvent,
    NotificationsConfig,
    SlackChannel,
    WebhookChannel,
)
from coro.config.notifications import Channel as ChannelSettings
from coro.engine.notifications import (
    HISTORY,
    Channel,
    ChannelReport,
    DeliveryQueue,
    Outcome,
    notification_for,
    sample_notification,
    tries,
)
from coro.extensions import BUILTIN_PLUGINS, NOTIFIER, notifier_channels
from coro.plugins.dropins import PluginCatalog
from coro.plugins.notifiers.base import Delivery, Notification
from coro.state.store import JobChange

logger = logging.getLogger(__name__)

#: the config.json lists of a team's channels, by kind
LISTS: dict[ChannelKind, str] = {"webhook": "webhooks", "slack": "slack", "email": "email"}
_MODELS: dict[ChannelKind, type[ChannelSettings]] = {
    "webhook": WebhookChannel,
    "slack": SlackChannel,
    "email": EmailChannel,
}
#: the built-in notifier plugins (never `load()`ed: the cloud takes no drop-ins, as its
#: webhook ingress)
CATALOG = PluginCatalog(Path(os.devnull), [b for b in BUILTIN_PLUGINS if b.kind == NOTIFIER.kind])
NO_SMTP = (
    "E-mail notifications to members are not available: this cloud has no SMTP server "
    "(CLOUD_SMTP_URL and CLOUD_SMTP_FROM)"
)
SMTP_UNAVAILABLE = "smtp-not-configured"


@dataclass(frozen=True)
class TeamChannel(Channel):
    """A channel of a team: one of its own, or a member's own e-mail (`user_id`)."""

    team_id: str = field(kw_only=True)
    user_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class MemberEmail:
    """What a member wants by e-mail from a team."""

    enabled: bool
    events: tuple[NotificationEvent, ...]
    address: str
    last: Outcome | None


@dataclass(frozen=True)
class TeamChannels:
    """A team's channels as stored: their settings, and how their deliveries went."""

    settings: NotificationsConfig
    outcomes: dict[str, tuple[Outcome | None, list[Outcome]]]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _outcome(raw: Any) -> Outcome | None:
    try:
        return Outcome(**raw) if isinstance(raw, dict) else None
    except TypeError:  # another version's shape
        return None


def _outcomes(text: str | None) -> list[Outcome]:
    try:
        raw = json.loads(text) if text else []
    except ValueError:
        return []
    found = [_outcome(item) for item in raw] if isinstance(raw, list) else []
    return [o for o in found if o is not None]


def _last(text: str | None) -> Outcome | None:
    try:
        return _outcome(json.loads(text)) if text else None
    except ValueError:
        return None


def _events(text: str) -> tuple[NotificationEvent, ...]:
    try:
        raw = json.loads(text)
    except ValueError:
        return ()
    return tuple(e for e in raw if e in NOTIFICATION_EVENTS) if isinstance(raw, list) else ()


def _stored(channel: ChannelSettings) -> dict[str, Any]:
    return channel.model_dump(mode="json", by_alias=True, exclude_none=True)


class TeamNotifications(DeliveryQueue[tuple[str, Notification]]):
    def __init__(self, db: Database, settings: CloudSettings) -> None:
        super().__init__(settings.notification_retries)
        self.db = db
        self.smtp = settings.smtp
        # without CLOUD_PUBLIC_URL, the address the cloud listens at (best effort)
        self.base = settings.public_url or f"http://{settings.host}:{settings.port}"

    # --- links ---

    def job_url(self, team_id: str, job_id: str) -> str:
        """The job on the team page (`cloud/app.js`: `#/t/<team>/jobs/<job>`)."""
        return f"{self.base}/#/t/{quote(team_id, safe='')}/jobs/{quote(job_id, safe='')}"

    def jobs_url(self, team_id: str) -> str:
        return f"{self.base}/#/t/{quote(team_id, safe='')}/jobs"

    # --- observing the mirror ---

    def observe(self, team_id: str, change: JobChange) -> None:
        """A `Mirror` observer: never blocks, never raises into replication."""
        if self._stopping:
            return
        try:
            notification = notification_for(change, lambda job: self.job_url(team_id, job.id))
        except Exception:
            logger.exception("building a notification for job %s failed", change.job.id)
            return
        if notification is not None:
            what = f"{notification.event} for job {change.job.id} of team {team_id}"
            self._enqueue((team_id, notification), what)

    # --- the team's channels ---

    async def _rows(self, connection: AsyncConnection, team_id: str) -> list[AnyRow]:
        c = team_notification_channels.c
        result = await connection.execute(
            select(c.id, c.kind, c.settings, c.last_delivery, c.recent_failures)
            .where(c.team_id == team_id)
            .order_by(c.position)
        )
        return list(result.all())

    def _read(self, team_id: str, rows: list[AnyRow]) -> TeamChannels:
        """The stored rows as a validated section (a row this version cannot read is
        left out, and logged)."""
        lists: dict[str, list[ChannelSettings]] = {name: [] for name in LISTS.values()}
        outcomes: dict[str, tuple[Outcome | None, list[Outcome]]] = {}
        for row in rows:
            model = _MODELS.get(row.kind)
            try:
                if model is None:
                    raise ValueError(row.kind)
                lists[LISTS[row.kind]].append(model.model_validate(json.loads(row.settings)))
            except (ValueError, ValidationError):
                logger.warning("team %s: channel %s cannot be read; skipped", team_id, row.id)
                continue
            outcomes[row.id] = (_last(row.last_delivery), _outcomes(row.recent_failures))
        section = NotificationsConfig.model_validate(
            {**lists, "timeoutSeconds": self.policy.timeout_seconds}
        )
        return TeamChannels(section, outcomes)

    def _channels(self, team_id: str, section: NotificationsConfig) -> list[TeamChannel]:
        made, failed = notifier_channels(CATALOG, section)
        for channel_id, why in failed.items():
            logger.warning("team %s: channel %s cannot send: %s", team_id, channel_id, why)
        return [
            TeamChannel(c.id, c.kind, c.events, c.notifier, team_id=team_id, user_id=None)
            for c in made
        ]

    async def channels(self, team_id: str) -> tuple[list[ChannelReport], NotificationsConfig]:
        """The team's channels with their last outcome and recent failures, and their
        settings (secrets in the clear: `masked` shows them)."""
        async with self.db.begin() as connection:
            stored = self._read(team_id, await self._rows(connection, team_id))
        reports = []
        for channel in self._channels(team_id, stored.settings):
            last, failures = stored.outcomes.get(channel.id, (None, []))
            reports.append(ChannelReport(channel, last, failures))
        return reports, stored.settings

    @staticmethod
    def masked(settings: NotificationsConfig) -> dict[str, list[dict[str, Any]]]:
        """The channels' settings as config.json spells them, secrets masked."""
        shown = {name: [_stored(c) for c in getattr(settings, name)] for name in LISTS.values()}
        return mask_config(shown)

    async def replace(self, access: TeamAccess, sent: dict[str, list[Any]]) -> list[dict[str, str]]:
        """The team's channels from now on (admins): `sent` is every list
        (`webhooks`, `slack`, `email`), entries as `masked` shows them or new; a secret
        sent back masked keeps the stored one of the entry with the same id. Issues
        (path and rule) when they are not valid, and nothing is changed."""
        access.require_admin("change notification channels")
        c = team_notification_channels.c
        async with self.db.begin() as connection:
            # one change of a team's channels at a time: a mask is matched to what is stored
            await connection.execute(
                select(teams.c.id).where(teams.c.id == access.team_id).with_for_update()
            )
            current = self._read(access.team_id, await self._rows(connection, access.team_id))
            stored = {
                name: [_stored(ch) for ch in getattr(current.settings, name)]
                for name in LISTS.values()
            }
            merged, issues = apply_config_patch(stored, sent)
            if issues:
                return issues
            try:
                section = NotificationsConfig.model_validate(merged)
            except ValidationError as exc:
                return validation_issues(exc)
            channels = section.channels()
            await connection.execute(
                team_notification_channels.delete().where(
                    c.team_id == access.team_id,
                    c.id.not_in([ch.id for _, ch in channels]),
                )
            )
            for position, (kind, channel) in enumerate(channels):
                values = {
                    "position": position,
                    "kind": kind,
                    "settings": _json(_stored(channel)),
                    "updated_by": access.user_id,
                }
                upsert = insert(team_notification_channels).values(
                    team_id=access.team_id, id=channel.id, **values
                )
                await connection.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[c.team_id, c.id],
                        # a channel kept by id keeps how its deliveries went
                        set_={**{k: upsert.excluded[k] for k in values}, "updated_at": func.now()},
                    )
                )
        return []

    # --- a member's own e-mails ---

    @property
    def member_email_available(self) -> bool:
        return self.smtp is not None

    async def member(self, access: TeamAccess) -> MemberEmail:
        p = team_member_notifications.c
        async with self.db.begin() as connection:
            address = await connection.scalar(
                select(users.c.email).where(users.c.id == access.user_id)
            )
            row = (
                await connection.execute(
                    select(p.email_enabled, p.email_events, p.last_delivery).where(
                        p.team_id == access.team_id, p.user_id == access.user_id
                    )
                )
            ).first()
        if row is None:
            return MemberEmail(False, DEFAULT_EVENTS, str(address or ""), None)
        return MemberEmail(
            row.email_enabled,
            _events(row.email_events),
            str(address or ""),
            _last(row.last_delivery),
        )

    async def set_member(
        self, access: TeamAccess, enabled: bool, events: list[NotificationEvent] | None
    ) -> MemberEmail:
        """What the caller wants by e-mail from the team from now on (`events` None:
        as before, else the defaults); the route refuses `enabled` without an SMTP
        server (`member_email_available`)."""
        current = await self.member(access)
        chosen = tuple(dict.fromkeys(events)) if events is not None else current.events
        p = team_member_notifications.c
        upsert = insert(team_member_notifications).values(
            team_id=access.team_id,
            user_id=access.user_id,
            email_enabled=enabled,
            email_events=_json(list(chosen)),
        )
        async with self.db.begin() as connection:
            await connection.execute(
                upsert.on_conflict_do_update(
                    index_elements=[p.team_id, p.user_id],
                    set_={
                        "email_enabled": upsert.excluded.email_enabled,
                        "email_events": upsert.excluded.email_events,
                        "updated_at": func.now(),
                    },
                )
            )
        return dataclasses.replace(current, enabled=enabled, events=chosen)

    async def _members(self, connection: AsyncConnection, team_id: str) -> list[TeamChannel]:
        """The e-mail channel of each member who wants e-mails from the team."""
        if self.smtp is None:
            return []
        p = team_member_notifications.c
        rows = (
            await connection.execute(
                select(p.user_id, p.email_events, users.c.email)
                .join(
                    team_members,
                    (team_members.c.team_id == p.team_id) & (team_members.c.user_id == p.user_id),
                )
                .join(users, users.c.id == p.user_id)
                .where(p.team_id == team_id, p.email_enabled)
                .order_by(p.user_id)
            )
        ).all()
        smtp = self.smtp
        entries: list[EmailChannel] = []
        owners: dict[str, str] = {}
        for row in rows:
            channel_id = f"member-{row.user_id}"[:64]
            try:
                entries.append(
                    EmailChannel.model_validate(
                        {
                            "id": channel_id,
                            "events": list(_events(row.email_events)),
                            "host": smtp.host,
                            "port": smtp.port,
                            "security": smtp.security,
                            "username": smtp.username,
                            "password": smtp.password,
                            "from": smtp.sender,
                            "to": [row.email],
                        }
                    )
                )
            except ValidationError:
                logger.warning("team %s: member %s has no usable address", team_id, row.user_id)
                continue
            owners[channel_id] = row.user_id
        section = NotificationsConfig(email=entries, timeout_seconds=self.policy.timeout_seconds)
        made, _ = notifier_channels(CATALOG, section)
        return [
            TeamChannel(c.id, c.kind, c.events, c.notifier, team_id=team_id, user_id=owners[c.id])
            for c in made
        ]

    # --- delivering ---

    async def _route(self, item: tuple[str, Notification]) -> list[tuple[Channel, Notification]]:
        team_id, notification = item
        async with self.db.begin() as connection:
            stored = self._read(team_id, await self._rows(connection, team_id))
            members = await self._members(connection, team_id)
        targets: list[Channel] = [*self._channels(team_id, stored.settings), *members]
        return [(target, notification) for target in targets]

    async def _finished(
        self, channel: Channel, notification: Notification, outcome: Delivery, attempts: int
    ) -> None:
        assert isinstance(channel, TeamChannel)
        recorded = Outcome.of(notification, outcome, attempts)
        if not outcome.ok:
            logger.warning(
                "notification %s (%s, job %s) of team %s to %s failed after %s: %s",
                notification.delivery_id,
                notification.event,
                notification.job_id,
                channel.team_id,
                f"member {channel.user_id}" if channel.user_id else f"channel {channel.id}",
                tries(attempts),
                outcome.error,
            )
        try:
            await self._record(channel, recorded)
        except Exception as exc:  # the database: the outcome is lost, the log has it
            logger.warning(
                "team %s: the outcome of a delivery to %s was not stored: %s",
                channel.team_id,
                channel.id,
                type(exc).__name__,
            )

    async def _record(self, channel: TeamChannel, recorded: Outcome) -> None:
        last = _json(dataclasses.asdict(recorded))
        async with self.db.begin() as connection:
            if channel.user_id is not None:
                p = team_member_notifications.c
                await connection.execute(
                    update(team_member_notifications)
                    .where(p.team_id == channel.team_id, p.user_id == channel.user_id)
                    .values(last_delivery=last)
                )
                return
            c = team_notification_channels.c
            key = (c.team_id == channel.team_id) & (c.id == channel.id)
            values: dict[str, Any] = {"last_delivery": last}
            if not recorded.ok:
                failures = await connection.scalar(
                    select(c.recent_failures).where(key).with_for_update()
                )
                if failures is None:
                    return  # removed meanwhile
                kept = [dataclasses.asdict(o) for o in _outcomes(failures)[: HISTORY - 1]]
                values["recent_failures"] = _json([dataclasses.asdict(recorded), *kept])
            await connection.execute(update(team_notification_channels).where(key).values(values))

    # --- testing a channel ---

    async def test(self, access: TeamAccess, channel_id: str) -> Delivery | None:
        """Send a sample notification (event `test`) to one of the team's channels,
        once (admins); None if the team has no such channel. The outcome is kept like
        any delivery's."""
        access.require_admin("test notification channels")
        reports, _ = await self.channels(access.team_id)
        channel = next((r.channel for r in reports if r.channel.id == channel_id), None)
        if channel is None:
            return None
        notification = sample_notification(self.jobs_url(access.team_id))
        outcome = await self.attempt(channel, notification)
        await self._finished(channel, notification, outcome, 1)
        return outcome
