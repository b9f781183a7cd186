"""`coro campaign …` against a real runner (the CLI runs off the event loop)."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner, Result

from coro.cli.main import app
from tests.conftest import Api, ApiFactory
from tests.test_campaigns import QUICK, answer, child_job, config, register, start_campaign


def invoke(url: str, *args: str) -> Result:
    env = {"CORO_URL": url, "CORO_API_TOKEN": None, "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env)


async def cli(api: Api, *args: str) -> Result:
    return await asyncio.to_thread(invoke, api.served.url, *args)


async def test_campaign_commands_list_show_and_steer_children(api_factory: ApiFactory) -> None:
    async with api_factory(config(parallel=1)) as api:
        parent = await start_campaign(
            api,
            [register("first"), register("second", ["first"], script=QUICK), register("extra")],
            params={"description": "a big feature"},
        )
        first = await child_job(api, parent, "first")

        listed = await cli(api, "campaign", "list", "--json")
        assert listed.exit_code == 0, listed.output
        (item,) = json.loads(listed.output)["campaigns"]
        assert item["jobId"] == parent and item["totalChildren"] == 3
        table = await cli(api, "campaign", "list")
        assert parent in table.output and "1 dispatched" in table.output

        shown = await cli(api, "campaign", "show", parent)
        assert shown.exit_code == 0, shown.output
        assert "first" in shown.output and first in shown.output
        assert "second" in shown.output and "pending" in shown.output
        raw = json.loads((await cli(api, "campaign", "show", parent, "--json")).output)
        assert [c["name"] for c in raw["children"]] == ["first", "second", "extra"]

        skipped = await cli(api, "campaign", "skip", parent, "extra", "--reason", "later")
        assert skipped.exit_code == 0, skipped.output
        assert 'skip: child "extra" is now skipped' in skipped.output
        refused = await cli(api, "campaign", "start", parent, "second")
        assert refused.exit_code == 1
        assert "only a ready child" in refused.output
        missing = await cli(api, "campaign", "rerun", parent, "ghost")
        assert missing.exit_code == 1 and "HTTP 404" in missing.output

        await answer(api, first)
        assert (await api.finish(parent)).done == "complete"
        final = await cli(api, "campaign", "show", parent)
        assert "complete" in final.output and "2 child job(s)" in final.output
