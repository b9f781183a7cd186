"""The `shell` tool's sandbox: every command runs inside bubblewrap (`bwrap`).

What a sandboxed command sees:

* the filesystem read-only (`--ro-bind / /`), with a fresh `/dev`, a `/proc` of its own
  PID namespace (so no other process's environment, the runner's included, is
  readable), and fresh empty `/tmp`, `/var/tmp`, `/run` and the runner's temporary
  directory (other processes' temporary files and sockets — the Docker socket, a
  session bus, an ssh-agent — are not there);
* empty in place of the runner's own places (`SandboxPolicy.hidden`: `$CORO_HOME` with
  `config.json`, `state.db` and the local SCM's repositories, the work root with every
  other job's directory, the intelligence directory) and of the user's secrets: in
  `$HOME` (`HOME_SECRETS`, and anything named `.claude*`) and wherever the environment
  says they are (`SECRET_PATH_VARS`: `CLAUDE_CONFIG_DIR`, `KUBECONFIG`, …);
* its job directory, the only writable place, as its working directory.

It has no network, loopback included: in its own network namespace nothing listens, so
the runner's HTTP API (and every other service on the host's 127.0.0.1) is out of reach.
A phase with `network: true` gets outbound networking through `slirp4netns`, with the
host's loopback still closed (`--disable-host-loopback`); slirp4netns is tied to the
command (it ends when its exit pipe closes, also when the runner dies).

Every namespace is new (`--unshare-all`), every capability dropped, the sandbox dies
with `bwrap` (`--die-with-parent`), and the command gets the environment the runner
passes to `bwrap` (already stripped of secret-looking variables). bwrap reports the
PID of the sandbox's init (`--info-fd`): when the tool is done, that init is killed if
still there — which ends every process of the sandbox — and waited for.

Whether bwrap works here is probed once per process and binary (`bwrap … true`, run as a
subprocess, never blocking the event loop). When it is missing or cannot create
namespaces, the tool refuses with a message naming the fix. `tools.shell.sandbox: "off"`
in config.json runs commands unsandboxed (the phase loop then warns at every job start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from coro.config import CoroConfig, CoroHome

logger = logging.getLogger(__name__)

SandboxMode = Literal["bwrap", "off"]
SANDBOX_SETTING = "tools.shell.sandbox"

#: Files and directories in `$HOME` that never show inside the sandbox.
HOME_SECRETS: tuple[str, ...] = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config",
    ".docker",
    ".kube",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    ".pgpass",
    ".my.cnf",
    ".boto",
    ".s3cfg",
    ".oci",
    ".vault-token",
    ".terraform.d",
    ".password-store",
    ".local/share/keyrings",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".gem/credentials",
    ".m2/settings.xml",
    ".yarnrc",
    ".yarnrc.yml",
    ".mozilla",
    ".codex",
    ".gemini",
    ".coro",
    ".bash_history",
    ".zsh_history",
    ".python_history",
    ".psql_history",
    ".mysql_history",
    ".node_repl_history",
)
#: `$HOME` entries hidden by prefix (`~/.claude`, `~/.claude.json`, their backups).
HOME_SECRET_PREFIXES: tuple[str, ...] = (".claude",)
#: Environment variables naming secret places outside `$HOME` (`KUBECONFIG` may list
#: several, `:`-separated).
SECRET_PATH_VARS: tuple[str, ...] = (
    "CLAUDE_CONFIG_DIR",
    "XDG_CONFIG_HOME",
    "XDG_RUNTIME_DIR",
    "GNUPGHOME",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "DOCKER_CONFIG",
    "KUBECONFIG",
    "NETRC",
    "SSH_AUTH_SOCK",
)
#: Directories that are fresh and empty inside (plus the runner's temporary directory).
SCRATCH_DIRS: tuple[str, ...] = ("/tmp", "/var/tmp", "/run")
#: Plugin settings naming a directory the runner keeps to itself (the local SCM's
#: `reposDir`, Claude Code's `configDir`).
PLUGIN_DIR_SETTINGS: tuple[str, ...] = ("reposDir", "configDir")

#: slirp4netns's DNS forwarder (to the host's resolvers), the resolver of a sandbox with
#: network
SLIRP_DNS = "10.0.2.3"
SLIRP_MTU = 65520
#: bounds on setting up a sandbox (its network included) and on its teardown
SETUP_SECONDS = 30.0
TEARDOWN_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 30.0
_STDERR_TAIL = 2000

INSTALL_BWRAP = "apt-get install bubblewrap"
INSTALL_SLIRP = "apt-get install slirp4netns"
_OFF_HINT = (
    f'or set {SANDBOX_SETTING} to "off" in config.json to run commands unsandboxed '
    "(they can then read and write anything the runner can, and reach its API)"
)


#: logged at every job start while the sandbox is off
SANDBOX_OFF_WARNING = (
    f'[warning] {SANDBOX_SETTING} is "off" in config.json: shell commands run '
    "unsandboxed, with the runner's access to files, secrets and the network"
)


class SandboxError(Exception):
    """A sandboxed command cannot run; the message says why (and the fix)."""


class SandboxUnavailable(SandboxError):
    """The sandbox cannot run here at all; the message names the fix."""


@dataclass(frozen=True)
class SandboxPolicy:
    """How the `shell` tool confines commands (the default: bwrap, hiding only what
    every runner hides; `runner_policy` adds the runner's own places)."""

    mode: SandboxMode = "bwrap"
    #: the runner's own files and directories, empty inside the sandbox
    hidden: tuple[Path, ...] = ()
    #: the binaries used, by name (looked up on PATH) or path
    bwrap: str = "bwrap"
    slirp4netns: str = "slirp4netns"

    @property
    def off(self) -> bool:
        return self.mode == "off"


def runner_policy(home: CoroHome, config: CoroConfig) -> SandboxPolicy:
    """The policy of a runner (or `coro mcp`) using `home` and `config`."""
    hidden = [home.root, home.work_dir(config), home.intelligence_dir(config)]
    for slot in config.plugins.installed.values():
        for key in PLUGIN_DIR_SETTINGS:
            value = slot.config.get(key)
            if isinstance(value, str) and value.strip():
                hidden.append(Path(value.strip()).expanduser())
    return SandboxPolicy(mode=config.tools.shell.sandbox, hidden=tuple(dict.fromkeys(hidden)))


# --- is bwrap usable here? ------------------------------------------------------------

#: bwrap binary (resolved path) -> None when it works, else what is wrong (per process)
_probes: dict[str, str | None] = {}


def probe_argv(bwrap: str) -> list[str]:
    return [
        bwrap,
        *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"),
        *("--unshare-all", "--die-with-parent", "--cap-drop", "ALL", "--", "true"),
    ]


async def require_bwrap(policy: SandboxPolicy) -> str:
    """The bwrap binary to use, once it is known to work; else `SandboxUnavailable`."""
    found = await asyncio.to_thread(shutil.which, policy.bwrap)
    if found is None:
        raise SandboxUnavailable(
            f"The shell tool runs commands in a bubblewrap sandbox, but bubblewrap "
            f"({policy.bwrap}) is not installed. Install it ({INSTALL_BWRAP}), {_OFF_HINT}."
        )
    if found not in _probes:
        _probes[found] = await _probe(found)
    problem = _probes[found]
    if problem is not None:
        raise SandboxUnavailable(
            f"The shell tool runs commands in a bubblewrap sandbox, but {found} cannot "
            f"create its namespaces here ({problem}). Allow unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1; on Ubuntu also "
            "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for "
            "bwrap; in a container, run it with user namespaces allowed) and restart the "
            f"runner, {_OFF_HINT}."
        )
    return found


async def require_slirp(policy: SandboxPolicy) -> str:
    found = await asyncio.to_thread(shutil.which, policy.slirp4netns)
    if found is None:
        raise SandboxUnavailable(
            f"This phase has `network: true`, which needs slirp4netns ({policy.slirp4netns}) "
            f"to give the sandbox its own outbound network, and it is not installed. "
            f"Install it ({INSTALL_SLIRP}) or drop `network: true` from the phase."
        )
    return found


async def _probe(bwrap: str) -> str | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *probe_argv(bwrap),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return f"it could not be started: {exc.strerror or exc}"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            _, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return f"a trial run did not finish in {PROBE_TIMEOUT_SECONDS:g}s"
    if proc.returncode == 0:
        return None
    said = " ".join(err.decode("utf-8", "replace").split())[-_STDERR_TAIL:]
    return f"a trial run exited with {proc.returncode}" + (f": {said}" if said else "")


# --- what the sandbox shows -------------------------------------------------------------


@dataclass(frozen=True)
class Mounts:
    """The host paths to cover: directories with an empty tmpfs, files with /dev/null;
    and where the sandbox's resolv.conf goes when it has a network (None: nowhere)."""

    dirs: tuple[str, ...]
    files: tuple[str, ...]
    resolv_conf: str | None = None
    #: directories inside a fresh scratch directory that stay visible, read-only: the
    #: runner's Python and the directories on PATH (a venv under /tmp, say); mounted
    #: after the scratch directories and before everything else that is covered
    toolchain: tuple[str, ...] = ()
    #: which of `dirs` are scratch directories
    scratch: tuple[str, ...] = ()


def plan_mounts(policy: SandboxPolicy, jobdir: Path, home: Path | None = None) -> Mounts:
    """What to cover for a command in `jobdir` (blocking: it looks at the filesystem).

    Paths are resolved on the host first (a mount lands on a symlink's target, so the
    target is what gets covered). Nothing inside the job directory is covered (it is the
    job's own), nor anything under a directory already covered.
    """
    job = Path(os.path.realpath(jobdir))
    dirs: list[Path] = []
    files: list[Path] = []

    toolchain: list[Path] = []

    def cover(raw: Path | str) -> None:
        path = Path(os.path.realpath(raw))
        if path == Path("/") or path.is_relative_to(job):
            return
        covered = any(path.is_relative_to(d) for d in dirs)
        if covered and not any(path.is_relative_to(t) for t in toolchain):
            return
        if path.is_dir():
            dirs.append(path)
        elif path.exists():
            files.append(path)

    scratch_dirs = [Path(os.path.realpath(d)) for d in (*SCRATCH_DIRS, tempfile.gettempdir())]
    for scratch in scratch_dirs:
        cover(scratch)
    scratch_covered = list(dirs)
    hidden_places = [Path(os.path.realpath(h)) for h in policy.hidden]
    toolchain += _toolchain(job, scratch_covered, hidden_places)
    for hidden in policy.hidden:
        cover(hidden)
    base = home if home is not None else Path.home()
    for name in HOME_SECRETS:
        cover(base / name)
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if entry.name.startswith(HOME_SECRET_PREFIXES):
                cover(base / entry.name)
    for var in SECRET_PATH_VARS:
        for raw in os.environ.get(var, "").split(":"):
            if raw.strip() and os.path.isabs(raw.strip()):
                cover(raw.strip())
    # bwrap can put a file where it exists or inside a tmpfs (a symlink into /run)
    resolv = Path(os.path.realpath("/etc/resolv.conf"))
    writable = resolv.exists() or any(resolv.is_relative_to(d) for d in dirs)
    return Mounts(
        tuple(map(str, dirs)),
        tuple(map(str, files)),
        str(resolv) if writable else None,
        toolchain=tuple(map(str, toolchain)),
        scratch=tuple(map(str, scratch_covered)),
    )


def _toolchain(job: Path, scratch: list[Path], hidden: list[Path]) -> list[Path]:
    """The runner's interpreter and the PATH directories that a fresh scratch directory
    would hide (nothing under a hidden place or the job directory)."""
    candidates = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]
    candidates += os.environ.get("PATH", "").split(os.pathsep)
    kept: list[Path] = []
    for raw in candidates:
        if not raw or not os.path.isabs(raw):
            continue
        path = Path(os.path.realpath(raw))
        if not path.is_dir() or path.is_relative_to(job):
            continue
        if not any(path.is_relative_to(d) for d in scratch):
            continue
        if any(path.is_relative_to(d) for d in hidden) or any(path.is_relative_to(k) for k in kept):
            continue
        kept = [k for k in kept if not k.is_relative_to(path)] + [path]
    return kept


