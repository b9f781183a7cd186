"""The plugin catalog: every plugin the runner can use, built-in or drop-in, by id.

Built-ins (listed in `coro.extensions`) and drop-ins enter the catalog the same way
(`PluginCatalog.register`), as `PluginEntry`s that carry a manifest and a factory
`create(settings, context)`; `coro.extensions` declares what the factory of each kind
returns. A built-in's code is imported on first use, a drop-in's when it is discovered
(so a broken one is reported at once).

A drop-in is any distribution installed into `$CORO_HOME/plugins/site` that declares an
entry point in the `coro.plugins` group:

    [project.entry-points."coro.plugins"]
    acme-tracker = "acme_tracker"          # or "acme_tracker.plugin:PLUGIN"

The entry point's name is the plugin id. What it names carries a `MANIFEST` (a dict or a
`PluginManifest`; or it *is* the manifest) and a factory `create(settings, context)`
(or the manifest's `entry: "module:attr"` names it).

Distributions are installed with `pip install --target` into the isolated site directory
and found with `importlib.metadata` on that path alone: nothing is installed into the
runner's own environment. The site directory is *appended* to `sys.path`, so a
dependency a plugin brought along never shadows the runner's own packages. A plugin that
fails to import, has a bad manifest or wants another plugin API is listed with its
error; the rest of the runner keeps going.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import Distribution, EntryPoint, distributions
from pathlib import Path
from typing import Any, Literal

from packaging.utils import canonicalize_name
from pydantic import BaseModel, ValidationError

from coro.config import SECRET_KEY_PATTERN
from coro.domain.errors import PluginConfigError
from coro.plugins.manifest import (
    HOST_API_VERSION,
    PluginKindName,
    PluginLoadError,
    PluginManifest,
    parse_manifest,
    resolve_entry,
    settings_schema,
)
from coro.secrets import MASKED
from coro.system.process import run_process
from coro.version import __version__

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "coro.plugins"
SITE_DIRNAME = "site"
PIP_TIMEOUT_SECONDS = 600.0
#: How much of pip's output an error carries.
OUTPUT_TAIL_CHARS = 4000

_serials = itertools.count(1)
#: Every site directory a catalog of this process has used (tests run many homes).
_KNOWN_SITES: set[str] = set()

Issue = dict[str, str]  # {path, message}


class InstallError(Exception):
    """pip failed, timed out, or what it installed is not a Coro plugin."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class BuiltinPlugin:
    """A plugin that ships with Coro: what a drop-in's entry point and manifest say,
    written down instead (its configSchema comes from its settings model)."""

    id: str
    kind: PluginKindName
    #: `module:attr` of its factory `create(settings, context)`
    entry: str
    display_name: str
    description: str
    #: the pydantic model of its settings, in the factory's module: it validates them
    #: (in the factory) and gives the manifest its configSchema
    settings_model: str | None = None
    capabilities: dict[str, bool] = field(default_factory=dict)
    enabled_by_default: bool = False


