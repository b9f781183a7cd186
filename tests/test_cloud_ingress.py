"""`POST /webhook/{teamId}/{pluginId}` on a served cloud: HMAC over the exact bytes,
401/404 with no effect, de-duplication by delivery id, routing to the job's runner
through the durable command queue."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx

from coro.cloud.ingress import Ingress, expected_signature, signature_valid
from coro.domain.models import AWAITING_PR_MERGE, Job, PrMapping, iso_now
from coro.plugins.manifest import WebhookSpec
from tests.cloud_helpers import Cloud, CloudFactory

pytest_plugins = ("tests.cloud_fixtures",)

# GitHub's documented example ("Validating webhook deliveries")
VECTOR_SECRET = "It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SECRET = "a-webhook-secret-long-enough"
REPO = "acme/svc"
GITHUB = WebhookSpec(algorithm="hmac-sha256", header="X-Hub-Signature-256", format="sha256=<hex>")


def test_githubs_documented_vector_verifies() -> None:
    assert expected_signature(GITHUB, VECTOR_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = {"x-hub-signature-256": VECTOR_SIGNATURE}
    assert signature_valid(GITHUB, VECTOR_SECRET, VECTOR_BODY, headers)
    assert not signature_valid(GITHUB, VECTOR_SECRET, VECTOR_BODY + b" ", headers)
    assert not signature_valid(GITHUB, "It's a secret to everybody", VECTOR_BODY, headers)
    assert not signature_valid(GITHUB, VECTOR_SECRET, VECTOR_BODY, {})
    upper = {"x-hub-signature-256": VECTOR_SIGNATURE.upper()}
    assert not signature_valid(GITHUB, VECTOR_SECRET, VECTOR_BODY, upper)
    assert not signature_valid(GITHUB, VECTOR_SECRET, VECTOR_BODY, {"x-hub-signature-256": "é"})


def test_sha1_and_bare_hex_formats() -> None:
    sha1 = hmac.new(VECTOR_SECRET.encode(), VECTOR_BODY, hashlib.sha1).hexdigest()
    spec = WebhookSpec(algorithm="hmac-sha1", header="X-Hub-Signature", format="sha1=<hex>")
    assert signature_valid(spec, VECTOR_SECRET, VECTOR_BODY, {"x-hub-signature": f"sha1={sha1}"})
    bare = WebhookSpec(algorithm="hmac-sha256", header="X-Signature", format="<hex>")
    digest = VECTOR_SIGNATURE.removeprefix("sha256=")
    assert signature_valid(bare, VECTOR_SECRET, VECTOR_BODY, {"x-signature": digest})
    assert not signature_valid(bare, VECTOR_SECRET, VECTOR_BODY, {"x-signature": VECTOR_SIGNATURE})
    unsigned = WebhookSpec(algorithm="none", header="Authorization", format="<plain>")
    assert expected_signature(unsigned, VECTOR_SECRET, VECTOR_BODY) is None
    assert not signature_valid(unsigned, VECTOR_SECRET, VECTOR_BODY, {"authorization": "x"})


# --- through the route ------------------------------------------------------------------


class Team:
    def __init__(self, cloud: Cloud, team_id: str) -> None:
        self.cloud = cloud
        self.id = team_id

    async def post(
        self,
        body: bytes,
        *,
        plugin: str = "github",
        secret: str | None = SECRET,
        signature: str | None = None,
        event: str = "pull_request_review",
        delivery: str | None = None,
        content_type: str = "application/json",
        team_id: str | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": content_type}
        if plugin == "github":
            headers["X-GitHub-Event"] = event
            headers["X-GitHub-Delivery"] = delivery or str(uuid.uuid4())
            header = "X-Hub-Signature-256"
        else:
            headers["X-Event-Key"] = event
            headers["X-Request-UUID"] = delivery or str(uuid.uuid4())
            header = "X-Hub-Signature"
        if signature is None and secret is not None:
            signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if signature is not None:
            headers[header] = signature
        return await self.cloud.client.post(
            f"/webhook/{team_id or self.id}/{plugin}", content=body, headers=headers
        )

    async def commands(self) -> list[dict[str, Any]]:
        return await self.cloud.rows(
            "SELECT type, job_id, runner_id, state, frame FROM runner_commands"
            " WHERE team_id = :team ORDER BY id",
            team=self.id,
        )

    async def deliveries(self) -> list[dict[str, Any]]:
        return await self.cloud.rows(
            "SELECT plugin_id, delivery_id FROM webhook_deliveries WHERE team_id = :team",
            team=self.id,
        )

    async def store_job(self, job_id: str, pr_id: int, *, repo: str = REPO, plugin: str = "github"):
        now = iso_now()
        job = Job(
            id=job_id,
            workflow_path="workflows/job/workflow.md",
            status=AWAITING_PR_MERGE,
            phase="coding",
            pr_mappings=[
                PrMapping(
                    pr_id=pr_id, work_item="x", repo_slug=repo, plugin_id=plugin, opened_at=now
                )
            ],
            created_at=now,
            updated_at=now,
        )
        stored = await self.cloud.served.services.mirror.store(self.id, job, 1, None)
        assert stored


async def team_with_secret(cloud: Cloud, *plugins: str) -> Team:
    owner = await cloud.signup()
    team = await cloud.team(owner)
    for plugin in plugins or ("github",):
        response = await cloud.client.put(
            f"/teams/{team['id']}/webhooks/{plugin}", json={"secret": SECRET}, headers=owner.headers
        )
        assert response.status_code == 201, response.text
    return Team(cloud, team["id"])


def approval(pr_id: int, repo: str = REPO) -> bytes:
    return json.dumps(
        {
            "action": "submitted",
            "review": {
                "id": 4242,
                "state": "approved",
                "user": {"login": "alice"},
                "body": None,
                "submitted_at": "2024-05-01T09:00:00Z",
            },
            "pull_request": {"number": pr_id, "state": "open"},
            "repository": {"full_name": repo},
        }
    ).encode()


async def test_the_documented_vector_through_the_route(cloud: Cloud) -> None:
    owner = await cloud.signup()
    team = await cloud.team(owner)
    put = await cloud.client.put(
        f"/teams/{team['id']}/webhooks/github",
        json={"secret": VECTOR_SECRET},
        headers=owner.headers,
    )
    assert put.status_code == 201
    hooks = Team(cloud, team["id"])
    # not JSON, and not declared as JSON: verified over the raw bytes all the same
    response = await hooks.post(
        VECTOR_BODY,
        secret=None,
        signature=VECTOR_SIGNATURE,
        event="ping",
        content_type="text/plain",
        delivery="vector-1",
    )
    assert response.status_code == 202, response.text
    assert response.json() == {
        "accepted": True,
        "duplicate": False,
        "routed": False,
        "jobIds": [],
        "commandIds": [],
        "triggered": [],
    }
    assert await hooks.deliveries() == [{"plugin_id": "github", "delivery_id": "vector-1"}]


async def test_a_forged_or_missing_signature_is_401_and_has_no_effect(cloud: Cloud) -> None:
    hooks = await team_with_secret(cloud)
    await hooks.store_job("job-1", 7)
    body = approval(7)
    forged = await hooks.post(body, secret="not-the-team-secret-at-all", delivery="d-1")
    assert forged.status_code == 401
    assert forged.json() == {"error": "Invalid signature"}
    assert "www-authenticate" not in forged.headers
    missing = await hooks.post(body, secret=None, delivery="d-1")
    assert missing.status_code == 401
    tampered_sig = await hooks.post(body, signature="sha256=" + "0" * 64, delivery="d-1")
    assert tampered_sig.status_code == 401
    assert await hooks.commands() == []
    assert await hooks.deliveries() == []  # the real delivery d-1 still gets through
    real = await hooks.post(body, delivery="d-1")
    assert real.status_code == 202 and real.json()["routed"] is True


async def test_unknown_team_plugin_or_secret_is_404(cloud: Cloud) -> None:
    hooks = await team_with_secret(cloud)
    body = approval(7)
    unknown_team = await hooks.post(body, team_id=str(uuid.uuid4()))
    assert unknown_team.status_code == 404
    assert unknown_team.json() == {"error": "Webhook not configured for this team/plugin"}
    for plugin in ("nope", "local", "script"):  # unknown, no webhooks, not a forge
        response = await hooks.post(body, plugin=plugin)
        assert response.status_code == 404, plugin
    no_secret = await hooks.post(body, plugin="bitbucket", event="pullrequest:approved")
    assert no_secret.status_code == 404
    assert await hooks.commands() == [] and await hooks.deliveries() == []


async def test_a_signed_approval_queues_one_command_for_the_job(cloud: Cloud) -> None:
    hooks = await team_with_secret(cloud)
    await hooks.store_job("job-approved", 7)
    await hooks.store_job("job-other", 8)
    body = approval(7)
    response = await hooks.post(body, delivery="delivery-7")
    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["routed"] is True and receipt["jobIds"] == ["job-approved"]
    [command] = await hooks.commands()
    assert command["type"] == "event:pluginWebhook"
    assert command["job_id"] == "job-approved"
    assert command["state"] == "pending"  # no runner connected: it waits in the queue
    frame = command["frame"]
    assert frame["jobId"] == "job-approved"
    assert frame["pluginId"] == "github"
    assert frame["deliveryId"] == "delivery-7"
    assert base64.b64decode(frame["rawBodyBase64"]) == body
    assert frame["headers"]["x-github-event"] == "pull_request_review"
    assert all(name == name.lower() for name in frame["headers"])
    assert frame["receivedAt"]
    assert receipt["commandIds"] and isinstance(receipt["commandIds"][0], int)


async def test_the_same_delivery_twice_is_one_command(cloud: Cloud) -> None:
    hooks = await team_with_secret(cloud)
    await hooks.store_job("job-1", 7)
    first = await hooks.post(approval(7), delivery="same-delivery")
    again = await hooks.post(approval(7), delivery="same-delivery")
    assert first.status_code == 202 and first.json()["routed"] is True
    assert again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["routed"] is False
    assert len(await hooks.commands()) == 1
    other = await hooks.post(approval(7), delivery="another-delivery")
    assert other.status_code == 202
    assert len(await hooks.commands()) == 2


async def test_routing_finds_other_spellings_and_stays_in_the_team(cloud: Cloud) -> None:
    hooks = await team_with_secret(cloud)
    await hooks.store_job("job-bare", 3, repo="svc")  # as scm_clone_repo was given it
    await hooks.store_job("job-url", 4, repo="https://github.com/Acme/Svc.git")
    stranger = await team_with_secret(cloud)
    await stranger.store_job("their-job", 5)
    for pr_id, job_id in ((3, "job-bare"), (4, "job-url")):
        response = await hooks.post(approval(pr_id))
        assert response.json()["jobIds"] == [job_id]
    elsewhere = await hooks.post(approval(5))  # team B's PR, delivered to team A
    assert elsewhere.status_code == 202 and elsewhere.json()["routed"] is False
    wrong_repo = await hooks.post(approval(3, repo="acme/other"))
    assert wrong_repo.json()["routed"] is False
    assert [c["job_id"] for c in await hooks.commands()] == ["job-bare", "job-url"]
    assert await stranger.commands() == []


async def test_form_encoded_and_bitbucket_deliveries_are_verified_and_routed(
    cloud: Cloud,
) -> None:
    hooks = await team_with_secret(cloud, "github", "bitbucket")
    await hooks.store_job("gh-job", 7)
    await hooks.store_job("bb-job", 12, repo="team/app", plugin="bitbucket")
    form = urlencode({"payload": approval(7).decode()}).encode()
    response = await hooks.post(form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202 and response.json()["jobIds"] == ["gh-job"]
    bitbucket = json.dumps(
        {
            "approval": {"user": {"nickname": "dana"}},
            "pullrequest": {"id": 12, "state": "OPEN"},
            "repository": {"full_name": "team/app"},
        }
    ).encode()
    response = await hooks.post(bitbucket, plugin="bitbucket", event="pullrequest:approved")
    assert response.status_code == 202 and response.json()["jobIds"] == ["bb-job"]
    assert [c["frame"]["pluginId"] for c in await hooks.commands()] == ["github", "bitbucket"]


async def test_a_body_over_the_limit_is_413_and_queues_nothing(
    cloud_factory: CloudFactory,
) -> None:
    async with cloud_factory(max_body_bytes=64 * 1024) as cloud:
        hooks = await team_with_secret(cloud)
        await hooks.store_job("job-1", 7)
        big = json.loads(approval(7))
        big["padding"] = "x" * (64 * 1024)
        response = await hooks.post(json.dumps(big).encode())
        assert response.status_code == 413
        assert await hooks.commands() == [] and await hooks.deliveries() == []


async def test_old_deliveries_are_purged(cloud: Cloud) -> None:
    hooks = await team_with_secret(cloud)
    async with cloud.db.begin() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO webhook_deliveries (team_id, plugin_id, delivery_id, received_at)"
            f" VALUES ('{hooks.id}', 'github', 'ancient', now() - interval '30 days'),"
            f" ('{hooks.id}', 'github', 'recent', now() - interval '1 day')"
        )
    response = await hooks.post(approval(7), delivery="today")
    assert response.status_code == 202
    kept = sorted(d["delivery_id"] for d in await hooks.deliveries())
    assert kept == ["recent", "today"]
    ingress: Ingress = cloud.served.app.state.webhook_ingress
    assert await ingress.purge_expired() == 0