def bwrap_argv(
    bwrap: str,
    jobdir: Path,
    mounts: Mounts,
    command: Iterable[str],
    *,
    fds: SandboxFds | None = None,
) -> list[str]:
    """The bwrap command line running `command` in `jobdir` (mount order matters: the
    read-only root, then what is covered, then the writable job directory)."""
    job = os.path.realpath(jobdir)
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in mounts.scratch:
        argv += ["--tmpfs", path]
    for path in mounts.toolchain:  # before the hidden places, which may lie inside it
        argv += ["--ro-bind", path, path]
    for path in mounts.dirs:
        if path not in mounts.scratch:
            argv += ["--tmpfs", path]
    for path in mounts.files:
        argv += ["--ro-bind", "/dev/null", path]
    argv += ["--bind", job, job, "--chdir", job]
    argv += ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if fds is not None:
        argv += ["--info-fd", str(fds.info_w)]
    if fds is not None and fds.dns_r is not None and mounts.resolv_conf is not None:
        # slirp4netns's resolver: the host's may be on its loopback, which is closed
        argv += ["--ro-bind-data", str(fds.dns_r), mounts.resolv_conf]
    return [*argv, "--", *(fds.waiter(list(command)) if fds is not None else command)]


# --- networking for `network: true` ---------------------------------------------------


