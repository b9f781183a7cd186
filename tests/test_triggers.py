"""Triggers in local mode: rules that start a job from a GitHub or Jira event, found by
the runner's poller, against the GitHub (issues and pull requests) and Jira fakes over
loopback HTTP, with a real runner and store.

Each test starts the runner (whose first cycle begins watching "now"), makes things
happen on the fakes as people would (a label, an assignment, a comment, a transition)
and runs the next cycle itself (`runner.triggers.poll_once()`; the background interval
is an hour), then looks at the jobs, their origin and the fakes' threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coro.config import CoroConfig, CoroHome
from coro.engine.triggers import TriggerFeed
from coro.plugins.trackers.adf import adf_to_text
from coro.system.git import GitWorkspace
from tests.conftest import Api, ApiFactory, write_workflow
from tests.fakes.github_issues_server import FakeGitHubIssues
from tests.fakes.github_server import FakeGitHub
from tests.fakes.jira_server import FakeJira

TOKEN = "ghp_TriggerTokenR8xQ2mZ7vK4pL9sT1wY6nB3c"
FORGE_TOKEN = "ghp_TriggerForgeTokenQ7w8e9r0t1y2u3i4o5"
REPO = "acme/api"
DASHBOARD = "https://coro.example.test"
ONE_PHASE = [{"name": "work", "agent": None, "status": "working"}]


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHubIssues]:
    async with FakeGitHubIssues(token=TOKEN) as fake:
        fake.add_repo(REPO)
        yield fake


@pytest.fixture
def workflow(home: CoroHome) -> str:
    return write_workflow(home, "triggered", ONE_PHASE)


def rule(rule_id: str, on: str, workflow: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "on": on,
        "plugin": "github-issues",
        "repos": [REPO],
        "workflowPath": workflow,
        **fields,
    }


def make_config(
    rules: list[dict[str, Any]],
    *,
    github: FakeGitHubIssues | None = None,
    jira: FakeJira | None = None,
    forge: FakeGitHub | None = None,
) -> CoroConfig:
    installed: dict[str, Any] = {}
    if github is not None:
        installed["github-issues"] = {"config": {"token": TOKEN, "baseUrl": github.base_url}}
    if jira is not None:
        installed["jira"] = {
            "config": {"baseUrl": jira.base_url, "email": jira.email, "apiToken": jira.api_token}
        }
    if forge is not None:
        installed["github"] = {
            "config": {"token": FORGE_TOKEN, "baseUrl": forge.base_url, "retryBackoffSeconds": 0}
        }
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "polling": {"intervalSeconds": 3600, "localChangeDelaySeconds": 3600},
            "notifications": {"dashboardUrl": DASHBOARD},
            "plugins": {"installed": installed},
            "triggers": {"pollIntervalSeconds": 3600, "rules": rules},
        }
    )


async def jobs(api: Api) -> list[dict[str, Any]]:
    response = await api.client.get("/jobs", params={"limit": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["jobs"])


async def cycle(api: Api) -> list[str]:
    """One poll of every watch now; the ids of the jobs it created."""
    return [done.job.id for done in await api.runner.triggers.poll_once() if done.created]


def run_link(job_id: str) -> str:
    return f"{DASHBOARD}/dashboard/#/runs/{job_id}"


# --- GitHub issues --------------------------------------------------------------------


async def test_a_labelled_issue_starts_one_job_with_the_issue_and_a_reply_links_to_it(
    api_factory: ApiFactory, github: FakeGitHubIssues, workflow: str
) -> None:
    github.add_issue(REPO, 12, "Fix the flaky login test", body="It fails one run in ten.")
    rules = [
        rule("label-coro", "issue.labeled", workflow, label="coro"),
        rule("mention", "comment.mentioned", workflow, handle="@coro"),
    ]
    async with api_factory(make_config(rules, github=github)) as api:
        assert await cycle(api) == []  # the watch starts now
        github.label(REPO, 12, "bug", by="alice")
        github.label(REPO, 12, "coro", by="alice")
        created = await cycle(api)
        assert len(created) == 1
        job_id = created[0]
        result = await api.finish(job_id)
        job = await api.job(job_id)
        assert await cycle(api) == []  # Coro's reply is a new comment: it starts nothing
        assert await cycle(api) == []  # nor does seeing the label again
        listed = await jobs(api)
    thread = github.issue(REPO, 12).comments
    assert result.done == "complete"
    assert [j["id"] for j in listed] == [job_id]
    assert job_id.startswith("api-12-t")
    assert job["params"]["description"] == "Fix the flaky login test\n\nIt fails one run in ten."
    assert job["params"]["repo"] == REPO
    assert job["params"]["ticket"]["key"] == f"{REPO}#12"
    assert job["triggerSource"] == "webhook"
    assert len(thread) == 1  # one reply, with the link to the run
    reply = thread[0]
    assert reply.author == github.login
    assert reply.body.startswith(f"Coro (job `{job_id}`)")
    assert run_link(job_id) in reply.body
    origin = job["origin"]
    assert origin["ruleId"] == "label-coro"
    assert origin["eventKey"] == "github:acme/api#12:labeled:coro:2024-03-01T09:02:00Z"
    assert origin["pluginId"] == "github-issues"
    assert origin["kind"] == "issue"
    assert origin["key"] == f"{REPO}#12"
    assert origin["url"] == "https://github.com/acme/api/issues/12"
    assert origin["author"] == "alice"
    assert origin["seenCommentId"] == str(reply.id)  # Coro's own comment counts as read


async def test_an_issue_assigned_to_the_configured_user_starts_one_job(
    api_factory: ApiFactory, github: FakeGitHubIssues, workflow: str
) -> None:
    github.add_issue(REPO, 3, "Add rate limiting", body="Per API key.")
    github.add_comment(REPO, 3, "Redis is available.", author="bob", association="MEMBER")
    rules = [rule("assigned", "issue.assigned", workflow, assignee="coro-bot", reply=False)]
    async with api_factory(make_config(rules, github=github)) as api:
        await cycle(api)
        github.assign(REPO, 3, "someone-else")
        github.assign(REPO, 3, "Coro-Bot", by="bob")
        created = await cycle(api)
        job = await api.job(created[0])
    assert len(created) == 1
    assert job["params"]["description"] == "Add rate limiting\n\nPer API key."
    assert job["origin"]["author"] == "bob"
    # no reply: the newest comment when the job started is the last one read
    assert job["origin"]["seenCommentId"] == str(github.issue(REPO, 3).comments[0].id)
    assert len(github.issue(REPO, 3).comments) == 1


async def test_a_new_rule_starts_nothing_for_what_happened_before_it(
    api_factory: ApiFactory, github: FakeGitHubIssues, workflow: str
) -> None:
    github.add_issue(REPO, 1, "Old one")
    github.add_issue(REPO, 2, "Older one")
    github.label(REPO, 1, "coro")
    github.label(REPO, 2, "bug")
    github.add_comment(REPO, 2, "@coro fix this", author="alice", association="OWNER")
    rules = [
        rule("label-coro", "issue.labeled", workflow, label="coro"),
        rule("mention", "comment.mentioned", workflow, handle="@coro"),
    ]
    async with api_factory(make_config(rules, github=github)) as api:
        assert await cycle(api) == []
        assert await cycle(api) == []
        github.label(REPO, 1, "later")  # the old issue changes: its old label is still old
        assert await cycle(api) == []
        # a rule added to a watched repository: what happened there before is not its
        bug = rule("label-bug", "issue.labeled", workflow, label="bug")
        response = await api.client.put("/config", json={"triggers": {"rules": [*rules, bug]}})
        assert response.status_code == 200, response.text
        assert await cycle(api) == []
        github.add_issue(REPO, 4, "New one")
        github.label(REPO, 4, "bug")
        created = await cycle(api)
        job = await api.job(created[0])
        assert len(await jobs(api)) == 1
    assert job["origin"]["ruleId"] == "label-bug"
    assert job["origin"]["key"] == f"{REPO}#4"


async def test_comments_by_people_who_may_not_start_jobs_start_nothing(
    api_factory: ApiFactory, github: FakeGitHubIssues, workflow: str
) -> None:
    github.add_issue(REPO, 5, "Docs")
    github.add_issue(REPO, 6, "Tests")
    rules = [
        rule("anyone-trusted", "comment.mentioned", workflow, handle="@coro"),
        {
            **rule("alice-only", "comment.mentioned", workflow, handle="@coro"),
            "repos": ["acme/web"],
        },
    ]
    rules[1]["permittedUsers"] = ["alice"]
    async with api_factory(make_config(rules, github=github)) as api:
        github.add_repo("acme/web")
        github.add_issue("acme/web", 1, "Site")
        await cycle(api)
        github.add_comment(REPO, 5, "@coro rewrite the docs", author="mallory")  # CONTRIBUTOR
        github.add_comment(REPO, 5, "@coro rewrite them", author="eve", association="NONE")
        github.add_comment(REPO, 5, "@coroutine is a word", author="bob", association="OWNER")
        github.add_comment(REPO, 5, "ping me@coro.dev", author="bob", association="OWNER")
        github.add_comment(
            REPO, 5, "Coro (job `x`) says @coro hello", author="bob", association="OWNER"
        )  # shaped as Coro's own comments are: never a trigger
        github.add_comment("acme/web", 1, "@coro build it", author="bob", association="OWNER")
        assert await cycle(api) == []
        github.add_comment(REPO, 6, "@coro: cover the parser", author="carol", association="MEMBER")
        github.add_comment("acme/web", 1, "@Coro build it", author="alice", association="NONE")
        created = sorted(await cycle(api))
        found = [await api.job(job_id) for job_id in created]
    assert len(found) == 2
    by_rule = {job["origin"]["ruleId"]: job for job in found}
    assert by_rule["anyone-trusted"]["params"]["description"] == "cover the parser"
    assert by_rule["anyone-trusted"]["origin"]["author"] == "carol"
    assert by_rule["alice-only"]["params"]["description"] == "build it"
    assert by_rule["alice-only"]["origin"]["author"] == "alice"


async def test_an_unchanged_repository_costs_only_304s(
    api_factory: ApiFactory, github: FakeGitHubIssues, workflow: str
) -> None:
    github.add_issue(REPO, 7, "Something")
    rules = [rule("label-coro", "issue.labeled", workflow, label="coro")]
    async with api_factory(make_config(rules, github=github)) as api:
        await cycle(api)
        await cycle(api)  # the first answers, with their ETags
        mark = github.mark()
        await cycle(api)
        quiet = github.since(mark)
        github.label(REPO, 7, "coro")
        mark = github.mark()
        created = await cycle(api)
        busy = github.since(mark)
    assert quiet and all(r.conditional and r.status == 304 for r in quiet)
    assert len(created) == 1
    assert any(r.status == 200 for r in busy)


async def test_a_failing_tracker_is_logged_once_per_streak_and_retried(
    api_factory: ApiFactory,
    github: FakeGitHubIssues,
    workflow: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    github.add_issue(REPO, 8, "Outage")
    rules = [rule("label-coro", "issue.labeled", workflow, label="coro")]
    async with api_factory(make_config(rules, github=github)) as api:
        await cycle(api)
        github.label(REPO, 8, "coro")  # while GitHub is down
        with caplog.at_level(logging.INFO, logger="coro.engine.triggers.poller"):
            for _ in range(3):
                github.fail_next(502)
                assert await cycle(api) == []
            created = await cycle(api)
        messages = [r.getMessage() for r in caplog.records]
    assert len(created) == 1
    failures = [m for m in messages if "github-issues:acme/api failed" in m]
    assert len(failures) == 1 and "502" in failures[0]
    assert any("github-issues:acme/api works again" in m for m in messages)


async def test_a_rate_limited_tracker_is_left_alone_until_its_wait_is_over(
    api_factory: ApiFactory, github: FakeGitHubIssues, workflow: str
) -> None:
    rules = [rule("label-coro", "issue.labeled", workflow, label="coro")]
    async with api_factory(make_config(rules, github=github)) as api:
        await cycle(api)
        github.rate_limit("secondary", reset_in=600)
        assert await cycle(api) == []
        github.rate_limit(None)
        mark = github.mark()
        assert await cycle(api) == []
        assert github.since(mark) == []  # not asked again before retry-after


# --- GitHub pull requests ---------------------------------------------------------------


async def test_a_mention_in_a_pull_request_starts_a_job_on_its_branch(
    api_factory: ApiFactory, github: FakeGitHubIssues, home: CoroHome, tmp_path: Path
) -> None:
    # one GitHub, two fakes: its issue endpoints (the feed) and its pulls and git (SCM)
    async with FakeGitHub(token=FORGE_TOKEN, git_root=tmp_path / "forge") as forge:
        forge.add_repo(REPO, collaborators=["alice"], files={"README.md": "# api\n"})
        assert forge.git is not None
        head = forge.git.commit(
            REPO, "feature-x", {"feature.txt": "on the branch\n"}, message="Feature", start="main"
        )
        pr = forge.open_pr(REPO, "feature-x", title="Add the feature", author="alice")
        github.add_issue(REPO, pr, "Add the feature", pull_request=True, head_branch="feature-x")
        script = {
            "work": [{"tool": "scm_clone_repo", "input": {"repo": REPO, "branch": "feature-x"}}]
        }
        workflow = write_workflow(home, "on-a-pr", ONE_PHASE)
        rules = [
            rule(
                "mention", "comment.mentioned", workflow, handle="@coro", params={"script": script}
            )
        ]
        async with api_factory(make_config(rules, github=github, forge=forge)) as api:
            await cycle(api)
            comment = github.add_comment(
                REPO,
                pr,
                "@coro please add a test for the feature",
                author="alice",
                association="MEMBER",
            )
            created = await cycle(api)
            result = await api.finish(created[0])
            job = await api.job(created[0])
            clone = api.runner.env.work_root / created[0] / "api"
            checked_out = await GitWorkspace(clone).current_branch()
            tip = await GitWorkspace(clone).resolve_commit("HEAD")
    assert len(created) == 1
    assert result.done == "complete"
    params = job["params"]
    assert params["description"] == "please add a test for the feature"
    assert params["repo"] == REPO and params["branch"] == "feature-x"
    assert params["baseBranch"] == "main" and params["gitProvider"] == "github"
    assert params["pullRequest"]["number"] == pr
    assert (checked_out, tip) == ("feature-x", head)  # the job works on the PR's branch
    assert (clone / "feature.txt").read_text() == "on the branch\n"
    origin = job["origin"]
    assert origin["kind"] == "pull_request" and origin["pluginId"] == "github"
    assert origin["key"] == f"{REPO}#{pr}"
    assert origin["eventKey"] == f"github:acme/api:comment:{comment.id}"
    replies = forge.pull(REPO, pr).issue_comments
    assert len(replies) == 1 and run_link(created[0]) in replies[0].body
    assert origin["seenCommentId"] == str(replies[0].id)


# --- Jira -------------------------------------------------------------------------------


async def test_a_jira_transition_to_the_configured_status_starts_one_job(
    api_factory: ApiFactory, workflow: str
) -> None:
    async with FakeJira() as jira:
        jira.add_issue("PROJ-7", "Fix login redirect", description=adf("Users loop on /login."))
        jira.add_issue("PROJ-8", "Something else")
        rules = [
            {
                "id": "in-progress",
                "on": "issue.transitioned",
                "plugin": "jira",
                "repos": ["PROJ"],
                "toStatus": "in progress",
                "workflowPath": workflow,
                "params": {"repo": REPO},
            }
        ]
        async with api_factory(make_config(rules, jira=jira)) as api:
            await cycle(api)
            jira.move("PROJ-8", "Done", by="Alice")
            jira.move("PROJ-7", "In Progress", by="Alice")
            created = await cycle(api)
            assert await cycle(api) == []
            job = await api.job(created[0])
        thread = jira.issues["PROJ-7"].comments
    assert len(created) == 1 and created[0].startswith("PROJ-7-t")
    assert job["triggerSource"] == "jira"
    assert job["params"]["jiraTicketId"] == "PROJ-7"
    assert job["params"]["ticket"]["key"] == "PROJ-7"
    assert job["params"]["description"] == "Fix login redirect\n\nUsers loop on /login."
    assert job["params"]["repo"] == REPO
    assert job["origin"]["eventKey"].startswith("jira:PROJ-7:transition:")
    assert job["origin"]["author"] == "Alice"
    assert len(thread) == 1 and run_link(created[0]) in adf_to_text(thread[0].body)
    assert job["origin"]["seenCommentId"] == thread[0].id


def adf(text: str) -> dict[str, Any]:
    paragraph = {"type": "paragraph", "content": [{"type": "text", "text": text}]}
    return {"type": "doc", "version": 1, "content": [paragraph]}


# --- one job per event ------------------------------------------------------------------


@pytest.mark.backends("sqlite", "postgres")
async def test_an_event_seen_again_after_a_restart_or_twice_at_once_starts_one_job(
    api_factory: ApiFactory, github: FakeGitHubIssues, workflow: str, state_url: str | None
) -> None:
    github.add_issue(REPO, 9, "Twice")
    github.add_issue(REPO, 10, "At once")
    rules = [rule("label-coro", "issue.labeled", workflow, label="coro")]
    config = make_config(rules, github=github)
    async with api_factory(config) as api:
        await cycle(api)
        github.label(REPO, 9, "coro")
        first = await cycle(api)
    async with api_factory(config) as api:  # a restart: no ETag, the label is read again
        again = await cycle(api)
        assert again == []
        # the same event offered twice at once (two deliveries, two runners)
        feed = api.runner.plugins.get("tracker", "github-issues")
        assert isinstance(feed, TriggerFeed)
        since = github.issue(REPO, 9).updated_at
        github.label(REPO, 10, "coro")
        page = await feed.feed_poll(REPO, since)
        event = next(e for e in page.events if e.key == f"{REPO}#10")
        target = api.runner.config.triggers.rules[0]
        launcher = api.runner.triggers.launcher
        both = await asyncio.gather(
            launcher.launch(target, event, feed), launcher.launch(target, event, feed)
        )
        assert await cycle(api) == []
        listed = await jobs(api)
    assert len(first) == 1
    assert sorted(done.created for done in both) == [False, True]
    assert both[0].job.id == both[1].job.id
    assert len(listed) == 2
    assert len(github.issue(REPO, 9).comments) == 1
    assert len(github.issue(REPO, 10).comments) == 1


# --- configuration ----------------------------------------------------------------------


async def test_rules_start_and_stop_the_poller_and_bad_rules_are_refused(
    api_factory: ApiFactory, github: FakeGitHubIssues, workflow: str
) -> None:
    async with api_factory(make_config([], github=github)) as api:
        assert not api.runner.triggers.is_polling  # nothing configured: no loop at all
        bad = await api.client.put(
            "/config",
            json={
                "triggers": {
                    "rules": [
                        {
                            "id": "a",
                            "on": "issue.labeled",
                            "plugin": "github-issues",
                            "repos": [REPO],
                        },
                        {
                            "id": "b",
                            "on": "issue.opened",
                            "plugin": "github-issues",
                            "repos": [REPO],
                        },
                        {
                            "id": "c",
                            "on": "comment.mentioned",
                            "plugin": "jira",
                            "repos": [],
                            "handle": "@c",
                        },
                        {
                            "id": "d",
                            "on": "comment.mentioned",
                            "plugin": "jira",
                            "repos": ["P"],
                            "handle": "coro",
                        },
                    ]
                }
            },
        )
        assert not api.runner.triggers.is_polling
        good = await api.client.put(
            "/config",
            json={
                "triggers": {"rules": [rule("label-coro", "issue.labeled", workflow, label="coro")]}
            },
        )
        polling = api.runner.triggers.is_polling
        # the new loop's first cycle starts watching the repository
        await github.wait_until(lambda: any(r.path == f"/repos/{REPO}" for r in github.requests))
    assert bad.status_code == 400
    issues = {issue["path"]: issue["message"] for issue in bad.json()["issues"]}
    assert "needs 'label'" in issues["triggers.rules.0"]
    assert "triggers.rules.1.on" in issues
    assert "triggers.rules.2.repos" in issues
    assert "triggers.rules.3.handle" in issues
    assert good.status_code == 200, good.text
    assert polling
