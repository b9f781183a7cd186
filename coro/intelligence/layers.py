"""Intelligence layers: where workflow, agent and memory markdown is looked up (SPEC §4.8).

Layers, lowest priority first:

- **base** — the markdown shipped inside this package; read-only.
- **remote** — the tenant's git remote (`intelligence.tenantGitUrl`), a cached clone
  under `$CORO_HOME/cache/` (see `coro.intelligence.tenant`); read-only here (change it
  by pushing to the remote). Present only when configured.
- **tenant** — the user's directory (`paths.intelligenceDir`, default
  `$CORO_HOME/intelligence`); editable through the API. It sits above the remote so a
  local edit (or an approved proposal) overrides the team's shared files.
- **repo:<slug>** — `<job dir>/<slug>/.coro/` of each repository the job cloned (in
  clone order); only for a job. Written by the agent, so it is *confined*: no symlink
  below the job directory is ever followed, and files that are not regular are skipped.

For a replace-kind path the highest layer that has the file wins; `.claude/CLAUDE.md`
and `memory/**/*.md` are instead appended in layer order when a job's layers are
materialised (`coro.intelligence.materialise`).

Paths come from job records, API requests and workflow files, so they are checked
before use: a path must be relative, must not climb out with `..`, and (in the trusted
layers) must still be inside its layer once symlinks are resolved.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from coro.config import CoroConfig, CoroHome
from coro.domain.models import Job
from coro.domain.paths import MAX_SEGMENT_LENGTH, check_relative_path
from coro.domain.workflows import (
    Workflow,
    WorkflowError,
    load_workflow_file,
    parse_workflow,
    strip_front_matter,
)
from coro.intelligence.tenant import TenantRemote

BASE_LAYER_DIR = Path(__file__).parent / "base"

LayerKind = Literal["base", "remote", "tenant", "repo"]
BASE: LayerKind = "base"
REMOTE: LayerKind = "remote"
TENANT: LayerKind = "tenant"
REPO: LayerKind = "repo"
#: the directory of a checkout that holds its layer
REPO_LAYER_DIR = ".coro"

#: What a layer may contribute; anything else in a layer root (proposals, notes, a
#: `.git` directory) is not intelligence.
LAYOUT = (".claude", "agents", "workflows", "memory", "snippets")
SKIPPED_NAMES = frozenset({".DS_Store", ".git"})
#: Files above this size are skipped (a layer is prose, not data).
MAX_FILE_BYTES = 1024 * 1024
#: A layer with more files than this is cut off (reported as a warning).
MAX_LAYER_FILES = 5000

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class WorkflowNotFound(Exception):
    """No layer has a file at the requested workflow path."""

    def __init__(self, workflow_path: str, layers: Sequence[str] = ("tenant", "base")) -> None:
        self.workflow_path = workflow_path
        where = ", ".join(layers) if layers else "any"
        super().__init__(
            f"workflow '{workflow_path}' was not found in the intelligence layers ({where}); "
            "expected a file such as 'workflows/job/workflow.md'"
        )


@functools.lru_cache(maxsize=256)
def _real_root(root: Path) -> Path:
    """A layer root with symlinks resolved (roots do not move while the runner runs)."""
    return root.resolve()


#: Parsed workflows by (real path, layer path, inode, size, mtime): the identity that
#: `load_workflow_file` caches by, taken from the lookup's own `lstat`.
_WORKFLOWS: dict[tuple[str, str, int, int, int], Workflow] = {}
_WORKFLOWS_KEPT = 256


@functools.cache
def _packaged_base_files() -> tuple[str, ...]:
    """The files of the base layer that ships with Coro: it changes only with Coro
    itself, so it is listed once per process, not at every job's materialisation."""
    layer = Layer(name=BASE, kind=BASE, root=BASE_LAYER_DIR)
    return tuple(relative for relative, _ in layer._listing(None))


def within_root(root: Path, relative: str) -> Path:
    """`root/relative` with symlinks resolved; ValueError when that leaves the root."""
    return _within(root, relative)[0]


def _within(root: Path, relative: str) -> tuple[Path, os.stat_result | None]:
    """`within_root`, with the target's `lstat` when that was taken on the way (it is no
    symlink then, so that is what `stat` gives too); None when not."""
    try:
        real_root = _real_root(root)
        target, info = _resolve_below(real_root, relative)
    except (OSError, RuntimeError) as exc:  # symlink loops end up here
        raise ValueError(f"path '{relative}' cannot be resolved in {root}: {exc}") from None
    if not _inside(target, real_root):
        raise ValueError(f"path '{relative}' resolves outside its layer ({root})")
    return Path(target), info