@dataclass
class SandboxFds:
    """The pipes between the runner and one sandbox.

    With network, the command is preceded by a waiter inside the sandbox: it says when
    bwrap has finished setting the sandbox up (bwrap configures loopback itself, and
    slirp4netns must not configure the namespace at the same time), then waits until
    slirp4netns is ready. slirp4netns configures the namespace in between.
    """

    info_r: int
    info_w: int  # bwrap writes the sandbox's PID here (JSON)
    #: with network only: the waiter writes to `up_w` once it runs, and starts the
    #: command at EOF on `go_r`; bwrap reads the sandbox's resolv.conf from `dns_r`
    up_r: int | None = None
    up_w: int | None = None
    go_r: int | None = None
    go_w: int | None = None
    dns_r: int | None = None
    closed: set[int] = field(default_factory=set)

    @classmethod
    def open(cls, *, network: bool) -> SandboxFds:
        info_r, info_w = os.pipe()
        if not network:
            return cls(info_r, info_w)
        up_r, up_w = os.pipe()
        go_r, go_w = os.pipe()
        dns_r, dns_w = os.pipe()
        # a few bytes: the pipe holds them until bwrap reads
        os.write(dns_w, f"nameserver {SLIRP_DNS}\n".encode())
        os.close(dns_w)
        return cls(info_r, info_w, up_r, up_w, go_r, go_w, dns_r)

    @property
    def network(self) -> bool:
        return self.go_w is not None

    @property
    def for_child(self) -> tuple[int, ...]:
        return tuple(fd for fd in (self.info_w, self.up_w, self.go_r, self.dns_r) if fd is not None)

    def waiter(self, command: list[str]) -> list[str]:
        """`command` preceded by the network waiter (or as it is, without network)."""
        if self.up_w is None or self.go_r is None:
            return command
        up, go = self.up_w, self.go_r
        script = f'echo >&{up}; exec {up}>&-; read -r -u {go} _; exec "$@" {go}<&-'
        return ["bash", "-c", script, "coro-network", *command]

    def close(self, *fds: int | None) -> None:
        for fd in fds:
            if fd is not None and fd not in self.closed:
                self.closed.add(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close_all(self) -> None:
        self.close(self.info_r, self.info_w, self.up_r, self.up_w, self.go_r, self.go_w)
        self.close(self.dns_r)


class Launch:
    """One command's start and end: the argv and fds of bwrap, the sandbox's PID
    namespace (held through a pidfd of its init), and its slirp4netns.

    `spawned()` right after the fork, `connect()` before anything waits on the command,
    `aclose()` always at the end: it makes sure nothing of the sandbox is left running.
    """

    def __init__(
        self,
        argv: list[str],
        fds: SandboxFds | None = None,
        slirp4netns: str | None = None,
    ) -> None:
        self.argv = argv
        self.fds = fds
        self.slirp4netns = slirp4netns
        self._init_pidfd: int | None = None
        self._slirp: asyncio.subprocess.Process | None = None
        self._slirp_exit_w: int | None = None
        self._slirp_stderr: asyncio.Task[bytes] | None = None

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return self.fds.for_child if self.fds is not None else ()

    def spawned(self) -> None:
        """The child has its copies: the runner's side of them goes."""
        if self.fds is not None:
            self.fds.close(*self.fds.for_child)

    async def connect(self) -> None:
        """Learn the sandbox's PID; with network, connect it, then let the command start.
        If bwrap ended before creating the sandbox, nothing is done: its exit status and
        stderr say why."""
        fds = self.fds
        if fds is None:
            return
        try:
            async with asyncio.timeout(SETUP_SECONDS):
                info = await _read_to_eof(fds.info_r)
                fds.close(fds.info_r)
                pid = _child_pid(info)
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):  # already over
                        self._init_pidfd = os.pidfd_open(pid)
                if pid is not None and fds.up_r is not None:
                    up = await _read_to_eof(fds.up_r, limit=1)
                    if up:  # else bwrap failed: its exit status and stderr say why
                        await self._start_slirp(pid)
        except TimeoutError:
            raise SandboxError(f"the sandbox was not ready within {SETUP_SECONDS:g}s") from None
        finally:
            fds.close(fds.up_r)
        # EOF: the waiter starts the command. On a failure above this stays open until
        # `aclose` has taken the sandbox down, so the command never runs.
        fds.close(fds.go_w)

    async def _start_slirp(self, pid: int) -> None:
        assert self.slirp4netns is not None
        ready_r, ready_w = os.pipe()
        exit_r, exit_w = os.pipe()
        self._slirp_exit_w = exit_w
        try:
            self._slirp = await asyncio.create_subprocess_exec(
                self.slirp4netns,
                "--configure",
                f"--mtu={SLIRP_MTU}",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                f"--ready-fd={ready_w}",
                f"--exit-fd={exit_r}",
                str(pid),
                "tap0",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(ready_w, exit_r),
                start_new_session=True,
            )
        except OSError as exc:
            os.close(ready_r)
            raise SandboxError(f"could not start slirp4netns: {exc.strerror or exc}") from exc
        finally:
            os.close(ready_w)
            os.close(exit_r)
        self._slirp_stderr = asyncio.create_task(_tail(self._slirp.stderr))
        try:
            ready = await _read_to_eof(ready_r, limit=1)
        finally:
            os.close(ready_r)
        if not ready:
            await self._slirp.wait()
            said = (await self._slirp_stderr).decode("utf-8", "replace").strip()
            raise SandboxError(
                "the sandbox's network could not be set up (slirp4netns exited with "
                f"{self._slirp.returncode}{': ' + said if said else ''})"
            )

    async def aclose(self) -> None:
        """Take down whatever is left of the sandbox (killing its PID namespace's init
        ends every process in it) and wait until it is gone; then close every pipe left
        and stop slirp4netns (closing its exit pipe ends it)."""
        pidfd, self._init_pidfd = self._init_pidfd, None
        if pidfd is not None:
            try:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                await _exited(pidfd, TEARDOWN_SECONDS)
            finally:
                os.close(pidfd)
        if self.fds is not None:  # only now: closing the go pipe would start a command
            self.fds.close_all()
        if self._slirp_exit_w is not None:
            with contextlib.suppress(OSError):
                os.close(self._slirp_exit_w)
            self._slirp_exit_w = None
        slirp, self._slirp = self._slirp, None
        if slirp is not None:
            try:
                async with asyncio.timeout(TEARDOWN_SECONDS):
                    await slirp.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(slirp.pid, signal.SIGKILL)
                await slirp.wait()
        if self._slirp_stderr is not None:
            self._slirp_stderr.cancel()
            await asyncio.gather(self._slirp_stderr, return_exceptions=True)


