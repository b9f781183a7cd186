"""Notifications (issue #14): a job that needs someone reaches webhooks (signed as
GitHub signs), Slack (Block Kit) and e-mail (a real SMTP server), all on loopback;
failing receivers are retried or not as their answer says, without holding the job
up; `GET /notifications`, `POST /notifications/test` and `GET /notifications/stream`;
a config reload; and no secret of a channel anywhere it could leak."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.plugins.scm.local import LocalScm
from coro.version import __version__
from tests.conftest import Api, ApiFactory, write_workflow
from tests.fakes.notification_receivers import SmtpReceiver, WebhookReceiver, signature_of
from tests.sse import frames

SECRET = "whsec-" + "s" * 30
SLACK_PATH = "/services/T0CORO1/B0CORO2/slacktokenSLACKTOKEN1234"
SMTP_PASSWORD = "smtp-password-" + "p" * 20
DASHBOARD = "https://coro.example.com"
QUESTION = "Which database should the counters live in?"
ONE_PHASE = [{"name": "work", "agent": None}]


def config(**notifications: Any) -> CoroConfig:
    return CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "notifications": notifications}
    )


def webhook(receiver: WebhookReceiver, **extra: Any) -> dict[str, Any]:
    return {"id": "hook", "url": f"{receiver.root}/coro/events", "secret": SECRET, **extra}


def asking(question: str = QUESTION) -> dict[str, Any]:
    """A one-phase script that asks the developer, then finishes on its next visit."""
    ask = {"tool": "await_event", "input": {"eventName": f"developer-input: {question}"}}
    return {"work": [[ask], [{"text": "thanks, done"}]]}


async def park(api: Api, question: str = QUESTION, **body: Any) -> str:
    workflow = write_workflow(api.home, "ask", ONE_PHASE)
    job_id = await api.create(workflow, asking(question), **body)
    await api.wait_for_line(job_id, "Job parked")
    return job_id


async def channels(api: Api) -> dict[str, dict[str, Any]]:
    response = await api.client.get("/notifications")
    assert response.status_code == 200, response.text
    return {c["id"]: c for c in response.json()["channels"]}


# --- webhooks ----------------------------------------------------------------------------


async def test_a_parked_job_reaches_the_webhook_signed_over_the_raw_body(
    api_factory: ApiFactory,
) -> None:
    async with WebhookReceiver() as receiver:
        settings = config(dashboardUrl=DASHBOARD, webhooks=[webhook(receiver)])
        async with api_factory(settings) as api:
            job_id = await park(api, description="Add rate limiting\nwith Redis counters")
            (request,) = await receiver.wait_for_requests(1)
            await api.runner.notifications.settled()
            listed = await channels(api)

    assert request.method == "POST" and request.path == "/coro/events"
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"Coro/{__version__}"
    assert headers["x-coro-event"] == "job.awaiting"
    assert uuid.UUID(headers["x-coro-delivery"])
    # the receiver's check: the HMAC of the exact bytes it got, before parsing them
    assert headers["x-coro-signature-256"] == signature_of(SECRET, request.raw)
    assert SECRET not in request.raw.decode()
    assert json.loads(request.raw) == {
        "event": "job.awaiting",
        "deliveryId": headers["x-coro-delivery"],
        "jobId": job_id,
        "title": "Add rate limiting",
        "status": "awaiting-developer-input",
        "reason": f"Waiting for developer input: {QUESTION}",
        "phase": "work",
        "question": QUESTION,
        "at": request.body["at"],
        "links": {"dashboard": f"{DASHBOARD}/dashboard/#/runs/{job_id}"},
    }
    hook = listed["hook"]
    assert hook["kind"] == "webhook" and hook["target"] == f"127.0.0.1:{receiver.port}/coro/events"
    assert hook["events"] == ["job.awaiting", "job.escalated", "job.failed", "pr.opened"]
    assert hook["lastDelivery"] == {
        "at": hook["lastDelivery"]["at"],
        "event": "job.awaiting",
        "ok": True,
        "status": 200,
        "attempts": 1,
        "deliveryId": headers["x-coro-delivery"],
    }
    assert hook["recentFailures"] == []


async def test_a_failing_receiver_is_retried_with_one_delivery_id_while_the_job_goes_on(
    api_factory: ApiFactory,
) -> None:
    async with WebhookReceiver([500, 500]) as receiver:
        second_try = receiver.hold(2)
        settings = config(
            retryDelaySeconds=0.01, webhooks=[webhook(receiver, events=["job.awaiting"])]
        )
        async with api_factory(settings) as api:
            job_id = await park(api)
            await receiver.wait_for_requests(2)  # the first answered 500; the second is held
            answer = await api.client.post(f"/jobs/{job_id}/message", json={"message": "Redis"})
            done = await api.finish(job_id)
            # the job finished its next phase while its notification was still retrying
            assert done.done == "complete"
            assert receiver.requests[1].status == 0  # not answered yet
            assert await channels(api) and (await channels(api))["hook"]["lastDelivery"] is None
            second_try.set()
            requests = await receiver.wait_for_requests(3)
            await api.runner.notifications.settled()
            hook = (await channels(api))["hook"]

    assert answer.status_code == 200
    assert [r.status for r in requests] == [500, 500, 200]
    ids = {r.headers["x-coro-delivery"] for r in requests}
    assert len(ids) == 1
    assert all(r.headers["x-coro-signature-256"] == signature_of(SECRET, r.raw) for r in requests)
    assert hook["lastDelivery"]["ok"] is True
    assert hook["lastDelivery"]["attempts"] == 3
    assert hook["lastDelivery"]["deliveryId"] == ids.pop()
    assert hook["recentFailures"] == []


async def test_a_404_is_not_retried_and_its_failure_is_shown_and_logged(
    api_factory: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="coro")
    async with WebhookReceiver(default=404, body={"message": "no such hook"}) as receiver:
        settings = config(retryDelaySeconds=0.01, attempts=5, webhooks=[webhook(receiver)])
        async with api_factory(settings) as api:
            job_id = await park(api)
            await api.runner.notifications.settled()
            hook = (await channels(api))["hook"]
            log = await api.wait_for_line(job_id, "[notify]")

    assert len(receiver.requests) == 1
    failure = {
        "at": hook["lastDelivery"]["at"],
        "event": "job.awaiting",
        "ok": False,
        "status": 404,
        "error": 'HTTP 404: {"message": "no such hook"}',
        "attempts": 1,
        "deliveryId": receiver.requests[0].headers["x-coro-delivery"],
    }
    assert hook["lastDelivery"] == failure
    assert hook["recentFailures"] == [failure]
    assert log.texts()[-1] == (
        "[notify] job.awaiting not delivered to channel hook after 1 attempt: "
        'HTTP 404: {"message": "no such hook"}'
    )
    warnings = [r.getMessage() for r in caplog.records if "failed after" in r.getMessage()]
    assert len(warnings) == 1 and "channel hook" in warnings[0]


async def test_plan_approval_budget_and_pull_requests_say_why_someone_is_needed(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    async with WebhookReceiver() as receiver:
        wanted = ["job.awaiting", "pr.opened", "job.completed"]
        settings = config(webhooks=[webhook(receiver, events=wanted)])
        async with api_factory(settings) as api:
            # a plan-approval phase: the plan artefact names what to approve
            plan = write_workflow(
                api.home,
                "plan",
                [
                    {"name": "planning", "agent": None},
                    {"name": "approval", "agent": None, "status": "awaiting-plan-approval"},
                ],
            )
            post = {"kind": "plan", "title": "Counters in Redis", "data": {"markdown": "…"}}
            planned = await api.create(
                plan, {"planning": [{"tool": "post_artifact", "input": post}]}
            )
            await api.wait_for_line(planned, "Job parked")
            # a budget that the first phase's usage reaches
            budget = write_workflow(
                api.home, "spend", [*ONE_PHASE, {"name": "more", "agent": None}]
            )
            usage = {"usage": {"inputTokens": 600, "outputTokens": 500}}
            spent = await api.create(budget, {"work": [usage]}, budget={"maxTokens": 1000})
            await api.wait_for_line(spent, "[budget]")
            # a pull request on the local SCM, then a question
            opened, url = await open_pull_request(api, tmp_path)
            requests = await receiver.wait_for_requests(4)
            await api.runner.notifications.settled()

    bodies = {(r.body["jobId"], r.body["event"]): r.body for r in requests}
    assert bodies[(planned, "job.awaiting")]["reason"] == "Plan approval needed: Counters in Redis"
    assert bodies[(planned, "job.awaiting")]["status"] == "awaiting-plan-approval"
    assert "question" not in bodies[(planned, "job.awaiting")]
    assert bodies[(spent, "job.awaiting")]["reason"] == "Budget reached: 1,100 of 1,000 tokens"
    pr = bodies[(opened, "pr.opened")]
    assert pr["reason"] == "Pull request #1 opened for add-greeting"
    assert pr["links"]["pullRequest"] == url
    asked = bodies[(opened, "job.awaiting")]
    assert asked["question"] == "Merge it?" and asked["links"]["pullRequest"] == url
    assert len(requests) == 4  # nothing else: neither job completed


async def open_pull_request(api: Api, tmp_path: Path) -> tuple[str, str]:
    """A job that opens PR #1 on the local SCM, then asks; its id and the PR's URL."""
    local = api.runner.plugins.get("scm", "local")
    assert isinstance(local, LocalScm)
    source = tmp_path / "shop"
    source.mkdir()
    (source / "README.md").write_text("# Shop\n")
    await local.create_repo("shop", from_dir=source)
    workflow = write_workflow(api.home, "pr", ONE_PHASE)

    def step(tool: str, /, **args: Any) -> dict[str, Any]:
        return {"tool": tool, "input": args}

    script = {
        "work": [
            step("set_work_items", workItems=["add-greeting"]),
            step("update_work_item", name="add-greeting", status="in-progress"),
            step("scm_clone_repo", repo="shop"),
            step("file_write", path="shop/greeting.py", content="print('hi')\n"),
            step("scm_create_pr", title="Add a greeting"),
            step("await_event", eventName="developer-input: Merge it?"),
        ]
    }
    job_id = await api.create(workflow, script, description="Greet people")
    await api.wait_for_line(job_id, "Job parked")
    job = await api.job(job_id)
    url = job["prMappings"][0]["url"]
    assert url
    return job_id, url


