"""`$CORO_HOME` layout and the validated `config.json`.

Everything a runner keeps on disk lives under one directory so a test (or a second
runner) can isolate itself by pointing `CORO_HOME` somewhere else.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000


class ConfigError(Exception):
    """config.json is unreadable or invalid; `issues` lists `{path, message}`."""

    def __init__(self, message: str, issues: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.issues = issues or []


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class PathsConfig(_Section):
    working_dir: str | None = None
    intelligence_dir: str | None = None


class ModelAlias(_Section):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    reasoning_effort: Literal["low", "medium", "high"] | None = None


class LlmConfig(_Section):
    default_provider: str | None = Field(default=None, min_length=1)
    aliases: dict[str, ModelAlias] = Field(default_factory=dict)


class BudgetConfig(_Section):
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)


class JobsConfig(_Section):
    max_concurrent: int = Field(default=4, ge=1, le=1000)
    completion_gate_max_retries: int = Field(default=5, ge=0, le=100)
    default_budget: BudgetConfig = Field(default_factory=BudgetConfig)


class IntakeConfig(_Section):
    """Plan-mode budgets per session."""

    max_turns: int = Field(default=8, ge=1, le=100)
    max_output_tokens_per_turn: int = Field(default=4096, ge=64, le=64_000)
    max_session_tokens: int = Field(default=30_000, ge=1_000, le=2_000_000)


class CoordinationConfig(_Section):
    """How campaigns run their children."""

    max_parallel_children: int = Field(default=1, ge=1, le=100)


class PollingConfig(_Section):
    """How the local runner watches the pull requests of parked jobs."""

    interval_seconds: float = Field(default=60.0, ge=1, le=86_400)
    #: consecutive failed polls of one PR before its job is woken to decide
    failure_threshold: int = Field(default=5, ge=1, le=1000)
    #: after a change through the `local` SCM, poll this much later (changes made
    #: together — an approval and a comment — then arrive together)
    local_change_delay_seconds: float = Field(default=1.0, ge=0, le=86_400)


class PluginSlot(_Section):
    """One installed plugin: whether it is on, and its own settings (validated by it)."""

    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class PluginsConfig(_Section):
    defaults: dict[str, str] = Field(default_factory=dict)  # kind -> plugin id
    installed: dict[str, PluginSlot] = Field(default_factory=dict)


#: Server ids become part of tool names (`mcp__<id>__<tool>`); `coro` is Coro's own.
MCP_SERVER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RESERVED_MCP_SERVER_IDS = frozenset({"coro"})


class _McpServerBase(_Section):
    """What every external MCP server entry has besides its transport."""

    enabled: bool = True
    #: Tool names or globs (the server's names, or the full `mcp__<id>__<tool>`).
    allowed_tools: list[str] | None = None
    disallowed_tools: list[str] | None = None


class McpStdioServer(_McpServerBase):
    """A server Coro starts as a subprocess and talks to over stdin/stdout."""

    type: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # secrets: never logged


class McpHttpServer(_McpServerBase):
    """A server reached over MCP streamable HTTP."""

    type: Literal["http"] = "http"
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)  # secrets: never logged

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.strip()


def _mcp_server_kind(value: Any) -> str | None:
    """`type` picks the transport; like Claude Code, no `type` + a `command` means stdio."""
    if isinstance(value, dict):
        kind = value.get("type")
        if kind is None:
            return "stdio" if "command" in value else "http" if "url" in value else None
        return kind if kind in ("stdio", "http") else None
    kind = getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


McpServerConfig = Annotated[
    Annotated[McpStdioServer, Tag("stdio")] | Annotated[McpHttpServer, Tag("http")],
    Discriminator(
        _mcp_server_kind,
        custom_error_type="mcp_server_type",
        custom_error_message=(
            'expected {"type": "stdio", "command", ...} or {"type": "http", "url", ...}'
        ),
    ),
]


class CoroConfig(_Section):
    """The sections of config.json the runner understands; unknown keys are refused."""

    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    api_token: str | None = Field(default=None, min_length=16)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    polling: PollingConfig = Field(default_factory=PollingConfig)
    coordination: CoordinationConfig = Field(default_factory=CoordinationConfig)
    mcp_servers: dict[str, McpServerConfig] = Field(default_factory=dict)

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("mcp_servers")
    @classmethod
    def _mcp_server_ids(cls, value: dict[str, Any]) -> dict[str, Any]:
        for server_id in value:
            if server_id.lower() in RESERVED_MCP_SERVER_IDS:
                raise ValueError(f"server id {server_id!r} is reserved for Coro's own tools")
            if not MCP_SERVER_ID_PATTERN.match(server_id):
                raise ValueError(
                    f"server id {server_id!r} must be 1-64 letters, digits, '_' or '-'"
                )
        return value

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def validation_issues(error: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as `[{path: "a.b", message}]`, the shape every 4xx uses."""
    issues = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(root)"
        issues.append({"path": path, "message": item["msg"]})
    return issues


@dataclass(frozen=True)
class CoroHome:
    """The directory tree under `$CORO_HOME` (default `~/.coro`)."""

    root: Path

    @classmethod
    def from_env(cls) -> CoroHome:
        raw = os.environ.get("CORO_HOME") or str(Path.home() / ".coro")
        return cls(Path(raw).expanduser().resolve())

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def plugins_dir(self) -> Path:
        return self.root / "plugins"

    def work_dir(self, config: CoroConfig) -> Path:
        return _expand(config.paths.working_dir) if config.paths.working_dir else self.root / "work"

    def intelligence_dir(self, config: CoroConfig) -> Path:
        if config.paths.intelligence_dir:
            return _expand(config.paths.intelligence_dir)
        return self.root / "intelligence"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def load_config(self) -> CoroConfig:
        """Read and validate config.json; a missing file means all defaults."""
        try:
            raw = self.config_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return CoroConfig()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{self.config_file}: invalid JSON at line {exc.lineno}: {exc.msg}"
            ) from exc
        try:
            return CoroConfig.model_validate(data)
        except ValidationError as exc:
            issues = validation_issues(exc)
            detail = "; ".join(f"{i['path']}: {i['message']}" for i in issues)
            raise ConfigError(f"{self.config_file}: {detail}", issues) from exc

    def save_config(self, config: CoroConfig) -> None:
        """Atomic write with mode 0600: the file holds secrets."""
        self.ensure()
        text = json.dumps(config.to_json(), indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".config-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.config_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _expand(raw: str) -> Path:
    return Path(raw).expanduser().resolve()
