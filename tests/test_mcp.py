"""MCP with the official SDK on both sides.

- Coro's tools for one job, served over stdio (`coro mcp --job <id>`, a real
  subprocess against the runner's CORO_HOME) and over streamable HTTP (`/mcp/<jobId>`
  on the runner), listed and called by the SDK's client.
- External MCP servers from `mcpServers` (a tiny server written with the SDK, run over
  stdio) attached to the registry and called by a `script` job.
- `GET /config/claude-code-mcps` with secrets masked.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from pydantic import ValidationError

from coro.config import CoroConfig
from coro.extensions import builtin_tools
from coro.secrets import mask_secret
from tests.conftest import WAIT_LIMIT, Api, ApiFactory, write_workflow

REPO_ROOT = Path(__file__).resolve().parents[1]
ONE_PHASE = [{"name": "work", "agent": None}]
API_TOKEN = "test-token-0123456789abcdef"


async def parked_job(api: Api) -> str:
    """A job parked waiting for developer input: alive, and not touched by its runner."""
    workflow = write_workflow(api.home, "mcp-parked", ONE_PHASE)
    script = {"work": [[{"tool": "await_event", "input": {"eventName": "developer-input: ok?"}}]]}
    job_id = await api.create(workflow, script)
    await api.wait_for_line(job_id, "Job parked")
    return job_id


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


@asynccontextmanager
async def stdio_coro(home_root: Path, job_id: str, errlog: Path) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "coro", "mcp", "--job", job_id],
        env={"CORO_HOME": str(home_root)},
        cwd=str(REPO_ROOT),
    )
    with errlog.open("w") as err:
        async with asyncio.timeout(WAIT_LIMIT), Client(stdio_client(params, errlog=err)) as client:
            yield client


async def exercise_job_tools(api: Api, client: Client, job_id: str) -> None:
    """What both transports must do: list the registry's tools and act on the job."""
    listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == set(builtin_tools().names())
    for name in ("file_write", "file_read", "set_work_items", "get_work_items", "shell"):
        assert name in listed
    write_schema = listed["file_write"].input_schema
    assert set(write_schema["properties"]) == {"path", "content"}
    assert set(write_schema["required"]) == {"path", "content"}
    assert listed["set_work_items"].input_schema["properties"]["workItems"]["type"] == "array"
    assert listed["file_edit"].description

    written = await client.call_tool("file_write", {"path": "notes/a.txt", "content": "hi MCP\n"})
    assert not written.is_error, text_of(written)
    workdir = api.runner.env.workdir(job_id)
    assert (workdir / "notes" / "a.txt").read_text() == "hi MCP\n"
    read = await client.call_tool("file_read", {"path": "notes/a.txt"})
    assert not read.is_error
    assert "hi MCP" in text_of(read)

    items = await client.call_tool("set_work_items", {"workItems": ["parser", "printer"]})
    assert not items.is_error, text_of(items)
    job = await api.job(job_id)
    assert [w["name"] for w in job["workItems"]] == ["parser", "printer"]
    listed_items = await client.call_tool("get_work_items", {})
    assert "printer" in text_of(listed_items)

    escaping = await client.call_tool("file_write", {"path": "../escape.txt", "content": "x"})
    assert escaping.is_error
    assert text_of(escaping)
    assert not (workdir.parent / "escape.txt").exists()

    invalid = await client.call_tool("file_write", {"path": "only-a-path.txt"})
    assert invalid.is_error
    assert "content" in text_of(invalid)

    unknown = await client.call_tool("no_such_tool", {})
    assert unknown.is_error
    assert "Unknown tool" in text_of(unknown)


# --------------------------------------------------------------------------- stdio


async def test_stdio_server_lists_and_calls_coro_tools(api: Api, tmp_path: Path) -> None:
    job_id = await parked_job(api)
    async with stdio_coro(api.home.root, job_id, tmp_path / "stderr.txt") as client:
        await exercise_job_tools(api, client, job_id)
    # The calls are in the job's log (written by the other process, read from the store).
    stream = await api.wait_for_line(job_id, "[mcp] [tool-error] no_such_tool")
    assert any("[mcp] → set_work_items" in line for line in stream.texts())
    assert any("[mcp] [tool-error] file_write" in line for line in stream.texts())