def _inside(path: str, real_root: Path) -> bool:
    """`Path(path).is_relative_to(real_root)` for a resolved `path` (a string test)."""
    root = str(real_root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _resolve_below(real_root: Path, relative: str) -> tuple[str, os.stat_result | None]:
    """`str((real_root / relative).resolve())`, and the target's `lstat` when known (see
    `_within`). `Path.resolve` examines every component from `/` down; the root is
    resolved already, so when no component of `relative` is a symlink (nearly always)
    checking those below the root gives the same path for a fraction of the cost (this
    runs for every layer file at every phase start)."""
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return str((real_root / relative).resolve()), None
    path = str(real_root).rstrip("/")
    info: os.stat_result | None = None
    for part in parts:
        path = f"{path}/{part}"
        try:
            info = os.lstat(path)
        except OSError:  # missing (or below a file): resolve() keeps such a part as it is
            info = None
            continue
        if stat.S_ISLNK(info.st_mode):
            return str((real_root / relative).resolve()), None
    return path, info


def agent_file(agent: str) -> str:
    """`coder` → `agents/coder.md`; a path is returned unchanged."""
    if "/" not in agent and not agent.endswith(".md"):
        return f"agents/{agent}.md"
    return agent


def safe_segment(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and len(name) <= MAX_SEGMENT_LENGTH
    )


# --- confined reads ---------------------------------------------------------------------


def _open_dir_nofollow(anchor: Path, parts: Sequence[str]) -> int:
    """A descriptor of `anchor/parts...`, refusing a symlink at every step below `anchor`.

    Raises OSError (ELOOP/ENOTDIR for a symlink, ENOENT when missing)."""
    fd = os.open(anchor, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for part in parts:
            if not safe_segment(part):
                raise OSError(errno.EINVAL, f"unsafe path segment {part!r}")
            following = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = following
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd_file(dir_fd: int, name: str, limit: int) -> bytes | None:
    """A regular file's bytes, opened without following a symlink; None otherwise."""
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        return None if len(data) > limit else data
    finally:
        os.close(fd)


def _read_regular(path: str, limit: int) -> bytes | None:
    """A regular file's bytes (None when it is not one, or larger than `limit`), opened
    without following a symlink; OSError when it cannot be opened so."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, max(info.st_size + 1, 4096)))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        return None if len(data) > limit else data
    except OSError:
        return None
    finally:
        os.close(fd)


# --- layers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer: a directory with the layout of `LAYOUT`."""

    name: str
    kind: LayerKind
    root: Path
    writable: bool = False
    #: agent-controlled: read below `anchor` without following any symlink
    confined: bool = False
    anchor: Path | None = None
    #: how the layer's files are named in banners and errors (a path or a URL)
    origin: str = ""
    #: the commit of a git-backed layer, when known
    revision: str | None = None

    def describe(self, relative: str) -> str:
        """Where `relative` of this layer comes from, for people."""
        base = self.origin or str(self.root)
        return f"{base.rstrip('/')}/{relative}"

    def _confined_parts(self) -> tuple[Path, tuple[str, ...]]:
        assert self.anchor is not None
        return self.anchor, self.root.relative_to(self.anchor).parts

    def exists(self) -> bool:
        if not self.confined:
            return self.root.is_dir()
        anchor, parts = self._confined_parts()
        try:
            os.close(_open_dir_nofollow(anchor, parts))
        except OSError:
            return False
        return True

    def read_bytes(self, relative: str, limit: int = MAX_FILE_BYTES) -> bytes | None:
        """The file's bytes, or None when this layer has no (readable, regular) file there.

        A trusted layer raises ValueError when a symlink leads out of it; a confined
        layer treats any symlink as absent."""
        relative = check_relative_path(relative)
        if self.confined:
            anchor, parts = self._confined_parts()
            *folders, name = relative.split("/")
            try:
                fd = _open_dir_nofollow(anchor, (*parts, *folders))
            except OSError:
                return None
            try:
                return _read_fd_file(fd, name, limit)
            finally:
                os.close(fd)
        if not self.root.is_dir():
            return None
        target = within_root(self.root, relative)
        try:
            if not target.is_file() or target.stat().st_size > limit:
                return None
            return target.read_bytes()
        except OSError:
            return None

    def file_path(self, relative: str) -> Path | None:
        """The real path of the file (trusted layers), or `root/relative` when a confined
        layer has a regular file there; None when absent."""
        relative = check_relative_path(relative)
        if self.confined:
            return self.root / relative if self.read_bytes(relative) is not None else None
        found = self._regular_file(relative)
        return found[0] if found is not None else None

    def _regular_file(self, relative: str) -> tuple[Path, os.stat_result | None] | None:
        """A trusted layer's `file_path`, with the file's `stat` when the lookup took it.
        (Nothing below a root that is no directory can be a file: the root is checked
        only when the path does not resolve, where it makes the answer None.)"""
        try:
            target, info = _within(self.root, relative)
        except ValueError:
            if not self.root.is_dir():
                return None
            raise
        if info is not None:
            return (target, info) if stat.S_ISREG(info.st_mode) else None
        return (target, None) if target.is_file() else None

    def files(self, warnings: list[str] | None = None) -> list[str]:
        """Every file of the layer's layout as a sorted relative POSIX path.

        Trusted layers follow symlinks that stay inside the layer; confined layers
        list symlinks (they are skipped when read) but never descend through one."""
        if self.kind == BASE and self.root == BASE_LAYER_DIR:
            return list(_packaged_base_files())
        return [relative for relative, _ in self._listing(warnings)]

    def contents(
        self, warnings: list[str] | None = None
    ) -> list[tuple[str, bytes | ValueError | None]]:
        """`files()` with what `read_bytes` gives for each (None: unreadable or not a
        regular file; ValueError: refused), in one pass: a trusted layer's file that the
        listing reached without a symlink is read at once, without resolving it again."""
        if self.kind == BASE and self.root == BASE_LAYER_DIR:
            listing: list[tuple[str, str | None]] = [(f, None) for f in _packaged_base_files()]
        else:
            listing = self._listing(warnings)
        contents: list[tuple[str, bytes | ValueError | None]] = []
        for relative, direct in listing:
            try:
                relative = check_relative_path(relative)
                try:
                    data = _read_regular(direct, MAX_FILE_BYTES) if direct else None
                except OSError:  # no longer the plain file the listing saw
                    direct = None
                if direct is None:
                    data = self.read_bytes(relative)
            except ValueError as exc:
                contents.append((relative, exc))
                continue
            contents.append((relative, data))
        return contents

    def _listing(self, warnings: list[str] | None) -> list[tuple[str, str | None]]:
        """The layer's files, sorted, each with its real path when the walk reached it
        without a symlink (a trusted layer's regular file), else None."""
        found: list[tuple[str, str | None]] = []
        if not self.exists():
            return found
        for top in LAYOUT:
            walk = self._walk_trusted(top) if not self.confined else self._walk_confined(top)
            for entry in walk:
                if len(found) >= MAX_LAYER_FILES:
                    if warnings is not None:
                        warnings.append(
                            f"layer {self.name} has more than {MAX_LAYER_FILES} files; "
                            "the rest are ignored"
                        )
                    return sorted(found)
                found.append(entry)
        return sorted(found)

    def _walk_confined(self, top: str) -> Iterator[tuple[str, str | None]]:
        anchor, parts = self._confined_parts()
        try:
            root_fd = _open_dir_nofollow(anchor, parts)
        except OSError:
            return
        try:
            try:
                info = os.stat(top, dir_fd=root_fd, follow_symlinks=False)
            except OSError:
                return
            if not stat.S_ISDIR(info.st_mode):
                return
            for dirpath, dirnames, filenames, _fd in os.fwalk(
                top, dir_fd=root_fd, follow_symlinks=False
            ):
                dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_NAMES)
                for name in sorted(filenames):
                    if name not in SKIPPED_NAMES:
                        yield f"{dirpath}/{name}", None
        except OSError:
            return  # changed while being read: what was listed so far stands
        finally:
            os.close(root_fd)

    def _walk_trusted(self, top: str) -> Iterator[tuple[str, str | None]]:
        """`os.walk(root/top, followlinks=True)`, top-down in name order, keeping the
        folders and files whose real path is inside the layer (each folder once). A
        folder reached from a real one through no symlink is real itself, and so are
        its entries that are not symlinks: their type comes from the directory listing
        and their path needs no resolving (only symlinks are resolved, file by file)."""
        real_root = _real_root(self.root)
        prefix = str(real_root).rstrip("/") + "/"
        try:
            mode = os.lstat(prefix + top).st_mode
        except OSError:
            return
        if stat.S_ISLNK(mode) and not os.path.isdir(prefix + top):
            return
        if not stat.S_ISLNK(mode) and not stat.S_ISDIR(mode):
            return
        seen: set[tuple[int, int]] = set()
        # (relative folder, whether its path is real: no symlink below the root)
        pending: list[tuple[str, bool]] = [(top, not stat.S_ISLNK(mode))]
        while pending:
            rel_dir, real = pending.pop()
            dirpath = prefix + rel_dir
            try:
                with os.scandir(dirpath) as scan:
                    entries = list(scan)
            except OSError:
                continue  # os.walk skips a folder it cannot list
            folders: dict[str, bool] = {}  # name → whether it is a symlink
            files: list[os.DirEntry[str]] = []
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    folders[entry.name] = entry.is_symlink()
                else:
                    files.append(entry)
            try:
                info = os.stat(dirpath)
                if (info.st_dev, info.st_ino) in seen or not (
                    real or _inside(_resolve_below(real_root, rel_dir)[0], real_root)
                ):
                    continue
            except OSError:
                continue
            seen.add((info.st_dev, info.st_ino))
            for entry in sorted(files, key=lambda e: e.name):
                if entry.name in SKIPPED_NAMES:
                    continue
                relative = f"{rel_dir}/{entry.name}"
                if real and not entry.is_symlink():
                    if entry.is_file(follow_symlinks=False):
                        yield relative, entry.path
                    continue
                try:
                    if os.path.isfile(within_root(self.root, relative)):
                        yield relative, None
                except ValueError:
                    continue
            children = sorted(name for name in folders if name not in SKIPPED_NAMES)
            for name in reversed(children):
                pending.append((f"{rel_dir}/{name}", real and not folders[name]))

    def entries(self, folder: str) -> list[str]:
        """Names directly inside `folder` (a relative directory), sorted; [] if none."""
        folder = check_relative_path(folder)
        try:
            if self.confined:
                anchor, parts = self._confined_parts()
                fd = _open_dir_nofollow(anchor, (*parts, *folder.split("/")))
                try:
                    return sorted(os.listdir(fd))
                finally:
                    os.close(fd)
            target = within_root(self.root, folder)
            return sorted(p.name for p in target.iterdir()) if target.is_dir() else []
        except (OSError, ValueError):
            return []

    def load_workflow(self, relative: str) -> Workflow | None:
        """This layer's workflow at `relative`; None when it has no such file.
        Raises WorkflowError when the file is invalid."""
        relative = check_relative_path(relative)
        if self.confined:
            data = self.read_bytes(relative)
            if data is None:
                return None
            source = self.describe(relative)
            return parse_workflow(decode_markdown(data, source), source=source, path=relative)
        found = self._regular_file(relative)
        if found is None:
            return None
        target, info = found
        # What `load_workflow_file` would find in its cache, without its own `stat`.
        key = (str(target), relative, info.st_ino, info.st_size, info.st_mtime_ns) if info else None
        workflow = _WORKFLOWS.get(key) if key else None
        if workflow is None:
            workflow = load_workflow_file(target, relative)
            if key:
                if len(_WORKFLOWS) >= _WORKFLOWS_KEPT:
                    _WORKFLOWS.pop(next(iter(_WORKFLOWS)))
                _WORKFLOWS[key] = workflow
        return workflow

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "writable": self.writable,
            "confined": self.confined,
            "origin": self.origin or str(self.root),
        }


