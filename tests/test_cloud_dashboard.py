"""The cloud's team page (issue #12 point 10) in headless Chromium against a real cloud.

The page is served by the cloud at `/` and imports the runner dashboard's modules; each
test drives it as a team member would (labels, buttons), waits on what the page shows
(never on time) and fails on any console error.
"""

from __future__ import annotations

import uuid

from playwright.async_api import Page, expect

from tests.browser import Dashboard, dashboard_page
from tests.cloud_helpers import PASSWORD, Account, Cloud, CloudFactory
from tests.cloud_runner_client import RunnerClient, job_json, runner_client, team_runner

pytest_plugins = ("tests.cloud_fixtures",)


async def team_page(chromium: object, cloud: Cloud) -> Dashboard:
    board = await dashboard_page(chromium, cloud.served.url)
    await board.page.goto(f"{cloud.served.url}/")
    return board


async def sign_in_in_the_page(page: Page, account: Account, name: str) -> None:
    await page.get_by_label("Email").fill(account.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.locator("#signed-in-as")).to_have_text(name)


async def replicate(runner: RunnerClient, job_id: str, rev: int, **fields: object) -> None:
    """The runner's `job:update` of `job_id`, as a hybrid runner sends it."""
    answer = await runner.rpc(
        {"type": "job:update", "jobId": job_id, "rev": rev, "job": job_json(job_id, **fields)}
    )
    assert answer["ok"], answer


async def log(runner: RunnerClient, job_id: str, start: int, *lines: str) -> None:
    entries = [
        {"index": start + n, "line": f"2025-01-01T00:00:0{n}.000Z {line}"}
        for n, line in enumerate(lines)
    ]
    answer = await runner.rpc({"type": "job:log", "jobId": job_id, "entries": entries})
    assert answer["ok"], answer


async def sign_up_in_the_page(page: Page, email: str, name: str = "Grace Hopper") -> None:
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_role("button", name="Create an account").click()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#signed-in-as")).to_have_text(name)


async def test_the_page_and_its_shared_modules_are_served_beside_the_api(cloud: Cloud) -> None:
    page = await cloud.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="cloud/app.js">' in page.text
    for path, kind in [
        ("/app.css", "text/css"),
        ("/cloud/app.js", "javascript"),
        ("/js/api.js", "javascript"),
        ("/js/log.js", "javascript"),
        ("/vendor/purify.es.mjs", "javascript"),
    ]:
        response = await cloud.client.get(path)
        assert response.status_code == 200, path
        assert kind in response.headers["content-type"], path
        assert "content-security-policy" in response.headers, path
    # the API keeps its paths
    health = await cloud.client.get("/health")
    assert health.json()["status"] == "ok"
    schema = (await cloud.client.get("/openapi.json")).json()
    assert "/auth/login" in schema["paths"]
    assert "/" not in schema["paths"]
    assert (await cloud.client.get("/auth/me")).status_code == 401
    assert (await cloud.client.get("/teams")).json() == {"error": "Missing authorization header"}
    missing = await cloud.client.get("/js/nothing-here.js")
    assert missing.status_code == 404


async def test_a_new_user_signs_up_creates_a_team_and_mints_a_token_seen_once(
    cloud: Cloud, chromium: object
) -> None:
    ui = await team_page(chromium, cloud)
    page = ui.page
    email = f"grace-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up_in_the_page(page, email)
    # no team yet: the page offers to create one
    await expect(page.get_by_role("heading", name="Teams")).to_be_visible()
    await page.get_by_label("Name", exact=True).fill("Compilers Inc")
    await expect(page.get_by_label("Slug")).to_have_value("compilers-inc")
    await page.get_by_role("button", name="Create team").click()
    await expect(page.get_by_role("heading", name="Jobs of Compilers Inc")).to_be_visible()
    await expect(page.get_by_role("table", name="Team jobs")).to_contain_text("No jobs match.")
    team_id = page.url.split("#/t/")[1].split("/")[0]
    await expect(page.get_by_label("Team", exact=True)).to_have_value(team_id)
    await ui.shot("cloud-jobs-empty")

    await page.get_by_role("link", name="Runner tokens").click()
    await page.get_by_label("New token's name").fill("grace-laptop")
    await page.get_by_role("button", name="Mint token").click()
    secret = await page.locator("#minted-secret").text_content()
    assert secret
    await ui.shot("cloud-token-minted")
    tokens = page.get_by_role("table", name="Runner tokens")
    await expect(tokens).to_contain_text("grace-laptop")
    await expect(tokens).to_contain_text("active")
    # the secret is a runner token of this team, and shown only this once
    async with runner_client(cloud.served.url, secret) as runner:
        registered = await runner.register("minted-in-the-page")
    assert registered["teamName"] == "Compilers Inc"
    rows = await cloud.rows("SELECT name FROM runner_tokens WHERE team_id = :t", t=team_id)
    assert [r["name"] for r in rows] == ["grace-laptop"]
    await page.reload()
    await expect(tokens).to_contain_text("grace-laptop")
    await expect(page.locator("#minted-secret")).to_have_count(0)
    assert secret not in await page.content()
    assert "grace-laptop" in await page.content()

    await page.get_by_role("button", name="Revoke grace-laptop").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("button", name="Revoke token").click()
    await expect(tokens).to_contain_text("revoked")
    listed = (
        await cloud.client.get(f"/teams/{team_id}/runner-tokens", headers=await login(cloud, email))
    ).json()
    assert listed[0]["revokedAt"] is not None
    assert ui.errors == []


