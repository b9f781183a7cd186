"""Preflight: check an intelligence file before it is saved (SPEC §2.4).

`preflight(path, content, ...)` never raises for a bad file: it returns every problem
it can find as an `Issue` (`error` blocks a save, `warning` does not), with the 1-based
line when one is known (the opening `---` of the front matter is line 1).

* **workflow** (`workflows/<id>/workflow.md`): everything the workflow parser refuses
  (bad YAML, unknown keys, wrong types, an `initial_phase` that is not declared...),
  plus — from the YAML itself, so several are reported at once — duplicate phase
  names, agents that no layer has, tools that are not known (a registered tool, a glob
  matching one, a Claude Code built-in that stands for one — `Bash`, `Read`, ... as
  `coro.tools.registry.BUILTIN_ALIASES` says — or an `mcp__<server>__<tool>` name), and
  providers that are not installed (a warning: one may be configured later);
* **agent** (`agents/<name>.md`): optional front matter must be a YAML mapping (a
  `tools` list in it is checked like a phase's); the prose needs a `# Title` line;
* **skill** (`.claude/skills/<name>/SKILL.md`): front matter with `name` and
  `description` strings;
* **instructions** (`.claude/CLAUDE.md`) and **memory** (`memory/**/*.md`): warnings only.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from coro.domain.allowlist import MCP_PREFIX, allow_pattern
from coro.domain.paths import check_relative_path
from coro.domain.workflows import WorkflowError, parse_workflow, split_front_matter
from coro.intelligence.layers import MAX_FILE_BYTES, LayerStack, safe_segment

ArtefactKind = Literal["workflow", "agent", "skill", "instructions", "memory"]
Severity = Literal["error", "warning"]

ALLOWED_PREFIXES = ("workflows/", "agents/", ".claude/", "memory/")
PATH_RULE = (
    "path must be one of: workflows/<id>/workflow.md, agents/<name>.md, .claude/CLAUDE.md, "
    ".claude/skills/<name>/SKILL.md, memory/<name>.md"
)
_GLOB = re.compile(r"[*?\[]")
_H1 = re.compile(r"^#\s+\S")
_COMPOSER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class PathRefused(ValueError):
    """The path is unsafe or names no kind of intelligence file (HTTP 400)."""


def artefact_kind(relative: str) -> ArtefactKind | None:
    """What kind of intelligence file a normalised relative path is, or None."""
    parts = relative.split("/")
    if not all(safe_segment(part) for part in parts):
        return None
    if len(parts) == 3 and parts[0] == "workflows" and parts[2] == "workflow.md":
        return "workflow"
    if len(parts) == 2 and parts[0] == "agents" and parts[1].endswith(".md"):
        return "agent"
    if relative == ".claude/CLAUDE.md":
        return "instructions"
    if len(parts) == 4 and parts[:2] == [".claude", "skills"] and parts[3] == "SKILL.md":
        return "skill"
    if len(parts) >= 2 and parts[0] == "memory" and parts[-1].endswith(".md"):
        return "memory"
    return None


def check_artefact_path(path: str) -> tuple[str, ArtefactKind]:
    """The normalised path and its kind; `PathRefused` with a message for people."""
    if not isinstance(path, str) or not path.strip():
        raise PathRefused("path is required")
    if path.startswith("/") or ".." in path.replace("\\", "/").split("/"):
        raise PathRefused("path must be relative and may not contain '..'")
    try:
        relative = check_relative_path(path)
    except ValueError as exc:
        raise PathRefused(str(exc)) from None
    kind = artefact_kind(relative)
    if kind is None:
        raise PathRefused(PATH_RULE)
    return relative, kind


@dataclass(frozen=True)
class Issue:
    path: str
    line: int | None
    message: str
    severity: Severity = "error"

    def text(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "message": self.message,
            "severity": self.severity,
        }


@dataclass
class PreflightResult:
    path: str
    kind: ArtefactKind
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "ok": self.ok,
            "issues": [issue.to_json() for issue in self.issues],
            "errors": [issue.text() for issue in self.errors],
            "warnings": [issue.text() for issue in self.warnings],
        }


@dataclass
class Checker:
    """What names are known: the layers (for agents), tools and providers."""

    stack: LayerStack
    tool_names: frozenset[str]
    providers: frozenset[str] | None = None

    @classmethod
    def create(
        cls,
        stack: LayerStack,
        tool_names: Iterable[str],
        providers: Iterable[str] | None = None,
    ) -> Checker:
        return cls(
            stack,
            frozenset(tool_names),
            frozenset(providers) if providers is not None else None,
        )

    def tool_problem(self, entry: str) -> str | None:
        """Why an allow-list entry names no tool, or None when it is fine."""
        bare = entry.removeprefix(MCP_PREFIX)
        if bare.startswith("mcp__"):
            server, _, tool = bare.removeprefix("mcp__").partition("__")
            if server and tool:
                return None  # another MCP server's tool: known only once it connects
            return f"'{entry}' is not a tool name: use mcp__<server>__<tool>"
        # what the runner will match: a Claude Code built-in (`Bash`, `Read(...)`) stands
        # for the Coro tool that does the same; other capitalised names stay unknown
        pattern = allow_pattern(entry)
        if _GLOB.search(pattern):
            if any(fnmatch.fnmatchcase(name, pattern) for name in self.tool_names):
                return None
            return f"tool pattern '{entry}' matches no known tool"
        if pattern in self.tool_names:
            return None
        message = f"unknown tool '{entry}'"
        close = difflib.get_close_matches(bare, sorted(self.tool_names), n=1)
        return message + (f" (did you mean '{close[0]}'?)" if close else "")

    def agent_problem(self, agent: str) -> str | None:
        try:
            relative = check_relative_path(agent)
        except ValueError:
            return None  # the parser reports the path itself
        try:
            if self.stack.with_file(relative):
                return None
        except ValueError as exc:
            return f"agent '{agent}': {exc}"
        layers = ", ".join(self.stack.names())
        return f"unknown agent '{agent}': no layer ({layers}) has that file"


def preflight(path: str, content: str, checker: Checker) -> PreflightResult:
    """Check `content` as the file at `path`; `PathRefused` when the path is unusable."""
    relative, kind = check_artefact_path(path)
    result = PreflightResult(relative, kind)
    issues = result.issues
    if not content.strip():
        issues.append(Issue(relative, None, "content is empty"))
        return result
    if len(content.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        issues.append(Issue(relative, None, f"content is larger than {MAX_FILE_BYTES} bytes"))
        return result
    if "\x00" in content:
        issues.append(Issue(relative, None, "content contains a NUL character"))
        return result
    if kind == "workflow":
        _check_workflow(relative, content, checker, issues)
    elif kind == "agent":
        _check_agent(relative, content, checker, issues)
    elif kind == "skill":
        _check_skill(relative, content, issues)
    elif kind == "memory" and not _has_h1(_body(content)):
        issues.append(Issue(relative, None, "memory file has no '# Title' line", "warning"))
    issues.sort(key=lambda i: (i.severity != "error", i.line or 0))
    return result


# --- front matter -------------------------------------------------------------------


def _body(content: str) -> str:
    split = split_front_matter(content)
    return split[1] if split else content


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 2


def _front_matter(
    relative: str, content: str, issues: list[Issue], *, required: bool
) -> yaml.MappingNode | None:
    """The front matter's YAML mapping node; problems are appended to `issues`."""
    text = content.removeprefix("\ufeff").replace("\r\n", "\n")
    if text.split("\n", 1)[0].rstrip() != "---":
        if required:
            issues.append(Issue(relative, 1, "missing YAML front matter (--- ... ---) at the top"))
        return None
    split = split_front_matter(text)
    if split is None:
        issues.append(Issue(relative, 1, "front matter opened on line 1 is never closed by '---'"))
        return None
    try:
        root = yaml.compose(split[0], Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark is not None else None
        issues.append(Issue(relative, line, f"invalid YAML: {exc.problem or exc}"))
        return None
    except yaml.YAMLError as exc:
        issues.append(Issue(relative, None, f"invalid YAML: {exc}"))
        return None
    if root is None:
        if required:
            issues.append(Issue(relative, 1, "front matter is empty"))
        return None
    if not isinstance(root, yaml.MappingNode):
        issues.append(Issue(relative, _line(root), "front matter must be a YAML mapping"))
        return None
    return root


def _get(node: yaml.Node | None, key: str) -> tuple[yaml.Node, int] | None:
    """`(value node, line of the key)` for `key` in a mapping node."""
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value, _line(key_node)
    return None


def _scalar(node: yaml.Node | None) -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str"):
        return str(node.value)
    return None


def _items(node: yaml.Node | None) -> list[yaml.Node]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


# --- per kind -----------------------------------------------------------------------


def _check_workflow(relative: str, content: str, checker: Checker, issues: list[Issue]) -> None:
    parser_issue: Issue | None = None
    try:
        parse_workflow(content, source=relative, path=relative)
    except WorkflowError as exc:
        parser_issue = Issue(relative, exc.line, exc.message)
    ours: list[Issue] = []
    root = _front_matter(relative, content, ours, required=True)
    if root is not None:
        _check_phases(relative, root, checker, ours)
    if parser_issue is not None and not any(
        issue.line == parser_issue.line and issue.severity == "error" for issue in ours
    ):
        issues.append(parser_issue)
    issues.extend(ours)


def _check_phases(
    relative: str, root: yaml.MappingNode, checker: Checker, issues: list[Issue]
) -> None:
    found = _get(root, "phases")
    if found is None:
        return
    first_seen: dict[str, int] = {}
    for index, phase in enumerate(_items(found[0])):
        where = f"phases[{index}]"
        name_found = _get(phase, "name")
        name = _scalar(name_found[0]) if name_found else None
        if name is not None and name_found is not None:
            if name in first_seen:
                issues.append(
                    Issue(
                        relative,
                        name_found[1],
                        f"{where}.name: duplicate phase name '{name}' "
                        f"(first declared on line {first_seen[name]})",
                    )
                )
            else:
                first_seen[name] = name_found[1]
        _check_role(relative, phase, where, checker, issues)
        subagents = _get(phase, "subagents")
        for sub_index, sub in enumerate(_items(subagents[0] if subagents else None)):
            _check_role(relative, sub, f"{where}.subagents[{sub_index}]", checker, issues)


def _check_role(
    relative: str, node: yaml.Node, where: str, checker: Checker, issues: list[Issue]
) -> None:
    """A phase's or subagent's `agent`, `tools` and `provider`."""
    agent = _get(node, "agent")
    agent_path = _scalar(agent[0]) if agent else None
    if agent is not None and agent_path:
        problem = checker.agent_problem(agent_path)
        if problem:
            issues.append(Issue(relative, agent[1], f"{where}.agent: {problem}"))
    tools = _get(node, "tools")
    if tools is not None:
        _check_tools(relative, tools[0], f"{where}.tools", checker, issues)
    provider = _get(node, "provider")
    provider_id = _scalar(provider[0]) if provider else None
    known = checker.providers
    if provider is not None and provider_id and known is not None and provider_id not in known:
        issues.append(
            Issue(
                relative,
                provider[1],
                f"{where}.provider: executor '{provider_id}' is not installed "
                f"(available: {', '.join(sorted(known)) or 'none'})",
                "warning",
            )
        )


def _check_tools(
    relative: str, node: yaml.Node, where: str, checker: Checker, issues: list[Issue]
) -> None:
    for item in _items(node):
        entry = _scalar(item)
        if entry is None:
            continue  # not a string: the parser says so
        problem = checker.tool_problem(entry)
        if problem:
            issues.append(Issue(relative, _line(item), f"{where}: {problem}"))


def _check_agent(relative: str, content: str, checker: Checker, issues: list[Issue]) -> None:
    root = _front_matter(relative, content, issues, required=False)
    tools = _get(root, "tools")
    if tools is not None:
        _check_tools(relative, tools[0], "tools", checker, issues)
    body = _body(content)
    if not _has_h1(body):
        issues.append(Issue(relative, None, "agent markdown needs a '# Title' line"))
    elif len(body.strip()) < 40:
        issues.append(Issue(relative, None, "agent prose is very short", "warning"))


def _check_skill(relative: str, content: str, issues: list[Issue]) -> None:
    root = _front_matter(relative, content, issues, required=True)
    if root is None:
        return
    folder = relative.split("/")[2]
    for key in ("name", "description"):
        found = _get(root, key)
        value = _scalar(found[0]) if found else None
        if found is None:
            issues.append(Issue(relative, 1, f"skill front matter needs '{key}'"))
        elif not value:
            issues.append(Issue(relative, found[1], f"'{key}' must be a non-empty string"))
        elif key == "name" and value != folder:
            issues.append(
                Issue(
                    relative,
                    found[1],
                    f"skill name '{value}' differs from its folder '{folder}'",
                    "warning",
                )
            )


def _has_h1(body: str) -> bool:
    fenced = False
    for line in body.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced and _H1.match(line):
            return True
    return False
