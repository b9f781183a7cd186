"""A raw SSE subscriber for the benchmarks: one TCP connection speaking HTTP/1.1 (chunked
decoding included), cheaper than an HTTP library, timing each marked line it receives.

A measured line's data ends with `<MARK> <line number> <CLOCK_MONOTONIC ns when sent>`
(on Linux one clock for every process; `time.perf_counter_ns` reads it too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

MARK = b"bench-line"
WARMUP = b"bench-warmup"


class SseReader:
    """One subscriber of `path` on `host:port`, with extra request headers."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self.host, self.port, self.path, self.headers = host, port, path, headers
        self.latencies_ns: list[tuple[int, int]] = []  # (line number, latency)
        self.warmups = 0
        self.connected = False
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        except OSError as exc:
            self.error = exc
            return
        try:
            extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
            request = (
                f"GET {self.path} HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\n"
                f"{extra}Accept: text/event-stream\r\n\r\n"
            )
            writer.write(request.encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"stream refused: {head[:80]!r}")
            chunked = b"transfer-encoding: chunked" in head.lower()
            self.connected = True
            pending = b""
            while True:
                if chunked:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        return
                    pending += (await reader.readexactly(size + 2))[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        return
                    pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    if MARK in line:
                        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                        _, number, sent = line.rsplit(b" ", 2)
                        self.latencies_ns.append((int(number), now - int(sent)))
                    elif WARMUP in line:
                        self.warmups += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc
        finally:
            writer.close()


async def until(check: Callable[[], Any], what: str, limit: float) -> None:
    """Poll `check()` (the readers' state changes in their own tasks and processes)."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
