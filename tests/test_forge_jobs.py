"""Jobs that drive a forge end to end: the real `git` CLI against repositories served
over smart HTTP by the GitHub and Bitbucket fakes, and the plugins' REST clients.

One job clones, commits, pushes and opens a pull request, parks on it, is woken by one
poll that sees an approval and a review comment together, answers them (a push, a
threaded reply) and merges — and the change really lands on the served `main`. Around
it: the credential appears in no log line, SSE frame, job JSON, artefact, file of the
job directory (`.git/config` included), stored state, request URL or error message, and
the askpass helper leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from coro.config import CoroConfig, CoroHome
from coro.domain.errors import PluginError
from coro.engine.polling import PollingTransport
from coro.plugins.scm.github import create
from coro.system.git import GitCredentials, GitWorkspace
from tests.conftest import ApiFactory, user_prompts, write_workflow
from tests.fakes.bitbucket_server import FakeBitbucket
from tests.fakes.git_http import GitHttp
from tests.fakes.github_server import FakeGitHub
from tests.fakes.http_server import ForgeServer, RecordedRequest

GITHUB_TOKEN = "ghp_ForgeJobTokenQ7w8e9r0t1y2u3i4o5p6a7s8"
GITHUB_WRONG = "ghp_WrongForgeTokenZ9x8c7v6b5n4m3l2k1j0h9"
BITBUCKET_PASSWORD = "ATBBforgeJobAppPassword0123456789abcdef"
BITBUCKET_WRONG = "ATBBwrongForgeAppPassword9876543210zyxw"
BITBUCKET_USER = "coro-bot"
REPO = "acme/shop"
PR_ID = 1  # the first pull request of a fresh repository
BRANCH = "coro/work"  # what scm_create_pr names the branch of phase `work` (no work item)
ONE_PHASE = [{"name": "work", "agent": None}]
REPLY = "Done: greeting.txt now greets the whole world."


@dataclass
class Forge:
    """One forge fake with what the tests need to know about it."""

    name: str  # the plugin id
    fake: FakeGitHub | FakeBitbucket
    settings: Callable[[str], dict[str, Any]]  # the plugin config, given the secret
    secret: str
    wrong: str
    username: str  # what git must present with the secret
    review: Callable[[], str]  # approve + comment as reviewers; the comment's id

    def config(self, secret: str | None = None) -> CoroConfig:
        return CoroConfig.model_validate(
            {
                "llm": {"defaultProvider": "script"},
                "polling": {"intervalSeconds": 3600, "localChangeDelaySeconds": 3600},
                "plugins": {
                    "installed": {self.name: {"config": self.settings(secret or self.secret)}},
                    "defaults": {"scm": self.name},
                },
            }
        )

    def forms(self, secret: str) -> list[str]:
        """Every shape the secret could leak in: raw, URL-encoded, in a Basic header."""
        pair = base64.b64encode(f"{self.username}:{secret}".encode()).decode()
        return [secret, quote(secret, safe=""), pair]

    @property
    def git(self) -> GitHttp:
        assert self.fake.git is not None
        return self.fake.git


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own temporary directory (where the askpass helper is written), so
    what other tests running in parallel leave there meanwhile does not count."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    return tmp


@pytest.fixture(params=["github", "bitbucket"])
async def forge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Forge]:
    files = {"README.md": "# Shop\n", "src/shop.py": "PRICE = 1\n"}
    if request.param == "github":
        async with FakeGitHub(token=GITHUB_TOKEN, git_root=tmp_path / "forge") as github:
            github.add_repo(REPO, collaborators=["alice", "bob"], files=files)

            def github_review() -> str:
                github.approve(REPO, PR_ID, "bob")
                return str(
                    github.review_comment(
                        REPO, PR_ID, "alice", "Please greet the whole world.", path="greeting.txt"
                    )
                )

            yield Forge(
                name="github",
                fake=github,
                settings=lambda secret: {
                    "token": secret,
                    "baseUrl": github.base_url,
                    "retryBackoffSeconds": 0,
                },
                secret=GITHUB_TOKEN,
                wrong=GITHUB_WRONG,
                username="x-access-token",
                review=github_review,
            )
    else:
        async with FakeBitbucket(
            username=BITBUCKET_USER,
            app_password=BITBUCKET_PASSWORD,
            git_root=tmp_path / "forge",
        ) as bitbucket:
            bitbucket.add_user("alice", "Alice Liddell")
            bitbucket.add_user("bob", "Bob Builder")
            bitbucket.add_repo(REPO, files=files)

            def bitbucket_review() -> str:
                bitbucket.approve(REPO, PR_ID, "bob")
                return str(bitbucket.comment(REPO, PR_ID, "alice", "Please greet the whole world."))

            yield Forge(
                name="bitbucket",
                fake=bitbucket,
                settings=lambda secret: {
                    "username": BITBUCKET_USER,
                    "appPassword": secret,
                    "baseUrl": bitbucket.base_url,
                    "retryBackoffSeconds": 0,
                },
                secret=BITBUCKET_PASSWORD,
                wrong=BITBUCKET_WRONG,
                username=BITBUCKET_USER,
                review=bitbucket_review,
            )


def review_script(comment_id: str) -> dict[str, Any]:
    """Visit 1 opens the PR and parks on it; visit 2 answers the review and merges.

    On GitHub the reviewer's remark is an inline review comment: that is what has a
    thread to reply in (a reply to an issue comment becomes a new issue comment)."""
    return {
        "work": [
            [
                {"tool": "scm_clone_repo", "input": {"repo": REPO}},
                {
                    "tool": "file_write",
                    "input": {"path": "shop/greeting.txt", "content": "Hello\n"},
                },
                {
                    "tool": "scm_create_pr",
                    "input": {"title": "Add a greeting", "body": "Adds greeting.txt."},
                },
                {"tool": "await_event", "input": {"eventName": "pr:review", "prId": PR_ID}},
            ],
            [
                {"tool": "scm_list_pr_comments", "input": {"prId": PR_ID}},
                {
                    "tool": "file_edit",
                    "input": {
                        "path": "shop/greeting.txt",
                        "oldText": "Hello",
                        "newText": "Hello, world",
                    },
                },
                {"tool": "scm_push", "input": {"message": "Greet the whole world"}},
                {
                    "tool": "scm_post_pr_comment",
                    "input": {"prId": PR_ID, "body": REPLY, "inReplyTo": comment_id},
                },
                {"tool": "scm_merge_pr", "input": {"prId": PR_ID}},
                {
                    "tool": "shell",
                    "input": {
                        "command": "{ git -C shop config --local --list; git -C shop remote -v; "
                        "git -C shop log --format='%H %s' -3; } > checkout.txt"
                    },
                },
                {
                    "tool": "post_artifact",
                    "input": {
                        "kind": "report",
                        "title": "The checkout",
                        "data": {"path": "checkout.txt"},
                    },
                },
            ],
        ]
    }


def next_comment_id(forge: Forge) -> str:
    """The id the fake will give the next reviewer comment (the script must name it)."""
    fake = forge.fake
    if isinstance(fake, FakeGitHub):
        return str(fake._ids["review_comment"] + 1)
    return str(fake._comment_ids + 1)


def git_requests(fake: ForgeServer) -> list[RecordedRequest]:
    return [r for r in fake.requests if ".git/" in r.path]


def basic_pair(request: RecordedRequest) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return base64.b64decode(value).decode() if scheme.lower() == "basic" else None


def files_under(root: Path) -> list[Path]:
    """Every file under `root`, relative to it."""
    return [p.relative_to(root) for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def files_holding(root: Path, secrets: list[str], *, skip: tuple[Path, ...] = ()) -> list[Path]:
    """The files under `root` (relative) whose bytes contain one of `secrets`."""
    return [
        path
        for path in files_under(root)
        if path not in skip
        and any(secret.encode() in (root / path).read_bytes() for secret in secrets)
    ]


def askpass_leftovers(tmp: Path) -> list[Path]:
    """What the askpass helper (`coro-askpass-*` directories, see coro/plugins/scm/git.py)
    left in the temporary directory."""
    return list(tmp.glob("coro-askpass*"))


def assert_nowhere(secrets: list[str], **places: str | bytes) -> None:
    for where, text in places.items():
        data = text.encode() if isinstance(text, str) else text
        for secret in secrets:
            assert secret.encode() not in data, f"a credential appears in {where}"


async def test_a_job_opens_answers_and_merges_a_pr_through_git_and_the_api(
    api_factory: ApiFactory, home: CoroHome, forge: Forge, private_tmp: Path
) -> None:
    comment_id = next_comment_id(forge)
    config = forge.config()
    async with api_factory(config) as api:
        workflow = write_workflow(api.home, "forge", ONE_PHASE)
        job_id = await api.create(workflow, review_script(comment_id))
        await api.wait_for_line(job_id, "Job parked")
        parked = await api.job(job_id)
        assert parked["status"] == "awaiting-pr-merge"
        assert parked["prMappings"][0]["prId"] == PR_ID

        # What the first visit pushed is on the forge; the PR is open on that branch.
        assert forge.git.show(REPO, BRANCH, "greeting.txt") == "Hello\n"
        with pytest.raises(RuntimeError):
            forge.git.show(REPO, "main", "greeting.txt")

        assert forge.review() == comment_id
        poller = api.runner.transport
        assert isinstance(poller, PollingTransport)
        events = await poller.poll_once()  # what the next cycle would see, now
        assert [e.event_key for e in events] == [
            "pullrequest:approved",
            "pullrequest:comment_created",
        ]
        assert all(e.job_id == job_id and e.pr_id == PR_ID for e in events)

        result = await api.finish(job_id)
        assert result.done == "complete"
        job = await api.job(job_id)

        # One wake, one prompt with both events.
        woken = [p for p in user_prompts(job) if "received since you parked" in p]
        assert len(woken) == 1
        assert "[EVENTS: 2 received since you parked]" in woken[0]
        assert "pullrequest:approved" in woken[0] and "Approvals: 1" in woken[0]
        assert "pullrequest:comment_created" in woken[0]
        assert "Please greet the whole world." in woken[0]

        # The tools all succeeded; the change reached main through a real merge.
        texts = result.texts()
        assert not [t for t in texts if t.startswith("[tool-error]")], texts
        assert forge.git.show(REPO, "main", "greeting.txt") == "Hello, world\n"
        assert forge.git.show(REPO, "main", "src/shop.py") == "PRICE = 1\n"
        tip = forge.git.log(REPO, "main")[0]
        assert len(tip.split("|")[0].split()) == 3, tip  # a merge commit: two parents
        mapping = job["prMappings"][0]
        assert mapping["mergedAt"]
        assert mapping["repoSlug"] == REPO and mapping["pluginId"] == forge.name

        # The threaded reply reached the forge.
        if isinstance(forge.fake, FakeGitHub):
            reply = forge.fake.pull(REPO, PR_ID).review_comments[-1]
            assert (reply.body, reply.in_reply_to_id, reply.user) == (
                REPLY,
                int(comment_id),
                "coro-bot",
            )
            assert forge.fake.pull(REPO, PR_ID).merged
            assert forge.fake.requests_to(
                f"/repos/{REPO}/pulls/{PR_ID}/comments/{comment_id}/replies", "POST"
            )
        else:
            bb_reply = forge.fake.pull(REPO, PR_ID).comments[-1]
            assert (bb_reply.raw, bb_reply.parent, bb_reply.user) == (
                REPLY,
                int(comment_id),
                BITBUCKET_USER,
            )
            assert forge.fake.pull(REPO, PR_ID).state == "MERGED"
            assert BRANCH not in forge.git.branches(REPO)  # close_source_branch

        # git met a 401 challenge and answered it through askpass: the credentials were
        # in no URL, and they were right.
        served = git_requests(forge.fake)
        pushes = [r for r in served if r.path.endswith("/git-receive-pack")]
        assert len(pushes) == 2  # the PR's branch, then the review fix
        challenged = [r for r in served if r.status == 401]
        assert challenged and all("authorization" not in r.headers for r in challenged)
        presented = {basic_pair(r) for r in served if r.status != 401}
        assert presented == {f"{forge.username}:{forge.secret}"}
        assert not forge.git.backend_errors

        # The credential is nowhere it must not be.
        secrets = forge.forms(forge.secret)
        artifacts = job["artifacts"]
        assert len(artifacts) == 1
        response = await api.client.get(f"/jobs/{job_id}/artifacts/{artifacts[0]['id']}/content")
        assert response.status_code == 200
        checkout_report = response.text
        assert f"remote.origin.url={forge.fake.root}/{REPO}.git" in checkout_report
        workdir = home.work_dir(config) / job_id
        git_config = (workdir / "shop" / ".git" / "config").read_text()
        assert f"url = {forge.fake.root}/{REPO}.git" in git_config
        assert "@" not in git_config
        assert_nowhere(
            secrets,
            sse_stream="\n".join(result.lines),
            job_json=json.dumps(job),
            artifact=checkout_report,
            request_urls="\n".join(r.target for r in forge.fake.requests),
        )
        scanned = files_under(workdir)
        assert Path("shop/.git/config") in scanned and Path("shop/greeting.txt") in scanned
        assert files_holding(workdir, secrets) == []
        # nor in the runner's state (config.json is where the developer put it)
        assert files_holding(home.root, secrets, skip=(Path("config.json"),)) == []

        # The askpass helper's private directories (`coro-askpass-*` in the temporary
        # directory, see coro/plugins/scm/git.py) are all gone.
        assert tempfile.gettempdir() == str(private_tmp)
        assert askpass_leftovers(private_tmp) == []


@pytest.mark.parametrize("traced", [False, True], ids=["plain", "git-tracing-on"])
async def test_a_wrong_credential_fails_the_clone_without_showing_either_secret(
    api_factory: ApiFactory,
    home: CoroHome,
    forge: Forge,
    private_tmp: Path,
    traced: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if traced:  # a developer debugging git in the runner's shell must not leak the token
        monkeypatch.setenv("GIT_TRACE_CURL", "1")
        monkeypatch.setenv("GIT_TRACE_REDACT", "0")
        monkeypatch.setenv("GIT_TRACE2", "1")
        monkeypatch.setenv("GIT_TRACE2_ENV_VARS", "CORO_GIT_ASKPASS_PASSWORD")
    config = forge.config(forge.wrong)
    script = {"work": [{"tool": "scm_clone_repo", "input": {"repo": REPO}}]}
    async with api_factory(config) as api:
        workflow = write_workflow(api.home, "forge-denied", ONE_PHASE)
        job_id = await api.create(workflow, script)
        result = await api.finish(job_id)
        job = await api.job(job_id)

    errors = [t for t in result.texts() if t.startswith("[tool-error] scm_clone_repo")]
    assert len(errors) == 1, result.texts()
    assert "authentication failed" in errors[0].lower()
    tool_results = [
        r["output"]
        for m in job["conversationHistory"]
        for r in m.get("toolResults") or []
        if r.get("isError")
    ]
    assert len(tool_results) == 1 and "authentication failed" in tool_results[0].lower()
    assert job["checkouts"] == []

    # git did ask the forge with the (wrong) credentials, as it must…
    served = git_requests(forge.fake)
    assert {basic_pair(r) for r in served if "authorization" in r.headers} == {
        f"{forge.username}:{forge.wrong}"
    }
    assert all(r.status == 401 for r in served)
    # …but neither secret shows anywhere the developer or the agent can read.
    secrets = forge.forms(forge.wrong) + forge.forms(forge.secret)
    assert_nowhere(
        secrets,
        sse_stream="\n".join(result.lines),
        job_json=json.dumps(job),
        request_urls="\n".join(r.target for r in forge.fake.requests),
    )
    assert files_holding(home.work_dir(config) / job_id, secrets) == []
    assert files_holding(home.root, secrets, skip=(Path("config.json"),)) == []
    assert askpass_leftovers(private_tmp) == []


async def test_the_fake_forges_speak_gzip_and_chunked_git_requests(
    forge: Forge, tmp_path: Path, private_tmp: Path
) -> None:
    """What a bigger repository makes git send: a gzip fetch request (more than 1 KiB of
    `want` lines) and a chunked push (a pack larger than http.postBuffer)."""
    for n in range(40):
        forge.git.commit(REPO, f"topic/{n}", {f"t{n}.txt": f"{n}\n"}, message=f"t{n}", start="main")
    credentials = GitCredentials(forge.username, forge.secret)
    url = f"{forge.fake.root}/{REPO}.git"
    workspace = await GitWorkspace.clone(url, tmp_path / "clone", credentials=credentials)
    assert await workspace.default_branch() == "main"

    await workspace.create_branch("big")
    await asyncio.to_thread(write_random, tmp_path / "clone" / "blob.bin", 3 * 1024 * 1024)
    head = await workspace.commit_all("A big file", author_name="T", author_email="t@x.invalid")
    await workspace.push("big", credentials=credentials)

    assert forge.git.branch_sha(REPO, "big") == head
    served = git_requests(forge.fake)
    gzipped = [r for r in served if r.headers.get("content-encoding") == "gzip"]
    chunked = [r for r in served if r.headers.get("transfer-encoding") == "chunked"]
    assert gzipped and all(r.status == 200 for r in gzipped)
    assert chunked and all(r.status == 200 for r in chunked)
    assert max(len(r.raw) for r in chunked) > 3 * 1024 * 1024
    assert not forge.git.backend_errors
    assert askpass_leftovers(private_tmp) == []


def write_random(path: Path, size: int) -> None:
    path.write_bytes(os.urandom(size))  # incompressible: the pack stays that large


async def test_the_fake_github_refuses_a_pr_for_a_branch_never_pushed(tmp_path: Path) -> None:
    """So a job that forgot to push is caught, as on GitHub."""
    async with FakeGitHub(token=GITHUB_TOKEN, git_root=tmp_path / "forge") as github:
        github.add_repo(REPO, branches=("main", "coro/same"))
        plugin = create({"token": GITHUB_TOKEN, "baseUrl": github.base_url})
        try:
            with pytest.raises(PluginError) as unpushed:
                await plugin.create_pr(
                    REPO, source_branch="coro/x", target_branch="main", title="T", body=""
                )
            assert unpushed.value.status == 422
            assert "PullRequest.head invalid" in str(unpushed.value)
            assert github.git is not None
            github.git.commit(REPO, "main", {"x.txt": "x\n"}, message="ahead of coro/same")
            github.git.commit(REPO, "coro/y", {"y.txt": "y\n"}, message="y", start="main")
            with pytest.raises(PluginError) as nothing_new:
                await plugin.create_pr(
                    REPO, source_branch="coro/same", target_branch="main", title="T", body=""
                )
            assert "No commits between main and coro/same" in str(nothing_new.value)
            pr = await plugin.create_pr(
                REPO, source_branch="coro/y", target_branch="main", title="T", body=""
            )
            assert github.pull(REPO, pr.id).head_sha == github.git.branch_sha(REPO, "coro/y")
            merge = await plugin.merge(REPO, pr.id)
            assert merge.merged and merge.sha == github.git.branch_sha(REPO, "main")
            assert github.git.show(REPO, "main", "x.txt") == "x\n"
            assert github.git.show(REPO, "main", "y.txt") == "y\n"
        finally:
            await plugin.aclose()