class PluginEntry:
    """One plugin of the catalog: its manifest and factory, or why it cannot be used.

    `load()` imports its code once; every accessor below loads it first.
    """

    def __init__(
        self,
        plugin_id: str,
        *,
        source: Literal["builtin", "dropin"],
        entry_point: str,
        distribution: str,
        dist_version: str,
        kind: str | None,
        load: Callable[[PluginEntry], None],
        enabled_by_default: bool | None = None,
    ) -> None:
        self.id = plugin_id
        self.source = source
        self.entry_point = entry_point
        self.distribution = distribution
        self.dist_version = dist_version
        #: the kind it claims even when its manifest is invalid (for listings)
        self.claimed_kind = kind
        #: known before loading for a built-in (else: its manifest's)
        self._enabled_by_default = enabled_by_default
        #: differs between two loads of the same plugin (instances are not reused across)
        self.serial = next(_serials)
        self._load: Callable[[PluginEntry], None] | None = load
        self._manifest: PluginManifest | None = None
        self._factory: Callable[..., Any] | None = None
        self._error: str | None = None
        self._settings_model: type[BaseModel] | None = None

    def __repr__(self) -> str:
        return f"PluginEntry({self.id!r}, {self.source}, {self.entry_point!r})"

    def load(self) -> None:
        load, self._load = self._load, None
        if load is not None:
            load(self)

    def loaded_with(
        self,
        manifest: PluginManifest | None = None,
        factory: Callable[..., Any] | None = None,
        error: str | None = None,
        settings_model: type[BaseModel] | None = None,
    ) -> None:
        """What loading found (the loaders call this)."""
        self._manifest, self._factory, self._error = manifest, factory, error
        self._settings_model = settings_model

    def refuse(self, error: str) -> None:
        """Keep the entry listed, unusable (an id already taken)."""
        self.load()
        self._factory, self._error = None, error

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"

    @property
    def manifest(self) -> PluginManifest | None:
        self.load()
        return self._manifest

    @property
    def error(self) -> str | None:
        self.load()
        return self._error

    @property
    def kind(self) -> str | None:
        if self.claimed_kind is None and self._load is not None:
            self.load()
        return self._manifest.kind if self._manifest is not None else self.claimed_kind

    @property
    def loaded(self) -> bool:
        self.load()
        return self._error is None and self._factory is not None and self._manifest is not None

    @property
    def enabled_by_default(self) -> bool:
        if self._enabled_by_default is not None:
            return self._enabled_by_default
        manifest = self.manifest
        return manifest is not None and manifest.enabled_by_default

    def settings_issues(self, settings: dict[str, Any]) -> list[Issue]:
        """`[{path, message}]` of `settings` (paths inside them): by its settings model
        when it has one, else by its manifest's configSchema."""
        self.load()
        if self._settings_model is not None:
            try:
                self._settings_model.model_validate(settings)
            except ValidationError as exc:
                return [
                    {"path": ".".join(str(p) for p in e["loc"]) or "(root)", "message": e["msg"]}
                    for e in exc.errors()
                ]
            return []
        return self._manifest.config_issues(settings) if self._manifest is not None else []

    def create(self, settings: dict[str, Any], context: Any) -> object:
        """A plugin instance; `PluginConfigError` for settings it refuses,
        `PluginLoadError` for everything else that goes wrong."""
        if not self.loaded or self._manifest is None or self._factory is None:
            raise PluginLoadError(f"{self.id} is not loaded: {self._error}")
        if self._settings_model is None:  # a settings model is checked by the factory
            issues = self._manifest.config_issues(settings)
            if issues:
                raise PluginConfigError("; ".join(f"{i['path']}: {i['message']}" for i in issues))
        try:
            return self._factory(settings, context)
        except PluginConfigError:
            raise
        except Exception as exc:
            said = _scrub(_said(exc), settings, self._manifest.secret_keys())
            raise PluginLoadError(f"{self.id}: creating the plugin failed: {said}") from None


@dataclass(frozen=True)
class InstallOutcome:
    #: (name, version) of each distribution pip added or replaced
    distributions: list[tuple[str, str]]
    #: the plugins those distributions provide (loaded or with their error)
    plugins: list[PluginEntry]
    output: str


