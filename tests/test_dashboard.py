"""The dashboard in headless Chromium against a real runner (SPEC §2.7, issue #6).

Every test drives the pages as a user would (labels, buttons, keyboard), waits on what
appears on the page (never on time), and fails on any console error. Screenshots of
each page land in a temporary folder (see `tests/browser.py`).
"""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect

from coro.config import CoroConfig
from tests.browser import Dashboard, dashboard_page
from tests.cloud_helpers import Cloud
from tests.conftest import Api, ApiFactory, write_workflow
from tests.fakes.anthropic_server import FakeAnthropic, text
from tests.hybrid_helpers import pair, revoke

#: The cloud fixtures, for the hybrid runner's team page.
pytest_plugins = ("tests.cloud_fixtures",)

KEY = "sk-ant-dash-" + "k" * 40

REVIEWED: list[dict[str, Any]] = [
    {"name": "draft", "agent": None, "status": "drafting", "interactive_checkpoint": True},
    {"name": "build", "agent": None, "status": "building"},
]
DRAFT_SCRIPT: dict[str, Any] = {
    "draft": [
        {"text": "Drafting the plan"},
        {"tool": "file_write", "input": {"path": "plan.md", "content": "# Plan\n\n- one step\n"}},
        {
            "tool": "post_artifact",
            "input": {"kind": "plan-md", "title": "The plan", "data": {"path": "plan.md"}},
        },
    ],
    "build": [{"text": "Building as planned"}],
}


async def board(chromium: object, api: Api, **kwargs: Any) -> Dashboard:
    return await dashboard_page(chromium, api.served.url, **kwargs)


async def test_runs_page_lists_runs_with_cards_filters_and_pages(
    api: Api, chromium: object
) -> None:
    workflow = write_workflow(api.home, "quick", [{"name": "work", "agent": None}])
    done = [await api.create(workflow, {"work": [{"text": f"run {n}"}]}) for n in range(3)]
    for job_id in done:
        await api.finish(job_id)
    asks = {"work": [{"tool": "await_event", "input": {"eventName": "developer-input: ok?"}}]}
    waiting = await api.create(workflow, asks, description="needs an answer")
    await api.wait_for_line(waiting, "Job parked")

    ui = await board(chromium, api)
    await ui.open()
    page = ui.page
    await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    await expect(page.locator("#stat-waiting")).to_have_text("1")
    await expect(page.locator("#stat-stopped")).to_have_text("3")
    rows = page.get_by_role("table", name="Runs").locator("tbody tr")
    await expect(rows).to_have_count(4)
    await ui.shot("runs")

    await page.get_by_label("Status").select_option("waiting")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(waiting)
    await page.get_by_label("Status").select_option("")
    await page.get_by_label("Search").fill(done[1])
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(done[1])

    await page.get_by_role("link", name=done[1]).click()
    await expect(page.get_by_role("heading", name=done[1])).to_be_visible()
    assert ui.errors == []


