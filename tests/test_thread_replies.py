"""A job that came from an issue or a pull request asks its question there, and a reply
there by someone permitted resumes it (against the GitHub issues, GitHub and Jira fakes
over loopback, with real runners)."""

from __future__ import annotations

from typing import Any

from coro.config import CoroConfig
from coro.domain.models import QUEUED, Job, JobOrigin, iso_now, random_suffix
from coro.plugins.trackers.adf import adf_to_text
from tests.conftest import Api, ApiFactory, user_prompts, write_workflow
from tests.fakes.github_issues_server import FakeGitHubIssues
from tests.fakes.github_server import FakeGitHub
from tests.fakes.jira_server import FakeJira

ASK = [
    [{"tool": "await_event", "input": {"eventName": "developer-input: which database?"}}],
    [{"text": "using the answer"}, {"tool": "log", "input": {"message": "next step ran"}}],
]
#: the rules of these jobs (started by a comment mentioning @coro; none here does)
MENTIONS = {"on": "comment.mentioned", "handle": "@coro"}
CHECKPOINTED: list[dict[str, Any]] = [
    {"name": "plan", "agent": None, "interactive_checkpoint": True},
    {"name": "build", "agent": None},
]


def config(
    plugins: dict[str, Any], rule: dict[str, Any], *, poll_seconds: float = 3600
) -> CoroConfig:
    """The runner's config: one trigger rule; the tests poll the threads themselves."""
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "plugins": {"installed": {k: {"config": v} for k, v in plugins.items()}},
            "triggers": {"pollIntervalSeconds": poll_seconds, "rules": [rule]},
        }
    )


def issues_config(fake: FakeGitHubIssues, **rule: Any) -> CoroConfig:
    return config(
        {"github-issues": {"token": fake.token, "baseUrl": fake.base_url}},
        {"id": "gh", **MENTIONS, "plugin": "github-issues", "repos": ["acme/api"], **rule},
    )


async def start_job(
    api: Api,
    workflow: str,
    script: dict[str, Any],
    origin: dict[str, Any],
    *,
    interactive: bool = False,
) -> str:
    """A job with an origin, as a trigger makes it (written with its origin, then run)."""
    runner = api.runner
    loaded = runner.env.layers.load_workflow(workflow)
    now = iso_now()
    job = Job(
        id=f"thread-job-{random_suffix(6)}",
        workflow_path=loaded.path,
        params={"script": script, "interactive": interactive},
        trigger_source="cli",
        status=QUEUED,
        phase=loaded.initial_phase_for("cli"),
        workflow_phases=loaded.phase_summaries(),
        interactive=interactive,
        origin=JobOrigin.model_validate({"eventKey": f"event-{random_suffix(6)}", **origin}),
        created_at=now,
        updated_at=now,
    )
    await runner.store.create(job)
    runner.dispatcher.submit(job.id)
    return job.id


def questions(bodies: list[str], job_id: str) -> list[str]:
    return [b for b in bodies if b.startswith(f"Coro (job `{job_id}`)")]