class PluginCatalog:
    """Every plugin by id: the built-ins given, then the drop-ins of one site directory
    (`load()` discovers those)."""

    def __init__(self, site: Path, builtins: Iterable[BuiltinPlugin] = ()) -> None:
        self.site = site
        self.entries: list[PluginEntry] = []
        self._builtins = [builtin_entry(b) for b in builtins]
        for entry in self._builtins:
            self.register(entry)
        self._lock = asyncio.Lock()

    # --- registration -----------------------------------------------------------------

    def register(self, entry: PluginEntry) -> None:
        """Add a plugin; an id already taken keeps its first holder (the built-ins are
        registered first) and the newcomer is listed with the reason."""
        holder = next((e for e in self.entries if e.id == entry.id), None)
        if holder is not None:
            entry.refuse(
                f"the id {entry.id!r} belongs to a built-in plugin"
                if holder.builtin
                else f"another installed distribution already provides {entry.id!r}"
            )
        if entry.source == "dropin" and entry.error:
            logger.warning("drop-in plugin %s not loaded: %s", entry.id, entry.error)
        self.entries.append(entry)

    def load(self) -> None:
        """The built-ins, then every drop-in discovered again (imported modules of the
        site are forgotten first)."""
        _activate_site(self.site)
        self.entries = []
        for builtin in self._builtins:
            self.register(builtin)
        for dist in _site_distributions(self.site):
            for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP):
                entry = dropin_entry(dist, ep)
                entry.load()  # a broken drop-in is reported now, not when first used
                self.register(entry)

    # --- lookup -----------------------------------------------------------------------

    def get(self, plugin_id: str) -> PluginEntry | None:
        """The entry for an id (the one that loaded, if several claim it)."""
        matches = [e for e in self.entries if e.id == plugin_id]
        if len(matches) > 1:
            return next((e for e in matches if e.loaded), matches[0])
        return matches[0] if matches else None

    def loaded(self, kind: str | None = None) -> list[PluginEntry]:
        return [e for e in self.entries if (kind is None or e.kind == kind) and e.loaded]

    def dropins(self) -> list[PluginEntry]:
        return [e for e in self.entries if e.source == "dropin"]

    # --- install / uninstall ----------------------------------------------------------

    async def install(
        self, spec: str, *, timeout_seconds: float = PIP_TIMEOUT_SECONDS
    ) -> InstallOutcome:
        """`pip install --target <site> --upgrade <spec>`, then rediscover.

        A requirement, a local wheel or a project directory. What pip installs without a
        `coro.plugins` entry point is removed again (it is not a plugin).
        """
        spec = spec.strip()
        if not spec or spec.startswith("-"):
            raise InstallError("Expected a package requirement, a wheel or a directory")
        async with self._lock:
            await asyncio.to_thread(self.site.mkdir, parents=True, exist_ok=True)
            before = await asyncio.to_thread(_dist_info_snapshot, self.site)
            output = await run_pip(
                ["install", "--target", str(self.site), "--upgrade", "--no-input", spec],
                timeout_seconds=timeout_seconds,
            )
            after = await asyncio.to_thread(_dist_info_snapshot, self.site)
            fresh = [name for name, key in after.items() if before.get(name) != key]
            installed = await asyncio.to_thread(_settle_install, self.site, before, fresh)
            names = {canonicalize_name(n) for n, _ in installed}
            self.load()
            plugins = [e for e in self.dropins() if canonicalize_name(e.distribution) in names]
            if not plugins:
                await asyncio.to_thread(_remove_added, self.site, before, fresh)
                self.load()
                what = ", ".join(f"{n} {v}" for n, v in installed) or "nothing"
                raise InstallError(
                    f"pip installed {what}, which declares no {ENTRY_POINT_GROUP!r} entry "
                    "point: not a Coro plugin (what it added was removed again)",
                    output=_tail(output),
                )
            return InstallOutcome(distributions=installed, plugins=plugins, output=_tail(output))

    async def uninstall(self, plugin_id: str) -> list[str]:
        """Remove the distribution that provides the drop-in `plugin_id`; the ids it
        provided. `LookupError` if no drop-in has that id."""
        async with self._lock:
            entry = next((e for e in self.dropins() if e.id == plugin_id), None)
            if entry is None:
                raise LookupError(plugin_id)
            wanted = canonicalize_name(entry.distribution)
            removed = sorted(
                e.id for e in self.dropins() if canonicalize_name(e.distribution) == wanted
            )
            for dist in _site_distributions(self.site):
                if canonicalize_name(dist.metadata["Name"] or "") == wanted:
                    _remove_distribution(self.site, dist)
            self.load()
            return removed


# --- pip ----------------------------------------------------------------------------------


async def run_pip(args: list[str], *, timeout_seconds: float = PIP_TIMEOUT_SECONDS) -> str:
    """Run `python -m pip <args>` (this interpreter's pip); its output, or `InstallError`.
    A timeout ends pip's build subprocesses too (they are in its process group)."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    try:
        result = await run_process(
            [sys.executable, "-m", "pip", *args],
            timeout_seconds=timeout_seconds,
            env=env,
            merge_stderr=True,
        )
    except OSError as exc:
        raise InstallError(f"pip could not be started: {exc.strerror or exc}") from None
    if result.timed_out:
        raise InstallError(f"pip did not finish within {timeout_seconds:g} s (stopped)")
    output = result.stdout
    if result.returncode != 0:
        raise InstallError(
            f"pip install failed (exit {result.returncode}): {_summary(output)}",
            output=_tail(output),
        )
    return output


def _summary(output: str) -> str:
    """pip's `ERROR:` lines, else its last lines."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    chosen = errors or lines[-3:]
    return " ".join(chosen)[:1000] or "no output"