async def test_run_detail_streams_the_log_and_drives_the_controls(
    api: Api, chromium: object
) -> None:
    workflow = write_workflow(api.home, "slow", [{"name": "work", "agent": None}])
    script = {
        "work": [
            [
                {"usage": {"inputTokens": 1200, "outputTokens": 300, "costUsd": 0.25}},
                {"text": "first visit, waiting"},
                {"usage": {"inputTokens": 800, "outputTokens": 100, "costUsd": 0.25}},
                {"sleep": 600},
            ],
            [{"text": "resumed after the message"}, {"sleep": 600}],
        ]
    }
    job_id = await api.create(workflow, script)
    ui = await board(chromium, api, dark=True)
    await ui.open(f"#/runs/{job_id}")
    page = ui.page
    log = page.get_by_role("log", name="Live log")
    await expect(log).to_contain_text("first visit, waiting")
    # The running phase's usage shows before the phase ends.
    phases = page.get_by_role("list", name="Phases")
    await expect(phases).to_contain_text("1 visit(s) · 2,000 in / 400 out · $0.50 · running")
    await expect(page.locator("#log-connection")).to_have_text("live")
    await ui.shot("run-detail-dark")

    await page.get_by_role("button", name="Pause").click()
    await expect(log).to_contain_text("paused")
    await expect(page.get_by_text("paused", exact=True)).to_be_visible()

    await page.get_by_label("Message to the agent").fill("Carry on, please")
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(log).to_contain_text("resumed after the message")

    await page.get_by_label("Show").select_option("tools")
    await expect(log.get_by_text("resumed after the message")).to_be_hidden()
    await page.get_by_label("Show").select_option("agent")
    await expect(log.get_by_text("resumed after the message")).to_be_visible()
    await expect(log.get_by_text("Runner started", exact=False).first).to_be_hidden()
    await page.get_by_label("Show").select_option("all")

    await page.get_by_role("button", name="Cancel").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Cancel this run?")
    await dialog.get_by_role("button", name="Cancel run").click()
    await expect(page.locator("#log-connection")).to_have_text("stream closed")
    await expect(page.locator(".badge").first).to_have_text("cancelled")
    job = await api.job(job_id)
    assert job["status"] == "cancelled"
    assert ui.errors == []


async def test_a_checkpoint_artefact_is_edited_then_approved(api: Api, chromium: object) -> None:
    workflow = write_workflow(api.home, "reviewed", REVIEWED)
    job_id = await api.create(workflow, DRAFT_SCRIPT, interactive=True)
    await api.wait_for_line(job_id, "Job parked")
    ui = await board(chromium, api)
    await ui.open(f"#/runs/{job_id}")
    page = ui.page
    approval = page.get_by_role("region", name="Approve phase draft?")
    await expect(approval.get_by_role("heading", name="one step")).to_have_count(0)
    await expect(approval.locator(".markdown li")).to_have_text("one step")
    await approval.get_by_role("button", name="Edit").click()
    await approval.get_by_label("Edit The plan").fill("# Plan\n\n- one step\n- a second step\n")
    await approval.get_by_role("button", name="Save").click()
    await expect(approval.locator(".markdown li")).to_have_count(2)
    await ui.shot("approval")
    await approval.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("log", name="Live log")).to_contain_text("Building as planned")
    result = await api.finish(job_id)
    assert result.done == "complete"
    plan = (api.home.work_dir(api.runner.config) / job_id / "plan.md").read_text()
    assert "a second step" in plan
    assert ui.errors == []


async def test_a_run_is_created_from_the_form(api_factory: ApiFactory, chromium: object) -> None:
    async with api_factory() as api:
        write_workflow(api.home, "formed", [{"name": "work", "agent": None}])
        ui = await board(chromium, api)
        await ui.open("#/new")
        page = ui.page
        # This runner has only the script executor: plan mode says so up front.
        await expect(page.get_by_role("heading", name="Plan mode is off")).to_be_visible()
        form = page.get_by_role("form", name="Run details")
        await form.get_by_label("Workflow").select_option("workflows/formed/workflow.md")
        await form.get_by_label("What should be done").fill("Add a health endpoint")
        await form.get_by_label("Repository").fill("acme/api")
        await form.get_by_label("Interactive").uncheck()
        await ui.shot("new-run")
        await form.get_by_role("button", name="Start run").click()
        await expect(page).to_have_url(re.compile(r"#/runs/api-job-"))
        job_id = page.url.split("#/runs/")[1]
        await expect(page.get_by_role("heading", name=job_id)).to_be_visible()
        job = await api.job(job_id)
        assert ui.errors == []
        await page.close()  # before the runner stops under the page's feet
    assert job["params"]["description"] == "Add a health endpoint"
    assert job["params"]["repo"] == "acme/api"
    assert job["triggerSource"] == "dashboard"
    assert job["interactive"] is False


