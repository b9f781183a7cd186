"""File tools: behaviour through `ToolRegistry.call`, and confinement to the job dir."""

# Blocking file-system calls are fine in tests: they set up and inspect the job dir.
# ruff: noqa: ASYNC240

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from coro.tools import files
from coro.tools.registry import ToolContext, ToolError, ToolRegistry, ToolResult


class FakeStore:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    async def log(self, job_id: str, text: str) -> None:
        self.lines.append((job_id, text))


@pytest.fixture
def registry() -> ToolRegistry:
    reg = ToolRegistry()
    files.register(reg)
    return reg


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def ctx(workdir: Path) -> ToolContext:
    return ToolContext(job_id="j1", phase="coding", workdir=workdir, store=FakeStore())  # type: ignore[arg-type]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the job directory, holding a file the agent must not touch."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_text("top secret\n")
    return d


async def call(registry: ToolRegistry, ctx: ToolContext, name: str, **args: Any) -> ToolResult:
    return await registry.call(name, args, ctx)


async def ok(registry: ToolRegistry, ctx: ToolContext, name: str, **args: Any) -> Any:
    result = await call(registry, ctx, name, **args)
    assert not result.is_error, result.output
    return result.output


async def err(registry: ToolRegistry, ctx: ToolContext, name: str, **args: Any) -> str:
    result = await call(registry, ctx, name, **args)
    assert result.is_error, result.output
    assert isinstance(result.output, str)
    return result.output


def test_registers_the_contract_names(registry: ToolRegistry) -> None:
    assert registry.names() == ["file_edit", "file_glob", "file_grep", "file_read", "file_write"]
    edit = registry.get("file_edit")
    assert edit is not None
    assert set(edit.input_schema["properties"]) == {"path", "oldText", "newText", "replaceAll"}
    grep = registry.get("file_grep")
    assert grep is not None
    assert grep.input_schema["required"] == ["pattern"]


# --------------------------------------------------------------------------- read / write


