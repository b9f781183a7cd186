"""Self-improvement proposals: `propose_change`, `list_proposals` and `read_memory` called
from scripted jobs, and the decisions over HTTP. A proposal never changes what jobs read
until it is approved; a tenant approval writes the tenant layer, a repo approval opens a
pull request on the local SCM tracked by a `self-update` job."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from coro.config import CoroConfig, CoroHome
from coro.executors import ExecutorRegistry
from coro.executors.base import ExecutorEvent, PhaseRequest
from coro.executors.script import ScriptExecutor
from coro.intelligence.proposals import ProposalError, propose, write_files_atomically
from coro.plugins.scm.local import LocalScm
from coro.state.proposals import ProposalConflict, ProposalFile, Proposed
from tests.conftest import Api, ApiFactory, write_workflow
from tests.store_backends import KINDS, open_backends

MANUAL_POLLING = {"intervalSeconds": 3600, "localChangeDelaySeconds": 3600}
OLD_AGENT = "# Helper\n\nOLD-AGENT-RULE: keep functions short.\n"
NEW_AGENT = "# Helper\n\nNEW-AGENT-RULE: keep functions short and documented.\n"
OLD_MEMORY = "# Conventions\n\nOLD-CONVENTION: tests live in tests/.\n"
NEW_MEMORY = "# Conventions\n\nNEW-CONVENTION: tests live in tests/ and use pytest.\n"


class RecordingScript(ScriptExecutor):
    """The script executor, remembering each phase's system prompt (what the agent reads)."""

    def __init__(self) -> None:
        self.prompts: dict[tuple[str, str], list[str]] = {}

    async def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]:
        key = (request.job_id, request.phase)
        self.prompts.setdefault(key, []).append(request.system_prompt)
        async for event in super().execute_phase(request):
            yield event


def recording() -> tuple[ExecutorRegistry, RecordingScript]:
    registry = ExecutorRegistry()
    executor = RecordingScript()
    registry.register(executor)
    return registry, executor


def step(tool_name: str, /, **tool_input: Any) -> dict[str, Any]:
    return {"tool": tool_name, "input": tool_input}


def tool_results(job: dict[str, Any], name: str) -> list[tuple[bool, Any]]:
    """`(is_error, output)` of every call of tool `name`, oldest first (JSON decoded)."""
    names: dict[str, str] = {}
    found = []
    for message in job["conversationHistory"]:
        for call in message.get("toolCalls", []):
            names[call["id"]] = call["name"]
        for result in message.get("toolResults", []):
            if names.get(result["toolCallId"]) != name:
                continue
            try:
                output = json.loads(result["output"])
            except ValueError:
                output = result["output"]
            found.append((result["isError"], output))
    return found


def tenant(home: CoroHome) -> Path:
    return home.root / "intelligence"


def seed_tenant(home: CoroHome) -> None:
    (tenant(home) / "agents").mkdir(parents=True, exist_ok=True)
    (tenant(home) / "agents" / "helper.md").write_text(OLD_AGENT)
    (tenant(home) / "memory").mkdir(parents=True, exist_ok=True)
    (tenant(home) / "memory" / "conventions.md").write_text(OLD_MEMORY)
    (tenant(home) / "memory" / "MEMORY.md").write_text("# Memory\n\n- conventions.md\n")


def helper_workflow(home: CoroHome) -> str:
    return write_workflow(
        home,
        "improve",
        [
            {"name": "work", "agent": "agents/helper.md"},
            {"name": "check", "agent": "agents/helper.md"},
        ],
    )


def propose_agent(title: str, content: str = NEW_AGENT, **extra: Any) -> dict[str, Any]:
    return step(
        "propose_change",
        type="modify-agent",
        title=title,
        rationale="Undocumented helpers slowed review down twice in this job.",
        description="Ask for docstrings on every new function.",
        files=[{"path": "agents/helper.md", "content": content}],
        **extra,
    )


def config() -> CoroConfig:
    return CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "polling": MANUAL_POLLING}
    )


async def run(api: Api, workflow: str, script: dict[str, Any], **body: Any) -> dict[str, Any]:
    job_id = await api.create(workflow, script, **body)
    result = await api.finish(job_id)
    assert result.done == "complete", result.texts()[-8:]
    return await api.job(job_id)


