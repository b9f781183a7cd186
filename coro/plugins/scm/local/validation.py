"""What the local SCM accepts: its settings, repository names, people, texts and ids,
and the errors it refuses with."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from coro.domain.errors import PluginError, PluginNotFoundError
from coro.plugins.http import config_error
from coro.system.git import MAX_DIFF_RESPONSE_BYTES

REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_PERSON_CHARS = 100
MAX_TITLE_CHARS = 1_000
MAX_BODY_CHARS = 256 * 1024
MAX_COMMENT_CHARS = 64 * 1024
MAX_DESCRIPTION_CHARS = 1_000
MAX_REVIEWERS = 50
#: The diff of a pull request is cut after this many bytes (`diffTruncated: true`).
MAX_DIFF_BYTES = MAX_DIFF_RESPONSE_BYTES


# --- errors -------------------------------------------------------------------------------


class LocalScmError(PluginError):
    """A request the local SCM refuses; the message is safe to show and `status` is the
    HTTP status that fits (400 invalid input, 409 conflict with the current state)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message, status=status)


class LocalScmConflict(LocalScmError):
    """The repository already exists, the pull request is not open, or a second open
    pull request for the same branches was asked for."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=409)


class LocalScmNotFound(PluginNotFoundError):
    """No such repository, pull request or comment."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404)


# --- settings -----------------------------------------------------------------------------


class LocalScmSettings(BaseModel):
    """`plugins.installed.local.config` (camelCase in config.json)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    repos_dir: str | None = None
    default_branch: str = "main"

    @field_validator("repos_dir")
    @classmethod
    def _repos_dir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or CONTROL.search(value):
            raise ValueError("must be a directory path")
        return value

    @field_validator("default_branch")
    @classmethod
    def _default_branch(cls, value: str) -> str:
        return _check_branch_syntax(value.strip(), "must be a plain branch name")


def _check_branch_syntax(value: str, problem: str) -> str:
    """A cheap, conservative check of a branch name (git checks it again)."""
    if (
        not _BRANCH_NAME.fullmatch(value)
        or ".." in value
        or "//" in value
        or value.endswith(("/", ".", ".lock"))
        or "/." in value
        or "@{" in value
    ):
        raise ValueError(problem)
    return value


def parse_settings(settings: dict[str, Any]) -> LocalScmSettings:
    try:
        return LocalScmSettings.model_validate(settings)
    except ValidationError as exc:
        raise config_error(exc) from None


# --- names and texts ----------------------------------------------------------------------


def check_repo_name(name: str) -> str:
    """A repository key: `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`, no `..`; a trailing `.git`
    is dropped (`web.git` and `web` are one repository)."""
    if not isinstance(name, str):
        raise LocalScmError("a repository name must be a string")
    text = name.strip()
    if text.endswith(".git") and len(text) > 4:
        text = text[:-4]
    if not is_repo_name(text):
        shown = name if len(name) <= 120 else name[:117] + "..."
        raise LocalScmError(
            f"{shown!r} is not a repository name: use 1-100 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit (no '..')"
        )
    return text


def is_repo_name(text: str) -> bool:
    return bool(REPO_NAME.fullmatch(text)) and ".." not in text


def check_person(value: str, what: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > MAX_PERSON_CHARS or CONTROL.search(text):
        raise LocalScmError(
            f"{what} must be 1-{MAX_PERSON_CHARS} characters without control characters"
        )
    return text


def check_text(value: str, what: str, limit: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise LocalScmError(f"{what} must be text")
    if not allow_empty and not value.strip():
        raise LocalScmError(f"{what} must not be empty")
    if "\x00" in value:
        raise LocalScmError(f"{what} must not contain NUL characters")
    if len(value) > limit:
        raise LocalScmError(f"{what} is longer than {limit} characters")
    return value


def check_pr_id(pr_id: int) -> int:
    if isinstance(pr_id, bool) or not isinstance(pr_id, int) or pr_id <= 0 or pr_id >= 2**62:
        raise LocalScmNotFound(f"no pull request #{pr_id}")
    return pr_id


def check_comment_id(value: str | int | None) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or len(text) > 18 or int(text) <= 0:
        raise LocalScmError(f"in_reply_to must be a comment id, not {str(value)[:40]!r}")
    return int(text)


def reviewer_list(reviewers: Iterable[str] | None) -> list[str]:
    names: list[str] = []
    for reviewer in reviewers or []:
        name = check_person(reviewer, "a reviewer")
        if name not in names:
            names.append(name)
    if len(names) > MAX_REVIEWERS:
        raise LocalScmError(f"at most {MAX_REVIEWERS} reviewers")
    return names
