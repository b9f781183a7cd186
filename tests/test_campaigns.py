"""Campaigns end to end: a parent job whose children are jobs, driven over HTTP against a
real runner with the script executor.

Children park on `await_event` (a developer question) until the test answers them, so
the test decides when each one finishes; concurrency is read from the campaign's log
(every dispatch and every child stop is logged in order), never from timing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest

from coro.config import CoroConfig
from coro.domain.models import CampaignChild
from coro.engine.campaigns.model import find_cycle, plan_problems, reconcile_ready
from tests.conftest import Api, ApiFactory, user_prompts, write_workflow

#: the tests that run a runner, once per state backend
pytestmark = pytest.mark.backends("sqlite", "postgres")

PARENT_PHASES = [
    {"name": "plan", "agent": None},
    {"name": "coordinating", "agent": None, "status": "awaiting-children"},
    {"name": "wrap-up", "agent": None},
]
CHILD_PHASES = [{"name": "work", "agent": None}]

#: A child that asks the developer, then finishes once answered.
PARKS: dict[str, Any] = {
    "work": [
        [{"tool": "await_event", "input": {"eventName": "developer-input: may I finish?"}}],
        [{"usage": {"inputTokens": 10, "outputTokens": 5}}, {"text": "child done"}],
    ]
}
#: A child that finishes at once.
QUICK: dict[str, Any] = {"work": [{"text": "quick child done"}]}
FINALIZE = {"tool": "campaign_finalize", "input": {}}
DISPATCHED = re.compile(r'^\[campaign\] Dispatched child "([^"]+)" as job (\S+)$')
REACHED = re.compile(r'^\[campaign\] Child "([^"]+)" reached (\w+)')


def config(parallel: int = 1) -> CoroConfig:
    return CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "coordination": {"maxParallelChildren": parallel}}
    )


def register(
    name: str,
    deps: Sequence[str] = (),
    script: dict[str, Any] = PARKS,
    workflow: str = "workflows/child/workflow.md",
) -> dict[str, Any]:
    return {
        "tool": "campaign_register_child",
        "input": {
            "name": name,
            "description": f"Build part {name}",
            "params": {"workflowPath": workflow, "script": script},
            "dependsOn": list(deps),
        },
    }


async def start_campaign(
    api: Api, children: list[dict[str, Any]], wrap_up: list[Any] | None = None, **body: Any
) -> str:
    write_workflow(api.home, "child", CHILD_PHASES)
    workflow = write_workflow(api.home, "camp", PARENT_PHASES, kind="campaign")
    script = {"plan": [*children, FINALIZE], "wrap-up": wrap_up or [{"text": "wrapped up"}]}
    return await api.create(workflow, script, **body)


async def child_job(api: Api, parent: str, name: str, nth: int = 1) -> str:
    """The job id of a child's `nth` dispatch, once the campaign logged it."""
    found: list[str] = []

    def dispatched(line: str) -> bool:
        match = DISPATCHED.match(line.split(" ", 1)[-1])
        if match and match.group(1) == name:
            found.append(match.group(2))
        return len(found) == nth

    await api.follow(parent, until=dispatched)
    assert len(found) == nth, f"child {name} was dispatched {len(found)} time(s)"
    return found[-1]


async def answer(api: Api, job_id: str, text: str = "yes, finish") -> None:
    """Let a parked child finish: wait for its park, answer it, wait for its end."""
    await api.wait_for_line(job_id, "Job parked")
    response = await api.client.post(f"/jobs/{job_id}/message", json={"message": text})
    assert response.status_code == 200, response.text
    assert (await api.finish(job_id)).done == "complete"


async def finish_child(api: Api, parent: str, name: str) -> str:
    job_id = await child_job(api, parent, name)
    await answer(api, job_id)
    await api.wait_for_line(parent, f'Child "{name}" reached complete')
    return job_id