async def test_stdio_server_can_be_limited_to_some_tools(api: Api, tmp_path: Path) -> None:
    job_id = await parked_job(api)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "coro", "mcp", "--job", job_id, "--tools", "file_*"],
        env={"CORO_HOME": str(api.home.root)},
        cwd=str(REPO_ROOT),
    )
    with (tmp_path / "stderr.txt").open("w") as err:
        async with asyncio.timeout(WAIT_LIMIT), Client(stdio_client(params, errlog=err)) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert names == {n for n in builtin_tools().names() if n.startswith("file_")}
            refused = await client.call_tool("set_work_items", {"workItems": ["x"]})
            assert refused.is_error
            assert "not allowed" in text_of(refused)


async def test_stdio_server_refuses_an_unknown_job(api: Api) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        "mcp",
        "--job",
        "no-such-job",
        cwd=REPO_ROOT,
        env={**os.environ, "CORO_HOME": str(api.home.root)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT_LIMIT):
        stdout, stderr = await process.communicate()
    assert process.returncode == 1
    assert stdout == b""
    assert "unknown job 'no-such-job'" in stderr.decode()


# --------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_http_endpoint_lists_and_calls_coro_tools(api: Api, mode: str) -> None:
    job_id = await parked_job(api)
    url = f"{api.served.url}/mcp/{job_id}"
    async with asyncio.timeout(WAIT_LIMIT), Client(url, mode=mode) as client:
        await exercise_job_tools(api, client, job_id)
    # Calls went through the runner's own store and log bus: live on the job's stream.
    await api.wait_for_line(job_id, "[mcp] → get_work_items")


