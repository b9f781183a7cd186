"""The cloud's request and response bodies: camelCase on the wire, bounded inputs.

Request bodies refuse unknown fields (`coro.api.schemas.Body`). Validation messages
name the failing field and rule, never the value sent (which may be a password).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from coro.api.schemas import Body
from coro.cloud.passwords import MAX_PASSWORD, MIN_PASSWORD
from coro.cloud.tokens import MAX_OPAQUE_LENGTH
from coro.config.section import SPACE

# --------------------------------------------------------------------------- inputs

_NOT_IN_ADDRESS = rf"{SPACE}\x00-\x1f\x7f"
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=254,
        pattern=rf"^[^@{_NOT_IN_ADDRESS}]+@[^@{_NOT_IN_ADDRESS}]+\.[^@{_NOT_IN_ADDRESS}]+$",
    ),
]
#: No control characters (PostgreSQL text cannot even hold NUL).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=PRINTABLE),
]
Password = Annotated[str, Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
Slug = Annotated[
    str, StringConstraints(max_length=63, pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
]
Role = Literal["admin", "member"]
OpaqueToken = Annotated[str, Field(min_length=1, max_length=MAX_OPAQUE_LENGTH)]
#: Plugin ids as the runner names them (`github`, `bitbucket`, `jira`, drop-ins).
PLUGIN_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"


def _password_has_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be only whitespace")
    return value


class SignupBody(Body):
    email: Email
    name: Name
    password: Annotated[Password, AfterValidator(_password_has_text)]


class LoginBody(Body):
    email: Email
    # any length up to the maximum: a login never says what the rules are
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD)]


class RefreshBody(Body):
    refresh_token: OpaqueToken


class CreateTeamBody(Body):
    name: Name
    slug: Slug


class UpdateTeamBody(Body):
    name: Name | None = None
    slug: Slug | None = None


class AddMemberBody(Body):
    email: Email
    role: Role = "member"


class RoleBody(Body):
    role: Role


class CreateRunnerTokenBody(Body):
    name: Name


class WebhookSecretBody(Body):
    # a short secret would make forged webhooks guessable
    secret: Annotated[str, Field(min_length=16, max_length=1024, pattern=PRINTABLE)]


# --------------------------------------------------------------------------- outputs


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Issue(Wire):
    path: str
    message: str


class ErrorBody(Wire):
    """Every error: a message, and for invalid requests the failing fields."""

    error: str
    issues: list[Issue] | None = None


class HealthOut(Wire):
    status: Literal["ok", "unavailable"]
    version: str
    database: Literal["ok", "unreachable"]
    error: str | None = Field(default=None, description="Why the cloud is unavailable")


class UserOut(Wire):
    id: str
    email: str
    name: str
    created_at: datetime


class TokensOut(Wire):
    access_token: str
    refresh_token: str
    expires_in: int = Field(description="Seconds until the access token expires")


class AuthOut(TokensOut):
    user: UserOut


class TeamOut(Wire):
    id: str
    name: str
    slug: str
    created_at: datetime
    updated_at: datetime
    role: Role = Field(description="The caller's role in the team")


class MeOut(Wire):
    user: UserOut
    teams: list[TeamOut]


class MemberOut(Wire):
    user_id: str
    email: str
    name: str
    role: Role
    joined_at: datetime


class TeamDetailOut(TeamOut):
    members: list[MemberOut]


class RunnerTokenOut(Wire):
    id: str
    name: str
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class MintedRunnerTokenOut(RunnerTokenOut):
    token: str = Field(description="The secret, shown this once: store it now")


class WebhookSecretOut(Wire):
    plugin_id: str
    created_at: datetime
    updated_at: datetime
