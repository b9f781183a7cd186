"""Showing secrets without revealing them (SPEC §2.6, §2.8).

Note: this module shadows nothing: `import secrets` elsewhere still means the standard
library (imports are absolute); import this one as `coro.secrets`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Values shorter than this are masked entirely: showing 8 of their characters
#: would give most of them away.
MASK_MIN_LENGTH = 12

MASKED = "***"


def mask_secret(value: str) -> str:
    """`first4...last4`; values shorter than `MASK_MIN_LENGTH` become `***`.

    An empty value stays empty (there is nothing to hide, and "unset" stays visible).
    """
    if not value:
        return ""
    if len(value) < MASK_MIN_LENGTH:
        return MASKED
    return f"{value[:4]}...{value[-4:]}"


def mask_values(mapping: dict[str, str]) -> dict[str, str]:
    """The same keys with every value masked (environment variables, HTTP headers)."""
    return {key: mask_secret(str(value)) for key, value in mapping.items()}


def mask_url(url: str) -> str:
    """The URL with its password and query values masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        user = parts.username or ""
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{user}:{mask_secret(parts.password)}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, mask_secret(v)) for k, v in pairs], safe="*.")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
