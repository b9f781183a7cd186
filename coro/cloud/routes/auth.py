"""`/auth/*`: sign-up, login, refresh (rotating), logout, the caller, GitHub login."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from coro.cloud.auth import Issued
from coro.cloud.deps import PrincipalDep, ServicesDep, errors
from coro.cloud.errors import NotFound, Unauthorized
from coro.cloud.github import STATE_COOKIE, STATE_TTL_SECONDS, GitHubLogin
from coro.cloud.models import (
    AuthOut,
    LoginBody,
    MeOut,
    RefreshBody,
    SignupBody,
    TeamOut,
    TokensOut,
    UserOut,
)

router = APIRouter(prefix="/auth", tags=["auth"])

COOKIE_PATH = "/auth/github"


def _auth_out(issued: Issued) -> AuthOut:
    return AuthOut(
        user=UserOut.model_validate(issued.user, from_attributes=True),
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )


@router.post(
    "/signup", status_code=201, response_model=AuthOut, responses=errors(400, 409, 413, 429)
)
async def signup(body: SignupBody, request: Request, found: ServicesDep) -> AuthOut:
    address = request.client.host if request.client else None
    return _auth_out(await found.auth.signup(body.email, body.name, body.password, address))


@router.post("/login", response_model=AuthOut, responses=errors(400, 401, 413, 429))
async def login(body: LoginBody, request: Request, found: ServicesDep) -> AuthOut:
    address = request.client.host if request.client else None
    return _auth_out(await found.auth.login(body.email, body.password, address))


@router.post("/refresh", response_model=TokensOut, responses=errors(400, 401, 413))
async def refresh(body: RefreshBody, found: ServicesDep) -> TokensOut:
    issued = await found.auth.refresh(body.refresh_token)
    return TokensOut(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )


@router.post("/logout", status_code=204, responses=errors(400, 413))
async def logout(body: RefreshBody, found: ServicesDep) -> Response:
    """End the session of this refresh token: it and the session's access tokens stop
    working at once."""
    await found.auth.logout(body.refresh_token)
    return Response(status_code=204)


@router.get("/me", response_model=MeOut, responses=errors(401))
async def me(caller: PrincipalDep, found: ServicesDep) -> MeOut:
    teams = await found.teams.list_for(caller.user.id)
    return MeOut(
        user=UserOut.model_validate(caller.user, from_attributes=True),
        teams=[TeamOut.model_validate(t, from_attributes=True) for t in teams],
    )


# --------------------------------------------------------------------------- GitHub


def _github(found: ServicesDep) -> GitHubLogin:
    if found.github is None:
        raise NotFound("GitHub sign-in is not configured on this cloud")
    return found.github


def _callback_url(request: Request, found: ServicesDep) -> str:
    base = found.settings.public_url
    if base is not None:
        return f"{base}/auth/github/callback"
    return str(request.url_for("github_callback"))


@router.get(
    "/github/start",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "To GitHub's authorize page"}, **errors(404)},
)
async def github_start(request: Request, found: ServicesDep) -> RedirectResponse:
    started = _github(found).start(_callback_url(request, found))
    response = RedirectResponse(started.authorize_url, status_code=302)
    response.set_cookie(
        STATE_COOKIE,
        started.cookie,
        max_age=STATE_TTL_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=_callback_url(request, found).startswith("https://"),
    )
    return response


@router.get(
    "/github/callback",
    name="github_callback",
    response_model=AuthOut,
    responses=errors(400, 401, 404, 409, 502),
)
async def github_callback(
    request: Request,
    found: ServicesDep,
    code: Annotated[str | None, Query(max_length=512)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> JSONResponse:
    """GitHub sends the browser here; answers the tokens of the signed-in account."""
    github = _github(found)
    if error is not None or code is None or state is None:
        raise Unauthorized("GitHub sign-in was cancelled or refused")
    issued = await github.finish(
        code=code,
        state=state,
        cookie=request.cookies.get(STATE_COOKIE),
        redirect_uri=_callback_url(request, found),
    )
    response = JSONResponse(_auth_out(issued).model_dump(mode="json", by_alias=True))
    response.delete_cookie(STATE_COOKIE, path=COOKIE_PATH)
    return response
