"""A small SSE client for tests: parses frames from a live httpx stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx


@dataclass
class Frame:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    frame = Frame()
    data_lines: list[str] = []
    touched = False
    async for line in response.aiter_lines():
        if line == "":
            if touched or frame.comments:
                frame.data = "\n".join(data_lines)
                yield frame
            frame, data_lines, touched = Frame(), [], False
            continue
        if line.startswith(":"):
            frame.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        touched = True
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            frame.event = value
        elif name == "id":
            frame.id = value
