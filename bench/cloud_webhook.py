"""Team cloud webhooks: a signed GitHub approval POSTed to the cloud → the parked job's
next phase started on its hybrid runner (issue #12: p50 ≤ 100 ms).

A `coro cloud` child process on a throw-away PostgreSQL database, a team with a runner
token and a GitHub webhook secret. A real hybrid `Runner` in this process (its own
state in a throw-away CORO_HOME, `cloud.url`/`cloud.token` set, the GitHub plugin
installed with an unreachable API and polling pushed out of the way, so nothing but the
webhook can wake a job) parks K jobs, each awaiting the approval of its own pull request
(the PR mapping `scm_create_pr` would record is added to the job and replicated, so the
cloud can route the delivery). Then, one job at a time, a signed `pull_request_review`
(approved) delivery is POSTed to `/webhook/:teamId/github`; measured from just before
the POST to the moment the woken run's "Runner started" line is published on the
runner (both in this process: `perf_counter_ns`); the woken run parks again, on the
merge (an open pull request keeps a job from completing). The cloud's answer (202) is timed
apart: it comes once the delivery is verified, stored and queued for the runner.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import sys
import time
from typing import Any

import httpx

from bench._cloud import WAIT_LIMIT, clouds, finish, make_teams
from bench._common import (
    base_parser,
    make_backend,
    make_config,
    ms,
    print_table,
    summarize,
    temp_home,
    verdict,
    write_workflow,
)
from coro.domain.models import Job, LogEntry, PrMapping, PrSeen, iso_now
from coro.engine.service import NewJob
from coro.runner import Runner
from coro.state.logbus import LogBus

NAME = "cloud_webhook"
TARGET_P50_MS = 100.0
REPO = "acme/bench"
RUN_STARTED = "Runner started"


class RunStartClock(LogBus):
    """A log bus that resolves a future when an armed job's next run starts."""

    def __init__(self) -> None:
        super().__init__()
        self._armed: dict[str, asyncio.Future[int]] = {}
        self._loop = asyncio.get_running_loop()

    def arm(self, job_id: str) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        self._armed[job_id] = future
        return future

    def publish_lines(self, job_id: str, entries: list[LogEntry]) -> None:
        now = time.perf_counter_ns()
        if any(RUN_STARTED in entry.line for entry in entries):
            future = self._armed.pop(job_id, None)
            if future is not None:
                # publishers may run in a worker thread: resolve on the loop's own
                self._loop.call_soon_threadsafe(_resolve, future, now)
        super().publish_lines(job_id, entries)


def _resolve(future: asyncio.Future[int], value: int) -> None:
    if not future.done():
        future.set_result(value)


def job_script(pr: int) -> dict[str, Any]:
    return {
        "work": [
            [{"tool": "await_event", "input": {"eventName": "pr:approved", "prId": pr}}],
            # parked again (on the merge): an open PR would keep the job from completing
            [
                {"text": "approved"},
                {"tool": "await_event", "input": {"eventName": "pr:merged", "prId": pr}},
            ],
        ]
    }


def approval(pr: int) -> bytes:
    return json.dumps(
        {
            "action": "submitted",
            "review": {
                "id": 1000 + pr,
                "state": "approved",
                "body": None,
                "user": {"login": "reviewer"},
                "submitted_at": "2026-01-01T09:00:00Z",
            },
            "pull_request": {"number": pr, "state": "open"},
            "repository": {"full_name": REPO, "name": REPO.split("/")[1]},
        }
    ).encode()


def _opened(pr: int) -> Any:
    def update(job: Job) -> None:  # what scm_create_pr records
        job.pr_mappings.append(
            PrMapping(
                pr_id=pr,
                work_item="bench",
                repo_slug=REPO,
                plugin_id="github",
                opened_at=iso_now(),
                seen=PrSeen(),
            )
        )

    return update


