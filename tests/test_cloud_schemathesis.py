"""Every cloud route against generated requests (schemathesis over `/openapi.json`): no
5xx, no hang, and every answer as the document declares it (status, content type,
body schema, `Allow` on 405), for a signed-in admin of a real team.

Bounded (a fixed seed and a few examples per operation) so it runs in CI; GitHub sign-in
is left out (it is not configured here, and would reach outside loopback if it were),
and so is logout (the run's own session would end).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cloud_helpers import Cloud
from tests.conftest import SUMMARY, schemathesis_failures, schemathesis_summary

pytest_plugins = ("tests.cloud_fixtures",)

pytestmark = pytest.mark.timeout(600)

SCHEMATHESIS = shutil.which("schemathesis") or f"{sys.prefix}/bin/schemathesis"

# Rules a JSON schema cannot state (they depend on what is stored, or on the other
# fields' values), so a schema-valid request may still be refused, with 400 and a reason.
CONFIG = """
request-timeout = 30

# a body over the size limit is refused as 413 before it is read, valid or not
[checks.negative_data_rejection]
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"
]

# the channels are config.json's entries, validated once a masked secret sent back is
# restored (URLs, addresses, ids unique across the lists)
[[operations]]
include-name = "PUT /teams/{team_id}/notifications"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "403", "404"]

# Last-Event-ID must be a line index; the strict budget body refuses an integer written
# as a float (5.0), which JSON Schema's "integer" admits
[[operations]]
include-name = "GET /teams/{team_id}/jobs/{job_id}/stream"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]
# the stream of a queued job stays open (the runner test's jobs end, and so do their
# streams): read each for 2 s, not until the request timeout
request-timeout = 2

[[operations]]
include-name = "PATCH /teams/{team_id}/jobs/{job_id}/budget"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]
"""


async def test_no_check_fails_on_any_cloud_route(
    cloud: Cloud, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    account = await cloud.signup()
    created = await cloud.client.post(
        "/teams", json={"name": "Schema team", "slug": "schema-team"}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    team_id = created.json()["id"]
    # a queued team job, so the team's job routes reach a real team and a real job
    queued = await cloud.client.post(
        f"/teams/{team_id}/jobs",
        json={"workflowPath": "workflows/job/workflow.md"},
        headers=account.headers,
    )
    assert queued.status_code == 201, queued.text
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'{CONFIG}\n[parameters]\nteam_id = "{team_id}"\njob_id = "{queued.json()["jobId"]}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{cloud.served.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "8",
        "--seed",
        "20261202",
        # (no example database: a run is the same whatever earlier runs found)
        "--generation-database",
        "none",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {account.access_token}",
        "--exclude-path-regex",
        # (logging out would end the session the run signs its requests with)
        "^/auth/(github|logout)",
        "--no-color",
        cwd=tmp_path,  # its cache (.schemathesis) stays out of the checkout
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, schemathesis_failures(report)
    assert "Tested: " in report
    record_property(SUMMARY, schemathesis_summary("cloud", report))
