"""The cloud's errors: each one is an HTTP status and a message safe to show.

Services raise them; the app turns them into `{"error": message}` with the status.
"""

from __future__ import annotations


class CloudError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(CloudError):
    status = 400


class Unauthorized(CloudError):
    status = 401


class Forbidden(CloudError):
    status = 403


class NotFound(CloudError):
    status = 404


class Conflict(CloudError):
    status = 409


class TooManyRequests(CloudError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadGateway(CloudError):
    status = 502
