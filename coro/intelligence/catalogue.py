"""What the intelligence endpoints show and change (SPEC §2.4).

Synchronous functions over a `LayerStack`, run by the routes in a worker thread:

* `describe_layers()` — `GET /intelligence/layers`;
* `file_view()` — `GET /intelligence/file`;
* `write_file()` / `delete_file()` — `PUT` / `DELETE /intelligence/file` on the
  tenant directory (atomic replace; empty folders removed after a delete).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from coro.intelligence.layers import (
    BASE,
    REMOTE,
    REPO,
    TENANT,
    Layer,
    LayerStack,
    walk_layers,
    within_root,
)
from coro.intelligence.materialise import append_part, merge_mode
from coro.intelligence.preflight import artefact_kind
from coro.intelligence.tenant import TenantRemote

LAYER_CHOICES = (BASE, REMOTE, TENANT, REPO)
COUNTED_KINDS = ("workflow", "agent", "skill", "instructions", "memory")


class LayerRefused(Exception):
    """A layer that cannot serve the request; `status` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def pick_layer(stack: LayerStack, name: str, relative: str | None = None) -> Layer:
    """The layer `name` names: `base`, `remote`, `tenant`, `repo` (the highest repository
    layer having `relative`, else the highest one) or `repo:<slug>`."""
    if name == REPO:
        repos = list(reversed(stack.of_kind(REPO)))
        if not repos:
            raise LayerRefused(404, "no repository layer: give the jobId of a job with a checkout")
        if relative is not None:
            for repo in repos:
                with contextlib.suppress(ValueError):
                    if repo.file_path(relative) is not None:
                        return repo
        return repos[0]
    found = stack.get(name)
    if found is not None:
        return found
    if name == REMOTE:
        raise LayerRefused(404, "no remote layer: intelligence.tenantGitUrl is not configured")
    if name.startswith(f"{REPO}:"):
        raise LayerRefused(404, f"no layer {name!r} (is the jobId right?)")
    raise LayerRefused(400, f"layer must be one of {'|'.join(LAYER_CHOICES)}")


def check_writable(name: str, remote: TenantRemote | None) -> None:
    """Only the tenant directory is written through the API."""
    if name == TENANT:
        return
    if name == BASE:
        raise LayerRefused(403, "base layer is read-only; write to the tenant layer instead")
    if name == REMOTE:
        where = remote.display_url if remote is not None else "the tenant git remote"
        raise LayerRefused(
            409,
            f"the remote layer is a clone of {where}; change it by pushing there, or "
            "override a file in the tenant layer",
        )
    if name == REPO or name.startswith(f"{REPO}:"):
        raise LayerRefused(
            409, "repository layers are edited in the repository itself (its .coro/ folder)"
        )
    raise LayerRefused(400, f"layer must be one of {'|'.join(LAYER_CHOICES)}")


def describe_layers(stack: LayerStack, remote: TenantRemote | None) -> dict[str, Any]:
    warnings = list(stack.warnings)
    files = walk_layers(stack, warnings)
    counts: dict[str, dict[str, int]] = {
        layer.name: dict.fromkeys((*COUNTED_KINDS, "other", "total"), 0) for layer in stack.layers
    }
    entries = []
    for relative in sorted(files):
        having = files[relative]
        kind = artefact_kind(relative)
        for layer in having:
            counts[layer.name][kind or "other"] += 1
            counts[layer.name]["total"] += 1
        mode = merge_mode(relative)
        entries.append(
            {
                "path": relative,
                "kind": kind or "other",
                "mergeMode": mode,
                "layers": [layer.name for layer in having],
                "winner": having[-1].name if mode == "replace" else None,
            }
        )
    layers = []
    for layer in stack.layers:
        info: dict[str, Any] = {
            **layer.to_json(),
            "rootKind": _root_kind(layer),
            "root": _shown_root(layer),
            "exists": layer.exists(),
            "counts": counts[layer.name],
        }
        if layer.kind == REMOTE and remote is not None:
            info["remote"] = remote.describe()
        layers.append(info)
    return {"order": "lowest-first", "layers": layers, "files": entries, "warnings": warnings}


def _root_kind(layer: Layer) -> str:
    return {BASE: "package", REMOTE: "git", TENANT: "directory", REPO: "checkout"}[layer.kind]


def _shown_root(layer: Layer) -> str:
    # A clone's path is the runner's business; its URL (without userinfo) is shown.
    return layer.origin if layer.kind in (REMOTE, REPO) else str(layer.root)


def file_view(stack: LayerStack, relative: str, layer_name: str | None) -> dict[str, Any]:
    """The file at `relative` in one layer (default: the winning one), the layer that
    wins, and the lower layers' versions. LayerRefused(404) when it is not there."""
    versions = stack.with_file(relative)  # highest first
    if layer_name is None:
        if not versions:
            raise LayerRefused(404, f"{relative} was not found in any layer")
        chosen = versions[0]
    else:
        chosen = pick_layer(stack, layer_name, relative)
        if chosen not in versions:
            raise LayerRefused(404, f"File not found in {chosen.name} layer")
    texts = {layer.name: _text(layer, relative) for layer in versions}
    mode = merge_mode(relative)
    lower = versions[versions.index(chosen) + 1 :]
    view: dict[str, Any] = {
        "path": relative,
        "kind": artefact_kind(relative) or "other",
        "layer": chosen.name,
        "writable": chosen.writable,
        "content": texts[chosen.name],
        "mergeMode": mode,
        "winningLayer": versions[0].name if mode == "replace" else None,
        "versions": [
            {
                "layer": layer.name,
                "writable": layer.writable,
                "bytes": len(texts[layer.name].encode()),
            }
            for layer in versions
        ],
        "lowerLayer": lower[0].name if lower else None,
        "lowerContent": texts[lower[0].name] if lower else None,
    }
    if mode == "append":
        merged: str | None = None
        for layer in reversed(versions):
            merged = append_part(merged, layer, relative, texts[layer.name])
        view["merged"] = merged
    return view


def _text(layer: Layer, relative: str) -> str:
    data = layer.read_bytes(relative)
    return "" if data is None else data.decode("utf-8-sig", errors="replace")


def write_file(root: Path, relative: str, content: str) -> tuple[int, bool]:
    """Atomically write `root/relative` (folders created); `(bytes, created)`.

    ValueError when a symlink would take the write out of `root` or a folder is in
    the way."""
    target = within_root(root, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    target = within_root(root, relative)  # again, now that the folders exist
    if target.is_dir():
        raise ValueError(f"{relative} is a folder in the tenant layer")
    created = not target.exists()
    data = content.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data), created


def delete_file(root: Path, relative: str) -> bool:
    """Remove `root/relative` and the folders it leaves empty; False when absent."""
    target = within_root(root, relative)
    if not target.is_file():
        return False
    target.unlink()
    real_root = root.resolve()
    folder = target.parent
    while folder != real_root and folder.is_relative_to(real_root):
        try:
            folder.rmdir()
        except OSError:
            break
        folder = folder.parent
    return True
