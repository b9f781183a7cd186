"""The shipped base layer: its workflows parse, name real agents and real tools, and its
agent prompts only mention tools that exist and that their phases allow."""

from __future__ import annotations

import asyncio
import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest

from coro.domain.models import AWAITING_PR_MERGE, PARKING
from coro.domain.workflows import Workflow
from coro.engine.phase_loop import APPROVAL_LABEL, park_status
from coro.extensions import builtin_tools
from coro.intelligence import BASE_LAYER_DIR, IntelligenceLayers
from tests.conftest import WAIT_LIMIT, Api

#: Source-control and tracker tools whose names are fixed by the tool contract. They are
#: being added to `builtin_tools()`; until every one is registered the checks below
#: accept the union of the registry and this list.
PLANNED_SCM_TOOLS = frozenset(
    {
        "scm_clone_repo",
        "scm_create_pr",
        "scm_push",
        "scm_get_pr_status",
        "scm_list_pr_comments",
        "scm_post_pr_comment",
        "scm_add_pr_reviewers",
        "scm_merge_pr",
        "tracker_get_issue",
        "tracker_comment_issue",
        "tracker_transition_issue",
    }
)

LANES = ("job", "job-fast", "job-deep")
SHIPPED = (*LANES, "self-update")

#: Inline code spans (they may wrap onto the next line); fenced blocks are removed first.
FENCED = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
BACKTICKED = re.compile(r"`([^`]+)`")
#: A span naming a tool starts with its name: `file_read`, `scm_create_pr {title, …}`,
#: `log`, `escalate {reason}`, `shell {command: …}`; `params.repo`, `fix-` and
#: `pr-notes/x.md` do not count.
LEADING_IDENT = re.compile(r"([a-z]+_[a-z_]+|log|shell|escalate)(?=$|\s*\{)")
#: Source-control and tracker names are tool names even outside backticks.
BARE_SCM = re.compile(r"\b((?:scm|tracker)_[a-z_]+)\b")
#: `await_event` labels written as `eventName: "<label>"`.
EVENT_LABEL = re.compile(r'eventName:\s*"([^"]+)"')


def known_tools() -> set[str]:
    registered = set(builtin_tools().names())
    missing = PLANNED_SCM_TOOLS - registered
    return registered | missing


def layers(tmp_path: Path) -> IntelligenceLayers:
    return IntelligenceLayers(tmp_path / "no-tenant")


def all_workflow_ids() -> list[str]:
    return sorted(p.parent.name for p in BASE_LAYER_DIR.glob("workflows/*/workflow.md"))


def load(tmp_path: Path, workflow_id: str) -> Workflow:
    return layers(tmp_path).load_workflow(f"workflows/{workflow_id}/workflow.md")


def agent_text(agent: str) -> str:
    return (BASE_LAYER_DIR / agent).read_text(encoding="utf-8")


def mentioned_tools(text: str) -> set[str]:
    text = FENCED.sub("", text)
    found = set(BARE_SCM.findall(text))
    for span in BACKTICKED.findall(text):
        match = LEADING_IDENT.match(span.strip())
        if match:
            found.add(match.group(1))
    return found


CALL = re.compile(r"([a-z]+(?:_[a-z]+)*)\s*\{(.*)\}", re.DOTALL)


def written_calls(text: str) -> list[tuple[str, list[str]]]:
    """`tool {a, b: "x, y", c: {…}}` spans as (tool, top-level input keys)."""
    calls = []
    for span in BACKTICKED.findall(FENCED.sub("", text)):
        match = CALL.fullmatch(span.strip())
        if match:
            calls.append((match.group(1), _top_level_keys(match.group(2))))
    return calls


def _top_level_keys(inner: str) -> list[str]:
    parts, current, depth, quote = [], "", 0, ""
    for char in inner:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "{[<":
            depth += 1
        elif char in "}]>":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    keys = [part.split(":", 1)[0].strip().rstrip("?") for part in parts]
    return [key for key in keys if key and key not in ("…", "...")]


def allows(allow_list: list[str] | None, name: str) -> bool:
    if allow_list is None:
        return True
    return any(fnmatch.fnmatchcase(name, entry.removeprefix("mcp__coro__")) for entry in allow_list)