async def test_escalated_failed_and_completed_jobs_notify_the_channels_that_want_them(
    api_factory: ApiFactory,
) -> None:
    async with WebhookReceiver() as everything, WebhookReceiver() as defaults:
        settings = config(
            webhooks=[
                webhook(everything, events=["job.escalated", "job.failed", "job.completed"]),
                {"id": "defaults", "url": defaults.root, "secret": SECRET},
            ]
        )
        async with api_factory(settings) as api:
            workflow = write_workflow(api.home, "one", ONE_PHASE)
            escalate = {"tool": "escalate", "input": {"reason": "The tests need a database"}}
            escalated = await api.create(workflow, {"work": [escalate]})
            failed = await api.create(workflow, {"work": [{"fail": "the model went away"}]})
            completed = await api.create(workflow, {"work": [{"text": "done"}]})
            for job_id in (escalated, failed, completed):
                await api.finish(job_id)
            await everything.wait_for_requests(3)
            await api.runner.notifications.settled()

    got = {r.body["jobId"]: r.body for r in everything.requests}
    assert got[escalated]["event"] == "job.escalated"
    assert got[escalated]["reason"] == "The tests need a database"
    assert got[failed]["event"] == "job.failed" and "the model went away" in got[failed]["reason"]
    assert (got[completed]["event"], got[completed]["status"]) == ("job.completed", "complete")
    # without `events`, a channel gets everything but job.completed
    assert sorted(r.body["event"] for r in defaults.requests) == ["job.escalated", "job.failed"]


