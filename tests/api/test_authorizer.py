"""The Lambda authorizer and POST /v1/auth/authorize, through the local gateway.

The agent routes stand in for the control plane's APIs: `PUT /v1/agents/{agent_id}/config`
needs aal2 within 15 minutes, `POST /v1/agents/{agent_id}/credentials` aal3 within 5 minutes.
"""

from __future__ import annotations

from typing import Any

from tests.api.harness import Client, Flow, Member, Reply

CONFIG = {"method": "PUT", "path": "/v1/agents/a1/config"}
CREDENTIALS = {"method": "POST", "path": "/v1/agents/a1/credentials"}


def authorize(client: Client, token: str | None, request: dict[str, str]) -> Reply:
    return client.post("/v1/auth/authorize", request, token=token)


def assert_step_up(reply: Reply, *, acr: str, max_age: int, missing: list[str]) -> None:
    assert reply.status == 403, reply.text
    assert reply.header("content-type") == "application/problem+json"
    assert reply.body["code"] == "step_up_required"
    assert reply.body["required_acr"] == acr
    assert reply.body["max_mfa_age"] == max_age
    assert reply.body["missing"] == missing
    assert "/v1/auth/mfa/verify" in reply.body["detail"]


def assert_invalid_token(reply: Reply) -> None:
    assert reply.status == 401, reply.text
    assert reply.body["code"] == "invalid_token"


def totp_session(flow: Flow, member: Member) -> dict[str, Any]:
    """Sign in with the password and a TOTP code; return the token response (aal2)."""
    reply = flow.verify(member, flow.mfa_token(member))
    assert reply.status == 200, reply.text
    tokens: dict[str, Any] = reply.body
    return tokens


# -- POST /v1/auth/authorize ---------------------------------------------------------------------


def test_authorize_allows_fresh_totp(client: Client, flow: Flow, enrolled: Member) -> None:
    access = totp_session(flow, enrolled)["access_token"]

    reply = authorize(client, access, CONFIG)

    assert reply.status == 200, reply.text
    assert reply.body == {
        "allowed": True,
        "route": "PUT /v1/agents/{agent_id}/config",
        "requirement": {"acr": "aal2", "max_mfa_age": 900},
    }


def test_authorize_names_missing_mfa(client: Client, flow: Flow, acme: Member) -> None:
    password_only = flow.login_ok(acme, "authenticated")["access_token"]

    reply = authorize(client, password_only, CONFIG)

    assert_step_up(reply, acr="aal2", max_age=900, missing=["acr", "mfa"])
    assert "aal1" in reply.body["detail"]


def test_authorize_names_low_acr(client: Client, flow: Flow, enrolled: Member) -> None:
    access = totp_session(flow, enrolled)["access_token"]

    reply = authorize(client, access, CREDENTIALS)

    assert_step_up(reply, acr="aal3", max_age=300, missing=["acr"])
    assert "aal2" in reply.body["detail"]


def test_authorize_names_old_mfa(client: Client, flow: Flow, enrolled: Member) -> None:
    tokens = totp_session(flow, enrolled)
    flow.clock.advance(901)
    # Refreshing keeps the time of the MFA, so the new token carries the old mfa_time.
    refreshed = client.post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert refreshed.status == 200, refreshed.text

    reply = authorize(client, refreshed.body["access_token"], CONFIG)

    assert_step_up(reply, acr="aal2", max_age=900, missing=["mfa_age"])
    assert "901 seconds ago" in reply.body["detail"]


def test_authorize_unlisted_route_needs_session(client: Client, flow: Flow, acme: Member) -> None:
    password_only = flow.login_ok(acme, "authenticated")["access_token"]

    reply = authorize(client, password_only, {"method": "GET", "path": "/v1/agents/a1"})

    assert reply.status == 200, reply.text
    assert reply.body == {"allowed": True, "route": None, "requirement": None}


def test_authorize_our_own_routes(client: Client, flow: Flow, enrolled: Member) -> None:
    access = totp_session(flow, enrolled)["access_token"]
    flow.clock.advance(301)

    reply = authorize(client, access, {"method": "DELETE", "path": "/v1/me/factors/f_1"})

    assert_step_up(reply, acr="aal2", max_age=300, missing=["mfa_age"])


def test_authorize_without_token(client: Client, acme: Member) -> None:
    assert_invalid_token(authorize(client, None, CONFIG))


def test_authorize_rejects_mfa_token(client: Client, flow: Flow, enrolled: Member) -> None:
    assert_invalid_token(authorize(client, flow.mfa_token(enrolled), CONFIG))


def test_authorize_rejects_ended_session(client: Client, flow: Flow, acme: Member) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    assert client.post("/v1/auth/logout", token=access).status == 204

    assert_invalid_token(authorize(client, access, {"method": "GET", "path": "/v1/agents"}))


def test_authorize_validates_method_and_path(client: Client, flow: Flow, acme: Member) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    cases = [
        ({"method": "put", "path": "/v1/agents/a1/config"}, "method"),
        ({"method": "FETCH", "path": "/v1/agents/a1/config"}, "method"),
        ({"method": "PUT", "path": "v1/agents/a1/config"}, "path"),
        ({"method": "PUT", "path": "/v1/agents/a1/config?x=1"}, "path"),
        ({"method": "PUT", "path": "/v1/agents/a 1/config"}, "path"),
        ({"method": "PUT", "path": "/v1/agents/\u00e91/config"}, "path"),
        ({"method": "PUT", "path": "/" + "a" * 2048}, "path"),
        ({"method": "PUT"}, "path"),
    ]
    for body, field in cases:
        reply = authorize(client, access, body)
        assert reply.status == 400, body
        assert reply.body["field"] == field, body
