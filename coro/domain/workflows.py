"""Workflow markdown: YAML front matter (the phases) followed by prose (SPEC §4.2).

A workflow file looks like::

    ---
    display_name: Implementation Job
    initial_phase: planning
    phases:
      - name: planning
        agent: agents/planner.md
        interactive_checkpoint: true
      - name: coding
        agent: agents/coder.md
        tier: coding
    ---
    # Workflow: Implementation Job
    Prose for the agents...

Front matter is validated strictly: unknown keys, wrong types and inconsistent phase
references are refused with a `WorkflowError` that names the file and the 1-based line
of the offending key (counting the opening `---` as line 1), so a person editing a
workflow is pointed at the exact spot.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from coro.domain.models import (
    CANCELLED,
    COMPLETE,
    ESCALATED,
    FAILED,
    QUEUED,
    TriggerSource,
    WorkflowPhaseSummary,
)
from coro.domain.paths import check_relative_path

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
NAME_RULE = "1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
#: Job statuses the runner owns; a phase may not claim one as its running status.
RESERVED_STATUSES = frozenset({QUEUED, COMPLETE, CANCELLED, FAILED, ESCALATED})
DESCRIPTION_MAX = 220

Tier = Literal["planning", "coding", "mini"]
WorkflowKind = Literal["job", "campaign", "internal"]
TIERS: tuple[str, ...] = get_args(Tier)
TRIGGER_SOURCES: tuple[str, ...] = get_args(TriggerSource)

_NonEmpty = Annotated[str, Field(min_length=1)]

#: libyaml's safe loader when PyYAML was built with it (same nodes and marks, ~15x faster).
_COMPOSER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CACHE_SIZE = 128
_cache: dict[tuple[str, str, int, int, int], Workflow] = {}


class WorkflowError(Exception):
    """A workflow file that cannot be used, located as precisely as possible."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


# --- models ---------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"invalid {what} name {value!r}: use {NAME_RULE}")
    return value


def _check_agent(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        path = check_relative_path(value)
    except ValueError as exc:
        raise ValueError(f"agent {exc}") from None
    if not path.endswith(".md"):
        raise ValueError(f"agent must be a markdown file such as 'agents/coder.md', got {value!r}")
    return path


class SubagentSpec(_Strict):
    """A helper the phase's agent may delegate to."""

    name: str
    agent: str | None = None
    model: _NonEmpty | None = None
    tier: Tier | None = None
    provider: _NonEmpty | None = None
    tools: list[_NonEmpty] | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "subagent")

    @field_validator("agent")
    @classmethod
    def _valid_agent(cls, value: str | None) -> str | None:
        return _check_agent(value)


class Phase(_Strict):
    """One step of a workflow; phases run in declared order unless `goto_phase` says so."""

    name: str
    agent: str | None = None
    status: str = ""
    model: _NonEmpty | None = None
    tier: Tier | None = None
    provider: _NonEmpty | None = None
    interactive_checkpoint: bool = False
    tools: list[_NonEmpty] | None = None
    #: `shell` commands get outbound networking (the host's loopback stays closed)
    network: bool = False
    subagents: list[SubagentSpec] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        filled = dict(data)
        name = filled.get("name")
        if filled.get("status") is None and isinstance(name, str) and NAME_PATTERN.match(name):
            filled["status"] = name
        if filled.get("model") is None and filled.get("tier") is None:
            filled["tier"] = "planning"
        return filled

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "phase")

    @field_validator("status")
    @classmethod
    def _valid_status(cls, value: str) -> str:
        if value in RESERVED_STATUSES:
            raise ValueError(
                f"status {value!r} is reserved for the runner "
                f"({', '.join(sorted(RESERVED_STATUSES))})"
            )
        return _check_name(value, "status")

    @field_validator("agent")
    @classmethod
    def _valid_agent(cls, value: str | None) -> str | None:
        return _check_agent(value)


class _Override(_Strict):
    initial_phase: str


class _FrontMatter(_Strict):
    """The YAML keys a workflow may declare; everything else is refused."""

    display_name: str | None = None
    description: str | None = None
    kind: WorkflowKind = "job"
    initial_phase: str | None = None
    overrides: dict[TriggerSource, _Override] = Field(default_factory=dict)
    phases: list[Phase]


class Workflow(BaseModel):
    """A parsed, validated workflow."""

    model_config = ConfigDict(frozen=True)

    path: str
    source: str
    display_name: str
    description: str
    kind: WorkflowKind = "job"
    initial_phase: str
    overrides: dict[str, str] = Field(default_factory=dict)
    phases: list[Phase]
    body: str = ""

    @property
    def id(self) -> str:
        """The workflow directory name (`workflows/<id>/workflow.md`)."""
        return _workflow_id(self.path)

    @property
    def phase_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.phases)

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    def next_phase(self, name: str) -> str | None:
        """The phase declared after `name` (None for the last phase or an unknown name)."""
        names = self.phase_names
        if name not in names:
            return None
        index = names.index(name) + 1
        return names[index] if index < len(names) else None

    def initial_phase_for(self, trigger_source: str) -> str:
        return self.overrides.get(trigger_source, self.initial_phase)

    def phase_summaries(self) -> list[WorkflowPhaseSummary]:
        """What a job record keeps in `workflowPhases`."""
        return [
            WorkflowPhaseSummary(
                name=p.name,
                status=p.status,
                agent=p.agent,
                interactive_checkpoint=p.interactive_checkpoint,
            )
            for p in self.phases
        ]