async def test_408_and_429_are_tried_again_after_the_wait_the_receiver_asks(
    api_factory: ApiFactory,
) -> None:
    async with (
        WebhookReceiver([408], headers={"Retry-After": "0"}) as timing_out,
        WebhookReceiver([429], headers={"Retry-After": "0"}) as limiting,
    ):
        settings = config(
            retryDelaySeconds=0.01,
            webhooks=[
                webhook(timing_out),
                {"id": "limited", "url": limiting.root, "secret": SECRET},
            ],
        )
        async with api_factory(settings) as api:
            await park(api)
            await api.runner.notifications.settled()
            listed = await channels(api)

    assert [r.status for r in timing_out.requests] == [408, 200]
    assert [r.status for r in limiting.requests] == [429, 200]
    assert listed["hook"]["lastDelivery"]["attempts"] == 2
    assert listed["limited"]["lastDelivery"]["ok"] is True


async def test_stopping_the_runner_does_not_wait_out_a_backoff(api_factory: ApiFactory) -> None:
    # ten minutes between tries: a stop that waited for the next one would time the test out
    async with WebhookReceiver(default=503) as receiver:
        settings = config(retryDelaySeconds=600, webhooks=[webhook(receiver)])
        async with api_factory(settings) as api:
            await park(api)
            await receiver.wait_for_requests(1)
            notifications = api.runner.notifications
        await notifications.settled()  # nothing left under way once stopped

    assert len(receiver.requests) == 1


