"""Layered intelligence: base → (remote) → tenant → repo, materialised per job, edited and
preflighted through the API, and a tenant layer kept in a git remote (SPEC §2.4, §4.8)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.domain.models import Checkout, Job
from coro.executors import ExecutorEvent, ExecutorRegistry, PhaseRequest
from coro.executors.script import ScriptExecutor
from coro.extensions import builtin_tools
from coro.intelligence import BASE_LAYER_DIR, IntelligenceLayers
from coro.intelligence.materialise import INTELLIGENCE_DIRNAME, PROVENANCE_FILE, materialise
from coro.intelligence.preflight import Checker, preflight
from coro.plugins.scm.local import LocalScm
from tests.conftest import Api, ApiFactory, write_workflow

BASE_CODER_TITLE = (BASE_LAYER_DIR / "agents" / "coder.md").read_text().splitlines()[0]
TENANT_CODER = "# Tenant coder\n\nTENANT CODER ROLE: follow the team conventions.\n"
REPO_CODER = "# Repo coder\n\nREPO CODER ROLE: this repository's own rules.\n"
TWO_PHASES = [
    {"name": "clone", "agent": "agents/coder.md"},
    {"name": "code", "agent": "agents/coder.md"},
]
CLONE_SCRIPT = {"clone": [[{"tool": "scm_clone_repo", "input": {"repo": "shop"}}]]}


class CapturingExecutor(ScriptExecutor):
    """The script executor, remembering the system prompt of every phase it runs."""

    def __init__(self) -> None:
        self.prompts: dict[tuple[str, str], str] = {}

    def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]:
        self.prompts[(request.job_id, request.phase)] = request.system_prompt
        return super().execute_phase(request)


def capturing() -> tuple[CapturingExecutor, ExecutorRegistry]:
    executor = CapturingExecutor()
    registry = ExecutorRegistry()
    registry.register(executor)
    return executor, registry


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


async def finish(api: Api, job_id: str) -> list[str]:
    result = await api.finish(job_id)
    assert result.done == "complete", result.texts()[-8:]
    return result.texts()


# --- the job's layers, end to end ------------------------------------------------------


async def test_repo_agent_overrides_tenant_which_overrides_base(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    executor, registry = capturing()
    async with api_factory(executors=registry) as api:
        source = tmp_path / "shop-src"
        write(source, "README.md", "# Shop\n")
        write(source, ".coro/agents/coder.md", REPO_CODER)
        write(source, ".coro/.claude/CLAUDE.md", "Repo rule: run make check.\n")
        write(source, ".coro/memory/notes.md", "# Notes\n\nrepo note\n")
        local = api.runner.plugins.get("scm", "local")
        assert isinstance(local, LocalScm)
        await local.create_repo("shop", from_dir=source)
        workflow = write_workflow(api.home, "layered", TWO_PHASES)

        # No tenant coder yet: the base one is the role.
        plain = await api.create(workflow, {})
        await finish(api, plain)
        assert BASE_CODER_TITLE in executor.prompts[(plain, "clone")]

        tenant = api.home.root / "intelligence"
        write(tenant, "agents/coder.md", TENANT_CODER)
        write(tenant, ".claude/CLAUDE.md", "Tenant rule: be brief.\n")
        write(tenant, "memory/notes.md", "# Notes\n\ntenant note\n")
        job_id = await api.create(workflow, CLONE_SCRIPT, repo="shop")
        log = await finish(api, job_id)

        # With a jobId the API shows the job's repository layer too (read-only).
        layers = await api.client.get("/intelligence/layers", params={"jobId": job_id})
        names = [layer["name"] for layer in layers.json()["layers"]]
        assert names == ["base", "tenant", "repo:shop"]
        repo = layers.json()["layers"][-1]
        assert repo["rootKind"] == "checkout" and repo["root"] == "shop/.coro"
        assert repo["counts"]["agent"] == 1 and repo["writable"] is False
        view = await api.client.get(
            "/intelligence/file", params={"path": "agents/coder.md", "jobId": job_id}
        )
        assert view.json()["layer"] == "repo:shop"
        assert [v["layer"] for v in view.json()["versions"]] == ["repo:shop", "tenant", "base"]
        notes = await api.client.get(
            "/intelligence/file",
            params={"path": "memory/notes.md", "jobId": job_id, "layer": "repo"},
        )
        assert notes.json()["mergeMode"] == "append"
        assert notes.json()["content"] == "# Notes\n\nrepo note\n"
        assert notes.json()["merged"].count("coro layer:") == 2
        refused = await api.client.put(
            "/intelligence/file",
            json={"path": "agents/coder.md", "content": "# X\n", "layer": "repo"},
        )
        assert refused.status_code == 409

    before_clone = executor.prompts[(job_id, "clone")]
    after_clone = executor.prompts[(job_id, "code")]
    assert "TENANT CODER ROLE" in before_clone and BASE_CODER_TITLE not in before_clone
    assert "REPO CODER ROLE" in after_clone and "TENANT CODER ROLE" not in after_clone
    # The merged CLAUDE.md reaches the agent as its project instructions.
    assert "# Project Instructions" in before_clone and "Tenant rule: be brief." in before_clone
    assert "Repo rule: run make check." not in before_clone
    assert "Tenant rule" in after_clone and "Repo rule: run make check." in after_clone
    assert "# Project Instructions" not in executor.prompts[(plain, "clone")]
    assert any("agents/coder.md from tenant" in line for line in log)
    assert any("agents/coder.md from repo:shop" in line for line in log)

    # The job's materialised directory holds the merged layers.
    merged = api.runner.env.workdir(job_id) / INTELLIGENCE_DIRNAME
    assert (merged / "agents" / "coder.md").read_text() == REPO_CODER
    # Only what the job uses: its own workflow and agents, instructions and memory.
    assert (merged / "workflows" / "layered" / "workflow.md").is_file()
    assert not (merged / "workflows" / "job" / "workflow.md").exists()  # another lane
    assert not (merged / "agents" / "planner.md").exists()  # not named by this workflow
    claude = (merged / ".claude" / "CLAUDE.md").read_text()
    assert claude.index("coro layer: tenant") < claude.index("Tenant rule")
    assert claude.index("Tenant rule") < claude.index("coro layer: repo:shop (shop/.coro/")
    assert claude.index("coro layer: repo:shop") < claude.index("Repo rule")
    provenance = json.loads((merged / PROVENANCE_FILE).read_text())
    assert [layer["name"] for layer in provenance["layers"]] == ["base", "tenant", "repo:shop"]
    assert provenance["files"]["agents/coder.md"] == ["repo:shop"]
    assert provenance["files"]["memory/notes.md"] == ["tenant", "repo:shop"]


async def test_a_repository_workflow_overrides_the_job_workflow_once_cloned(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    executor, registry = capturing()
    async with api_factory(executors=registry) as api:
        workflow = write_workflow(api.home, "layered", TWO_PHASES)
        source = tmp_path / "shop-src"
        repo_workflow = (api.home.root / "intelligence" / workflow).read_text()
        write(source, f".coro/{workflow}", repo_workflow.replace("Test workflow.", "REPO PROSE."))
        local = api.runner.plugins.get("scm", "local")
        assert isinstance(local, LocalScm)
        await local.create_repo("shop", from_dir=source)
        job_id = await api.create(workflow, CLONE_SCRIPT, repo="shop")
        log = await finish(api, job_id)
    assert "REPO PROSE." not in executor.prompts[(job_id, "clone")]
    assert "REPO PROSE." in executor.prompts[(job_id, "code")]
    assert any("workflow from repo:shop" in line for line in log)


# --- materialisation -------------------------------------------------------------------


def job_with_checkouts(*slugs: str) -> Job:
    now = "2026-01-01T00:00:00Z"
    job = Job.model_validate(
        {
            "id": "j1",
            "workflowPath": "workflows/x/workflow.md",
            "phase": "p",
            "status": "p",
            "createdAt": now,
            "updatedAt": now,
        }
    )
    job.checkouts = [
        Checkout(slug=slug, repo=slug, plugin_id="local", base_branch="main") for slug in slugs
    ]
    return job


def three_layers(tmp_path: Path) -> tuple[Path, Path, Path, IntelligenceLayers]:
    base, tenant, workdir = tmp_path / "base", tmp_path / "tenant", tmp_path / "work" / "j1"
    write(base, ".claude/CLAUDE.md", "base rules\n")
    write(base, "memory/team/conventions.md", "# Conventions\n\nbase memory\n")
    write(base, "agents/a.md", "# A\n\nbase a\n")
    write(base, "agents/only-base.md", "# Only base\n")
    write(tenant, ".claude/CLAUDE.md", "\n\ntenant rules\n\n\n")
    write(tenant, "agents/a.md", "# A\n\ntenant a\n")
    write(tenant, "proposals/p1/proposal.json", "{}")  # not part of the layout
    write(workdir, "shop/.coro/.claude/CLAUDE.md", "repo rules\n")
    write(workdir, "shop/.coro/memory/team/conventions.md", "repo memory\n")
    write(workdir, "shop/.coro/agents/a.md", "# A\n\nrepo a\n")
    return base, tenant, workdir, IntelligenceLayers(tenant, base)


def test_claude_md_and_memory_are_appended_in_layer_order_with_banners(tmp_path: Path) -> None:
    base, tenant, workdir, layers = three_layers(tmp_path)
    stack = layers.for_job(job_with_checkouts("shop"), workdir)
    result = materialise(stack, workdir / INTELLIGENCE_DIRNAME)
    out = workdir / INTELLIGENCE_DIRNAME

    assert (out / ".claude" / "CLAUDE.md").read_text() == (
        f"<!-- ─── coro layer: base ({base}/.claude/CLAUDE.md) ─── -->\n\nbase rules\n\n"
        f"<!-- ─── coro layer: tenant ({tenant}/.claude/CLAUDE.md) ─── -->\n\ntenant rules\n\n"
        "<!-- ─── coro layer: repo:shop (shop/.coro/.claude/CLAUDE.md) ─── -->\n\nrepo rules\n"
    )
    memory = (out / "memory" / "team" / "conventions.md").read_text()
    assert memory == (
        f"<!-- ─── coro layer: base ({base}/memory/team/conventions.md) ─── -->\n\n"
        "# Conventions\n\nbase memory\n\n"
        "<!-- ─── coro layer: repo:shop (shop/.coro/memory/team/conventions.md) ─── -->\n\n"
        "repo memory\n"
    )
    assert (out / "agents" / "a.md").read_text() == "# A\n\nrepo a\n"  # replace: highest wins
    assert (out / "agents" / "only-base.md").read_text() == "# Only base\n"
    assert not (out / "proposals").exists()
    assert result.winner("agents/a.md") == "repo:shop"
    assert result.sources[".claude/CLAUDE.md"] == ["base", "tenant", "repo:shop"]
    assert result.warnings == []

    # Rebuilt from scratch each time: a file gone from every layer is gone here too.
    (workdir / "shop/.coro/agents/a.md").unlink()
    (out / "stray.txt").write_text("left by the agent")
    materialise(stack, out)
    assert (out / "agents" / "a.md").read_text() == "# A\n\ntenant a\n"
    assert not (out / "stray.txt").exists()
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".")] == []

    # Nothing changed: the directory is left as it is (phase boundaries stay cheap)…
    before = (out / "agents" / "a.md").stat().st_ino
    materialise(stack, out)
    assert (out / "agents" / "a.md").stat().st_ino == before
    # …but an agent's edit of the runner's copy is undone at the next boundary.
    (out / "agents" / "a.md").write_text("# A\n\ntampered\n")
    materialise(stack, out)
    assert (out / "agents" / "a.md").read_text() == "# A\n\ntenant a\n"


def test_repo_layer_symlinks_are_never_followed(tmp_path: Path) -> None:
    _, _, workdir, layers = three_layers(tmp_path)
    outside = tmp_path / "outside"
    write(outside, "secret.md", "SECRET\n")
    write(outside, "memory/leak.md", "SECRET MEMORY\n")
    repo = workdir / "shop" / ".coro"
    os.symlink(outside / "secret.md", repo / "agents" / "evil.md")
    os.symlink(outside / "secret.md", repo / ".claude" / "skills")
    os.symlink(outside / "memory", repo / "memory" / "linked")
    (workdir / "other").mkdir()
    os.symlink(outside, workdir / "other" / ".coro")  # a whole layer pointing outside
    # The agent replaced the materialised folder by a symlink to a folder of its choice.
    target_of_agent = tmp_path / "agent-target"
    write(target_of_agent, "keep.txt", "untouched")
    os.symlink(target_of_agent, workdir / INTELLIGENCE_DIRNAME)

    stack = layers.for_job(job_with_checkouts("shop", "other", "../escape"), workdir)
    assert [layer.name for layer in stack.layers] == ["base", "tenant", "repo:shop", "repo:other"]
    result = materialise(stack, workdir / INTELLIGENCE_DIRNAME)
    out = workdir / INTELLIGENCE_DIRNAME

    assert out.is_dir() and not out.is_symlink()
    assert [p.name for p in target_of_agent.iterdir()] == ["keep.txt"]
    everything = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "SECRET" not in everything
    assert not (out / "agents" / "evil.md").exists()
    assert any("agents/evil.md" in warning for warning in result.warnings)
    assert stack.read_agent("evil") is None
    assert [layer["fileCount"] for layer in result.layers][-1] == 0


# --- the API ---------------------------------------------------------------------------


async def test_file_endpoints_refuse_climbing_absolute_paths_and_the_base_layer(api: Api) -> None:
    client = api.client
    for bad in ("../config.json", "agents/../../config.json", "/etc/passwd"):
        put = await client.put("/intelligence/file", json={"path": bad, "content": "# X\n"})
        assert put.status_code == 400, put.text
        assert "relative" in put.json()["error"]
        got = await client.get("/intelligence/file", params={"path": bad})
        assert got.status_code == 400, got.text
        deleted = await client.delete("/intelligence/file", params={"path": bad})
        assert deleted.status_code == 400, deleted.text
    base_put = await client.put(
        "/intelligence/file", json={"path": "agents/coder.md", "content": "# X", "layer": "base"}
    )
    assert base_put.status_code == 403
    assert "base layer is read-only" in base_put.json()["error"]
    base_delete = await client.delete(
        "/intelligence/file", params={"path": "agents/coder.md", "layer": "base"}
    )
    assert base_delete.status_code == 403
    odd = await client.put("/intelligence/file", json={"path": "notes/x.md", "content": "# X"})
    assert odd.status_code == 400
    assert "workflows/<id>/workflow.md" in odd.json()["error"]
    unknown_layer = await client.get(
        "/intelligence/file", params={"path": "agents/coder.md", "layer": "cloud"}
    )
    assert unknown_layer.status_code == 400
    assert not (api.home.root / "config.json.bak").exists()
    assert (BASE_LAYER_DIR / "agents" / "coder.md").read_text().startswith(BASE_CODER_TITLE)


async def test_tenant_override_is_written_shown_and_reverted(api: Api) -> None:
    client = api.client
    path = "agents/coder.md"
    written = await client.put("/intelligence/file", json={"path": path, "content": TENANT_CODER})
    assert written.status_code == 200, written.text
    assert written.json() == {
        "layer": "tenant",
        "path": path,
        "kind": "agent",
        "bytes": len(TENANT_CODER),
        "created": True,
        "warnings": [],
    }
    assert (api.home.root / "intelligence" / path).read_text() == TENANT_CODER
    assert [p.name for p in (api.home.root / "intelligence" / "agents").iterdir()] == ["coder.md"]

    view = (await client.get("/intelligence/file", params={"path": path})).json()
    assert view["layer"] == "tenant" and view["winningLayer"] == "tenant"
    assert view["content"] == TENANT_CODER
    assert [v["layer"] for v in view["versions"]] == ["tenant", "base"]
    assert view["lowerLayer"] == "base"
    assert view["lowerContent"].startswith(BASE_CODER_TITLE)
    base_view = await client.get("/intelligence/file", params={"path": path, "layer": "base"})
    assert base_view.json()["content"].startswith(BASE_CODER_TITLE)

    layers = (await client.get("/intelligence/layers")).json()
    assert [layer["name"] for layer in layers["layers"]] == ["base", "tenant"]
    base, tenant = layers["layers"]
    assert (base["writable"], tenant["writable"]) == (False, True)
    assert (base["rootKind"], tenant["rootKind"]) == ("package", "directory")
    assert tenant["counts"]["agent"] == 1 and base["counts"]["workflow"] >= 4
    entry = next(f for f in layers["files"] if f["path"] == path)
    assert entry == {
        "path": path,
        "kind": "agent",
        "mergeMode": "replace",
        "layers": ["base", "tenant"],
        "winner": "tenant",
    }

    reverted = await client.delete("/intelligence/file", params={"path": path})
    assert reverted.json() == {
        "layer": "tenant",
        "path": path,
        "deleted": True,
        "revertedTo": "base",
    }
    assert not (api.home.root / "intelligence" / "agents").exists()
    again = await client.delete("/intelligence/file", params={"path": path})
    assert again.status_code == 404
    shown = (await client.get("/intelligence/file", params={"path": path})).json()
    assert shown["layer"] == "base" and shown["lowerLayer"] is None
    missing = await client.get("/intelligence/file", params={"path": path, "layer": "tenant"})
    assert missing.status_code == 404


async def test_put_of_an_invalid_workflow_is_refused_with_the_issues(api: Api) -> None:
    path = "workflows/mine/workflow.md"
    content = "---\nphases:\n  - name: a\n    agent: agents/nobody.md\n---\n# Mine\n"
    refused = await api.client.put("/intelligence/file", json={"path": path, "content": content})
    assert refused.status_code == 422
    body = refused.json()
    assert body["ok"] is False
    assert body["issues"] == [
        {
            "path": path,
            "line": 4,
            "message": "phases[0].agent: unknown agent 'agents/nobody.md': no layer "
            "(base, tenant) has that file",
            "severity": "error",
        }
    ]
    assert not (api.home.root / "intelligence" / path).exists()
    forced = await api.client.put(
        "/intelligence/file", params={"force": "true"}, json={"path": path, "content": content}
    )
    assert forced.status_code == 200
    listed = (await api.client.get("/workflows")).json()["workflows"]
    assert next(w for w in listed if w["id"] == "mine")["source"] == "tenant"


async def test_preflight_reports_bad_yaml_unknown_agent_duplicate_phase_and_unknown_tool(
    api: Api,
) -> None:
    async def check(content: str) -> dict[str, Any]:
        response = await api.client.post(
            "/intelligence/preflight", json={"path": "workflows/x/workflow.md", "content": content}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    bad_yaml = await check("---\ndisplay_name: X\nphases: [\n  - name: a\n---\n")
    assert bad_yaml["ok"] is False
    (issue,) = bad_yaml["issues"]
    assert issue["line"] == 4 and issue["message"].startswith("invalid YAML")

    several = await check(
        "---\n"  # 1
        "phases:\n"  # 2
        "  - name: plan\n"  # 3
        "    agent: agents/planner.md\n"  # 4
        "    tools: [log, file_*, mcp__github__create_issue, mcp__coro__escalate]\n"  # 5
        "  - name: plan\n"  # 6
        "    agent: agents/ghost.md\n"  # 7
        "    tools: [log, teleport, fiel_read, zz_*]\n"  # 8
        "---\n# X\n"
    )
    assert several["ok"] is False
    found = {(i["line"], i["message"]) for i in several["issues"]}
    assert found == {
        (6, "phases[1].name: duplicate phase name 'plan' (first declared on line 3)"),
        (7, "phases[1].agent: unknown agent 'agents/ghost.md': no layer (base, tenant) has "
            "that file"),
        (8, "phases[1].tools: unknown tool 'teleport'"),
        (8, "phases[1].tools: unknown tool 'fiel_read' (did you mean 'file_read'?)"),
        (8, "phases[1].tools: tool pattern 'zz_*' matches no known tool"),
    }  # fmt: skip
    assert len(several["errors"]) == 5
    assert several["errors"][0].startswith("workflows/x/workflow.md:6: ")

    good = await check(
        "---\nphases:\n  - name: a\n    agent: agents/coder.md\n    tools: [log, scm_*]\n---\n# A\n"
    )
    assert good == {
        "path": "workflows/x/workflow.md",
        "kind": "workflow",
        "ok": True,
        "issues": [],
        "errors": [],
        "warnings": [],
    }
    refused = await api.client.post(
        "/intelligence/preflight", json={"path": "../x.md", "content": "x"}
    )
    assert refused.status_code == 400


async def test_preflight_accepts_claude_code_builtin_names_for_coro_tools(api: Api) -> None:
    # `Bash`, `Read`, ... in an allow-list stand for Coro's `shell` and file tools at run
    # time; preflight must not refuse a workflow the runner would run.
    content = (
        "---\n"  # 1
        "phases:\n"  # 2
        "  - name: work\n"  # 3
        "    agent: agents/coder.md\n"  # 4
        "    tools: [log, Bash, Read, Write, Edit, MultiEdit, Glob, Grep, 'Bash(git:*)',\n"  # 5
        "            mcp__coro__Read, WebFetch, Teleport]\n"  # 6
        "---\n# X\n"
    )
    response = await api.client.post(
        "/intelligence/preflight", json={"path": "workflows/x/workflow.md", "content": content}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is False
    assert {(i["line"], i["message"]) for i in body["issues"]} == {
        (6, "phases[0].tools: unknown tool 'WebFetch'"),
        (6, "phases[0].tools: unknown tool 'Teleport'"),
    }


def test_preflight_of_agents_skills_and_memory(tmp_path: Path) -> None:
    checker = Checker.create(IntelligenceLayers(tmp_path).stack(), builtin_tools().names())

    agent = preflight("agents/a.md", "---\ntools: [log, nope]\n---\nno heading here\n", checker)
    assert [(i.line, i.message) for i in agent.errors] == [
        (None, "agent markdown needs a '# Title' line"),
        (2, "tools: unknown tool 'nope'"),
    ]
    bad_front = preflight("agents/a.md", "---\n: [\n---\n# A\n", checker)
    assert bad_front.errors[0].line == 2
    skill = preflight(".claude/skills/lint/SKILL.md", "---\nname: other\n---\nbody\n", checker)
    assert [i.message for i in skill.errors] == ["skill front matter needs 'description'"]
    assert [i.message for i in skill.warnings] == [
        "skill name 'other' differs from its folder 'lint'"
    ]
    memory = preflight("memory/notes.md", "just text\n", checker)
    assert memory.ok and [i.severity for i in memory.issues] == ["warning"]
    assert preflight(".claude/CLAUDE.md", "Be brief.\n", checker).issues == []
    assert not preflight("agents/a.md", "   \n", checker).ok


# --- the tenant layer in a git remote -------------------------------------------------


def make_remote(tmp_path: Path, agent_text: str) -> tuple[Path, Path]:
    bare = tmp_path / "team-intelligence.git"
    git(tmp_path, "init", "--quiet", "--bare", str(bare))
    work = tmp_path / "team-work"
    git(tmp_path, "init", "--quiet", str(work))
    write(
        work,
        "workflows/team-flow/workflow.md",
        "---\ndisplay_name: Team flow\nphases:\n  - name: work\n    agent: agents/team.md\n"
        "---\n# Team flow\n\nTEAM WORKFLOW PROSE.\n",
    )
    write(work, "agents/team.md", agent_text)
    git(work, "add", "-A")
    git(work, "commit", "--quiet", "-m", "team intelligence")
    git(work, "push", "--quiet", str(bare), "HEAD:refs/heads/main")
    return bare, work


async def test_a_tenant_git_remote_is_cloned_and_its_workflow_used(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    bare, work = make_remote(tmp_path, "# Team agent\n\nTEAM AGENT V1\n")
    config = CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "intelligence": {"tenantGitUrl": str(bare), "tenantBranch": "main"},
        }
    )
    executor, registry = capturing()
    async with api_factory(config, executors=registry) as api:
        first = await api.create("workflows/team-flow/workflow.md", {})
        log = await finish(api, first)
        prompt = executor.prompts[(first, "work")]
        assert "TEAM WORKFLOW PROSE." in prompt and "TEAM AGENT V1" in prompt
        assert any("Layers base → remote → tenant" in line for line in log)
        assert any("agents/team.md from remote" in line for line in log)

        layers = (await api.client.get("/intelligence/layers")).json()
        remote = next(layer for layer in layers["layers"] if layer["name"] == "remote")
        assert remote["rootKind"] == "git" and remote["writable"] is False
        assert remote["remote"]["revision"] == git(work, "rev-parse", "HEAD")
        assert remote["remote"]["error"] is None
        assert remote["counts"]["workflow"] == 1 and remote["counts"]["agent"] == 1
        listed = (await api.client.get("/workflows")).json()["workflows"]
        assert next(w for w in listed if w["id"] == "team-flow")["source"] == "remote"
        refused = await api.client.put(
            "/intelligence/file",
            json={"path": "agents/team.md", "content": "# X\n", "layer": "remote"},
        )
        assert refused.status_code == 409

        # The team pushes a change; a forced refresh picks it up, the next job uses it.
        write(work, "agents/team.md", "# Team agent\n\nTEAM AGENT V2\n")
        git(work, "commit", "--quiet", "-am", "v2")
        git(work, "push", "--quiet", str(bare), "HEAD:refs/heads/main")
        refreshed = await api.client.get("/intelligence/layers", params={"refresh": "true"})
        remote = next(layer for layer in refreshed.json()["layers"] if layer["name"] == "remote")
        assert remote["remote"]["revision"] == git(work, "rev-parse", "HEAD")
        second = await api.create("workflows/team-flow/workflow.md", {})
        await finish(api, second)
        assert "TEAM AGENT V2" in executor.prompts[(second, "work")]

        # A local tenant file overrides the remote's.
        write(api.home.root / "intelligence", "agents/team.md", "# Mine\n\nLOCAL OVERRIDE\n")
        third = await api.create("workflows/team-flow/workflow.md", {})
        await finish(api, third)
        assert "LOCAL OVERRIDE" in executor.prompts[(third, "work")]


async def test_an_unreachable_tenant_remote_is_reported_and_jobs_still_run(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    config = CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "intelligence": {"tenantGitUrl": str(tmp_path / "no-such-repo.git")},
        }
    )
    async with api_factory(config) as api:
        workflow = write_workflow(api.home, "solo", [{"name": "only"}])
        job_id = await api.create(workflow, {})
        log = await finish(api, job_id)
        assert any(
            line.startswith("[intelligence] tenant remote") and "failed" in line for line in log
        )
        layers = (await api.client.get("/intelligence/layers")).json()
        remote = next(layer for layer in layers["layers"] if layer["name"] == "remote")
        assert remote["exists"] is False
        assert "no-such-repo.git" in remote["remote"]["error"]


@pytest.mark.parametrize(
    "url",
    ["-uhello", "ext::sh -c touch% /tmp/pwned", "https://user:secret@example.com/x.git"],
)
async def test_unsafe_remote_urls_are_refused_without_running_git(tmp_path: Path, url: str) -> None:
    from coro.intelligence.tenant import TenantRemote

    remote = TenantRemote(url, tmp_path / "cache")
    assert remote.status.error is not None
    assert "secret" not in remote.status.error
    await remote.refresh(force=True)
    assert not (tmp_path / "cache").exists()
