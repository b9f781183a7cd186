"""Time limits on slow and stuck HTTP clients, at the protocol level of uvicorn.

uvicorn (0.54, httptools) bounds only the idle time between keep-alive requests: a
client that connects and never finishes its request line and headers, or announces a
`Content-Length` and sends less, holds its connection (and, for a body, the app's
task) forever; and a response the client does not read waits in `send()` for a
transport that never drains. An ASGI middleware cannot help with the first (the app
is only called once the headers are in) nor close a connection whose write buffer is
full (uvicorn's `transport.close()` waits for the buffer to flush, i.e. forever), so
this subclass of uvicorn's own httptools protocol adds three timers:

* **head**: from the connection (or the first byte of a keep-alive request) to the
  end of its headers, which may also not exceed `max_head_bytes`; then `408` (`431`).
* **body**: from the end of the headers to the last byte of the body the request
  announced; then `408` if no response started, and the connection is closed. The
  app sees the client disconnect, as if it had gone away.
* **send**: how long writing may stay blocked because the client does not read (the
  transport's buffer stays above its high-water mark); then the connection is
  reset (its buffers, the kernel's too, are freed at once) and one warning says so.
  A streaming response (SSE) learns of it as a client disconnect and ends.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientTimeouts:
    """Seconds a client may take for each part of an exchange (see the module doc)."""

    head: float = 10.0
    body: float = 20.0
    send: float = 30.0
    #: the request line and headers together, in bytes
    max_head_bytes: int = 64 * 1024
    #: the kernel's send buffer of each connection (SO_SNDBUF) in bytes. Left to the
    #: kernel (None) it grows to net.ipv4.tcp_wmem's maximum (4 MB here): a client
    #: that does not read then parks megabytes of kernel memory, often a whole log,
    #: and is never cut off since no write blocks. 512 KiB still allows ~10 MB/s at
    #: a 50 ms round trip.
    send_buffer: int | None = 512 * 1024


class GuardedConfig(uvicorn.Config):
    """uvicorn's config plus the limits `GuardedProtocol` reads from it."""

    def __init__(self, app: Any, *, timeouts: ClientTimeouts, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedProtocol, **kwargs)
        self.client_timeouts = timeouts


def _status(code: int, reason: str) -> bytes:
    body = reason.encode("ascii")
    return (
        f"HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


REQUEST_TIMEOUT = _status(408, "Request Timeout")
HEAD_TOO_LARGE = _status(431, "Request Header Fields Too Large")


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head, body and send time limits."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits = getattr(config, "client_timeouts", None)
        self._limits = limits if isinstance(limits, ClientTimeouts) else ClientTimeouts()
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        # between requests and while one's head is read; its bytes so far
        self._in_head = True
        self._head_bytes = 0

    # --- connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if self._limits.send_buffer is not None and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._limits.send_buffer)
        self._head_timer = self.loop.call_later(self._limits.head, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # still in the head after parsing: every byte counted belongs to it
        if self._in_head and self._head_bytes > self._limits.max_head_bytes:
            self._refuse(HEAD_TOO_LARGE)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timers()  # the WebSocket protocol has its own pings and limits
        super().handle_websocket_upgrade()

    # --- parser callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a keep-alive connection's next request
            self._head_timer = self.loop.call_later(self._limits.head, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel(self._head_timer)
        self._head_timer = None
        self._body_timer = self.loop.call_later(self._limits.body, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = None
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    # --- write flow control -------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self._limits.send, self._send_timed_out)

    def resume_writing(self) -> None:
        self._cancel(self._send_timer)
        self._send_timer = None
        super().resume_writing()

    # --- timeouts -----------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self._refuse(REQUEST_TIMEOUT)
        else:  # a pipelined head behind a response still being sent
            self._close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self._refuse(REQUEST_TIMEOUT)
        else:
            self._close()

    def _send_timed_out(self) -> None:
        self._send_timer = None
        if self.transport.is_closing() and not self.transport.get_write_buffer_size():
            return
        request = ""
        if self.scope is not None:
            request = f" ({self.scope.get('method', '?')} {self.scope.get('path', '?')})"
        logger.warning(
            "reset the connection of %s%s: the client read nothing of the response for %g s",
            _peer(self.client),
            request,
            self._limits.send,
        )
        self._reset()

    def _reset(self) -> None:
        """Abort with a reset: the kernel drops what the client never read, at once,
        instead of keeping the closed socket to deliver it."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _refuse(self, response: bytes) -> None:
        """Answer `response` in place of the app and close the connection."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # the app's task (if any) sees a disconnect and its late answer is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        if not self.transport.is_closing():
            self.transport.write(response)
        self._close()

    def _close(self) -> None:
        self._cancel_timers()
        if self.transport.get_write_buffer_size():
            self._reset()  # close() would wait for a client that does not read
        elif not self.transport.is_closing():
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._send_timer):
            self._cancel(timer)
        self._head_timer = self._body_timer = self._send_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