async def test_a_question_is_asked_on_the_issue_once_and_a_permitted_reply_resumes_the_job(
    api_factory: ApiFactory,
) -> None:
    async with FakeGitHubIssues() as github:
        issue = github.add_issue("acme/api", 7, "Add rate limiting")
        origin = {"ruleId": "gh", "pluginId": "github-issues", "kind": "issue"}
        origin |= {"key": "acme/api#7", "author": "ada"}
        async with api_factory(issues_config(github)) as api:
            workflow = write_workflow(api.home, "ask", [{"name": "work", "agent": None}])
            job_id = await start_job(api, workflow, {"work": ASK}, origin)
            await api.wait_for_line(job_id, "[thread] Question posted on acme/api#7")
            (question,) = questions([c.body for c in issue.comments], job_id)
            assert "> which database?" in question
            assert f"/dashboard/#/runs/{job_id}" in question
            # Someone who may not answer (not the author, not a maintainer): nothing moves.
            github.add_comment("acme/api", 7, "use mongo", author="mallory", association="NONE")
            await api.runner.thread_replies.poll_once()
            job = await api.job(job_id)
            assert job["status"] == "awaiting-developer-input"
            assert job["origin"]["seenCommentId"] == str(issue.comments[-1].id)
            # The issue's author answers.
            github.add_comment("acme/api", 7, "Use Postgres", author="ada", association="NONE")
            await api.runner.thread_replies.poll_once()
            result = await api.finish(job_id)
            job = await api.job(job_id)
    assert result.done == "complete"
    texts = result.texts()
    assert any("Ignored comment" in t and "mallory" in t for t in texts)
    assert any(t.startswith("[thread] Answer from ada on acme/api#7") for t in texts)
    assert "[human] Use Postgres" in texts
    assert "next step ran" in texts
    last_prompt = user_prompts(job)[-1]
    assert "> Use Postgres" in last_prompt and "use mongo" not in last_prompt
    assert len(questions([c.body for c in issue.comments], job_id)) == 1


async def test_the_question_is_not_asked_again_after_a_restart_and_the_answer_still_counts(
    api_factory: ApiFactory,
) -> None:
    async with FakeGitHubIssues() as github:
        issue = github.add_issue("acme/api", 8, "Flaky test")
        origin = {"ruleId": "gh", "pluginId": "github-issues", "kind": "issue"}
        origin |= {"key": "acme/api#8", "author": "ada"}
        async with api_factory(issues_config(github)) as api:
            workflow = write_workflow(api.home, "ask", [{"name": "work", "agent": None}])
            job_id = await start_job(api, workflow, {"work": ASK}, origin)
            await api.wait_for_line(job_id, "[thread] Question posted")
        async with api_factory(issues_config(github)) as api:
            await api.runner.thread_replies.poll_once()  # what the restart watches, tended
            assert len(questions([c.body for c in issue.comments], job_id)) == 1
            # A maintainer (by GitHub's author association) may answer too.
            github.add_comment("acme/api", 8, "Retry it", author="bob", association="MEMBER")
            await api.runner.thread_replies.poll_once()
            result = await api.finish(job_id)
    assert result.done == "complete"
    assert "[human] Retry it" in result.texts()
    assert len(questions([c.body for c in issue.comments], job_id)) == 1


async def test_a_question_that_could_not_be_posted_is_posted_at_the_next_poll(
    api_factory: ApiFactory,
) -> None:
    async with FakeGitHubIssues() as github:
        issue = github.add_issue("acme/api", 11, "Slow pages")
        github.respond_once("POST", "/repos/acme/api/issues/11/comments", 502, {"message": "Bad"})
        origin = {"ruleId": "gh", "pluginId": "github-issues", "kind": "issue"}
        origin |= {"key": "acme/api#11", "author": "ada"}
        async with api_factory(issues_config(github)) as api:
            workflow = write_workflow(api.home, "ask", [{"name": "work", "agent": None}])
            job_id = await start_job(api, workflow, {"work": ASK}, origin)
            failed = await api.wait_for_line(job_id, "[thread] Cannot reach acme/api#11")
            assert (await api.job(job_id))["origin"]["askedAt"] is None
            assert issue.comments == []
            await api.runner.thread_replies.poll_once()
            await api.follow(
                job_id,
                until=lambda line: "[thread] Question posted" in line,
                headers={"Last-Event-ID": str(failed.ids[-1])},
            )
    assert len(questions([c.body for c in issue.comments], job_id)) == 1
    assert "HTTP 502" in failed.texts()[-1]


