"""The `shell` tool's bubblewrap sandbox, with the real bwrap and slirp4netns.

What a command can see, write and reach; `network: true`; a sandbox that cannot run
(bwrap missing or unable to create namespaces, slirp4netns missing) refusing clearly;
`tools.shell.sandbox: "off"`; and, end to end through a runner on a loopback port, a
job that cannot reach the runner's API (so it cannot forge a developer's approval).
"""

# Blocking file-system calls are fine in tests: they set up and inspect directories.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from pydantic import ValidationError

from coro.config import CoroConfig, CoroHome
from coro.domain.workflows import WorkflowError, parse_workflow
from coro.tools import shell
from coro.tools.registry import ToolContext, ToolRegistry
from coro.tools.sandbox import (
    SANDBOX_OFF_WARNING,
    SandboxPolicy,
    bwrap_argv,
    plan_mounts,
    runner_policy,
)
from tests.conftest import WAIT_LIMIT, Api, ApiFactory, make_config, write_workflow

API_TOKEN = "sandbox-test-token-0123456789"
PY = sys.executable


class FakeStore:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def log(self, job_id: str, text: str) -> None:
        self.lines.append(text)


@pytest.fixture
def registry() -> ToolRegistry:
    reg = ToolRegistry()
    shell.register(reg)
    return reg


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `$HOME` holding the kinds of secrets a developer's home does."""
    home = tmp_path / "user-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("SSH-KEY-SECRET\n")
    (home / ".config" / "gh").mkdir(parents=True)
    (home / ".config" / "gh" / "hosts.yml").write_text("oauth_token: GH-SECRET\n")
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text("aws_secret_access_key = AWS-SECRET\n")
    (home / ".netrc").write_text("machine example.com password NETRC-SECRET\n")
    (home / ".git-credentials").write_text("https://me:GITCRED-SECRET@example.com\n")
    (home / ".claude").mkdir()
    (home / ".claude" / ".credentials.json").write_text('{"token": "CLAUDE-SECRET"}\n')
    (home / ".claude.json").write_text('{"oauthAccount": "CLAUDEJSON-SECRET"}\n')
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def coro_home(tmp_path: Path) -> CoroHome:
    """A `$CORO_HOME` with a config holding the API token, a state db, another job."""
    home = CoroHome(tmp_path / "coro-home")
    home.save_config(CoroConfig(api_token=API_TOKEN))
    home.state_db.write_text("STATE-DB-SECRET")
    other = home.root / "work" / "other-job"
    other.mkdir(parents=True)
    (other / "theirs.txt").write_text("OTHER-JOB-SECRET\n")
    return home


def job_ctx(coro_home: CoroHome, store: FakeStore | None = None, **overrides: Any) -> ToolContext:
    config = coro_home.load_config()
    overrides.setdefault("sandbox", runner_policy(coro_home, config))
    return ToolContext(
        job_id="j1",
        phase="coding",
        workdir=coro_home.work_dir(config) / "j1",
        store=store or FakeStore(),  # type: ignore[arg-type]
        **overrides,
    )


async def run(registry: ToolRegistry, ctx: ToolContext, command: str, **extra: Any) -> Any:
    result = await registry.call("shell", {"command": command, **extra}, ctx)
    assert not result.is_error, result.output
    return result.output


def connect_script(host: str, port: int) -> str:
    """A command printing what connecting to host:port gave (`connected` or the error)."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(); s.settimeout(10)\n"
        "try:\n"
        f"    s.connect(({host!r}, {port})); print('connected')\n"
        "except OSError as e:\n"
        "    print('failed', e.errno, e.strerror)\n"
    )
    return f"{PY} -c {shlex.quote(code)}"


class Listener:
    """A TCP server on the host's 127.0.0.1 that counts the connections it gets."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as server:
        yield server


def interfaces(proc_net_dev: str) -> list[str]:
    return sorted(line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:])