# --- the workflows ----------------------------------------------------------------------


def test_the_required_workflows_ship() -> None:
    ids = all_workflow_ids()
    for workflow_id in SHIPPED:
        assert workflow_id in ids


@pytest.mark.parametrize("workflow_id", all_workflow_ids())
def test_workflow_parses_and_names_existing_agents(workflow_id: str, tmp_path: Path) -> None:
    wf = load(tmp_path, workflow_id)
    assert wf.display_name and wf.description and wf.body
    for phase in wf.phases:
        for agent in filter(None, [phase.agent, *(s.agent for s in phase.subagents)]):
            assert (BASE_LAYER_DIR / agent).is_file(), f"{workflow_id}: missing {agent}"
            assert layers(tmp_path).read_agent(agent)


@pytest.mark.parametrize("workflow_id", all_workflow_ids())
def test_tool_allow_lists_name_real_tools(workflow_id: str, tmp_path: Path) -> None:
    known = known_tools()
    wf = load(tmp_path, workflow_id)
    lists = [(p.name, p.tools) for p in wf.phases]
    lists += [(f"{p.name}/{s.name}", s.tools) for p in wf.phases for s in p.subagents]
    for owner, allow_list in lists:
        for entry in allow_list or []:
            bare = entry.removeprefix("mcp__coro__")
            assert any(fnmatch.fnmatchcase(name, bare) for name in known), (
                f"{workflow_id} {owner}: unknown tool {entry!r}"
            )


@pytest.mark.parametrize("workflow_id", LANES)
def test_lane_phases_with_an_agent_have_an_allow_list(workflow_id: str, tmp_path: Path) -> None:
    wf = load(tmp_path, workflow_id)
    for phase in wf.phases:
        assert phase.tools, f"{workflow_id}/{phase.name} has no tools allow-list"
        assert "log" in phase.tools
        assert "escalate" in phase.tools
        for sub in phase.subagents:
            assert sub.tools


@pytest.mark.parametrize("workflow_id", all_workflow_ids())
def test_prose_mentions_only_real_tools(workflow_id: str, tmp_path: Path) -> None:
    wf = load(tmp_path, workflow_id)
    unknown = mentioned_tools(wf.body) - known_tools()
    assert not unknown, f"{workflow_id} mentions unknown tools {sorted(unknown)}"


#: A git command in `shell` that needs a remote: the sandbox has no network and hides the
#: local SCM's bare repositories, so these fail there (`scm_clone_repo` fetches instead).
REMOTE_GIT = re.compile(r"\bgit\b(?:\s+-C\s+\S+)?\s+(fetch|pull|push|clone|ls-remote)\b")


def remote_git_commands(text: str) -> list[str]:
    spans = BACKTICKED.findall(FENCED.sub("", text))
    return [" ".join(span.split()) for span in spans if REMOTE_GIT.search(span)]


@pytest.mark.parametrize("workflow_id", all_workflow_ids())
def test_prose_reaches_remotes_only_through_scm_tools(workflow_id: str, tmp_path: Path) -> None:
    found = remote_git_commands(load(tmp_path, workflow_id).body)
    assert not found, f"{workflow_id} tells the agent to run {found} in the sandboxed shell"


@pytest.mark.parametrize("workflow_id", all_workflow_ids())
def test_prose_says_shell_is_sandboxed_without_network(workflow_id: str, tmp_path: Path) -> None:
    wf = load(tmp_path, workflow_id)
    runs_shell = any(p.agent and allows(p.tools, "shell") for p in wf.phases)
    if not runs_shell:
        assert workflow_id == "self-update"  # the only workflow without an agent phase
        return
    body = " ".join(wf.body.split())
    assert "sandbox" in body, f"{workflow_id} does not say that `shell` is sandboxed"
    assert "no network" in body and "`network: true`" in body, workflow_id