async def test_coros_own_comments_are_never_answers_even_from_a_permitted_account(
    api_factory: ApiFactory,
) -> None:
    async with FakeGitHubIssues() as github:
        issue = github.add_issue("acme/api", 9, "Docs")
        origin = {"ruleId": "gh", "pluginId": "github-issues", "kind": "issue"}
        origin |= {"key": "acme/api#9", "author": "ada"}
        # The token's account (coro-bot) is permitted: a developer's own token, say.
        cfg = issues_config(github, permittedUsers=["coro-bot", "ada"])
        async with api_factory(cfg) as api:
            workflow = write_workflow(api.home, "ask", [{"name": "work", "agent": None}])
            job_id = await start_job(api, workflow, {"work": ASK}, origin)
            await api.wait_for_line(job_id, "[thread] Question posted")
            tracker = api.runner.plugins.get("tracker", "github-issues")
            assert tracker is not None
            await tracker.comment("acme/api#9", "Coro (job `other-job`) started: a run link")
            await api.runner.thread_replies.poll_once()
            job = await api.job(job_id)
            assert job["status"] == "awaiting-developer-input"
            assert job["origin"]["seenCommentId"] == str(issue.comments[-1].id)
            github.add_comment("acme/api", 9, "Write it in English", author="ada")
            await api.runner.thread_replies.poll_once()
            result = await api.finish(job_id)
    assert result.done == "complete"
    assert "[human] Write it in English" in result.texts()
    assert not any("[human] Coro" in t for t in result.texts())


async def test_a_comment_forwarded_from_a_webhook_answers_under_the_same_rules(
    api_factory: ApiFactory,
) -> None:
    async with FakeGitHubIssues() as github:
        github.add_issue("acme/api", 12, "Cache")
        origin = {"ruleId": "gh", "pluginId": "github-issues", "kind": "issue"}
        origin |= {"key": "acme/api#12", "author": "ada"}
        async with api_factory(issues_config(github)) as api:
            workflow = write_workflow(api.home, "ask", [{"name": "work", "agent": None}])
            job_id = await start_job(api, workflow, {"work": ASK}, origin)
            await api.wait_for_line(job_id, "[thread] Question posted")
            seen = int((await api.job(job_id))["origin"]["seenCommentId"])
            replies = api.runner.thread_replies

            async def forward(comment_id: int, author: str, body: str, thread: str) -> str:
                return await replies.receive_comment(
                    plugin_id="github-issues",
                    thread=thread,
                    comment_id=str(comment_id),
                    author=author,
                    body=body,
                    author_association="NONE",
                )

            assert await forward(seen + 1, "ada", "Use Redis", "acme/api#99") == "no-question"
            assert await forward(seen, "ada", "the question itself", "acme/api#12") == "ignored"
            assert await forward(seen + 1, "mallory", "Use Mongo", "ACME/api#12") == "ignored"
            assert (await api.job(job_id))["status"] == "awaiting-developer-input"
            assert await forward(seen + 2, "ada", "Use Redis", "acme/api#12") == "resumed"
            result = await api.finish(job_id)
    assert result.done == "complete"
    texts = result.texts()
    assert "[human] Use Redis" in texts
    assert not any("Mongo" in t for t in texts if t.startswith("[human]"))


async def test_a_rule_that_does_not_reply_leaves_the_thread_alone(
    api_factory: ApiFactory,
) -> None:
    async with FakeGitHubIssues() as github:
        issue = github.add_issue("acme/api", 10, "Quiet")
        origin = {"ruleId": "gh", "pluginId": "github-issues", "kind": "issue"}
        origin |= {"key": "acme/api#10", "author": "ada"}
        async with api_factory(issues_config(github, reply=False)) as api:
            workflow = write_workflow(api.home, "ask", [{"name": "work", "agent": None}])
            job_id = await start_job(api, workflow, {"work": ASK}, origin)
            await api.wait_for_line(job_id, "Job parked")
            github.add_comment("acme/api", 10, "Use Postgres", author="ada")
            await api.runner.thread_replies.poll_once()
            job = await api.job(job_id)
    assert job["status"] == "awaiting-developer-input"
    assert job["origin"]["askedAt"] is None
    assert [c.author for c in issue.comments] == ["ada"]