async def test_a_campaign_notifies_for_a_child_that_asks_and_for_itself_when_a_child_fails(
    api_factory: ApiFactory,
) -> None:
    events = ["job.awaiting", "job.escalated", "job.failed", "job.completed"]
    async with WebhookReceiver() as receiver:
        settings = CoroConfig.model_validate(
            {
                "llm": {"defaultProvider": "script"},
                "coordination": {"maxParallelChildren": 2},
                "notifications": {"webhooks": [webhook(receiver, events=events)]},
            }
        )
        async with api_factory(settings) as api:
            write_workflow(api.home, "child", ONE_PHASE)
            parent_flow = write_workflow(
                api.home,
                "camp",
                [
                    {"name": "plan", "agent": None},
                    {"name": "coordinating", "agent": None, "status": "awaiting-children"},
                ],
                kind="campaign",
            )

            def child(name: str, script: dict[str, Any]) -> dict[str, Any]:
                params = {"workflowPath": "workflows/child/workflow.md", "script": script}
                return {
                    "tool": "campaign_register_child",
                    "input": {"name": name, "description": f"Part {name}", "params": params},
                }

            plan = [
                child("asks", asking("May I use Redis?")),
                child("breaks", {"work": [{"fail": "the build broke"}]}),
                {"tool": "campaign_finalize", "input": {}},
            ]
            parent = await api.create(parent_flow, {"plan": plan})
            await api.wait_for_line(parent, "[campaign] Halted on failure")
            job = await api.job(parent)
            asks = next(c["jobId"] for c in job["campaignChildren"] if c["name"] == "asks")
            await api.wait_for_line(asks, "Job parked")
            await api.runner.notifications.settled()

    got = sorted((r.body["jobId"], r.body["event"]) for r in receiver.requests)
    assert got == sorted([(asks, "job.awaiting"), (parent, "job.awaiting")])
    halted = next(r.body for r in receiver.requests if r.body["jobId"] == parent)
    assert halted["reason"].startswith('Campaign halted: child "breaks" failed')
    asked = next(r.body for r in receiver.requests if r.body["jobId"] == asks)
    assert asked["question"] == "May I use Redis?"


# --- Slack -------------------------------------------------------------------------------

#: Block Kit's limits (docs.slack.dev/reference/block-kit): what Slack refuses with
#: `invalid_blocks` beyond them.
BLOCKS_MAX = 50
BLOCK_ID_MAX = 255
HEADER_TEXT_MAX = 150
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
SECTION_FIELD_TEXT_MAX = 2000
CONTEXT_ELEMENTS_MAX = 10
ACTIONS_ELEMENTS_MAX = 25
BUTTON_TEXT_MAX = 75
BUTTON_URL_MAX = 3000
ACTION_ID_MAX = 255
BUTTON_VALUE_MAX = 2000
TEXT_OBJECT_MAX = 3000


