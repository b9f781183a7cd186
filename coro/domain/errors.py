"""Errors every plugin raises, so the engine and the API can treat them alike."""

from __future__ import annotations


class PluginConfigError(ValueError):
    """A plugin's settings in config.json are invalid; the message names the field."""


class PluginError(Exception):
    """A provider call failed; the message is safe to show (never contains credentials)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PluginAuthError(PluginError):
    """The provider rejected the credentials (401/403)."""


class PluginNotFoundError(PluginError):
    """The repository, pull request or issue does not exist (404)."""


class PluginRateLimited(PluginError):
    def __init__(self, message: str, *, retry_after: float, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