async def test_a_pull_request_job_asks_for_approval_on_the_pr_and_lgtm_approves(
    api_factory: ApiFactory,
) -> None:
    async with FakeGitHub() as github:
        github.add_repo("acme/svc", collaborators=["carol"])
        number = github.open_pr("acme/svc", "feature", author="dave")
        pull = github.pull("acme/svc", number)
        cfg = config(
            {"github": {"token": github.token, "baseUrl": github.base_url}},
            {"id": "pr", **MENTIONS, "plugin": "github-issues", "repos": ["acme/svc"]},
        )
        origin = {"ruleId": "pr", "pluginId": "github", "kind": "pull_request"}
        origin |= {"key": f"acme/svc#{number}", "author": "dave"}
        async with api_factory(cfg) as api:
            workflow = write_workflow(api.home, "checkpointed", CHECKPOINTED)
            script = {"plan": [{"text": "a plan"}], "build": [{"text": "building"}]}
            job_id = await start_job(api, workflow, script, origin, interactive=True)
            await api.wait_for_line(job_id, f"[thread] Question posted on acme/svc#{number}")
            (question,) = questions([c.body for c in pull.issue_comments], job_id)
            assert "approval of phase **plan**, then **build**" in question
            github.comment("acme/svc", number, "mallory", "lgtm")  # not a collaborator
            await api.runner.thread_replies.poll_once()
            assert (await api.job(job_id))["status"] == "awaiting-developer-input"
            github.comment("acme/svc", number, "carol", "LGTM!")  # a collaborator
            await api.runner.thread_replies.poll_once()
            result = await api.finish(job_id)
    assert result.done == "complete"
    texts = result.texts()
    assert any("Ignored comment" in t and "mallory" in t for t in texts)
    assert "[approval] Phase plan approved — advancing to build" in texts
    assert "building" in texts


async def test_a_jira_issue_job_asks_again_after_a_reply_that_requests_changes(
    api_factory: ApiFactory,
) -> None:
    async with FakeJira() as jira:
        issue = jira.add_issue("PROJ-12", "Export as CSV")
        cfg = config(
            {"jira": {"baseUrl": jira.base_url, "email": jira.email, "apiToken": jira.api_token}},
            {"id": "jira", **MENTIONS, "plugin": "jira", "repos": ["PROJ"]},
        )
        origin = {"ruleId": "jira", "pluginId": "jira", "kind": "issue"}
        origin |= {"key": "PROJ-12", "author": "Ada Lovelace"}
        async with api_factory(cfg) as api:
            workflow = write_workflow(api.home, "checkpointed", CHECKPOINTED)
            script = {
                "plan": [[{"text": "plan v1"}], [{"text": "plan v2"}]],
                "build": [{"text": "building"}],
            }
            job_id = await start_job(api, workflow, script, origin, interactive=True)
            first = await api.wait_for_line(job_id, "[thread] Question posted on PROJ-12")
            # Only the issue's author may answer on Jira (no rule list, no association).
            jira.add_comment("PROJ-12", "approve", author="Someone Else")
            jira.add_comment("PROJ-12", "Smaller steps, please", author="Ada Lovelace")
            await api.runner.thread_replies.poll_once()
            await api.follow(
                job_id,
                until=lambda line: "[thread] Question posted" in line,
                headers={"Last-Event-ID": str(first.ids[-1])},
            )
            bodies = [adf_to_text(c.body) for c in issue.comments]
            assert len(questions(bodies, job_id)) == 2  # one per park
            jira.add_comment("PROJ-12", "approve", author="Ada Lovelace")
            await api.runner.thread_replies.poll_once()
            result = await api.finish(job_id)
    assert result.done == "complete"
    texts = result.texts()
    assert any("Ignored comment" in t and "Someone Else" in t for t in texts)
    assert "[human] Smaller steps, please" in texts
    assert texts.index("[human] Smaller steps, please") < texts.index("plan v2")
    assert "[approval] Phase plan approved — advancing to build" in texts