def decode_markdown(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise WorkflowError(source, line, "file is not valid UTF-8") from None


def summarize_workflow(workflow: Workflow, layer: str) -> dict[str, Any]:
    """The `GET /workflows` entry of a workflow found in `layer`."""
    return {
        "id": workflow.id,
        "workflowPath": workflow.path,
        "name": workflow.display_name,
        "description": workflow.description,
        "kind": workflow.kind,
        "source": layer,
        "phases": [
            {
                "name": phase.name,
                "status": phase.status,
                "agent": phase.agent,
                "model": phase.model,
                "tier": phase.tier,
                "interactiveCheckpoint": phase.interactive_checkpoint,
                "subagents": [sub.name for sub in phase.subagents],
            }
            for phase in workflow.phases
        ],
        "initialPhase": workflow.initial_phase,
    }


@dataclass
class LayerStack:
    """An ordered set of layers, lowest priority first."""

    layers: tuple[Layer, ...]
    warnings: list[str] = field(default_factory=list)

    def highest_first(self) -> list[Layer]:
        return list(reversed(self.layers))

    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def get(self, name: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.name == name), None)

    def of_kind(self, kind: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.kind == kind]

    def with_file(self, path: str) -> list[Layer]:
        """The layers that have a file at `path`, highest first."""
        relative = check_relative_path(path)
        return [layer for layer in self.highest_first() if layer.file_path(relative)]

    def locate(self, path: str) -> tuple[Layer, Path] | None:
        """The winning layer and file for `path`, or None when no layer has it."""
        relative = check_relative_path(path)
        for layer in self.highest_first():
            target = layer.file_path(relative)
            if target is not None:
                return layer, target
        return None

    def read(self, path: str) -> tuple[Layer, str] | None:
        """The winning layer and the file's text (undecodable bytes replaced)."""
        relative = check_relative_path(path)
        for layer in self.highest_first():
            data = layer.read_bytes(relative)
            if data is not None:
                return layer, data.decode("utf-8-sig", errors="replace")
        return None

    def load_workflow(self, workflow_path: str) -> Workflow:
        """Parse the winning workflow file. A higher file wins even when it is invalid,
        so the person who wrote it sees their error instead of a silent fallback."""
        return self.load_workflow_from(workflow_path)[1]

    def load_workflow_from(self, workflow_path: str) -> tuple[Layer, Workflow]:
        """`load_workflow`, with the layer the workflow came from."""
        relative = check_relative_path(workflow_path)
        for layer in self.highest_first():
            workflow = layer.load_workflow(relative)
            if workflow is not None:
                return layer, workflow
        raise WorkflowNotFound(workflow_path, [layer.name for layer in self.highest_first()])

    def read_agent_from(self, agent_path: str) -> tuple[Layer, str] | None:
        """The winning layer and prose of an agent file (`agents/<name>.md` or `<name>`),
        front matter removed; None when no layer has it."""
        found = self.read(agent_file(agent_path))
        if found is None:
            return None
        return found[0], strip_front_matter(found[1])

    def read_agent(self, agent_path: str) -> str | None:
        found = self.read_agent_from(agent_path)
        return found[1] if found else None

    def list_workflows(
        self, kind: str | None = None, *, detail: bool = False
    ) -> list[dict[str, Any]]:
        """Every usable `workflows/<id>/workflow.md`, the highest layer winning per path,
        sorted by name. An invalid higher file still shadows a lower one (that is the
        file a job would load), and invalid files are left out. With `detail`, each
        entry also names the lower layers it overrides (`overrides`)."""
        seen: set[str] = set()
        entries: list[dict[str, Any]] = []
        ordered = self.highest_first()
        for index, layer in enumerate(ordered):
            for workflow_id in layer.entries("workflows"):
                if not safe_segment(workflow_id):
                    continue
                key = PurePosixPath("workflows", workflow_id, "workflow.md").as_posix()
                if key in seen:
                    continue
                try:
                    workflow = layer.load_workflow(key)
                except (WorkflowError, ValueError):
                    seen.add(key)  # it shadows lower layers: a job would load it
                    continue
                if workflow is None:
                    continue
                seen.add(key)
                if kind is not None and workflow.kind != kind:
                    continue
                entry = summarize_workflow(workflow, layer.name)
                if detail:
                    entry["overrides"] = [
                        lower.name for lower in ordered[index + 1 :] if _has(lower, key)
                    ]
                entries.append(entry)
        entries.sort(key=lambda entry: (str(entry["name"]).lower(), entry["workflowPath"]))
        return entries


