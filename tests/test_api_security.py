"""The runner's edges against hostile input (issue #13): a `Host` must name the port the
runner listens on, cross-site state changes are refused, and absurd budget numbers are
400 (never stored as "no budget")."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from coro.api.server import free_port
from tests.conftest import Api, write_workflow

ONE_PHASE = [{"name": "work", "agent": None}]


async def test_a_host_naming_another_port_of_loopback_is_refused(api: Api) -> None:
    port = api.served.port
    other = free_port()
    for host in (
        f"127.0.0.1:{other}",
        f"localhost:{other}",
        f"[::1]:{other}",
        "localhost",  # no port: 80, which is not the runner's
        "localhost:",  # an empty port is the default one, too
        f"localhost:{port}0",
        f"localhost:+{port}",
        f"localhost:{port}:{port}",
        "localhost:\u00b2",  # a digit to str.isdigit, but no port
    ):
        response = await api.client.get("/jobs", headers=[(b"Host", host.encode("latin-1"))])
        assert response.status_code == 403, host
        assert "Host" in response.json()["error"]
    for host in (f"127.0.0.1:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        response = await api.client.get("/jobs", headers={"Host": host})
        assert response.status_code == 200, host
    # liveness is checked too: a rebinding page learns nothing
    assert (await api.client.get("/health", headers={"Host": "localhost"})).status_code == 403


async def test_a_host_without_port_means_port_80(api: Api) -> None:
    """An in-process call (the cloud's commands use one) comes in on its URL's port:
    without a port that is 80, which a Host without a port names."""
    app = api.served.server.config.app
    assert isinstance(app, FastAPI)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        assert (await client.get("/jobs")).status_code == 200
        assert (await client.get("/jobs", headers={"Host": "127.0.0.1:80"})).status_code == 200
        refused = await client.get("/jobs", headers={"Host": f"127.0.0.1:{api.served.port}"})
        assert refused.status_code == 403
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://127.0.0.1:{api.served.port}"
    ) as client:
        assert (await client.get("/jobs")).status_code == 200
        assert (await client.get("/jobs", headers={"Host": "127.0.0.1"})).status_code == 403


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("origin", [None, "null", "https://evil.example"])
async def test_a_cross_site_state_change_without_an_acceptable_origin_is_refused(
    api: Api, method: str, origin: str | None
) -> None:
    workflow = write_workflow(api.home, "csrf", ONE_PHASE)
    job_id = await api.create(workflow, {})
    await api.finish(job_id)
    before = await api.job(job_id)
    headers = {"Sec-Fetch-Site": "cross-site"}
    if origin is not None:
        headers["Origin"] = origin
    targets = {
        "POST": (f"/jobs/{job_id}/resume", {}),
        "PUT": ("/config", {"apiToken": "stolen-by-a-web-page-0123456789"}),
        "PATCH": (f"/jobs/{job_id}/budget", {"maxCostUsd": 1}),
        "DELETE": (f"/jobs/{job_id}/insights/none", None),
    }
    path, body = targets[method]
    response = await api.client.request(method, path, json=body, headers=headers)
    assert response.status_code == 403, response.text
    assert "Cross-origin" in response.json()["error"]
    after = await api.job(job_id)
    assert (after["status"], after["budget"]) == (before["status"], before["budget"])
    assert api.runner.config.api_token is None


def _raw(body: str) -> dict[str, Any]:
    """A JSON text the client sends as it is (Python's json reads 1e999 as infinity)."""
    return {"content": body.encode(), "headers": {"Content-Type": "application/json"}}


ABSURD_BUDGETS = [
    '{"maxCostUsd": 1e999}',
    '{"maxCostUsd": -1e999}',
    '{"maxCostUsd": NaN}',
    '{"maxCostUsd": Infinity}',
    '{"maxCostUsd": 1e40}',
    '{"maxTokens": 1e40}',
    '{"maxTokens": 1e999}',
    '{"maxTokens": 100000000000000000000000000000000000000}',
    '{"maxTokens": 1.5}',
    '{"maxCostUsd": 0}',
    '{"maxTokens": -5}',
]


@pytest.mark.parametrize("budget", ABSURD_BUDGETS)
async def test_absurd_budget_numbers_are_400_on_create(api: Api, budget: str) -> None:
    workflow = write_workflow(api.home, "budget", ONE_PHASE)
    body = f'{{"workflowPath": "{workflow}", "budget": {budget}}}'
    response = await api.client.post("/jobs", **_raw(body))
    assert response.status_code == 400, response.text
    issues = response.json()["issues"]
    assert issues and all(i["path"].startswith("budget.") for i in issues), issues
    assert (await api.client.get("/jobs")).json()["total"] == 0, "nothing was stored"


async def test_absurd_budget_numbers_are_400_on_update(api: Api) -> None:
    workflow = write_workflow(api.home, "budget", ONE_PHASE)
    job_id = await api.create(workflow, {}, budget={"maxCostUsd": 2.5, "maxTokens": 1000})
    await api.finish(job_id)
    for budget in ABSURD_BUDGETS:
        response = await api.client.patch(f"/jobs/{job_id}/budget", **_raw(budget))
        assert response.status_code == 400, (budget, response.text)
        assert response.json()["issues"], budget
    assert (await api.job(job_id))["budget"] == {"maxCostUsd": 2.5, "maxTokens": 1000}
    fine = await api.client.patch(f"/jobs/{job_id}/budget", json={"maxCostUsd": 1e6})
    assert fine.status_code == 200
    assert fine.json()["budget"] == {"maxCostUsd": 1e6, "maxTokens": None}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/jobs", "GET, POST"),
        ("DELETE", "/jobs/job-1", "GET"),
        ("PATCH", "/intelligence/file", "DELETE, GET, PUT"),
        ("GET", "/jobs/job-1/cancel", "POST"),
        ("POST", "/health", "GET"),
    ],
)
async def test_a_405_names_every_method_of_the_path(
    api: Api, method: str, path: str, allow: str
) -> None:
    response = await api.client.request(method, path)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.json() == {"error": "Method Not Allowed"}
