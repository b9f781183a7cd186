"""`coro login`, run as a real process against a real cloud: with a runner token, or
signing in (the team picked or made, a runner token minted); config.json gets
`cloud.url` and `cloud.token`, and the token is never printed."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from coro.config import CoroHome
from coro.state.cloud.link import RUNNER_ID_FILE
from tests.cloud_helpers import PASSWORD, WAIT_LIMIT, Cloud
from tests.hybrid_helpers import pair, revoke

pytest_plugins = ("tests.cloud_fixtures",)


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def coro_login(home: Path, *args: str, stdin: str = "") -> Ran:
    env = {**os.environ, "CORO_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro.cli.main",
        "login",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT_LIMIT):
        out, err = await process.communicate(stdin.encode())
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def stored_cloud(home: Path) -> dict[str, str]:
    data = json.loads((home / "config.json").read_text())
    return dict(data.get("cloud", {}))


async def test_login_with_a_runner_token_checks_it_and_saves_it(
    cloud: Cloud, tmp_path: Path
) -> None:
    paired = await pair(cloud)
    home = tmp_path / "home"
    CoroHome(home).save_config(CoroHome(home).load_config().model_copy(update={"port": 3999}))

    ran = await coro_login(home, "--cloud-url", cloud.served.url + "/", "--token", paired.token)

    assert ran.code == 0, ran.err
    assert paired.team["name"] in ran.out
    assert paired.token not in ran.out + ran.err
    assert stored_cloud(home) == {"url": cloud.served.url, "token": paired.token}
    config = CoroHome(home).load_config()
    assert config.port == 3999  # the rest of the config is kept
    assert config.cloud.enabled
    assert (home / "config.json").stat().st_mode & 0o777 == 0o600
    runner_id = (home / "cloud" / RUNNER_ID_FILE).read_text().strip()
    sessions = await cloud.rows(
        "SELECT runner_id FROM runner_sessions WHERE team_id = :team", team=paired.team_id
    )
    assert runner_id and sessions in ([], [{"runner_id": runner_id}])  # it registered, then left


async def test_login_reads_the_token_from_stdin(cloud: Cloud, tmp_path: Path) -> None:
    paired = await pair(cloud)
    home = tmp_path / "home"

    ran = await coro_login(
        home, "--cloud-url", cloud.served.url, "--token", "-", stdin=paired.token
    )

    assert ran.code == 0, ran.err
    assert stored_cloud(home)["token"] == paired.token


async def test_a_refused_token_is_not_saved(cloud: Cloud, tmp_path: Path) -> None:
    paired = await pair(cloud)
    await revoke(cloud, paired)
    home = tmp_path / "home"

    ran = await coro_login(home, "--cloud-url", cloud.served.url, "--token", paired.token)

    assert ran.code == 1
    assert "refused" in ran.err and "revoked" in ran.err
    assert paired.token not in ran.out + ran.err
    assert not (home / "config.json").exists()


async def test_an_unreachable_cloud_is_said_so(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "home"

    ran = await coro_login(home, "--cloud-url", f"http://127.0.0.1:{port}", "--token", "x" * 40)
    signed = await coro_login(
        home,
        "--cloud-url",
        f"http://127.0.0.1:{port}",
        "--email",
        "a@b.co",
        "--password-stdin",
        stdin="pw",
    )

    assert ran.code == 1 and "cannot reach the cloud" in ran.err
    assert signed.code == 1 and "cannot reach the cloud" in signed.err
    assert not (home / "config.json").exists()


async def test_login_by_email_makes_a_team_and_mints_a_runner_token(
    cloud: Cloud, tmp_path: Path
) -> None:
    account = await cloud.signup(name="Grace Hopper")
    home = tmp_path / "home"

    ran = await coro_login(
        home,
        "--cloud-url",
        cloud.served.url,
        "--email",
        account.email,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )

    assert ran.code == 0, ran.err
    saved = stored_cloud(home)
    assert saved["url"] == cloud.served.url and saved["token"] not in ran.out + ran.err
    teams = (await cloud.client.get("/teams", headers=account.headers)).json()
    assert [t["name"] for t in teams] == ["Grace Hopper's team"]
    tokens = (
        await cloud.client.get(f"/teams/{teams[0]['id']}/runner-tokens", headers=account.headers)
    ).json()
    assert [t["name"] for t in tokens] == [f"runner-{socket.gethostname()}"[:200]]
    # the minted token lets a runner in
    again = await coro_login(home, "--cloud-url", cloud.served.url, "--token", saved["token"])
    assert again.code == 0, again.err


async def test_login_by_email_picks_the_team(cloud: Cloud, tmp_path: Path) -> None:
    account = await cloud.signup()
    first = await cloud.team(account)
    second = await cloud.team(account)
    home = tmp_path / "home"
    args = ("--cloud-url", cloud.served.url, "--email", account.email, "--password-stdin")

    ambiguous = await coro_login(home, *args, stdin=PASSWORD)
    chosen = await coro_login(home, *args, "--team", second["slug"], stdin=PASSWORD)

    assert ambiguous.code == 1
    assert first["slug"] in ambiguous.err and second["slug"] in ambiguous.err
    assert chosen.code == 0, chosen.err
    assert second["name"] in chosen.out
    tokens = (
        await cloud.client.get(f"/teams/{second['id']}/runner-tokens", headers=account.headers)
    ).json()
    assert len(tokens) == 1


async def test_a_wrong_password_is_said_so(cloud: Cloud, tmp_path: Path) -> None:
    account = await cloud.signup()
    home = tmp_path / "home"

    ran = await coro_login(
        home,
        "--cloud-url",
        cloud.served.url,
        "--email",
        account.email,
        "--password-stdin",
        stdin="not the password",
    )

    assert ran.code == 1 and "wrong email or password" in ran.err
    assert not (home / "config.json").exists()


async def test_login_needs_exactly_one_way_in(tmp_path: Path) -> None:
    home = tmp_path / "home"

    neither = await coro_login(home, "--cloud-url", "http://127.0.0.1:1")
    bad_url = await coro_login(home, "--cloud-url", "ftp://x", "--token", "t" * 20)

    assert neither.code == 2 and "--token" in neither.err
    assert bad_url.code == 2 and "--cloud-url" in bad_url.err
