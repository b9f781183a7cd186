"""What an error of the Anthropic API means for a job, for every executor that calls it:
`anthropic` (the SDK's `APIStatusError`: HTTP status and error type) and `claude-code`
(the CLI's result: the API's status and Claude Code's own name for the error).

- 429 / a rate-limit error → `RateLimited`: the job parks for the wait the caller read
  (`retry-after` and the `anthropic-ratelimit-*-reset` headers, `retry_after_seconds`);
- 5xx, `overloaded_error`, `api_error` → overloaded: retried (by the executor or the
  CLI), then `RateLimited(kind="overloaded")`;
- 401 → a rejected key, 403 → refused (permission, billing), 404 → an unknown model,
  413 or a "prompt is too long" → `ContextOverflow`, any other status → rejected: all
  escalate, as only a developer can fix them.

Every text that leaves here is scrubbed of the API key (and anything shaped like one).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import anthropic
import httpx2

from coro.executors.base import ContextOverflow, ExecutorError, RateLimited
from coro.plugins.http import Scrubber, parse_retry_after

#: How long a job parks when the API stayed overloaded through the retries.
OVERLOADED_PARK_SECONDS = 30.0
#: A 429 without `retry-after` or `anthropic-ratelimit-*-reset` headers.
RATE_LIMIT_FALLBACK_SECONDS = 30.0
RATE_LIMIT_MAX_SECONDS = 3600.0

ApiProblem = Literal[
    "rate-limit",
    "overloaded",
    "rejected-key",
    "refused",
    "unknown-model",
    "context-overflow",
    "rejected",
]

#: the API's error types (`error.type`) and Claude Code's names for them
#: (`AssistantMessage.error`)
_BY_TYPE: dict[str, ApiProblem] = {
    "rate_limit_error": "rate-limit",
    "rate_limit": "rate-limit",
    "overloaded_error": "overloaded",
    "api_error": "overloaded",
    "server_error": "overloaded",
    "authentication_error": "rejected-key",
    "authentication_failed": "rejected-key",
    "permission_error": "refused",
    "billing_error": "refused",
    "not_found_error": "unknown-model",
    "request_too_large": "context-overflow",
    "invalid_request_error": "rejected",
    "invalid_request": "rejected",
}
_STATUS: dict[int, ApiProblem] = {
    429: "rate-limit",
    401: "rejected-key",
    403: "refused",
    404: "unknown-model",
    413: "context-overflow",
}
_CONTEXT_OVERFLOW = re.compile(
    r"prompt is too long|context (window|length)|too many (input )?tokens|"
    r"exceeds? (the )?(maximum|context)|input length",
    re.IGNORECASE,
)
_KEY_SHAPE = re.compile(r"sk-ant-[A-Za-z0-9_\-]{4,}")


def classify(status: int | None, error_type: str | None, said: str) -> ApiProblem | None:
    """The problem an API error stands for; None when neither its status nor its type
    say it came from the API."""
    by_type = _BY_TYPE.get(error_type or "")
    if status is None and by_type is None:
        return None
    if status == 429 or by_type == "rate-limit":
        return "rate-limit"
    if (status is not None and status >= 500) or by_type == "overloaded":
        return "overloaded"
    problem = _STATUS.get(status or 0) or by_type
    if problem in (None, "rejected") and _CONTEXT_OVERFLOW.search(said):
        return "context-overflow"
    return problem or "rejected"


@dataclass(frozen=True)
class AnthropicErrors:
    """How one executor reports the API's errors: `provider` of its `RateLimited`, how
    it says that its key was refused (`key_rejected`) and where the key is configured
    (`key_hint`)."""

    provider: str
    key_rejected: str
    key_hint: str

    def describe(self, problem: ApiProblem, *, label: str, said: str, model: str) -> str:
        """A sentence a developer can act on; `label` names the error ("401 …"), `said`
        is the API's (scrubbed) message."""
        if problem == "rate-limit":
            return f"Anthropic rate limit ({label}): {said}"
        if problem == "overloaded":
            return f"Anthropic is overloaded or failing ({label}): {said}"
        if problem == "rejected-key":
            return f"{self.key_rejected} ({label}): {said}. {self.key_hint}"
        if problem == "refused":
            return (
                f"The Anthropic API refused the request ({label}): {said}. Check the "
                f"account's billing and that this API key may use model {model}."
            )
        if problem == "unknown-model":
            return (
                f"The Anthropic API does not know the model {model!r} ({label}): {said}. "
                "Check the phase's model, the llm aliases or the plugin's defaultModel."
            )
        if problem == "context-overflow":
            return (
                f"The conversation is too long for model {model} ({label}): {said}. Start a "
                "new session for this phase or use a model with a larger context window."
            )
        return f"The Anthropic API rejected the request ({label}): {said}"

    def error(
        self, problem: ApiProblem, message: str, *, wait: float, gave_up: str = ""
    ) -> ExecutorError:
        """The error that makes the job do the right thing with `problem` (`message`:
        its `describe`): `wait` is a rate limit's, `gave_up` says how the retries of an
        overload ended."""
        if problem == "rate-limit":
            return RateLimited(message, retry_after=wait, provider=self.provider)
        if problem == "overloaded":
            return self.overloaded(message, gave_up)
        if problem == "context-overflow":
            return ContextOverflow(message)
        return ExecutorError(message, escalate=True)

    def overloaded(self, summary: str, gave_up: str) -> RateLimited:
        """The API stayed overloaded (or out of reach) through the retries: park a while."""
        return RateLimited(
            f"{summary} — {gave_up}" if gave_up else summary,
            retry_after=OVERLOADED_PARK_SECONDS,
            provider=self.provider,
            kind="overloaded",
        )

    def key_check_problem(self, exc: Exception, where: str, scrub: Callable[[str], str]) -> str:
        """Why a healthcheck's API request (`GET /v1/models`) failed, as a clause."""
        if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
            cause = exc.__cause__ or exc.__context__
            detail = scrub(str(cause or exc)) or type(exc).__name__
            return f"the Anthropic API at {where} cannot be reached: {detail}"
        if isinstance(exc, anthropic.APIStatusError):
            said = scrub(exc.api_message or str(exc))
            if exc.status_code == 401:
                return f"the Anthropic API rejected the API key (401): {said}. {self.key_hint}"
            if exc.status_code == 403:
                return f"the Anthropic API refused the API key (403): {said}"
            return f"the Anthropic API at {where} answered {exc.status_code}: {said}"
        return f"the Anthropic API check failed: {scrub(str(exc))}"


class KeyScrubber:
    """Takes the configured API key (raw and percent-encoded) and anything shaped like an
    Anthropic key out of a text."""

    def __init__(self, api_key: str | None) -> None:
        self._scrubber = Scrubber([api_key] if api_key else [], min_length=1)

    def __call__(self, text: str) -> str:
        return _KEY_SHAPE.sub("sk-ant-***", self._scrubber.scrub(text))


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float:
    """Seconds to wait after a 429: `retry-after` (seconds or an HTTP date), else the
    latest `anthropic-ratelimit-*-reset` time, else a default."""
    now = time.time() if now is None else now
    seconds = parse_retry_after(headers.get("retry-after"), now)
    if seconds is not None:
        return _clamp(seconds)
    resets = []
    for name in ("requests", "tokens", "input-tokens", "output-tokens"):
        value = headers.get(f"anthropic-ratelimit-{name}-reset")
        if not value:
            continue
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        resets.append(moment.timestamp() - now)
    if resets and max(resets) > 0:
        return _clamp(max(resets))
    return RATE_LIMIT_FALLBACK_SECONDS


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), RATE_LIMIT_MAX_SECONDS)