def block_kit_problems(message: dict[str, Any]) -> list[str]:
    """What Slack would refuse in an incoming-webhook message (blocks and fallback)."""
    problems: list[str] = []

    def text_object(where: str, obj: Any, limit: int, kinds: tuple[str, ...]) -> None:
        if not isinstance(obj, dict) or obj.get("type") not in kinds:
            problems.append(f"{where}: not a {' or '.join(kinds)} text object")
            return
        allowed = (
            {"type", "text", "emoji"}
            if obj["type"] == "plain_text"
            else {"type", "text", "verbatim"}
        )
        if set(obj) - allowed:
            problems.append(f"{where}: unknown keys {sorted(set(obj) - allowed)}")
        text = obj.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= limit:
            problems.append(f"{where}: text must be 1-{limit} characters")
        elif obj["type"] == "mrkdwn":
            unescaped = re.search(r"[<>]|&(?!amp;|lt;|gt;)", text)
            if unescaped:
                problems.append(f"{where}: unescaped {unescaped.group()!r} in mrkdwn")

    if not isinstance(message.get("text"), str) or not message["text"]:
        problems.append("text: the fallback is required with blocks")
    blocks = message.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= BLOCKS_MAX:
        return [*problems, f"blocks: 1-{BLOCKS_MAX} blocks"]
    for i, block in enumerate(blocks):
        where, kind = f"blocks[{i}]", block.get("type")
        if len(str(block.get("block_id", ""))) > BLOCK_ID_MAX:
            problems.append(f"{where}.block_id: at most {BLOCK_ID_MAX} characters")
        if kind == "header":
            text_object(f"{where}.text", block.get("text"), HEADER_TEXT_MAX, ("plain_text",))
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: a section needs text or fields")
            if "text" in block:
                text_object(
                    f"{where}.text", block["text"], SECTION_TEXT_MAX, ("plain_text", "mrkdwn")
                )
            fields = block.get("fields", [])
            if len(fields) > SECTION_FIELDS_MAX:
                problems.append(f"{where}.fields: at most {SECTION_FIELDS_MAX}")
            for j, item in enumerate(fields):
                text_object(
                    f"{where}.fields[{j}]", item, SECTION_FIELD_TEXT_MAX, ("plain_text", "mrkdwn")
                )
        elif kind == "context":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= CONTEXT_ELEMENTS_MAX:
                problems.append(f"{where}.elements: 1-{CONTEXT_ELEMENTS_MAX} elements")
            for j, item in enumerate(elements):
                if item.get("type") != "image":
                    text_object(
                        f"{where}.elements[{j}]", item, TEXT_OBJECT_MAX, ("plain_text", "mrkdwn")
                    )
        elif kind == "actions":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= ACTIONS_ELEMENTS_MAX:
                problems.append(f"{where}.elements: 1-{ACTIONS_ELEMENTS_MAX} elements")
            action_ids = [e.get("action_id") for e in elements if "action_id" in e]
            if len(action_ids) != len(set(action_ids)):
                problems.append(f"{where}: action_ids must be unique in the block")
            for j, button in enumerate(elements):
                here = f"{where}.elements[{j}]"
                if button.get("type") != "button":
                    problems.append(f"{here}: only buttons are expected here")
                    continue
                text_object(f"{here}.text", button.get("text"), BUTTON_TEXT_MAX, ("plain_text",))
                if len(button.get("url", "")) > BUTTON_URL_MAX:
                    problems.append(f"{here}.url: at most {BUTTON_URL_MAX} characters")
                if len(button.get("action_id", "")) > ACTION_ID_MAX:
                    problems.append(f"{here}.action_id: at most {ACTION_ID_MAX} characters")
                if len(button.get("value", "")) > BUTTON_VALUE_MAX:
                    problems.append(f"{here}.value: at most {BUTTON_VALUE_MAX} characters")
                if button.get("style", "primary") not in ("primary", "danger"):
                    problems.append(f"{here}.style: primary or danger")
        elif kind != "divider":
            problems.append(f"{where}: unexpected block type {kind!r}")
    return problems