async def test_http_endpoint_refuses_unknown_jobs_and_foreign_hosts(api: Api) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    response = await api.client.post("/mcp/no-such-job", json=initialize, headers=headers)
    assert response.status_code == 404
    assert response.json() == {"error": "Job not found: no-such-job"}

    job_id = await parked_job(api)
    foreign = await api.client.post(
        f"/mcp/{job_id}", json=initialize, headers={**headers, "Host": "evil.example"}
    )
    assert foreign.status_code == 403
    cross_site = await api.client.post(
        f"/mcp/{job_id}", json=initialize, headers={**headers, "Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403


async def test_http_endpoint_requires_the_api_token_when_configured(
    api_factory: ApiFactory,
) -> None:
    config = CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "apiToken": API_TOKEN}
    )
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with api_factory(config) as api:
        api.client.headers.update(auth)
        job_id = await parked_job(api)
        url = f"{api.served.url}/mcp/{job_id}"
        anonymous = await api.client.post(
            f"/mcp/{job_id}", json={}, headers={"Authorization": "Bearer wrong"}
        )
        assert anonymous.status_code == 401
        http = create_mcp_http_client(headers=auth)
        async with (
            asyncio.timeout(WAIT_LIMIT),
            http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            result = await client.call_tool("set_work_items", {"workItems": ["one"]})
            assert not result.is_error, text_of(result)
        assert [w["name"] for w in (await api.job(job_id))["workItems"]] == ["one"]


# --------------------------------------------------------------------------- MCP client

TINY_SERVER = textwrap.dedent(
    """
    import os

    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer("tiny")


    @server.tool()
    def shout(text: str) -> str:
        \"\"\"Upper-case a text.\"\"\"
        return text.upper() + "!"


    @server.tool()
    def refuse(reason: str) -> str:
        \"\"\"Always fails.\"\"\"
        raise ToolError(f"refused: {reason}")


    @server.tool()
    def whoami() -> str:
        \"\"\"Echoes the token it was given (a careless server).\"\"\"
        return "token=" + os.environ["TINY_TOKEN"]


    @server.tool()
    def hidden() -> str:
        \"\"\"Disallowed in config.\"\"\"
        return "should not be reachable"


    if __name__ == "__main__":
        server.run()
    """
)
TINY_TOKEN = "tiny-secret-token-0123456789"


def mcp_config(tmp_path: Path, **extra_servers: Any) -> CoroConfig:
    server_file = tmp_path / "tiny_server.py"
    server_file.write_text(TINY_SERVER)
    servers: dict[str, Any] = {
        "tiny": {
            "type": "stdio",
            "command": sys.executable,
            "args": [str(server_file)],
            "env": {"TINY_TOKEN": TINY_TOKEN},
            "disallowedTools": ["hidden"],
        },
        **extra_servers,
    }
    return CoroConfig.model_validate({"llm": {"defaultProvider": "script"}, "mcpServers": servers})


async def test_external_server_tools_are_called_by_a_job(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    async with api_factory(mcp_config(tmp_path)) as api:
        tools = api.runner.env.tools
        assert tools.get("mcp__tiny__shout") is not None
        assert tools.get("mcp__tiny__hidden") is None  # disallowedTools
        shout = tools.get("mcp__tiny__shout")
        assert shout is not None
        assert shout.input_schema["properties"]["text"]["type"] == "string"

        phases = [{"name": "work", "agent": None, "tools": ["mcp__tiny__*", "log"]}]
        workflow = write_workflow(api.home, "mcp-client", phases)
        script = {
            "work": [
                {"tool": "mcp__tiny__shout", "input": {"text": "hello"}},
                {"tool": "mcp__tiny__refuse", "input": {"reason": "not today"}},
                {"tool": "mcp__tiny__whoami", "input": {}},
                {"tool": "file_write", "input": {"path": "x.txt", "content": "x"}},
                {"tool": "log", "input": {"message": "done with MCP"}},
            ]
        }
        job_id = await api.create(workflow, script)
        result = await api.finish(job_id)
        assert result.done == "complete"
        texts = result.texts()
        assert "[mcp] tiny/shout → HELLO!" in texts
        assert any(
            t.startswith("[tool-error] mcp__tiny__refuse") and "refused: not today" in t
            for t in texts
        )
        assert any(t.startswith("[tool-error] file_write") and "not allowed" in t for t in texts)
        assert "done with MCP" in texts
        job = await api.job(job_id)
        outputs = [
            r["output"] for m in job["conversationHistory"] for r in m.get("toolResults") or []
        ]
        assert "HELLO!" in outputs
        # The server's secret, echoed back, is masked in the log and the transcript.
        raw = json.dumps(job) + "\n".join(result.lines)
        assert TINY_TOKEN not in raw
        assert f"token={mask_secret(TINY_TOKEN)}" in outputs

        servers = (await api.client.get("/mcp-servers")).json()["servers"]
        (tiny,) = servers
        assert tiny["status"] == "connected"
        assert sorted(tiny["tools"]) == [
            "mcp__tiny__refuse",
            "mcp__tiny__shout",
            "mcp__tiny__whoami",
        ]
        assert TINY_TOKEN not in json.dumps(servers)

        # The runner's own MCP endpoint serves the external tools too (one registry).
        url = f"{api.served.url}/mcp/{job_id}"
        async with asyncio.timeout(WAIT_LIMIT), Client(url) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "mcp__tiny__shout" in names
            forwarded = await client.call_tool("mcp__tiny__shout", {"text": "again"})
            assert text_of(forwarded) == "AGAIN!"
    assert tools.get("mcp__tiny__shout") is None  # disconnected with the runner


async def test_a_server_that_fails_to_start_is_reported_and_the_runner_serves(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    broken = {
        "command": sys.executable,
        "args": ["-c", "import sys; sys.stderr.write('boom: no config\\n'); sys.exit(3)"],
        "env": {"BROKEN_TOKEN": "broken-secret-0123456789"},
    }
    missing = {"type": "stdio", "command": str(tmp_path / "no-such-program")}
    off = {"type": "http", "url": "http://127.0.0.1:9/mcp", "enabled": False}
    config = mcp_config(tmp_path, broken=broken, missing=missing, off=off)
    async with api_factory(config) as api:
        assert (await api.client.get("/health")).status_code == 200
        servers = {s["id"]: s for s in (await api.client.get("/mcp-servers")).json()["servers"]}
        assert servers["tiny"]["status"] == "connected"
        assert servers["broken"]["status"] == "failed"
        assert "boom: no config" in servers["broken"]["error"]
        assert servers["broken"]["tools"] == []
        assert servers["missing"]["status"] == "failed"
        assert "no-such-program" in servers["missing"]["error"]
        assert servers["off"]["status"] == "disabled"
        assert "broken-secret" not in json.dumps(servers)

        workflow = write_workflow(api.home, "mcp-still", ONE_PHASE)
        script = {"work": [{"tool": "mcp__tiny__shout", "input": {"text": "still here"}}]}
        job_id = await api.create(workflow, script)
        result = await api.finish(job_id)
        assert result.done == "complete"
        assert "[mcp] tiny/shout → STILL HERE!" in result.texts()


def test_mcp_servers_config_is_validated() -> None:
    base = {"llm": {"defaultProvider": "script"}}
    for servers in (
        {"coro": {"type": "stdio", "command": "x"}},
        {"has space": {"type": "stdio", "command": "x"}},
        {"x": {"type": "stdio"}},
        {"x": {"type": "http", "url": "ftp://example.com"}},
        {"x": {"type": "carrier-pigeon", "url": "http://example.com"}},
        {"x": {"type": "stdio", "command": "x", "unknown": 1}},
    ):
        with pytest.raises(ValidationError):
            CoroConfig.model_validate({**base, "mcpServers": servers})
    config = CoroConfig.model_validate(
        {**base, "mcpServers": {"gh": {"command": "npx", "args": ["-y", "gh-mcp"]}}}
    )
    assert config.mcp_servers["gh"].type == "stdio"  # no type + command → stdio
    assert config.to_json()["mcpServers"]["gh"]["command"] == "npx"


# --------------------------------------------------------------------------- Claude Code


def test_mask_secret() -> None:
    assert mask_secret("ghp_abcdefghijklmnop") == "ghp_...mnop"
    assert mask_secret("short") == "***"
    assert mask_secret("") == ""


async def test_claude_code_mcps_are_listed_with_secrets_masked(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    project = tmp_path / "project"
    project.mkdir()
    github_token = "ghp_abcdefghijklmnop1234"
    bearer = "Bearer abcdefghijklmnopqrstuvwxyz"
    (user_home / ".claude.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "github": {
                        "command": "npx",
                        "args": ["-y", "@mcp/github", "--token", "tok-0123456789abcdef"],
                        "env": {"GITHUB_TOKEN": github_token, "DEBUG": "1"},
                    },
                    "broken": {"type": "stdio"},
                },
                "projects": {
                    str(project): {
                        "mcpServers": {
                            "docs": {
                                "type": "http",
                                "url": "https://docs.example.com/mcp?key=querysecret123456",
                                "headers": {"Authorization": bearer},
                            }
                        }
                    }
                },
            }
        )
    )
    (project / ".mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "events": {
                        "type": "sse",
                        "url": "http://localhost:9/sse",
                        "headers": {"X-Key": "tiny"},
                    }
                }
            }
        )
    )
    response = await api.client.get("/config/claude-code-mcps", params={"projectDir": str(project)})
    assert response.status_code == 200, response.text
    body = response.json()
    servers = {s["id"]: s for s in body["servers"]}
    assert set(servers) == {"github", "docs", "events"}  # the invalid entry is skipped

    github = servers["github"]
    assert github["source"] == "user"
    assert github["type"] == "stdio"
    assert github["command"] == "npx"
    assert github["env"] == {"GITHUB_TOKEN": "ghp_...1234", "DEBUG": "***"}
    assert github["args"][:3] == ["-y", "@mcp/github", "--token"]
    assert github["args"][3] == mask_secret("tok-0123456789abcdef")
    assert github["headers"] == {}

    docs = servers["docs"]
    assert docs["source"] == "local"
    assert docs["projectPath"] == str(project)
    assert docs["headers"] == {"Authorization": mask_secret(bearer)}
    assert "querysecret123456" not in docs["url"]

    events = servers["events"]
    assert events["source"] == "project"
    assert events["type"] == "sse"
    assert events["headers"] == {"X-Key": "***"}
    assert body["sources"] == [str(user_home / ".claude.json"), str(project / ".mcp.json")]

    text = response.text
    for secret in (github_token, bearer, "tok-0123456789abcdef", "querysecret123456"):
        assert secret not in text


async def test_claude_code_mcps_default_to_the_runner_directory_and_check_project_dir(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    project = tmp_path / "cwd-project"
    project.mkdir()
    (project / ".mcp.json").write_text(
        json.dumps({"mcpServers": {"here": {"command": "run-me", "env": {"K": "v"}}}})
    )
    (tmp_path / "empty-home").mkdir()
    monkeypatch.chdir(project)
    body = (await api.client.get("/config/claude-code-mcps")).json()
    assert [(s["id"], s["source"], s["env"]) for s in body["servers"]] == [
        ("here", "project", {"K": "***"})
    ]

    relative = await api.client.get("/config/claude-code-mcps", params={"projectDir": "rel/dir"})
    assert relative.status_code == 400
    assert "absolute" in relative.json()["error"]
    missing = await api.client.get(
        "/config/claude-code-mcps", params={"projectDir": str(tmp_path / "nope")}
    )
    assert missing.status_code == 400
    assert "error" in missing.json()

    (tmp_path / "empty-home" / ".claude.json").write_text("{not json")
    body = (await api.client.get("/config/claude-code-mcps")).json()
    assert [s["id"] for s in body["servers"]] == ["here"]
    assert body["warnings"] and "invalid JSON" in body["warnings"][0]