async def prepare(
    policy: SandboxPolicy, jobdir: Path, command: list[str], *, network: bool
) -> Launch:
    """How to run `command` in `jobdir` under `policy`; `SandboxUnavailable` if it cannot."""
    if policy.off:
        return Launch(command)
    bwrap = await require_bwrap(policy)
    slirp = await require_slirp(policy) if network else None
    mounts = await asyncio.to_thread(plan_mounts, policy, jobdir)
    fds = SandboxFds.open(network=network)
    return Launch(bwrap_argv(bwrap, jobdir, mounts, command, fds=fds), fds, slirp)


async def _exited(pidfd: int, limit: float) -> None:
    """Wait (at most `limit` seconds) until the process of `pidfd` has exited."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        async with asyncio.timeout(limit):
            await gone
    except TimeoutError:
        logger.warning("a sandbox's init did not exit within %gs of SIGKILL", limit)
    finally:
        loop.remove_reader(pidfd)


def _child_pid(info: bytes) -> int | None:
    try:
        data: Any = json.loads(info)
    except ValueError:
        return None
    pid = data.get("child-pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, int) and pid > 0 else None


async def _read_to_eof(fd: int, limit: int = 64 * 1024) -> bytes:
    """Read a pipe until EOF (or `limit` bytes) without blocking the event loop. The fd
    stays open (the caller closes it)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        data = b""
        while len(data) < limit and (chunk := await reader.read(limit - len(data))):
            data += chunk
        return data
    finally:
        transport.close()


async def _tail(stream: asyncio.StreamReader | None) -> bytes:
    """Read a stream to EOF, keeping its last bytes."""
    kept = b""
    if stream is None:
        return kept
    while chunk := await stream.read(64 * 1024):
        kept = (kept + chunk)[-_STDERR_TAIL:]
    return kept
