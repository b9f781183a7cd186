"""Forwarded webhooks (`event:pluginWebhook`) → the PR poller's events, for the job they
concern; a parked job in a real runner wakes from one."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coro.config import CoroConfig, CoroHome
from coro.domain.cloud_protocol import EventPluginWebhook
from coro.domain.models import AWAITING_PR_MERGE, COMPLETE, Job, PrMapping, PrSeen, iso_now
from coro.engine.events import InboundEvent, MemoryEventTransport
from coro.engine.polling import PollingTransport
from coro.engine.webhooks import events_from_webhook
from coro.extensions import Extensions
from coro.plugins.context import PluginContext
from coro.plugins.registry import PluginSet
from coro.state.prs import MemoryPullRequestStore
from coro.state.sqlite import SqliteStateBackend
from coro.state.store import JobStore
from tests.conftest import ApiFactory, user_prompts, write_workflow
from tests.fakes.github_server import FakeGitHub

TOKEN = "ghp_HookTokenZq8mW3nR5tY7uI9oP1aSdF4gH6"
REPO = "acme/svc"


def github_config(base_url: str) -> dict[str, Any]:
    return {
        "plugins": {
            "installed": {
                "github": {
                    "config": {"token": TOKEN, "baseUrl": base_url, "retryBackoffSeconds": 0}
                }
            }
        }
    }


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo(REPO, branches=("main", "coro/x"), collaborators=["alice", "bob"])
        yield fake


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    backend = SqliteStateBackend(tmp_path / "state.db")
    await backend.open()
    yield JobStore(backend)
    await backend.close()


@pytest.fixture
async def plugins(tmp_path: Path, github: FakeGitHub) -> AsyncIterator[PluginSet]:
    config = CoroConfig.model_validate(github_config(github.base_url))
    home = CoroHome(tmp_path / "home")
    plugin_set = Extensions(home).plugins(config, PluginContext(home, prs=MemoryPullRequestStore()))
    yield plugin_set
    await plugin_set.aclose()


async def parked_job(
    store: JobStore, pr_id: int, *, repo: str = REPO, job_id: str | None = None
) -> str:
    now = iso_now()
    job = Job(
        id=job_id or f"svc-job-{pr_id}",
        workflow_path="workflows/job/workflow.md",
        status=AWAITING_PR_MERGE,
        phase="coding",
        awaiting_event="pr:review",
        awaiting_pr_id=pr_id,
        pr_mappings=[
            PrMapping(
                pr_id=pr_id,
                work_item="x",
                repo_slug=repo,
                plugin_id="github",
                url=f"https://github.com/{REPO}/pull/{pr_id}",
                opened_at=now,
                seen=PrSeen(),
            )
        ],
        created_at=now,
        updated_at=now,
    )
    await store.create(job)
    return job.id


def frame(
    event: str, payload: dict[str, Any], *, job_id: str | None = None, delivery: str = "d-1"
) -> EventPluginWebhook:
    body = json.dumps(payload).encode()
    return EventPluginWebhook(
        message_id=f"webhook-{delivery}",
        plugin_id="github",
        job_id=job_id,
        delivery_id=delivery,
        headers={"X-GitHub-Event": event, "content-type": "application/json"},
        raw_body_base64=base64.b64encode(body).decode(),
        received_at=iso_now(),
    )


def approval(pr_id: int, review_id: int = 90001, user: str = "alice") -> dict[str, Any]:
    return {
        "action": "submitted",
        "review": {
            "id": review_id,
            "state": "approved",
            "body": None,
            "user": {"login": user},
            "submitted_at": "2024-05-01T09:00:00Z",
        },
        "pull_request": {
            "number": pr_id,
            "state": "open",
            "html_url": f"https://github.com/{REPO}/pull/{pr_id}",
        },
        "repository": {"full_name": REPO, "name": "svc"},
    }


def comment(pr_id: int, comment_id: int, body: str) -> dict[str, Any]:
    return {
        "action": "created",
        "issue": {
            "number": pr_id,
            "state": "open",
            "pull_request": {"html_url": f"https://github.com/{REPO}/pull/{pr_id}"},
        },
        "comment": {
            "id": comment_id,
            "body": body,
            "user": {"login": "bob"},
            "created_at": "2024-05-01T10:00:00Z",
        },
        "repository": {"full_name": REPO},
    }


def same(event: InboundEvent) -> tuple[Any, ...]:
    """What the dispatcher and the agent see of an event (not when it arrived)."""
    return (event.job_id, event.event_key, event.payload, event.plugin_id, event.ref, event.source)


async def test_a_review_approval_is_the_event_the_poller_would_make(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    pr_id = github.open_pr(REPO, "coro/x")
    job_id = await parked_job(store, pr_id)
    github.approve(REPO, pr_id, "alice")
    poller = PollingTransport(store, plugins, interval_seconds=3600)
    [polled] = await poller.poll_once()

    def forget(job: Job) -> None:  # as if the poll had never happened
        job.pr_mappings[0].seen = PrSeen()

    await store.update(job_id, forget)
    [hooked] = await events_from_webhook(
        plugins, frame("pull_request_review", approval(pr_id)), store
    )
    assert same(hooked) == same(polled)
    assert hooked.payload["approvalCount"] == 1 and hooked.payload["approvedBy"] == ["alice"]
    assert hooked.pr_outcome() is None
    # what the webhook reported is seen: the poller does not announce it again
    assert await PollingTransport(store, plugins, interval_seconds=3600).poll_once() == []


async def test_a_comment_is_announced_once_and_the_job_is_found_by_its_pull_request(
    github: FakeGitHub, store: JobStore, plugins: PluginSet
) -> None:
    job_id = await parked_job(store, 7, repo="svc")  # a bare name, as scm_clone_repo took it
    other = await parked_job(store, 7, repo="other/svc", job_id="other-repo-job")
    delivery = frame("issue_comment", comment(7, 1234, "Please rename the flag."))
    [event] = await events_from_webhook(plugins, delivery, store)
    assert event.job_id == job_id != other
    assert event.event_key == "pullrequest:comment_created"
    assert event.payload["comment"]["content"] == {"raw": "Please rename the flag."}
    assert event.ref is not None and event.ref.repo_key == "svc"  # the job's own name
    job = await store.get(job_id)
    seen = job.pr_mappings[0].seen
    assert seen is not None and seen.comment_ids == ["1234"]
    # the provider delivering it again (or the agent's own comment) wakes nothing
    assert await events_from_webhook(plugins, delivery, store) == []


async def test_a_merge_marks_the_pr_and_is_not_announced_twice(
    store: JobStore, plugins: PluginSet
) -> None:
    job_id = await parked_job(store, 9)
    merged = {
        "action": "closed",
        "pull_request": {
            "number": 9,
            "state": "closed",
            "merged": True,
            "merged_at": "2024-05-02T10:00:00Z",
        },
        "repository": {"full_name": REPO},
    }
    [event] = await events_from_webhook(
        plugins, frame("pull_request", merged, job_id=job_id), store
    )
    assert event.event_key == "pullrequest:fulfilled"
    assert event.payload == {
        "state": "MERGED",
        "prId": 9,
        "pullrequest": {"id": 9, "state": "MERGED"},
    }
    assert event.pr_outcome() == "merged"
    assert await events_from_webhook(plugins, frame("pull_request", merged), store) == []


async def test_deliveries_that_wake_nothing(store: JobStore, plugins: PluginSet) -> None:
    await parked_job(store, 7)
    assert await events_from_webhook(plugins, frame("ping", {"zen": "hi"}), store) == []
    assert (
        await events_from_webhook(plugins, frame("pull_request_review", approval(8)), store) == []
    )
    unknown = frame("pull_request_review", approval(7)).model_copy(update={"plugin_id": "nope"})
    assert await events_from_webhook(plugins, unknown, store) == []
    garbled = frame("pull_request_review", approval(7)).model_copy(
        update={"raw_body_base64": "%%% not base64 %%%"}
    )
    assert await events_from_webhook(plugins, garbled, store) == []
    gone = frame("pull_request_review", approval(7), job_id="no-such-job")
    assert await events_from_webhook(plugins, gone, store) == []


async def test_a_parked_job_in_a_runner_wakes_from_webhooks(api_factory: ApiFactory) -> None:
    config = CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, **github_config("http://127.0.0.1:9")}
    )
    async with api_factory(config, transport=MemoryEventTransport()) as api:
        workflow = write_workflow(api.home, "reviewed", [{"name": "work", "agent": None}])
        script = {
            "work": [
                [{"tool": "await_event", "input": {"eventName": "pr:approved", "prId": 7}}],
                [
                    {"text": "approved, waiting for the merge"},
                    {"tool": "await_event", "input": {"eventName": "pr:merged", "prId": 7}},
                ],
                [{"text": "merged, finishing"}],
            ]
        }
        job_id = await api.create(workflow, script)
        await api.wait_for_line(job_id, "Job parked — waiting for: pr:approved")

        def opened(job: Job) -> None:  # what scm_create_pr records
            mapping = PrMapping(
                pr_id=7,
                work_item="x",
                repo_slug=REPO,
                plugin_id="github",
                opened_at=iso_now(),
                seen=PrSeen(),
            )
            job.pr_mappings.append(mapping)

        runner = api.runner
        await runner.store.update(job_id, opened)
        approved = frame("pull_request_review", approval(7), delivery="d-approve")
        events = await events_from_webhook(runner.plugins, approved, runner.store)
        assert [e.event_key for e in events] == ["pullrequest:approved"]
        await runner.dispatcher.deliver(events)
        await api.wait_for_line(job_id, "Job parked — waiting for: pr:merged")
        prompt = user_prompts(await api.job(job_id))[-1]
        assert "[EVENT: 1 received since you parked]" in prompt
        assert "PR #7" in prompt and "Approvals: 1" in prompt

        merged = {
            "action": "closed",
            "pull_request": {"number": 7, "state": "closed", "merged": True},
            "repository": {"full_name": REPO},
        }
        events = await events_from_webhook(
            runner.plugins, frame("pull_request", merged, delivery="d-merge"), runner.store
        )
        await runner.dispatcher.deliver(events)
        result = await api.finish(job_id)
        assert result.done == COMPLETE, "\n".join(result.texts())
        texts = result.texts()
        assert "[event] Received event: pullrequest:approved" in texts
        assert "[event] Received event: pullrequest:fulfilled" in texts
        assert "[scm] PR #7 merged" in texts
        assert "merged, finishing" in texts
        job = await api.job(job_id)
        assert job["prMappings"][0]["mergedAt"] is not None
