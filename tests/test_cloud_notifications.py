"""Notifications in the team cloud: a team's channels (webhook, Slack, e-mail) and each
member's own e-mails, told of the moves of team jobs its runners replicate — decided as
the runner decides, delivered through the runner's retrying machinery, once per move
(a replayed revision tells nothing, a second instance tells nothing), never holding up
replication; the REST routes with their roles, masked secrets and tests. All on
loopback: a real cloud on PostgreSQL, a real runner socket, webhook receivers and an
aiosmtpd server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from coro.cloud.deps import Services
from coro.cloud.settings import (
    CloudSettings,
    CloudSmtp,
    NotificationRetries,
    SettingsError,
    smtp_settings,
)
from coro.domain.models import Job
from tests.cloud_helpers import Account, Cloud, CloudFactory
from tests.cloud_runner_client import RunnerClient, TeamRunner, job_json, runner_client, team_runner
from tests.fakes.notification_receivers import SmtpReceiver, WebhookReceiver, signature_of
from tests.test_cloud_dashboard import sign_in_in_the_page, team_page

pytest_plugins = ("tests.cloud_fixtures",)

PUBLIC = "https://coro.example.com"
SECRET = "whsec-" + "t" * 30
SLACK_PATH = "/services/T0CLOUD1/B0CLOUD2/slacktokenCLOUDTOKEN9876"
SMTP_PASSWORD = "smtp-password-" + "q" * 20
QUESTION = "Which database should the counters live in?"
REDIS_URL = "redis://127.0.0.1:6379/0"
FAST = NotificationRetries(attempts=3, retry_delay_seconds=0.01, timeout_seconds=10)


def services(cloud: Cloud) -> Services:
    found: Services = cloud.served.app.state.services
    return found


@asynccontextmanager
async def notifying_cloud(
    factory: CloudFactory, smtp: SmtpReceiver | None = None, **settings: Any
) -> AsyncIterator[Cloud]:
    """A cloud with a public URL, fast retries and, given a server, members' e-mails."""
    server = CloudSmtp("127.0.0.1", smtp.port, "none", "coro@cloud.test") if smtp else None
    async with factory(
        public_url=PUBLIC, notification_retries=FAST, smtp=server, **settings
    ) as cloud:
        yield cloud


def hook(receiver: WebhookReceiver, channel_id: str = "hook", **extra: Any) -> dict[str, Any]:
    return {"id": channel_id, "url": f"{receiver.root}/coro/events", "secret": SECRET, **extra}


async def put_channels(
    cloud: Cloud, account: Account, team_id: str, **lists: list[dict[str, Any]]
) -> httpx.Response:
    return await cloud.client.put(
        f"/teams/{team_id}/notifications", json=lists, headers=account.headers
    )


async def opt_in(
    cloud: Cloud, account: Account, team_id: str, events: list[str] | None = None
) -> httpx.Response:
    email: dict[str, Any] = {"enabled": True}
    if events is not None:
        email["events"] = events
    return await cloud.client.put(
        f"/teams/{team_id}/notifications/me", json={"email": email}, headers=account.headers
    )


async def replicate(client: RunnerClient, job: dict[str, Any], rev: int) -> dict[str, Any]:
    """A runner's `job:update` (each with a message id of its own, so only the cloud's
    revision check stands between a replay and a second effect)."""
    answer = await client.rpc({"type": "job:update", "jobId": job["id"], "rev": rev, "job": job})
    assert answer["ok"] is True, answer
    return dict(answer["data"])


def parked(job_id: str, question: str = QUESTION, **fields: Any) -> dict[str, Any]:
    return job_json(
        job_id,
        status="awaiting-developer-input",
        awaitingEvent=f"developer-input: {question}",
        params={"description": "Add rate limiting"},
        **fields,
    )


@dataclass
class Connected:
    team: TeamRunner
    client: RunnerClient


@asynccontextmanager
async def connected(cloud: Cloud, team: TeamRunner | None = None) -> AsyncIterator[Connected]:
    team = team or await team_runner(cloud)
    async with runner_client(cloud.served.url, team.token) as client:
        await client.register(f"runner-{uuid.uuid4().hex[:8]}")
        yield Connected(team, client)


# --- a move reaches the team's channels and the members who want it -----------------------


