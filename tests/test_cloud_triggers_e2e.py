"""Team triggers end to end. First as a team runs it: a `coro cloud` process, a runner
paired with `coro login --token` and started with `coro start` (hybrid), and the GitHub
issues fake as the provider (its API for the runner; its events sent as GitHub would,
signed, to the cloud's webhook URL). A labelled issue's delivery starts the team's job
on the runner, which replies on the issue with the link to the run, once; the job's
question appears on the issue; the issue's author answers there, the answer's
`issue_comment` delivery reaches the runner through the cloud and the job goes on.

Then a pull request's conversation, with the cloud and a hybrid runner in this process
(as `tests/test_cloud_webhooks_e2e.py`) and the GitHub fake as the forge: an `@coro`
comment starts a job on the PR's branch (which the runner reads: the delivery does not
carry it), answered in the PR, whose thread the runner leaves unread while the team's
GitHub webhooks reach it. Waits are on streams and output, never on a clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import URL

from coro.api.server import free_port
from coro.config import CoroConfig, CoroHome
from tests.cloud_helpers import WAIT_LIMIT, Cloud
from tests.conftest import ApiFactory, write_workflow
from tests.fakes.github_issues_server import FakeComment, FakeGitHubIssues, FakeIssue
from tests.fakes.github_server import FakeGitHub
from tests.hybrid_helpers import FAST, pair, wait_state
from tests.test_cloud_e2e import (
    Child,
    Team,
    child_env,
    cloud_client,
    make_team,
    read_stream,
    start_cloud,
)

pytest_plugins = ("tests.cloud_fixtures",)

pytestmark = pytest.mark.timeout(300)

TOKEN = "ghp_TeamTriggerTokenR8xQ2mZ7vK4pL9sT1wY6"
REPO = "acme/api"
SECRET = "the team's github webhook secret"
DASHBOARD = "https://coro.example.test"
ASK = {
    "work": [
        [{"tool": "await_event", "input": {"eventName": "developer-input: which database?"}}],
        [{"text": "using the answer"}, {"tool": "log", "input": {"message": "next step ran"}}],
    ]
}


def issue_json(issue: FakeIssue) -> dict[str, Any]:
    return {
        "number": issue.number,
        "title": issue.title,
        "body": issue.body,
        "state": issue.state,
        "html_url": f"https://github.com/{REPO}/issues/{issue.number}",
        "updated_at": issue.updated_at,
        "user": {"login": issue.author},
    }


def labelled(issue: FakeIssue, label: str, by: str) -> dict[str, Any]:
    return {
        "action": "labeled",
        "issue": issue_json(issue),
        "label": {"name": label},
        "sender": {"login": by},
        "repository": {"full_name": REPO},
    }


def commented(issue: FakeIssue, comment: FakeComment) -> dict[str, Any]:
    return {
        "action": "created",
        "issue": issue_json(issue),
        "comment": {
            "id": comment.id,
            "body": comment.body,
            "user": {"login": comment.author},
            "author_association": comment.association,
            "created_at": comment.created_at,
            "issue_url": f"https://api.github.com/repos/{REPO}/issues/{issue.number}",
            "html_url": f"https://github.com/{REPO}/issues/{issue.number}"
            f"#issuecomment-{comment.id}",
        },
        "sender": {"login": comment.author},
        "repository": {"full_name": REPO},
    }


async def deliver(
    cloud_url: str, team: Team, event: str, payload: dict[str, Any], delivery: str | None = None
) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with httpx.AsyncClient(base_url=cloud_url, timeout=WAIT_LIMIT) as github:
        response = await github.post(
            f"/webhook/{team.id}/github",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                "X-Hub-Signature-256": signature,
            },
        )
    assert response.status_code == 202, response.text
    receipt: dict[str, Any] = response.json()
    return receipt


async def hybrid_runner(
    tmp_path: Path, cloud_url: str, team: Team, fake: FakeGitHubIssues
) -> Child:
    """`coro login --token` then `coro start`, on a home whose config reaches the fake."""
    home = CoroHome(tmp_path / "runner-home")
    home.ensure()
    config = {
        "llm": {"defaultProvider": "script"},
        "notifications": {"dashboardUrl": DASHBOARD},
        "plugins": {
            "installed": {"github-issues": {"config": {"token": TOKEN, "baseUrl": fake.base_url}}}
        },
        # the threads are not read in the test's time: answers come as webhooks
        "triggers": {"pollIntervalSeconds": 3600},
    }
    home.config_file.write_text(json.dumps(config))
    write_workflow(home, "asks", [{"name": "work", "agent": None}])
    env = child_env(CORO_HOME=str(home.root), CORO_NO_OPEN="1")
    login = await Child.spawn(
        "login", "login", "--cloud-url", cloud_url, "--token", team.token, env=env
    )
    assert await login.exited() == 0, login.output
    runner = await Child.spawn("runner", "start", "--port", str(free_port()), "--no-open", env=env)
    await runner.wait_line("Cloud: connected")
    return runner


async def test_a_labelled_issue_runs_on_the_hybrid_runner_and_an_answer_there_resumes_it(
    cloud_db_url: URL, tmp_path: Path
) -> None:
    cloud = await start_cloud(cloud_db_url, free_port())
    runner: Child | None = None
    async with FakeGitHubIssues(token=TOKEN) as github:
        issue = github.add_issue(REPO, 12, "Add rate limiting", body="Per API key.")
        try:
            cloud_url = (await cloud.wait_line("listening on ")).rsplit(" ", 1)[1]
            team = await make_team(cloud_url)
            async with cloud_client(cloud_url, team) as via_cloud:
                secret = await via_cloud.put(
                    f"/teams/{team.id}/webhooks/github", json={"secret": SECRET}
                )
                assert secret.status_code == 201, secret.text
                rule = {
                    "id": "label-coro",
                    "on": "issue.labeled",
                    "plugin": "github-issues",
                    "repos": [REPO],
                    "label": "coro",
                    "workflowPath": "workflows/asks/workflow.md",
                    "params": {"script": ASK},
                }
                rules = await via_cloud.put(f"/teams/{team.id}/triggers", json={"rules": [rule]})
                assert rules.status_code == 200, rules.text
                runner = await hybrid_runner(tmp_path, cloud_url, team, github)

                github.label(REPO, 12, "coro", by="ada")
                receipt = await deliver(cloud_url, team, "issues", labelled(issue, "coro", "ada"))
                [job_id] = receipt["triggered"]
                again = await deliver(cloud_url, team, "issues", labelled(issue, "coro", "ada"))
                assert again["triggered"] == []  # the same event, another delivery id
                stream = f"/teams/{team.id}/jobs/{job_id}/stream"
                asked = await read_stream(via_cloud, stream, until="[thread] Question posted")
                assert any("[trigger] Replied on acme/api#12" in line for line in asked.lines)
                mine = [c for c in issue.comments if c.body.startswith(f"Coro (job `{job_id}`)")]
                reply, question = mine
                assert reply.body.endswith(f"{DASHBOARD}/dashboard/#/runs/{job_id}")
                assert "> which database?" in question.body

                # Coro's own question comes back as a delivery too: it answers nothing
                echo = await deliver(cloud_url, team, "issue_comment", commented(issue, question))
                assert echo["routed"] is False
                answer = github.add_comment(
                    REPO, 12, "Use Postgres", author="ada", association="NONE"
                )
                routed = await deliver(cloud_url, team, "issue_comment", commented(issue, answer))
                assert routed["jobIds"] == [job_id]
                rest = await read_stream(via_cloud, stream, after=asked.ids[-1])
                job = (await via_cloud.get(f"/teams/{team.id}/jobs/{job_id}")).json()
        finally:
            if runner is not None:
                await runner.stop()
            await cloud.stop()
    assert rest.done == "complete", rest.lines
    assert job["params"]["description"] == "Add rate limiting\n\nPer API key."
    assert job["origin"]["key"] == f"{REPO}#12" and job["origin"]["repliedAt"] is not None
    texts = [line.split(" ", 1)[1] for line in rest.lines]
    assert "[thread] Answer from ada on acme/api#12 (" + str(answer.id) + ")" in texts
    assert "[human] Use Postgres" in texts
    assert "next step ran" in texts
    replies = [c for c in issue.comments if "started a run for this issue" in c.body]
    assert len(replies) == 1
    assert TOKEN not in runner.output and SECRET not in cloud.output


# --- a pull request's conversation, on a runner in this process ------------------------

FORGE_TOKEN = "ghp_TeamTriggerForgeQ7w8e9r0t1y2u3i4o5p6"


def pr_comment(number: int, comment_id: int, author: str, body: str) -> dict[str, Any]:
    """GitHub's `issue_comment` delivery for a comment in a pull request's conversation
    (it names the pull request, not its branches)."""
    page = f"https://github.com/{REPO}/pull/{number}"
    return {
        "action": "created",
        "issue": {
            "number": number,
            "title": "Cache the lookups",
            "body": "",
            "state": "open",
            "html_url": page,
            "pull_request": {"html_url": page, "merged_at": None},
        },
        "comment": {
            "id": comment_id,
            "body": body,
            "user": {"login": author},
            "author_association": "COLLABORATOR",
            "created_at": "2026-12-01T09:00:00Z",
            "issue_url": f"https://api.github.com/repos/{REPO}/issues/{number}",
            "html_url": f"{page}#issuecomment-{comment_id}",
        },
        "repository": {"full_name": REPO},
    }


async def test_an_at_coro_pr_comment_runs_on_the_pr_branch_and_is_answered_in_the_pr(
    cloud: Cloud, api_factory: ApiFactory
) -> None:
    paired = await pair(cloud)
    team = Team(paired.team_id, paired.admin.headers, paired.token)
    async with FakeGitHub(token=FORGE_TOKEN) as forge:
        forge.add_repo(REPO, branches=("main", "cache-lookups"), collaborators=["bob"])
        number = forge.open_pr(REPO, "cache-lookups", title="Cache the lookups")
        put = await cloud.client.put(
            f"/teams/{team.id}/webhooks/github", json={"secret": SECRET}, headers=team.headers
        )
        assert put.status_code == 201, put.text
        rule = {
            "id": "mention",
            "on": "comment.mentioned",
            "plugin": "github-issues",
            "repos": [REPO],
            "handle": "@coro",
            "workflowPath": "workflows/asks/workflow.md",
            "params": {"script": ASK},
        }
        rules = await cloud.client.put(
            f"/teams/{team.id}/triggers", json={"rules": [rule]}, headers=team.headers
        )
        assert rules.status_code == 200, rules.text
        config = CoroConfig.model_validate(
            {
                "llm": {"defaultProvider": "script"},
                "cloud": {"url": cloud.served.url, "token": paired.token},
                "notifications": {"dashboardUrl": DASHBOARD},
                "plugins": {
                    "installed": {
                        "github": {"config": {"token": FORGE_TOKEN, "baseUrl": forge.base_url}}
                    }
                },
                "triggers": {"pollIntervalSeconds": 3600},
            }
        )
        async with api_factory(config, link_timings=FAST) as api:
            link = api.runner.link
            assert link is not None
            write_workflow(api.home, "asks", [{"name": "work", "agent": None}])
            await wait_state(link, "connected")
            async with asyncio.timeout(WAIT_LIMIT):
                await link.wait_until(lambda: "github" in link.webhook_plugins)

            asked_for = forge.comment(REPO, number, "bob", "@coro cache the lookups too")
            receipt = await deliver(
                cloud.served.url,
                team,
                "issue_comment",
                pr_comment(number, asked_for, "bob", "@coro cache the lookups too"),
            )
            [job_id] = receipt["triggered"]
            stream = f"/teams/{team.id}/jobs/{job_id}/stream"
            async with httpx.AsyncClient(
                base_url=cloud.served.url, headers=team.headers, timeout=WAIT_LIMIT
            ) as via_cloud:
                await read_stream(via_cloud, stream, until="[thread] Question posted")
            job = await api.job(job_id)
            assert job["params"]["branch"] == "cache-lookups"  # read from the forge
            assert job["params"]["baseBranch"] == "main"
            assert job["params"]["description"] == "cache the lookups too"
            assert job["origin"]["pluginId"] == "github" and job["origin"]["kind"] == "pull_request"
            conversation = forge.pull(REPO, number).issue_comments
            reply, question = [c for c in conversation if c.user == forge.login]
            assert "started a run for this pull request" in reply.body
            assert reply.body.endswith(f"{DASHBOARD}/dashboard/#/runs/{job_id}")
            assert "> which database?" in question.body

            # while the team's GitHub webhooks reach the runner, the thread is not read
            mark = forge.mark()
            await api.runner.thread_replies.poll_once()
            assert forge.since(mark) == []

            answer = forge.comment(REPO, number, "bob", "SQLite is enough")
            routed = await deliver(
                cloud.served.url,
                team,
                "issue_comment",
                pr_comment(number, answer, "bob", "SQLite is enough"),
            )
            assert routed["jobIds"] == [job_id] and routed["triggered"] == []
            result = await api.finish(job_id)
    assert result.done == "complete", result.lines
    texts = result.texts()
    assert f"[thread] Answer from bob on {REPO}#{number} ({answer})" in texts
    assert "[human] SQLite is enough" in texts
