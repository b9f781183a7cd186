"""`coro cloud` as a process: settings from the environment, refusing to start on bad
ones, migrations (`coro cloud migrate`, and at start), `/health`, `/openapi.json`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
from sqlalchemy import URL, make_url

from coro.cloud import migrate
from coro.cloud.db import Database
from coro.cloud.server import serve
from tests.cloud_helpers import JWT_SECRET, WAIT_LIMIT, Cloud, settings_for

pytest_plugins = ("tests.cloud_fixtures",)

REPO_ROOT = Path(__file__).resolve().parent.parent


def cloud_env(**values: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CORO_", "CLOUD_", "GITHUB_", "JWT_", "LOGIN_"))
        and k != "DATABASE_URL"
    }
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        **values,
    )
    return env


async def run_coro(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT_LIMIT):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def plain(url: URL) -> str:
    """The URL as a user writes it in DATABASE_URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def test_coro_cloud_migrates_serves_health_and_stops_on_sigterm(
    empty_db_url: URL,
) -> None:
    env = cloud_env(
        DATABASE_URL=plain(empty_db_url),
        JWT_SECRET=JWT_SECRET,
        CLOUD_HOST="127.0.0.1",
        CLOUD_PORT="0",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        "cloud",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(WAIT_LIMIT):
            while True:
                raw = await proc.stdout.readline()
                assert raw, "coro cloud exited early:\n" + "".join(seen)
                seen.append(raw.decode())
                if raw.startswith(b"Coro cloud listening on "):
                    url = raw.decode().rsplit(" ", 1)[1].strip()
                    break
        async with httpx.AsyncClient(base_url=url) as client:
            health = await client.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "ok"
            assert health.json()["database"] == "ok"
            signup = await client.post(
                "/auth/signup",
                json={"email": "ops@example.com", "name": "Ops", "password": "a long password"},
            )
            assert signup.status_code == 201, signup.text
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT_LIMIT):
            rest = (await proc.stdout.read()).decode()
            code = await proc.wait()
        output = "".join(seen) + rest
        assert code == 0, output
        assert "Coro cloud stopped." in rest
        # the request log names paths and statuses, and never a secret
        assert "POST /auth/signup 201" in output
        assert JWT_SECRET not in output
        assert "a long password" not in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    db = Database(empty_db_url)
    try:
        assert await migrate.current_revision(db) == migrate.head_revision()
    finally:
        await db.close()


async def test_a_short_jwt_secret_refuses_to_start(empty_db_url: URL) -> None:
    short = "only-twenty-chars-xx"
    code, out, err = await run_coro(
        "cloud", env=cloud_env(DATABASE_URL=plain(empty_db_url), JWT_SECRET=short)
    )
    assert code == 2, (out, err)
    assert "JWT_SECRET is too short: 20 characters, at least 32 are required" in err
    assert "refusing to start" in err
    assert short not in out + err


async def test_missing_settings_are_all_named(tmp_path: Path) -> None:
    code, _, err = await run_coro("cloud", env=cloud_env(CLOUD_PORT="http"))
    assert code == 2
    assert "DATABASE_URL is required" in err
    assert "JWT_SECRET is required" in err
    assert "CLOUD_PORT must be a whole number" in err


async def test_an_unreachable_database_fails_without_showing_its_password() -> None:
    # nothing listens on port 1
    env = cloud_env(
        DATABASE_URL="postgresql://coro:hunter2-secret@127.0.0.1:1/coro", JWT_SECRET=JWT_SECRET
    )
    code, out, err = await run_coro("cloud", env=env)
    assert code == 1, (out, err)
    assert "cannot reach the database" in err
    assert "hunter2" not in out + err


async def test_coro_cloud_migrate_creates_the_schema_once(empty_db_url: URL) -> None:
    env = cloud_env(DATABASE_URL=plain(empty_db_url), JWT_SECRET=JWT_SECRET)
    code, out, err = await run_coro("cloud", "migrate", env=env)
    assert code == 0, err
    assert f"Cloud database at revision {migrate.head_revision()}." in out
    again = await run_coro("cloud", "migrate", env=env)
    assert again[0] == 0
    assert f"revision {migrate.head_revision()}" in again[1]


async def test_concurrent_migrations_apply_once(empty_db_url: URL) -> None:
    dbs = [Database(empty_db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate.upgrade(db) for db in dbs))
        assert await migrate.current_revision(dbs[0]) == migrate.head_revision()
    finally:
        for db in dbs:
            await db.close()


async def test_health_is_503_and_routes_are_503_json_when_the_database_is_down() -> None:
    settings = settings_for(make_url("postgresql+asyncpg://postgres@127.0.0.1:1/nothing"))
    async with (
        serve(settings, migrations=False) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["database"] == "unreachable"
        assert health.json()["error"] == "Database unreachable"
        signup = await client.post(
            "/auth/signup",
            json={"email": "a@example.com", "name": "A", "password": "a long password"},
        )
        assert signup.status_code == 503
        assert signup.json() == {"error": "Database unavailable; try again shortly"}


async def test_openapi_declares_models_and_error_responses(cloud: Cloud) -> None:
    response = await cloud.client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    paths = doc["paths"]
    for path in (
        "/health",
        "/auth/signup",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/auth/me",
        "/auth/github/start",
        "/auth/github/callback",
        "/teams",
        "/teams/{team_id}",
        "/teams/{team_id}/members",
        "/teams/{team_id}/members/{user_id}",
        "/teams/{team_id}/runner-tokens",
        "/teams/{team_id}/runner-tokens/{token_id}",
        "/teams/{team_id}/webhooks",
        "/teams/{team_id}/webhooks/{plugin_id}",
    ):
        assert path in paths, path
    text = response.text
    assert '"422"' not in text and "HTTPValidationError" not in text
    signup = paths["/auth/signup"]["post"]["responses"]
    assert signup["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AuthOut"
    }
    assert signup["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    mint = paths["/teams/{team_id}/runner-tokens"]["post"]["responses"]
    assert {"201", "400", "401", "403", "404"} <= set(mint)
    assert paths["/health"]["get"]["responses"]["503"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert paths["/auth/me"]["get"]["security"] == [{"HTTPBearer": []}]
    schemas = doc["components"]["schemas"]
    assert "password" not in schemas["UserOut"]["properties"]
    assert set(schemas["RunnerTokenOut"]["properties"]) == {
        "id",
        "name",
        "createdBy",
        "createdAt",
        "lastUsedAt",
        "revokedAt",
    }
