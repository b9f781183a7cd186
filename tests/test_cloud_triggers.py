"""Team trigger rules in the cloud (`/teams/{teamId}/triggers`) and the team jobs signed
webhook deliveries start by them (`POST /webhook/{teamId}/{pluginId}`), on a served
cloud with the real PostgreSQL: one queued team job per event however often it is
delivered, nothing for a forged delivery or a user who may not, a PR comment's job on
the PR's branch, a Jira transition's; a comment in the thread of a team job goes to
that job's runner."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

import httpx

from coro.cloud.ingress import builtin_webhook_plugins
from coro.cloud.triggers import TRIGGER_PLUGINS
from coro.engine.triggers import trigger_job_id
from coro.plugins.trackers.github_issues_webhooks import parse_trigger_webhook
from tests.cloud_helpers import Account, Cloud

pytest_plugins = ("tests.cloud_fixtures",)

SECRET = "a-webhook-secret-long-enough"
REPO = "acme/api"
WORKFLOW = "workflows/job/workflow.md"
LABELLED_AT = "2024-03-01T09:02:00Z"


def github_rule(rule_id: str, on: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "on": on,
        "plugin": "github-issues",
        "repos": [REPO],
        "workflowPath": WORKFLOW,
        **fields,
    }


LABEL_RULE = github_rule("label-coro", "issue.labeled", label="coro", params={"tier": "x"})
MENTION_RULE = github_rule("mention", "comment.mentioned", handle="@coro")


def issue(number: int = 12, *, pull: bool = False) -> dict[str, Any]:
    kind = "pull" if pull else "issues"
    data: dict[str, Any] = {
        "number": number,
        "title": "Fix the flaky login test",
        "body": "It fails one run in ten.",
        "state": "open",
        "html_url": f"https://github.com/{REPO}/{kind}/{number}",
        "updated_at": LABELLED_AT,
        "user": {"login": "octocat"},
    }
    if pull:
        data["pull_request"] = {"html_url": f"https://github.com/{REPO}/pull/{number}"}
    return data


def labelled(label: str = "coro", number: int = 12) -> dict[str, Any]:
    return {
        "action": "labeled",
        "issue": issue(number),
        "label": {"name": label},
        "sender": {"login": "alice"},
        "repository": {"full_name": REPO},
    }


def commented(
    body: str, *, author: str = "bob", association: str = "MEMBER", pull: bool = False
) -> dict[str, Any]:
    comment_id = uuid.uuid4().int % 10**9
    kind = "pull" if pull else "issues"
    return {
        "action": "created",
        "issue": issue(12, pull=pull),
        "comment": {
            "id": comment_id,
            "body": body,
            "user": {"login": author},
            "author_association": association,
            "created_at": "2024-03-01T09:05:00Z",
            "issue_url": f"https://api.github.com/repos/{REPO}/issues/12",
            "html_url": f"https://github.com/{REPO}/{kind}/12#issuecomment-{comment_id}",
        },
        "sender": {"login": author},
        "repository": {"full_name": REPO},
    }


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Team:
    def __init__(self, cloud: Cloud, team_id: str, owner: Account) -> None:
        self.cloud = cloud
        self.id = team_id
        self.owner = owner

    async def rules(self, rules: list[dict[str, Any]]) -> None:
        response = await self.cloud.client.put(
            f"/teams/{self.id}/triggers", json={"rules": rules}, headers=self.owner.headers
        )
        assert response.status_code == 200, response.text

    async def github(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        delivery: str | None = None,
        plugin: str = "github",
        signature: str | None = "valid",
    ) -> httpx.Response:
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        }
        if signature is not None:
            headers["X-Hub-Signature-256"] = signed(body) if signature == "valid" else signature
        return await self.cloud.client.post(
            f"/webhook/{self.id}/{plugin}", content=body, headers=headers
        )

    async def jobs(self) -> list[dict[str, Any]]:
        response = await self.cloud.client.get(f"/teams/{self.id}/jobs", headers=self.owner.headers)
        assert response.status_code == 200, response.text
        return list(response.json()["jobs"])

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.cloud.client.get(
            f"/teams/{self.id}/jobs/{job_id}", headers=self.owner.headers
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def commands(self, kind: str) -> list[dict[str, Any]]:
        return await self.cloud.rows(
            "SELECT job_id, runner_id, state, frame FROM runner_commands"
            " WHERE team_id = :team AND type = :kind ORDER BY id",
            team=self.id,
            kind=kind,
        )


async def team_with_secrets(cloud: Cloud, *plugins: str) -> Team:
    owner = await cloud.signup()
    team = await cloud.team(owner)
    for plugin in plugins or ("github",):
        response = await cloud.client.put(
            f"/teams/{team['id']}/webhooks/{plugin}", json={"secret": SECRET}, headers=owner.headers
        )
        assert response.status_code == 201, response.text
    return Team(cloud, team["id"], owner)


# --- the rules --------------------------------------------------------------------------


async def test_members_read_the_rules_admins_replace_them_and_bad_rules_are_400(
    cloud: Cloud,
) -> None:
    team = await team_with_secrets(cloud)
    member = await cloud.signup()
    await cloud.add_member(team.id, team.owner, member)
    url = f"/teams/{team.id}/triggers"
    empty = await cloud.client.get(url, headers=member.headers)
    assert empty.status_code == 200 and empty.json() == {"rules": []}

    jira_rule = {
        "id": "jira-go",
        "on": "issue.transitioned",
        "plugin": "jira",
        "repos": ["PROJ"],
        "toStatus": "In Progress",
    }
    put = await cloud.client.put(
        url, json={"rules": [LABEL_RULE, jira_rule]}, headers=team.owner.headers
    )
    assert put.status_code == 200, put.text
    read = await cloud.client.get(url, headers=member.headers)
    assert [r["id"] for r in read.json()["rules"]] == ["label-coro", "jira-go"]
    assert read.json()["rules"][0]["label"] == "coro"
    assert read.json()["rules"][1]["toStatus"] == "In Progress"
    assert read.json()["rules"][1]["reply"] is True  # the config's default, filled in

    refused = await cloud.client.put(url, json={"rules": []}, headers=member.headers)
    assert refused.status_code == 403
    stranger = await cloud.signup()
    hidden = await cloud.client.get(url, headers=stranger.headers)
    assert hidden.status_code == 404

    no_label = {k: v for k, v in LABEL_RULE.items() if k != "label"}
    for rules, path in (
        ([no_label], "rules.0"),
        ([{**LABEL_RULE, "label": None}], "rules.0"),
        ([{**LABEL_RULE, "on": "issue.exploded"}], "rules.0.on"),
        ([{**LABEL_RULE, "repos": ["acme/api", "has space"]}], "rules.0.repos.1"),
        # white space by Python's reckoning though not JSON Schema's (U+0085)
        ([{**LABEL_RULE, "repos": ["acme/api\u0085"]}], "rules.0.repos.0"),
        ([{**MENTION_RULE, "handle": "@co\u0085ro"}], "rules.0.handle"),
        ([{**LABEL_RULE, "repos": []}], "rules.0.repos"),
        ([jira_rule, {**LABEL_RULE, "plugin": "local"}], "rules.1.plugin"),
    ):
        bad = await cloud.client.put(url, json={"rules": rules}, headers=team.owner.headers)
        assert bad.status_code == 400, bad.text
        assert path in [issue["path"] for issue in bad.json()["issues"]], bad.json()
    twice = await cloud.client.put(
        url, json={"rules": [LABEL_RULE, LABEL_RULE]}, headers=team.owner.headers
    )
    assert twice.status_code == 409 and "label-coro" in twice.json()["error"]
    kept = await cloud.client.get(url, headers=team.owner.headers)
    assert [r["id"] for r in kept.json()["rules"]] == ["label-coro", "jira-go"]


def test_the_rules_plugins_are_those_whose_webhooks_the_cloud_reads_triggers_from() -> None:
    readers = {p.plugin_id for p in builtin_webhook_plugins().values() if p.parse_triggers}
    assert readers == set(TRIGGER_PLUGINS)
    assert builtin_webhook_plugins()["github-issues"].reads == ("github",)


# --- jobs from deliveries ---------------------------------------------------------------


async def test_a_signed_labelled_issue_starts_exactly_one_queued_team_job(cloud: Cloud) -> None:
    team = await team_with_secrets(cloud, "github", "github-issues")
    await team.rules([LABEL_RULE, MENTION_RULE])

    other_label = await team.github("issues", labelled("bug"))
    assert other_label.status_code == 202 and other_label.json()["triggered"] == []
    first = await team.github("issues", labelled(), delivery="delivery-1")
    assert first.status_code == 202, first.text
    [job_id] = first.json()["triggered"]
    assert job_id.startswith("api-12-t")

    again = await team.github("issues", labelled(), delivery="delivery-1")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    redelivered = await team.github("issues", labelled(), delivery="delivery-2")
    assert redelivered.status_code == 202 and redelivered.json()["triggered"] == []
    # the same event through the tracker's own webhook URL: the same job, not another
    own_url = await team.github("issues", labelled(), plugin="github-issues")
    assert own_url.status_code == 202 and own_url.json()["triggered"] == []

    assert [j["id"] for j in await team.jobs()] == [job_id]
    job = await team.job(job_id)
    assert job["status"] == "queued"
    assert job["params"]["description"] == "Fix the flaky login test\n\nIt fails one run in ten."
    assert job["params"]["repo"] == REPO
    assert job["params"]["tier"] == "x"  # the rule's params
    assert job["params"]["ticket"]["key"] == f"{REPO}#12"
    assert job["triggerSource"] == "webhook"
    origin = job["origin"]
    assert origin["ruleId"] == "label-coro"
    assert origin["eventKey"] == f"github:{REPO}#12:labeled:coro:{LABELLED_AT}"
    assert origin["pluginId"] == "github-issues"
    assert origin["kind"] == "issue"
    assert origin["key"] == f"{REPO}#12"
    assert origin["author"] == "alice"
    assert origin["rule"]["label"] == "coro"
    # the id the local poller would give the same event
    [event] = parse_trigger_webhook({"x-github-event": "issues"}, json.dumps(labelled()).encode())
    assert job_id == trigger_job_id("label-coro", event)

    [dispatch] = await team.commands("event:dispatch")
    assert dispatch["job_id"] == job_id and dispatch["state"] == "pending"
    assert dispatch["runner_id"] is None  # no runner connected: it waits in the queue
    assert dispatch["frame"]["origin"]["key"] == f"{REPO}#12"
    assert dispatch["frame"]["request"]["workflowPath"] == WORKFLOW


async def test_a_forged_or_unsigned_delivery_is_401_and_starts_nothing(cloud: Cloud) -> None:
    team = await team_with_secrets(cloud)
    await team.rules([LABEL_RULE])
    forged = await team.github("issues", labelled(), signature=signed(b"other", SECRET))
    assert forged.status_code == 401
    wrong_key = await team.github("issues", labelled(), signature=signed(b"x", "not-the-secret"))
    assert wrong_key.status_code == 401
    unsigned = await team.github("issues", labelled(), signature=None)
    assert unsigned.status_code == 401
    assert await team.jobs() == []
    assert await team.commands("event:dispatch") == []


async def test_a_mention_by_someone_not_permitted_starts_nothing(cloud: Cloud) -> None:
    team = await team_with_secrets(cloud)
    await team.rules(
        [
            MENTION_RULE,
            github_rule("named", "comment.mentioned", handle="@bot", permittedUsers=["carol"]),
        ]
    )
    outsider = await team.github("issue_comment", commented("@coro fix it", association="NONE"))
    assert outsider.status_code == 202 and outsider.json()["triggered"] == []
    # a maintainer who is not among a rule's permitted users
    unnamed = await team.github("issue_comment", commented("@bot fix it", author="dave"))
    assert unnamed.json()["triggered"] == []
    own = await team.github(
        "issue_comment", commented("Coro (job `x-1`) started a run for this issue: @coro")
    )
    assert own.json()["triggered"] == []
    assert await team.jobs() == []

    member = await team.github("issue_comment", commented("@coro please fix it", author="bob"))
    [job_id] = member.json()["triggered"]
    job = await team.job(job_id)
    assert job["params"]["description"] == "please fix it"
    assert job["origin"]["author"] == "bob"
    named = await team.github(
        "issue_comment", commented("@bot go", author="Carol", association="NONE")
    )
    assert len(named.json()["triggered"]) == 1


async def test_an_at_coro_pr_comment_starts_a_job_on_the_pr_branch(cloud: Cloud) -> None:
    team = await team_with_secrets(cloud)
    await team.rules([MENTION_RULE])
    review_comment = {
        "action": "created",
        "comment": {
            "id": 777,
            "body": "@coro rename this helper",
            "user": {"login": "bob"},
            "author_association": "COLLABORATOR",
            "created_at": "2024-03-01T09:07:00Z",
            "path": "src/app.py",
        },
        "pull_request": {
            "number": 31,
            "title": "Speed up the cache",
            "body": "",
            "html_url": f"https://github.com/{REPO}/pull/31",
            "head": {"ref": "cache-speedup", "repo": {"full_name": "bob/api"}},
            "base": {"ref": "main", "repo": {"full_name": REPO}},
        },
        "repository": {"full_name": REPO},
    }
    response = await team.github("pull_request_review_comment", review_comment)
    assert response.status_code == 202, response.text
    [job_id] = response.json()["triggered"]
    job = await team.job(job_id)
    assert job["params"]["branch"] == "cache-speedup"
    assert job["params"]["baseBranch"] == "main"
    assert job["params"]["repo"] == "bob/api"  # the head repository: a fork's
    assert job["params"]["pullRequest"]["number"] == 31
    assert job["params"]["gitProvider"] == "github"
    assert job["params"]["description"] == "rename this helper"
    assert job["origin"]["kind"] == "pull_request"
    assert job["origin"]["pluginId"] == "github"  # the forge owns PR threads
    assert job["origin"]["key"] == f"{REPO}#31"

    # the PR's conversation: GitHub's payload names the PR only; the runner that takes
    # the job reads its branches
    conversation = await team.github("issue_comment", commented("@coro add tests", pull=True))
    [other] = conversation.json()["triggered"]
    job = await team.job(other)
    assert job["params"]["pullRequest"]["number"] == 12
    assert "branch" not in job["params"]
    assert job["origin"]["kind"] == "pull_request" and job["origin"]["pluginId"] == "github"


async def test_a_jira_transition_starts_one_job(cloud: Cloud) -> None:
    team = await team_with_secrets(cloud, "jira")
    await team.rules(
        [
            {
                "id": "jira-go",
                "on": "issue.transitioned",
                "plugin": "jira",
                "repos": ["PROJ"],
                "toStatus": "In Progress",
                "workflowPath": WORKFLOW,
            }
        ]
    )

    def transition(to: str, history: str) -> bytes:
        return json.dumps(
            {
                "timestamp": 1709283720000,
                "webhookEvent": "jira:issue_updated",
                "user": {"displayName": "Ann Lee", "accountId": "5b10a2844c20165700ede21g"},
                "issue": {
                    "key": "PROJ-3",
                    "self": "https://acme.atlassian.net/rest/api/2/issue/10003",
                    "fields": {"summary": "Export as CSV", "project": {"key": "PROJ"}},
                },
                "changelog": {
                    "id": history,
                    "items": [{"field": "status", "fromString": "To Do", "toString": to}],
                },
            }
        ).encode()

    async def deliver(body: bytes, *, secret: str = SECRET) -> httpx.Response:
        return await cloud.client.post(
            f"/webhook/{team.id}/jira",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Atlassian-Webhook-Identifier": str(uuid.uuid4()),
                "X-Hub-Signature": signed(body, secret),
            },
        )

    assert (await deliver(transition("Done", "10100"))).json()["triggered"] == []
    forged = await deliver(transition("In Progress", "10101"), secret="someone-elses-secret")
    assert forged.status_code == 401
    first = await deliver(transition("In Progress", "10101"))
    assert first.status_code == 202, first.text
    [job_id] = first.json()["triggered"]
    assert (await deliver(transition("In Progress", "10101"))).json()["triggered"] == []
    job = await team.job(job_id)
    assert job["params"]["jiraTicketId"] == "PROJ-3"
    assert job["triggerSource"] == "jira"
    assert job["origin"]["eventKey"] == "jira:PROJ-3:transition:10101"
    assert job["origin"]["url"] == "https://acme.atlassian.net/browse/PROJ-3"
    assert job["origin"]["author"] == "Ann Lee"
    assert [j["id"] for j in await team.jobs()] == [job_id]


async def test_a_comment_in_a_team_jobs_thread_goes_to_its_runner(cloud: Cloud) -> None:
    team = await team_with_secrets(cloud)
    await team.rules([LABEL_RULE])
    [job_id] = (await team.github("issues", labelled())).json()["triggered"]

    answer = await team.github(
        "issue_comment", commented("Use Postgres", author="alice", association="NONE")
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["routed"] is True and answer.json()["jobIds"] == [job_id]
    own = await team.github(
        "issue_comment", commented(f"Coro (job `{job_id}`) needs an answer to go on")
    )
    assert own.json()["routed"] is False
    [command] = await team.commands("event:pluginWebhook")
    assert command["job_id"] == job_id
    comment = command["frame"]["comment"]
    assert comment["pluginId"] == "github-issues"
    assert comment["thread"] == f"{REPO}#12"
    assert comment["author"] == "alice" and comment["body"] == "Use Postgres"
    assert comment["authorAssociation"] == "NONE"
    # another issue's comment goes nowhere
    elsewhere = commented("Use Postgres")
    elsewhere["issue"]["number"] = 13
    elsewhere["comment"]["issue_url"] = f"https://api.github.com/repos/{REPO}/issues/13"
    assert (await team.github("issue_comment", elsewhere)).json()["routed"] is False
