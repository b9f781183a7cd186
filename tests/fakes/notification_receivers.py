"""Receivers of Coro's notifications, on loopback: a webhook endpoint (any HTTP
receiver, the Slack incoming-webhook kind too) and a real SMTP server (`aiosmtpd`).

`WebhookReceiver` records every delivery (`requests`, with the raw body bytes) and
answers each with the next of its scripted statuses, then `default` (with `body`, as
JSON unless `content_type` says otherwise: Slack answers `ok` as text/html); `hold(n)` keeps
the n-th request (1-based) unanswered until the event it returns is set.

`SmtpReceiver` is aiosmtpd's SMTP protocol served in the test's own event loop (no
thread); given a username and password it offers AUTH LOGIN/PLAIN without TLS and
refuses other credentials (535); it keeps each accepted message, parsed, in
`messages` (`wait_for_messages` blocks on that).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.fakes.http_server import Answer, LoopbackServer, RecordedRequest


class WebhookReceiver(LoopbackServer):
    def __init__(
        self,
        statuses: list[int] | None = None,
        *,
        default: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__()
        self.statuses = list(statuses or [])
        self.default = default
        self.body = body if body is not None else {"received": True}
        self.headers = dict(headers or {})
        self.content_type = content_type
        self._held: dict[int, asyncio.Event] = {}

    def hold(self, number: int) -> asyncio.Event:
        """Keep the `number`-th request (1-based) unanswered until the event is set."""
        return self._held.setdefault(number, asyncio.Event())

    async def handle(self, request: RecordedRequest) -> Answer:
        number = next(i for i, r in enumerate(self.requests, 1) if r is request)
        held = self._held.get(number)
        if held is not None:
            await held.wait()
        status = self.statuses.pop(0) if self.statuses else self.default
        return Answer(status, self.body, dict(self.headers), content_type=self.content_type)


def signature_of(secret: str, raw: bytes) -> str:
    """What `X-Coro-Signature-256` must say for `raw`, as a receiver computes it."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


class _Handler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        async with self.receiver._arrived:
            self.receiver.messages.append(message)
            self.receiver.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos), raw))
            self.receiver._arrived.notify_all()
        return "250 Message accepted for delivery"


class SmtpReceiver:
    def __init__(self, *, username: str | None = None, password: str | None = None) -> None:
        self.username = username
        self.password = password
        self.messages: list[EmailMessage] = []
        #: (MAIL FROM, RCPT TOs, the raw message) of each
        self.envelopes: list[tuple[str, list[str], bytes]] = []
        self.logins: list[str] = []
        self.port = 0
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append(login)
        # handled=False: aiosmtpd answers a refusal itself (535)
        accepted = (login, password) == (self.username, self.password)
        return AuthResult(success=accepted, handled=False)

    def _protocol(self) -> SMTP:
        auth = self.username is not None
        return SMTP(
            _Handler(self),
            hostname="smtp.test",
            authenticator=self._authenticate if auth else None,
            auth_require_tls=False,
        )

    async def wait_for_messages(self, count: int) -> list[EmailMessage]:
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.messages) >= count)
        return self.messages

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