async def test_plan_mode_chat_turns_a_brief_into_a_run(
    api_factory: ApiFactory, chromium: object
) -> None:
    brief = (
        'Here is the brief.\n<brief>{"repo": "acme/shop", "serviceName": "shop", '
        '"description": "Add a cart total", "reviewers": ["ana"], '
        '"workflowPath": "workflows/job/workflow.md", "interactive": true}</brief>'
    )
    async with FakeAnthropic(api_key=KEY) as fake:
        fake.queue(text("Which repository?"), text(brief))
        config = CoroConfig.model_validate(
            {
                "llm": {"defaultProvider": "anthropic"},
                "plugins": {
                    "installed": {
                        "anthropic": {"config": {"apiKey": KEY, "baseUrl": fake.base_url}}
                    }
                },
            }
        )
        async with api_factory(config) as api:
            ui = await board(chromium, api)
            await ui.open("#/new")
            page = ui.page
            chat = page.get_by_role("form", name="Plan it with the assistant")
            await chat.get_by_label("Your message").fill("I want a cart total")
            await chat.get_by_role("button", name="Send").click()
            await expect(chat.locator(".bubble.assistant")).to_have_text("Which repository?")
            await expect(page.locator("#chat-budget")).to_contain_text("Turns 1 of 8")
            await chat.get_by_label("Your message").fill("acme/shop")
            await chat.get_by_role("button", name="Send").click()
            form = page.get_by_role("form", name="Run details")
            await expect(form.get_by_label("What should be done")).to_have_value("Add a cart total")
            await expect(form.get_by_label("Repository")).to_have_value("acme/shop")
            await expect(form.get_by_label("Reviewers (comma-separated, optional)")).to_have_value(
                "ana"
            )
            await ui.shot("plan-mode")
            request = fake.message_requests[-1]
            assert [m["role"] for m in request.messages] == ["user", "assistant", "user"]
            assert ui.errors == []
            await page.close()


async def test_plan_mode_without_a_provider_points_to_the_form(api: Api, chromium: object) -> None:
    ui = await board(chromium, api)
    await ui.open("#/new")
    page = ui.page
    # Said before anything is typed (tests/test_dashboard_polish.py has the rest).
    await expect(page.locator("#no-llm")).to_contain_text(
        "configure one in Settings or use the form"
    )
    await expect(page.get_by_role("form", name="Run details")).to_be_visible()
    assert ui.errors == []


async def test_the_pages_fit_a_phone_and_work_from_the_keyboard(api: Api, chromium: object) -> None:
    workflow = write_workflow(api.home, "reviewed", REVIEWED)
    job_id = await api.create(workflow, DRAFT_SCRIPT, interactive=True)
    await api.wait_for_line(job_id, "Job parked")
    ui = await board(chromium, api, width=390)
    page = ui.page
    for route in ("#/runs", f"#/runs/{job_id}", "#/new"):
        await ui.open(route)
        await expect(page.locator("main h1").first).to_be_visible()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{route} scrolls sideways by {overflow}px"
    await ui.shot("new-run-narrow")

    await ui.open("#/runs")
    await expect(page.get_by_role("link", name=job_id)).to_be_visible()
    # Each page takes the focus, so Tab goes on to the page's first control.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="New run").last).to_be_focused()
    await page.get_by_role("link", name=job_id).focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name=job_id)).to_be_visible()
    approve = page.get_by_role("button", name="Approve")
    await approve.focus()
    await page.keyboard.press("Enter")
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert ui.errors == []