# --- parsing --------------------------------------------------------------------------

Loc = tuple[int | str, ...]


def split_front_matter(text: str) -> tuple[str, str] | None:
    """`(front_matter, body)` when `text` opens with a closed `---` block, else None."""
    lines = _normalise(text).split("\n")
    if not lines or lines[0].rstrip() != "---":
        return None
    for index in range(1, len(lines)):
        if lines[index].rstrip() == "---":
            return "\n".join(lines[1:index]), "\n".join(lines[index + 1 :])
    return None


def strip_front_matter(text: str) -> str:
    """The prose of a markdown file, front matter (if any) removed, leading space trimmed."""
    split = split_front_matter(text)
    return (split[1] if split else _normalise(text)).lstrip()


def parse_workflow(text: str, *, source: str, path: str) -> Workflow:
    """Parse and validate a workflow file's text; `source` names it in errors."""
    text = _normalise(text)
    if not text.startswith("---") or text.split("\n", 1)[0].rstrip() != "---":
        raise WorkflowError(
            source,
            1,
            "missing front matter: a workflow starts with a '---' line, then YAML "
            "(display_name, phases, ...), then a closing '---' line",
        )
    split = split_front_matter(text)
    if split is None:
        raise WorkflowError(
            source, 1, "front matter opened on line 1 is never closed by a '---' line"
        )
    front, body = split
    root = _compose(front, source)
    if root is None:
        raise WorkflowError(source, 1, "front matter is empty; it must declare at least 'phases'")
    _check_duplicate_keys(root, source)
    if not isinstance(root, yaml.MappingNode):
        raise WorkflowError(
            source,
            _file_line(root),
            f"front matter must be a mapping of keys (display_name, phases, ...), "
            f"got {_node_kind(root)}",
        )
    data = _construct(root, source)

    try:
        matter = _FrontMatter.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, root, source) from None
    _check_semantics(matter, root, source)

    body = body.lstrip()
    phases = matter.phases
    return Workflow(
        path=path,
        source=source,
        display_name=matter.display_name or _first_heading(body) or _workflow_id(path),
        description=matter.description or _first_paragraph(body),
        kind=matter.kind,
        initial_phase=matter.initial_phase or phases[0].name,
        overrides={src: o.initial_phase for src, o in matter.overrides.items()},
        phases=phases,
        body=body,
    )


def load_workflow_file(file: Path, path: str) -> Workflow:
    """Read and parse one workflow file (UTF-8); every failure is a WorkflowError.

    Valid results are cached by the file's identity (inode, size, mtime), so resolving
    the workflow again at every phase boundary costs a `stat`.
    """
    source = str(file)
    try:
        stat = file.stat()
        key = (source, path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = _cache.get(key)
        if cached is not None:
            return cached
        raw = file.read_bytes()
    except OSError as exc:
        raise WorkflowError(source, None, f"cannot read workflow: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise WorkflowError(
            source, line, f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})"
        ) from None
    workflow = parse_workflow(text, source=source, path=path)
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[key] = workflow
    return workflow


# --- helpers --------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _workflow_id(path: str) -> str:
    pure = PurePosixPath(path)
    return pure.parent.name or pure.stem


def _file_line(node: yaml.Node) -> int:
    # Mark lines are 0-based within the front matter, which starts on file line 2.
    return int(node.start_mark.line) + 2