async def login(cloud: Cloud, email: str) -> dict[str, str]:
    response = await cloud.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


async def test_a_member_signs_in_picks_a_team_and_cannot_mint(
    cloud: Cloud, chromium: object
) -> None:
    owner = await cloud.signup(name="Owner")
    member = await cloud.signup(name="Member")
    first = await cloud.team(owner, slug="first-team")
    second = await cloud.team(owner, slug="second-team")
    for team in (first, second):
        await cloud.add_member(team["id"], owner, member)
    ui = await team_page(chromium, cloud)
    page = ui.page
    await page.get_by_label("Email").fill(member.email)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("alert")).to_contain_text("Invalid credentials")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.locator("#signed-in-as")).to_have_text("Member")
    await expect(page.get_by_role("heading", name="Jobs of Team first-team")).to_be_visible()

    await page.get_by_label("Team", exact=True).select_option(label="Team second-team")
    await expect(page.get_by_role("heading", name="Jobs of Team second-team")).to_be_visible()
    await page.get_by_role("link", name="Runner tokens").click()
    await expect(page.get_by_text("Only the team's admins mint")).to_be_visible()
    await expect(page.get_by_role("button", name="Mint token")).to_have_count(0)
    # a team the user is not in is not found
    stranger = await cloud.team(owner, slug="not-theirs")
    await page.goto(f"{cloud.served.url}/#/t/{stranger['id']}/jobs")
    await expect(page.get_by_role("alert")).to_contain_text("Could not load the jobs")

    # a reload stays signed in (the refresh token is this tab's); signing out ends it
    await page.reload()
    await expect(page.locator("#signed-in-as")).to_have_text("Member")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    stored = await page.evaluate("() => JSON.stringify(localStorage)")
    assert stored == "{}"
    # a link into a team asks to sign in first, then leads there
    await page.goto(f"{cloud.served.url}/#/t/{second['id']}/runners")
    await sign_in_in_the_page(page, member, "Member")
    await expect(page.get_by_role("heading", name="Runners")).to_be_visible()
    await expect(page.get_by_label("Team", exact=True)).to_have_value(second["id"])
    # the refused sign-in and the stranger's team
    assert all("401" in error or "404" in error for error in ui.errors)


async def test_an_expired_access_token_is_renewed_with_the_refresh_token(
    cloud_factory: CloudFactory, chromium: object
) -> None:
    async with cloud_factory(access_ttl_seconds=1) as cloud:
        owner = await cloud.signup(name="Owner")
        team = await cloud.team(owner, slug="renewed")
        ui = await team_page(chromium, cloud)
        page = ui.page
        await page.get_by_label("Email").fill(owner.email)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await expect(page.get_by_role("heading", name="Jobs of Team renewed")).to_be_visible()
        # the runners list polls; once the one-second token has expired a call gets
        # 401, the page renews its tokens and carries on signed in
        await page.get_by_role("link", name="Runners").click()
        await expect(page.get_by_role("table", name="Runners")).to_be_visible()
        async with page.expect_response(
            lambda r: r.url.endswith("/auth/refresh"), timeout=30_000
        ) as renewal:
            pass
        assert (await renewal.value).status == 200
        await page.get_by_role("link", name="Runner tokens").click()
        await expect(page.get_by_role("table", name="Runner tokens")).to_be_visible()
        await expect(page.locator("#signed-in-as")).to_have_text("Owner")
        assert team["id"] in page.url
        assert all("401" in error for error in ui.errors)