async def test_a_campaign_child_is_skipped_from_its_graph(
    api_factory: ApiFactory, chromium: object
) -> None:
    from tests.test_campaigns import config, register, start_campaign

    async with api_factory(config(parallel=1)) as api:
        parent = await start_campaign(api, [register("schema"), register("api", ["schema"])])
        await api.wait_for_line(parent, 'Dispatched child "schema"')
        ui = await board(chromium, api)
        await ui.open(f"#/runs/{parent}")
        page = ui.page
        await page.get_by_role("tab", name="Campaign").click()
        graph = page.get_by_role("list", name="Campaign children by dependency depth")
        api_child = graph.locator('[data-child="api"]')
        await expect(api_child).to_contain_text("pending")
        await expect(api_child).to_contain_text("after schema")
        await expect(graph.locator('[data-child="schema"]')).to_contain_text("dispatched")
        await ui.shot("campaign")
        await api_child.get_by_role("button", name="skip").click()
        await expect(api_child).to_contain_text("skipped")
        children = (await api.client.get(f"/jobs/{parent}/children")).json()["children"]
        assert {c["name"]: c["status"] for c in children}["api"] == "skipped"
        assert ui.errors == []
        await page.close()


async def test_an_intelligence_file_is_edited_with_live_preflight(
    api: Api, chromium: object
) -> None:
    ui = await board(chromium, api)
    await ui.open("#/intelligence")
    page = ui.page
    files = page.get_by_role("navigation", name="Intelligence files")
    await files.get_by_role("link", name="agents/coder.md").click()
    panel = page.locator("#file-panel")
    await expect(panel.get_by_role("heading", name="agents/coder.md")).to_be_visible()
    await expect(panel).to_contain_text("winning layer base")
    await ui.shot("intelligence")
    await panel.get_by_role("button", name="Override in tenant layer").click()
    editor = panel.get_by_label("Edit agents/coder.md")
    save = panel.get_by_role("button", name="Save to tenant layer")
    await editor.fill("no heading here, just text")
    await expect(panel.get_by_role("alert")).to_be_visible()
    await expect(save).to_be_disabled()
    await ui.shot("intelligence-preflight")
    await editor.fill("# Coder\n\nThe team's own coder instructions.\n")
    await expect(panel.locator("#preflight")).to_contain_text("Preflight passed")
    await expect(save).to_be_enabled()
    await save.click()
    await expect(panel).to_contain_text("winning layer tenant")
    tenant_file = api.home.root / "intelligence" / "agents" / "coder.md"
    assert "The team's own coder" in tenant_file.read_text()
    await panel.get_by_role("tab", name="Diff against lower layer").click()
    await expect(panel.locator(".diff .add").first).to_be_visible()
    await panel.get_by_role("button", name="Revert to lower layer").click()
    await page.get_by_role("dialog").get_by_role("button", name="Revert").click()
    await expect(panel).to_contain_text("winning layer base")
    assert not tenant_file.exists()
    assert ui.errors == []


async def test_settings_are_saved_and_no_secret_reaches_the_page(
    api_factory: ApiFactory, chromium: object
) -> None:
    secret = "sk-ant-settings-" + "s" * 40
    token = "ghp_SettingsTokenZq8mW3nR5tY7uI9oP1aSdF"
    config = CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "plugins": {
                "installed": {
                    "anthropic": {"config": {"apiKey": secret}},
                    "github": {"config": {"token": token}},
                }
            },
        }
    )
    async with api_factory(config) as api:
        ui = await board(chromium, api)
        bodies: list[str] = []

        async def keep(response: Any) -> None:
            if "/dashboard/" not in response.url:
                bodies.append(await response.text())

        ui.page.on("response", keep)
        await ui.open("#/settings")
        page = ui.page
        anthropic = page.locator('details[data-plugin="anthropic"]')
        await anthropic.locator("summary").click()
        await anthropic.get_by_label("defaultModel").fill("claude-test-model")
        await anthropic.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("status").first).to_contain_text("settings saved")
        await page.get_by_role("button", name="Add alias").click()
        row = page.get_by_role("table", name="Model aliases").locator("tbody tr").last
        await row.get_by_label("Alias name").fill("tier:coding")
        await row.get_by_label("Alias provider").fill("anthropic")
        await row.get_by_label("Alias model").fill("claude-coding")
        await page.get_by_role("button", name="Save aliases").click()
        await expect(page.get_by_role("status").first).to_contain_text("Aliases saved")
        await ui.shot("settings")
        html = await page.content()
        stored = api.home.config_file.read_text()
        assert ui.errors == []
        await page.close()
    for seen in [html, *bodies]:
        assert secret not in seen and token not in seen
    saved = CoroConfig.model_validate_json(stored)
    anthropic_config = saved.plugins.installed["anthropic"].config
    assert anthropic_config["apiKey"] == secret  # the masked value meant "unchanged"
    assert anthropic_config["defaultModel"] == "claude-test-model"
    assert saved.plugins.installed["github"].config["token"] == token
    assert saved.llm.aliases["tier:coding"].model == "claude-coding"


