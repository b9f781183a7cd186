"""A new user's first run of the dashboard (issue #13, point 9), in headless Chromium
against a real runner: plan mode says up front that no LLM is configured and never loses
what was typed; a finished run's controls are off (and come back when it runs again);
the runs table fits a phone.
"""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.conftest import Api, ApiFactory, provider_config, write_workflow
from tests.fakes.anthropic_server import FakeAnthropic
from tests.test_dashboard import board

KEY = "sk-ant-polish-" + "k" * 40
NO_LLM = (
    "Plan mode needs an LLM provider (anthropic, openai or compatible); "
    "configure one in Settings or use the form."
)
#: Generous: the page learns of a rerun from its own request, then from the stream.
LIVE_MS = 30_000


# --- plan mode without an LLM ---------------------------------------------------------


async def test_the_intake_status_says_whether_plan_mode_can_answer(
    api_factory: ApiFactory,
) -> None:
    async with api_factory() as api:  # the script executor only: it cannot chat
        off = await api.client.get("/intake")
    assert off.status_code == 200
    assert off.json() == {"available": False, "reason": "no-llm", "message": NO_LLM}
    async with (
        FakeAnthropic(api_key=KEY) as fake,
        api_factory(provider_config("anthropic", apiKey=KEY, baseUrl=fake.base_url)) as api,
    ):
        on = await api.client.get("/intake")
        assert fake.message_requests == []  # asking costs no provider call
    assert on.json() == {"available": True, "reason": None, "message": None}


async def test_without_an_llm_plan_mode_says_so_before_anything_is_typed(
    api: Api, chromium: object
) -> None:
    ui = await board(chromium, api)
    await ui.open("#/new")
    page = ui.page
    plan = page.get_by_role("form", name="Plan mode is off")
    await expect(plan.locator("#no-llm")).to_have_text(NO_LLM)
    # Said once, and no chat box to type into that could not answer.
    assert (await page.locator("main").inner_text()).count("use the form") == 1
    await expect(page.get_by_label("Your message")).to_have_count(0)
    await expect(page.get_by_role("form", name="Run details")).to_be_visible()
    await ui.shot("plan-mode-off")
    assert ui.errors == []  # no turn was tried, so no 503 either


async def test_a_message_plan_mode_can_no_longer_take_moves_into_the_form(
    api_factory: ApiFactory, chromium: object
) -> None:
    async with (
        FakeAnthropic(api_key=KEY) as fake,
        api_factory(provider_config("anthropic", apiKey=KEY, baseUrl=fake.base_url)) as api,
    ):
        ui = await board(chromium, api)
        await ui.open("#/new")
        page = ui.page
        chat = page.get_by_role("form", name="Plan it with the assistant")
        await chat.get_by_label("Your message").fill("Add rate limiting to the API")
        # The LLM goes away while the page is open (set in another tab, say).
        saved = await api.client.put("/config", json={"llm": {"defaultProvider": "script"}})
        assert saved.status_code == 200, saved.text
        await chat.get_by_role("button", name="Send").click()
        plan = page.get_by_role("form", name="Plan mode is off")
        await expect(plan.locator("#no-llm")).to_have_text(NO_LLM)
        form = page.get_by_role("form", name="Run details")
        await expect(form.get_by_label("What should be done")).to_have_value(
            "Add rate limiting to the API"
        )
        await expect(page.get_by_role("status")).to_contain_text("Your message is in the form")
        assert (await page.locator("main").inner_text()).count("use the form") == 1
        assert fake.message_requests == []
        assert all("503" in error for error in ui.errors)  # the refused turn, nothing else
        await page.close()


# --- a finished run's controls ------------------------------------------------------


async def expect_controls(page: Page, *, enabled: bool) -> None:
    """The resume controls (phase, fresh session) and the message composer."""
    for control in (
        page.get_by_role("button", name="Resume", exact=True),
        page.get_by_label("Resume from phase"),
        page.get_by_label("fresh session"),
        page.get_by_label("Message to the agent"),
        page.locator("#send-message"),
    ):
        if enabled:
            await expect(control).to_be_enabled(timeout=LIVE_MS)
        else:
            await expect(control).to_be_disabled(timeout=LIVE_MS)


