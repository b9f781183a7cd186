"""The `webhook` notifier: the notification's JSON payload POSTed to a URL, signed as
GitHub signs its deliveries.

Headers: `X-Coro-Signature-256: sha256=<hex HMAC-SHA256 of the exact body bytes, keyed
with the channel's secret>`, `X-Coro-Delivery` (the same on every retry of a delivery),
`X-Coro-Event`, `User-Agent: Coro/<version>`. A receiver checks the signature over the
raw bytes it received, before parsing them.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit

from coro.config.notifications import WebhookChannel
from coro.plugins.http import Scrubber, parse_config
from coro.plugins.notifiers.base import (
    Delivery,
    Notification,
    NotifierContext,
    hide_in_request_log,
    post_json,
)


def signature(secret: str, body: bytes) -> str:
    """The `X-Coro-Signature-256` value of `body`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookNotifier:
    def __init__(self, channel: WebhookChannel, context: NotifierContext) -> None:
        self._url = channel.url
        self._secret = channel.secret
        self._context = context
        parts = urlsplit(channel.url)
        #: host and path: the query may carry a token of the receiver's
        self.target = f"{parts.netloc}{parts.path}"
        self._scrubber = Scrubber([channel.secret, parts.query])
        if parts.query:
            hide_in_request_log(parts.query)

    async def send(self, notification: Notification) -> Delivery:
        body = notification.body()
        headers = {
            "User-Agent": self._context.user_agent,
            "X-Coro-Event": notification.event,
            "X-Coro-Delivery": notification.delivery_id,
            "X-Coro-Signature-256": signature(self._secret, body),
        }
        return await post_json(
            self._url,
            body,
            headers,
            timeout_seconds=self._context.timeout_seconds,
            scrubber=self._scrubber,
        )


def create(settings: dict[str, Any], context: NotifierContext) -> WebhookNotifier:
    return WebhookNotifier(parse_config(WebhookChannel, settings), context)
