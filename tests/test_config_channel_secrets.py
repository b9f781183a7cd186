"""`PUT /config` with notification channels: a channel's secret sent back masked, as
`GET /config` shows it, is kept — matched by the channel's id, never by its position."""

from __future__ import annotations

import json

from coro.config import CoroConfig
from tests.conftest import ApiFactory

HOOK_SECRET = "whsec-" + "a" * 30
OTHER_SECRET = "whsec-" + "b" * 30
SLACK_URL = "https://hooks.slack.example/services/T000/B000/" + "c" * 24


def channels() -> CoroConfig:
    return CoroConfig.model_validate(
        {
            "llm": {"defaultProvider": "script"},
            "notifications": {
                "webhooks": [
                    {"id": "ops", "url": "http://127.0.0.1:9/ops", "secret": HOOK_SECRET},
                    {"id": "audit", "url": "http://127.0.0.1:9/audit", "secret": OTHER_SECRET},
                ],
                "slack": [{"id": "team", "webhookUrl": SLACK_URL}],
            },
        }
    )


async def test_masked_channel_secrets_sent_back_are_kept(api_factory: ApiFactory) -> None:
    async with api_factory(channels()) as api:
        shown = (await api.client.get("/config")).json()["config"]["notifications"]
        assert HOOK_SECRET not in json.dumps(shown) and SLACK_URL not in json.dumps(shown)
        # reordered, one edited, the Slack channel sent back untouched
        hooks = list(reversed(shown["webhooks"]))
        hooks[0]["events"] = ["job.failed"]
        saved = await api.client.put(
            "/config", json={"notifications": {"webhooks": hooks, "slack": shown["slack"]}}
        )
    assert saved.status_code == 200, saved.text
    assert HOOK_SECRET not in saved.text and OTHER_SECRET not in saved.text
    stored = json.loads(api.home.config_file.read_text())["notifications"]
    assert {(w["id"], w["secret"]) for w in stored["webhooks"]} == {
        ("ops", HOOK_SECRET),
        ("audit", OTHER_SECRET),
    }
    assert stored["slack"][0]["webhookUrl"] == SLACK_URL


async def test_a_mask_under_another_channel_id_is_refused(api_factory: ApiFactory) -> None:
    async with api_factory(channels()) as api:
        shown = (await api.client.get("/config")).json()["config"]["notifications"]
        renamed = [{**shown["webhooks"][0], "id": "renamed"}]
        answer = await api.client.put("/config", json={"notifications": {"webhooks": renamed}})
    # saving it would make the mask the new channel's secret
    assert answer.status_code == 400
    assert answer.json()["issues"] == [
        {
            "path": "notifications.webhooks.0.secret",
            "message": "looks like a masked secret but matches no stored value: "
            "send the real value",
        }
    ]
    stored = json.loads(api.home.config_file.read_text())["notifications"]
    assert stored["webhooks"][0]["secret"] == HOOK_SECRET