async def test_a_member_sees_the_runners_and_a_team_job_with_its_live_log_and_cancels_it(
    cloud: Cloud, chromium: object
) -> None:
    team = await team_runner(cloud)
    job_id = "api-job-7-dash"
    hostile = '<img src=x onerror="document.title=1"> Fix the build'
    async with runner_client(cloud.served.url, team.token) as runner:
        await runner.register("ada-laptop", capacity=2, active=[job_id])
        await replicate(runner, job_id, 1, phase="build", params={"description": hostile})
        await log(runner, job_id, 0, "Runner started", "<b>not bold</b> says the agent")

        ui = await team_page(chromium, cloud)
        page = ui.page
        await sign_in_in_the_page(page, team.owner, "Ada Lovelace")

        jobs = page.get_by_role("table", name="Team jobs")
        await expect(jobs).to_contain_text(job_id)
        await expect(jobs).to_contain_text(hostile)  # as text, never as markup
        await expect(jobs.locator("img")).to_have_count(0)
        await expect(jobs.locator(".badge")).to_have_text("running")
        # the list follows status changes without a reload
        await replicate(runner, job_id, 2, phase="review", params={"description": hostile})
        await expect(jobs).to_contain_text("review")
        await ui.shot("cloud-jobs")

        await page.get_by_role("link", name="Runners").click()
        runners = page.get_by_role("table", name="Runners")
        row = runners.locator("tr[data-runner='ada-laptop']")
        await expect(row).to_contain_text("test-host")
        await expect(row.locator(".badge")).to_have_text("busy")
        await expect(row).to_contain_text("1 / 2")
        await runner.heartbeat([])
        await expect(row.locator(".badge")).to_have_text("idle")
        await ui.shot("cloud-runners")

        await page.get_by_role("link", name="Jobs").click()
        await page.get_by_role("link", name=job_id).click()
        await expect(page.get_by_role("heading", name=job_id)).to_be_visible()
        live = page.get_by_role("log", name="Live log")
        await expect(live).to_contain_text("<b>not bold</b> says the agent")
        await expect(live.locator("b")).to_have_count(0)
        await expect(page.locator("#log-connection")).to_have_text("live")
        await log(runner, job_id, 2, "a line that came later")
        await expect(live).to_contain_text("a line that came later")
        await ui.shot("cloud-job")

        # a control goes to the runner that owns the job; its answer is the page's
        await page.get_by_role("button", name="Cancel").click()
        await page.get_by_role("dialog").get_by_role("button", name="Cancel job").click()
        command = await runner.command()
        assert (command["type"], command["jobId"]) == ("event:cancel", job_id)
        await replicate(runner, job_id, 3, status="cancelled", phase="review")
        await runner.answer(command, data={"cancelled": job_id, "status": "cancelled"})
        await expect(page.get_by_role("status")).to_contain_text("Cancel: done.")
        await expect(page.locator(".badge").first).to_have_text("cancelled")
        await expect(page.locator("#log-connection")).to_have_text("stream closed")
        assert await page.title() == "Coro team"
        assert ui.errors == []
        await page.close()


async def test_a_control_of_a_job_whose_runner_is_offline_is_queued(
    cloud: Cloud, chromium: object
) -> None:
    team = await team_runner(cloud)
    job_id = "api-job-8-away"
    async with runner_client(cloud.served.url, team.token) as runner:
        await runner.register("away-laptop")
        await replicate(runner, job_id, 1, status="awaiting-developer-input")
        await log(runner, job_id, 0, "Job parked")
    ui = await team_page(chromium, cloud)
    page = ui.page
    await sign_in_in_the_page(page, team.owner, "Ada Lovelace")
    await page.get_by_role("link", name=job_id).click()
    # the mirror answers while the runner is away
    await expect(page.get_by_role("log", name="Live log")).to_contain_text("Job parked")
    await page.get_by_label("Message to the agent").fill("Use the staging database")
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(page.get_by_role("status")).to_contain_text(
        "Message: queued until the job's runner is connected."
    )
    queued = await cloud.rows(
        "SELECT type, state FROM runner_commands WHERE team_id = :t", t=team.team_id
    )
    assert [(r["type"], r["state"]) for r in queued] == [("event:message", "pending")]
    assert ui.errors == []


async def test_a_job_started_in_the_page_waits_for_a_runner(cloud: Cloud, chromium: object) -> None:
    team = await team_runner(cloud)
    ui = await team_page(chromium, cloud)
    page = ui.page
    await sign_in_in_the_page(page, team.owner, "Ada Lovelace")
    await page.get_by_role("button", name="New job").click()
    form = page.get_by_role("form", name="Start a team job")
    await form.get_by_label("Workflow").fill("workflows/fix/workflow.md")
    await form.get_by_label("What should be done").fill("Mend the flaky test")
    await form.get_by_label("Repository").fill("acme/api")
    await form.get_by_role("button", name="Start job").click()
    await expect(page.get_by_role("status")).to_contain_text("No runner connected")
    await expect(page.locator(".badge").first).to_have_text("queued")
    await expect(page.get_by_text("Mend the flaky test")).to_be_visible()
    job_id = page.url.split("/jobs/")[1]
    queued = await cloud.rows(
        "SELECT type, state, job_id FROM runner_commands WHERE team_id = :t", t=team.team_id
    )
    assert [(r["type"], r["state"], r["job_id"]) for r in queued] == [
        ("event:dispatch", "pending", job_id)
    ]
    # the runner that connects takes it
    async with runner_client(cloud.served.url, team.token) as runner:
        await runner.register("late-laptop")
        command = await runner.command()
    assert (command["type"], command["jobId"]) == ("event:dispatch", job_id)
    assert command["request"]["description"] == "Mend the flaky test"
    assert ui.errors == []
