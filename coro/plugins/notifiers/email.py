"""The `email` notifier: a message over SMTP (`aiosmtplib`), plain text with an HTML
alternative, its subject naming the event and the job.

`security`: `starttls` upgrades the connection before anything else is said (and fails
if the server cannot), `tls` connects over TLS (port 465), `none` sends in the clear (a
relay on the same machine). Replies 4xx are worth another try, 5xx are not.
"""

from __future__ import annotations

import email.policy
import html
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib

from coro.config.notifications import EmailChannel
from coro.plugins.http import Scrubber, parse_config, short_text
from coro.plugins.notifiers.base import Delivery, Notification, NotifierContext

SUBJECT_TITLE_MAX = 120
#: SMTP's line endings; headers unfolded up to RFC 5322's hard limit (Python folds even
#: a short subject oddly at 78: a continuation line before its first word)
POLICY = email.policy.SMTP.clone(max_line_length=998)


def subject(notification: Notification) -> str:
    """`[Coro] <event>: <job title> (<job id>)`, on one line."""
    title = " ".join(notification.title.split())
    if len(title) > SUBJECT_TITLE_MAX:
        title = title[: SUBJECT_TITLE_MAX - 1] + "…"
    return f"[Coro] {notification.headline}: {title} ({notification.job_id})"


def _facts(n: Notification) -> list[tuple[str, str]]:
    facts = [("Job", n.job_id), ("Status", n.status), ("Phase", n.phase), ("Why", n.reason)]
    if n.question:
        facts.append(("Question", n.question))
    return facts


def text_body(n: Notification) -> str:
    lines = [n.title, "", *(f"{label}: {value}" for label, value in _facts(n)), ""]
    lines.append(f"Open the run: {n.dashboard_url}")
    if n.pull_request_url:
        lines.append(f"Pull request: {n.pull_request_url}")
    return "\n".join(lines) + "\n"


def html_body(n: Notification) -> str:
    def esc(value: str) -> str:
        return html.escape(value, quote=True)

    rows = "".join(
        f'<tr><th align="left" valign="top">{esc(label)}</th>'
        f'<td style="white-space: pre-wrap">{esc(value)}</td></tr>'
        for label, value in _facts(n)
    )
    links = [f'<a href="{esc(n.dashboard_url)}">Open the run</a>']
    if n.pull_request_url:
        links.append(f'<a href="{esc(n.pull_request_url)}">View the pull request</a>')
    return (
        "<!doctype html><html><body>"
        f"<h2>{esc(n.headline)}: {esc(n.title)}</h2>"
        f"<table>{rows}</table>"
        f"<p>{' · '.join(links)}</p>"
        "</body></html>"
    )


class EmailNotifier:
    def __init__(self, channel: EmailChannel, context: NotifierContext) -> None:
        self._channel = channel
        self._context = context
        self.target = ", ".join(channel.to)
        self._scrubber = Scrubber([channel.password] if channel.password else [])

    def message(self, notification: Notification) -> EmailMessage:
        channel = self._channel
        message = EmailMessage(policy=POLICY)
        message["Subject"] = subject(notification)
        message["From"] = channel.sender
        message["To"] = ", ".join(channel.to)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=channel.sender.rpartition("@")[2])
        message["X-Coro-Event"] = notification.event
        message["X-Coro-Delivery"] = notification.delivery_id
        message.set_content(text_body(notification))
        message.add_alternative(html_body(notification), subtype="html")
        return message

    async def send(self, notification: Notification) -> Delivery:
        channel = self._channel
        try:
            await aiosmtplib.send(
                self.message(notification).as_bytes(),
                sender=channel.sender,
                recipients=channel.to,
                hostname=channel.host,
                port=channel.port,
                username=channel.username,
                password=channel.password,
                use_tls=channel.security == "tls",
                start_tls=channel.security == "starttls",
                timeout=self._context.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            return self._refused(min(codes) if codes else 550, "every recipient was refused")
        except aiosmtplib.SMTPResponseException as exc:  # sender refused, auth, data, ...
            return self._refused(exc.code, exc.message)
        except aiosmtplib.SMTPNotSupported as exc:  # e.g. no STARTTLS: a settings problem
            return Delivery(False, error=self._said(exc))
        except aiosmtplib.SMTPTimeoutError:
            seconds = self._context.timeout_seconds
            return Delivery(False, error=f"timed out after {seconds:g} s", retryable=True)
        except (aiosmtplib.SMTPException, OSError) as exc:  # connecting, a lost connection
            return Delivery(False, error=self._said(exc), retryable=True)
        return Delivery(True)

    def _refused(self, code: int, text: str) -> Delivery:
        said = self._scrubber.scrub(short_text(f"SMTP {code}: {text}"))
        return Delivery(False, status=code, error=said, retryable=400 <= code < 500)

    def _said(self, exc: BaseException) -> str:
        return self._scrubber.scrub(short_text(f"{type(exc).__name__}: {exc}"))


def create(settings: dict[str, Any], context: NotifierContext) -> EmailNotifier:
    return EmailNotifier(parse_config(EmailChannel, settings), context)