async def test_a_finished_run_turns_its_controls_off_until_it_runs_again(
    api: Api, chromium: object
) -> None:
    workflow = write_workflow(api.home, "once", [{"name": "work", "agent": None}])
    script = {"work": [[{"text": "first visit done"}], [{"text": "rerun going"}, {"sleep": 600}]]}
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "complete"
    ui = await board(chromium, api)
    await ui.open(f"#/runs/{job_id}")
    page = ui.page
    log = page.get_by_role("log", name="Live log")
    await expect(log).to_contain_text("first visit done")
    await expect_controls(page, enabled=False)
    await expect(page.locator("#finished-why")).to_contain_text("Rerun a phase to reopen it")
    await expect(page.locator("#message-why")).to_have_text("A complete run takes no message.")
    await ui.shot("run-complete")

    # A rerun brings the run, its controls and its live log back.
    await page.get_by_role("button", name="Rerun").click()
    await expect(log).to_contain_text("rerun going", timeout=LIVE_MS)
    await expect(page.locator("#log-connection")).to_have_text("live")
    await expect_controls(page, enabled=True)
    await expect(page.locator("#finished-why")).to_have_count(0)
    await expect(page.locator("#message-why")).to_be_hidden()
    assert (await log.inner_text()).count("first visit done") == 1  # followed on, not replayed

    await page.get_by_role("button", name="Cancel").click()
    await page.get_by_role("dialog").get_by_role("button", name="Cancel run").click()
    await expect(page.locator("#finished-why")).to_contain_text("Start a new run")
    await expect_controls(page, enabled=False)
    await expect(page.get_by_role("button", name="Rerun")).to_be_disabled()
    assert (await api.job(job_id))["status"] == "cancelled"
    assert ui.errors == []


async def test_an_escalated_run_keeps_its_controls(api: Api, chromium: object) -> None:
    workflow = write_workflow(api.home, "stuck", [{"name": "work", "agent": None}])
    script = {"work": [[{"tool": "escalate", "input": {"reason": "needs a decision"}}]]}
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "escalated"
    ui = await board(chromium, api)
    await ui.open(f"#/runs/{job_id}")
    page = ui.page
    await expect(page.locator("#log-connection")).to_have_text("stream closed")
    await expect_controls(page, enabled=True)
    await expect(page.locator("#finished-why")).to_have_count(0)
    # It takes no interactive switch (the runner refuses it for a stopped run).
    await expect(page.get_by_label("Interactive", exact=False)).to_be_disabled()
    assert ui.errors == []


# --- the runs table on a phone --------------------------------------------------------


async def test_the_runs_table_fits_a_phone_with_every_id_and_status_in_reach(
    api: Api, chromium: object
) -> None:
    workflow = write_workflow(api.home, "quick", [{"name": "work", "agent": None}])
    long = "Add rate limiting to the public API so one client cannot starve the others. " * 2
    done = [await api.create(workflow, {"work": [{"text": "ok"}]}, description=long)]
    assert (await api.finish(done[0])).done == "complete"
    asks = {"work": [{"tool": "await_event", "input": {"eventName": "developer-input: ok?"}}]}
    url = "See https://issues.example.com/acme/a-long-repository-name/issues/12345678/comments"
    waiting = await api.create(workflow, asks, description=url)
    await api.wait_for_line(waiting, "Job parked")
    statuses = {done[0]: "complete", waiting: "awaiting-developer-input"}

    ui = await board(chromium, api, width=390)
    page = ui.page
    await ui.open("#/runs")
    rows = page.get_by_role("table", name="Runs").locator("tbody tr")
    await expect(rows).to_have_count(2)
    width = await page.evaluate("innerWidth")
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
    wrap = page.locator(".table-wrap")
    assert await wrap.evaluate("w => w.scrollWidth <= w.clientWidth"), "the table scrolls sideways"
    for job_id, status in statuses.items():
        row = rows.filter(has=page.get_by_role("link", name=job_id))
        for part in (row.get_by_role("link", name=job_id), row.locator(".badge")):
            await expect(part).to_be_visible()
            box = await part.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        await expect(row.locator(".badge")).to_have_text(status)
        # Without the column headings on show, the phase says what it is.
        await expect(row.get_by_role("cell", name="phase work")).to_be_visible()
    await ui.shot("runs-phone")
    assert ui.errors == []