def _tail(output: str) -> str:
    return output[-OUTPUT_TAIL_CHARS:]


# --- discovery helpers --------------------------------------------------------------------


def _said(exc: BaseException) -> str:
    text = str(exc).strip()
    text = text if len(text) <= 500 else text[:497] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _scrub(text: str, settings: dict[str, Any], secret_keys: set[str]) -> str:
    """A plugin's error message without the secrets of its settings (it may echo them)."""
    for key, value in settings.items():
        secret = key in secret_keys or SECRET_KEY_PATTERN.search(key)
        if secret and isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, MASKED)
    return text


def _site_distributions(site: Path) -> list[Distribution]:
    if not site.is_dir():
        return []
    found = [d for d in distributions(path=[str(site)]) if d.metadata["Name"]]
    return sorted(found, key=lambda d: canonicalize_name(d.metadata["Name"] or ""))


def dropin_entry(dist: Distribution, ep: EntryPoint) -> PluginEntry:
    """The entry of a `coro.plugins` entry point (loaded by `entry.load()`)."""

    def load(entry: PluginEntry) -> None:
        try:
            target = ep.load()
        except (Exception, SystemExit) as exc:
            entry.loaded_with(error=f"importing {ep.value} failed: {_said(exc)}")
            return
        raw = getattr(target, "MANIFEST", target)
        if isinstance(raw, dict) and isinstance(raw.get("kind"), str):
            entry.claimed_kind = raw["kind"]
        try:
            manifest = parse_manifest(raw)
            if manifest.id != ep.name:
                raise PluginLoadError(
                    f"the entry point is named {ep.name!r} but the manifest id is {manifest.id!r}"
                )
        except PluginLoadError as exc:
            entry.loaded_with(error=str(exc))
            return
        try:
            manifest.check_compatible()
        except PluginLoadError as exc:
            entry.loaded_with(manifest, error=str(exc))
            return
        if manifest.entry:
            try:
                factory = resolve_entry(manifest.entry)
            except (Exception, SystemExit) as exc:
                error = f"resolving the factory {manifest.entry} failed: {_said(exc)}"
                entry.loaded_with(manifest, error=error)
                return
        else:
            factory = getattr(target, "create", None)
            if factory is None:
                error = (
                    f"{ep.value} has no create(settings, context) and the manifest names no entry"
                )
                entry.loaded_with(manifest, error=error)
                return
        if not callable(factory):
            entry.loaded_with(manifest, error=f"the factory of {ep.name} is not callable")
            return
        entry.loaded_with(manifest, factory)

    return PluginEntry(
        ep.name,
        source="dropin",
        entry_point=ep.value,
        distribution=dist.metadata["Name"] or "?",
        dist_version=dist.version,
        kind=None,
        load=load,
    )


def builtin_entry(builtin: BuiltinPlugin) -> PluginEntry:
    """The entry of a built-in (its module is imported by `entry.load()`)."""

    def load(entry: PluginEntry) -> None:
        module_name = builtin.entry.partition(":")[0]
        try:
            module = importlib.import_module(module_name)
            factory = resolve_entry(builtin.entry)
        except ImportError as exc:
            entry.loaded_with(error=f"importing {module_name} failed: {_said(exc)}")
            return
        model = getattr(module, builtin.settings_model) if builtin.settings_model else None
        schema = {"type": "object", "properties": {}} if model is None else settings_schema(model)
        manifest = PluginManifest.model_validate(
            {
                "id": builtin.id,
                "kind": builtin.kind,
                "version": __version__,
                "displayName": builtin.display_name,
                "description": builtin.description,
                "hostCompatibility": f"^{HOST_API_VERSION}",
                "configSchema": schema,
                "capabilities": builtin.capabilities,
                "webhook": getattr(module, "WEBHOOK", None),
                "enabledByDefault": builtin.enabled_by_default,
            }
        )
        entry.loaded_with(manifest, factory, settings_model=model)

    return PluginEntry(
        builtin.id,
        source="builtin",
        entry_point=builtin.entry,
        distribution="coro",
        dist_version=__version__,
        kind=builtin.kind,
        load=load,
        enabled_by_default=builtin.enabled_by_default,
    )


