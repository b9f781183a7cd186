"""The cloud's teams (SPEC §3): teams and members with enforced roles, runner tokens,
webhook secrets, and isolation between teams."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from coro.cloud.runner_tokens import RunnerIdentity, verify_runner_token
from coro.cloud.webhook_secrets import webhook_secret
from tests.cloud_helpers import Account, Cloud

pytest_plugins = ("tests.cloud_fixtures",)

GITHUB_SECRET = "It's a Secret to Everybody"


async def mint(cloud: Cloud, team_id: str, admin: Account, name: str = "laptop") -> dict[str, Any]:
    response = await cloud.client.post(
        f"/teams/{team_id}/runner-tokens", json={"name": name}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


# --------------------------------------------------------------------------- teams


async def test_create_list_get_and_update_a_team(cloud: Cloud) -> None:
    ada = await cloud.signup(name="Ada")
    created = await cloud.client.post(
        "/teams", json={"name": "Analytical Engines", "slug": "engines"}, headers=ada.headers
    )
    assert created.status_code == 201, created.text
    team = created.json()
    assert team["name"] == "Analytical Engines"
    assert team["slug"] == "engines"
    assert team["role"] == "admin"

    listed = await cloud.client.get("/teams", headers=ada.headers)
    assert [t["id"] for t in listed.json()] == [team["id"]]
    # the access token was issued before the team existed: membership comes from the
    # database, so it works at once (no refresh needed)
    detail = await cloud.client.get(f"/teams/{team['id']}", headers=ada.headers)
    assert detail.status_code == 200, detail.text
    assert [(m["userId"], m["role"], m["name"]) for m in detail.json()["members"]] == [
        (ada.id, "admin", "Ada")
    ]
    me = await cloud.client.get("/auth/me", headers=ada.headers)
    assert [t["slug"] for t in me.json()["teams"]] == ["engines"]

    renamed = await cloud.client.patch(
        f"/teams/{team['id']}", json={"name": "Difference Engines"}, headers=ada.headers
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Difference Engines"
    assert renamed.json()["slug"] == "engines"
    # a body that names nothing changes nothing
    unchanged = await cloud.client.patch(f"/teams/{team['id']}", json={}, headers=ada.headers)
    assert unchanged.status_code == 200, unchanged.text
    assert (unchanged.json()["name"], unchanged.json()["slug"]) == ("Difference Engines", "engines")


async def test_team_slugs_are_validated_and_unique(cloud: Cloud) -> None:
    ada = await cloud.signup()
    await cloud.team(ada, "taken")
    again = await cloud.client.post(
        "/teams", json={"name": "Other", "slug": "taken"}, headers=ada.headers
    )
    assert again.status_code == 409
    assert again.json() == {"error": "Team slug already taken"}
    for slug in ("Has Caps", "trailing-", "a" * 64, "", "dots.not.ok", "ünï"):
        bad = await cloud.client.post(
            "/teams", json={"name": "X", "slug": slug}, headers=ada.headers
        )
        assert bad.status_code == 400, slug
        assert bad.json()["issues"][0]["path"] == "slug"
    other = await cloud.team(ada, "other")
    clash = await cloud.client.patch(
        f"/teams/{other['id']}", json={"slug": "taken"}, headers=ada.headers
    )
    assert clash.status_code == 409


async def test_team_routes_need_a_signed_in_user(cloud: Cloud) -> None:
    ada = await cloud.signup()
    team = await cloud.team(ada)
    for method, path in [
        ("GET", "/teams"),
        ("POST", "/teams"),
        ("GET", f"/teams/{team['id']}"),
        ("GET", f"/teams/{team['id']}/runner-tokens"),
        ("GET", f"/teams/{team['id']}/webhooks"),
    ]:
        response = await cloud.client.request(method, path)
        assert response.status_code == 401, (method, path)
        assert "error" in response.json()


# --------------------------------------------------------------------------- members


async def test_admins_add_members_by_email_and_change_roles(cloud: Cloud) -> None:
    ada, bob = await cloud.signup(), await cloud.signup(name="Bob")
    team = await cloud.team(ada)
    added = await cloud.client.post(
        f"/teams/{team['id']}/members",
        json={"email": bob.email.upper()},
        headers=ada.headers,
    )
    assert added.status_code == 201, added.text
    assert added.json()["userId"] == bob.id
    assert added.json()["role"] == "member"
    # bob's token predates his membership: it works at once
    seen = await cloud.client.get(f"/teams/{team['id']}", headers=bob.headers)
    assert seen.status_code == 200
    assert seen.json()["role"] == "member"

    twice = await cloud.client.post(
        f"/teams/{team['id']}/members", json={"email": bob.email}, headers=ada.headers
    )
    assert twice.status_code == 409
    nobody = await cloud.client.post(
        f"/teams/{team['id']}/members", json={"email": "nobody@example.com"}, headers=ada.headers
    )
    assert nobody.status_code == 404
    bad_role = await cloud.client.post(
        f"/teams/{team['id']}/members",
        json={"email": bob.email, "role": "owner"},
        headers=ada.headers,
    )
    assert bad_role.status_code == 400

    promoted = await cloud.client.patch(
        f"/teams/{team['id']}/members/{bob.id}", json={"role": "admin"}, headers=ada.headers
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "admin"


async def test_members_cannot_manage_the_team(cloud: Cloud) -> None:
    ada, bob, carol = await cloud.signup(), await cloud.signup(), await cloud.signup()
    team = await cloud.team(ada)
    await cloud.add_member(team["id"], ada, bob)
    await cloud.add_member(team["id"], ada, carol)
    token = await mint(cloud, team["id"], ada)
    attempts = [
        ("PATCH", f"/teams/{team['id']}", {"name": "Mine now"}),
        ("POST", f"/teams/{team['id']}/members", {"email": "x@example.com"}),
        ("PATCH", f"/teams/{team['id']}/members/{bob.id}", {"role": "admin"}),
        ("DELETE", f"/teams/{team['id']}/members/{carol.id}", None),
        ("POST", f"/teams/{team['id']}/runner-tokens", {"name": "sneaky"}),
        ("DELETE", f"/teams/{team['id']}/runner-tokens/{token['id']}", None),
        ("PUT", f"/teams/{team['id']}/webhooks/github", {"secret": GITHUB_SECRET}),
        ("DELETE", f"/teams/{team['id']}/webhooks/github", None),
    ]
    for method, path, body in attempts:
        response = await cloud.client.request(method, path, json=body, headers=bob.headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"].startswith("Only team admins can")
    # nothing happened
    assert len(await cloud.rows("SELECT id FROM runner_tokens")) == 1
    (row,) = await cloud.rows("SELECT revoked_at FROM runner_tokens")
    assert row["revoked_at"] is None
    # members may read
    listed = await cloud.client.get(f"/teams/{team['id']}/runner-tokens", headers=bob.headers)
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json()] == ["laptop"]


async def test_a_team_keeps_at_least_one_admin(cloud: Cloud) -> None:
    ada, bob = await cloud.signup(), await cloud.signup()
    team = await cloud.team(ada)
    await cloud.add_member(team["id"], ada, bob)
    path = f"/teams/{team['id']}/members/{ada.id}"
    demote = await cloud.client.patch(path, json={"role": "member"}, headers=ada.headers)
    assert demote.status_code == 409
    assert "at least one admin" in demote.json()["error"]
    leave = await cloud.client.delete(path, headers=ada.headers)
    assert leave.status_code == 409

    await cloud.client.patch(
        f"/teams/{team['id']}/members/{bob.id}", json={"role": "admin"}, headers=ada.headers
    )
    demote = await cloud.client.patch(path, json={"role": "member"}, headers=ada.headers)
    assert demote.status_code == 200
    # now ada is a member: bob, the only admin, cannot be removed or demoted either
    bob_path = f"/teams/{team['id']}/members/{bob.id}"
    assert (await cloud.client.delete(bob_path, headers=bob.headers)).status_code == 409


async def test_a_member_can_leave_and_loses_access_at_once(cloud: Cloud) -> None:
    ada, bob = await cloud.signup(), await cloud.signup()
    team = await cloud.team(ada)
    await cloud.add_member(team["id"], ada, bob)
    left = await cloud.client.delete(f"/teams/{team['id']}/members/{bob.id}", headers=bob.headers)
    assert left.status_code == 204
    # the same access token (whose teamIds claim still lists the team) gets 404
    gone = await cloud.client.get(f"/teams/{team['id']}", headers=bob.headers)
    assert gone.status_code == 404
    unknown = await cloud.client.delete(
        f"/teams/{team['id']}/members/{bob.id}", headers=ada.headers
    )
    assert unknown.status_code == 404


# --------------------------------------------------------------------------- isolation


async def test_members_of_one_team_get_404_for_another_teams_resources(cloud: Cloud) -> None:
    alice, mallory = await cloud.signup(), await cloud.signup()
    team_a = await cloud.team(alice)
    team_b = await cloud.team(mallory)
    token_a = await mint(cloud, team_a["id"], alice)
    token_b = await mint(cloud, team_b["id"], mallory)
    a = team_a["id"]
    requests = [
        ("GET", f"/teams/{a}", None),
        ("PATCH", f"/teams/{a}", {"name": "pwned"}),
        ("POST", f"/teams/{a}/members", {"email": mallory.email, "role": "admin"}),
        ("DELETE", f"/teams/{a}/members/{alice.id}", None),
        ("GET", f"/teams/{a}/runner-tokens", None),
        ("POST", f"/teams/{a}/runner-tokens", {"name": "x"}),
        ("DELETE", f"/teams/{a}/runner-tokens/{token_a['id']}", None),
        ("GET", f"/teams/{a}/webhooks", None),
        ("PUT", f"/teams/{a}/webhooks/github", {"secret": GITHUB_SECRET}),
        ("DELETE", f"/teams/{a}/webhooks/github", None),
        # a team that does not exist looks the same
        ("GET", "/teams/00000000-0000-0000-0000-000000000000", None),
    ]
    for method, path, body in requests:
        response = await cloud.client.request(method, path, json=body, headers=mallory.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"error": "Team not found"}
    # mallory's own team with alice's token id: not found there either
    cross = await cloud.client.delete(
        f"/teams/{team_b['id']}/runner-tokens/{token_a['id']}", headers=mallory.headers
    )
    assert cross.status_code == 404
    assert await verify_runner_token(cloud.db, token_a["token"]) is not None
    # and mallory's listing holds only her own
    mine = await cloud.client.get(f"/teams/{team_b['id']}/runner-tokens", headers=mallory.headers)
    assert [t["id"] for t in mine.json()] == [token_b["id"]]
    assert [
        t["id"] for t in (await cloud.client.get("/teams", headers=mallory.headers)).json()
    ] == [team_b["id"]]


# --------------------------------------------------------------------------- runner tokens


async def test_runner_tokens_are_shown_once_and_stored_hashed(cloud: Cloud) -> None:
    ada = await cloud.signup()
    team = await cloud.team(ada)
    minted = await mint(cloud, team["id"], ada, name="ci-runner")
    secret = minted["token"]
    assert secret.startswith("coro_rt_")
    assert minted["name"] == "ci-runner"
    assert minted["createdBy"] == ada.id
    assert minted["revokedAt"] is None

    listed = await cloud.client.get(f"/teams/{team['id']}/runner-tokens", headers=ada.headers)
    assert listed.status_code == 200
    (entry,) = listed.json()
    assert entry["id"] == minted["id"]
    assert "token" not in entry
    assert secret not in listed.text

    rows = await cloud.rows("SELECT * FROM runner_tokens")
    assert secret not in json.dumps(rows, default=str)
    assert rows[0]["token_hash"] == hashlib.sha256(secret.encode()).hexdigest()


async def test_verify_runner_token_knows_the_team_until_revoked(cloud: Cloud) -> None:
    ada = await cloud.signup()
    team = await cloud.team(ada)
    minted = await mint(cloud, team["id"], ada)
    revoked: list[RunnerIdentity] = []

    async def on_revoked(identity: RunnerIdentity) -> None:
        revoked.append(identity)

    cloud.served.app.state.services.runner_tokens.hub.subscribe(on_revoked)

    identity = await verify_runner_token(cloud.db, minted["token"])
    assert identity == RunnerIdentity(team_id=team["id"], token_id=minted["id"])
    (row,) = await cloud.rows("SELECT last_used_at FROM runner_tokens")
    assert row["last_used_at"] is not None
    for forged in (minted["token"][:-1] + "x", "coro_rt_", "", minted["id"], "x" * 10_000):
        assert await verify_runner_token(cloud.db, forged) is None

    gone = await cloud.client.delete(
        f"/teams/{team['id']}/runner-tokens/{minted['id']}", headers=ada.headers
    )
    assert gone.status_code == 204
    assert await verify_runner_token(cloud.db, minted["token"]) is None
    assert revoked == [identity]
    listed = await cloud.client.get(f"/teams/{team['id']}/runner-tokens", headers=ada.headers)
    assert listed.json()[0]["revokedAt"] is not None

    again = await cloud.client.delete(
        f"/teams/{team['id']}/runner-tokens/{minted['id']}", headers=ada.headers
    )
    assert again.status_code == 204
    assert revoked == [identity]  # a second revocation changes nothing
    unknown = await cloud.client.delete(
        f"/teams/{team['id']}/runner-tokens/not-a-token", headers=ada.headers
    )
    assert unknown.status_code == 404


async def test_runner_token_names_are_validated(cloud: Cloud) -> None:
    ada = await cloud.signup()
    team = await cloud.team(ada)
    for body in ({}, {"name": ""}, {"name": "x" * 201}, {"name": 7}, {"name": "ok", "x": 1}):
        response = await cloud.client.post(
            f"/teams/{team['id']}/runner-tokens", json=body, headers=ada.headers
        )
        assert response.status_code == 400, body
        assert "error" in response.json()
    assert await cloud.rows("SELECT id FROM runner_tokens") == []


# --------------------------------------------------------------------------- webhook secrets


async def test_webhook_secrets_are_write_only(cloud: Cloud) -> None:
    ada, bob = await cloud.signup(), await cloud.signup()
    team = await cloud.team(ada)
    await cloud.add_member(team["id"], ada, bob)
    base = f"/teams/{team['id']}/webhooks"
    created = await cloud.client.put(
        f"{base}/github", json={"secret": GITHUB_SECRET}, headers=ada.headers
    )
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"pluginId", "createdAt", "updatedAt"}
    replaced = await cloud.client.put(
        f"{base}/github", json={"secret": GITHUB_SECRET + "!"}, headers=ada.headers
    )
    assert replaced.status_code == 200
    await cloud.client.put(
        f"{base}/bitbucket", json={"secret": "another-long-secret"}, headers=ada.headers
    )

    for who in (ada, bob):
        listed = await cloud.client.get(base, headers=who.headers)
        assert listed.status_code == 200
        assert [s["pluginId"] for s in listed.json()] == ["bitbucket", "github"]
        one = await cloud.client.get(f"{base}/github", headers=who.headers)
        assert one.status_code == 200
        for response in (created, replaced, listed, one):
            assert "Secret to Everybody" not in response.text
            assert "secret" not in response.json()

    # the webhook ingress reads the secret itself
    assert await webhook_secret(cloud.db, team["id"], "github") == GITHUB_SECRET + "!"

    deleted = await cloud.client.delete(f"{base}/github", headers=ada.headers)
    assert deleted.status_code == 204
    assert (await cloud.client.get(f"{base}/github", headers=ada.headers)).status_code == 404
    assert (await cloud.client.delete(f"{base}/github", headers=ada.headers)).status_code == 404
    assert await webhook_secret(cloud.db, team["id"], "github") is None


async def test_webhook_secret_inputs_are_validated(cloud: Cloud) -> None:
    ada = await cloud.signup()
    team = await cloud.team(ada)
    base = f"/teams/{team['id']}/webhooks"
    cases = [
        ("github", {"secret": "too-short"}),
        ("github", {"secret": "x" * 1025}),
        ("github", {}),
        ("github", {"secret": GITHUB_SECRET, "algorithm": "none"}),
        ("Not_A_Plugin", {"secret": GITHUB_SECRET}),
        ("a" * 65, {"secret": GITHUB_SECRET}),
    ]
    for plugin, body in cases:
        response = await cloud.client.put(f"{base}/{plugin}", json=body, headers=ada.headers)
        assert response.status_code == 400, (plugin, body, response.text)
        assert "too-short" not in response.text
    assert await cloud.rows("SELECT plugin_id FROM webhook_secrets") == []


async def test_ids_and_names_with_unstorable_characters_are_400(cloud: Cloud) -> None:
    ada = await cloud.signup()
    team = await cloud.team(ada)
    for method, path, body in [
        ("GET", f"/teams/{'x' * 65}", None),
        ("GET", "/teams/%00", None),
        ("DELETE", f"/teams/{team['id']}/members/a%00b", None),
        ("POST", "/teams", {"name": "A\x00", "slug": "nul"}),
        ("PATCH", f"/teams/{team['id']}", {"name": "tab\there"}),
        ("POST", f"/teams/{team['id']}/runner-tokens", {"name": "a\x00b"}),
        ("PUT", f"/teams/{team['id']}/webhooks/github", {"secret": GITHUB_SECRET + "\x00"}),
        ("POST", f"/teams/{team['id']}/members", {"email": "b\x00@example.com"}),
    ]:
        response = await cloud.client.request(method, path, json=body, headers=ada.headers)
        assert response.status_code == 400, (method, path, response.text)
        assert "error" in response.json()