async def test_a_replicated_park_reaches_the_team_webhook_signed_and_the_opted_in_member(
    cloud_factory: CloudFactory,
) -> None:
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        elsewhere = await stack.enter_async_context(WebhookReceiver())
        smtp = await stack.enter_async_context(SmtpReceiver())
        cloud = await stack.enter_async_context(notifying_cloud(cloud_factory, smtp))
        link = await stack.enter_async_context(connected(cloud))
        team_id, owner = link.team.team_id, link.team.owner
        assert (await put_channels(cloud, owner, team_id, webhooks=[hook(receiver)])).is_success
        wants, quiet = await cloud.signup(), await cloud.signup()
        for member in (wants, quiet):
            await cloud.add_member(team_id, owner, member)
        assert (await opt_in(cloud, wants, team_id, ["job.awaiting"])).status_code == 200
        # another team, with a channel and an opted-in admin of its own, hears nothing
        other_owner = await cloud.signup()
        other = (await cloud.team(other_owner))["id"]
        assert (
            await put_channels(cloud, other_owner, other, webhooks=[hook(elsewhere)])
        ).is_success
        assert (await opt_in(cloud, other_owner, other)).status_code == 200

        # first sighting (running): nothing to tell; then it parks with a question
        assert (await replicate(link.client, job_json("j1"), 1))["stored"] is True
        assert (await replicate(link.client, parked("j1"), 2))["stored"] is True
        await services(cloud).notifications.settled()

        [delivery] = receiver.requests
        assert delivery.headers["x-coro-signature-256"] == signature_of(SECRET, delivery.raw)
        assert delivery.headers["x-coro-event"] == "job.awaiting"
        payload = json.loads(delivery.raw)
        assert payload["deliveryId"] == delivery.headers["x-coro-delivery"]
        assert (payload["event"], payload["jobId"], payload["status"]) == (
            "job.awaiting",
            "j1",
            "awaiting-developer-input",
        )
        assert payload["title"] == "Add rate limiting"
        assert payload["question"] == QUESTION
        assert payload["reason"] == f"Waiting for developer input: {QUESTION}"
        # the job on the team page (cloud/app.js: #/t/<team>/jobs/<job>)
        assert payload["links"] == {"dashboard": f"{PUBLIC}/#/t/{team_id}/jobs/j1"}

        [mail] = await smtp.wait_for_messages(1)
        assert mail["To"] == wants.email
        assert mail["From"] == "coro@cloud.test"
        assert mail["Subject"] == "[Coro] Waiting for you: Add rate limiting (j1)"
        assert mail["X-Coro-Delivery"] == payload["deliveryId"]
        text = mail.get_body(("plain",))
        assert text is not None and f"{PUBLIC}/#/t/{team_id}/jobs/j1" in text.get_content()
        assert [rcpts for _, rcpts, _ in smtp.envelopes] == [[wants.email]]
        assert elsewhere.requests == []

        # the same revision again (a replay after a reconnect): stored nothing, told nothing
        assert (await replicate(link.client, parked("j1"), 2))["stored"] is False
        # a higher revision in the same status is no move either
        assert (await replicate(link.client, parked("j1"), 3))["stored"] is True
        await services(cloud).notifications.settled()
        assert len(receiver.requests) == 1
        assert len(smtp.messages) == 1

        # the deliveries are what the team's page shows
        listed = await cloud.client.get(f"/teams/{team_id}/notifications", headers=owner.headers)
        [channel] = listed.json()["channels"]
        assert channel["lastDelivery"]["ok"] is True
        assert channel["lastDelivery"]["deliveryId"] == payload["deliveryId"]
        mine = await cloud.client.get(f"/teams/{team_id}/notifications/me", headers=wants.headers)
        assert mine.json()["email"]["lastDelivery"]["event"] == "job.awaiting"