def slack_receiver(default: int = 200, body: str = "ok") -> WebhookReceiver:
    """Slack's incoming webhooks answer a word, as text/html (`ok`, `no_service`)."""
    return WebhookReceiver(default=default, body=body, content_type="text/html")


def slack(receiver: WebhookReceiver, **extra: Any) -> dict[str, Any]:
    return {"id": "team", "webhookUrl": f"{receiver.root}{SLACK_PATH}", **extra}


async def test_the_slack_message_is_valid_block_kit_with_job_text_escaped_and_cut(
    api_factory: ApiFactory,
) -> None:
    hostile = "Use <!channel> & <https://evil.example|this link> > that?"
    async with slack_receiver() as receiver:
        settings = config(dashboardUrl=DASHBOARD, slack=[slack(receiver)])
        async with api_factory(settings) as api:
            asked = await park(api, hostile, description="Rate limits <for> & the API")
            workflow = write_workflow(api.home, "long", ONE_PHASE)
            reason = hostile + " " + "x" * 6000  # more than a section holds
            escalate = {"tool": "escalate", "input": {"reason": reason}}
            escalated = await api.create(workflow, {"work": [escalate]})
            await api.finish(escalated)
            requests = await receiver.wait_for_requests(2)
            await api.runner.notifications.settled()
            team = (await channels(api))["team"]

    messages = {r.body["blocks"][2]["elements"][0]["text"].split()[1]: r.body for r in requests}
    assert all(r.path == SLACK_PATH for r in requests)
    assert [block_kit_problems(m) for m in messages.values()] == [[], []]
    header, section, context, actions = messages[asked]["blocks"]
    assert header["text"]["text"] == "Waiting for you: Rate limits <for> & the API"
    assert section["text"]["text"] == (
        "Waiting for developer input: Use &lt;!channel&gt; &amp; "
        "&lt;https://evil.example|this link&gt; &gt; that?"
    )
    assert context["elements"][0]["text"] == (
        f"Job {asked} · awaiting-developer-input · phase work"
    )
    (button,) = actions["elements"]
    assert button["url"] == f"{DASHBOARD}/dashboard/#/runs/{asked}"
    fallback = messages[asked]["text"]
    assert "&lt;!channel&gt;" in fallback and "<!channel>" not in fallback
    cut = messages[escalated]["blocks"][1]["text"]["text"]
    assert cut.startswith("Use &lt;!channel&gt;") and cut.endswith("…")  # cut, not refused
    assert len(cut) <= SECTION_TEXT_MAX
    assert team["kind"] == "slack" and team["lastDelivery"]["ok"] is True
    assert "slacktokenSLACKTOKEN1234" not in team["target"] and SLACK_PATH not in team["target"]
    assert team["target"].startswith(f"127.0.0.1:{receiver.port}/")


# --- e-mail ------------------------------------------------------------------------------


def mail(receiver: SmtpReceiver, **extra: Any) -> dict[str, Any]:
    return {
        "id": "mail",
        "host": "127.0.0.1",
        "port": receiver.port,
        "security": "none",
        "username": "coro",
        "password": SMTP_PASSWORD,
        "from": "coro@example.com",
        "to": ["dev@example.com", "lead@example.com"],
        **extra,
    }