async def control(
    api: Api, parent: str, name: str, action: str, **body: Any
) -> tuple[int, dict[str, Any]]:
    response = await api.client.post(f"/jobs/{parent}/children/{name}/{action}", json=body)
    return response.status_code, response.json()


def campaign_log(texts: list[str]) -> list[tuple[str, str]]:
    """(event, child) for every dispatch and child stop, in log order."""
    events = []
    for text in texts:
        if m := DISPATCHED.match(text):
            events.append(("dispatched", m.group(1)))
        elif m := REACHED.match(text):
            events.append((m.group(2), m.group(1)))
    return events


def peak_running(events: list[tuple[str, str]]) -> int:
    running: set[str] = set()
    peak = 0
    for event, name in events:
        if event == "dispatched":
            running.add(name)
        else:
            running.discard(name)
        peak = max(peak, len(running))
    return peak


def children_by_name(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in job["campaignChildren"]}


# --- the child model ----------------------------------------------------------------------


def test_reconcile_and_cycle_detection() -> None:
    children = [
        CampaignChild(name="a", description="a"),
        CampaignChild(name="b", description="b", depends_on=["a"]),
        CampaignChild(name="c", description="c", depends_on=["b"], status="ready"),
    ]
    assert reconcile_ready(children)
    assert [c.status for c in children] == ["ready", "pending", "pending"]
    children[0].status = "skipped"
    reconcile_ready(children)
    assert children[1].status == "ready"
    assert not reconcile_ready(children)  # idempotent

    looped = [
        CampaignChild(name="a", description="a", depends_on=["c"]),
        CampaignChild(name="b", description="b", depends_on=["a"]),
        CampaignChild(name="c", description="c", depends_on=["b"]),
        CampaignChild(name="d", description="d", depends_on=["ghost"]),
    ]
    assert find_cycle(looped) == ["a", "c", "b", "a"]
    problems = plan_problems(looped)
    assert 'child "d" depends on unregistered "ghost"' in problems
    assert any("dependency cycle: a -> c -> b -> a" in p for p in problems)
    assert find_cycle(children) is None


# --- coordination -------------------------------------------------------------------------


