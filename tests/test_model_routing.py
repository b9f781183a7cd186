"""Which executor and model run a phase: override → phase model → tier alias → default."""

from __future__ import annotations

from coro.config import CoroConfig
from tests.conftest import ApiFactory, write_workflow


async def test_phase_model_tier_alias_and_override_resolution(api_factory: ApiFactory) -> None:
    config = CoroConfig.model_validate(
        {
            "llm": {
                "defaultProvider": "script",
                "aliases": {
                    "tier:coding": {"provider": "script", "model": "coder-large"},
                    "fast": {"provider": "script", "model": "tiny-1"},
                },
            }
        }
    )
    phases = [
        {"name": "plan", "agent": None},  # tier planning, no alias
        {"name": "code", "agent": None, "tier": "coding"},  # tier alias
        {"name": "lint", "agent": None, "model": "fast"},  # named alias
        {"name": "ship", "agent": None, "model": "literal-9"},  # literal model id
    ]
    async with api_factory(config) as api:
        workflow = write_workflow(api.home, "routed", phases)
        job_id = await api.create(workflow, {})
        texts = (await api.finish(job_id)).texts()
        assert "Phase plan (visit 1): provider=script [default]" in texts
        assert (
            "Phase code (visit 1): provider=script model=coder-large [alias:tier:coding]" in texts
        )
        assert "Phase lint (visit 1): provider=script model=tiny-1 [alias:fast]" in texts
        assert "Phase ship (visit 1): provider=script model=literal-9 [phase]" in texts

        pinned = await api.client.patch(
            f"/jobs/{job_id}/phase-overrides", json={"phase": "code", "model": "pinned-2"}
        )
        assert pinned.json()["phaseModelOverrides"]["code"]["model"] == "pinned-2"
        await api.client.post(f"/jobs/{job_id}/phases/code/rerun", json={})
        rerun = (await api.finish(job_id)).texts()
        assert "Phase code (visit 2): provider=script model=pinned-2 [override]" in rerun
        usage = (await api.job(job_id))["phaseUsage"]
        assert [u["model"] for u in usage if u["phase"] == "code"] == ["coder-large", "pinned-2"]

        bad = await api.client.patch(
            f"/jobs/{job_id}/phase-overrides", json={"phase": "nope", "model": "x"}
        )
        assert bad.status_code == 400
        unknown_provider = await api.client.patch(
            f"/jobs/{job_id}/phase-overrides",
            json={"phase": "code", "model": "x", "provider": "ghost"},
        )
        assert unknown_provider.status_code == 400
        cleared = await api.client.patch(
            f"/jobs/{job_id}/phase-overrides", json={"phase": "code", "clear": True}
        )
        assert cleared.json()["phaseModelOverrides"] == {}


async def test_an_aliases_reasoning_effort_reaches_the_openai_request(
    api_factory: ApiFactory,
) -> None:
    from tests.fakes.openai_server import FakeOpenAI, Reply

    key = "sk-test-effort-Zq8mW3nR5tY7uI9oP1aS"
    async with FakeOpenAI(api_key=key) as fake:
        config = CoroConfig.model_validate(
            {
                "llm": {
                    "defaultProvider": "openai",
                    "aliases": {
                        "tier:coding": {
                            "provider": "openai",
                            "model": "o-reasoner",
                            "reasoningEffort": "high",
                        }
                    },
                },
                "plugins": {
                    "installed": {
                        "openai": {
                            "config": {
                                "apiKey": key,
                                "baseUrl": fake.base_url,
                                "defaultModel": "plain-model",
                            }
                        }
                    }
                },
            }
        )
        fake.queue(Reply(text="planned"), Reply(text="coded"))
        phases = [
            {"name": "plan", "agent": None},
            {"name": "code", "agent": None, "tier": "coding"},
        ]
        async with api_factory(config) as api:
            workflow = write_workflow(api.home, "effort", phases)
            job_id = await api.create(workflow)
            assert (await api.finish(job_id)).done == "complete"
    plan, code = fake.chat_requests
    assert "reasoning_effort" not in plan.body and plan.body["model"] == "plain-model"
    assert code.body["reasoning_effort"] == "high" and code.body["model"] == "o-reasoner"
