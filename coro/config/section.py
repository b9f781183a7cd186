"""The base of every config.json section: camelCase keys, unknown keys refused."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

#: White space by every reckoning, for a regex character class: Python's `\s`, pydantic's
#: (Rust's) and JSON Schema's (ECMAScript's) disagree on U+001C–U+001F, U+0085 and U+FEFF,
#: so a pattern written with `\s` alone would refuse what its published schema allows.
SPACE = r"\s\x1c-\x1f\x85\ufeff"


class ConfigSection(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def http_url(value: str, *, allow_credentials: bool = False) -> str:
    """`value` as an http(s) URL without a trailing slash, or ValueError saying why."""
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if not allow_credentials and (parts.username is not None or parts.password is not None):
        raise ValueError("must not carry a user or password")
    return value
