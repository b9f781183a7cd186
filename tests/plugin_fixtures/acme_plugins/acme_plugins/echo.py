"""An executor that writes `<prefix> <phase>` to the job log and ends its turn."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from coro.executors.base import ExecutorEvent, Health, ModelInfo, PhaseRequest, TextEvent

MANIFEST = {
    "id": "acme-echo",
    "kind": "executor",
    "version": "0.1.0",
    "displayName": "Acme Echo",
    "hostCompatibility": ">=1.0,<2",
    "configSchema": {
        "type": "object",
        "properties": {"prefix": {"type": "string"}},
        "additionalProperties": False,
    },
    "entry": "acme_plugins.echo:make_executor",
}


class EchoExecutor:
    id = "acme-echo"

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def execute_phase(self, request: PhaseRequest) -> AsyncGenerator[ExecutorEvent, None]:
        yield TextEvent(f"{self.prefix} {request.phase}")

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="echo-1", display_name="Echo")]

    async def healthcheck(self) -> Health:
        return Health(ok=True, message="echo is always ready")


def make_executor(settings: dict[str, Any], context: Any) -> EchoExecutor:
    return EchoExecutor(settings.get("prefix", "echo"))
