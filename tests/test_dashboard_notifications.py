"""The dashboard as a notification channel (issue #14), in headless Chromium against a
real runner: desktop notifications for a run that parks while the page is open, the
count of runs awaiting someone in the tab title, and the settings page's channels
(added, tested against loopback receivers, their failures shown, secrets kept masked).

Chromium is granted the `notifications` permission for the runner's origin; an init
script wraps `window.Notification` so that every notification the page shows is
recorded (the real one is still constructed).
"""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Page, expect

from coro.config import CoroConfig
from tests.browser import Dashboard, dashboard_page
from tests.conftest import Api, ApiFactory, write_workflow
from tests.fakes.notification_receivers import SmtpReceiver, WebhookReceiver, signature_of

#: Records every notification shown (`window.shownNotifications`; the objects themselves
#: in `window.notificationObjects`).
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.shownNotifications = [];
  window.notificationObjects = [];
  class Recorded extends Real {
    constructor(title, options = {}) {
      super(title, options);
      window.shownNotifications.push({ title, body: options.body ?? "", tag: options.tag ?? "" });
      window.notificationObjects.push(this);
    }
  }
  window.Notification = Recorded;
})();
"""

SECRET = "whsec-dashboard-" + "q" * 32
ASKS = {"work": [[{"tool": "await_event", "input": {"eventName": "developer-input: ok?"}}], []]}


async def notifying_board(chromium: object, api: Api) -> Dashboard:
    """A page allowed to show notifications, which it records."""
    ui = await dashboard_page(chromium, api.served.url)
    await ui.page.context.grant_permissions(["notifications"], origin=api.served.url)
    await ui.page.add_init_script(RECORD_NOTIFICATIONS)
    return ui


async def shown(page: Page) -> list[dict[str, str]]:
    notes: list[dict[str, str]] = await page.evaluate("window.shownNotifications")
    return notes


async def test_a_run_that_parks_notifies_and_counts_in_the_title(
    api: Api, chromium: object
) -> None:
    workflow = write_workflow(api.home, "asks", [{"name": "work", "agent": None}])
    ui = await notifying_board(chromium, api)
    page = ui.page
    await ui.open()
    await expect(page).to_have_title("Coro")
    toggle = page.get_by_role("button", name="Notifications", exact=True)
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-pressed", "true")

    job_id = await api.create(workflow, ASKS, description="Pick the database")
    await api.wait_for_line(job_id, "Job parked")
    await page.wait_for_function("window.shownNotifications.length > 0")
    await expect(page).to_have_title("(1) Coro")
    (note,) = await shown(page)
    assert note == {
        "title": "Pick the database",
        "body": "Waiting for developer input: ok?",
        "tag": f"{job_id}:job.awaiting",
    }
    # a click on it opens the run
    await page.evaluate("window.notificationObjects[0].dispatchEvent(new Event('click'))")
    await expect(page.get_by_role("heading", name=job_id)).to_be_visible()

    answered = await api.client.post(f"/jobs/{job_id}/message", json={"message": "Postgres"})
    assert answered.status_code == 200, answered.text
    await api.finish(job_id)
    await expect(page).to_have_title("Coro")

    # The next run that parks is the next notification: the first run's completion (not
    # among the events shown by default) came before it on the stream, and was not shown.
    second = await api.create(workflow, ASKS, description="Choose the port")
    await page.wait_for_function("window.shownNotifications.length > 1")
    assert [n["title"] for n in await shown(page)] == ["Pick the database", "Choose the port"]
    await expect(page).to_have_title("(1) Coro")
    await api.client.post(f"/jobs/{second}/message", json={"message": "8080"})
    await api.finish(second)

    # the choice is remembered by this browser
    await page.reload()
    await expect(page.get_by_role("button", name="Notifications", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    assert ui.errors == []


async def test_channels_are_added_tested_and_their_secrets_stay_masked(
    api_factory: ApiFactory, chromium: object
) -> None:
    config = CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "notifications": {"retryDelaySeconds": 0.01}}
    )
    async with (
        WebhookReceiver() as receiver,
        WebhookReceiver(default=500) as broken,
        api_factory(config) as api,
    ):
        ui = await notifying_board(chromium, api)
        page = ui.page
        await ui.open("#/settings")
        section = page.get_by_role("region", name="Notifications")
        await section.get_by_text("No channels yet").wait_for()  # the page's own timeout

        async def add_webhook(channel_id: str, url: str) -> None:
            await section.get_by_label("Add a channel").select_option("webhook")
            await section.get_by_role("button", name="New channel").click()
            form = section.get_by_role("form", name="New webhook channel")
            await form.get_by_label("Channel id").fill(channel_id)
            await form.get_by_label("URL").fill(url)
            await form.get_by_label("Signing secret").fill(SECRET)
            await form.get_by_role("button", name="Add channel").click()
            await expect(
                section.get_by_role("region", name=f"Webhook {channel_id}")
            ).to_be_visible()

        await add_webhook("ops", f"{receiver.root}/hooks")
        ops = section.get_by_role("region", name="Webhook ops")
        await expect(ops).to_contain_text(f"127.0.0.1:{receiver.port}/hooks")
        await ops.get_by_role("button", name="Send a test notification").click()
        await expect(ops.get_by_role("status")).to_contain_text("Test delivered")
        await expect(ops.locator(".badge")).to_have_text("ok")  # its last delivery
        (delivery,) = receiver.requests
        assert delivery.headers["x-coro-signature-256"] == signature_of(SECRET, delivery.raw)
        assert json.loads(delivery.raw)["event"] == "test"

        await add_webhook("broken", f"{broken.root}/hooks")
        failing = section.get_by_role("region", name="Webhook broken")
        await failing.get_by_role("button", name="Send a test notification").click()
        await expect(failing.get_by_role("alert")).to_contain_text("Test failed: HTTP 500")
        await expect(failing.locator(".badge")).to_have_text("failed")
        await expect(failing.get_by_text("Recent failures (1)")).to_be_visible()
        # the channel tests are not news about a run: no desktop notification
        assert await shown(page) == []

        # after a reload the secret shows masked only; an edit that leaves it keeps it
        await page.reload()
        ops = section.get_by_role("region", name="Webhook ops")
        await ops.get_by_role("button", name="Edit").click()
        secret_input = ops.get_by_label("Signing secret")
        await expect(secret_input).not_to_have_value("")
        values: list[str] = await page.evaluate(
            "[...document.querySelectorAll('input, textarea')].map((i) => i.value)"
        )
        assert SECRET not in await page.content() + json.dumps(values)
        await ops.get_by_label("A run completed").check()
        await ops.get_by_role("button", name="Save channel").click()
        await expect(section.get_by_role("status").first).to_contain_text("saved")
        ops = section.get_by_role("region", name="Webhook ops")
        await expect(ops).to_contain_text("job.completed")
        await ops.get_by_role("button", name="Send a test notification").click()
        await expect(ops.get_by_role("status")).to_contain_text("Test delivered")
        second = receiver.requests[-1]
        # signed with the secret entered first: the mask sent back kept it
        assert second.headers["x-coro-signature-256"] == signature_of(SECRET, second.raw)

        # the browser's own channel: a local test notification
        browser = section.get_by_role("region", name="This browser")
        await browser.get_by_role("button", name="Turn on desktop notifications").click()
        await browser.get_by_role("button", name="Send a test notification").click()
        await expect(browser.get_by_role("status").last).to_contain_text("Test notification shown")
        assert [n["title"] for n in await shown(page)] == ["Coro test notification"]
        await ui.shot("settings-notifications")
        stored: dict[str, Any] = json.loads(api.home.config_file.read_text())
        assert ui.errors == []
        await page.close()
    assert [(w["id"], w["secret"]) for w in stored["notifications"]["webhooks"]] == [
        ("ops", SECRET),
        ("broken", SECRET),
    ]


async def test_e_mail_and_slack_channels_are_added_tested_removed_and_refusals_shown(
    api_factory: ApiFactory, chromium: object
) -> None:
    slack_url = "https://hooks.slack.example/services/T0/B0/" + "s" * 24
    config = CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "notifications": {"slack": [{"id": "team", "webhookUrl": slack_url}]},
        }
    )
    password = "smtp-password-" + "p" * 20
    async with SmtpReceiver(username="coro", password=password) as smtp, api_factory(config) as api:
        ui = await dashboard_page(chromium, api.served.url)
        page = ui.page
        await ui.open("#/settings")
        section = page.get_by_role("region", name="Notifications")
        team = section.get_by_role("region", name="Slack team")
        await team.wait_for()  # the page's own timeout
        assert slack_url not in await page.content()

        # a URL the runner refuses: the form says why and nothing is saved
        await section.get_by_label("Add a channel").select_option("webhook")
        await section.get_by_role("button", name="New channel").click()
        hook = section.get_by_role("form", name="New webhook channel")
        await hook.get_by_label("URL").fill("ftp://files.example/hook")
        await hook.get_by_label("Signing secret").fill(SECRET)
        await hook.get_by_role("button", name="Add channel").click()
        await expect(hook.get_by_role("alert")).to_contain_text("notifications.webhooks.0.url")
        await hook.get_by_role("button", name="Cancel").click()
        await expect(hook).to_have_count(0)

        await section.get_by_label("Add a channel").select_option("email")
        await section.get_by_role("button", name="New channel").click()
        mail = section.get_by_role("form", name="New e-mail channel")
        await mail.get_by_label("SMTP host").fill("127.0.0.1")
        await mail.get_by_label("Port").fill(str(smtp.port))
        await mail.get_by_label("Security").select_option("none")
        await mail.get_by_label("User name").fill("coro")
        await mail.get_by_label("Password").fill(password)
        await mail.get_by_label("From").fill("coro@example.com")
        await mail.get_by_label("To").fill("ana@example.com, bo@example.com")
        await mail.get_by_label("A run completed").check()
        await mail.get_by_role("button", name="Add channel").click()
        added = section.get_by_role("region", name="E-mail email-1")
        await expect(added).to_contain_text("ana@example.com, bo@example.com")
        await expect(added).to_contain_text("job.completed")
        await added.get_by_role("button", name="Send a test notification").click()
        await expect(added.get_by_role("status")).to_contain_text("Test delivered")
        (message,) = await smtp.wait_for_messages(1)
        assert "Test notification" in message["Subject"]
        assert smtp.envelopes[0][1] == ["ana@example.com", "bo@example.com"]
        assert password not in await page.content()

        await team.get_by_role("button", name="Remove").click()
        await page.get_by_role("dialog").get_by_role("button", name="Remove").click()
        await expect(team).to_have_count(0)
        stored: dict[str, Any] = json.loads(api.home.config_file.read_text())
        # the browser logs the refused PUT; nothing else went wrong
        assert len(ui.errors) == 1 and "status of 400" in ui.errors[0], ui.errors
        await page.close()
    notifications = stored["notifications"]
    assert notifications["slack"] == [] and notifications["webhooks"] == []
    (mail_channel,) = notifications["email"]
    assert mail_channel == {
        **mail_channel,
        "id": "email-1",
        "host": "127.0.0.1",
        "port": smtp.port,
        "security": "none",
        "username": "coro",
        "password": password,
        "from": "coro@example.com",
        "to": ["ana@example.com", "bo@example.com"],
    }
    assert "job.completed" in mail_channel["events"]