async def test_a_proposal_never_touches_live_intelligence_until_approved(
    api_factory: ApiFactory, home: CoroHome
) -> None:
    seed_tenant(home)
    registry, executor = recording()
    async with api_factory(config(), executors=registry) as api:
        workflow = helper_workflow(home)
        job = await run(
            api,
            workflow,
            {
                "work": [
                    propose_agent("Document helpers", content="# Helper\n\nfirst draft\n"),
                    propose_agent("Ask for docstrings"),  # the pending proposal is replaced
                    step("list_proposals"),
                ],
                "check": [step("read_memory", file="memory/conventions.md")],
            },
        )
        first, second = tool_results(job, "propose_change")
        assert first[0] is False and second[0] is False, (first, second)
        proposal_id = first[1]["proposalId"]
        assert second[1]["proposalId"] == proposal_id
        assert (first[1]["updated"], second[1]["updated"]) == (False, True)
        assert second[1]["status"] == "pending" and second[1]["targetLayer"] == "tenant"

        # Nothing live changed: the layer file, and what the next phase's agent read.
        assert (tenant(home) / "agents" / "helper.md").read_text() == OLD_AGENT
        check_prompt = executor.prompts[(job["id"], "check")][0]
        assert "OLD-AGENT-RULE" in check_prompt and "NEW-AGENT-RULE" not in check_prompt

        stored = await api.runner.backend.proposals.get(proposal_id)
        assert stored is not None
        record = stored.to_json()
        assert record["status"] == "pending"
        assert record["title"] == "Ask for docstrings"
        assert record["rationale"].startswith("Undocumented helpers")
        assert record["files"] == [{"path": "agents/helper.md", "content": NEW_AGENT}]

        [(_, listed)] = tool_results(job, "list_proposals")
        assert listed["count"] == 1 and listed["proposals"][0]["id"] == proposal_id
        assert listed["proposals"][0]["files"] == ["agents/helper.md"]
        [(_, memory)] = tool_results(job, "read_memory")
        assert memory["layers"] == ["tenant"]
        assert "coro layer: tenant" in memory["content"] and OLD_MEMORY in memory["content"]

        shown = await api.client.get(f"/proposals/{proposal_id}")
        assert shown.status_code == 200
        assert shown.json()["files"][0]["content"] == NEW_AGENT
        listing = (await api.client.get("/proposals", params={"status": "pending"})).json()
        assert [p["id"] for p in listing["proposals"]] == [proposal_id]

        # Approval writes the tenant layer; the next job's agent reads the new text.
        approved = await api.client.post(
            f"/proposals/{proposal_id}/approve", json={"reviewedBy": "alice"}
        )
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert body["status"] == "approved" and body["reviewedBy"] == "alice"
        assert body["appliedAt"] is not None
        assert (tenant(home) / "agents" / "helper.md").read_text() == NEW_AGENT
        later = await run(api, workflow, {})
        later_prompt = executor.prompts[(later["id"], "work")][0]
        assert "NEW-AGENT-RULE" in later_prompt and "OLD-AGENT-RULE" not in later_prompt
        assert any("approved by alice" in line for line in await logs(api, job["id"]))

        again = await api.client.post(f"/proposals/{proposal_id}/approve")
        assert again.status_code == 409, again.text
        rejected_late = await api.client.post(f"/proposals/{proposal_id}/reject")
        assert rejected_late.status_code == 409


async def logs(api: Api, job_id: str) -> list[str]:
    return (await api.follow(job_id)).texts()


async def test_reject_records_the_reason_and_applies_nothing(
    api_factory: ApiFactory, home: CoroHome
) -> None:
    seed_tenant(home)
    async with api_factory(config()) as api:
        job = await run(
            api,
            helper_workflow(home),
            {
                "work": [
                    step(
                        "propose_change",
                        type="memory-update",
                        title="Mention pytest",
                        rationale="The test runner was guessed wrong once.",
                        description="Say that tests use pytest.",
                        files=[{"path": "memory/conventions.md", "content": NEW_MEMORY}],
                    ),
                    step("read_memory"),
                    step("read_memory", file="conventions.md"),
                ]
            },
        )
        [(error, proposed)] = tool_results(job, "propose_change")
        assert error is False, proposed
        index, single = tool_results(job, "read_memory")
        assert "# Memory\n\n- conventions.md" in index[1]["index"]["content"]
        assert [f["path"] for f in index[1]["files"]] == [
            "memory/MEMORY.md",
            "memory/conventions.md",
        ]
        assert [p["id"] for p in index[1]["pendingProposals"]] == [proposed["proposalId"]]
        assert OLD_MEMORY in single[1]["content"]  # still the live memory
        assert "NEW-CONVENTION" not in single[1]["content"]

        proposal_id = proposed["proposalId"]
        rejected = await api.client.post(
            f"/proposals/{proposal_id}/reject", json={"reason": "Already in CLAUDE.md"}
        )
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["status"] == "rejected"
        assert rejected.json()["reviewNote"] == "Already in CLAUDE.md"
        assert (tenant(home) / "memory" / "conventions.md").read_text() == OLD_MEMORY
        assert (await api.client.post(f"/proposals/{proposal_id}/approve")).status_code == 409
        assert (await api.client.post(f"/proposals/{proposal_id}/reject")).status_code == 409
        listing = (await api.client.get("/proposals", params={"status": "rejected"})).json()
        assert [p["id"] for p in listing["proposals"]] == [proposal_id]


