"""Naming repositories and pull requests on a forge (`github`, `bitbucket`): owner
settings, `owner/name` keys and clone URLs, remote matching, pull request ids, and
the order of comments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

import httpx

from coro.domain.errors import PluginError
from coro.plugins.http import display_url
from coro.plugins.scm.base import PrComment

_NAME = re.compile(r"^[A-Za-z0-9_.{}-]+$")
_SSH_FORM = re.compile(r"^[^/@\s]+@([^:/\s]+):(.*)$")  # git@host:owner/name.git


def check_name(value: str | None) -> str | None:
    """An owner / workspace setting."""
    if value is None:
        return None
    value = value.strip()
    if not _NAME.match(value) or value in (".", ".."):
        raise ValueError("must be a plain name (letters, digits, '-', '_', '.')")
    return value


def split_repo(
    provider: str, repo: str, default_owner: str | None, owner_field: str
) -> tuple[str, str]:
    """`owner/name`, a bare `name` (with the configured default owner), or a clone URL
    (`https://host/owner/name.git`, `git@host:owner/name.git`) → (owner, name)."""
    text = repo.strip()
    shown = display_url(text)  # a URL may carry credentials: never repeat them
    segments: list[str]
    ssh = _SSH_FORM.match(text)
    if "://" in text:
        path = httpx.URL(text).path if _parsable(text) else ""
        segments = [part for part in path.split("/") if part][:2]
    elif ssh is not None:
        segments = [part for part in ssh.group(2).split("/") if part][:2]
    else:
        segments = [part for part in text.split("/") if part]
    if segments:
        segments[-1] = segments[-1].removesuffix(".git")
    if len(segments) == 1:
        if not default_owner:
            raise PluginError(
                f"{provider}: repository {shown!r} has no owner and {owner_field} is not "
                f"configured; name it as '<{owner_field}>/<name>'."
            )
        segments.insert(0, default_owner)
    if len(segments) != 2 or not all(_NAME.match(s) and s not in (".", "..") for s in segments):
        raise PluginError(
            f"{provider}: {shown!r} is not a repository name; expected '<{owner_field}>/<name>'."
        )
    return segments[0], segments[1]


def _parsable(text: str) -> bool:
    try:
        httpx.URL(text)
    except httpx.InvalidURL:
        return False
    return True


def remote_pattern(hosts: Iterable[str]) -> re.Pattern[str]:
    """Matches https, ssh and scp-like remotes on any of `hosts` (not look-alikes such
    as `github.com.example.org` or `notgithub.com`)."""
    names = "|".join(sorted({re.escape(host.lower()) for host in hosts if host}))
    return re.compile(rf"(^|//|@)({names})(:\d+)?[:/]", re.IGNORECASE)


def check_pr_id(provider: str, pr_id: int) -> int:
    if isinstance(pr_id, bool) or not isinstance(pr_id, int) or pr_id <= 0:
        raise PluginError(f"{provider}: pull request ids are positive integers, not {pr_id!r}.")
    return pr_id


def sort_comments(comments: Iterable[PrComment]) -> list[PrComment]:
    """Ascending by time (then id); duplicates (an item that moved between pages while
    they were read) dropped."""
    unique = {comment.id: comment for comment in comments}
    return sorted(unique.values(), key=lambda c: (_moment(c.created_at), _id_key(c.id)))


def _moment(stamp: str) -> float:
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _id_key(comment_id: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", comment_id)
    return (int(digits) if digits else 0, comment_id)
