"""A provider's webhooks through the team cloud into a hybrid runner: a signed PR approval
for a parked job wakes it on its runner (no poll involved), the merge finishes it; a
forged or unsigned delivery is refused with 401 and changes nothing; the same delivery
twice wakes it once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import httpx

from coro.config import CoroConfig
from coro.domain.models import Job, PrMapping, PrSeen, iso_now
from tests.cloud_helpers import WAIT_LIMIT, Cloud
from tests.conftest import ApiFactory, write_workflow
from tests.hybrid_helpers import FAST, pair, wait_state

pytest_plugins = ("tests.cloud_fixtures",)

REPO = "acme/svc"
SECRET = "a webhook secret of the team"
SCRIPT = {
    "work": [
        [{"tool": "await_event", "input": {"eventName": "pr:approved", "prId": 7}}],
        [
            {"text": "approved, waiting for the merge"},
            {"tool": "await_event", "input": {"eventName": "pr:merged", "prId": 7}},
        ],
        [{"text": "merged, finishing"}],
    ]
}


def approval() -> dict[str, Any]:
    return {
        "action": "submitted",
        "review": {
            "id": 4242,
            "state": "approved",
            "body": None,
            "user": {"login": "alice"},
            "submitted_at": "2026-12-01T09:00:00Z",
        },
        "pull_request": {"number": 7, "state": "open"},
        "repository": {"full_name": REPO, "name": "svc"},
    }


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_a_signed_approval_webhook_wakes_the_parked_job_on_its_runner(
    cloud: Cloud, api_factory: ApiFactory
) -> None:
    paired = await pair(cloud)
    put = await cloud.client.put(
        f"/teams/{paired.team_id}/webhooks/github",
        json={"secret": SECRET},
        headers=paired.admin.headers,
    )
    assert put.status_code in (200, 201), put.text
    config = CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "cloud": {"url": cloud.served.url, "token": paired.token},
            # the GitHub plugin is there (it parses the delivery), its API unreachable:
            # nothing but the webhook can wake the job
            "plugins": {
                "installed": {
                    "github": {"config": {"token": "ghp-test", "baseUrl": "http://127.0.0.1:9"}}
                }
            },
        }
    )
    async with api_factory(config, link_timings=FAST) as api:
        assert api.runner.link is not None
        await wait_state(api.runner.link, "connected")
        workflow = write_workflow(api.home, "reviewed", [{"name": "work", "agent": None}])
        job_id = await api.create(workflow, SCRIPT)
        await api.wait_for_line(job_id, "Job parked — waiting for: pr:approved")

        def opened(job: Job) -> None:  # what scm_create_pr records
            job.pr_mappings.append(
                PrMapping(
                    pr_id=7,
                    work_item="x",
                    repo_slug=REPO,
                    plugin_id="github",
                    opened_at=iso_now(),
                    seen=PrSeen(),
                )
            )

        await api.runner.store.update(job_id, opened)
        assert api.runner.cloud_backend is not None
        async with asyncio.timeout(WAIT_LIMIT):
            await api.runner.cloud_backend.flush()  # the cloud knows the job's PR now

        body = json.dumps(approval()).encode()
        url = f"/webhook/{paired.team_id}/github"
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "pull_request_review",
            "X-GitHub-Delivery": "delivery-1",
        }
        async with httpx.AsyncClient(base_url=cloud.served.url, timeout=WAIT_LIMIT) as provider:
            forged = await provider.post(
                url, content=body, headers={**headers, "X-Hub-Signature-256": signed(body, "x")}
            )
            assert forged.status_code == 401, forged.text
            unsigned = await provider.post(url, content=body, headers=headers)
            assert unsigned.status_code == 401, unsigned.text
            assert (await api.job(job_id))["awaitingEvent"] == "pr:approved"

            delivered = await provider.post(
                url, content=body, headers={**headers, "X-Hub-Signature-256": signed(body)}
            )
            assert delivered.status_code == 202, delivered.text
            assert delivered.json()["routed"] is True
            again = await provider.post(
                url, content=body, headers={**headers, "X-Hub-Signature-256": signed(body)}
            )
            assert again.status_code == 200, again.text
            assert again.json()["duplicate"] is True
            await api.wait_for_line(job_id, "Job parked — waiting for: pr:merged")

            merged = json.dumps(
                {
                    "action": "closed",
                    "pull_request": {"number": 7, "state": "closed", "merged": True},
                    "repository": {"full_name": REPO},
                }
            ).encode()
            merge = await provider.post(
                url,
                content=merged,
                headers={
                    **headers,
                    "X-GitHub-Event": "pull_request",
                    "X-GitHub-Delivery": "delivery-2",
                    "X-Hub-Signature-256": signed(merged),
                },
            )
            assert merge.status_code == 202, merge.text

        result = await api.finish(job_id)
        assert result.done == "complete", "\n".join(result.texts())
        texts = result.texts()
        assert texts.count("[event] Received event: pullrequest:approved") == 1
        assert "[scm] PR #7 merged" in texts
        assert "merged, finishing" in texts
