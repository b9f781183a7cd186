"""The cloud's accounts and sessions (SPEC §3): sign-up, login, rotating refresh tokens,
logout, `/auth/me`, login throttling, password storage, GitHub sign-in."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
import pytest

from coro.cloud.settings import GitHubOAuth, LoginThrottle
from tests.cloud_helpers import JWT_SECRET, PASSWORD, Cloud, CloudFactory
from tests.fakes.github_oauth_server import GitHubOAuthServer, GitHubUser

pytest_plugins = ("tests.cloud_fixtures",)


def claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, JWT_SECRET, algorithms=["HS256"], issuer="coro-cloud"))


async def test_signup_returns_the_user_and_tokens_that_work(cloud: Cloud) -> None:
    response = await cloud.client.post(
        "/auth/signup",
        json={"email": "  Ada@Example.COM ", "name": "Ada", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["name"] == "Ada"
    assert body["expiresIn"] == 900
    access = claims(body["accessToken"])
    assert access["sub"] == body["user"]["id"]
    assert access["type"] == "access"
    assert access["teamIds"] == []
    assert access["exp"] - access["iat"] == 900
    assert body["refreshToken"].startswith("coro_rf_")

    me = await cloud.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {body['accessToken']}"}
    )
    assert me.status_code == 200, me.text
    assert me.json()["user"]["id"] == body["user"]["id"]
    assert me.json()["teams"] == []


async def test_signup_twice_with_one_email_is_a_conflict(cloud: Cloud) -> None:
    await cloud.signup("grace@example.com")
    again = await cloud.client.post(
        "/auth/signup",
        json={"email": "GRACE@example.com", "name": "Imposter", "password": "another password"},
    )
    assert again.status_code == 409
    assert again.json() == {"error": "Email already registered"}


async def test_passwords_are_stored_as_argon2id_hashes(cloud: Cloud) -> None:
    account = await cloud.signup()
    (row,) = await cloud.rows("SELECT password_hash FROM users WHERE id = :id", id=account.id)
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]


INVALID_SIGNUPS: list[tuple[dict[str, Any], str]] = [
    ({"email": "a@example.com", "name": "A", "password": "short"}, "password"),
    ({"email": "a@example.com", "name": "A", "password": "x" * 257}, "password"),
    ({"email": "a@example.com", "name": "A", "password": " " * 12}, "password"),
    ({"email": "not-an-email", "name": "A", "password": PASSWORD}, "email"),
    ({"email": "a@example.com", "name": "", "password": PASSWORD}, "name"),
    ({"email": "a@example.com", "name": "A" * 201, "password": PASSWORD}, "name"),
    ({"email": "a@example.com", "password": PASSWORD}, "name"),
    ({"email": "a@example.com", "name": "A", "password": PASSWORD, "admin": True}, "admin"),
    ({"email": ["a@example.com"], "name": "A", "password": PASSWORD}, "email"),
    ({"email": "a@example.com", "name": "A\x00B", "password": PASSWORD}, "name"),
    ({"email": "a\x00@example.com", "name": "A", "password": PASSWORD}, "email"),
]


async def test_signup_refuses_invalid_bodies_naming_the_field_never_the_value(
    cloud: Cloud,
) -> None:
    for body, field in INVALID_SIGNUPS:
        response = await cloud.client.post("/auth/signup", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()
        assert [issue["path"] for issue in error["issues"]] == [field], body
        assert "short" not in response.text and "xxxxxxxx" not in response.text
    assert await cloud.rows("SELECT id FROM users") == []


async def test_malformed_and_oversized_bodies_are_4xx_json(cloud: Cloud) -> None:
    malformed = await cloud.client.post(
        "/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json() == {"error": "Malformed JSON body"}
    not_an_object = await cloud.client.post("/auth/login", json=[1, 2])
    assert not_an_object.status_code == 400
    assert "error" in not_an_object.json()
    huge = await cloud.client.post(
        "/auth/signup",
        content=b'{"email": "' + b"a" * 2_000_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413
    assert "error" in huge.json()
    unknown = await cloud.client.get("/auth/nothing-here")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "No route for GET /auth/nothing-here"}


async def test_login_with_the_right_password_and_not_with_a_wrong_one(cloud: Cloud) -> None:
    account = await cloud.signup()
    good = await cloud.client.post(
        "/auth/login", json={"email": account.email.upper(), "password": PASSWORD}
    )
    assert good.status_code == 200, good.text
    assert good.json()["user"]["id"] == account.id
    wrong = await cloud.client.post(
        "/auth/login", json={"email": account.email, "password": "not the password"}
    )
    unknown = await cloud.client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "Invalid credentials"}


async def test_refresh_rotates_and_the_old_token_no_longer_works(cloud: Cloud) -> None:
    account = await cloud.signup()
    first = await cloud.client.post("/auth/refresh", json={"refreshToken": account.refresh_token})
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["refreshToken"] != account.refresh_token
    assert claims(rotated["accessToken"])["sub"] == account.id
    me = await cloud.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {rotated['accessToken']}"}
    )
    assert me.status_code == 200

    second = await cloud.client.post(
        "/auth/refresh", json={"refreshToken": rotated["refreshToken"]}
    )
    assert second.status_code == 200, second.text


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_session(cloud: Cloud) -> None:
    account = await cloud.signup()
    rotated = (
        await cloud.client.post("/auth/refresh", json={"refreshToken": account.refresh_token})
    ).json()

    # an attacker replays the stolen, already exchanged token
    replay = await cloud.client.post("/auth/refresh", json={"refreshToken": account.refresh_token})
    assert replay.status_code == 401
    assert replay.json() == {"error": "Invalid or expired refresh token"}

    # the legitimate client's newer tokens are dead too: the family is revoked
    successor = await cloud.client.post(
        "/auth/refresh", json={"refreshToken": rotated["refreshToken"]}
    )
    assert successor.status_code == 401
    me = await cloud.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {rotated['accessToken']}"}
    )
    assert me.status_code == 401

    # other sessions of the same user are untouched
    login = await cloud.client.post(
        "/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert login.status_code == 200
    again = await cloud.client.post(
        "/auth/refresh", json={"refreshToken": login.json()["refreshToken"]}
    )
    assert again.status_code == 200


async def test_refresh_tokens_are_stored_hashed(cloud: Cloud) -> None:
    account = await cloud.signup()
    rows = await cloud.rows("SELECT * FROM refresh_tokens")
    assert rows
    assert account.refresh_token not in json.dumps(rows, default=str)


async def test_bogus_refresh_tokens_are_401_or_400(cloud: Cloud) -> None:
    for token in ("coro_rf_" + "A" * 43, "garbage", "eyJhbGciOiJIUzI1NiJ9.e30.x"):
        response = await cloud.client.post("/auth/refresh", json={"refreshToken": token})
        assert response.status_code == 401, token
    missing = await cloud.client.post("/auth/refresh", json={})
    assert missing.status_code == 400
    assert missing.json()["issues"][0]["path"] == "refreshToken"


async def test_logout_ends_the_session_at_once(cloud: Cloud) -> None:
    account = await cloud.signup()
    other = await cloud.client.post(
        "/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    out = await cloud.client.post("/auth/logout", json={"refreshToken": account.refresh_token})
    assert out.status_code == 204
    me = await cloud.client.get("/auth/me", headers=account.headers)
    assert me.status_code == 401
    assert me.headers["www-authenticate"] == "Bearer"
    refresh = await cloud.client.post("/auth/refresh", json={"refreshToken": account.refresh_token})
    assert refresh.status_code == 401
    # the other session goes on
    still = await cloud.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {other.json()['accessToken']}"}
    )
    assert still.status_code == 200
    # logging out again, or with an unknown token, says nothing either way
    again = await cloud.client.post("/auth/logout", json={"refreshToken": account.refresh_token})
    assert again.status_code == 204


async def test_me_without_a_valid_access_token_is_401(cloud: Cloud) -> None:
    forged = jwt.encode({"sub": "x", "type": "access"}, "wrong-secret-" * 4)
    for header in (None, "Basic dXNlcjpwYXNz", "Bearer not-a-jwt", f"Bearer {forged}"):
        headers = {"Authorization": header} if header else {}
        response = await cloud.client.get("/auth/me", headers=headers)
        assert response.status_code == 401, header
        assert set(response.json()) == {"error"}


async def test_an_expired_access_token_is_refused(cloud: Cloud) -> None:
    account = await cloud.signup()
    token = claims(account.access_token)
    expired = jwt.encode(
        {**token, "iat": token["iat"] - 3600, "exp": token["iat"] - 1800}, JWT_SECRET
    )
    response = await cloud.client.get("/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or expired token"}


async def test_failed_logins_are_throttled_per_account(cloud_factory: CloudFactory) -> None:
    async with cloud_factory(throttle=LoginThrottle(max_account_failures=3)) as cloud:
        account = await cloud.signup()
        bystander = await cloud.signup()
        for _ in range(3):
            wrong = await cloud.client.post(
                "/auth/login", json={"email": account.email, "password": "guess guess"}
            )
            assert wrong.status_code == 401
        # now even the right password waits: the account is locked for the window
        locked = await cloud.client.post(
            "/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert locked.status_code == 429
        assert "error" in locked.json()
        assert 0 < int(locked.headers["retry-after"]) <= 900
        # other accounts (from the same address) are unaffected
        other = await cloud.client.post(
            "/auth/login", json={"email": bystander.email, "password": PASSWORD}
        )
        assert other.status_code == 200


async def test_failed_logins_are_throttled_per_address(cloud_factory: CloudFactory) -> None:
    limits = LoginThrottle(max_account_failures=100, max_ip_failures=4)
    async with cloud_factory(throttle=limits) as cloud:
        account = await cloud.signup()
        for n in range(4):
            # a spray: a different account each time
            wrong = await cloud.client.post(
                "/auth/login", json={"email": f"victim{n}@example.com", "password": "guess"}
            )
            assert wrong.status_code == 401
        blocked = await cloud.client.post(
            "/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert blocked.status_code == 429


async def test_sign_ups_are_throttled_per_address(cloud_factory: CloudFactory) -> None:
    async with cloud_factory(throttle=LoginThrottle(max_ip_signups=3)) as cloud:
        first = await cloud.signup()
        taken = await cloud.client.post(
            "/auth/signup", json={"email": first.email, "name": "Again", "password": PASSWORD}
        )
        assert taken.status_code == 409  # an attempt counts, whatever its outcome
        await cloud.signup()
        flood = await cloud.client.post(
            "/auth/signup",
            json={"email": "fourth@example.com", "name": "Fourth", "password": PASSWORD},
        )
        assert flood.status_code == 429
        assert flood.json() == {"error": "Too many sign-ups from this address; try again later"}
        assert 0 < int(flood.headers["retry-after"]) <= 900
        # nothing was created, and the accounts made before still sign in
        refused = await cloud.client.post(
            "/auth/login", json={"email": "fourth@example.com", "password": PASSWORD}
        )
        assert refused.status_code == 401
        ok = await cloud.client.post(
            "/auth/login", json={"email": first.email, "password": PASSWORD}
        )
        assert ok.status_code == 200


async def test_a_successful_login_clears_the_account_count(cloud_factory: CloudFactory) -> None:
    async with cloud_factory(throttle=LoginThrottle(max_account_failures=3)) as cloud:
        account = await cloud.signup()
        for _ in range(2):
            await cloud.client.post(
                "/auth/login", json={"email": account.email, "password": "guess guess"}
            )
        ok = await cloud.client.post(
            "/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert ok.status_code == 200
        for _ in range(2):
            wrong = await cloud.client.post(
                "/auth/login", json={"email": account.email, "password": "guess guess"}
            )
            assert wrong.status_code == 401


async def test_responses_never_carry_the_password(cloud: Cloud) -> None:
    account = await cloud.signup()
    responses = [
        await cloud.client.post("/auth/login", json={"email": account.email, "password": PASSWORD}),
        await cloud.client.get("/auth/me", headers=account.headers),
    ]
    for response in responses:
        assert PASSWORD not in response.text
        assert "argon2" not in response.text


# --------------------------------------------------------------------------- GitHub

CLIENT_ID = "Iv1.fakeclient"
CLIENT_SECRET = "fake-client-secret-0123456789"


def github_settings(fake: GitHubOAuthServer) -> GitHubOAuth:
    return GitHubOAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        authorize_url=fake.authorize_url,
        token_url=fake.token_url,
        api_url=fake.root,
    )


async def github_sign_in(cloud: Cloud) -> httpx.Response:
    """The browser's trip: the cloud → GitHub's authorize page → back to the callback."""
    start = await cloud.client.get("/auth/github/start")
    assert start.status_code == 302, start.text
    async with httpx.AsyncClient() as browser:
        approved = await browser.get(start.headers["location"])
    assert approved.status_code == 302
    callback = httpx.URL(approved.headers["location"])
    assert callback.path == "/auth/github/callback"
    return await cloud.client.get(callback.path, params=dict(callback.params))


@pytest.fixture
async def github() -> Any:
    async with GitHubOAuthServer(CLIENT_ID, CLIENT_SECRET) as fake:
        yield fake


async def test_github_sign_in_creates_an_account_and_signs_in_again(
    cloud_factory: CloudFactory, github: GitHubOAuthServer
) -> None:
    async with cloud_factory(github=github_settings(github)) as cloud:
        first = await github_sign_in(cloud)
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["user"]["email"] == "octocat@example.com"
        assert body["user"]["name"] == "Octocat"
        me = await cloud.client.get(
            "/auth/me", headers={"Authorization": f"Bearer {body['accessToken']}"}
        )
        assert me.status_code == 200

        again = await github_sign_in(cloud)
        assert again.status_code == 200, again.text
        assert again.json()["user"]["id"] == body["user"]["id"]

        # the account has no password: password login is refused
        login = await cloud.client.post(
            "/auth/login", json={"email": "octocat@example.com", "password": PASSWORD}
        )
        assert login.status_code == 401

    # the real wire format: a form-encoded token request with the client's credentials
    # and the PKCE verifier, then the API with the access token
    (token_request,) = github.requests_to("/login/oauth/access_token")[:1]
    form = dict(httpx.QueryParams(token_request.raw.decode()))
    assert form["client_id"] == CLIENT_ID
    assert form["grant_type"] == "authorization_code"
    assert form["code_verifier"]
    (authorize,) = github.requests_to("/login/oauth/authorize")[:1]
    assert authorize.query["code_challenge_method"] == "S256"
    assert authorize.query["scope"] == "read:user user:email"


async def test_github_sign_in_links_an_existing_account_by_verified_email(
    cloud_factory: CloudFactory, github: GitHubOAuthServer
) -> None:
    async with cloud_factory(github=github_settings(github)) as cloud:
        account = await cloud.signup("mona@example.com")
        github.user = GitHubUser.with_email(2002, "mona", "Mona@Example.com")
        response = await github_sign_in(cloud)
        assert response.status_code == 200, response.text
        assert response.json()["user"]["id"] == account.id
        (row,) = await cloud.rows("SELECT github_id FROM users WHERE id = :id", id=account.id)
        assert row["github_id"] == 2002


async def test_github_sign_in_without_a_verified_email_is_refused(
    cloud_factory: CloudFactory, github: GitHubOAuthServer
) -> None:
    async with cloud_factory(github=github_settings(github)) as cloud:
        github.user = GitHubUser.with_email(3003, "nomail", "x@example.com", verified=False)
        response = await github_sign_in(cloud)
        assert response.status_code == 401
        assert "verified" in response.json()["error"]
        assert await cloud.rows("SELECT id FROM users") == []


async def test_github_sign_in_refuses_a_callback_the_browser_did_not_start(
    cloud_factory: CloudFactory, github: GitHubOAuthServer
) -> None:
    async with cloud_factory(github=github_settings(github)) as cloud:
        start = await cloud.client.get("/auth/github/start")
        async with httpx.AsyncClient() as browser:
            approved = await browser.get(start.headers["location"])
        callback = httpx.URL(approved.headers["location"])
        # another browser (no state cookie) presents the callback: login CSRF
        async with httpx.AsyncClient(base_url=cloud.served.url) as victim:
            forged = await victim.get(callback.path, params=dict(callback.params))
        assert forged.status_code == 400
        # the right browser with a tampered state
        params = {**dict(callback.params), "state": "tampered"}
        tampered = await cloud.client.get(callback.path, params=params)
        assert tampered.status_code == 400
        assert await cloud.rows("SELECT id FROM users") == []


async def test_github_denial_and_bad_codes_are_401(
    cloud_factory: CloudFactory, github: GitHubOAuthServer
) -> None:
    async with cloud_factory(github=github_settings(github)) as cloud:
        github.deny = True
        denied = await github_sign_in(cloud)
        assert denied.status_code == 401
        github.deny = False
        start = await cloud.client.get("/auth/github/start")
        state = httpx.URL(start.headers["location"]).params["state"]
        bad_code = await cloud.client.get(
            "/auth/github/callback", params={"code": "nope", "state": state}
        )
        assert bad_code.status_code == 401
        assert "bad_verification_code" in bad_code.json()["error"]


async def test_github_endpoints_are_404_when_not_configured(cloud: Cloud) -> None:
    start = await cloud.client.get("/auth/github/start")
    assert start.status_code == 404
    assert start.json() == {"error": "GitHub sign-in is not configured on this cloud"}


async def test_github_state_cookie_is_http_only_and_scoped(
    cloud_factory: CloudFactory, github: GitHubOAuthServer
) -> None:
    async with cloud_factory(github=github_settings(github)) as cloud:
        start = await cloud.client.get("/auth/github/start")
        cookie = start.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "Path=/auth/github" in cookie
        assert "SameSite=lax" in cookie
