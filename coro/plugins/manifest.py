"""What a plugin declares about itself (SPEC §2.5): the manifest.

Every plugin — built-in or drop-in — is described by one `PluginManifest`: its id and
kind, its own version, the range of Coro's plugin API it was written for
(`hostCompatibility`), the JSON Schema of its `plugins.installed.<id>.config`, its
capabilities, how its webhooks are signed, and (drop-ins) the factory that creates it.

`hostCompatibility` accepts npm-style ranges (`^1.0.0`, `~1.2.0`, `1.2.3`, `*`) and
PEP 440 specifiers (`>=1.0,<2`); it is checked against `HOST_API_VERSION`.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

#: The version of the plugin API this runner offers (semver: a new major breaks plugins).
HOST_API_VERSION = "1.0.0"

#: The kinds of plugin (`coro.extensions` declares what each one provides).
PluginKindName = Literal["executor", "scm", "tracker", "tools", "state", "transport", "notifier"]

#: Plugin ids: lower-case letters, digits, `.`, `_`, `-` (they name config slots and URLs).
PLUGIN_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_ENTRY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
_CARET_OR_TILDE = re.compile(r"^([~^])\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_BARE_VERSION = re.compile(r"^\d+(?:\.\d+){0,2}$")


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded or created; the message says why (never a secret)."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class WebhookSpec(_Model):
    """How the provider signs webhook deliveries (the cloud verifies them from this)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    algorithm: Literal["hmac-sha256", "hmac-sha1", "none"]
    header: str = Field(min_length=1)
    format: str = Field(min_length=1)  # "sha256=<hex>", "sha1=<hex>", "<hex>", "<plain>"
    path_suffix: str | None = None


class PluginManifest(_Model):
    id: str = Field(pattern=PLUGIN_ID_PATTERN)
    kind: PluginKindName
    version: str = Field(min_length=1, max_length=64)
    display_name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)
    host_compatibility: str = Field(min_length=1, max_length=100)
    #: JSON Schema of `plugins.installed.<id>.config`; None: any object.
    config_schema: dict[str, Any] | None = None
    capabilities: dict[str, bool] = Field(default_factory=dict)
    webhook: WebhookSpec | None = None
    #: on without a `plugins.installed.<id>` slot (with empty settings)
    enabled_by_default: bool = False
    #: `module:attr` of the factory `create(settings, context)`; default: the entry
    #: point's own `create`.
    entry: str | None = Field(default=None, pattern=_ENTRY_PATTERN)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        try:
            Version(value)
        except InvalidVersion:
            raise ValueError(f"{value!r} is not a version (e.g. 1.0.0)") from None
        return value

    @field_validator("host_compatibility")
    @classmethod
    def _host_range(cls, value: str) -> str:
        host_specifier(value)  # raises ValueError for a range it cannot read
        return value

    @field_validator("config_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def is_compatible(self, host: str = HOST_API_VERSION) -> bool:
        return Version(host) in host_specifier(self.host_compatibility)

    def check_compatible(self, host: str = HOST_API_VERSION) -> None:
        if not self.is_compatible(host):
            raise PluginLoadError(
                f"{self.id} {self.version} requires Coro plugin API "
                f"{self.host_compatibility!r}; this runner provides {host}"
            )

    def secret_keys(self) -> set[str]:
        """Config keys the schema marks secret (`writeOnly` or `format: password`)."""
        properties = (self.config_schema or {}).get("properties")
        if not isinstance(properties, dict):
            return set()
        return {key for key, prop in properties.items() if _is_secret_schema(prop)}

    def config_issues(self, config: dict[str, Any]) -> list[dict[str, str]]:
        """`[{path, message}]` of `config` against `configSchema` (paths inside config)."""
        if self.config_schema is None:
            return []
        validator = Draft202012Validator(self.config_schema)
        issues = []
        for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(part) for part in error.absolute_path) or "(root)"
            issues.append({"path": path, "message": _schema_message(error)})
        return issues


def _is_secret_schema(prop: Any) -> bool:
    """`writeOnly` or `format: password`, also inside `anyOf`/`oneOf` (optional fields)."""
    if not isinstance(prop, dict):
        return False
    if prop.get("writeOnly") is True or prop.get("format") == "password":
        return True
    options = [*prop.get("anyOf", []), *prop.get("oneOf", [])]
    return any(_is_secret_schema(option) for option in options)


def _schema_message(error: Any) -> str:
    """jsonschema's message without echoing the offending value (it may be a secret)."""
    validator = error.validator
    if validator == "required":
        return str(error.message)  # names the missing key, not a value
    if validator == "additionalProperties":
        return str(error.message)  # names the unexpected keys
    expected = error.validator_value
    if isinstance(expected, (str, int, float, bool)) or validator in ("type", "enum"):
        return f"failed the {validator} check ({validator}: {expected!r})"
    return f"failed the {validator} check"


def host_specifier(text: str) -> SpecifierSet:
    """A compatibility range as a PEP 440 `SpecifierSet`; `ValueError` if unreadable."""
    raw = text.strip()
    if raw in ("", "*"):
        return SpecifierSet()
    match = _CARET_OR_TILDE.match(raw)
    if match:
        op, major_s, minor_s, patch_s = match.groups()
        major, minor, patch = int(major_s), int(minor_s or 0), int(patch_s or 0)
        low = f">={major}.{minor}.{patch}"
        if op == "~" or (op == "^" and major == 0):
            # ~1.2.3 and ^0.2.3: same minor; ^0.0.3: exactly that patch
            if op == "^" and major == 0 and minor == 0:
                return SpecifierSet(f"=={major}.{minor}.{patch}")
            return SpecifierSet(f"{low},<{major}.{minor + 1}.0")
        return SpecifierSet(f"{low},<{major + 1}.0.0")
    if _BARE_VERSION.match(raw):
        return SpecifierSet(f"=={raw}")
    try:
        return SpecifierSet(raw)
    except InvalidSpecifier:
        raise ValueError(
            f"{text!r} is not a version range (e.g. ^1.0.0, ~1.2.0, >=1.0,<2, or *)"
        ) from None


def parse_manifest(raw: Any) -> PluginManifest:
    """A manifest from a dict (or a `PluginManifest`); `PluginLoadError` lists problems."""
    if isinstance(raw, PluginManifest):
        return raw
    if not isinstance(raw, dict):
        raise PluginLoadError(
            f"the manifest must be a dict or PluginManifest, not {type(raw).__name__}"
        )
    try:
        return PluginManifest.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            path = ".".join(str(part) for part in item["loc"]) or "(root)"
            problems.append(f"{path}: {item['msg']}")
        raise PluginLoadError("invalid manifest: " + "; ".join(problems)) from None


def resolve_entry(entry: str) -> Any:
    """The object named by `module:attr` (attr may be dotted)."""
    module_name, _, attr = entry.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def settings_schema(model: type[BaseModel]) -> dict[str, Any] | None:
    """The JSON Schema of a settings model as config.json spells it (camelCase)."""
    try:
        return model.model_json_schema(by_alias=True)
    except Exception:  # a type pydantic cannot describe: the dashboard shows a text box
        return None