async def test_mail_reaches_a_real_smtp_server_with_text_and_html(api_factory: ApiFactory) -> None:
    async with SmtpReceiver(username="coro", password=SMTP_PASSWORD) as smtp:
        settings = config(dashboardUrl=DASHBOARD, email=[mail(smtp)])
        async with api_factory(settings) as api:
            job_id = await park(api, description="Rate limits <for> & the API")
            (message,) = await smtp.wait_for_messages(1)
            await api.runner.notifications.settled()
            listed = (await channels(api))["mail"]

    link = f"{DASHBOARD}/dashboard/#/runs/{job_id}"
    assert message["Subject"] == f"[Coro] Waiting for you: Rate limits <for> & the API ({job_id})"
    assert message["From"] == "coro@example.com"
    assert message["To"] == "dev@example.com, lead@example.com"
    assert message["X-Coro-Event"] == "job.awaiting"
    sender, recipients, raw = smtp.envelopes[0]
    assert (sender, recipients) == ("coro@example.com", ["dev@example.com", "lead@example.com"])
    assert smtp.logins == ["coro"] and SMTP_PASSWORD.encode() not in raw
    text = message.get_body(("plain",))
    markup = message.get_body(("html",))
    assert text is not None and markup is not None
    plain = text.get_content()
    assert f"Why: Waiting for developer input: {QUESTION}" in plain
    assert f"Open the run: {link}" in plain
    html = markup.get_content()
    assert "Rate limits &lt;for&gt; &amp; the API" in html and f'href="{link}"' in html
    assert listed["target"] == "dev@example.com, lead@example.com"
    assert listed["lastDelivery"]["ok"] is True and "status" not in listed["lastDelivery"]


# --- the API -----------------------------------------------------------------------------


async def test_each_kind_of_channel_takes_a_test_notification_once(
    api_factory: ApiFactory,
) -> None:
    async with (
        WebhookReceiver() as hook,
        slack_receiver() as team,
        SmtpReceiver(username="coro", password=SMTP_PASSWORD) as smtp,
        WebhookReceiver(default=500) as broken,
    ):
        settings = config(
            attempts=5,
            webhooks=[webhook(hook), {"id": "broken", "url": broken.root, "secret": SECRET}],
            slack=[slack(team)],
            email=[mail(smtp)],
        )
        async with api_factory(settings) as api:
            post = api.client.post
            answers = {
                c: (await post("/notifications/test", json={"channel": c}))
                for c in ("hook", "team", "mail", "broken")
            }
            unknown = await post("/notifications/test", json={"channel": "nope"})
            refused = [
                await post("/notifications/test", json=body)
                for body in ({}, {"channel": "hook", "more": 1}, {"channel": "not an id!"})
            ]
            listed = await channels(api)

    assert {c: (a.status_code, a.json()) for c, a in answers.items()} == {
        "hook": (200, {"channel": "hook", "ok": True, "status": 200}),
        "team": (200, {"channel": "team", "ok": True, "status": 200}),
        "mail": (200, {"channel": "mail", "ok": True}),
        "broken": (
            200,
            {
                "channel": "broken",
                "ok": False,
                "status": 500,
                "error": answers["broken"].json()["error"],
            },
        ),
    }
    assert answers["broken"].json()["error"].startswith("HTTP 500")
    assert len(broken.requests) == 1  # a test is never retried
    (test,) = hook.requests
    assert test.headers["x-coro-event"] == "test"
    assert test.headers["x-coro-signature-256"] == signature_of(SECRET, test.raw)
    assert test.body["event"] == "test" and test.body["question"]
    assert block_kit_problems(team.requests[0].body) == []
    assert smtp.messages[0]["Subject"].startswith("[Coro] Test notification: ")
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    assert [r.status_code for r in refused] == [400, 400, 400]
    assert all("error" in r.json() for r in refused)
    assert listed["broken"]["recentFailures"][0]["event"] == "test"
    assert listed["hook"]["lastDelivery"]["event"] == "test"