def default_route_interfaces(proc_net_route: str) -> list[str]:
    rows = [line.split() for line in proc_net_route.splitlines()[1:] if line.strip()]
    return [row[0] for row in rows if row[1] == "00000000"]


def processes_in(pid_namespace: str) -> list[int]:
    """Host PIDs of the live processes in a PID namespace (`pid:[inode]`); a zombie (dead,
    waiting for its parent, here init, to collect it) does not count."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") != pid_namespace:
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue  # gone meanwhile, or not ours to look at
            if state not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def slirp_children() -> list[int]:
    """slirp4netns processes this test process started and has not reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Name", "").strip() == "slirp4netns" and (
            fields.get("PPid", "").strip() == str(os.getpid())
        ):
            found.append(int(entry.name))
    return found


# --- what a command can see ---------------------------------------------------------

SECRETS = (
    "SSH-KEY-SECRET",
    "GH-SECRET",
    "AWS-SECRET",
    "NETRC-SECRET",
    "GITCRED-SECRET",
    "CLAUDE-SECRET",
    "CLAUDEJSON-SECRET",
    "STATE-DB-SECRET",
    "OTHER-JOB-SECRET",
    "OUTSIDE-SECRET",
    API_TOKEN,
)


async def test_a_command_cannot_read_the_runner_files_other_jobs_or_home_secrets(
    registry: ToolRegistry, coro_home: CoroHome, user_home: Path, tmp_path: Path
) -> None:
    (tmp_path / "outside.txt").write_text("OUTSIDE-SECRET\n")
    targets = [
        coro_home.config_file,
        coro_home.state_db,
        coro_home.root / "work" / "other-job" / "theirs.txt",
        tmp_path / "outside.txt",
        *(user_home / p for p in (".ssh/id_ed25519", ".config/gh/hosts.yml")),
        *(user_home / p for p in (".aws/credentials", ".netrc", ".git-credentials")),
        *(user_home / p for p in (".claude/.credentials.json", ".claude.json")),
    ]
    command = " ; ".join(f"cat {t}" for t in targets) + f" ; ls -A {coro_home.root}"
    ctx = job_ctx(coro_home)

    out = await run(registry, ctx, command)

    seen = out["stdout"] + out["stderr"]
    for secret in SECRETS:
        assert secret not in seen
    # What stays visible: the job's own directory and the system.
    listing = await run(registry, ctx, "echo mine > a.txt; cat a.txt")
    assert listing["stdout"] == "mine\n"
    assert (await run(registry, ctx, "test -r /etc/os-release && echo yes"))["stdout"] == "yes\n"

    # The same command without the sandbox reads every one of them.
    unsandboxed = await run(
        registry, job_ctx(coro_home, sandbox=SandboxPolicy(mode="off")), command
    )
    for secret in SECRETS:
        assert secret in unsandboxed["stdout"]


async def test_hidden_places_outside_the_scratch_directories_are_empty(
    registry: ToolRegistry, coro_home: CoroHome
) -> None:
    # Directories of the real filesystem: the standard library (not under /tmp, which
    # is fresh anyway), and pytest's, inside the runner's Python, which stays visible
    # when it lies under /tmp (a venv there) — a hidden place inside it stays hidden.
    for elsewhere in (Path(json.__file__).resolve().parent, Path(pytest.__file__).parent):
        policy = SandboxPolicy(hidden=(elsewhere.resolve(),))
        command = f"ls -A {elsewhere.resolve()} | wc -l"
        out = await run(registry, job_ctx(coro_home, sandbox=policy), command)
        assert out["stdout"].strip() == "0", elsewhere
        assert out["exitCode"] == 0