async def test_model_aliases_keep_their_context_window_and_tool_calling_when_saved(
    api_factory: ApiFactory, chromium: object
) -> None:
    config = CoroConfig.model_validate(
        {
            "llm": {
                "defaultProvider": "script",
                "aliases": {
                    "local": {
                        "provider": "openai",
                        "model": "smollm2",
                        "contextWindow": 8192,
                        "toolCalling": "prompted",
                    },
                    "tier:mini": {"provider": "anthropic", "model": "claude-mini"},
                    "retired": {"provider": "anthropic", "model": "claude-old"},
                },
            }
        }
    )
    async with api_factory(config) as api:
        ui = await board(chromium, api)
        await ui.open("#/settings")
        page = ui.page
        rows = page.get_by_role("table", name="Model aliases").locator("tbody tr")
        await expect(rows).to_have_count(3)
        local, mini = rows.nth(0), rows.nth(1)
        await expect(local.get_by_label("Alias name")).to_have_value("local")
        await expect(mini.get_by_label("Alias name")).to_have_value("tier:mini")
        await expect(local.get_by_label("Alias contextWindow")).to_have_value("8192")
        await expect(local.get_by_label("Alias toolCalling")).to_have_value("prompted")
        await expect(mini.get_by_label("Alias toolCalling")).to_have_value("")

        await local.get_by_label("Alias model").fill("smollm2-360m")
        await mini.get_by_label("Alias contextWindow").fill("200000")
        await mini.get_by_label("Alias toolCalling").select_option("native")
        await page.get_by_role("button", name="Remove alias retired").click()
        await page.get_by_role("button", name="Save aliases").click()
        await expect(page.get_by_role("status").first).to_contain_text("Aliases saved")
        # the page is drawn again from the saved configuration
        await expect(rows).to_have_count(2)
        await expect(local.get_by_label("Alias model")).to_have_value("smollm2-360m")
        await expect(local.get_by_label("Alias contextWindow")).to_have_value("8192")
        await expect(mini.get_by_label("Alias toolCalling")).to_have_value("native")
        await ui.shot("settings-aliases")
        stored = api.home.config_file.read_text()
        assert ui.errors == []
        await page.close()
    aliases = CoroConfig.model_validate_json(stored).llm.aliases
    assert set(aliases) == {"local", "tier:mini"}
    assert aliases["local"].model == "smollm2-360m"
    assert aliases["local"].context_window == 8192
    assert aliases["local"].tool_calling == "prompted"
    assert aliases["tier:mini"].context_window == 200_000
    assert aliases["tier:mini"].tool_calling == "native"


