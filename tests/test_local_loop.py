"""The whole loop offline: a `job` on the `local` SCM clones a real repository, opens a
PR and parks; `coro pr approve` and a comment wake it through the poller with one
batched prompt; the agent answers, merges, and the bare repository's main has the change.

Run once with the `script` executor and once with the fake Anthropic server.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from coro.config import CoroConfig
from coro.plugins.scm.local import LocalScm
from tests.conftest import Api, ApiFactory, user_prompts, write_workflow
from tests.fakes.anthropic_server import FakeAnthropic, ToolUse, text, tools
from tests.test_cli import cli

JOB = "workflows/job/workflow.md"
REVIEW_REMARK = "Please give greet() a docstring."
GREETING = 'def greet(name):\n    return f"Hello, {name}!"\n'
DOCUMENTED = 'def greet(name):\n    """Greet someone."""\n    return f"Hello, {name}!"\n'
KEY = "sk-ant-loop-" + "k" * 40

#: The poller runs only when the test says so: approve and comment land in one cycle.
MANUAL_POLLING = {"intervalSeconds": 3600, "localChangeDelaySeconds": 3600}


def local_scm(api: Api) -> LocalScm:
    local = api.runner.plugins.get("scm", "local")
    assert isinstance(local, LocalScm)
    return local


async def shop_repo(api: Api, tmp_path: Path) -> Path:
    source = tmp_path / "shop-src"
    source.mkdir()
    (source / "README.md").write_text("# Shop\n")
    local = local_scm(api)
    await local.create_repo("shop", from_dir=source)
    return local.repo_path("shop")


def show(bare: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "--git-dir", str(bare), "show", *args], capture_output=True, text=True, check=True
    )
    return result.stdout


def step(tool_name: str, /, **tool_input: Any) -> dict[str, Any]:
    return {"tool": tool_name, "input": tool_input}


LOOP_SCRIPT: dict[str, Any] = {
    "spec-writing": [
        step("post_artifact", kind="spec", title="Spec", data={"markdown": "greet(name)"}),
    ],
    "planning": [step("set_work_items", workItems=["add-greeting"])],
    "coding": [
        [
            step("update_work_item", name="add-greeting", status="in-progress"),
            step("scm_clone_repo", repo="shop"),
            step("file_write", path="shop/greeting.py", content=GREETING),
            step("scm_create_pr", title="Add greet()", body="Adds a greeting."),
            step("await_event", eventName="pr:review", prId=1),
        ],
        [
            step("scm_list_pr_comments", prId=1),
            step("file_write", path="shop/greeting.py", content=DOCUMENTED),
            step("scm_push", message="Document greet()"),
            step("scm_post_pr_comment", prId=1, body="Done: docstring added.", inReplyTo="1"),
            step("scm_merge_pr", prId=1),
            step("update_work_item", name="add-greeting", status="complete"),
        ],
    ],
}


async def review_and_poll(api: Api, job_id: str) -> None:
    """Act as the reviewer with the CLI, then let the poller run one cycle."""
    await api.wait_for_line(job_id, "Job parked — waiting for: pr:review")
    assert (await api.job(job_id))["status"] == "awaiting-pr-merge"
    approved = await cli(api, "pr", "approve", "1", "--as", "alice")
    commented = await cli(api, "pr", "comment", "1", REVIEW_REMARK, "--as", "alice")
    assert approved.exit_code == 0, approved.output
    assert commented.exit_code == 0, commented.output
    events = await api.runner.transport.poll_once()  # type: ignore[attr-defined]
    assert [e.event_key for e in events] == [
        "pullrequest:approved",
        "pullrequest:comment_created",
    ]


async def assert_merged_and_batched(api: Api, job_id: str, bare: Path) -> dict[str, Any]:
    result = await api.finish(job_id)
    assert result.done == "complete", result.texts()[-5:]
    assert "[event] Received 2 events: pullrequest:approved, pullrequest:comment_created" in (
        result.texts()
    )
    job = await api.job(job_id)
    assert show(bare, "main:greeting.py") == DOCUMENTED
    assert "Merge" in show(bare, "--no-patch", "main")
    mapping = job["prMappings"][0]
    assert mapping["prId"] == 1 and mapping["repoSlug"] == "shop" and mapping["pluginId"] == "local"
    assert mapping["workItem"] == "add-greeting"
    assert mapping["mergedAt"] is not None
    assert job["externalRefs"][0]["externalId"] == "1"
    pr = await local_scm(api).get_pr(1)
    assert pr["state"] == "merged"
    assert [c["body"] for c in pr["comments"]] == [REVIEW_REMARK, "Done: docstring added."]
    return job


async def test_a_scripted_job_runs_the_whole_local_loop(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    config = CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "polling": MANUAL_POLLING}
    )
    async with api_factory(config) as api:
        bare = await shop_repo(api, tmp_path)
        job_id = await api.create(JOB, LOOP_SCRIPT, repo="shop", description="Add greet()")
        await review_and_poll(api, job_id)
        job = await assert_merged_and_batched(api, job_id, bare)
    batched = [p for p in user_prompts(job) if "[EVENTS: 2 received since you parked]" in p]
    assert len(batched) == 1
    assert "Approvals: 1" in batched[0]
    assert REVIEW_REMARK in batched[0]
    assert show(bare, "--no-patch", "--format=%s", "main^2").strip() == "Document greet()"


async def test_an_llm_job_runs_the_whole_local_loop(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    async with FakeAnthropic(api_key=KEY) as fake:
        config = CoroConfig.model_validate(
            {
                "llm": {"defaultProvider": "anthropic"},
                "polling": MANUAL_POLLING,
                "plugins": {
                    "installed": {
                        "anthropic": {
                            "config": {
                                "apiKey": KEY,
                                "baseUrl": fake.base_url,
                                "retryBackoffSeconds": 0,
                            }
                        }
                    }
                },
            }
        )
        fake.queue(
            text("Spec: add greet(name) to the shop repository."),  # spec-writing
            tools(ToolUse("set_work_items", {"workItems": ["add-greeting"]})),  # planning
            text("Planned one work item."),
            tools(  # coding, first visit
                ToolUse("update_work_item", {"name": "add-greeting", "status": "in-progress"}),
                ToolUse("scm_clone_repo", {"repo": "shop"}),
            ),
            tools(ToolUse("file_write", {"path": "shop/greeting.py", "content": GREETING})),
            tools(ToolUse("scm_create_pr", {"title": "Add greet()", "body": "Adds it."})),
            tools(ToolUse("await_event", {"eventName": "pr:review", "prId": 1})),
        )
        async with api_factory(config) as api:
            bare = await shop_repo(api, tmp_path)
            job_id = await api.create(JOB, repo="shop", description="Add greet()")
            await review_and_poll(api, job_id)
            fake.queue(  # coding, woken by the review
                tools(ToolUse("file_write", {"path": "shop/greeting.py", "content": DOCUMENTED})),
                tools(ToolUse("scm_push", {"message": "Document greet()"})),
                tools(
                    ToolUse(
                        "scm_post_pr_comment",
                        {"prId": 1, "body": "Done: docstring added.", "inReplyTo": "1"},
                    ),
                    ToolUse("scm_merge_pr", {"prId": 1}),
                    ToolUse("update_work_item", {"name": "add-greeting", "status": "complete"}),
                ),
                text("Merged."),
                text("Reviewed: the merged change matches the spec."),  # review
                text("Evaluated: greet() exists and is documented."),  # evaluation
            )
            await assert_merged_and_batched(api, job_id, bare)
        woken = next(
            r for r in fake.message_requests if "[EVENTS: 2 received" in str(r.messages[-1])
        )
    last = str(woken.messages[-1])
    assert "Approvals: 1" in last
    assert REVIEW_REMARK in last
    assert KEY not in "\n".join(str(r.messages) for r in fake.message_requests)


async def test_a_tracking_phase_ends_when_its_pull_request_is_merged(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    config = CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "polling": MANUAL_POLLING}
    )
    async with api_factory(config) as api:
        bare = await shop_repo(api, tmp_path)
        workflow = write_workflow(
            api.home,
            "tracked",
            [
                {"name": "change", "agent": None},
                {"name": "tracking", "agent": None, "status": "awaiting-pr-merge"},
            ],
        )
        script = {
            "change": [
                step("scm_clone_repo", repo="shop"),
                step("file_write", path="shop/greeting.py", content=GREETING),
                step("scm_create_pr", title="Add greet()"),
            ]
        }
        job_id = await api.create(workflow, script, repo="shop")
        await api.wait_for_line(job_id, "Job parked — waiting for: phase-tracking-event")
        parked = await api.job(job_id)
        assert await api.runner.transport.poll_once() == []  # type: ignore[attr-defined]
        merged = await cli(api, "pr", "merge", "1")
        assert merged.exit_code == 0, merged.output
        events = await api.runner.transport.poll_once()  # type: ignore[attr-defined]
        result = await api.finish(job_id)
        job = await api.job(job_id)
    assert parked["status"] == "awaiting-pr-merge"
    assert parked["phase"] == "tracking"
    assert [e.event_key for e in events] == ["pullrequest:fulfilled"]
    assert result.done == "complete"
    assert "[tracking] Every pull request is merged or declined" in result.texts()
    assert job["prMappings"][0]["mergedAt"] is not None
    assert show(bare, "main:greeting.py") == GREETING


async def test_the_completion_gate_waits_for_an_open_pull_request(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    config = CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "polling": MANUAL_POLLING}
    )
    async with api_factory(config) as api:
        bare = await shop_repo(api, tmp_path)
        workflow = write_workflow(api.home, "forgetful", [{"name": "change", "agent": None}])
        script = {
            "change": [
                [  # opens a PR and ends its turn as if done
                    step("scm_clone_repo", repo="shop"),
                    step("file_write", path="shop/greeting.py", content=GREETING),
                    step("scm_create_pr", title="Add greet()"),
                ],
                [  # the corrective run may not merge it unreviewed: it waits for a review
                    step("scm_merge_pr", prId=1),
                    step("await_event", eventName="pr:review", prId=1),
                ],
                [step("scm_merge_pr", prId=1)],  # approved: now it merges
            ]
        }
        job_id = await api.create(workflow, script, repo="shop")
        await api.wait_for_line(job_id, "Job parked — waiting for: pr:review")
        assert "greeting.py" not in show(bare, "--name-only", "--format=", "main")
        approved = await cli(api, "pr", "approve", "1", "--as", "alice")
        assert approved.exit_code == 0, approved.output
        await api.runner.transport.poll_once()  # type: ignore[attr-defined]
        result = await api.finish(job_id)
        job = await api.job(job_id)
    assert result.done == "complete"
    refused = [t for t in result.texts() if "has no approval" in t]
    assert len(refused) == 1, result.texts()
    blocked = [t for t in result.texts() if t.startswith("[completion-gate]")]
    assert blocked == [
        "[completion-gate] Blocking job completion (1 unfinished: PR #1 in shop (open)). "
        "Re-running phase 'change' (attempt 1/5)."
    ]
    corrective = [p for p in user_prompts(job) if "[completion-gate]" in p]
    assert len(corrective) == 1 and "1 pull request(s) are still open" in corrective[0]
    assert show(bare, "main:greeting.py") == GREETING