async def test_diamond_campaign_runs_two_at_a_time_and_resumes_the_parent(
    api_factory: ApiFactory,
) -> None:
    async with api_factory(config(parallel=2)) as api:
        first = {
            "work": [
                PARKS["work"][0],
                [
                    {
                        "tool": "add_insight",
                        "input": {
                            "category": "build",
                            "summary": "Use make test",
                            "detail": "The suite only runs through make.",
                        },
                    },
                    {"usage": {"inputTokens": 10, "outputTokens": 5}},
                ],
            ]
        }
        parent = await start_campaign(
            api,
            [
                register("a", script=first),
                register("b", ["a"]),
                register("c", ["a"]),
                register("d", ["b", "c"]),
            ],
            params={"reviewers": ["ann"], "description": "the whole feature"},
        )
        job_a = await finish_child(api, parent, "a")
        await finish_child(api, parent, "b")
        snapshot = children_by_name(await api.job(parent))
        assert snapshot["c"]["status"] == "dispatched"  # b and c ran side by side
        assert snapshot["d"]["status"] == "pending"
        await finish_child(api, parent, "c")
        job_d = await finish_child(api, parent, "d")
        result = await api.finish(parent)
        assert result.done == "complete"
        texts = result.texts()

        events = campaign_log(texts)
        assert peak_running(events) == 2
        assert events[:2] == [("dispatched", "a"), ("complete", "a")]
        assert set(events[2:4]) == {("dispatched", "b"), ("dispatched", "c")}
        assert events.index(("dispatched", "d")) > events.index(("complete", "b"))
        assert events.index(("dispatched", "d")) > events.index(("complete", "c"))
        assert "[campaign] All 4 children terminal — advancing to wrap-up" in texts
        assert texts.index("wrapped up") > texts.index(
            "[campaign] All 4 children terminal — advancing to wrap-up"
        )

        job = await api.job(parent)
        # The phase after coordinating starts with a fresh session: no earlier transcript.
        prompts = user_prompts(job)
        assert len(prompts) == 1 and "Begin phase **wrap-up**" in prompts[0]
        assert job["sessionId"] is None
        children = children_by_name(job)
        assert {c["status"] for c in children.values()} == {"complete"}
        assert all(c["completedAt"] and c["startedAt"] for c in children.values())
        summary = children["d"]["summary"]
        assert summary["jobId"] == job_d and summary["status"] == "complete"
        assert summary["phase"] == "work"
        assert summary["workflowPath"] == "workflows/child/workflow.md"
        assert summary["tokenUsage"]["inputTokens"] == 10
        assert summary["prMappings"] == []
        totals = job["campaignTotals"]
        assert totals["childJobCount"] == 4
        assert totals["inputTokens"] == 40 + job["tokenUsage"]["inputTokens"]
        assert totals["outputTokens"] == 20 + job["tokenUsage"]["outputTokens"]
        assert totals["prCount"] == 0

        # Children are internal jobs on their own workflow with the parent's context.
        child = await api.job(job_d)
        assert child["triggerSource"] == "internal"
        assert child["campaignParentId"] == parent
        params = child["params"]
        assert params["description"] == "Build part d"
        assert params["epicAllowed"] is False
        assert params["campaignParentId"] == parent
        assert params["campaignChildName"] == "d"
        assert params["reviewers"] == ["ann"]
        # a's insight reached the children dispatched after it, marked with its source.
        (aggregated,) = job["campaignAggregatedInsights"]
        assert aggregated["sourceChildName"] == "a"
        assert [i["sourceChildName"] for i in child["insights"]] == ["a"]
        assert (await api.job(job_a))["insights"][0]["sourceChildName"] is None
        assert any("aggregated 1 insight(s) for siblings" in t for t in texts)


async def test_the_parallelism_cap_holds_back_ready_children(api_factory: ApiFactory) -> None:
    async with api_factory(config(parallel=2)) as api:
        parent = await start_campaign(api, [register("x"), register("y"), register("z")])
        await child_job(api, parent, "y")
        children = children_by_name(await api.job(parent))
        assert [children[n]["status"] for n in "xyz"] == ["dispatched", "dispatched", "ready"]
        assert children["z"]["jobId"] is None
        await finish_child(api, parent, "y")
        await finish_child(api, parent, "z")
        await finish_child(api, parent, "x")
        result = await api.finish(parent)
        assert result.done == "complete"
        events = campaign_log(result.texts())
        assert peak_running(events) == 2
        assert events.index(("dispatched", "z")) > events.index(("complete", "y"))
        listing = (await api.client.get("/jobs", params={"campaignParentId": parent})).json()
        assert listing["total"] == 3


async def test_a_failed_child_halts_the_campaign_until_resumed_with_a_note(
    api_factory: ApiFactory,
) -> None:
    async with api_factory(config(parallel=1)) as api:
        flaky = {"work": [[{"fail": "the build server is down"}], [{"text": "recovered"}]]}
        parent = await start_campaign(
            api, [register("flaky", script=flaky), register("later", script=QUICK)]
        )
        await api.wait_for_line(parent, "[campaign] Halted on failure")
        job = await api.job(parent)
        assert job["status"] == "awaiting-developer-input"
        assert job["phase"] == "coordinating"
        assert job["awaitingEvent"] == "developer-input: campaign halted by failed child"
        assert 'Campaign halted: child "flaky" failed' in job["escalationMessage"]
        assert "the build server is down" in job["escalationMessage"]
        children = children_by_name(job)
        assert children["flaky"]["status"] == "failed"
        assert children["later"]["status"] == "ready"  # no further dispatch
        assert children["later"]["jobId"] is None

        status, body = await control(
            api, parent, "flaky", "resume", note="Retry: the server is back"
        )
        assert status == 200, body
        assert body["ok"] is True and body["action"] == "resume"
        # running again (a one-step child may already have finished by the answer)
        assert body["child"]["status"] in ("dispatched", "complete")
        result = await api.finish(parent)
        assert result.done == "complete"
        texts = result.texts()
        assert any(t.startswith("[campaign] Un-parked") for t in texts)
        assert campaign_log(texts)[-2:] == [("dispatched", "later"), ("complete", "later")]
        flaky_job = await api.job(children["flaky"]["jobId"])
        assert flaky_job["status"] == "complete"
        assert "> Retry: the server is back" in user_prompts(flaky_job)[-1]