async def test_a_proposal_is_approved_from_the_settings_page(api: Api, chromium: object) -> None:
    workflow = write_workflow(api.home, "learns", [{"name": "work", "agent": None}])
    proposal = {
        "type": "memory-update",
        "title": "Remember the test command",
        "rationale": "Every job looked for it.",
        "description": "Adds the project's test command to memory.",
        "files": [{"path": "memory/testing.md", "content": "# Testing\n\nRun `make test`.\n"}],
    }
    job_id = await api.create(workflow, {"work": [{"tool": "propose_change", "input": proposal}]})
    await api.finish(job_id)
    ui = await board(chromium, api)
    await ui.open("#/settings")
    page = ui.page
    card = page.locator("article[data-proposal]")
    await expect(card).to_contain_text("Remember the test command")
    await expect(card).to_contain_text("pending")
    await card.get_by_role("button", name="Approve").click()
    await expect(card).to_contain_text("approved")
    memory = api.home.root / "intelligence" / "memory" / "testing.md"
    assert "make test" in memory.read_text()
    assert ui.errors == []


async def test_insights_are_curated_from_the_run_page(api: Api, chromium: object) -> None:
    workflow = write_workflow(api.home, "insightful", [{"name": "work", "agent": None}])
    learned = {
        "category": "testing",
        "summary": "Tests need the DB",
        "detail": "Start PostgreSQL before pytest.",
        "suggestedLayer": "repo",
    }
    job_id = await api.create(workflow, {"work": [{"tool": "add_insight", "input": learned}]})
    await api.finish(job_id)
    ui = await board(chromium, api)
    await ui.open(f"#/runs/{job_id}")
    page = ui.page
    await page.get_by_role("tab", name="Insights").click()
    card = page.locator("article[data-insight]")
    await expect(card).to_contain_text("Tests need the DB")
    await card.get_by_role("button", name="Edit").click()
    await card.get_by_label("Summary").fill("Tests need PostgreSQL running")
    await card.get_by_label("Layer to record it in").select_option("tenant")
    await card.get_by_role("button", name="Save edits").click()
    await expect(card.locator("p").first).to_have_text("Tests need PostgreSQL running")
    await card.get_by_role("button", name="Approve").click()
    await expect(card.locator(".tag")).to_have_text("approved")
    await ui.shot("insights")
    (insight,) = (await api.client.get(f"/jobs/{job_id}/insights")).json()["insights"]
    assert insight["status"] == "approved"
    assert insight["editedSummary"] == "Tests need PostgreSQL running"
    assert insight["userLayer"] == "tenant"
    assert ui.errors == []


async def test_with_an_api_token_the_dashboard_asks_for_it_and_streams_with_it(
    api_factory: ApiFactory, chromium: object
) -> None:
    token = "dashboard-token-" + "t" * 24
    config = CoroConfig.model_validate({"llm": {"defaultProvider": "script"}, "apiToken": token})
    async with api_factory(config) as api:
        headers = {"Authorization": f"Bearer {token}"}
        workflow = write_workflow(api.home, "guarded", [{"name": "work", "agent": None}])
        script = {"work": [[{"text": "guarded line"}, {"sleep": 600}], [{"text": "after"}]]}
        created = await api.client.post(
            "/jobs",
            json={"workflowPath": workflow, "params": {"script": script}},
            headers=headers,
        )
        job_id = created.json()["jobId"]
        ui = await board(chromium, api)
        await ui.open(f"#/runs/{job_id}")
        page = ui.page
        dialog = page.get_by_role("dialog", name="API token")
        await dialog.get_by_label("Token").fill(token)
        await dialog.get_by_role("button", name="Use token").click()
        log = page.get_by_role("log", name="Live log")
        await expect(log).to_contain_text("guarded line")
        await expect(page.locator("#log-connection")).to_have_text("live")
        await page.get_by_label("Message to the agent").fill("go on")
        await page.get_by_role("button", name="Send", exact=True).click()
        await page.get_by_role("button", name="Pause").click()
        await expect(log).to_contain_text("paused")
        # Only the first, token-less requests were refused.
        assert all("401" in error for error in ui.errors)
        await page.close()


