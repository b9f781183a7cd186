"""The HTTP server without uvicorn's tick: it still dates its responses, and wakes as
soon as something asks it to stop (from any thread, as a signal handler does)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from tests.conftest import ApiFactory


async def test_responses_carry_the_date(api_factory: ApiFactory) -> None:
    async with api_factory() as api:
        before = datetime.now(UTC).replace(microsecond=0)
        response = await api.client.get("/health")
        after = datetime.now(UTC)
    assert response.status_code == 200
    dated = parsedate_to_datetime(response.headers["date"])
    assert before - timedelta(seconds=1) <= dated <= after


async def test_a_stop_asked_from_another_thread_wakes_the_server(
    api_factory: ApiFactory,
) -> None:
    async with api_factory() as api:
        server = api.served.server
        waiting = asyncio.create_task(server.exit_requested())
        threading.Thread(target=setattr, args=(server, "should_exit", True)).start()
        await asyncio.wait_for(waiting, 30)
        assert server.should_exit