def test_job_workflow_shape(tmp_path: Path) -> None:
    wf = load(tmp_path, "job")
    assert wf.display_name == "Implementation Job"
    assert wf.kind == "job"
    assert wf.initial_phase == "spec-writing"
    assert wf.initial_phase_for("jira") == "spec-writing"
    assert [(p.name, p.agent, p.status, p.tier, p.interactive_checkpoint) for p in wf.phases] == [
        ("spec-writing", "agents/spec-writer.md", "spec-writing", "mini", True),
        ("planning", "agents/planner.md", "planning", "planning", True),
        ("coding", "agents/coder.md", "coding", "coding", True),
        ("review", "agents/pr-reviewer.md", "reviewing", "mini", True),
        ("evaluation", "agents/evaluator.md", "evaluating", "planning", True),
    ]
    (helper,) = wf.phase("coding").subagents  # type: ignore[union-attr]
    assert (helper.name, helper.agent) == ("code-reviewer", "agents/code-reviewer.md")
    spec_tools = wf.phase("spec-writing").tools or []  # type: ignore[union-attr]
    assert "scm_merge_pr" not in spec_tools and "scm_create_pr" not in spec_tools
    coding_tools = wf.phase("coding").tools or []  # type: ignore[union-attr]
    for needed in ("file_edit", "shell", "scm_create_pr", "scm_push", "scm_merge_pr"):
        assert needed in coding_tools
    for reviewer in ("review", "evaluation"):
        tools = wf.phase(reviewer).tools or []  # type: ignore[union-attr]
        assert "goto_phase" in tools
        assert not {"file_edit", "scm_push", "scm_merge_pr", "scm_create_pr"} & set(tools)


def test_fast_lane_shape(tmp_path: Path) -> None:
    wf = load(tmp_path, "job-fast")
    assert wf.display_name == "Fast Lane"
    assert wf.initial_phase == "planning"
    assert [(p.name, p.agent, p.status, p.interactive_checkpoint) for p in wf.phases] == [
        ("planning", "agents/planner.md", "planning", False),
        ("coding", "agents/coder.md", "coding", True),
        ("review-and-verify", "agents/pr-reviewer.md", "reviewing", True),
    ]


def test_deep_lane_shape(tmp_path: Path) -> None:
    wf = load(tmp_path, "job-deep")
    assert wf.display_name == "Deep Lane"
    assert wf.initial_phase == "spec-writing"
    assert wf.initial_phase_for("jira") == "spec-writing"
    assert [(p.name, p.agent, p.status) for p in wf.phases] == [
        ("spec-writing", "agents/spec-writer.md", "spec-writing"),
        ("analysis", "agents/analyst.md", "analyzing"),
        ("planning", "agents/planner.md", "planning"),
        ("coding", "agents/coder.md", "coding"),
        ("review", "agents/pr-reviewer.md", "reviewing"),
        ("qa", "agents/qa.md", "qa"),
        ("evaluation", "agents/evaluator.md", "evaluating"),
    ]
    assert all(p.interactive_checkpoint for p in wf.phases[1:])
    assert {p.tier for p in wf.phases} <= {"planning", "coding"}


def test_self_update_only_tracks_a_pull_request(tmp_path: Path) -> None:
    wf = load(tmp_path, "self-update")
    assert wf.kind == "internal"
    assert wf.initial_phase == "tracking"
    (phase,) = wf.phases
    assert (phase.name, phase.agent, phase.status) == ("tracking", None, AWAITING_PR_MERGE)
    assert phase.status in PARKING  # so the runner parks without starting a model
    assert park_status(f"phase-{phase.name}-event") == AWAITING_PR_MERGE


async def settled(api: Api, job_id: str) -> dict[str, Any]:
    """The job once it is no longer queued or starting (parked, stopped or finished)."""
    async with asyncio.timeout(WAIT_LIMIT):
        while True:
            job = await api.job(job_id)
            if job["status"] not in ("queued", "tracking"):
                return job
            await asyncio.sleep(0.05)


async def test_self_update_job_parks_awaiting_pr_merge(api: Api) -> None:
    job_id = await api.create(
        "workflows/self-update/workflow.md", script={}, description="track a proposal"
    )
    job = await settled(api, job_id)
    assert job["status"] == AWAITING_PR_MERGE
    assert job["phase"] == "tracking"
    assert job["conversationHistory"] == []  # no model was started
    assert job["phaseUsage"] == []