def _compose(front: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(front, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark is not None else None
        raise WorkflowError(source, line, f"invalid YAML: {_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)
        line = front.count("\n", 0, position) + 2 if isinstance(position, int) else None
        raise WorkflowError(source, line, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise WorkflowError(source, None, "invalid YAML: nested too deeply") from None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "syntax error"
    return f"{problem} ({exc.context})" if exc.context else problem


def _construct(root: yaml.Node, source: str) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark is not None else None
        raise WorkflowError(source, line, f"invalid YAML: {_yaml_problem(exc)}") from None
    finally:
        loader.dispose()


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return f"the value {_short(str(node.value))!r}"


def _check_duplicate_keys(root: yaml.Node, source: str) -> None:
    """PyYAML keeps the last of two equal keys silently; a workflow refuses them."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        raise WorkflowError(source, _file_line(key), f"duplicate key '{key.value}'")
                    keys.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _line_of(root: yaml.Node, loc: Sequence[int | str]) -> int:
    """The file line of the YAML node a validation `loc` points at (or its nearest parent)."""
    node = root
    line = _file_line(root)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    node, line = value, _file_line(key)
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return line
            node = node.value[part]
            line = _file_line(node)
        else:
            return line
    return line


def _loc_text(loc: Iterable[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(_short(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


_TYPE_WORDS = {
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _known_keys(parent: Loc) -> tuple[str, ...]:
    match parent:
        case ():
            return tuple(_FrontMatter.model_fields)
        case ("phases", int()):
            return tuple(Phase.model_fields)
        case ("phases", int(), "subagents", int()):
            return tuple(SubagentSpec.model_fields)
        case ("overrides", str()):
            return tuple(_Override.model_fields)
    return ()


def _describe(error: ErrorDetails) -> tuple[Loc, str]:
    """A validation error as (loc of the offending node, message for a person)."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        if loc[:1] == ("overrides",):
            return loc, (
                f"overrides: unknown trigger source {_show(loc[-1])}; "
                f"expected one of {', '.join(TRIGGER_SOURCES)}"
            )
        return loc, f"{_loc_text(loc[:-1])}: keys must be strings, got {_show(loc[-1])}"
    where = _loc_text(loc) or "front matter"
    if kind == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        known = _known_keys(parent)
        message = f"unknown key '{key}'"
        if parent:
            message += f" in {_loc_text(parent)}"
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            message += f" (did you mean '{close[0]}'?)"
        elif known:
            message += f"; allowed keys: {', '.join(known)}"
        return loc, message
    if kind == "missing":
        owner = _loc_text(loc[:-1]) or "front matter"
        return loc, f"{owner}: missing required key '{loc[-1]}'"
    if kind == "literal_error":
        noun = {"tier": "tier", "kind": "kind"}.get(str(loc[-1]), "value") if loc else "value"
        return loc, f"{where}: unknown {noun} {_show(value)}; expected {ctx.get('expected')}"
    if kind in _TYPE_WORDS:
        return loc, f"{where}: expected {_TYPE_WORDS[kind]}, got {_show(value)}"
    if kind == "string_too_short":
        return loc, f"{where}: must not be empty"
    if kind == "value_error" and "error" in ctx:
        return loc, f"{where}: {ctx['error']}"
    return loc, f"{where}: {error['msg']}"


def _first_error(exc: ValidationError, root: yaml.Node, source: str) -> WorkflowError:
    """The problem nearest the top of the file (ties: pydantic's field order)."""
    located = []
    for error in exc.errors(include_url=False):
        loc, message = _describe(error)
        located.append((_line_of(root, loc), message))
    line, message = min(located, key=lambda item: item[0])
    extra = len(located) - 1
    if extra:
        message += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    return WorkflowError(source, line, message)


def _check_semantics(matter: _FrontMatter, root: yaml.Node, source: str) -> None:
    def fail(loc: Loc, message: str) -> WorkflowError:
        return WorkflowError(source, _line_of(root, loc), message)

    if not matter.phases:
        raise fail(("phases",), "phases: a workflow needs at least one phase")
    names: list[str] = []
    for index, phase in enumerate(matter.phases):
        if phase.name in names:
            raise fail(
                ("phases", index, "name"),
                f"phases[{index}].name: duplicate phase name '{phase.name}' "
                f"(already declared as phases[{names.index(phase.name)}])",
            )
        names.append(phase.name)
        helpers: list[str] = []
        for sub_index, sub in enumerate(phase.subagents):
            if sub.name in helpers:
                raise fail(
                    ("phases", index, "subagents", sub_index, "name"),
                    f"phases[{index}].subagents[{sub_index}].name: duplicate subagent "
                    f"name '{sub.name}'",
                )
            helpers.append(sub.name)
    declared = ", ".join(names)
    if matter.initial_phase is not None and matter.initial_phase not in names:
        raise fail(
            ("initial_phase",),
            f"initial_phase: '{matter.initial_phase}' is not a declared phase ({declared})",
        )
    for trigger, override in matter.overrides.items():
        if override.initial_phase not in names:
            raise fail(
                ("overrides", trigger, "initial_phase"),
                f"overrides.{trigger}.initial_phase: '{override.initial_phase}' is not a "
                f"declared phase ({declared})",
            )


_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$")


def _first_heading(body: str) -> str | None:
    fenced = False
    for line in body.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            title = re.sub(r"^workflow\s*:\s*", "", match.group(1), flags=re.IGNORECASE)
            return title.strip() or None
    return None


def _first_paragraph(body: str) -> str:
    paragraph: list[str] = []
    fenced = False
    for raw in body.split("\n"):
        line = raw.strip()
        if line.startswith(("```", "~~~")):
            if paragraph:
                break
            fenced = not fenced
            continue
        if fenced:
            continue
        if not line or line.startswith("#"):
            if paragraph:
                break
            continue
        paragraph.append(line)
    text = " ".join(paragraph)
    if len(text) > DESCRIPTION_MAX:
        text = text[: DESCRIPTION_MAX - 1].rstrip() + "…"
    return text
