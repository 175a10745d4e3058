"""Token rules: each token type works only where it belongs, and forged tokens are rejected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from jose import jwk, jwt

from local.template import load_template
from mfa_core.adapters.keys import SigningKeys, new_private_jwk, public_jwk
from tests.api.conftest import START, add_member, add_org
from tests.api.harness import Client, Flow, Member, Reply

PUBLIC_ROUTES = {
    "POST /v1/auth/login",
    "POST /v1/auth/refresh",
    "GET /.well-known/jwks.json",
    # SSO logins: the browser arrives from the identity provider without a token.
    "GET /v1/sso/oidc/{org_id}/start",
    "GET /v1/sso/oidc/{org_id}/callback",
    "GET /v1/sso/saml/{org_id}/start",
    "POST /v1/sso/saml/{org_id}/acs",
}
BODIES: dict[str, Any] = {
    "POST /v1/me/factors/totp": {},
    "POST /v1/me/factors/totp/{factor_id}/confirm": {"code": "123456"},
    "POST /v1/orgs/{org_id}/users": {"email": "new@acme.example", "role": "viewer"},
    "POST /v1/me/factors/webauthn": {"challenge_id": "c_x", "credential": {"id": "x"}},
    "POST /v1/me/factors/sms": {"phone_number": "+447400123456"},
    "POST /v1/me/factors/sms/{factor_id}/confirm": {"code": "123456"},
    "PUT /v1/me/password": {"current_password": "x" * 12, "new_password": "y" * 12},
    "PATCH /v1/orgs/{org_id}/users/{user_id}": {"role": "viewer"},
    "PUT /v1/orgs/{org_id}/mfa-policy": {"enforcement": "required"},
    "POST /v1/orgs/{org_id}/mfa-resets": {
        "user_id": "u_x",
        "reason": "Lost phone",
        "verification": {"method": "video_call", "reference": "r", "verified_by": "v"},
    },
    "POST /v1/auth/authorize": {"method": "PUT", "path": "/v1/agents/a1/config"},
}


def _protected_routes() -> list[tuple[str, str]]:
    """Routes whose handlers check the token; tests/api/test_authorizer.py covers the others."""
    routes = []
    for function in load_template().functions:
        for route in function.routes:
            if route.route_key not in PUBLIC_ROUTES and route.authorizer is None:
                routes.append((route.method, route.path))
    return sorted(routes)


def test_authorizer_guards_agent_routes() -> None:
    guarded = {
        route.route_key: route.authorizer.name
        for function in load_template().functions
        for route in function.routes
        if route.authorizer is not None
    }
    assert guarded == {
        "PUT /v1/agents/{agent_id}/config": "MfaAuthorizer",
        "POST /v1/agents/{agent_id}/credentials": "MfaAuthorizer",
    }


def _call(client: Client, method: str, path: str, token: str, member: Member) -> Reply:
    concrete = (
        path.replace("{factor_id}", member.factor_id or "f_x")
        .replace("{org_id}", member.org_id)
        .replace("{sid}", "s_x")
        .replace("{user_id}", member.user_id)
    )
    body = BODIES.get(f"{method} {path}")
    if method in ("POST", "PUT", "PATCH") and body is None:
        body = {}
    if path == "/v1/auth/mfa/verify":
        body = {"factor_id": member.factor_id, "code": "123456"}
    return client.request(method, concrete, json_body=body, token=token)


def test_protected_routes_are_listed() -> None:
    keys = {f"{method} {path}" for method, path in _protected_routes()}
    assert keys == {
        "POST /v1/auth/mfa/challenge",
        "POST /v1/auth/mfa/verify",
        "POST /v1/auth/logout",
        "POST /v1/auth/authorize",
        "GET /v1/me/sessions",
        "DELETE /v1/me/sessions/{sid}",
        "GET /v1/me/factors",
        "POST /v1/me/factors/totp",
        "POST /v1/me/factors/totp/{factor_id}/confirm",
        "POST /v1/me/factors/webauthn/options",
        "POST /v1/me/factors/webauthn",
        "DELETE /v1/me/factors/{factor_id}",
        "POST /v1/me/factors/sms",
        "POST /v1/me/factors/sms/{factor_id}/confirm",
        "GET /v1/me/backup-codes",
        "POST /v1/me/backup-codes",
        "POST /v1/orgs/{org_id}/users",
        "GET /v1/orgs/{org_id}/mfa-policy",
        "PUT /v1/orgs/{org_id}/mfa-policy",
        "POST /v1/orgs/{org_id}/mfa-resets",
        "GET /v1/orgs/{org_id}/mfa-resets",
        "POST /v1/orgs/{org_id}/mfa-resets/{reset_id}/approve",
        "POST /v1/orgs/{org_id}/mfa-resets/{reset_id}/cancel",
        "GET /v1/orgs/{org_id}/audit",
        "GET /v1/orgs/{org_id}/audit/verify",
        "PUT /v1/me/password",
        "DELETE /v1/me/remembered-devices",
        "GET /v1/orgs/{org_id}/users",
        "PATCH /v1/orgs/{org_id}/users/{user_id}",
        "GET /v1/orgs/{org_id}/mfa-status",
        "GET /v1/orgs/{org_id}/findings",
        "GET /v1/orgs/{org_id}/sso",
        "PUT /v1/orgs/{org_id}/sso",
    }


def test_mfa_token_rejected_everywhere_but_challenge_and_verify(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    mfa_token = flow.mfa_token(enrolled)
    for method, path in _protected_routes():
        if path in {"/v1/auth/mfa/verify", "/v1/auth/mfa/challenge"}:
            continue
        reply = _call(client, method, path, mfa_token, enrolled)
        assert reply.status == 401, (method, path, reply.text)
        assert reply.body["code"] == "invalid_token", (method, path)
    assert flow.verify(enrolled, mfa_token).status == 200


def test_access_token_at_verify_is_a_step_up(client: Client, flow: Flow, enrolled: Member) -> None:
    access = flow.verify(enrolled, flow.mfa_token(enrolled)).body["access_token"]
    flow.next_step()
    reply = flow.verify(enrolled, access)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "verified"
    assert "refresh_token" not in reply.body


def _encode_unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def _valid_claims(access_claims: dict[str, Any], **changes: Any) -> dict[str, Any]:
    claims = dict(access_claims)
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


@pytest.fixture
def access_claims(flow: Flow, acme: Member) -> dict[str, Any]:
    token = flow.login_ok(acme, "authenticated")["access_token"]
    claims: dict[str, Any] = jwt.get_unverified_claims(token)
    claims["_token"] = token
    return claims


def _sign(keys: SigningKeys, claims: dict[str, Any], *, kid: str | None = None) -> str:
    key_set = keys.private_keys()
    signer = jwk.construct(key_set.active_jwk, "ES256")
    token: str = jwt.encode(
        claims, signer, algorithm="ES256", headers={"kid": kid or key_set.active_kid}
    )
    return token


def test_genuine_access_token_accepted(client: Client, access_claims: dict[str, Any]) -> None:
    assert client.get("/v1/me/sessions", token=access_claims["_token"]).status == 200


def test_resigned_copy_accepted(
    client: Client, access_claims: dict[str, Any], signing_keys: SigningKeys
) -> None:
    """The forgery tests below change one thing each; this proves the rest is right."""
    claims = _valid_claims(access_claims, _token=None)
    assert client.get("/v1/me/sessions", token=_sign(signing_keys, claims)).status == 200


@pytest.mark.parametrize(
    "change",
    [
        {"exp": None},
        {"aud": "another-service"},
        {"iss": "https://attacker.example"},
        {"exp": START - 1},
        {"typ": "mfa_pending"},
        {"sid": "not-a-session"},
        {"org": "globex"},
    ],
    ids=["no-exp", "wrong-aud", "wrong-iss", "expired", "wrong-type", "unknown-sid", "other-org"],
)
def test_forged_claims_rejected(
    client: Client,
    access_claims: dict[str, Any],
    signing_keys: SigningKeys,
    change: dict[str, Any],
) -> None:
    claims = _valid_claims(access_claims, _token=None, **change)
    reply = client.get("/v1/me/sessions", token=_sign(signing_keys, claims))
    assert reply.status == 401
    assert reply.body["code"] == "invalid_token"


def test_alg_none_rejected(
    client: Client, access_claims: dict[str, Any], signing_keys: SigningKeys
) -> None:
    claims = _valid_claims(access_claims, _token=None)
    header = {"alg": "none", "typ": "JWT", "kid": signing_keys.private_keys().active_kid}
    assert client.get("/v1/me/sessions", token=_encode_unsigned(header, claims)).status == 401


def test_hs256_with_public_key_rejected(
    client: Client, access_claims: dict[str, Any], signing_keys: SigningKeys
) -> None:
    """The classic algorithm confusion: an HMAC keyed with the published public key."""
    key_set = signing_keys.private_keys()
    public_pem = jwk.construct(public_jwk(key_set.active_jwk), "ES256").to_pem()
    claims = _valid_claims(access_claims, _token=None)
    header = {"alg": "HS256", "typ": "JWT", "kid": key_set.active_kid}
    unsigned = _encode_unsigned(header, claims).rstrip(".")
    signature = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    forged = f"{unsigned}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert client.get("/v1/me/sessions", token=forged).status == 401


def test_unknown_kid_rejected(client: Client, access_claims: dict[str, Any]) -> None:
    stranger = new_private_jwk(START)
    claims = _valid_claims(access_claims, _token=None)
    forged = jwt.encode(
        claims,
        jwk.construct(stranger, "ES256"),
        algorithm="ES256",
        headers={"kid": stranger["kid"]},
    )
    assert client.get("/v1/me/sessions", token=forged).status == 401


def test_expired_access_token_rejected(
    client: Client, flow: Flow, access_claims: dict[str, Any]
) -> None:
    flow.clock.advance(15 * 60)
    assert client.get("/v1/me/sessions", token=access_claims["_token"]).status == 401


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "Bearer", "x" * 5000])
def test_garbage_tokens_rejected(client: Client, acme: Member, token: str) -> None:
    reply = client.get("/v1/me/sessions", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 401


def test_refresh_reuse_revokes_the_family(client: Client, flow: Flow, acme: Member) -> None:
    first = flow.login_ok(acme, "authenticated")
    second = client.post("/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert second.status == 200
    third = client.post("/v1/auth/refresh", {"refresh_token": second.body["refresh_token"]})
    assert third.status == 200

    reuse = client.post("/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert reuse.status == 401
    # The whole family is dead: the newest refresh token and access token too.
    latest = client.post("/v1/auth/refresh", {"refresh_token": third.body["refresh_token"]})
    assert latest.status == 401
    assert client.get("/v1/me/sessions", token=third.body["access_token"]).status == 401


def test_refresh_token_of_another_session_rejected(
    client: Client, flow: Flow, acme: Member
) -> None:
    one = flow.login_ok(acme, "authenticated")
    two = flow.login_ok(acme, "authenticated")
    session_id = two["session_id"]
    secret_part = one["refresh_token"].split(".", 1)[1]
    spliced = client.post("/v1/auth/refresh", {"refresh_token": f"{session_id}.{secret_part}"})
    assert spliced.status == 401
    # A wrong token is not a reuse: the real one still works.
    real = client.post("/v1/auth/refresh", {"refresh_token": two["refresh_token"]})
    assert real.status == 200


def test_other_org_is_not_found(client: Client, flow: Flow, acme: Member) -> None:
    globex = add_org("globex")
    globex_login = flow.login_ok(globex, "authenticated")
    globex_factor = client.post("/v1/me/factors/totp", {}, token=globex_login["access_token"])
    acme_access = flow.login_ok(acme, "authenticated")["access_token"]

    create = client.post(
        "/v1/orgs/globex/users", {"email": "spy@globex.example", "role": "admin"}, token=acme_access
    )
    assert create.status == 404
    revoke = client.delete(f"/v1/me/sessions/{globex_login['session_id']}", token=acme_access)
    assert revoke.status == 404
    confirm = client.post(
        f"/v1/me/factors/totp/{globex_factor.body['factor_id']}/confirm",
        {"code": "123456"},
        token=acme_access,
    )
    assert confirm.status == 404
    # The globex session is untouched.
    assert client.get("/v1/me/sessions", token=globex_login["access_token"]).status == 200


def test_user_revokes_own_other_session(client: Client, flow: Flow, acme: Member) -> None:
    add_member("acme", "second@acme.example")
    one = flow.login_ok(acme, "authenticated")
    two = flow.login_ok(acme, "authenticated")
    listed = client.get("/v1/me/sessions", token=one["access_token"]).body["sessions"]
    assert {s["session_id"] for s in listed} == {one["session_id"], two["session_id"]}

    assert (
        client.delete(f"/v1/me/sessions/{two['session_id']}", token=one["access_token"]).status
        == 204
    )
    assert client.get("/v1/me/sessions", token=two["access_token"]).status == 401
    assert client.post("/v1/auth/refresh", {"refresh_token": two["refresh_token"]}).status == 401


def test_jwks_publishes_the_signing_key(client: Client, signing_keys: SigningKeys) -> None:
    reply = client.get("/.well-known/jwks.json")
    assert reply.status == 200
    kids = [key["kid"] for key in reply.body["keys"]]
    assert signing_keys.private_keys().active_kid in kids
    assert all("d" not in key for key in reply.body["keys"])
