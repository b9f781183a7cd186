"""Listing and reading a trusted layer (tenant, remote): symlinks that stay inside the
layer are followed, those that lead out of it, dangling ones and non-regular files are
left out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coro.intelligence.layers import TENANT, Layer, within_root


def _write(root: Path, relative: str, text: str = "x") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def tenant(tmp_path: Path) -> Path:
    root = tmp_path / "tenant"
    outside = tmp_path / "outside"
    _write(outside, "secret.md", "secret")
    _write(outside, "folder/leak.md", "leak")
    _write(root, "agents/coder.md", "coder")
    _write(root, "memory/team/notes.md", "notes")
    _write(root, "notes.md", "not in the layout")
    os.symlink(root / "agents" / "coder.md", root / "agents" / "alias.md")
    os.symlink("../memory/team", root / "agents" / "team")
    os.symlink(outside / "secret.md", root / "agents" / "secret.md")
    os.symlink(outside / "folder", root / "memory" / "linked")
    os.symlink(root / "agents" / "gone.md", root / "agents" / "dangling.md")
    os.mkfifo(root / "agents" / "pipe.md")
    return root


def test_a_trusted_layer_lists_its_own_files_and_those_symlinked_from_inside(
    tenant: Path,
) -> None:
    layer = Layer(name=TENANT, kind=TENANT, root=tenant)
    assert layer.files() == [
        "agents/alias.md",
        "agents/coder.md",
        "agents/team/notes.md",
        "memory/team/notes.md",
    ]
    assert layer.read_bytes("agents/alias.md") == b"coder"
    assert layer.read_bytes("agents/team/notes.md") == b"notes"
    assert layer.read_bytes("agents/pipe.md") is None
    assert layer.read_bytes("agents/dangling.md") is None
    assert layer.read_bytes("agents/missing/deeper.md") is None


def test_a_trusted_layer_refuses_symlinks_out_of_it(tenant: Path) -> None:
    layer = Layer(name=TENANT, kind=TENANT, root=tenant)
    with pytest.raises(ValueError, match="outside its layer"):
        layer.read_bytes("agents/secret.md")
    with pytest.raises(ValueError, match="outside its layer"):
        layer.read_bytes("memory/linked/leak.md")
    assert within_root(tenant, "agents/alias.md") == tenant.resolve() / "agents" / "coder.md"
    assert within_root(tenant, "agents/./coder.md") == tenant.resolve() / "agents" / "coder.md"
    with pytest.raises(ValueError, match="outside its layer"):
        within_root(tenant, "agents/../../outside/secret.md")


def test_a_layer_reached_through_a_symlinked_root_reads_the_same(
    tenant: Path, tmp_path: Path
) -> None:
    os.symlink(tenant, tmp_path / "via-link")
    layer = Layer(name=TENANT, kind=TENANT, root=tmp_path / "via-link")
    assert layer.files() == Layer(name=TENANT, kind=TENANT, root=tenant).files()
    assert layer.file_path("agents/coder.md") == tenant.resolve() / "agents" / "coder.md"


def test_a_trusted_layer_whose_root_is_no_folder_has_no_files(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    for name in ("missing", "a-file", "dangling", "loop"):
        layer = Layer(name=TENANT, kind=TENANT, root=tmp_path / name)
        assert layer.file_path("workflows/job/workflow.md") is None
        assert layer.read_bytes("agents/coder.md") is None
        assert layer.load_workflow("workflows/job/workflow.md") is None


def test_a_workflow_edited_in_place_is_read_again(tenant: Path) -> None:
    path = tenant / "workflows" / "one" / "workflow.md"
    _write(tenant, "workflows/one/workflow.md", "---\nphases:\n  - name: a\n---\n# One\n")
    layer = Layer(name=TENANT, kind=TENANT, root=tenant)
    first = layer.load_workflow("workflows/one/workflow.md")
    assert first is not None and first.phase_names == ("a",)
    path.write_text("---\nphases:\n  - name: a\n  - name: second\n---\n# One\n")
    again = layer.load_workflow("workflows/one/workflow.md")
    assert again is not None and again.phase_names == ("a", "second")
