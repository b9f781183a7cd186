"""The one classifier of Anthropic API errors, for both vocabularies it reads: the API's
(HTTP status and `error.type`, the `anthropic` executor) and Claude Code's (the status
and `AssistantMessage.error`). The executors' tests check the errors end to end."""

from __future__ import annotations

import pytest

from coro.executors.anthropic_errors import AnthropicErrors, ApiProblem, KeyScrubber, classify
from coro.executors.base import ContextOverflow, ExecutorError, RateLimited


@pytest.mark.parametrize(
    ("status", "error_type", "said", "problem"),
    [
        (429, "rate_limit_error", "slow down", "rate-limit"),
        (None, "rate_limit", "", "rate-limit"),
        (529, "overloaded_error", "Overloaded", "overloaded"),
        (200, "overloaded_error", "Overloaded", "overloaded"),  # mid-stream error event
        (502, None, "bad gateway", "overloaded"),
        (None, "server_error", "", "overloaded"),
        (401, "authentication_error", "invalid x-api-key", "rejected-key"),
        (None, "authentication_failed", "", "rejected-key"),
        (403, "permission_error", "not allowed", "refused"),
        (None, "billing_error", "credit balance too low", "refused"),
        (404, "not_found_error", "model: claude-nope", "unknown-model"),
        (413, "request_too_large", "Request exceeds the maximum size", "context-overflow"),
        (400, "invalid_request_error", "prompt is too long: 210000 tokens", "context-overflow"),
        (400, "invalid_request_error", "tools.0.name: String should match", "rejected"),
        (None, "invalid_request", "", "rejected"),
        (None, "unknown", "prompt is too long", None),  # not said by the API
        (None, None, "exceeds the maximum", None),
    ],
)
def test_statuses_and_error_types_map_to_one_problem(
    status: int | None, error_type: str | None, said: str, problem: str | None
) -> None:
    assert classify(status, error_type, said) == problem


def test_each_problem_becomes_the_error_that_parks_or_escalates_the_job() -> None:
    errors = AnthropicErrors(
        provider="anthropic", key_rejected="Anthropic rejected the API key", key_hint="Check it."
    )

    def error(problem: ApiProblem, gave_up: str = "") -> ExecutorError:
        message = errors.describe(problem, label="L", said="said", model="m")
        return errors.error(problem, message, wait=7, gave_up=gave_up)

    limited = error("rate-limit")
    assert isinstance(limited, RateLimited) and limited.retry_after == 7
    assert limited.kind == "rate-limit" and limited.provider == "anthropic"
    overloaded = error("overloaded", "gave up after 3 attempts")
    assert isinstance(overloaded, RateLimited) and overloaded.kind == "overloaded"
    assert str(overloaded).endswith("— gave up after 3 attempts")
    assert isinstance(error("context-overflow"), ContextOverflow)
    escalating: tuple[ApiProblem, ...] = ("rejected-key", "refused", "unknown-model", "rejected")
    for problem in escalating:
        escalated = error(problem)
        assert escalated.escalate and not isinstance(escalated, RateLimited | ContextOverflow)
    assert str(error("rejected-key")) == "Anthropic rejected the API key (L): said. Check it."


def test_the_key_and_anything_shaped_like_one_are_scrubbed() -> None:
    scrub = KeyScrubber("my-configured-key")
    assert scrub("my-configured-key and sk-ant-api03-abcdef") == "*** and sk-ant-***"
    assert KeyScrubber(None)("nothing sk-ant-xyz12345 here") == "nothing sk-ant-*** here"