async def run(jobs: int = 30, warmup: int = 3, backend: str = "sqlite") -> dict[str, Any]:
    secret = secrets.token_urlsafe(24)
    wake_ns: list[int] = []
    answer_ns: list[int] = []
    async with clouds(1) as (cloud,):
        team = (await make_teams(cloud.url, 1))[0]
        async with httpx.AsyncClient(base_url=cloud.url, timeout=WAIT_LIMIT) as client:
            put = await client.put(
                f"/teams/{team.id}/webhooks/github", json={"secret": secret}, headers=team.headers
            )
            if put.status_code not in (200, 201):
                raise RuntimeError(f"webhook secret not set: {put.status_code} {put.text[:300]}")

            async with temp_home(backend) as home:
                workflow = write_workflow(home, "reviewed", [{"name": "work", "agent": None}])
                config = make_config(
                    home,
                    cloud={"url": cloud.url, "token": team.token},
                    # parsed by the GitHub plugin; its API is unreachable on purpose
                    plugins={
                        "installed": {
                            "github": {
                                "config": {"token": "ghp-bench", "baseUrl": "http://127.0.0.1:9"}
                            }
                        }
                    },
                    polling={"intervalSeconds": 86_400, "localChangeDelaySeconds": 86_400},
                )
                home.save_config(config)
                runner = Runner(home, config, backend=make_backend(backend, home))
                clock = RunStartClock()
                runner.backend.bus = clock  # before start: the backend publishes on it
                async with runner.running():
                    link, replica = runner.link, runner.cloud_backend
                    assert link is not None and replica is not None
                    async with asyncio.timeout(WAIT_LIMIT):
                        await link.wait_for("connected")
                    parked: list[tuple[str, int]] = []
                    for n in range(warmup + jobs):
                        pr = n + 1
                        job = await runner.jobs.create(
                            NewJob(workflow_path=workflow, params={"script": job_script(pr)})
                        )
                        parked.append((job.id, pr))
                    await runner.dispatcher.wait_idle()
                    for job_id, pr in parked:
                        found = await runner.jobs.get(job_id)
                        if found.awaiting_event != "pr:approved":
                            raise RuntimeError(f"job {job_id} did not park: {found.status}")
                        await runner.store.update(job_id, _opened(pr))
                    async with asyncio.timeout(WAIT_LIMIT):
                        await replica.flush()  # the cloud knows every job's PR now

                    for n, (job_id, pr) in enumerate(parked):
                        body = approval(pr)
                        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                        headers = {
                            "Content-Type": "application/json",
                            "X-GitHub-Event": "pull_request_review",
                            "X-GitHub-Delivery": f"bench-{secrets.token_hex(8)}",
                            "X-Hub-Signature-256": f"sha256={signature}",
                        }
                        started = clock.arm(job_id)
                        sent = time.perf_counter_ns()
                        delivered = await client.post(
                            f"/webhook/{team.id}/github", content=body, headers=headers
                        )
                        answered = time.perf_counter_ns()
                        if delivered.status_code != 202 or not delivered.json().get("routed"):
                            raise RuntimeError(
                                f"delivery for {job_id} not routed: "
                                f"{delivered.status_code} {delivered.text[:300]}"
                            )
                        async with asyncio.timeout(WAIT_LIMIT):
                            woke = await started
                        await runner.dispatcher.wait_idle()
                        done = await runner.jobs.get(job_id)
                        if done.awaiting_event != "pr:merged":
                            raise RuntimeError(f"job {job_id} did not go on: {done.status}")
                        if n >= warmup:
                            wake_ns.append(woke - sent)
                            answer_ns.append(answered - sent)
    wake = summarize([ms(v) for v in wake_ns])
    return {
        "backend": backend,
        "jobs": jobs,
        "warmup_jobs": warmup,
        "webhook_to_phase_start_ms": wake,
        "webhook_answer_ms": summarize([ms(v) for v in answer_ns]),
        "target": {"p50_ms": TARGET_P50_MS},
        "pass": wake.get("p50", float("inf")) <= TARGET_P50_MS,
    }


def report(result: dict[str, Any]) -> None:
    wake, answer = result["webhook_to_phase_start_ms"], result["webhook_answer_ms"]
    print_table(
        f"{NAME} (runner on {result['backend']}, {result['jobs']} parked jobs, one at a time)",
        [
            (
                "webhook → phase started p50 (ms)",
                f"{wake['p50']:.2f}",
                verdict(wake["p50"], TARGET_P50_MS),
            ),
            ("webhook → phase started p99 (ms)", f"{wake['p99']:.2f}", ""),
            ("webhook → phase started max (ms)", f"{wake['max']:.2f}", ""),
            ("webhook POST answered (202) p50 (ms)", f"{answer['p50']:.2f}", ""),
        ],
    )


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--jobs", type=int, default=30, help="parked jobs measured")
    parser.add_argument("--warmup", type=int, default=3, help="deliveries first, not measured")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 jobs")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.warmup = 5, 1
    if args.jobs < 1 or args.warmup < 0:
        parser.error("--jobs: at least 1; --warmup: at least 0")
    try:
        result = asyncio.run(run(jobs=args.jobs, warmup=args.warmup, backend=args.backend))
    except KeyboardInterrupt:  # everything started is stopped by then
        sys.exit(130)
    name = NAME if args.backend == "sqlite" else f"{NAME}-{args.backend}"
    name += "-quick" if args.quick else ""
    finish(result, name, as_json=args.json, quiet=args.quiet, report=report)


if __name__ == "__main__":
    main()
