"""Dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from coro.runner import Runner


async def get_runner(request: Request) -> Runner:
    # async: FastAPI would run a plain function in its thread pool, a hop per request
    runner: Runner = request.app.state.runner
    return runner


RunnerDep = Annotated[Runner, Depends(get_runner)]
