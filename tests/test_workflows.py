"""Workflow front matter parsing and resolution through intelligence layers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coro.domain.paths import check_relative_path
from coro.domain.workflows import (
    Workflow,
    WorkflowError,
    load_workflow_file,
    parse_workflow,
    strip_front_matter,
)
from coro.intelligence import BASE_LAYER_DIR, IntelligenceLayers, WorkflowNotFound

PATH = "workflows/sample/workflow.md"

VALID = """\
---
phases:
  - name: planning
    agent: agents/planner.md
    interactive_checkpoint: true
  - name: coding
    agent: agents/coder.md
    tier: coding
    status: building
  - name: wrap-up
    agent: null
    model: claude-sonnet
overrides:
  jira:
    initial_phase: coding
---

# Workflow: Sample Flow

First paragraph of the
sample workflow.

Second paragraph.
"""


def parse(text: str) -> Workflow:
    return parse_workflow(text, source="sample.md", path=PATH)


def error_of(text: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        parse(text)
    return info.value


def write(root: Path, relative: str, text: str) -> Path:
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def workflow_text(*phases: str, header: str = "", body: str = "") -> str:
    items = "".join(f"  - name: {name}\n" for name in phases)
    return f"---\n{header}phases:\n{items}---\n{body}"


# --- parsing -------------------------------------------------------------------------


def test_valid_workflow_parses_with_defaults() -> None:
    wf = parse(VALID)
    assert wf.path == PATH
    assert wf.source == "sample.md"
    assert wf.id == "sample"
    assert wf.kind == "job"
    assert wf.display_name == "Sample Flow"
    assert wf.description == "First paragraph of the sample workflow."
    assert wf.body.startswith("# Workflow: Sample Flow")
    assert wf.phase_names == ("planning", "coding", "wrap-up")
    assert wf.initial_phase == "planning"

    planning, coding, wrap_up = wf.phases
    assert planning.status == "planning"
    assert planning.tier == "planning"
    assert planning.interactive_checkpoint is True
    assert planning.agent == "agents/planner.md"
    assert planning.tools is None
    assert planning.subagents == []
    assert coding.status == "building"
    assert coding.tier == "coding"
    assert coding.interactive_checkpoint is False
    assert wrap_up.agent is None
    assert wrap_up.model == "claude-sonnet"
    assert wrap_up.tier is None  # a pinned model needs no tier


def test_workflow_navigation() -> None:
    wf = parse(VALID)
    assert wf.phase("coding") is wf.phases[1]
    assert wf.phase("missing") is None
    assert wf.next_phase("planning") == "coding"
    assert wf.next_phase("wrap-up") is None
    assert wf.next_phase("missing") is None
    assert wf.initial_phase_for("jira") == "coding"
    assert wf.initial_phase_for("cli") == "planning"
    summaries = wf.phase_summaries()
    assert [s.name for s in summaries] == ["planning", "coding", "wrap-up"]
    assert summaries[0].interactive_checkpoint is True


def test_front_matter_values_win_over_body_defaults() -> None:
    text = workflow_text(
        "a",
        header="display_name: Named\ndescription: Short.\nkind: internal\n",
        body="# Workflow: Ignored\n\nIgnored too.\n",
    )
    wf = parse(text)
    assert (wf.display_name, wf.description, wf.kind) == ("Named", "Short.", "internal")


def test_display_name_falls_back_to_directory_and_description_is_capped() -> None:
    wf = parse(workflow_text("a", body="\n\n" + "word " * 100))
    assert wf.display_name == "sample"
    assert len(wf.description) <= 220
    assert wf.description.endswith("…")
    assert wf.body.startswith("word")


def test_subagents_and_tools() -> None:
    text = """\
---
phases:
  - name: coding
    tools: [file_read, shell]
    subagents:
      - name: code-reviewer
        agent: agents/code-reviewer.md
        tier: mini
        tools: [file_read]