async def test_skipping_a_failed_child_abandons_it_and_the_campaign_goes_on(
    api_factory: ApiFactory,
) -> None:
    async with api_factory(config(parallel=1)) as api:
        broken = {"work": [{"fail": "cannot compile"}]}
        parent = await start_campaign(
            api, [register("broken", script=broken), register("after", ["broken"], script=QUICK)]
        )
        await api.wait_for_line(parent, "[campaign] Halted on failure")
        status, body = await control(api, parent, "broken", "skip", reason="not needed")
        assert status == 200, body
        assert body["child"]["status"] == "cancelled"
        assert (await api.finish(parent)).done == "complete"
        children = children_by_name(await api.job(parent))
        assert children["after"]["status"] == "complete"


async def test_rerun_creates_a_new_child_job(api_factory: ApiFactory) -> None:
    async with api_factory(config(parallel=1)) as api:
        parent = await start_campaign(api, [register("one"), register("two")])
        first_job = await finish_child(api, parent, "one")
        await child_job(api, parent, "two")
        status, body = await control(api, parent, "two", "rerun")
        assert status == 409
        assert "currently dispatched" in body["error"]
        status, body = await control(api, parent, "one", "rerun", reason="flaky tests")
        assert status == 200, body
        assert body["child"]["status"] == "ready"  # the one slot is taken by "two"
        assert body["child"]["jobId"] is None
        await finish_child(api, parent, "two")
        await api.wait_for_line(parent, 'Reset child "one" for rerun — flaky tests')
        second_job = await child_job(api, parent, "one", nth=2)
        assert second_job != first_job
        await answer(api, second_job)
        assert (await api.finish(parent)).done == "complete"
        assert (await api.job(first_job))["status"] == "complete"
        assert children_by_name(await api.job(parent))["one"]["jobId"] == second_job


async def test_cancel_and_abandon_a_running_child(api_factory: ApiFactory) -> None:
    async with api_factory(config(parallel=1)) as api:
        parent = await start_campaign(
            api, [register("slow"), register("next", ["slow"], script=QUICK)]
        )
        slow_job = await child_job(api, parent, "slow")
        await api.wait_for_line(slow_job, "Job parked")
        status, body = await control(api, parent, "slow", "cancel", reason="superseded")
        assert status == 200, body
        assert body["child"]["status"] == "cancelled"
        child = await api.job(slow_job)
        assert child["status"] == "cancelled"
        slow_log = (await api.finish(slow_job)).texts()
        assert f"[cancelled] Cancelled by parent campaign {parent} — superseded" in slow_log
        # cancelled counts as satisfied: the dependant runs and the campaign completes
        assert (await api.finish(parent)).done == "complete"

        status, body = await control(api, parent, "slow", "cancel")
        assert status == 409
        job = await api.job(parent)
        assert job["status"] == "complete"


