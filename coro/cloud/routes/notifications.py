"""`/teams/{teamId}/notifications`: the team's notification channels
(`coro.cloud.notifications`), in the shapes of the runner's `GET /notifications` and
`POST /notifications/test`; and `/notifications/me`, the caller's own e-mails from the
team. Members read the channels; admins replace and test them (and see their settings,
secrets masked, to edit); every member chooses their own e-mails."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field, StrictBool

from coro.api.errors import error_response
from coro.api.routes.notifications import (
    NotificationChannel,
    NotificationDelivery,
    NotificationTestBody,
    NotificationTestResult,
)
from coro.api.schemas import Body
from coro.cloud.deps import ServicesDep, TeamAccessDep, errors
from coro.cloud.models import Wire
from coro.cloud.notifications import LISTS, NO_SMTP, SMTP_UNAVAILABLE, MemberEmail
from coro.cloud.teams import TeamAccess
from coro.config.notifications import NotificationEvent

router = APIRouter(prefix="/teams/{team_id}/notifications", tags=["notifications"])

#: as many channels of a kind as config.json's `notifications` takes
MAX_CHANNELS = 50

Entries = Annotated[
    list[dict[str, Any]],
    Field(
        default_factory=list,
        max_length=MAX_CHANNELS,
        description="Entries as config.json's `notifications` list of the same name takes "
        "them; a secret sent back as shown (masked) keeps the stored one of the entry with "
        "the same `id`",
    ),
]


class TeamNotificationsBody(Body):
    """Every channel of the team (a list left out is emptied)."""

    webhooks: Entries
    slack: Entries
    email: Entries


class TeamChannelSettings(Wire):
    """The channels as config.json spells them, secrets masked."""

    webhooks: list[dict[str, Any]]
    slack: list[dict[str, Any]]
    email: list[dict[str, Any]]


class TeamNotificationsOut(Wire):
    channels: list[NotificationChannel] = Field(
        description="As the runner's `GET /notifications`: targets masked, the last "
        "delivery and recent failures"
    )
    settings: TeamChannelSettings | None = Field(
        description="For admins (else null): what `PUT` takes, secrets masked"
    )


class MemberEmailOut(Wire):
    enabled: bool
    events: list[NotificationEvent] = Field(description="The events sent")
    address: str = Field(description="The account's address, where they go")
    available: bool = Field(description="Whether the cloud can send them (an SMTP server)")
    reason: str | None = Field(
        default=None,
        description="Why they are not available (`smtp-not-configured`); absent when they are",
        exclude_if=lambda value: value is None,
    )
    last_delivery: NotificationDelivery | None


class MemberNotificationsOut(Wire):
    email: MemberEmailOut


class MemberEmailBody(Body):
    enabled: StrictBool
    events: list[NotificationEvent] | None = Field(
        default=None, max_length=20, description="Left out: as before (at first the defaults)"
    )


class MemberNotificationsBody(Body):
    email: MemberEmailBody


async def _answer(access: TeamAccess, found: ServicesDep) -> TeamNotificationsOut:
    reports, settings = await found.notifications.channels(access.team_id)
    masked = found.notifications.masked(settings) if access.role == "admin" else None
    return TeamNotificationsOut(
        channels=[NotificationChannel.of(r) for r in reports],
        settings=TeamChannelSettings.model_validate(masked) if masked is not None else None,
    )


def _member(found: ServicesDep, member: MemberEmail) -> MemberNotificationsOut:
    available = found.notifications.member_email_available
    return MemberNotificationsOut(
        email=MemberEmailOut(
            enabled=member.enabled,
            events=list(member.events),
            address=member.address,
            available=available,
            reason=None if available else SMTP_UNAVAILABLE,
            last_delivery=NotificationDelivery.of(member.last) if member.last else None,
        )
    )


@router.get("", response_model=TeamNotificationsOut, responses=errors(400, 401, 404))
async def get_notifications(access: TeamAccessDep, found: ServicesDep) -> TeamNotificationsOut:
    return await _answer(access, found)


@router.put(
    "",
    response_model=TeamNotificationsOut,
    responses=errors(400, 401, 403, 404, 413),
)
async def put_notifications(
    body: TeamNotificationsBody, access: TeamAccessDep, found: ServicesDep
) -> TeamNotificationsOut | JSONResponse:
    """Replace the team's channels (admins): each entry as config.json's
    `notifications.webhooks[]`, `.slack[]` or `.email[]` takes it (an e-mail channel with
    its own SMTP server). Notifications from then on go to them."""
    sent = {name: getattr(body, name) for name in LISTS.values()}
    issues = await found.notifications.replace(access, sent)
    if issues:
        summary = "; ".join(f"{i['path']}: {i['message']}" for i in issues[:5])
        return error_response(400, f"Invalid channels: {summary}", issues=issues)
    return await _answer(access, found)


@router.post("/test", response_model=NotificationTestResult, responses=errors(400, 401, 403, 404))
async def test_channel(
    body: NotificationTestBody, access: TeamAccessDep, found: ServicesDep
) -> NotificationTestResult | JSONResponse:
    """Send one test notification (event `test`, a made-up job) to the channel, without
    retries (admins); its outcome is also the channel's `lastDelivery`."""
    outcome = await found.notifications.test(access, body.channel)
    if outcome is None:
        return error_response(404, f"No notification channel {body.channel!r}")
    return NotificationTestResult(
        channel=body.channel, ok=outcome.ok, status=outcome.status, error=outcome.error
    )


@router.get("/me", response_model=MemberNotificationsOut, responses=errors(400, 401, 404))
async def get_my_notifications(access: TeamAccessDep, found: ServicesDep) -> MemberNotificationsOut:
    """What the caller gets by e-mail from the team (at first: nothing)."""
    return _member(found, await found.notifications.member(access))


@router.put("/me", response_model=MemberNotificationsOut, responses=errors(400, 401, 404, 409, 413))
async def put_my_notifications(
    body: MemberNotificationsBody, access: TeamAccessDep, found: ServicesDep
) -> MemberNotificationsOut | JSONResponse:
    """Choose what the caller gets by e-mail from the team, at their account's address.
    409 (`reason: smtp-not-configured`) to turn them on while the cloud has no SMTP
    server."""
    if body.email.enabled and not found.notifications.member_email_available:
        return error_response(409, NO_SMTP, reason=SMTP_UNAVAILABLE)
    member = await found.notifications.set_member(access, body.email.enabled, body.email.events)
    return _member(found, member)