async def test_self_update_job_records_what_it_waits_for(api: Api) -> None:
    job_id = await api.create(
        "workflows/self-update/workflow.md", script={}, description="track a proposal"
    )
    job = await settled(api, job_id)
    assert job["awaitingEvent"] == "phase-tracking-event"


# --- the agents -------------------------------------------------------------------------


def agents_in_use(tmp_path: Path) -> dict[str, list[tuple[str, list[str] | None]]]:
    """agent path → [(where, allow-list)] for every phase or helper that runs it."""
    uses: dict[str, list[tuple[str, list[str] | None]]] = {}
    for workflow_id in all_workflow_ids():
        for phase in load(tmp_path, workflow_id).phases:
            if phase.agent:
                uses.setdefault(phase.agent, []).append(
                    (f"{workflow_id}/{phase.name}", phase.tools)
                )
            for sub in phase.subagents:
                if sub.agent:
                    uses.setdefault(sub.agent, []).append(
                        (f"{workflow_id}/{phase.name}/{sub.name}", sub.tools)
                    )
    return uses


def agent_files() -> list[str]:
    return sorted(
        p.relative_to(BASE_LAYER_DIR).as_posix() for p in BASE_LAYER_DIR.glob("agents/*.md")
    )


@pytest.mark.parametrize("agent", agent_files())
def test_agent_mentions_only_real_tools(agent: str) -> None:
    mentioned = mentioned_tools(agent_text(agent))
    assert mentioned, f"{agent} names no tools at all"
    unknown = mentioned - known_tools()
    assert not unknown, f"{agent} mentions unknown tools {sorted(unknown)}"


def assert_real_input_fields(where: str, text: str) -> None:
    registry = builtin_tools()
    for name, keys in written_calls(text):
        tool = registry.get(name)
        if tool is None:
            assert name in PLANNED_SCM_TOOLS, f"{where}: {name} is not a tool"
            continue
        fields = set(tool.input_schema.get("properties", {}))
        unknown = sorted(set(keys) - fields)
        assert not unknown, f"{where}: {name} has no input field(s) {unknown}"


@pytest.mark.parametrize("agent", agent_files())
def test_agent_writes_tool_calls_with_real_input_fields(agent: str) -> None:
    text = agent_text(agent)
    assert written_calls(text), f"{agent} shows no tool call with its input"
    assert_real_input_fields(agent, text)


@pytest.mark.parametrize("workflow_id", all_workflow_ids())
def test_prose_writes_tool_calls_with_real_input_fields(workflow_id: str, tmp_path: Path) -> None:
    assert_real_input_fields(workflow_id, load(tmp_path, workflow_id).body)


@pytest.mark.parametrize("agent", agent_files())
def test_agent_tools_are_allowed_wherever_it_runs(agent: str, tmp_path: Path) -> None:
    uses = agents_in_use(tmp_path).get(agent)
    assert uses, f"{agent} is not used by any base workflow"
    mentioned = mentioned_tools(agent_text(agent))
    for where, allow_list in uses:
        refused = sorted(t for t in mentioned if not allows(allow_list, t))
        assert not refused, f"{agent} mentions {refused}, which {where} does not allow"


@pytest.mark.parametrize("agent", agent_files())
def test_agent_prompt_is_complete_and_tight(agent: str) -> None:
    text = agent_text(agent)
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    assert 50 <= len(lines) <= 160, f"{agent}: {len(lines)} lines"
    for section in ("## Goal", "## Inputs", "## Done when"):
        assert section in text, f"{agent} lacks {section}"
    assert "- [ ]" in text


@pytest.mark.parametrize("agent", agent_files())
def test_agent_park_labels_map_to_the_intended_status(agent: str) -> None:
    for label in EVENT_LABEL.findall(agent_text(agent)):
        if label.startswith("developer-input"):
            assert park_status(label) == "awaiting-developer-input"
        else:
            # A PR wait must park in awaiting-pr-merge and must not read as a checkpoint
            # approval (which would advance the phase when the developer replies).
            assert park_status(label) == AWAITING_PR_MERGE, label
            assert not APPROVAL_LABEL.search(label), label