async def test_abandon_is_idempotent_and_skip_unblocks_dependants(
    api_factory: ApiFactory,
) -> None:
    async with api_factory(config(parallel=1)) as api:
        parent = await start_campaign(
            api,
            [
                register("first"),
                register("middle", ["first"]),
                register("last", ["middle"], script=QUICK),
                register("keep"),
            ],
        )
        await child_job(api, parent, "first")
        status, body = await control(api, parent, "middle", "abandon", reason="out of scope")
        assert status == 200, body
        assert body["child"]["status"] == "cancelled"
        status, body = await control(api, parent, "middle", "abandon")
        assert status == 200 and body["child"]["status"] == "cancelled"
        status, body = await control(api, parent, "middle", "skip")
        assert status == 200 and body["child"]["status"] == "cancelled"  # no-op
        status, body = await control(api, parent, "last", "skip", reason="later")
        assert status == 200 and body["child"]["status"] == "skipped"
        await finish_child(api, parent, "first")
        keep = await child_job(api, parent, "keep")  # the campaign is still coordinating
        status, body = await control(api, parent, "first", "skip")
        assert status == 409
        assert "already complete" in body["error"]
        await answer(api, keep)
        result = await api.finish(parent)
        assert result.done == "complete"
        texts = result.texts()
        assert '[campaign] Skipped child "last" — later' in texts
        assert [e for e in campaign_log(texts) if e[0] == "dispatched"] == [
            ("dispatched", "first"),
            ("dispatched", "keep"),
        ]


async def test_start_dispatches_a_ready_child_past_the_cap(api_factory: ApiFactory) -> None:
    async with api_factory(config(parallel=1)) as api:
        parent = await start_campaign(api, [register("p"), register("q")])
        await child_job(api, parent, "p")
        listing = (await api.client.get(f"/jobs/{parent}/children")).json()
        assert listing["byStatus"]["ready"] == 1 and listing["byStatus"]["dispatched"] == 1
        assert [c["name"] for c in listing["children"]] == ["p", "q"]

        status, body = await control(api, parent, "q", "start")
        assert status == 200, body
        assert body["child"]["status"] == "dispatched" and body["child"]["jobId"]
        status, body = await control(api, parent, "p", "start")
        assert status == 409
        for name in ("q", "p"):
            await answer(api, children_by_name(await api.job(parent))[name]["jobId"])
        result = await api.finish(parent)
        assert result.done == "complete"
        assert peak_running(campaign_log(result.texts())) == 2


async def test_child_controls_refuse_bad_requests(api_factory: ApiFactory) -> None:
    async with api_factory(config()) as api:
        parent = await start_campaign(api, [register("only", script=QUICK)])
        assert (await api.finish(parent)).done == "complete"
        status, body = await control(api, "no-such-job", "only", "skip")
        assert status == 404, body
        status, body = await control(api, parent, "only", "fly")
        assert status == 400, body
        status, body = await control(api, parent, "only", "rerun")
        assert status == 409  # the campaign is complete
        assert "complete" in body["error"]
        plain = await api.create(write_workflow(api.home, "plain", CHILD_PHASES), QUICK)
        assert (await api.finish(plain)).done == "complete"
        status, body = await control(api, plain, "only", "skip")
        assert status == 409
        assert "not a campaign" in body["error"]
        assert (await api.client.get(f"/jobs/{plain}/children")).status_code == 409
        bad = await api.client.post(f"/jobs/{parent}/children/only/skip", json={"why": "x"})
        assert bad.status_code == 400


async def test_unknown_child_is_404(api_factory: ApiFactory) -> None:
    async with api_factory(config()) as api:
        parent = await start_campaign(api, [register("held")])
        await child_job(api, parent, "held")
        status, body = await control(api, parent, "ghost", "cancel")
        assert status == 404
        assert "ghost" in body["error"]
        await control(api, parent, "held", "cancel")
        assert (await api.finish(parent)).done == "complete"


