"""A new user's first run of the dashboard (issue #13, point 9), in headless Chromium
against a real runner: plan mode says up front that no LLM is configured and never loses
what was typed; a finished run's controls are off (and come back when it runs again);
the runs table fits a phone.
"""

from __future__ import annotations

from playwright.async_api import expect

from tests.conftest import Api, ApiFactory, provider_config
from tests.fakes.anthropic_server import FakeAnthropic
from tests.test_dashboard import board

KEY = "sk-ant-polish-" + "k" * 40
NO_LLM = (
    "Plan mode needs an LLM provider (anthropic, openai or compatible); "
    "configure one in Settings or use the form."
)


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