def _under(path: str | None, roots: Iterable[str]) -> bool:
    if not path:
        return False
    return any(path == root or path.startswith(root + os.sep) for root in roots)


def _activate_site(site: Path) -> None:
    """Make `site` the one plugin directory on `sys.path`; forget modules from any."""
    current = str(site)
    roots = _KNOWN_SITES | {current}
    for module_name, module in list(sys.modules.items()):
        locations = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []))]
        if any(_under(location, roots) for location in locations if isinstance(location, str)):
            del sys.modules[module_name]
    for other in _KNOWN_SITES - {current}:
        while other in sys.path:
            sys.path.remove(other)
    _KNOWN_SITES.add(current)
    if site.is_dir() and current not in sys.path:
        sys.path.append(current)
    importlib.invalidate_caches()


# --- files --------------------------------------------------------------------------------


def _settle_install(
    site: Path, before: dict[str, tuple[int, int]], fresh: list[str]
) -> list[tuple[str, str]]:
    """Drop what the install replaced; the (name, version) of what it added."""
    _drop_replaced(site, before, fresh)
    return [_name_version(site / name) for name in fresh]


def _remove_added(site: Path, before: dict[str, tuple[int, int]], fresh: list[str]) -> None:
    """Undo an install that added no plugin: only what it added, since a dependency it
    upgraded may serve others."""
    existed = {_project_of(name) for name in before}
    for dirname in fresh:
        if _project_of(dirname) not in existed:
            _remove_distribution(site, Distribution.at(site / dirname))


def _dist_info_snapshot(site: Path) -> dict[str, tuple[int, int]]:
    """`*.dist-info` directory name → (inode, mtime): pip replacing one changes both."""
    snapshot: dict[str, tuple[int, int]] = {}
    if not site.is_dir():
        return snapshot
    for child in site.iterdir():
        if child.name.endswith(".dist-info") and child.is_dir():
            stat = child.stat()
            snapshot[child.name] = (stat.st_ino, stat.st_mtime_ns)
    return snapshot


def _project_of(dist_info_name: str) -> str:
    stem = dist_info_name.removesuffix(".dist-info")
    return canonicalize_name(stem.rsplit("-", 1)[0])


def _drop_replaced(site: Path, before: dict[str, Any], fresh: list[str]) -> None:
    """An upgrade leaves the old version's `.dist-info` behind: remove it."""
    fresh_projects = {_project_of(name) for name in fresh}
    for name in before:
        if name not in fresh and _project_of(name) in fresh_projects:
            shutil.rmtree(site / name, ignore_errors=True)


def _name_version(dist_info: Path) -> tuple[str, str]:
    dist = Distribution.at(dist_info)
    return (dist.metadata["Name"] or _project_of(dist_info.name), dist.version)


def _remove_distribution(site: Path, dist: Distribution) -> None:
    """What `pip uninstall` would do, for a `--target` directory: the files in RECORD
    (never outside `site`), the metadata, then directories left empty."""
    root = site.resolve()
    touched: set[Path] = set()
    for item in dist.files or []:
        path = Path(str(dist.locate_file(item))).resolve()
        if root not in path.parents:
            continue
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
            touched.add(path.parent)
    info = getattr(dist, "_path", None)  # the .dist-info directory
    if isinstance(info, Path) and root in info.resolve().parents:
        shutil.rmtree(info, ignore_errors=True)
    for directory in sorted(touched, key=lambda p: len(p.parts), reverse=True):
        _prune(directory, root)


def _prune(directory: Path, root: Path) -> None:
    """Remove `directory` and its parents up to `root` while they hold nothing but
    bytecode caches."""
    while directory != root and root in directory.parents and directory.is_dir():
        children = list(directory.iterdir())
        if any(child.name != "__pycache__" for child in children):
            return
        shutil.rmtree(directory, ignore_errors=True)
        directory = directory.parent