async def test_finalize_reports_a_cycle_and_the_campaign_stalls(api: Api) -> None:
    parent = await start_campaign(
        api,
        [
            register("a", ["b"]),
            register("b", ["a"]),
            register("a"),  # duplicate
            register("self", ["self"]),
            register("bad name!"),
        ],
    )
    await api.wait_for_line(parent, "[campaign] Stalled")
    texts = (await api.follow(parent, until=lambda line: "[campaign] Stalled" in line)).texts()
    errors = [t for t in texts if t.startswith("[tool-error]")]
    assert any('a child named "a" is already registered' in e for e in errors)
    assert any('child "self" cannot depend on itself' in e for e in errors)
    assert any("invalid child name 'bad name!'" in e for e in errors)
    assert any(
        e.startswith("[tool-error] campaign_finalize:") and "dependency cycle: a -> b -> a" in e
        for e in errors
    )
    job = await api.job(parent)
    assert job["status"] == "awaiting-developer-input"
    assert "dependency cycle: a -> b -> a" in job["escalationMessage"]
    # skipping one side of the cycle unblocks the other
    status, body = await control(api, parent, "b", "skip")
    assert status == 200, body
    job_a = await child_job(api, parent, "a")
    await answer(api, job_a)
    assert (await api.finish(parent)).done == "complete"


async def test_a_campaign_without_children_stalls_visibly(api: Api) -> None:
    write_workflow(api.home, "child", CHILD_PHASES)
    workflow = write_workflow(api.home, "camp", PARENT_PHASES, kind="campaign")
    parent = await api.create(workflow, {"plan": [{"text": "forgot to register"}]})
    await api.wait_for_line(parent, "[campaign] Stalled — no child is registered")
    job = await api.job(parent)
    assert job["status"] == "awaiting-developer-input"
    assert job["phase"] == "coordinating"
    assert "no child is registered" in job["escalationMessage"]
    status, body = await control(api, parent, "any", "start")
    assert status == 404, body


async def test_an_agent_reruns_a_child_and_goes_back_to_coordinating(api: Api) -> None:
    parent = await start_campaign(
        api,
        [register("part", script=QUICK)],
        wrap_up=[
            [
                {"tool": "campaign_status", "input": {}},
                {"tool": "campaign_rerun_child", "input": {"name": "part", "reason": "gap"}},
                {"tool": "goto_phase", "input": {"phase": "coordinating"}},
            ],
            [{"text": "second round wrapped"}],
        ],
    )
    result = await api.finish(parent)
    assert result.done == "complete"
    texts = result.texts()
    assert not [t for t in texts if t.startswith("[tool-error]")]
    assert "second round wrapped" in texts
    assert [e for e in campaign_log(texts) if e[0] == "dispatched"] == [
        ("dispatched", "part"),
        ("dispatched", "part"),
    ]
    listing = (await api.client.get("/jobs", params={"campaignParentId": parent})).json()
    assert listing["total"] == 2
    totals = (await api.job(parent))["campaignTotals"]
    assert totals["childJobCount"] == 2


# --- lane switches ------------------------------------------------------------------------


async def test_switch_workflow_moves_the_job_to_another_lane(api: Api) -> None:
    lane_a = write_workflow(
        api.home, "lane-a", [{"name": "one", "agent": None}, {"name": "two", "agent": None}]
    )
    lane_b = write_workflow(
        api.home, "lane-b", [{"name": "start", "agent": None}, {"name": "finish", "agent": None}]
    )
    script = {
        "one": [
            {"tool": "switch_workflow", "input": {"workflowPath": lane_a, "reason": "stay"}},
            {
                "tool": "switch_workflow",
                "input": {"workflowPath": "workflows/nope/workflow.md", "reason": "x"},
            },
            {
                "tool": "switch_workflow",
                "input": {
                    "workflowPath": lane_b,
                    "reason": "smaller than it looked",
                    "paramsPatch": {"lane": "fast"},
                    "toPhase": "finish",
                },
            },
        ],
        "two": [{"text": "lane a phase two ran"}],
        "finish": [{"text": "finished in lane b"}],
    }
    job_id = await api.create(lane_a, script)
    result = await api.finish(job_id)
    assert result.done == "complete"
    texts = result.texts()
    assert f"[switch_workflow] Already on {lane_a} — nothing to do (stay)" in texts
    assert any(t.startswith("[tool-error] switch_workflow: workflowPath") for t in texts)
    assert f"[switch_workflow] {lane_a} (one) → {lane_b} (finish) — smaller than it looked" in texts
    assert f"[workflow-reload] {lane_a} → {lane_b}" in texts
    assert "finished in lane b" in texts
    assert "lane a phase two ran" not in texts
    job = await api.job(job_id)
    assert job["workflowPath"] == lane_b
    assert job["params"]["lane"] == "fast"
    assert [p["name"] for p in job["workflowPhases"]] == ["start", "finish"]
    (entry,) = job["workflowPathHistory"]
    assert (entry["from"], entry["to"], entry["fromPhase"], entry["toPhase"]) == (
        lane_a,
        lane_b,
        "one",
        "finish",
    )
    assert entry["by"] == "switch_workflow"