async def test_write_then_read(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    out = await ok(registry, ctx, "file_write", path="src/pkg/a.txt", content="héllo\nworld\n")
    assert out == {"path": "src/pkg/a.txt", "bytesWritten": len("héllo\nworld\n".encode())}
    assert (workdir / "src/pkg/a.txt").read_text(encoding="utf-8") == "héllo\nworld\n"

    out = await ok(registry, ctx, "file_read", path="src/pkg/a.txt")
    assert out == {
        "path": "src/pkg/a.txt",
        "content": "     1\théllo\n     2\tworld",
        "totalLines": 2,
        "truncated": False,
    }


async def test_workdir_is_created(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    assert not workdir.exists()
    assert await ok(registry, ctx, "file_glob", pattern="*") == {"matches": [], "truncated": False}
    assert workdir.is_dir()


async def test_read_offset_and_limit(
    registry: ToolRegistry, ctx: ToolContext, workdir: Path
) -> None:
    workdir.mkdir()
    (workdir / "n.txt").write_text("".join(f"line{i}\n" for i in range(1, 11)))

    out = await ok(registry, ctx, "file_read", path="n.txt", offset=3, limit=2)
    assert out["content"] == "     4\tline4\n     5\tline5"
    assert out["totalLines"] == 10
    assert out["truncated"] is True

    out = await ok(registry, ctx, "file_read", path="n.txt", offset=8)
    assert out["content"] == "     9\tline9\n    10\tline10"
    assert out["truncated"] is False

    out = await ok(registry, ctx, "file_read", path="n.txt", offset=50)
    assert out["content"] == ""
    assert out["truncated"] is False

    await err(registry, ctx, "file_read", path="n.txt", offset=-1)
    await err(registry, ctx, "file_read", path="n.txt", limit=0)


async def test_read_refusals(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    workdir.mkdir()
    (workdir / "bin.dat").write_bytes(b"PK\x03\x04\x00\x00binary")
    with (workdir / "huge.txt").open("wb") as f:
        f.truncate(files.MAX_READ_BYTES + 1)  # sparse: cheap
    (workdir / "d").mkdir()

    assert "binary" in await err(registry, ctx, "file_read", path="bin.dat")
    assert "too large" in await err(registry, ctx, "file_read", path="huge.txt")
    assert "directory" in await err(registry, ctx, "file_read", path="d")
    assert "no such file" in await err(registry, ctx, "file_read", path="missing.txt")


async def test_write_refusals(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    big = "x" * (files.MAX_WRITE_BYTES + 1)
    assert "too large" in await err(registry, ctx, "file_write", path="big.txt", content=big)
    assert not (workdir / "big.txt").exists()
    (workdir / "d").mkdir(parents=True)
    assert "directory" in await err(registry, ctx, "file_write", path="d", content="x")


async def test_unknown_input_keys_are_refused(registry: ToolRegistry, ctx: ToolContext) -> None:
    out = await err(registry, ctx, "file_read", path="a", bogus=1)
    assert "bogus" in out


# --------------------------------------------------------------------------- edit


async def test_edit(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    workdir.mkdir()
    target = workdir / "code.py"
    target.write_text("a = 1\nb = 2\na = 1\n")

    out = await ok(registry, ctx, "file_edit", path="code.py", oldText="b = 2", newText="b = 3")
    assert out == {"path": "code.py", "replacements": 1}
    assert target.read_text() == "a = 1\nb = 3\na = 1\n"

    assert "not found" in await err(
        registry, ctx, "file_edit", path="code.py", oldText="zzz", newText="y"
    )
    ambiguous = await err(registry, ctx, "file_edit", path="code.py", oldText="a = 1", newText="")
    assert "2 times" in ambiguous
    assert target.read_text() == "a = 1\nb = 3\na = 1\n"

    out = await ok(
        registry,
        ctx,
        "file_edit",
        path="code.py",
        oldText="a = 1",
        newText="a = 9",
        replaceAll=True,
    )
    assert out == {"path": "code.py", "replacements": 2}
    assert target.read_text() == "a = 9\nb = 3\na = 9\n"

    assert "no such file" in await err(
        registry, ctx, "file_edit", path="nope.py", oldText="a", newText="b"
    )


async def test_edit_crlf_file(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    workdir.mkdir()
    target = workdir / "win.txt"
    target.write_bytes(b"one\r\ntwo\r\nthree\r\n")
    await ok(registry, ctx, "file_edit", path="win.txt", oldText="one\ntwo", newText="1\n2")
    assert target.read_bytes() == b"1\r\n2\r\nthree\r\n"


# --------------------------------------------------------------------------- glob


async def test_glob(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    for rel in ["b.py", "a.py", "src/x.py", "src/deep/y.py", "src/z.txt", ".git/config.py"]:
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_text("")

    out = await ok(registry, ctx, "file_glob", pattern="**/*.py")
    assert out == {
        "matches": ["a.py", "b.py", "src/deep/y.py", "src/x.py"],
        "truncated": False,
    }
    out = await ok(registry, ctx, "file_glob", pattern="src/*")
    assert out["matches"] == ["src/deep", "src/x.py", "src/z.txt"]
    out = await ok(registry, ctx, "file_glob", pattern="./src/**/?.py")
    assert out["matches"] == ["src/deep/y.py", "src/x.py"]
    out = await ok(registry, ctx, "file_glob", pattern="[ab].py")
    assert out["matches"] == ["a.py", "b.py"]
    out = await ok(registry, ctx, "file_glob", pattern="**/.git/**")
    assert out["matches"] == []


async def test_glob_is_capped(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    many = workdir / "many"
    many.mkdir(parents=True)
    for i in range(files.MAX_GLOB_RESULTS + 5):
        (many / f"f{i:05d}.txt").touch()
    out = await ok(registry, ctx, "file_glob", pattern="many/*.txt")
    assert out["truncated"] is True
    assert len(out["matches"]) == files.MAX_GLOB_RESULTS
    assert out["matches"][0] == "many/f00000.txt"
    assert out["matches"] == sorted(out["matches"])


# --------------------------------------------------------------------------- grep


async def test_grep(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    (workdir / "src").mkdir(parents=True)
    (workdir / "src/a.py").write_text("import os\ndef foo():\n    return 1\n")
    (workdir / "src/b.txt").write_text("foo bar\n")
    (workdir / "top.py").write_text("x = foo()\n")
    (workdir / "blob.bin").write_bytes(b"foo\x00\x01")
    (workdir / ".git").mkdir()
    (workdir / ".git/foo").write_text("foo\n")

    out = await ok(registry, ctx, "file_grep", pattern=r"foo\(")
    assert out == {
        "matches": [
            {"path": "src/a.py", "line": 2, "text": "def foo():"},
            {"path": "top.py", "line": 1, "text": "x = foo()"},
        ],
        "truncated": False,
    }
    out = await ok(registry, ctx, "file_grep", pattern="foo", path="src", glob="*.txt")
    assert out["matches"] == [{"path": "src/b.txt", "line": 1, "text": "foo bar"}]
    out = await ok(registry, ctx, "file_grep", pattern="foo", glob="src/*.py")
    assert [m["path"] for m in out["matches"]] == ["src/a.py"]
    out = await ok(registry, ctx, "file_grep", pattern="^import", path="src/a.py")
    assert out["matches"] == [{"path": "src/a.py", "line": 1, "text": "import os"}]

    assert "invalid regular expression" in await err(registry, ctx, "file_grep", pattern="(")
    assert "no such file" in await err(registry, ctx, "file_grep", pattern="x", path="nope")


async def test_grep_is_capped(registry: ToolRegistry, ctx: ToolContext, workdir: Path) -> None:
    workdir.mkdir()
    (workdir / "many.txt").write_text("hit\n" * (files.MAX_GREP_MATCHES + 10))
    out = await ok(registry, ctx, "file_grep", pattern="hit")
    assert out["truncated"] is True
    assert len(out["matches"]) == files.MAX_GREP_MATCHES
    assert out["matches"][-1]["line"] == files.MAX_GREP_MATCHES


# --------------------------------------------------------------------------- confinement


ESCAPES = ["../outside/secret.txt", "/etc/passwd", "a/../../outside/secret.txt", ".."]


@pytest.mark.parametrize("raw", ESCAPES)
async def test_escapes_are_refused(
    registry: ToolRegistry, ctx: ToolContext, workdir: Path, outside: Path, raw: str
) -> None:
    workdir.mkdir()
    (workdir / "a").mkdir()
    for name, args in [
        ("file_read", {"path": raw}),
        ("file_write", {"path": raw, "content": "pwned"}),
        ("file_edit", {"path": raw, "oldText": "top", "newText": "pwned"}),
        ("file_grep", {"pattern": "secret", "path": raw}),
    ]:
        out = await err(registry, ctx, name, **args)
        assert out.startswith("path escapes the job directory"), (name, out)
    assert (outside / "secret.txt").read_text() == "top secret\n"


async def test_symlinks_out_of_the_workdir_are_refused(
    registry: ToolRegistry, ctx: ToolContext, workdir: Path, outside: Path
) -> None:
    workdir.mkdir()
    (workdir / "link.txt").symlink_to(outside / "secret.txt")
    (workdir / "linkdir").symlink_to(outside, target_is_directory=True)
    (workdir / "dangling").symlink_to(outside / "new.txt")

    for name, args in [
        ("file_read", {"path": "link.txt"}),
        ("file_read", {"path": "linkdir/secret.txt"}),
        ("file_write", {"path": "link.txt", "content": "pwned"}),
        ("file_write", {"path": "linkdir/new.txt", "content": "pwned"}),
        ("file_write", {"path": "linkdir/sub/new.txt", "content": "pwned"}),
        ("file_write", {"path": "dangling", "content": "pwned"}),
        ("file_edit", {"path": "link.txt", "oldText": "top", "newText": "pwned"}),
        ("file_grep", {"pattern": "secret", "path": "linkdir"}),
        ("file_grep", {"pattern": "secret", "path": "link.txt"}),
    ]:
        out = await err(registry, ctx, name, **args)
        assert out.startswith("path escapes the job directory"), (name, out)

    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "top secret\n"

    # walking tools neither list nor search what the links point at
    assert (await ok(registry, ctx, "file_glob", pattern="**"))["matches"] == []
    assert (await ok(registry, ctx, "file_grep", pattern="secret"))["matches"] == []


async def test_symlinks_inside_the_workdir_are_fine(
    registry: ToolRegistry, ctx: ToolContext, workdir: Path
) -> None:
    (workdir / "real").mkdir(parents=True)
    (workdir / "real/f.txt").write_text("hello\n")
    (workdir / "alias").symlink_to(workdir / "real", target_is_directory=True)
    out = await ok(registry, ctx, "file_read", path="alias/f.txt")
    assert out["content"] == "     1\thello"
    # `..` that stays inside is fine too
    out = await ok(registry, ctx, "file_read", path="real/../real/f.txt")
    assert out["path"] == "real/f.txt"


@pytest.mark.parametrize("pattern", ["../*", "../**/*", "/etc/*", "a/../../*", ".."])
async def test_glob_escapes_are_refused(
    registry: ToolRegistry, ctx: ToolContext, outside: Path, pattern: str
) -> None:
    out = await err(registry, ctx, "file_glob", pattern=pattern)
    assert out.startswith("path escapes the job directory")


async def test_confined_path_helper(ctx: ToolContext, workdir: Path) -> None:
    root = workdir.resolve()
    assert files.confined_path(ctx, "x/y.txt", must_exist=False) == root / "x/y.txt"
    assert files.confined_path(ctx, ".", must_exist=True) == root
    with pytest.raises(ToolError, match="escapes"):
        files.confined_path(ctx, "../x", must_exist=False)
    with pytest.raises(ToolError, match="no such file"):
        files.confined_path(ctx, "x/y.txt", must_exist=True)
    assert os.path.isdir(root)