async def test_each_channel_and_member_gets_the_events_it_chose(
    cloud_factory: CloudFactory,
) -> None:
    async with AsyncExitStack() as stack:
        awaiting_only = await stack.enter_async_context(WebhookReceiver())
        everything = await stack.enter_async_context(WebhookReceiver())
        smtp = await stack.enter_async_context(SmtpReceiver())
        cloud = await stack.enter_async_context(notifying_cloud(cloud_factory, smtp))
        link = await stack.enter_async_context(connected(cloud))
        team_id, owner = link.team.team_id, link.team.owner
        all_events = ["job.awaiting", "job.escalated", "job.failed", "job.completed", "pr.opened"]
        response = await put_channels(
            cloud,
            owner,
            team_id,
            webhooks=[
                hook(awaiting_only, "awaiting", events=["job.awaiting"]),
                hook(everything, "all", events=all_events),
            ],
        )
        assert response.status_code == 200, response.text
        assert (await opt_in(cloud, owner, team_id, ["pr.opened"])).status_code == 200

        pr = {
            "prId": 7,
            "workItem": "rate-limit",
            "repoSlug": "acme/api",
            "url": "https://github.com/acme/api/pull/7",
            "openedAt": "2025-01-01T00:00:00.000Z",
        }
        await replicate(link.client, job_json("j2"), 1)
        await replicate(link.client, job_json("j2", prMappings=[pr]), 2)
        await replicate(link.client, job_json("j2", status="complete", prMappings=[pr]), 3)
        await services(cloud).notifications.settled()

    assert [json.loads(r.raw)["event"] for r in everything.requests] == [
        "pr.opened",
        "job.completed",
    ]
    assert json.loads(everything.requests[0].raw)["links"]["pullRequest"] == pr["url"]
    assert awaiting_only.requests == []
    assert [m["X-Coro-Event"] for m in smtp.messages] == ["pr.opened"]


