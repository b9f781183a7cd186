"""The cloud's settings from the environment: defaults, validation, secrets kept out."""

from __future__ import annotations

import pytest

from coro.cloud.settings import CloudSettings, SettingsError

SECRET = "s" * 32
DB = "postgresql://coro:pa55word@db.internal:5432/coro"


def test_defaults_and_the_url_made_async() -> None:
    settings = CloudSettings.from_env({"DATABASE_URL": DB, "JWT_SECRET": SECRET})
    assert settings.host == "0.0.0.0"
    assert settings.port == 4000
    assert settings.database_url.drivername == "postgresql+asyncpg"
    assert settings.database_url.database == "coro"
    assert settings.redis_url is None
    assert settings.github is None
    assert settings.access_ttl_seconds == 900
    assert settings.throttle.max_account_failures == 10
    # the repr is safe to log
    shown = repr(settings)
    assert SECRET not in shown
    assert "pa55word" not in shown


def test_every_setting_is_read() -> None:
    settings = CloudSettings.from_env(
        {
            "DATABASE_URL": "postgres://db/coro",
            "JWT_SECRET": SECRET,
            "CLOUD_HOST": "127.0.0.1",
            "CLOUD_PORT": "4100",
            "CLOUD_PUBLIC_URL": "https://cloud.example.com/",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "JWT_ACCESS_TTL_SECONDS": "300",
            "LOGIN_MAX_FAILURES_PER_IP": "7",
            "SIGNUPS_MAX_PER_IP": "5",
            "GITHUB_CLIENT_ID": "Iv1.abc",
            "GITHUB_CLIENT_SECRET": "client-secret",
            "GITHUB_API_URL": "https://ghe.example.com/api/v3",
        }
    )
    assert (settings.host, settings.port) == ("127.0.0.1", 4100)
    assert settings.public_url == "https://cloud.example.com"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.access_ttl_seconds == 300
    assert settings.throttle.max_ip_failures == 7
    assert settings.throttle.max_ip_signups == 5
    assert settings.github is not None
    assert settings.github.api_url == "https://ghe.example.com/api/v3"
    assert settings.github.authorize_url == "https://github.com/login/oauth/authorize"
    assert "client-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"JWT_SECRET": SECRET}, "DATABASE_URL is required"),
        ({"DATABASE_URL": "mysql://db/coro", "JWT_SECRET": SECRET}, "must be a postgresql://"),
        ({"DATABASE_URL": "postgresql://db", "JWT_SECRET": SECRET}, "needs a database name"),
        ({"DATABASE_URL": DB}, "JWT_SECRET is required"),
        ({"DATABASE_URL": DB, "JWT_SECRET": "x" * 31}, "JWT_SECRET is too short"),
        ({"DATABASE_URL": DB, "JWT_SECRET": SECRET, "CLOUD_PORT": "70000"}, "CLOUD_PORT"),
        ({"DATABASE_URL": DB, "JWT_SECRET": SECRET, "REDIS_URL": "http://x"}, "REDIS_URL"),
        (
            {"DATABASE_URL": DB, "JWT_SECRET": SECRET, "GITHUB_CLIENT_ID": "Iv1.abc"},
            "go together",
        ),
        (
            {"DATABASE_URL": DB, "JWT_SECRET": SECRET, "CLOUD_PUBLIC_URL": "cloud.example.com"},
            "CLOUD_PUBLIC_URL must be an http(s) URL",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        CloudSettings.from_env(env)
    assert problem in str(raised.value)
    assert "pa55word" not in str(raised.value)
    assert SECRET not in str(raised.value)