async def test_the_runner_process_and_its_environment_are_not_visible(
    registry: ToolRegistry, coro_home: CoroHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-sandbox-secret")
    command = (
        f"test -e /proc/{os.getpid()} && echo runner-visible; "
        "cat /proc/[0-9]*/environ | tr '\\0' '\\n' | grep -c sk-ant-sandbox-secret; "
        "ls /proc | grep -cE '^[0-9]+$'"
    )
    out = await run(registry, job_ctx(coro_home), command)
    lines = out["stdout"].split()
    assert "runner-visible" not in lines
    assert lines[0] == "0"
    assert int(lines[1]) <= 4  # bwrap's init, bash, and the commands of this pipeline


async def test_tools_on_path_and_the_runners_python_stay_usable_inside_tmp(
    registry: ToolRegistry, coro_home: CoroHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout and its venv under /tmp (as CI's may be): the fresh /tmp would hide the
    interpreter and the tools on PATH, so those stay visible, read-only; the rest of /tmp
    does not."""
    tools = tmp_path / "venv" / "bin"
    tools.mkdir(parents=True)
    hello = tools / "coro-hello"
    hello.write_text("#!/bin/sh\necho hello from the toolchain\n")
    hello.chmod(0o755)
    (tmp_path / "venv" / "secret.txt").write_text("NOT-ON-PATH\n")
    (tmp_path / "loose.txt").write_text("LOOSE\n")
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    out = await run(
        registry,
        job_ctx(coro_home),
        f"coro-hello; {shlex.quote(PY)} -c 'print(6 * 7)'; "
        f"cat {tmp_path / 'loose.txt'} {tmp_path / 'venv' / 'secret.txt'}; "
        f"touch {tools / 'new'}",
    )
    assert out["stdout"].splitlines() == ["hello from the toolchain", "42"]
    assert "LOOSE" not in out["stdout"] and "NOT-ON-PATH" not in out["stdout"]
    assert "Read-only file system" in out["stderr"]
    assert not (tools / "new").exists()


async def test_a_command_cannot_write_outside_the_job_directory(
    registry: ToolRegistry, coro_home: CoroHome, user_home: Path, tmp_path: Path
) -> None:
    other = coro_home.root / "work" / "other-job"
    command = (
        f"echo x > {tmp_path}/escaped.txt; echo x > {other}/planted.txt; "
        f"echo x > {user_home}/planted.txt; echo x > /usr/escaped.txt; "
        "echo x > /tmp/scratch.txt && echo scratch-ok; "
        "mkdir -p src && echo kept > src/kept.txt"
    )
    ctx = job_ctx(coro_home)
    out = await run(registry, ctx, command)

    assert "Read-only file system" in out["stderr"]
    assert "scratch-ok" in out["stdout"]  # a private /tmp, gone with the command
    for path in (tmp_path / "escaped.txt", other / "planted.txt", user_home / "planted.txt"):
        assert not path.exists()
    assert not Path("/usr/escaped.txt").exists()
    assert not Path("/tmp/scratch.txt").exists()
    assert (ctx.workdir / "src" / "kept.txt").read_text() == "kept\n"


# --- the network -------------------------------------------------------------------


async def test_without_network_nothing_is_reachable_not_even_loopback(
    registry: ToolRegistry, coro_home: CoroHome, listener: Listener
) -> None:
    ctx = job_ctx(coro_home)
    out = await run(registry, ctx, connect_script("127.0.0.1", listener.port))
    assert out["stdout"].startswith("failed"), out
    assert listener.accepted == 0

    dev = await run(registry, ctx, "cat /proc/net/dev")
    assert interfaces(dev["stdout"]) == ["lo"]
    routes = await run(registry, ctx, "cat /proc/net/route")
    assert default_route_interfaces(routes["stdout"]) == []

    # Control: the same command unsandboxed does connect.
    plain = job_ctx(coro_home, sandbox=SandboxPolicy(mode="off"))
    assert (await run(registry, plain, connect_script("127.0.0.1", listener.port)))[
        "stdout"
    ] == "connected\n"
    assert listener.accepted == 1


async def test_network_true_gives_an_outbound_route_but_keeps_host_loopback_closed(
    registry: ToolRegistry, coro_home: CoroHome, listener: Listener
) -> None:
    ctx = job_ctx(coro_home, network=True)

    dev = await run(registry, ctx, "cat /proc/net/dev")
    routes = await run(registry, ctx, "cat /proc/net/route")
    resolv = await run(registry, ctx, "cat /etc/resolv.conf")
    loopback = await run(registry, ctx, connect_script("127.0.0.1", listener.port))
    # slirp4netns's address for the host, which would be the host's loopback
    gateway = await run(registry, ctx, connect_script("10.0.2.2", listener.port))

    assert "tap0" in interfaces(dev["stdout"])
    assert default_route_interfaces(routes["stdout"]) == ["tap0"]
    assert resolv["stdout"] == "nameserver 10.0.2.3\n"
    assert loopback["stdout"].startswith("failed"), loopback
    assert gateway["stdout"].startswith("failed"), gateway
    assert listener.accepted == 0
    assert slirp_children() == []  # each command's slirp4netns ended with it


async def test_network_true_without_slirp4netns_refuses_clearly(
    registry: ToolRegistry, coro_home: CoroHome
) -> None:
    policy = SandboxPolicy(slirp4netns=str(coro_home.root / "no-slirp4netns"))
    ctx = job_ctx(coro_home, sandbox=policy, network=True)
    result = await registry.call("shell", {"command": "echo ran > ran.txt"}, ctx)
    assert result.is_error
    assert "slirp4netns" in result.output
    assert "apt-get install slirp4netns" in result.output
    assert not (ctx.workdir / "ran.txt").exists()


async def test_a_network_that_cannot_be_set_up_fails_the_call_and_runs_nothing(
    registry: ToolRegistry, coro_home: CoroHome
) -> None:
    # `false` stands where slirp4netns would be: it exits without saying it is ready.
    ctx = job_ctx(coro_home, sandbox=SandboxPolicy(slirp4netns="false"), network=True)
    result = await registry.call("shell", {"command": "echo ran > ran.txt"}, ctx)
    assert result.is_error
    assert "network could not be set up (slirp4netns exited with 1" in result.output
    assert not (ctx.workdir / "ran.txt").exists()


# --- teardown ---------------------------------------------------------------------


async def test_a_timeout_takes_the_whole_sandbox_down(
    registry: ToolRegistry, coro_home: CoroHome
) -> None:
    command = "sleep 300 & readlink /proc/self/ns/pid; sleep 300"
    out = await run(registry, job_ctx(coro_home), command, timeoutSeconds=1)
    assert out["timedOut"] is True
    assert out["exitCode"] == 128 + 9
    namespace = out["stdout"].strip()
    assert namespace.startswith("pid:[")
    assert processes_in(namespace) == []


@pytest.mark.parametrize("network", [False, True], ids=["offline", "network"])
async def test_cancellation_takes_the_whole_sandbox_down(
    registry: ToolRegistry, coro_home: CoroHome, network: bool
) -> None:
    ctx = job_ctx(coro_home, network=network)
    ctx.workdir.mkdir(parents=True)
    fifo = ctx.workdir / "started"
    os.mkfifo(fifo)
    command = "sleep 300 >/dev/null 2>&1 & readlink /proc/self/ns/pid > started; wait"
    task = asyncio.create_task(registry.call("shell", {"command": command}, ctx))
    namespace = (await asyncio.to_thread(fifo.read_text)).strip()  # blocks until written
    pidfds = []
    for pid in processes_in(namespace):
        with contextlib.suppress(ProcessLookupError):  # (readlink, say, exiting as we look)
            pidfds.append(os.pidfd_open(pid))
    assert pidfds  # bwrap's init, bash and sleep
    try:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for pidfd in pidfds:  # bounded only as a safety net: sleep would live 300 s
            exited, _, _ = await asyncio.to_thread(select.select, [pidfd], [], [], WAIT_LIMIT)
            assert exited, "a process of the sandbox survived the cancellation"
        assert processes_in(namespace) == []
        assert slirp_children() == []
    finally:
        for pidfd in pidfds:
            os.close(pidfd)
        for pid in processes_in(namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- a sandbox that cannot run ---------------------------------------------------------


async def test_without_bubblewrap_the_tool_refuses_and_names_the_fix(
    registry: ToolRegistry, coro_home: CoroHome
) -> None:
    policy = SandboxPolicy(bwrap=str(coro_home.root / "bin" / "bwrap"))
    ctx = job_ctx(coro_home, sandbox=policy)
    result = await registry.call("shell", {"command": "echo ran > ran.txt"}, ctx)
    assert result.is_error
    message = str(result.output)
    assert "bubblewrap" in message
    assert "not installed" in message
    assert "apt-get install bubblewrap" in message
    assert 'tools.shell.sandbox to "off"' in message
    assert not (ctx.workdir / "ran.txt").exists()


async def test_a_bubblewrap_that_cannot_create_namespaces_is_refused(
    registry: ToolRegistry, coro_home: CoroHome
) -> None:
    # `false` stands where bwrap would be: the trial run fails like a bwrap that may not
    # create user namespaces (it exits 1).
    policy = SandboxPolicy(bwrap="false")
    ctx = job_ctx(coro_home, sandbox=policy)
    result = await registry.call("shell", {"command": "echo ran > ran.txt"}, ctx)
    assert result.is_error
    assert "cannot create its namespaces" in result.output
    assert "unprivileged_userns_clone" in result.output
    assert 'tools.shell.sandbox to "off"' in result.output
    assert not (ctx.workdir / "ran.txt").exists()


# --- the policy ----------------------------------------------------------------------


def test_the_runner_policy_hides_the_runner_places(tmp_path: Path) -> None:
    home = CoroHome(tmp_path / "coro-home")
    config = CoroConfig.model_validate(
        {
            "paths": {"workingDir": str(tmp_path / "work"), "intelligenceDir": str(tmp_path / "i")},
            "plugins": {
                "installed": {
                    "local": {"config": {"reposDir": str(tmp_path / "repos")}},
                    "claude-code": {"config": {"configDir": str(tmp_path / "cc")}},
                }
            },
        }
    )
    policy = runner_policy(home, config)
    assert policy.mode == "bwrap"
    assert set(policy.hidden) == {
        home.root,
        tmp_path / "work",
        tmp_path / "i",
        tmp_path / "repos",
        tmp_path / "cc",
    }
    off = CoroConfig.model_validate({"tools": {"shell": {"sandbox": "off"}}})
    assert runner_policy(home, off).off


def test_mounts_cover_hidden_places_then_bind_the_job_directory(
    tmp_path: Path, user_home: Path
) -> None:
    elsewhere = Path(json.__file__).resolve().parent  # the standard library, outside /tmp
    job = tmp_path / "work" / "j1"
    job.mkdir(parents=True)
    inside = job / "sub"
    inside.mkdir()
    link = tmp_path / "link-to-elsewhere"
    link.symlink_to(elsewhere)
    mounts = plan_mounts(SandboxPolicy(hidden=(link, inside, Path("/"))), job)

    assert "/tmp" in mounts.dirs
    assert "/run" in mounts.dirs
    assert str(elsewhere) in mounts.dirs  # the symlink's target
    assert str(inside) not in mounts.dirs  # the job's own
    assert "/" not in mounts.dirs
    # the home secrets are under /tmp here, already covered
    assert not any(d.startswith(str(user_home)) for d in mounts.dirs)

    argv = bwrap_argv("bwrap", job, mounts, ["bash", "-c", "true"])
    bind = argv.index("--bind")
    assert argv[bind : bind + 3] == ["--bind", str(job), str(job)]
    assert all(i < bind for i, a in enumerate(argv) if a in ("--tmpfs", "--ro-bind") and i > 4)
    for flag in ("--unshare-all", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--share-net" not in argv
    assert argv[-4:] == ["--", "bash", "-c", "true"]


def test_secret_places_named_by_the_environment_are_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdlib = Path(json.__file__).resolve().parent  # real paths outside /tmp
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(stdlib))
    monkeypatch.setenv("KUBECONFIG", f"{Path(os.__file__).resolve()}:relative/ignored")
    mounts = plan_mounts(SandboxPolicy(), tmp_path / "job")
    assert str(stdlib) in mounts.dirs
    assert str(Path(os.__file__).resolve()) in mounts.files


def test_home_secrets_are_covered_where_they_are(tmp_path: Path) -> None:
    home = Path(pytest.__file__).resolve().parent  # a "home" outside the scratch dirs
    mounts = plan_mounts(SandboxPolicy(), tmp_path / "job", home=home)
    # `_pytest` has none of the secret names: nothing of it is covered
    assert not any(p.startswith(str(home)) for p in (*mounts.dirs, *mounts.files))


def test_phase_network_is_parsed_and_validated() -> None:
    def workflow(network: str) -> str:
        return f"---\nphases:\n  - name: build\n    network: {network}\n  - name: test\n---\n"

    built = parse_workflow(workflow("true"), source="w.md", path="workflows/w/workflow.md")
    assert built.phases[0].network is True
    assert built.phases[1].network is False
    with pytest.raises(WorkflowError) as bad:
        parse_workflow(workflow('"yes please"'), source="w.md", path="workflows/w/workflow.md")
    assert bad.value.line == 4
    assert "network" in bad.value.message


def test_the_sandbox_setting_is_validated() -> None:
    assert CoroConfig().tools.shell.sandbox == "bwrap"
    assert CoroConfig.model_validate({"tools": {"shell": {"sandbox": "off"}}}).tools.shell.sandbox
    with pytest.raises(ValidationError, match="sandbox"):
        CoroConfig.model_validate({"tools": {"shell": {"sandbox": "maybe"}}})
    with pytest.raises(ValidationError, match="bogus"):
        CoroConfig.model_validate({"tools": {"shell": {"bogus": 1}}})


# --- through a runner ------------------------------------------------------------------


def tool_outputs(job: dict[str, Any]) -> list[str]:
    return [r["output"] for m in job["conversationHistory"] for r in m.get("toolResults", [])]


def shell_step(command: str) -> dict[str, Any]:
    return {"tool": "shell", "input": {"command": command}}


async def test_a_job_cannot_reach_the_runner_api_to_resume_a_job(api: Api) -> None:
    """A job's agent cannot forge a developer's approval: the control endpoints are not
    reachable from its sandbox, and it holds no credential for them."""
    workflow = write_workflow(api.home, "one", [{"name": "work", "agent": None}])
    escalate = {"tool": "escalate", "input": {"reason": "needs a human decision"}}
    victim = await api.create(workflow, {"work": [[escalate], [{"text": "resumed"}]]})
    assert (await api.finish(victim)).done == "escalated"

    resume_url = f"{api.served.url}/jobs/{victim}/resume"
    forge = (
        "import urllib.request\n"
        f"req = urllib.request.Request({resume_url!r}, data=b'{{}}', method='POST',\n"
        "    headers={'Content-Type': 'application/json'})\n"
        "try:\n"
        "    print('answered', urllib.request.urlopen(req, timeout=10).status)\n"
        "except OSError as e:\n"
        "    print('failed', e)\n"
    )
    attacker = await api.create(
        workflow,
        {
            "work": [
                shell_step(f"{PY} -c {shlex.quote(forge)}"),
                shell_step(f"curl -sS -X POST {resume_url} || echo curl-failed"),
                shell_step("env; cat $CORO_HOME/config.json"),
            ]
        },
    )
    assert (await api.finish(attacker)).done == "complete"

    assert (await api.job(victim))["status"] == "escalated"
    python_out, curl_out, env_out = (
        json.loads(o)["stdout"] + json.loads(o)["stderr"]
        for o in tool_outputs(await api.job(attacker))
    )
    assert python_out.startswith("failed") and "Connection refused" in python_out
    assert "answered" not in python_out
    assert "curl-failed" in curl_out or "Failed to connect" in curl_out
    assert "apiToken" not in env_out


async def test_the_runner_passes_the_policy_and_the_phase_network_to_shell(
    api_factory: ApiFactory,
) -> None:
    async with api_factory() as api:
        workflow = write_workflow(
            api.home,
            "two",
            [
                {"name": "offline", "agent": None},
                {"name": "online", "agent": None, "network": True},
            ],
        )
        look = shell_step(f"cat /proc/net/dev; ls -A {api.home.root}")
        job_id = await api.create(workflow, {"offline": [look], "online": [look]})
        result = await api.finish(job_id)
        offline, online = (json.loads(o)["stdout"] for o in tool_outputs(await api.job(job_id)))

    assert result.done == "complete", result.texts()
    assert SANDBOX_OFF_WARNING not in result.texts()
    # `$CORO_HOME` is empty inside but for the way down to the job's own directory
    assert offline.endswith("\nwork\n") and online.endswith("\nwork\n")
    assert interfaces(offline.removesuffix("work\n")) == ["lo"]
    assert "tap0" in interfaces(online.removesuffix("work\n"))


async def test_sandbox_off_runs_commands_unsandboxed_and_warns_at_every_job_start(
    api_factory: ApiFactory,
) -> None:
    config = make_config()
    config.tools.shell.sandbox = "off"
    async with api_factory(config) as api:
        workflow = write_workflow(api.home, "one", [{"name": "work", "agent": None}])
        job_id = await api.create(workflow, {"work": [shell_step("cat $CORO_HOME/config.json")]})
        result = await api.finish(job_id)
        (output,) = tool_outputs(await api.job(job_id))

    assert result.done == "complete"
    assert SANDBOX_OFF_WARNING in result.texts()
    assert "tools.shell.sandbox" in SANDBOX_OFF_WARNING
    assert '"llm"' in json.loads(output)["stdout"]  # the runner's config, readable


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_mcp_shell_calls_are_sandboxed_too(api: Api, transport: str, tmp_path: Path) -> None:
    workflow = write_workflow(api.home, "parked", [{"name": "work", "agent": None}])
    script = {"work": [[{"tool": "await_event", "input": {"eventName": "developer-input: ok?"}}]]}
    job_id = await api.create(workflow, script)
    await api.wait_for_line(job_id, "Job parked")
    command = f"cat {api.home.config_file}; echo here > mine.txt"

    params = StdioServerParameters(  # `coro mcp --job`: its own process, reading $CORO_HOME
        command=PY,
        args=["-m", "coro", "mcp", "--job", job_id],
        env={"CORO_HOME": str(api.home.root), "PATH": os.environ["PATH"]},
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    with (tmp_path / "stderr.txt").open("w") as errlog:
        target: Any = (
            f"{api.served.url}/mcp/{job_id}"
            if transport == "http"
            else stdio_client(params, errlog=errlog)
        )
        async with asyncio.timeout(WAIT_LIMIT), Client(target) as client:
            called = await client.call_tool("shell", {"command": command})
    text = "\n".join(getattr(c, "text", "") for c in called.content)
    assert not called.is_error, text
    out = json.loads(text)
    assert "No such file or directory" in out["stderr"]
    assert '"llm"' not in out["stdout"]
    assert (api.runner.env.workdir(job_id) / "mine.txt").read_text() == "here\n"
