"""config.json: defaults, validation with paths, atomic private writes."""

from __future__ import annotations

import json
import stat

import pytest

from coro.api.server import check_bind
from coro.config import ConfigError, CoroConfig, CoroHome


def test_missing_config_means_defaults(home: CoroHome) -> None:
    config = home.load_config()
    assert config.host == "127.0.0.1"
    assert config.port == 3000
    assert config.jobs.max_concurrent == 4
    assert config.jobs.completion_gate_max_retries == 5


def test_invalid_config_names_the_failing_paths(home: CoroHome) -> None:
    home.config_file.write_text(json.dumps({"jobs": {"maxConcurrent": 0}, "colour": "blue"}))
    with pytest.raises(ConfigError) as info:
        home.load_config()
    paths = {issue["path"] for issue in info.value.issues}
    assert paths == {"jobs.maxConcurrent", "colour"}


def test_malformed_json_reports_the_line(home: CoroHome) -> None:
    home.config_file.write_text('{\n  "port": 3000,\n  oops\n}')
    with pytest.raises(ConfigError, match="line 3"):
        home.load_config()


def test_saved_config_is_private_and_round_trips(home: CoroHome) -> None:
    config = CoroConfig.model_validate({"apiToken": "a" * 32, "jobs": {"maxConcurrent": 2}})
    home.save_config(config)
    assert stat.S_IMODE(home.config_file.stat().st_mode) == 0o600
    assert home.load_config() == config


def test_binding_beyond_loopback_requires_a_token() -> None:
    with pytest.raises(SystemExit, match="apiToken"):
        check_bind("0.0.0.0", CoroConfig())
    check_bind("0.0.0.0", CoroConfig(api_token="b" * 32))
    check_bind("127.0.0.1", CoroConfig())
