"""The `slack` notifier: a message to a Slack incoming webhook.

The message has a `text` fallback (what Slack shows in a push notification) and Block
Kit `blocks`: a header (the event and the job), a section (why someone is needed, and
the job's question), a context line (job id, status, phase) and buttons that open the
run on the dashboard and the pull request. Every part stays within Block Kit's limits:
header text 150 characters, section text 3000, button text 75, button URL 3000, at most
50 blocks; `&`, `<` and `>` in mrkdwn are escaped, so no job text becomes a link or a
mention.

The webhook URL is the credential: it appears in no error, log line or answer.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from coro.config.notifications import SlackChannel
from coro.plugins.http import Scrubber, parse_config
from coro.plugins.notifiers.base import (
    Delivery,
    Notification,
    NotifierContext,
    hide_in_request_log,
    post_json,
)
from coro.secrets import mask_secret

HEADER_TEXT_MAX = 150
SECTION_TEXT_MAX = 3000
CONTEXT_TEXT_MAX = 3000
BUTTON_TEXT_MAX = 75
BUTTON_URL_MAX = 3000
FALLBACK_TEXT_MAX = 3000
MAX_BLOCKS = 50


#: Slack's three control characters in mrkdwn, as entities
ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def escape(text: str) -> str:
    """Text for a mrkdwn field: no job text becomes a link, a mention or markup."""
    return "".join(ENTITIES.get(ch, ch) for ch in text)


def mrkdwn(text: str, limit: int) -> str:
    """`text` escaped, cut (with `…`, never inside an entity) to fit `limit`."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    kept: list[str] = []
    size = 0
    for ch in text:
        piece = ENTITIES.get(ch, ch)
        if size + len(piece) > limit - 1:
            break
        kept.append(piece)
        size += len(piece)
    return "".join(kept) + "…"


def plain(text: str, limit: int) -> str:
    """One line of plain text of at most `limit` characters."""
    line = " ".join(text.split()) or "Coro"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def message(notification: Notification) -> dict[str, Any]:
    """The incoming-webhook JSON for `notification`."""
    n = notification
    body = mrkdwn(n.reason, SECTION_TEXT_MAX)
    if n.question and n.question not in n.reason:
        quoted = "\n".join(f"> {line}" for line in n.question.splitlines())
        body = mrkdwn(f"{n.reason}\n\n*Question*\n{quoted}", SECTION_TEXT_MAX)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": plain(f"{n.headline}: {n.title}", HEADER_TEXT_MAX),
                "emoji": True,
            },
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": body}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": mrkdwn(
                        f"Job {n.job_id} · {n.status} · phase {n.phase}", CONTEXT_TEXT_MAX
                    ),
                }
            ],
        },
    ]
    buttons = [
        _button("open-run", "Open the run", n.dashboard_url, primary=True),
        _button("open-pull-request", "View the pull request", n.pull_request_url),
    ]
    elements = [b for b in buttons if b is not None]
    if elements:
        blocks.append({"type": "actions", "elements": elements})
    fallback = mrkdwn(f"{n.headline}: {n.title} — {n.reason}", FALLBACK_TEXT_MAX)
    return {"text": fallback, "blocks": blocks[:MAX_BLOCKS]}


def _button(
    action_id: str, label: str, url: str | None, *, primary: bool = False
) -> dict[str, Any] | None:
    if not url or len(url) > BUTTON_URL_MAX:
        return None  # a link Slack would refuse: the message goes without the button
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": plain(label, BUTTON_TEXT_MAX)},
        "url": url,
    }
    if primary:
        button["style"] = "primary"
    return button


class SlackNotifier:
    def __init__(self, channel: SlackChannel, context: NotifierContext) -> None:
        self._url = channel.webhook_url
        self._context = context
        parts = urlsplit(channel.webhook_url)
        path = parts.path.lstrip("/")
        self.target = f"{parts.netloc}/{mask_secret(path)}" if path else parts.netloc
        # the URL, its path, and each of its parts long enough to be a token
        segments = [s for s in path.split("/") if len(s) >= 8]
        self._scrubber = Scrubber([channel.webhook_url, parts.path, path, *segments])
        hide_in_request_log(path, *segments)

    async def send(self, notification: Notification) -> Delivery:
        body = json.dumps(message(notification), ensure_ascii=False).encode("utf-8")
        headers = {"User-Agent": self._context.user_agent}
        return await post_json(
            self._url,
            body,
            headers,
            timeout_seconds=self._context.timeout_seconds,
            scrubber=self._scrubber,
        )


def create(settings: dict[str, Any], context: NotifierContext) -> SlackNotifier:
    return SlackNotifier(parse_config(SlackChannel, settings), context)