async def test_the_clouds_own_move_of_a_job_no_runner_has_notifies(
    cloud_factory: CloudFactory,
) -> None:
    async with WebhookReceiver() as receiver, notifying_cloud(cloud_factory) as cloud:
        owner = await cloud.signup()
        team_id = (await cloud.team(owner))["id"]
        assert (await put_channels(cloud, owner, team_id, webhooks=[hook(receiver)])).is_success
        created = await cloud.client.post(
            f"/teams/{team_id}/jobs",
            json={"workflowPath": "workflows/fix.md"},
            headers=owner.headers,
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["jobId"]

        def fail(job: Job) -> None:
            job.status = "failed"
            job.escalation_message = "No runner could take the job"

        assert await services(cloud).mirror.set_status(team_id, job_id, fail, None) is not None
        await services(cloud).notifications.settled()

    [delivery] = receiver.requests
    payload = json.loads(delivery.raw)
    assert (payload["event"], payload["jobId"]) == ("job.failed", job_id)
    assert payload["reason"] == "No runner could take the job"


async def test_with_two_instances_only_the_one_that_stored_the_move_notifies(
    cloud_factory: CloudFactory,
) -> None:
    prefix = f"coro-test-{uuid.uuid4().hex[:8]}:"
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        first = await stack.enter_async_context(
            notifying_cloud(cloud_factory, redis_url=REDIS_URL, redis_channel_prefix=prefix)
        )
        second = await stack.enter_async_context(
            notifying_cloud(cloud_factory, redis_url=REDIS_URL, redis_channel_prefix=prefix)
        )
        team = await team_runner(first)
        # the channel is set through the second instance, the runner is on the first
        assert (
            await put_channels(second, team.owner, team.team_id, webhooks=[hook(receiver)])
        ).is_success
        link = await stack.enter_async_context(connected(first, team))
        await replicate(link.client, job_json("j3"), 1)
        await replicate(link.client, parked("j3"), 2)
        await services(first).notifications.settled()
        await services(second).notifications.settled()

    assert [json.loads(r.raw)["jobId"] for r in receiver.requests] == ["j3"]


# --- a failing channel ----------------------------------------------------------------


async def test_a_500_receiver_is_retried_and_never_holds_up_replication(
    cloud_factory: CloudFactory,
) -> None:
    async with (
        WebhookReceiver([500, 500]) as receiver,
        notifying_cloud(cloud_factory) as cloud,
        connected(cloud) as link,
    ):
        team_id, owner = link.team.team_id, link.team.owner
        assert (await put_channels(cloud, owner, team_id, webhooks=[hook(receiver)])).is_success
        held = receiver.hold(1)
        await replicate(link.client, job_json("j4"), 1)
        # answered while the receiver still holds its first delivery unanswered
        assert (await replicate(link.client, parked("j4"), 2))["stored"] is True
        await receiver.wait_for_requests(1)
        assert (await replicate(link.client, parked("j4", "And the TTL?"), 3))["stored"] is True
        held.set()
        await services(cloud).notifications.settled()
        listed = await cloud.client.get(f"/teams/{team_id}/notifications", headers=owner.headers)

    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len({r.headers["x-coro-delivery"] for r in receiver.requests}) == 1
    [channel] = listed.json()["channels"]
    assert channel["lastDelivery"]["ok"] is True
    assert channel["lastDelivery"]["attempts"] == 3
    assert channel["recentFailures"] == []


async def test_a_delivery_that_fails_for_good_is_listed_with_why(
    cloud_factory: CloudFactory,
) -> None:
    async with (
        WebhookReceiver(default=503) as receiver,
        notifying_cloud(cloud_factory) as cloud,
        connected(cloud) as link,
    ):
        team_id, owner = link.team.team_id, link.team.owner
        assert (await put_channels(cloud, owner, team_id, webhooks=[hook(receiver)])).is_success
        await replicate(link.client, job_json("j5"), 1)
        await replicate(link.client, parked("j5"), 2)
        await services(cloud).notifications.settled()
        listed = await cloud.client.get(f"/teams/{team_id}/notifications", headers=owner.headers)

    assert len(receiver.requests) == FAST.attempts
    [channel] = listed.json()["channels"]
    [failure] = channel["recentFailures"]
    assert failure == channel["lastDelivery"]
    assert (failure["ok"], failure["status"], failure["attempts"]) == (False, 503, 3)
    assert failure["error"].startswith("HTTP 503")


# --- the routes: roles, secrets, tests ---------------------------------------------------


async def test_members_read_the_channels_admins_change_them_and_secrets_stay_masked(
    cloud_factory: CloudFactory,
) -> None:
    async with (
        WebhookReceiver() as receiver,
        SmtpReceiver() as smtp,
        notifying_cloud(cloud_factory) as cloud,
    ):
        owner, member = await cloud.signup(), await cloud.signup()
        team_id = (await cloud.team(owner))["id"]
        await cloud.add_member(team_id, owner, member)
        slack_url = f"{receiver.root}{SLACK_PATH}"
        email = {
            "id": "ops",
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "username": "coro",
            "password": SMTP_PASSWORD,
            "from": "coro@team.test",
            "to": ["ops@team.test"],
        }
        answers: list[httpx.Response] = []

        async def call(method: str, path: str, who: Account, **kwargs: Any) -> httpx.Response:
            response = await cloud.client.request(
                method, f"/teams/{team_id}{path}", headers=who.headers, **kwargs
            )
            answers.append(response)
            return response

        body = {
            "webhooks": [hook(receiver)],
            "slack": [{"webhookUrl": slack_url}],
            "email": [email],
        }
        refused = await call("PUT", "/notifications", member, json=body)
        assert refused.status_code == 403
        saved = await call("PUT", "/notifications", owner, json=body)
        assert saved.status_code == 200, saved.text
        settings = saved.json()["settings"]
        assert [c["id"] for c in saved.json()["channels"]] == ["hook", "slack-1", "ops"]
        assert settings["webhooks"][0]["secret"] == "whse...tttt"
        assert settings["slack"][0]["webhookUrl"] not in (slack_url, "")
        assert settings["email"][0]["password"] == "smtp...qqqq"

        # members see the channels (targets masked), not their settings
        seen = await call("GET", "/notifications", member)
        assert seen.status_code == 200
        assert seen.json()["settings"] is None
        targets = {c["id"]: c["target"] for c in seen.json()["channels"]}
        assert targets["hook"] == f"{receiver.root.removeprefix('http://')}/coro/events"
        assert targets["ops"] == "ops@team.test"
        assert "slacktoken" not in targets["slack-1"]
        assert (
            await call("POST", "/notifications/test", member, json={"channel": "hook"})
        ).status_code == 403

        # the settings sent back as shown keep every secret: the next test is signed
        # with the stored one and the SMTP login uses the stored password
        again = await call("PUT", "/notifications", owner, json=settings)
        assert again.status_code == 200, again.text
        tested = await call("POST", "/notifications/test", owner, json={"channel": "hook"})
        assert tested.json() == {"channel": "hook", "ok": True, "status": 200}
        [delivery] = receiver.requests
        assert delivery.headers["x-coro-signature-256"] == signature_of(SECRET, delivery.raw)
        test_payload = json.loads(delivery.raw)
        assert test_payload["event"] == "test"
        assert test_payload["links"]["dashboard"] == f"{PUBLIC}/#/t/{team_id}/jobs"
        smtp.username, smtp.password = "coro", SMTP_PASSWORD
        mailed = await call("POST", "/notifications/test", owner, json={"channel": "ops"})
        assert mailed.json()["ok"] is True, mailed.json()
        assert smtp.logins == ["coro"]
        slacked = await call("POST", "/notifications/test", owner, json={"channel": "slack-1"})
        assert slacked.json()["ok"] is True
        assert receiver.requests[-1].path == SLACK_PATH
        assert receiver.requests[-1].body["blocks"][0]["type"] == "header"

        # a mask under an id nothing has is refused, naming where (never the value)
        stray = {**settings, "webhooks": [{**settings["webhooks"][0], "id": "new"}]}
        bad = await call("PUT", "/notifications", owner, json=stray)
        assert bad.status_code == 400
        assert bad.json()["issues"][0]["path"] == "webhooks.0.secret"
        invalid = await call(
            "PUT", "/notifications", owner, json={"webhooks": [{"url": "ftp://x", "secret": "s"}]}
        )
        assert invalid.status_code == 400
        assert invalid.json()["issues"][0]["path"].startswith("webhooks.0")
        unknown = await call("PUT", "/notifications", owner, json={"pagers": []})
        assert unknown.status_code == 400
        assert (
            await call("POST", "/notifications/test", owner, json={"channel": "gone"})
        ).status_code == 404
        listed = await call("GET", "/notifications", owner)
        assert listed.json()["settings"] == settings  # the refused changes changed nothing

        # removing a channel
        kept = await call("PUT", "/notifications", owner, json={**settings, "slack": []})
        assert [c["id"] for c in kept.json()["channels"]] == ["hook", "ops"]

        # the member's own e-mails, without an SMTP server on this cloud
        mine = await call("GET", "/notifications/me", member)
        assert mine.json()["email"] == {
            "enabled": False,
            "events": ["job.awaiting", "job.escalated", "job.failed", "pr.opened"],
            "address": member.email,
            "available": False,
            "reason": "smtp-not-configured",
            "lastDelivery": None,
        }
        on = await call("PUT", "/notifications/me", member, json={"email": {"enabled": True}})
        assert on.status_code == 409
        assert on.json()["reason"] == "smtp-not-configured"
        assert "SMTP" in on.json()["error"]
        off = await call(
            "PUT", "/notifications/me", member, json={"email": {"enabled": False, "events": []}}
        )
        assert off.status_code == 200
        assert off.json()["email"]["events"] == []

        # someone outside the team sees nothing of it
        stranger = await cloud.signup()
        assert (await call("GET", "/notifications", stranger)).status_code == 404
        assert (await call("GET", "/notifications/me", stranger)).status_code == 404

    for answer in answers:
        for secret in (SECRET, SLACK_PATH, "slacktokenCLOUDTOKEN9876", SMTP_PASSWORD):
            assert secret not in answer.text, (answer.request.method, answer.request.url)


async def test_a_member_chooses_their_own_emails(cloud_factory: CloudFactory) -> None:
    async with SmtpReceiver() as smtp, notifying_cloud(cloud_factory, smtp) as cloud:
        owner, member = await cloud.signup(), await cloud.signup()
        team_id = (await cloud.team(owner))["id"]
        await cloud.add_member(team_id, owner, member)
        chose = await opt_in(cloud, member, team_id, ["job.failed", "job.failed"])
        assert chose.status_code == 200, chose.text
        email = chose.json()["email"]
        assert (email["enabled"], email["events"], email["available"]) == (
            True,
            ["job.failed"],
            True,
        )
        assert "reason" not in email
        # each member's own: the admin's stays off
        assert (
            await cloud.client.get(f"/teams/{team_id}/notifications/me", headers=owner.headers)
        ).json()["email"]["enabled"] is False
        # turned off, the events are kept for next time
        off = await cloud.client.put(
            f"/teams/{team_id}/notifications/me",
            json={"email": {"enabled": False}},
            headers=member.headers,
        )
        assert off.json()["email"]["events"] == ["job.failed"]
        bad = await cloud.client.put(
            f"/teams/{team_id}/notifications/me",
            json={"email": {"enabled": True, "events": ["job.exploded"]}},
            headers=member.headers,
        )
        assert bad.status_code == 400


# --- settings ---------------------------------------------------------------------------


def test_the_smtp_settings_come_from_the_environment_and_keep_the_password_hidden() -> None:
    smtp = smtp_settings("smtp://coro%40acme:s3cr%2Fet-password@mail.acme.test", "coro@acme.test")
    assert (smtp.host, smtp.port, smtp.security) == ("mail.acme.test", 587, "starttls")
    assert (smtp.username, smtp.password) == ("coro@acme", "s3cr/et-password")
    assert "s3cr" not in repr(smtp)
    tls = smtp_settings("smtps://mail.acme.test", "coro@acme.test")
    assert (tls.port, tls.security, tls.username) == (465, "tls", None)
    relay = smtp_settings("smtp://127.0.0.1:2525", "coro@acme.test", "none")
    assert (relay.port, relay.security) == (2525, "none")

    env = {"DATABASE_URL": "postgresql://db/coro", "JWT_SECRET": "j" * 40}
    with pytest.raises(SettingsError) as alone:
        CloudSettings.from_env({**env, "CLOUD_SMTP_URL": "smtp://u:hunter2-password@h"})
    assert alone.value.problems == ["CLOUD_SMTP_URL and CLOUD_SMTP_FROM go together"]
    for url, sender, security in (
        ("http://u:hunter2-password@h", "a@b", None),
        ("smtp://u:hunter2-password@h/path", "a@b", None),
        ("smtp://u:hunter2-password@h", "not an address", None),
        ("smtp://u:hunter2-password@h", "a@b", "ssl"),
    ):
        with pytest.raises(ValueError) as refused:
            smtp_settings(url, sender, security)
        assert "hunter2" not in str(refused.value)


# --- the team page -----------------------------------------------------------------------


async def test_the_team_page_lists_tests_and_adds_channels_and_takes_a_members_opt_in(
    cloud_factory: CloudFactory, chromium: object
) -> None:
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        smtp = await stack.enter_async_context(SmtpReceiver())
        cloud = await stack.enter_async_context(notifying_cloud(cloud_factory, smtp))
        team = await team_runner(cloud)
        member = await cloud.signup(name="Member")
        await cloud.add_member(team.team_id, team.owner, member)

        # an admin adds a webhook channel and tests it
        ui = await team_page(chromium, cloud)
        page = ui.page
        await sign_in_in_the_page(page, team.owner, "Ada Lovelace")
        await page.get_by_role("link", name="Notifications").click()
        section = page.get_by_role("region", name="Team channels")
        await section.get_by_text("No channels yet").wait_for()
        await section.get_by_label("Add a channel").select_option("webhook")
        await section.get_by_role("button", name="New channel").click()
        form = section.get_by_role("form", name="New webhook channel")
        await form.get_by_label("Channel id").fill("ops")
        await form.get_by_label("URL").fill(f"{receiver.root}/hooks")
        await form.get_by_label("Signing secret").fill(SECRET)
        await form.get_by_role("button", name="Add channel").click()
        ops = section.get_by_role("region", name="Webhook ops")
        await expect(ops).to_contain_text(f"127.0.0.1:{receiver.port}/hooks")
        await ops.get_by_role("button", name="Send a test notification").click()
        await expect(ops.get_by_role("status")).to_contain_text("Test delivered")
        await expect(ops.locator(".badge")).to_have_text("ok")
        [tested] = receiver.requests
        assert tested.headers["x-coro-signature-256"] == signature_of(SECRET, tested.raw)
        await page.reload()
        await expect(section.get_by_role("region", name="Webhook ops")).to_be_visible()
        assert SECRET not in await page.content()
        await ui.shot("cloud-notifications-admin")
        assert ui.errors == []
        await page.close()

        # a member sees the channel without its controls, and asks for e-mails
        seen = await team_page(chromium, cloud)
        page = seen.page
        await sign_in_in_the_page(page, member, "Member")
        await page.get_by_role("link", name="Notifications").click()
        ops = page.get_by_role("region", name="Team channels").get_by_role(
            "region", name="Webhook ops"
        )
        await expect(ops.locator(".badge")).to_have_text("ok")
        await expect(ops.get_by_role("button")).to_have_count(0)
        await expect(ops).not_to_contain_text("null")
        await expect(page.get_by_role("button", name="New channel")).to_have_count(0)
        mine = page.get_by_role("region", name="My e-mails")
        await expect(mine).to_contain_text(member.email)
        await mine.get_by_label("E-mail me about this team's jobs").check()
        await mine.get_by_label("A pull request was opened").uncheck()
        await mine.get_by_role("button", name="Save my e-mails").click()
        await expect(mine.get_by_role("status")).to_contain_text("you get these e-mails")
        await seen.shot("cloud-notifications-member")
        assert seen.errors == []

        async with runner_client(cloud.served.url, team.token) as client:
            await client.register("page-runner")
            await replicate(client, job_json("j9"), 1)
            await replicate(client, parked("j9"), 2)
        await services(cloud).notifications.settled()
        [mail] = await smtp.wait_for_messages(1)
        assert mail["To"] == member.email
        await page.reload()
        await expect(page.get_by_role("region", name="My e-mails")).to_contain_text("delivered")
        assert seen.errors == []