async def test_a_config_reload_adds_a_channel_and_keeps_its_secret(
    api_factory: ApiFactory,
) -> None:
    async with (
        WebhookReceiver() as receiver,
        slack_receiver() as team,
        api_factory(config()) as api,
    ):
        before = await channels(api)
        added = await api.client.put(
            "/config", json={"notifications": {"webhooks": [webhook(receiver)]}}
        )
        after = await channels(api)
        listed = (await api.client.get("/plugins")).json()["plugins"]
        plugins = {p["id"]: p for p in listed if p["kind"] == "notifier"}
        first = await park(api)
        await receiver.wait_for_requests(1)
        # the settings page sends the channels back as GET /config shows them (masked)
        shown = (await api.client.get("/config")).json()["config"]["notifications"]
        kept = await api.client.put(
            "/config", json={"notifications": {**shown, "slack": [slack(team)]}}
        )
        second = await park(api)
        await receiver.wait_for_requests(2)
        await team.wait_for_requests(1)
        await api.runner.notifications.settled()

    assert before == {}
    assert added.status_code == 200, added.text
    assert list(after) == ["hook"] and after["hook"]["lastDelivery"] is None
    assert plugins["webhook"]["active"] is True and plugins["slack"]["active"] is False
    assert shown["webhooks"][0]["secret"] != SECRET
    assert kept.status_code == 200, kept.text
    assert [r.body["jobId"] for r in receiver.requests] == [first, second]
    # still signed with the real secret, not with its mask
    assert all(
        r.headers["x-coro-signature-256"] == signature_of(SECRET, r.raw) for r in receiver.requests
    )
    assert team.requests[0].path == SLACK_PATH


async def test_the_live_feed_streams_notifications_and_needs_the_token(
    api_factory: ApiFactory,
) -> None:
    token = "t" * 32
    settings = CoroConfig.model_validate({"llm": {"defaultProvider": "script"}, "apiToken": token})
    async with api_factory(settings) as api:
        unauthorised = await api.client.get("/notifications/stream")
        api.client.headers["Authorization"] = f"Bearer {token}"
        async with api.client.stream("GET", "/notifications/stream") as response:
            job_id = await park(api)
            frame = await anext(f async for f in frames(response) if f.event == "notification")

    assert unauthorised.status_code == 401
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payload = json.loads(frame.data)
    assert (payload["event"], payload["jobId"]) == ("job.awaiting", job_id)
    assert payload["question"] == QUESTION and uuid.UUID(payload["deliveryId"])


# --- secrets ---------------------------------------------------------------------------


@asynccontextmanager
async def failing_channels() -> AsyncIterator[
    tuple[WebhookReceiver, WebhookReceiver, SmtpReceiver]
]:
    """Receivers that refuse everything; the Slack one echoes its own URL back."""
    async with (
        WebhookReceiver(default=500, body={"message": f"bad secret {SECRET}"}) as hook,
        slack_receiver(404, f"no_service at {SLACK_PATH}") as team,
        SmtpReceiver(username="coro", password="another-password") as smtp,
    ):
        yield hook, team, smtp


async def test_no_secret_of_a_channel_is_shown_logged_or_answered(
    api_factory: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with failing_channels() as (hook, team, smtp):
        settings = config(
            retryDelaySeconds=0.01,
            attempts=2,
            webhooks=[webhook(hook)],
            slack=[slack(team)],
            email=[mail(smtp)],
        )
        async with api_factory(settings) as api:
            job_id = await park(api)
            await api.runner.notifications.settled()
            tried = (len(hook.requests), len(team.requests))
            tests = [
                (await api.client.post("/notifications/test", json={"channel": c})).text
                for c in ("hook", "team", "mail")
            ]
            shown = [
                (await api.client.get(path)).text
                for path in ("/config", "/notifications", "/plugins", f"/jobs/{job_id}")
            ]
            lines = await api.runner.store.backend.read_logs(job_id, after=-1, limit=10_000)

    job_log = "\n".join(entry.line for entry in lines)
    assert job_log.count("[notify]") == 3  # each channel's failure, once
    assert tried == (2, 1)  # the webhook's 500 is retried, Slack's 404 is final
    # aiosmtpd's own log is the receiver's, not the runner's
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")
    secrets = [SECRET, SLACK_PATH, "slacktokenSLACKTOKEN1234", SMTP_PASSWORD]
    for text in [*tests, *shown, job_log, logged]:
        for secret in secrets:
            assert secret not in text
    assert "SMTP 535" in job_log and "HTTP 404: no_service at ***" in job_log
