"""`coro login`: pair this runner with a team cloud (hybrid mode).

With `--token` (a runner token an admin minted), the token is checked by connecting
once; with `--email` (the password prompted, or `--password-stdin`), the CLI signs in,
picks the team (`--team SLUG`, or the only one; with none it creates one named after the
user), and mints a runner token named after this machine. Either way `cloud.url` and
`cloud.token` go into `$CORO_HOME/config.json`; `coro start` is then hybrid. The token
is never printed. Exit codes: 0 paired, 1 refused or unreachable, 2 invalid usage.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from coro.cli.client import report_error

HTTP_TIMEOUT_SECONDS = 30.0


class LoginFailed(Exception):
    """What to tell the user (never a secret)."""


def login(
    cloud_url: Annotated[
        str,
        typer.Option(
            "--cloud-url", metavar="URL", help="The team cloud, e.g. https://coro.example.com."
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="RUNNER_TOKEN",
            help="A runner token minted for the team (checked by connecting once); "
            "`-` reads it from standard input.",
        ),
    ] = None,
    email: Annotated[
        str | None,
        typer.Option("--email", metavar="EMAIL", help="Sign in and mint a runner token."),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from standard input."),
    ] = False,
    team: Annotated[
        str | None,
        typer.Option("--team", metavar="SLUG", help="The team to join (with --email)."),
    ] = None,
) -> None:
    """Pair this runner with a team cloud: `coro start` then runs in hybrid mode."""
    from pydantic import ValidationError

    from coro.config import CloudConfig, ConfigError, CoroHome

    if (token is None) == (email is None):
        report_error("give either --token RUNNER_TOKEN or --email EMAIL")
        raise typer.Exit(2)
    if token is not None and (team is not None or password_stdin):
        report_error("--team and --password-stdin go with --email")
        raise typer.Exit(2)
    try:
        url = CloudConfig(url=cloud_url).url
    except ValidationError:
        report_error("--cloud-url must be an http:// or https:// URL without a query")
        raise typer.Exit(2) from None
    assert url is not None
    home = CoroHome.from_env()
    try:
        config = home.load_config()
    except ConfigError as exc:
        report_error(str(exc))
        raise typer.Exit(1) from None
    try:
        if token is not None:
            # `-`: from standard input (a token on the command line shows in `ps`)
            runner_token = (sys.stdin.readline() if token == "-" else token).strip()
            if not runner_token:
                raise LoginFailed("no runner token given")
            cloud_dir = home.root / "cloud"
            team_name = _check_token(url, runner_token, cloud_dir, config.cloud.runner_id)
        else:
            assert email is not None
            password = _password(password_stdin)
            runner_token, team_name = _mint(url, email, password, team)
    except LoginFailed as exc:
        report_error(str(exc))
        raise typer.Exit(1) from None
    cloud = CloudConfig(url=url, token=runner_token, runner_id=config.cloud.runner_id)
    home.save_config(config.model_copy(update={"cloud": cloud}))
    typer.echo(f"Paired with {url}: team {team_name}.")
    typer.echo(f"The runner token is saved in {home.config_file} (cloud.token).")
    typer.echo("Start the runner with `coro start`: it runs in hybrid mode.")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    if not password:
        raise LoginFailed("no password given")
    return password


def _check_token(url: str, token: str, cloud_dir: Path, runner_id: str | None) -> str:
    """Connect once with the token; the team's name."""
    from websockets.exceptions import InvalidHandshake

    from coro.state.cloud.link import LinkClosed, LinkRefused, probe

    try:
        registered = asyncio.run(probe(url, token, cloud_dir=cloud_dir, runner_id=runner_id))
    except LinkRefused as exc:
        raise LoginFailed(f"the cloud refused the runner: {exc}") from None
    except (OSError, TimeoutError, InvalidHandshake, LinkClosed) as exc:
        raise LoginFailed(f"cannot reach the cloud at {url}: {_reason(exc)}") from None
    return registered.team_name or registered.team_id


def _mint(url: str, email: str, password: str, team: str | None) -> tuple[str, str]:
    """Sign in, pick (or make) the team, mint a runner token: the token and team name."""
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_SECONDS) as client:
        signed_in = _post(client, "/auth/login", {"email": email, "password": password}, None)
        access = str(signed_in["accessToken"])
        teams = _get(client, "/teams", access)
        if not isinstance(teams, list):
            raise LoginFailed("the cloud's team list is not a list")
        chosen: dict[str, Any]
        if team is not None:
            matching = [t for t in teams if t.get("slug") == team]
            if not matching:
                slugs = ", ".join(str(t.get("slug")) for t in teams) or "none"
                raise LoginFailed(f"you are not in a team {team!r} (your teams: {slugs})")
            chosen = matching[0]
        elif len(teams) == 1:
            chosen = teams[0]
        elif teams:
            slugs = ", ".join(str(t.get("slug")) for t in teams)
            raise LoginFailed(f"you are in several teams: pick one with --team ({slugs})")
        else:
            user = signed_in.get("user") or {}
            chosen = _create_team(client, access, str(user.get("name") or email.split("@")[0]))
            # the access token was issued before the team existed: a fresh one names it
            refreshed = _post(
                client, "/auth/refresh", {"refreshToken": signed_in["refreshToken"]}, None
            )
            access = str(refreshed["accessToken"])
        name = f"runner-{socket.gethostname()}"[:200]
        minted = _post(client, f"/teams/{chosen['id']}/runner-tokens", {"name": name}, access)
        return str(minted["token"]), str(chosen.get("name") or chosen.get("slug"))


def _create_team(client: httpx.Client, access: str, user_name: str) -> dict[str, Any]:
    base = re.sub(r"[^a-z0-9]+", "-", user_name.lower()).strip("-")[:40].strip("-") or "team"
    name = f"{user_name}'s team"[:200]
    for attempt in range(5):
        slug = base if attempt == 0 else f"{base}-{secrets.token_hex(3)}"
        try:
            created = _post(client, "/teams", {"name": name, "slug": slug}, access)
        except _Status as exc:
            if exc.status == 409:
                continue  # the slug is taken: another one
            raise LoginFailed(f"creating a team failed: {exc}") from None
        return dict(created)
    raise LoginFailed("creating a team failed: no free slug found")


class _Status(LoginFailed):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _post(client: httpx.Client, path: str, body: dict[str, Any], access: str | None) -> Any:
    return _call(client, "POST", path, body, access)


def _get(client: httpx.Client, path: str, access: str) -> Any:
    return _call(client, "GET", path, None, access)


def _call(
    client: httpx.Client, method: str, path: str, body: dict[str, Any] | None, access: str | None
) -> Any:
    headers = {"Authorization": f"Bearer {access}"} if access else {}
    try:
        response = client.request(method, path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise LoginFailed(f"cannot reach the cloud at {client.base_url}: {_reason(exc)}") from None
    if response.status_code < 400:
        try:
            return response.json()
        except ValueError:
            raise LoginFailed(f"{method} {path}: the cloud's answer is not JSON") from None
    if path == "/auth/login" and response.status_code == 401:
        raise LoginFailed("wrong email or password")
    if response.status_code == 429:
        raise LoginFailed("too many attempts: wait a little and try again")
    try:
        message = str(response.json().get("error") or "")
    except (ValueError, AttributeError):
        message = ""
    raise _Status(
        response.status_code,
        f"{method} {path} failed (HTTP {response.status_code}){': ' + message if message else ''}",
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