async def test_work_items_prs_diff_and_a_phase_override_are_shown(
    api: Api, chromium: object, tmp_path: Any
) -> None:
    from tests.test_local_loop import GREETING, shop_repo, step

    await shop_repo(api, tmp_path)
    workflow = write_workflow(api.home, "shown", [{"name": "work", "agent": None}])
    script = {
        "work": [
            [
                step("set_work_items", workItems=["add-greeting"]),
                step("update_work_item", name="add-greeting", status="in-progress"),
                step("scm_clone_repo", repo="shop"),
                step("file_write", path="shop/greeting.py", content=GREETING),
                step("scm_create_pr", title="Add greet()"),
                step("file_write", path="shop/notes.txt", content="work in progress\n"),
                step("await_event", eventName="pr:review", prId=1),
            ]
        ]
    }
    job_id = await api.create(workflow, script, repo="shop")
    await api.wait_for_line(job_id, "Job parked")
    ui = await board(chromium, api)
    await ui.open(f"#/runs/{job_id}")
    page = ui.page
    await page.get_by_role("tab", name="Work items & PRs").click()
    items = page.get_by_role("table", name="Work items")
    await expect(items).to_contain_text("add-greeting")
    await expect(items).to_contain_text("#1 (open)")
    await page.get_by_role("tab", name="Diff").click()
    diff = page.get_by_label("Diff", exact=True)
    await expect(diff).to_contain_text("+work in progress")
    await ui.shot("diff")
    await page.get_by_label("Model override").fill("a-pinned-model")
    await page.get_by_role("button", name="Set").click()
    await expect(page.get_by_label("Model override")).to_have_value("a-pinned-model")
    job = await api.job(job_id)
    assert job["phaseModelOverrides"]["work"]["model"] == "a-pinned-model"
    assert ui.errors == []


async def test_a_hybrid_runner_shows_its_team_and_its_connection_live(
    api_factory: ApiFactory, cloud: Cloud, chromium: object
) -> None:
    paired = await pair(cloud)
    team_name = paired.team["name"]
    config = CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "cloud": {"url": cloud.served.url, "token": paired.token},
        }
    )
    async with api_factory(config) as api:
        ui = await board(chromium, api)
        await ui.open()
        page = ui.page
        chip = page.locator("#cloud-status")
        await expect(chip).to_have_text(f"{team_name} · connected")
        await page.get_by_role("navigation").get_by_role("link", name="Team").click()
        await expect(page.get_by_role("heading", name="Team", exact=True)).to_be_visible()
        await expect(page.locator("#cloud-team")).to_have_text(team_name)
        await expect(page.locator("#cloud-state")).to_have_text("connected")
        runner_id = (await api.client.get("/cloud")).json()["runnerId"]
        # the team's runners, as the cloud lists them: this one, marked
        row = page.locator(f'tr[data-runner="{runner_id}"]')
        await expect(row).to_contain_text("this runner")
        await expect(row).to_contain_text("idle")
        runners = page.get_by_role("link", name="open the team's runners")
        await expect(runners).to_have_attribute(
            "href", f"{cloud.served.url}/#/t/{paired.team_id}/runners"
        )
        await ui.shot("hybrid-team")

        # the team revokes the runner's token: the page follows without a reload
        await revoke(cloud, paired)
        await expect(page.locator("#cloud-state")).to_have_text("token revoked")
        await expect(page.locator("#cloud-error")).to_be_visible()
        await expect(chip).to_have_text(f"{team_name} · token revoked")
        await expect(page.get_by_text("ask an admin for a new one")).to_be_visible()
        assert ui.errors == []
        await page.close()


async def test_a_local_runner_shows_no_team(api: Api, chromium: object) -> None:
    ui = await board(chromium, api)
    await ui.open()
    page = ui.page
    await expect(page.locator("#runner-health")).to_contain_text("local")
    await expect(page.locator("#cloud-status")).to_be_hidden()
    await expect(page.get_by_role("navigation").get_by_role("link", name="Team")).to_be_hidden()
    await ui.open("#/team")
    await expect(page.get_by_text("This runner is local: it is in no team.")).to_be_visible()
    assert ui.errors == []