def _has(layer: Layer, relative: str) -> bool:
    try:
        return layer.file_path(relative) is not None
    except ValueError:
        return False


def repo_layers(job: Job, workdir: Path) -> list[Layer]:
    """`<job dir>/<slug>/.coro/` of each checkout of the job, in clone order."""
    layers: list[Layer] = []
    seen: set[str] = set()
    for checkout in job.checkouts:
        slug = checkout.slug
        if not safe_segment(slug) or slug in seen:
            continue
        seen.add(slug)
        layers.append(
            Layer(
                name=f"{REPO}:{slug}",
                kind=REPO,
                root=workdir / slug / REPO_LAYER_DIR,
                confined=True,
                anchor=workdir,
                origin=f"{slug}/{REPO_LAYER_DIR}",
            )
        )
    return layers


class IntelligenceLayers:
    """The runner's layers: base, the tenant's remote (optional) and the tenant's
    directory; `for_job()` adds the job's repository layers."""

    def __init__(
        self,
        tenant_dir: Path,
        base_dir: Path = BASE_LAYER_DIR,
        *,
        remote: TenantRemote | None = None,
    ) -> None:
        self.tenant_dir = tenant_dir
        self.base_dir = base_dir
        self.remote = remote

    @classmethod
    def from_config(cls, home: CoroHome, config: CoroConfig) -> IntelligenceLayers:
        settings = config.intelligence
        remote = None
        if settings.tenant_git_url:
            remote = TenantRemote(
                settings.tenant_git_url,
                home.root / "cache" / "tenant-intelligence",
                branch=settings.tenant_branch,
                refresh_seconds=settings.refresh_seconds,
            )
        return cls(home.intelligence_dir(config), remote=remote)

    # --- the stacks -----------------------------------------------------------------

    def base_layer(self) -> Layer:
        return Layer(name=BASE, kind=BASE, root=self.base_dir)

    def tenant_layer(self) -> Layer:
        return Layer(name=TENANT, kind=TENANT, root=self.tenant_dir, writable=True)

    def remote_layer(self) -> Layer | None:
        if self.remote is None:
            return None
        origin = self.remote.display_url + (f"#{self.remote.branch}" if self.remote.branch else "")
        return Layer(
            name=REMOTE,
            kind=REMOTE,
            root=self.remote.checkout,
            origin=origin,
            revision=self.remote.status.revision,
        )

    def stack(self) -> LayerStack:
        """base → remote (if configured) → tenant. The remote is whatever its clone
        holds now (`refresh()` clones or fetches it)."""
        layers = [self.base_layer()]
        remote = self.remote_layer()
        if remote is not None:
            layers.append(remote)
        layers.append(self.tenant_layer())
        warnings = []
        if self.remote is not None and self.remote.status.error:
            warnings.append(f"tenant remote {self.remote.display_url}: {self.remote.status.error}")
        return LayerStack(tuple(layers), warnings)

    def for_job(self, job: Job, workdir: Path) -> LayerStack:
        """The job's layers: `stack()` plus its repositories' `.coro/` directories."""
        stack = self.stack()
        return LayerStack((*stack.layers, *repo_layers(job, workdir)), stack.warnings)

    async def refresh(self, *, force: bool = False) -> None:
        """Refresh the tenant remote if one is configured and due; never raises."""
        if self.remote is not None:
            await self.remote.refresh(force=force)

    # --- lookups through base → remote → tenant ------------------------------------------

    @property
    def layers(self) -> list[tuple[str, Path]]:
        """`(name, root)` pairs, highest priority first."""
        return [(layer.name, layer.root) for layer in self.stack().highest_first()]

    def locate(self, path: str) -> tuple[str, Path] | None:
        """`(layer name, real file path)` of the winning file, or None when no layer has it.

        Raises ValueError for an unsafe path or one that a symlink leads out of its layer.
        """
        found = self.stack().locate(path)
        return (found[0].name, found[1]) if found else None

    def resolve(self, path: str) -> Path | None:
        """The real path of the winning file for `path`, or None."""
        found = self.locate(path)
        return found[1] if found else None

    def load_workflow(self, workflow_path: str) -> Workflow:
        return self.stack().load_workflow(workflow_path)

    def read_agent(self, agent_path: str) -> str | None:
        return self.stack().read_agent(agent_path)

    def list_workflows(self, kind: str | None = None) -> list[dict[str, Any]]:
        return self.stack().list_workflows(kind)


def walk_layers(stack: LayerStack, warnings: list[str] | None = None) -> dict[str, list[Layer]]:
    """Every relative path of every layer → the layers having it, lowest first."""
    files: dict[str, list[Layer]] = {}
    for layer in stack.layers:
        for relative in layer.files(warnings):
            files.setdefault(relative, []).append(layer)
    return files
