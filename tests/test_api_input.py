"""Bad input gets a clear 4xx and never a 500 or a hang."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, ApiFactory, write_workflow

ONE_PHASE = [{"name": "work", "agent": None}]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "workflowPath"),
        ({"workflowPath": ""}, "workflowPath"),
        ({"workflowPath": "workflows/nope/workflow.md"}, "nope"),
        ({"workflowPath": "../../etc/passwd"}, ".."),
        ({"workflowPath": "/etc/passwd"}, "absolute"),
        ({"workflowPath": "0" * 490}, "longer than"),
        ({"workflowPath": "workflows/" + "x" * 300 + "/workflow.md"}, "longer than"),
        ({"workflowPath": 42}, "workflowPath"),
        ({"workflowPath": "workflows/demo/workflow.md", "interactive": "very"}, "interactive"),
        ({"workflowPath": "workflows/demo/workflow.md", "reviewers": "bob"}, "reviewers"),
        ({"workflowPath": "workflows/demo/workflow.md", "surprise": 1}, "surprise"),
        ({"workflowPath": "workflows/demo/workflow.md", "params": {"script": {"x": 5}}}, "script"),
        ({"workflowPath": "workflows/demo/workflow.md", "params": []}, "params"),
    ],
)
async def test_invalid_job_bodies_are_400(api: Api, body: dict[str, Any], fragment: str) -> None:
    response = await api.client.post("/jobs", json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
    listing = await api.client.get("/jobs")
    assert listing.json()["total"] == 0


async def test_malformed_json_is_400(api: Api) -> None:
    response = await api.client.post(
        "/jobs", content=b'{"workflowPath": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "Malformed JSON body"}


async def test_non_json_body_is_415(api: Api) -> None:
    response = await api.client.post(
        "/jobs", content=b"workflowPath=x", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415


async def test_oversized_body_is_413(api: Api) -> None:
    huge = b'{"workflowPath": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    response = await api.client.post(
        "/jobs", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/jobs/no-such-job", None),
        ("GET", "/jobs/no-such-job/stream", None),
        ("POST", "/jobs/no-such-job/cancel", {}),
        ("POST", "/jobs/no-such-job/pause", {}),
        ("POST", "/jobs/no-such-job/resume", {}),
        ("POST", "/jobs/no-such-job/message", {"message": "hi"}),
        ("PATCH", "/jobs/no-such-job/interactive", {"interactive": True}),
        ("GET", "/jobs/no-such-job/artifacts/art-1/content", None),
        ("POST", "/jobs/no-such-job/phases/work/rerun", {}),
    ],
)
async def test_unknown_job_ids_are_404(
    api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await api.client.request(method, path, json=body)
    assert response.status_code == 404
    assert "no-such-job" in response.json()["error"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 500},
        {"offset": -1},
        {"offset": 10**30},
        {"limit": "many"},
        {"group": "sideways"},
    ],
)
async def test_bad_listing_queries_are_400(api: Api, params: dict[str, Any]) -> None:
    response = await api.client.get("/jobs", params=params)
    assert response.status_code == 400
    assert response.json()["issues"]


async def test_a_single_valued_query_parameter_given_twice_is_400(api: Api) -> None:
    twice = await api.client.get("/jobs", params=[("type", "feature"), ("type", "bug")])
    assert twice.status_code == 400, twice.text
    assert twice.json()["issues"] == [
        {"path": "query.type", "message": "must be given at most once"}
    ]
    # a list parameter takes several
    statuses = await api.client.get("/jobs", params=[("status", "failed"), ("status", "complete")])
    assert statuses.status_code == 200
    assert statuses.json()["total"] == 0


async def test_artifact_path_escape_is_refused(api: Api) -> None:
    workflow = write_workflow(api.home, "escape", ONE_PHASE)
    outside = api.home.root / "secret.txt"
    outside.write_text("top secret")
    script = {
        "work": [
            {
                "tool": "post_artifact",
                "input": {"kind": "x", "title": "escape", "data": {"path": "../secret.txt"}},
            },
            {
                "tool": "post_artifact",
                "input": {"kind": "x", "title": "absolute", "data": {"path": str(outside)}},
            },
        ]
    }
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "complete"
    job = await api.job(job_id)
    for artifact in job["artifacts"]:
        url = f"/jobs/{job_id}/artifacts/{artifact['id']}/content"
        got = await api.client.get(url)
        assert got.status_code == 400
        assert "top secret" not in got.text
        put = await api.client.put(url, json={"content": "overwritten"})
        assert put.status_code == 400
    assert outside.read_text() == "top secret"


async def test_artifact_edit_rules(api: Api) -> None:
    workflow = write_workflow(api.home, "editable", ONE_PHASE)
    script = {
        "work": [
            {"tool": "file_write", "input": {"path": "notes.md", "content": "v1"}},
            {"tool": "file_write", "input": {"path": "tool.py", "content": "print()"}},
            {
                "tool": "post_artifact",
                "input": {"kind": "md", "title": "notes", "data": {"path": "notes.md"}},
            },
            {
                "tool": "post_artifact",
                "input": {"kind": "py", "title": "code", "data": {"path": "tool.py"}},
            },
        ]
    }
    job_id = await api.create(workflow, script)
    assert (await api.finish(job_id)).done == "complete"
    notes, code = (await api.job(job_id))["artifacts"]
    base = f"/jobs/{job_id}/artifacts"
    ok = await api.client.put(f"{base}/{notes['id']}/content", json={"content": "v2"})
    assert ok.status_code == 200
    assert ok.json()["artifact"]["editedBy"] == "developer"
    assert (await api.client.get(f"{base}/{notes['id']}/content")).text == "v2"
    wrong_type = await api.client.put(f"{base}/{code['id']}/content", json={"content": "x"})
    assert wrong_type.status_code == 415
    too_big = await api.client.put(
        f"{base}/{notes['id']}/content", json={"content": "x" * (2 * 1024 * 1024 + 1)}
    )
    assert too_big.status_code == 413
    missing = await api.client.put(f"{base}/art-nope/content", json={"content": "x"})
    assert missing.status_code == 404


async def test_foreign_host_is_refused(api: Api) -> None:
    response = await api.client.get("/jobs", headers={"Host": "evil.example:3000"})
    assert response.status_code == 403
    assert "Host" in response.json()["error"]


async def test_foreign_origin_on_post_is_refused(api: Api) -> None:
    response = await api.client.post(
        "/jobs",
        json={"workflowPath": "workflows/demo/workflow.md"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert (await api.client.get("/jobs")).json()["total"] == 0
    same = await api.client.post("/jobs/x/cancel", headers={"Origin": api.served.url})
    assert same.status_code == 404  # passed the origin check, then unknown job


async def test_a_cross_site_request_without_origin_is_refused(api: Api) -> None:
    response = await api.client.post(
        "/jobs",
        json={"workflowPath": "workflows/demo/workflow.md"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403
    assert (await api.client.get("/jobs")).json()["total"] == 0
    # the dashboard's own requests (same-origin) and non-browser clients still pass
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {}):
        allowed = await api.client.post("/jobs/x/cancel", headers=headers)
        assert allowed.status_code == 404
    reads = await api.client.get("/jobs", headers={"Sec-Fetch-Site": "cross-site"})
    assert reads.status_code == 200, "only state-changing requests are refused"


async def test_message_validation(api: Api) -> None:
    workflow = write_workflow(api.home, "msg", ONE_PHASE)
    job_id = await api.create(
        workflow,
        {"work": [{"tool": "await_event", "input": {"eventName": "developer-input: ok?"}}]},
    )
    await api.wait_for_line(job_id, "Job parked")
    for body in ({}, {"message": ""}, {"message": 3}):
        response = await api.client.post(f"/jobs/{job_id}/message", json=body)
        assert response.status_code == 400


async def test_bad_last_event_id_is_400(api: Api) -> None:
    workflow = write_workflow(api.home, "lei", ONE_PHASE)
    job_id = await api.create(workflow, {})
    response = await api.client.get(f"/jobs/{job_id}/stream", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 400
    # beyond what an index can be: a clear 400, never a stream that dies mid-way
    huge = str(10**18)
    for headers, params in (({"Last-Event-ID": huge}, {}), ({}, {"lastEventId": huge})):
        response = await api.client.get(f"/jobs/{job_id}/stream", headers=headers, params=params)
        assert response.status_code == 400
        assert "line index" in response.json()["error"]
    below = await api.client.get(f"/jobs/{job_id}/stream", headers={"Last-Event-ID": "-2"})
    assert below.status_code == 400
    largest = await api.follow(job_id, headers={"Last-Event-ID": str(10**18 - 1)})
    assert largest.done == "complete" and largest.lines == [], "nothing after the last index"


async def test_missing_executor_is_409_plugin_required(api_factory: ApiFactory) -> None:
    from coro.config import CoroConfig

    async with api_factory(CoroConfig()) as api:
        workflow = write_workflow(api.home, "no-llm", ONE_PHASE)
        response = await api.client.post("/jobs", json={"workflowPath": workflow})
        assert response.status_code == 409
        body = response.json()
        assert body["error"] == "plugin_required"
        assert body["missingKind"] == "executor"
        assert "llm.defaultProvider" in body["message"]


async def test_api_token_required_when_configured(api_factory: ApiFactory) -> None:
    from coro.config import CoroConfig

    token = "t0ken-" + "x" * 20
    config = CoroConfig.model_validate({"apiToken": token, "llm": {"defaultProvider": "script"}})
    async with api_factory(config) as api:
        assert (await api.client.get("/jobs")).status_code == 401
        assert (await api.client.get("/health")).status_code == 200
        authed = await api.client.get("/jobs", headers={"Authorization": f"Bearer {token}"})
        assert authed.status_code == 200
        wrong = await api.client.get("/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert token not in wrong.text


async def test_openapi_and_dashboard_are_served(api: Api) -> None:
    spec = await api.client.get("/openapi.json")
    assert spec.status_code == 200
    assert "/jobs/{job_id}/stream" in spec.json()["paths"]
    root = await api.client.get("/", follow_redirects=False)
    assert root.status_code in (302, 307)
    assert root.headers["location"] == "/dashboard/"
    page = await api.client.get("/dashboard/")
    assert page.status_code == 200
    assert "Coro" in page.text
    health = (await api.client.get("/health")).json()
    assert health["status"] == "ok"
    assert health["mode"] == "local"
