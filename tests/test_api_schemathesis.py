"""Every runner route against generated requests (schemathesis over `/openapi.json`): no
5xx, no hang, and every answer as the document declares it (status, content type, body
schema, `Allow` on 405, schema-invalid requests refused), for a runner served on a real
port.

Bounded (a fixed seed and a few examples per operation) so it runs in CI. Left out, as
they reach outside loopback: plugin installs (pip reads package indexes), the connection
tests `/test/*` (a draft config points them at GitHub, Jira or an LLM provider), and a
plugin's `models` and `healthcheck` (an executor answers them by calling its provider).
Left out too: `/notifications/stream`, a stream that never ends (each request would
wait out the request timeout).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SUMMARY, ApiFactory, schemathesis_failures, schemathesis_summary

pytestmark = pytest.mark.timeout(300)

SCHEMATHESIS = shutil.which("schemathesis") or f"{sys.prefix}/bin/schemathesis"

EXCLUDED = r"^/(plugins/install|test/.+|plugins/[^/]+/(models|healthcheck)|notifications/stream)$"

# Rules a JSON schema cannot state (they depend on what exists, or on the other fields'
# values), so a schema-valid request may still be refused, with 400 and a reason.
CONFIG = """
# a body over the size limit is refused as 413 before it is read, valid or not
[checks.negative_data_rejection]
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"
]

# the workflow named must exist in the layers; a ticket needs a tracker (409)
[[operations]]
include-name = "POST /jobs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]

# a path must name an intelligence file of the layout, and a workflow, agent or skill
# must pass its preflight (422 with the issues)
[[operations]]
include-path-regex = "^/intelligence/(file|preflight)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409", "422"]

# the project directory must exist
[[operations]]
include-name = "GET /config/claude-code-mcps"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

# the local SCM's own rules for repository and person names (trimmed, no control
# characters, no '..')
[[operations]]
include-path-regex = "^/scm/local/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]

# a partial config is merged into the stored one, then the result is validated
[[operations]]
include-name = "PUT /config"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

# the phase must be one of the job's workflow
[[operations]]
include-path-regex = "^/jobs/{job_id}/(phase-overrides|phases/{phase}/rerun)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]

# the last message must be the developer's; and with no LLM configured (as here) plan
# mode answers 503 `reason: no-llm` (SPEC §2.3), by design
[[operations]]
include-name = "POST /intake/stream"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "503"]
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


async def test_no_check_fails_on_any_runner_route(
    api_factory: ApiFactory, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    async with api_factory() as api:
        # a job parked on a question, so the job routes reach a real one (the run's
        # controls then cancel, rerun and message it as they come)
        created = await api.client.post(
            "/jobs",
            json={
                "workflowPath": "workflows/demo/workflow.md",
                "description": "The job the generated requests reach",
                "interactive": True,
            },
        )
        assert created.status_code == 201, created.text
        config = tmp_path / "schemathesis.toml"
        config.write_text(f'{CONFIG}\n[parameters]\njob_id = "{created.json()["jobId"]}"\n')
        process = await asyncio.create_subprocess_exec(
            SCHEMATHESIS,
            "--config-file",
            str(config),
            "run",
            f"{api.served.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "5",
            "--seed",
            "20261202",
            # (no example database: a run is the same whatever earlier runs found)
            "--generation-database",
            "none",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--exclude-path-regex",
            EXCLUDED,
            "--no-color",
            cwd=tmp_path,  # its cache (.hypothesis, .schemathesis) stays out of the checkout
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, schemathesis_failures(report)
    assert "Tested: " in report
    record_property(SUMMARY, schemathesis_summary("runner", report))