@pytest.mark.parametrize("agent", agent_files())
def test_agent_reaches_remotes_only_through_scm_tools(agent: str) -> None:
    found = remote_git_commands(agent_text(agent))
    assert not found, f"{agent} tells the agent to run {found} in the sandboxed shell"


def test_coder_contract() -> None:
    text = agent_text("agents/coder.md")
    for fragment in (
        'eventName: "pr:review"',
        "inReplyTo",
        "scm_push",
        "scm_merge_pr",
        "incrementLoop: true",
        "loopCount` is already 3",
        "mergePolicy",
        "force-push",
        # a job from a pull request's comment pushes to that pull request's branch
        "scm_clone_repo {repo: params.repo, branch: params.branch}",
        "prId: params.pullRequest.number",
    ):
        assert fragment in text, fragment


# --- a scripted run through the job-control steps of the prompts -------------------------


async def test_job_workflow_runs_its_hand_offs_and_follow_up_loop(api: Api) -> None:
    """The five phases with only the job-control calls their prompts prescribe (no
    repository): planning registers items, the evaluator adds a follow-up item the way
    the workflow describes, coding finishes it, and the completion gate lets the job end.
    Every call must be allowed by its phase's allow-list."""

    def doc(path: str, kind: str, title: str) -> list[dict[str, object]]:
        return [
            {"tool": "file_write", "input": {"path": path, "content": f"# {title}\n"}},
            {
                "tool": "post_artifact",
                "input": {"kind": kind, "title": title, "data": {"path": path}},
            },
        ]

    def done(name: str) -> dict[str, object]:
        return {"tool": "update_work_item", "input": {"name": name, "status": "complete"}}

    script = {
        "spec-writing": doc("spec.md", "spec-md", "Specification"),
        "planning": [
            *doc("plan.md", "plan-md", "Implementation plan"),
            {"tool": "set_work_items", "input": {"workItems": ["add-flag", "document-flag"]}},
        ],
        "coding": [
            [
                {
                    "tool": "update_work_item",
                    "input": {"name": "add-flag", "status": "in-progress"},
                },
                done("add-flag"),
                {
                    "tool": "update_work_item",
                    "input": {"name": "document-flag", "status": "in-progress"},
                },
                done("document-flag"),
            ],
            [
                {
                    "tool": "update_work_item",
                    "input": {"name": "fix-flag-default", "status": "in-progress"},
                },
                done("fix-flag-default"),
            ],
        ],
        "review": [
            [*doc("reviews/review-1.md", "review-md", "Review round 1")],
            [*doc("reviews/review-2.md", "review-md", "Review round 2")],
        ],
        "evaluation": [
            [
                *doc("evaluations/evaluation-1.md", "evaluation-md", "Evaluation round 1"),
                {"tool": "get_work_items", "input": {}},
                {
                    "tool": "set_work_items",
                    "input": {"workItems": ["add-flag", "document-flag", "fix-flag-default"]},
                },
                done("add-flag"),
                done("document-flag"),
                {"tool": "goto_phase", "input": {"phase": "coding"}},
            ],
            [
                *doc("evaluations/evaluation-2.md", "evaluation-md", "Evaluation round 2"),
                {
                    "tool": "add_insight",
                    "input": {"category": "verification", "summary": "s", "detail": "d"},
                },
            ],
        ],
    }
    job_id = await api.create("workflows/job/workflow.md", script, description="add a flag")
    result = await api.finish(job_id)
    texts = result.texts()
    assert result.done == "complete", texts[-5:]
    assert not [t for t in texts if t.startswith("[tool-error]")]
    job = await api.job(job_id)
    assert [(w["name"], w["status"]) for w in job["workItems"]] == [
        ("add-flag", "complete"),
        ("document-flag", "complete"),
        ("fix-flag-default", "complete"),
    ]
    kinds = [a["kind"] for a in job["artifacts"]]
    assert kinds == [
        "spec-md",
        "plan-md",
        "review-md",
        "evaluation-md",
        "review-md",
        "evaluation-md",
    ]