async def test_convert_to_campaign_runs_the_campaign_workflow(api_factory: ApiFactory) -> None:
    async with api_factory(config()) as api:
        single = write_workflow(api.home, "single", [{"name": "plan", "agent": None}])
        write_workflow(api.home, "child", CHILD_PHASES)
        stubborn = {
            "work": [
                {
                    "tool": "convert_to_campaign",
                    "input": {"title": "nested", "description": "children cannot"},
                },
                {"text": "child did its part"},
            ]
        }
        script = {
            "plan": [
                {
                    "tool": "convert_to_campaign",
                    "input": {
                        "title": "Checkout revamp",
                        "description": "Too big for one job",
                        "trackerEpicRef": "SHOP-1",
                    },
                }
            ],
            "campaign-planning": [register("piece", script=stubborn), FINALIZE],
            "aggregation": [{"text": "campaign evaluated"}],
        }
        job_id = await api.create(single, script)
        result = await api.finish(job_id)
        assert result.done == "complete"
        texts = result.texts()
        campaign = "workflows/campaign/workflow.md"
        assert f"[workflow-reload] {single} → {campaign}" in texts
        assert any(
            t.startswith(f"[convert_to_campaign] {single} (plan) → {campaign}") for t in texts
        )
        assert "campaign evaluated" in texts
        job = await api.job(job_id)
        assert job["workflowPath"] == campaign
        assert job["params"]["campaignTitle"] == "Checkout revamp"
        assert job["params"]["trackerEpicRef"] == "SHOP-1"
        assert job["workflowPathHistory"][0]["by"] == "convert_to_campaign"
        (piece,) = job["campaignChildren"]
        assert piece["status"] == "complete"
        child_texts = (await api.follow(piece["jobId"])).texts()
        assert any(
            t.startswith("[tool-error] convert_to_campaign: This job may not become a campaign")
            for t in child_texts
        )


@pytest.mark.parametrize("action", ["skip", "rerun", "cancel", "abandon", "resume", "start"])
async def test_every_action_answers_json_never_500(api: Api, action: str) -> None:
    parent = await start_campaign(api, [register("held")])
    await child_job(api, parent, "held")
    response = await api.client.post(f"/jobs/{parent}/children/held/{action}", json={})
    assert response.status_code in (200, 409), response.text
    await api.client.post(f"/jobs/{parent}/cancel", json={})


async def test_cancelling_a_campaign_cancels_its_unfinished_children(
    api_factory: ApiFactory,
) -> None:
    async with api_factory(config(parallel=1)) as api:
        parent = await start_campaign(api, [register("first"), register("second", ["first"])])
        first = await child_job(api, parent, "first")
        await api.wait_for_line(first, "Job parked")
        cancelled = await api.client.post(f"/jobs/{parent}/cancel", json={"reason": "not now"})
        assert cancelled.status_code == 200, cancelled.text
        children = (await api.client.get(f"/jobs/{parent}/children")).json()["children"]
        first_job = await api.job(first)
    assert {c["name"]: c["status"] for c in children} == {
        "first": "cancelled",
        "second": "cancelled",
    }
    assert first_job["status"] == "cancelled"