def show(bare: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "--git-dir", str(bare), "show", *args], capture_output=True, text=True, check=True
    )
    return result.stdout


async def test_a_repo_proposal_opens_a_pull_request_tracked_by_a_self_update_job(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    async with api_factory(config()) as api:
        local = api.runner.plugins.get("scm", "local")
        assert isinstance(local, LocalScm)
        source = tmp_path / "shop-src"
        source.mkdir()
        (source / "README.md").write_text("# Shop\n")
        await local.create_repo("shop", from_dir=source)
        bare = local.repo_path("shop")
        workflow = write_workflow(api.home, "improve", [{"name": "work", "agent": None}])
        job = await run(
            api,
            workflow,
            {
                "work": [
                    step(
                        "propose_change",
                        type="memory-update",
                        title="Shop test command",
                        rationale="The agent ran the wrong test command.",
                        description="Record `make test` in the repository memory.",
                        files=[{"path": ".coro/memory/testing.md", "content": "Run make test.\n"}],
                    )
                ]
            },
            repo="shop",
            reviewers=["alice"],
        )
        [(error, proposed)] = tool_results(job, "propose_change")
        assert error is False, proposed
        assert proposed["targetLayer"] == "repo"
        assert proposed["files"] == ["memory/testing.md"]

        approved = await api.client.post(f"/proposals/{proposed['proposalId']}/approve")
        assert approved.status_code == 200, approved.text
        proposal = approved.json()
        assert proposal["status"] == "approved"
        assert proposal["branch"].startswith("coro/proposal/")
        assert proposal["repo"] == "shop" and proposal["pluginId"] == "local"
        assert proposal["appliedAt"] is None  # applied when the PR merges

        pr = await local.get_pr(proposal["prId"])
        assert pr["state"] == "open"
        assert pr["title"] == "Coro proposal: Shop test command"
        assert pr["sourceBranch"] == proposal["branch"] and pr["targetBranch"] == "main"
        assert show(bare, f"{proposal['branch']}:.coro/memory/testing.md") == "Run make test.\n"
        with pytest.raises(subprocess.CalledProcessError):
            show(bare, "main:.coro/memory/testing.md")

        tracking_id = proposal["trackingJobId"]
        await api.wait_for_line(tracking_id, "Job parked — waiting for: phase-tracking-event")
        tracking = await api.job(tracking_id)
        assert tracking["type"] == "self-update"
        assert tracking["workflowPath"] == "workflows/self-update/workflow.md"
        assert tracking["triggerSource"] == "internal"
        assert tracking["status"] == "awaiting-pr-merge"
        assert [m["prId"] for m in tracking["prMappings"]] == [proposal["prId"]]
        assert tracking["params"]["proposalId"] == proposal["id"]

        await local.merge_pr(proposal["prId"])
        events = await api.runner.transport.poll_once()  # type: ignore[attr-defined]
        assert [e.event_key for e in events] == ["pullrequest:fulfilled"]
        assert (await api.finish(tracking_id)).done == "complete"
        assert show(bare, "main:.coro/memory/testing.md") == "Run make test.\n"
        assert (await api.client.post(f"/proposals/{proposal['id']}/approve")).status_code == 409


async def test_a_repo_proposal_needs_a_job_with_a_repository(
    api_factory: ApiFactory, home: CoroHome
) -> None:
    async with api_factory(config()) as api:
        job = await run(
            api,
            write_workflow(home, "improve", [{"name": "work", "agent": None}]),
            {"work": [propose_agent("Docs", targetLayer="repo")]},
        )
        assert await api.runner.backend.proposals.list() == []
    [(error, message)] = tool_results(job, "propose_change")
    assert error is True and "has no repository" in message
    assert not (tenant(home) / "proposals").exists()


BAD_FILES = [
    ({"path": "../agents/helper.md", "content": "x"}, "'..'"),
    ({"path": "/etc/passwd.md", "content": "x"}, "absolute"),
    ({"path": "agents/../../outside.md", "content": "x"}, "'..'"),
    ({"path": "notes/helper.md", "content": "x"}, "not an intelligence file"),
    ({"path": "agents\\helper.md", "content": "x"}, "backslash"),
    ({"path": "agents/helper.md", "content": "   "}, "no content"),
    ({"path": "agents/helper.md", "content": "x" * 300_000}, "larger than"),
    ({"path": "memory/notes.md", "content": "x"}, "cannot change"),  # not an agent file
]


async def test_bad_paths_and_contents_are_refused(api_factory: ApiFactory, home: CoroHome) -> None:
    seed_tenant(home)
    calls = [
        step(
            "propose_change",
            type="modify-agent",
            title="Bad",
            rationale="Testing validation.",
            description="Should be refused.",
            files=[file],
        )
        for file, _ in BAD_FILES
    ]
    calls.append(
        step(
            "propose_change",
            type="modify-agent",
            title="Mismatch",
            rationale="Testing validation.",
            description="A repository path with the tenant layer.",
            files=[{"path": ".coro/agents/helper.md", "content": "x"}],
            targetLayer="tenant",
        )
    )
    calls.append(
        step(
            "propose_change",
            type="modify-workflow",
            title="Broken workflow",
            rationale="Testing validation.",
            description="No front matter.",
            files=[{"path": "workflows/improve/workflow.md", "content": "# no front matter"}],
        )
    )
    calls.append(step("read_memory", file="../agents/helper.md"))
    async with api_factory(config()) as api:
        job = await run(api, helper_workflow(home), {"work": calls})
        proposals = tool_results(job, "propose_change")
        assert all(error for error, _ in proposals), proposals
        for (_, message), (_, expected) in zip(proposals, BAD_FILES, strict=False):
            assert expected in message, (expected, message)
        assert "Layer mismatch" in proposals[len(BAD_FILES)][1]
        assert "not a valid workflow" in proposals[len(BAD_FILES) + 1][1]
        [(error, message)] = tool_results(job, "read_memory")
        assert error and "'..'" in message
        assert (await api.client.get("/proposals")).json()["count"] == 0
        assert not (home.root / "outside.md").exists()
        for bad in ("nope", "...", "proposal-1-abc%2F..%2F..", ".hidden"):
            response = await api.client.get(f"/proposals/{bad}")
            assert response.status_code == 404, (bad, response.text)
        assert (await api.client.post("/proposals/nope/approve")).status_code == 404
        assert (await api.client.post("/proposals/nope/reject", json={"x": 1})).status_code == 400


@pytest.mark.parametrize("kind", KINDS)
async def test_one_proposal_per_job_and_layer(kind: str, tmp_path: Path) -> None:
    async with open_backends(kind, tmp_path) as [backend]:
        store = backend.proposals
        files = [ProposalFile(path="agents/helper.md", content=NEW_AGENT)]

        async def proposed(layer: Any = None, path: str = "agents/helper.md") -> Proposed:
            return await propose(
                store,
                job_id="job-1",
                phase="work",
                proposal_type="modify-agent",
                title="t",
                rationale="r",
                description="d",
                files=[ProposalFile(path=path, content=NEW_AGENT)],
                target_layer=layer,
            )

        first = await proposed()
        assert (await proposed()).proposal.id == first.proposal.id
        repo = await proposed(path=".coro/agents/helper.md")
        assert repo.proposal.id != first.proposal.id and repo.proposal.layer == "repo"
        assert repo.proposal.files[0].path == "agents/helper.md"
        async with store.deciding(first.proposal.id) as held:
            with pytest.raises(ProposalConflict):
                await proposed()  # being decided
            await store.update(held.id, status="rejected")
        with pytest.raises(ProposalConflict, match="already rejected"):
            await proposed()
        with pytest.raises(ProposalConflict):
            async with store.deciding(first.proposal.id):
                pass
        assert len(files) == 1


def test_applying_files_is_all_or_nothing_and_stays_in_the_layer(tmp_path: Path) -> None:
    root = tmp_path / "tenant"
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "agents").mkdir(parents=True)
    (root / "agents" / "helper.md").write_text(OLD_AGENT)
    (root / "memory").symlink_to(outside, target_is_directory=True)
    files = [
        ProposalFile(path="agents/helper.md", content=NEW_AGENT),
        ProposalFile(path="memory/escape.md", content="x"),
    ]
    with pytest.raises(ProposalError, match="outside its layer"):
        write_files_atomically(root, files)
    assert (root / "agents" / "helper.md").read_text() == OLD_AGENT
    assert list(outside.iterdir()) == []
    assert [p.name for p in (root / "agents").iterdir()] == ["helper.md"]  # no leftovers

    written = write_files_atomically(
        root,
        [
            ProposalFile(path="agents/helper.md", content=NEW_AGENT),
            ProposalFile(path="skills/review/SKILL.md", content="---\nname: review\n---\n"),
        ],
    )
    assert written == ["agents/helper.md", ".claude/skills/review/SKILL.md"]
    assert (root / ".claude" / "skills" / "review" / "SKILL.md").is_file()
    assert (root / "agents" / "helper.md").read_text() == NEW_AGENT
