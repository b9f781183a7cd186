"""Notices between the cloud's instances: small JSON payloads on named channels.

Nothing that matters is kept here (the database is the truth); a notice only tells an
instance to look now instead of later: a command was queued for a runner it holds
(`runner-wake`), a command was answered (`command-done`), a job has new lines or a new
status (`job-changed`), a runner token was revoked (`token-revoked`), a runner connected
again elsewhere (`runner-replaced`). A notice lost while Redis is away costs latency,
not correctness: the gateway claims queued commands at every heartbeat too, and a
waiter reads the command's row when its wait ends.

`LocalBroker` serves one instance (no `REDIS_URL`); `RedisBroker` uses Redis pub/sub:
one subscriber connection for all channels (a pattern on the prefix), reconnected with a
log line when it fails. Either way, an instance's own notices reach its own subscribers
at once, never through Redis, so one instance works while Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

JOB_CHANGED = "job-changed"  # {teamId, jobId}
RUNNER_WAKE = "runner-wake"  # {teamId, runnerId | None}
COMMAND_DONE = "command-done"  # {id}
TOKEN_REVOKED = "token-revoked"  # {tokenId}
RUNNER_REPLACED = "runner-replaced"  # {teamId, runnerId, connectionId}
WEBHOOKS_CHANGED = "webhooks-changed"  # {teamId}: a webhook secret was set or removed

Callback = Callable[[dict[str, Any]], None]

#: Redis reconnect delays: doubled after each failure up to the cap.
RECONNECT_FIRST_SECONDS = 0.2
RECONNECT_CAP_SECONDS = 5.0


class Broker(Protocol):
    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        """Tell every instance's subscribers of `channel` (this one's included)."""

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call `callback(payload)` (on the event loop, must not block) for each notice;
        returns the function that unsubscribes."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class _Subscribers:
    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {}

    def add(self, channel: str, callback: Callback) -> Callable[[], None]:
        self._callbacks.setdefault(channel, []).append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.get(channel, []).remove(callback)

        return remove

    def deliver(self, channel: str, payload: dict[str, Any]) -> None:
        for callback in list(self._callbacks.get(channel, ())):
            try:
                callback(payload)
            except Exception:
                # one subscriber's bug must not starve the others of the notice
                logger.exception("a subscriber of %s failed", channel)


class LocalBroker:
    """One instance: notices go straight to this process's subscribers."""

    def __init__(self) -> None:
        self._subscribers = _Subscribers()

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        self._subscribers.deliver(channel, payload)

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        return self._subscribers.add(channel, callback)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisBroker:
    """Several instances over Redis pub/sub; channel names are `prefix + channel`."""

    def __init__(self, url: str, prefix: str = "coro:") -> None:
        self._url = url
        self._prefix = prefix
        self._origin = uuid.uuid4().hex  # this instance's notices are delivered locally
        self._subscribers = _Subscribers()
        self._client: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Connect and subscribe; returns once subscribed (or, if Redis cannot be reached
        now, after logging it: the listener keeps trying in the background)."""
        self._client = aioredis.from_url(self._url)
        self._listener = asyncio.create_task(self._listen(), name="redis-broker")
        done = asyncio.create_task(self._subscribed.wait())
        await asyncio.wait({done, self._listener}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        if not self._subscribed.is_set():
            logger.warning("redis broker: not subscribed yet; notices between instances wait")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        return self._subscribers.add(channel, callback)

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        self._subscribers.deliver(channel, payload)
        if self._client is None:
            return
        message = json.dumps({"origin": self._origin, "payload": payload})
        try:
            await self._client.publish(self._prefix + channel, message)
        except (RedisError, OSError) as exc:
            # the change itself is committed; other instances catch up at their next look
            logger.warning("redis broker: cannot publish %s: %s", channel, type(exc).__name__)

    async def _listen(self) -> None:
        assert self._client is not None
        delay = RECONNECT_FIRST_SECONDS
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self._prefix + "*")
                if delay > RECONNECT_FIRST_SECONDS:
                    logger.info("redis broker: subscribed again")
                self._subscribed.set()
                delay = RECONNECT_FIRST_SECONDS
                async for message in pubsub.listen():
                    self._receive(message)
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                logger.warning(
                    "redis broker: connection failed (%s); reconnecting in %.1fs",
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(RECONNECT_CAP_SECONDS, delay * 2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _receive(self, message: dict[str, Any]) -> None:
        if message.get("type") != "pmessage":
            return
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        try:
            envelope = json.loads(message["data"])
            payload = envelope["payload"]
            origin = envelope["origin"]
        except (ValueError, TypeError, KeyError):
            logger.warning("redis broker: ignored a malformed notice on %s", channel)
            return
        if origin == self._origin or not isinstance(payload, dict):
            return
        self._subscribers.deliver(channel.removeprefix(self._prefix), payload)
