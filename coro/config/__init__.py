"""`$CORO_HOME` layout and the validated `config.json`.

Everything a runner keeps on disk lives under one directory so a test (or a second
runner) can isolate itself by pointing `CORO_HOME` somewhere else.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from coro.config.notifications import NotificationsConfig
from coro.config.section import ConfigSection, http_url
from coro.config.triggers import TriggersConfig
from coro.domain.models import BudgetTokens, BudgetUsd
from coro.secrets import MASKED, mask_secret, mask_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
#: hosts a runner may bind without an API token (nothing beyond this machine reaches them)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(Exception):
    """config.json is unreadable or invalid; `issues` lists `{path, message}`."""

    def __init__(self, message: str, issues: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.issues = issues or []


class PathsConfig(ConfigSection):
    working_dir: str | None = None
    intelligence_dir: str | None = None


#: How an executor offers tools to a model (the `openai` executor; the others ignore it).
ToolCalling = Literal["native", "prompted", "constrained", "auto"]


class ModelAlias(ConfigSection):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    #: tokens the model can take, when the catalogue does not know it (a local model)
    context_window: int | None = Field(default=None, ge=1_000, le=100_000_000)
    #: how the `openai` executor offers tools (the others ignore it)
    tool_calling: ToolCalling | None = None


class LlmConfig(ConfigSection):
    default_provider: str | None = Field(default=None, min_length=1)
    aliases: dict[str, ModelAlias] = Field(default_factory=dict)


class BudgetConfig(ConfigSection):
    max_cost_usd: BudgetUsd | None = None
    max_tokens: BudgetTokens | None = None


class StuckConfig(ConfigSection):
    """Stuck detection in the phase loop (see `coro.engine.stuck`)."""

    enabled: bool = True
    #: the same call with the same result this many times in a row is a loop
    repeat_threshold: int = Field(default=3, ge=2, le=100)
    #: the same error text this many times in a row is a loop
    error_threshold: int = Field(default=3, ge=2, le=100)
    #: two calls taking turns over this many calls is a loop
    alternation_calls: int = Field(default=6, ge=4, le=100)
    #: turns in a row without a tool call that escalate (the ones before are re-run)
    idle_turns: int = Field(default=2, ge=1, le=100)


class JobsConfig(ConfigSection):
    max_concurrent: int = Field(default=4, ge=1, le=1000)
    completion_gate_max_retries: int = Field(default=5, ge=0, le=100)
    default_budget: BudgetConfig = Field(default_factory=BudgetConfig)
    stuck: StuckConfig = Field(default_factory=StuckConfig)


class IntakeConfig(ConfigSection):
    """Plan-mode budgets per session."""

    max_turns: int = Field(default=8, ge=1, le=100)
    max_output_tokens_per_turn: int = Field(default=4096, ge=64, le=64_000)
    max_session_tokens: int = Field(default=30_000, ge=1_000, le=2_000_000)


class CoordinationConfig(ConfigSection):
    """How campaigns run their children."""

    max_parallel_children: int = Field(default=1, ge=1, le=100)


class PollingConfig(ConfigSection):
    """How the local runner watches the pull requests of parked jobs."""

    interval_seconds: float = Field(default=60.0, ge=1, le=86_400)
    #: consecutive failed polls of one PR before its job is woken to decide
    failure_threshold: int = Field(default=5, ge=1, le=1000)
    #: after a change through the `local` SCM, poll this much later (changes made
    #: together — an approval and a comment — then arrive together)
    local_change_delay_seconds: float = Field(default=1.0, ge=0, le=86_400)


class PluginSlot(ConfigSection):
    """One installed plugin: whether it is on, and its own settings (validated by it)."""

    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class PluginsConfig(ConfigSection):
    defaults: dict[str, str] = Field(default_factory=dict)  # kind -> plugin id
    installed: dict[str, PluginSlot] = Field(default_factory=dict)


class IntelligenceConfig(ConfigSection):
    """Where the tenant intelligence layer comes from besides `paths.intelligenceDir`:
    an optional git remote, cloned under `$CORO_HOME/cache/` and refreshed on demand."""

    #: https://, ssh://, git@host:path, file:// or a local path; never a password in it
    tenant_git_url: str | None = Field(default=None, min_length=1, max_length=2048)
    #: the branch to follow (default: the remote's HEAD)
    tenant_branch: str | None = Field(default=None, min_length=1, max_length=255)
    #: a refresh is attempted at most this often (phase starts, API reads)
    refresh_seconds: float = Field(default=300.0, ge=0, le=86_400)


#: Server ids become part of tool names (`mcp__<id>__<tool>`); `coro` is Coro's own.
MCP_SERVER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RESERVED_MCP_SERVER_IDS = frozenset({"coro"})


class _McpServerBase(ConfigSection):
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


class ShellToolConfig(ConfigSection):
    """The `shell` tool. `sandbox`: "bwrap" (the default) runs every command in a
    bubblewrap sandbox and refuses to run one where bubblewrap cannot work; "off" runs
    commands unsandboxed, with a warning at every job start (see `coro.tools.sandbox`)."""

    sandbox: Literal["bwrap", "off"] = "bwrap"


class ToolsConfig(ConfigSection):
    shell: ShellToolConfig = Field(default_factory=ShellToolConfig)


#: `state.url` schemes, by backend
STATE_URL_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgresql": "postgres",
    "postgresql+asyncpg": "postgres",
}


class StateConfig(ConfigSection):
    """Where the runner keeps jobs, logs and its other records (`coro.state.factory`):
    `sqlite:///<absolute path>` (the default is `$CORO_HOME/state.db`) or
    `postgresql+asyncpg://user[:password]@host[:port]/database`."""

    url: str | None = Field(default=None, min_length=1, max_length=2000)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in STATE_URL_SCHEMES:
            raise ValueError(
                "must be a sqlite:///<path> or postgresql+asyncpg://user@host/database URL"
            )
        return value

    @property
    def backend(self) -> str:
        """`sqlite` or `postgres`."""
        if self.url is None:
            return "sqlite"
        return STATE_URL_SCHEMES[self.url.split("://", 1)[0].lower()]


class CloudConfig(ConfigSection):
    """The team cloud this runner joins (`coro login`): with both `url` and `token` the
    runner is *hybrid* (it replicates its jobs to the cloud and takes commands from it);
    without them it is local. `token` is a runner token (a secret: masked in GET
    /config); `runnerId` pins the runner's id (default: one kept in
    `$CORO_HOME/cloud/runner-id`)."""

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    token: str | None = Field(default=None, min_length=1, max_length=4096)
    runner_id: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = http_url(value)
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value

    @field_validator("token")
    @classmethod
    def _token_is_printable(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ValueError("must be printable text")
        return value

    @property
    def enabled(self) -> bool:
        """Whether the runner is hybrid (both a URL and a token)."""
        return bool(self.url and self.token)


class CoroConfig(ConfigSection):
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
    intelligence: IntelligenceConfig = Field(default_factory=IntelligenceConfig)
    mcp_servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    triggers: TriggersConfig = Field(default_factory=TriggersConfig)

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


# --- secrets in config.json, and section-aware updates (GET/PUT /config) -------------------

#: Keys whose string values are secrets wherever they appear (`apiKey`, `token`,
#: `apiToken`, `bearerToken`, `appPassword`, `webhookSecret`, ...).
SECRET_KEY_PATTERN = re.compile(
    r"token|secret|passw(or)?d|api[_-]?key|credential|authorization|private[_-]?key"
    # a Slack incoming webhook's URL is its own credential
    r"|webhook[_-]?url",
    re.I,
)
#: Maps whose every value is a secret (an MCP server's environment and HTTP headers).
SECRET_VALUE_MAPS = frozenset({"env", "headers"})
#: Where a PUT replaces an entry whole instead of merging into it (`*`: any key).
REPLACED_WHOLE: tuple[tuple[str, ...], ...] = (("mcpServers", "*"), ("llm", "aliases", "*"))
_LOOKS_MASKED = re.compile(r"^\S{4}\.\.\.\S{4}$")
#: URLs that may carry a password (`postgresql://user:password@host/db`): shown with the
#: password and query values masked (`coro.secrets.mask_url`), the rest readable.
SECRET_URL_PATHS: frozenset[tuple[str, ...]] = frozenset({("state", "url")})

ConfigPath = tuple[str, ...]


def is_secret_path(
    path: ConfigPath, secret_keys: Mapping[str, Iterable[str]] | None = None
) -> bool:
    """Whether the string at `path` in config.json is a secret.

    By name (`SECRET_KEY_PATTERN`), as a value of an `env`/`headers` map, or, for
    `plugins.installed.<id>.config.<key>`, because the plugin's schema says so
    (`secret_keys`: plugin id -> keys).
    """
    if not path:
        return False
    if SECRET_KEY_PATTERN.search(path[-1]):
        return True
    if len(path) >= 2 and path[-2] in SECRET_VALUE_MAPS:
        return True
    if secret_keys and len(path) == 5 and path[:2] == ("plugins", "installed"):
        return path[3] == "config" and path[4] in set(secret_keys.get(path[2], ()))
    return False


def mask_config(
    data: dict[str, Any], secret_keys: Mapping[str, Iterable[str]] | None = None
) -> dict[str, Any]:
    """A copy of config JSON with every secret masked (`coro.secrets.mask_secret`)."""

    def walk(node: Any, path: ConfigPath) -> Any:
        if isinstance(node, dict):
            return {key: walk(value, (*path, str(key))) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item, path) for item in node]
        if isinstance(node, str) and path in SECRET_URL_PATHS:
            return mask_url(node)
        if isinstance(node, str) and is_secret_path(path, secret_keys):
            return mask_secret(node)
        return node

    masked: dict[str, Any] = walk(data, ())
    return masked


def _replaced_whole(path: ConfigPath) -> bool:
    return any(
        len(path) == len(pattern) and all(p in ("*", k) for p, k in zip(pattern, path, strict=True))
        for pattern in REPLACED_WHOLE
    )


def merge_config(
    stored: dict[str, Any], patch: dict[str, Any], path: ConfigPath = ()
) -> dict[str, Any]:
    """A PUT body merged into config JSON: JSON Merge Patch (RFC 7386: objects merge key
    by key, `null` removes, anything else replaces) except that `REPLACED_WHOLE` entries
    (an MCP server, a model alias) are replaced as a whole."""
    result = copy.deepcopy(stored)
    for key, value in patch.items():
        here = (*path, str(key))
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            base = current if isinstance(current, dict) and not _replaced_whole(here) else {}
            result[key] = merge_config(base, value, here)
        else:
            result[key] = copy.deepcopy(value)
    return result


def apply_config_patch(
    stored: dict[str, Any],
    patch: dict[str, Any],
    secret_keys: Mapping[str, Iterable[str]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """`merge_config`, where a secret sent back exactly as `mask_config` shows it means
    "unchanged". Returns the merged JSON and issues for masked-looking secrets that match
    nothing stored (saving them would overwrite a secret with its mask)."""

    masked = mask_config(stored, secret_keys)
    merged = merge_config(stored, patch)
    issues: list[dict[str, str]] = []

    def restore(
        sent: dict[str, Any], into: dict[str, Any], old: Any, shown: Any, path: ConfigPath
    ) -> None:
        for key, value in sent.items():
            here = (*path, str(key))
            before = old.get(key) if isinstance(old, dict) else None
            seen = shown.get(key) if isinstance(shown, dict) else None
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                restore(value, into[key], before, seen, here)
            elif isinstance(value, list) and isinstance(into.get(key), list):
                restore_entries(value, into[key], before, seen, here)
            elif isinstance(value, str) and here in SECRET_URL_PATHS:
                if isinstance(before, str) and value == seen and seen != before:
                    into[key] = before
                elif _has_masked_password(value):
                    issues.append(
                        {
                            "path": ".".join(here),
                            "message": "the password looks masked but the URL matches no "
                            "stored value: send the real password",
                        }
                    )
            elif isinstance(value, str) and is_secret_path(here, secret_keys):
                if isinstance(before, str) and value == seen and seen != before:
                    into[key] = before
                elif value == MASKED or _LOOKS_MASKED.match(value):
                    issues.append(
                        {
                            "path": ".".join(here),
                            "message": "looks like a masked secret but matches no stored "
                            "value: send the real value",
                        }
                    )

    def restore_entries(
        sent: list[Any], into: list[Any], old: Any, shown: Any, path: ConfigPath
    ) -> None:
        # Entries of a list (notification channels) are matched by their `id`, never by
        # position: a reordered or removed channel must not hand its secret to another.
        old_by_id, shown_by_id = _entries_by_id(old), _entries_by_id(shown)
        for index, (item, target) in enumerate(zip(sent, into, strict=True)):
            if isinstance(item, dict) and isinstance(target, dict):
                ident = item.get("id")
                found = old_by_id.get(ident) if isinstance(ident, str) else None
                seen = shown_by_id.get(ident) if isinstance(ident, str) else None
                restore(item, target, found, seen, (*path, str(index)))

    restore(patch, merged, stored, masked, ())
    return merged, issues


def _entries_by_id(entries: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(entries, list):
        return {}
    return {
        entry["id"]: entry
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("id"), str)
    }


def _has_masked_password(url: str) -> bool:

    try:
        password = urlsplit(url).password
    except ValueError:
        return False
    return password is not None and (password == MASKED or bool(_LOOKS_MASKED.match(password)))