---
"""
    phase = parse(text).phases[0]
    assert phase.tools == ["file_read", "shell"]
    assert phase.subagents[0].name == "code-reviewer"
    assert phase.subagents[0].tier == "mini"
    assert phase.subagents[0].tools == ["file_read"]


def test_crlf_and_bom_are_accepted() -> None:
    wf = parse("\ufeff" + VALID.replace("\n", "\r\n"))
    assert wf.phase_names == ("planning", "coding", "wrap-up")


def test_error_string_format() -> None:
    assert str(WorkflowError("a.md", 3, "bad")) == "a.md:3: bad"
    assert str(WorkflowError("a.md", None, "bad")) == "a.md: bad"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("# no front matter\n", 1, "missing front matter"),
        ("", 1, "missing front matter"),
        ("---\nphases:\n  - name: a\n", 1, "never closed"),
        ("---\n---\nbody\n", 1, "empty"),
        ("---\nphases:\n  - name: a\n   tier: mini\n---\n", 4, "invalid YAML"),
        ("---\ndisplay_name: [unclosed\nphases: []\n---\n", 3, "invalid YAML"),
        ("---\n- a\n- b\n---\n", 2, "must be a mapping"),
        (
            "---\ndisplay_name: x\nphases:\n  - name: a\nphases:\n  - name: b\n---\n",
            5,
            "duplicate key 'phases'",
        ),
        ("---\nintial_phase: a\nphases:\n  - name: a\n---\n", 2, "unknown key 'intial_phase'"),
        ("---\nphases:\n  - name: a\n    colour: red\n---\n", 4, "unknown key 'colour'"),
        (
            '---\nphases:\n  - name: a\n    interactive_checkpoint: "yes please"\n---\n',
            4,
            "interactive_checkpoint: expected true or false",
        ),
        ("---\ndisplay_name: x\nphases: 3\n---\n", 3, "phases: expected a list"),
        ("---\nphases:\n  - planning\n---\n", 3, "expected a mapping"),
        ("---\ndisplay_name: x\nphases: []\n---\n", 3, "at least one phase"),
        ("---\ndisplay_name: x\n---\n", 2, "missing required key 'phases'"),
        (
            "---\nphases:\n  - name: a\n  - agent: agents/coder.md\n    tier: coding\n---\n",
            4,
            "missing required key 'name'",
        ),
        (
            "---\nphases:\n  - name: a\n  - name: b\n  - name: a\n---\n",
            5,
            "duplicate phase name 'a'",
        ),
        ("---\nphases:\n  - name: Plan Ning\n---\n", 3, "invalid phase name 'Plan Ning'"),
        ("---\nphases:\n  - name: -lead\n---\n", 3, "invalid phase name"),
        ("---\nphases:\n  - name: " + "a" * 65 + "\n---\n", 3, "invalid phase name"),
        ("---\ninitial_phase: nope\nphases:\n  - name: a\n---\n", 2, "'nope' is not a declared"),
        (
            "---\nphases:\n  - name: a\noverrides:\n  jira:\n    initial_phase: ghost\n---\n",
            6,
            "overrides.jira.initial_phase: 'ghost' is not a declared phase",
        ),
        (
            "---\nphases:\n  - name: a\noverrides:\n  jria:\n    initial_phase: a\n---\n",
            5,
            "unknown trigger source 'jria'",
        ),
        ("---\nphases:\n  - name: a\n    tier: huge\n---\n", 4, "unknown tier 'huge'"),
        ("---\nkind: epic\nphases:\n  - name: a\n---\n", 2, "unknown kind 'epic'"),
        ("---\nphases:\n  - name: a\n    status: complete\n---\n", 4, "reserved"),
        ("---\nphases:\n  - name: a\n    agent: ../secrets.md\n---\n", 4, "'..'"),
        ("---\nphases:\n  - name: a\n    agent: /etc/passwd.md\n---\n", 4, "absolute"),
        ("---\nphases:\n  - name: a\n    model: ''\n---\n", 4, "must not be empty"),
        ("---\nphases:\n  - name: a\n    tools: file_read\n---\n", 4, "expected a list"),
        (
            "---\nphases:\n  - name: a\n    subagents:\n      - name: h\n        tier: x\n---\n",
            6,
            "subagents[0].tier: unknown tier 'x'",
        ),
        (
            "---\nphases:\n  - name: a\n    subagents:\n      - name: h\n      - name: h\n---\n",
            6,
            "duplicate subagent name 'h'",
        ),
    ],
)
def test_errors_point_at_the_offending_line(text: str, line: int, fragment: str) -> None:
    err = error_of(text)
    assert err.file == "sample.md"
    assert err.line == line, str(err)
    assert fragment in err.message, str(err)
    assert str(err) == f"sample.md:{line}: {err.message}"


def test_typo_suggests_the_right_key() -> None:
    err = error_of("---\nintial_phase: a\nphases:\n  - name: a\n---\n")
    assert "did you mean 'initial_phase'" in err.message


def test_first_problem_in_file_order_is_reported() -> None:
    text = "---\nphases:\n  - name: a\n    tier: huge\n  - name: b\n    colour: red\n---\n"
    err = error_of(text)
    assert err.line == 4
    assert "unknown tier" in err.message
    assert "1 more problem" in err.message


def test_load_workflow_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.md"
    with pytest.raises(WorkflowError) as info:
        load_workflow_file(missing, PATH)
    assert info.value.line is None
    assert info.value.file == str(missing)

    binary = tmp_path / "binary.md"
    binary.write_bytes(b"---\nphases:\n  - name: \xff\n---\n")
    with pytest.raises(WorkflowError) as info:
        load_workflow_file(binary, PATH)
    assert info.value.line == 3
    assert "UTF-8" in info.value.message

    good = write(tmp_path, "ok.md", VALID)
    assert load_workflow_file(good, PATH).source == str(good)


def test_strip_front_matter() -> None:
    assert strip_front_matter("---\nname: x\n---\n\n# Agent\n") == "# Agent\n"
    assert strip_front_matter("\n# Agent only\n") == "# Agent only\n"


# --- paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["", "  ", "/etc/passwd", "../x.md", "workflows/../../x.md", "a\\b.md", "C:/x.md", "a\x00b"],
)
def test_check_relative_path_refuses_escapes(bad: str) -> None:
    with pytest.raises(ValueError):
        check_relative_path(bad)


def test_check_relative_path_normalises() -> None:
    assert check_relative_path("./workflows//job/./workflow.md") == "workflows/job/workflow.md"


# --- layers --------------------------------------------------------------------------


def test_tenant_layer_overrides_base(tmp_path: Path) -> None:
    base = tmp_path / "base"
    tenant = tmp_path / "tenant"
    write(base, "workflows/x/workflow.md", workflow_text("base-phase"))
    write(base, "workflows/only-base/workflow.md", workflow_text("b"))
    write(tenant, "workflows/x/workflow.md", workflow_text("tenant-phase"))
    write(base, "agents/a.md", "base agent")
    write(tenant, "agents/a.md", "---\nname: a\n---\n\ntenant agent\n")
    layers = IntelligenceLayers(tenant, base)

    assert layers.load_workflow("workflows/x/workflow.md").phase_names == ("tenant-phase",)
    assert layers.load_workflow("workflows/only-base/workflow.md").phase_names == ("b",)
    assert (
        layers.resolve("workflows/x/workflow.md") == (tenant / "workflows/x/workflow.md").resolve()
    )
    assert layers.resolve("workflows/nothing/workflow.md") is None
    assert layers.read_agent("agents/a.md") == "tenant agent\n"
    assert layers.read_agent("a") == "tenant agent\n"
    assert layers.read_agent("agents/none.md") is None
    with pytest.raises(WorkflowNotFound):
        layers.load_workflow("workflows/nothing/workflow.md")


def test_missing_tenant_dir_falls_back_to_base(tmp_path: Path) -> None:
    layers = IntelligenceLayers(tmp_path / "does-not-exist")
    assert layers.load_workflow("workflows/job/workflow.md").initial_phase == "spec-writing"


def test_edited_workflow_is_reloaded(tmp_path: Path) -> None:
    tenant = tmp_path / "tenant"
    target = write(tenant, "workflows/x/workflow.md", workflow_text("first"))
    layers = IntelligenceLayers(tenant, tmp_path / "empty-base")
    assert layers.load_workflow("workflows/x/workflow.md").phase_names == ("first",)
    target.write_text(workflow_text("second", "third"), encoding="utf-8")
    assert layers.load_workflow("workflows/x/workflow.md").phase_names == ("second", "third")
    target.write_text("---\nphases: []\n---\n", encoding="utf-8")
    with pytest.raises(WorkflowError):
        layers.load_workflow("workflows/x/workflow.md")


def test_invalid_tenant_file_wins_over_base(tmp_path: Path) -> None:
    base = tmp_path / "base"
    tenant = tmp_path / "tenant"
    write(base, "workflows/x/workflow.md", workflow_text("a"))
    bad = write(tenant, "workflows/x/workflow.md", "---\nphases: 3\n---\n")
    layers = IntelligenceLayers(tenant, base)
    with pytest.raises(WorkflowError) as info:
        layers.load_workflow("workflows/x/workflow.md")
    assert info.value.file == str(bad.resolve())
    assert info.value.line == 2
    assert layers.list_workflows() == []


@pytest.mark.parametrize(
    "bad", ["../outside/workflow.md", "/etc/passwd", "workflows\\x\\workflow.md", ""]
)
def test_layer_lookups_refuse_bad_paths(tmp_path: Path, bad: str) -> None:
    layers = IntelligenceLayers(tmp_path)
    with pytest.raises(ValueError):
        layers.load_workflow(bad)
    with pytest.raises(ValueError):
        layers.resolve(bad)


def test_symlink_escaping_the_tenant_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "workflow.md", workflow_text("a"))
    write(outside, "secret.md", "secret")
    tenant = tmp_path / "tenant"
    (tenant / "workflows").mkdir(parents=True)
    (tenant / "agents").mkdir()
    os.symlink(outside, tenant / "workflows" / "evil")
    os.symlink(outside / "secret.md", tenant / "agents" / "leak.md")
    layers = IntelligenceLayers(tenant, tmp_path / "empty-base")

    with pytest.raises(ValueError, match="outside"):
        layers.load_workflow("workflows/evil/workflow.md")
    with pytest.raises(ValueError, match="outside"):
        layers.read_agent("agents/leak.md")
    assert layers.list_workflows() == []


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    tenant = tmp_path / "tenant"
    (tenant / "agents").mkdir(parents=True)
    os.symlink(tenant / "agents" / "b.md", tenant / "agents" / "a.md")
    os.symlink(tenant / "agents" / "a.md", tenant / "agents" / "b.md")
    layers = IntelligenceLayers(tenant, tmp_path / "empty-base")
    with pytest.raises(ValueError):
        layers.read_agent("agents/a.md")


def test_symlink_inside_the_root_is_allowed(tmp_path: Path) -> None:
    tenant = tmp_path / "tenant"
    write(tenant, "workflows/real/workflow.md", workflow_text("a"))
    os.symlink(tenant / "workflows" / "real", tenant / "workflows" / "alias")
    layers = IntelligenceLayers(tenant, tmp_path / "empty-base")
    assert layers.load_workflow("workflows/alias/workflow.md").path == "workflows/alias/workflow.md"


def test_list_workflows_filters_by_kind_and_marks_source(tmp_path: Path) -> None:
    base = tmp_path / "base"
    tenant = tmp_path / "tenant"
    write(base, "workflows/shared/workflow.md", workflow_text("a", header="display_name: Zed\n"))
    write(
        base,
        "workflows/camp/workflow.md",
        workflow_text("plan", header="display_name: Campaign\nkind: campaign\n"),
    )
    write(base, "workflows/broken/workflow.md", "no front matter\n")
    write(
        tenant,
        "workflows/shared/workflow.md",
        workflow_text("x", "y", header="display_name: Alpha\n", body="Tenant flavour.\n"),
    )
    layers = IntelligenceLayers(tenant, base)

    everything = layers.list_workflows()
    assert [w["name"] for w in everything] == ["Alpha", "Campaign"]
    alpha = everything[0]
    assert alpha == {
        "id": "shared",
        "workflowPath": "workflows/shared/workflow.md",
        "name": "Alpha",
        "description": "Tenant flavour.",
        "kind": "job",
        "source": "tenant",
        "phases": [
            {
                "name": "x",
                "status": "x",
                "agent": None,
                "model": None,
                "tier": "planning",
                "interactiveCheckpoint": False,
                "subagents": [],
            },
            {
                "name": "y",
                "status": "y",
                "agent": None,
                "model": None,
                "tier": "planning",
                "interactiveCheckpoint": False,
                "subagents": [],
            },
        ],
        "initialPhase": "x",
    }
    assert everything[1]["source"] == "base"

    campaigns = layers.list_workflows("campaign")
    assert [w["id"] for w in campaigns] == ["camp"]
    assert [w["id"] for w in layers.list_workflows("job")] == ["shared"]
    assert layers.list_workflows("internal") == []


# --- the shipped base layer ----------------------------------------------------------


def base_workflow_paths() -> list[str]:
    return sorted(
        p.relative_to(BASE_LAYER_DIR).as_posix()
        for p in BASE_LAYER_DIR.glob("workflows/*/workflow.md")
    )


def test_base_layer_ships_the_required_workflows() -> None:
    paths = base_workflow_paths()
    assert "workflows/demo/workflow.md" in paths
    assert "workflows/job/workflow.md" in paths


@pytest.mark.parametrize("path", base_workflow_paths())
def test_every_base_workflow_parses_and_its_agents_exist(path: str, tmp_path: Path) -> None:
    layers = IntelligenceLayers(tmp_path / "no-tenant")
    wf = layers.load_workflow(path)
    assert wf.display_name
    assert wf.description
    assert wf.body
    agents = [p.agent for p in wf.phases] + [s.agent for p in wf.phases for s in p.subagents]
    for agent in filter(None, agents):
        assert (BASE_LAYER_DIR / agent).is_file(), f"{path} names missing agent {agent}"
        body = layers.read_agent(agent)
        assert body and body.strip()


def test_demo_workflow_shape(tmp_path: Path) -> None:
    wf = IntelligenceLayers(tmp_path).load_workflow("workflows/demo/workflow.md")
    assert [(p.name, p.agent, p.status, p.interactive_checkpoint) for p in wf.phases] == [
        ("planning", "agents/planner.md", "planning", True),
        ("implementation", "agents/coder.md", "coding", False),
        ("evaluation", "agents/evaluator.md", "evaluating", False),
    ]


def test_job_workflow_shape(tmp_path: Path) -> None:
    wf = IntelligenceLayers(tmp_path).load_workflow("workflows/job/workflow.md")
    assert wf.display_name == "Implementation Job"
    assert wf.initial_phase == "spec-writing"
    assert [(p.name, p.agent, p.status, p.tier) for p in wf.phases] == [
        ("spec-writing", "agents/spec-writer.md", "spec-writing", "mini"),
        ("planning", "agents/planner.md", "planning", "planning"),
        ("coding", "agents/coder.md", "coding", "coding"),
        ("review", "agents/pr-reviewer.md", "reviewing", "mini"),
        ("evaluation", "agents/evaluator.md", "evaluating", "planning"),
    ]
    assert all(p.interactive_checkpoint for p in wf.phases)
