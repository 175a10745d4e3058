"""The Lambda authorizer and POST /v1/auth/authorize, through the local gateway.

The agent routes stand in for the control plane's APIs: `PUT /v1/agents/{agent_id}/config`
needs aal2 within 15 minutes, `POST /v1/agents/{agent_id}/credentials` aal3 within 5 minutes.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from jose import jwk, jwt

from local.events import ApiSettings, HttpRequest, build_event
from local.functions import LocalFunction
from local.routing import RouteMatch, RouteTarget
from local.stack import LocalStack
from local.template import HttpRoute
from mfa_core import runtime
from mfa_core.adapters.keys import SigningKeys, new_private_jwk
from tests.api.conftest import START
from tests.api.harness import Client, Flow, Member, Reply
from tests.api.test_audit_and_logs import captured_logs
from tests.authenticator import SoftAuthenticator

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


# -- the authorizer in front of the agent routes -------------------------------------------------

# The cache TTL of the test stack: template.yaml's default.
CACHE_SECONDS = 10


def agent_config(client: Client, token: str | None, agent_id: str = "a1") -> Reply:
    return client.request("PUT", f"/v1/agents/{agent_id}/config", json_body={}, token=token)


def agent_credentials(client: Client, token: str | None, agent_id: str = "a1") -> Reply:
    return client.post(f"/v1/agents/{agent_id}/credentials", {}, token=token)


def assert_forbidden(reply: Reply) -> None:
    """API Gateway's bare denial: the reason is only at /v1/auth/authorize."""
    assert reply.status == 403, reply.text
    assert reply.body == {"message": "Forbidden"}


def key_step_up(flow: Flow, access: str, key: SoftAuthenticator) -> str:
    """Step up an access token's session with a security key; return the new access token."""
    challenge = flow.key_challenge(access)
    credential = key.authenticate(challenge["options"], origin=flow.origin)
    reply = flow.key_verify(access, challenge, credential)
    assert reply.status == 200, reply.text
    token: str = reply.body["access_token"]
    return token


def audit_items(stack: LocalStack, event_type: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb", endpoint_url=stack.aws_endpoint_url).Table(
        runtime.services().settings.audit_table
    )
    return [item for item in table.scan()["Items"] if item["event_type"] == event_type]


def test_no_token_is_401(client: Client, acme: Member) -> None:
    reply = agent_config(client, None)

    assert reply.status == 401
    assert reply.body == {"message": "Unauthorized"}


def test_other_scheme_is_denied(client: Client, flow: Flow, enrolled: Member) -> None:
    access = totp_session(flow, enrolled)["access_token"]

    reply = client.request(
        "PUT", "/v1/agents/a1/config", json_body={}, headers={"Authorization": f"Basic {access}"}
    )

    assert_forbidden(reply)


def test_config_route_passes_caller(client: Client, flow: Flow, enrolled: Member) -> None:
    tokens = totp_session(flow, enrolled)
    claims = jwt.get_unverified_claims(tokens["access_token"])

    reply = agent_config(client, tokens["access_token"], agent_id="agent-7")

    assert reply.status == 200, reply.text
    assert reply.body == {
        "agent_id": "agent-7",
        "operation": "config",
        "caller": {
            "sub": enrolled.user_id,
            "org": "acme",
            "sid": tokens["session_id"],
            "acr": "aal2",
            "amr": "pwd,otp,mfa",
            "mfa_time": claims["mfa_time"],
            "roles": "admin",
        },
    }


def test_config_route_denies_password_only(client: Client, flow: Flow, acme: Member) -> None:
    password_only = flow.login_ok(acme, "authenticated")["access_token"]

    assert_forbidden(agent_config(client, password_only))
    reason = authorize(client, password_only, CONFIG)
    assert_step_up(reason, acr="aal2", max_age=900, missing=["acr", "mfa"])


def test_config_route_allows_15_minutes(client: Client, flow: Flow, enrolled: Member) -> None:
    tokens = totp_session(flow, enrolled)
    flow.clock.advance(890)
    refreshed = client.post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    access = refreshed.body["access_token"]

    flow.clock.advance(10)  # the MFA is exactly 900 seconds old
    assert agent_config(client, access).status == 200
    flow.clock.advance(1)
    assert_forbidden(agent_config(client, access))
    reason = authorize(client, access, CONFIG)
    assert_step_up(reason, acr="aal2", max_age=900, missing=["mfa_age"])


def test_step_up_turns_403_into_200(client: Client, flow: Flow, enrolled: Member) -> None:
    tokens = totp_session(flow, enrolled)
    flow.clock.advance(901)
    access = client.post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}).body[
        "access_token"
    ]
    assert_forbidden(agent_config(client, access))

    flow.next_step()
    step_up = flow.verify(enrolled, access)
    assert step_up.status == 200, step_up.text
    fresh = step_up.body["access_token"]

    allowed = agent_config(client, fresh)
    assert allowed.status == 200, allowed.text
    assert allowed.body["caller"]["mfa_time"] == int(flow.clock.now())
    assert authorize(client, fresh, CONFIG).status == 200


def test_credentials_route_needs_a_security_key(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    access = totp_session(flow, enrolled)["access_token"]
    key = SoftAuthenticator()
    flow.register_key(access, key)

    assert_forbidden(agent_credentials(client, access))
    reason = authorize(client, access, CREDENTIALS)
    assert_step_up(reason, acr="aal3", max_age=300, missing=["acr"])

    with_key = key_step_up(flow, access, key)
    allowed = agent_credentials(client, with_key)
    assert allowed.status == 200, allowed.text
    assert allowed.body["caller"]["acr"] == "aal3"
    assert allowed.body["caller"]["amr"] == "pwd,hwk,mfa"

    flow.clock.advance(301)
    assert_forbidden(agent_credentials(client, with_key))
    reason = authorize(client, with_key, CREDENTIALS)
    assert_step_up(reason, acr="aal3", max_age=300, missing=["mfa_age"])


def test_key_without_user_verification_is_aal2(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    access = totp_session(flow, enrolled)["access_token"]
    key = SoftAuthenticator(user_verification=False)
    flow.register_key(access, key)

    with_key = key_step_up(flow, access, key)

    assert_forbidden(agent_credentials(client, with_key))
    reason = authorize(client, with_key, CREDENTIALS)
    assert_step_up(reason, acr="aal3", max_age=300, missing=["acr"])


def test_logout_denied_within_cache_ttl(client: Client, flow: Flow, enrolled: Member) -> None:
    access = totp_session(flow, enrolled)["access_token"]
    assert agent_config(client, access).status == 200
    assert client.post("/v1/auth/logout", token=access).status == 204

    # The session read is cached: the revocation reaches the authorizer within the TTL.
    flow.clock.advance(CACHE_SECONDS - 1)
    assert agent_config(client, access).status == 200
    flow.clock.advance(1)
    assert_forbidden(agent_config(client, access))
    assert_invalid_token(authorize(client, access, CONFIG))


def test_factor_change_ends_other_session(client: Client, flow: Flow, enrolled: Member) -> None:
    other = totp_session(flow, enrolled)["access_token"]
    assert agent_config(client, other).status == 200
    flow.next_step()
    current = totp_session(flow, enrolled)["access_token"]

    flow.enroll(enrolled, current)  # a second factor ends every other session
    flow.clock.advance(CACHE_SECONDS)

    assert_forbidden(agent_config(client, other))
    assert_invalid_token(authorize(client, other, CONFIG))
    assert agent_config(client, current).status == 200


def test_disabled_user_denied(
    client: Client, flow: Flow, enrolled: Member, stack: LocalStack
) -> None:
    access = totp_session(flow, enrolled)["access_token"]
    users = boto3.resource("dynamodb", endpoint_url=stack.aws_endpoint_url).Table(
        runtime.services().settings.users_table
    )
    users.update_item(
        Key={"org_id": "acme", "user_id": enrolled.user_id},
        UpdateExpression="SET #s = :disabled",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":disabled": "disabled"},
    )

    assert_forbidden(agent_config(client, access))
    assert_invalid_token(authorize(client, access, CONFIG))


def test_expired_token_denied(client: Client, flow: Flow, enrolled: Member) -> None:
    access = totp_session(flow, enrolled)["access_token"]
    flow.clock.advance(15 * 60)

    assert_forbidden(agent_config(client, access))
    assert_invalid_token(authorize(client, access, CONFIG))


def test_unknown_key_signature_denied(
    client: Client, flow: Flow, enrolled: Member, signing_keys: SigningKeys
) -> None:
    """A token with genuine claims and the published kid, signed by another EC key."""
    access = totp_session(flow, enrolled)["access_token"]
    claims = jwt.get_unverified_claims(access)
    kid = jwt.get_unverified_header(access)["kid"]
    assert kid == signing_keys.private_keys().active_kid
    stranger = jwk.construct(new_private_jwk(START), "ES256")
    forged = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": kid})

    assert agent_config(client, access).status == 200
    assert_forbidden(agent_config(client, forged))
    assert_invalid_token(authorize(client, forged, CONFIG))


@pytest.mark.parametrize("token", ["abc", "a.b.c", "x" * 5000])
def test_malformed_token_denied(client: Client, acme: Member, token: str) -> None:
    assert_forbidden(agent_config(client, token))


def test_mfa_token_denied(client: Client, flow: Flow, enrolled: Member) -> None:
    assert_forbidden(agent_config(client, flow.mfa_token(enrolled)))


def test_step_up_denial_audited_once_a_minute(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    login = flow.login_ok(acme, "authenticated")
    password_only = login["access_token"]

    assert_forbidden(agent_config(client, password_only))
    assert_forbidden(agent_config(client, password_only))
    first = audit_items(stack, "authorizer.step_up_required")
    flow.clock.advance(60)
    assert_forbidden(agent_config(client, password_only))
    both = audit_items(stack, "authorizer.step_up_required")

    assert len(first) == 1
    assert len(both) == 2
    item = first[0]
    assert item["outcome"] == "denied"
    assert item["reason"] == "acr,mfa"
    assert item["user_id"] == acme.user_id
    assert item["session_id"] == login["session_id"]
    assert item["source_ip"] == "127.0.0.1"
    assert item["details"]["route"] == "PUT /v1/agents/{agent_id}/config"
    assert item["details"]["required_acr"] == "aal2"
    assert item["details"]["max_mfa_age"] == 900


def test_authorize_endpoint_audits_nothing(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    password_only = flow.login_ok(acme, "authenticated")["access_token"]

    assert authorize(client, password_only, CONFIG).status == 403

    assert audit_items(stack, "authorizer.step_up_required") == []


def test_denials_logged_and_counted(
    client: Client, flow: Flow, acme: Member, capsys: pytest.CaptureFixture[str]
) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    capsys.readouterr()
    with captured_logs() as stream:
        assert_forbidden(agent_config(client, access))
        assert client.post("/v1/auth/logout", token=access).status == 204
        flow.clock.advance(CACHE_SECONDS)
        assert_forbidden(agent_config(client, access))
        assert_forbidden(agent_config(client, "not-a-token"))

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    by_message = {line["message"]: line for line in lines if "message" in line}
    step_up = by_message["Authorizer denied a route that needs a step-up"]
    ended = by_message["Authorizer denied a revoked or ended session"]
    rejected = by_message["Authorizer rejected the token"]
    assert step_up["level"] == "WARNING"
    assert step_up["missing"] == ["acr", "mfa"]
    assert step_up["user_id"] == acme.user_id
    assert step_up["route"] == "PUT /v1/agents/{agent_id}/config"
    assert ended["level"] == "WARNING"
    assert ended["session_id"] == step_up["session_id"]
    assert rejected["level"] == "INFO"
    assert access not in stream.getvalue()
    assert access.rsplit(".", 1)[1] not in stream.getvalue()

    metrics = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    names = {
        definition["Name"]
        for document in metrics
        for definition in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    }
    assert {
        "AuthorizerStepUpRequired",
        "AuthorizerSessionEnded",
        "AuthorizerTokenRejected",
    } <= names


def test_example_backend_requires_authorizer_context(stack: LocalStack) -> None:
    """Deployed without the authorizer, the example backend fails instead of running."""
    spec = stack.template.function("AgentsExampleFunction")
    function = LocalFunction(
        spec=spec,
        name=stack.provisioned.physical_id(spec.logical_id),
        arn=stack.provisioned.context.get_att(spec.logical_id, "Arn"),
        environment=stack.provisioned.environments[spec.logical_id],
    )
    route = HttpRoute("PUT", "/v1/agents/{agent_id}/config")
    request = HttpRequest(
        method="PUT",
        raw_path="/v1/agents/a1/config",
        raw_query="",
        headers=[("Content-Type", "application/json")],
        body=b"{}",
        source_ip="127.0.0.1",
        server_port=3000,
    )
    match = RouteMatch(RouteTarget(route, spec.logical_id), {"agent_id": "a1"})
    api = ApiSettings(account_id=stack.provisioned.account_id, api_id="local")

    result = function.invoke(build_event(request, match, api, request_id="r1"))

    assert result["statusCode"] == 500
    assert json.loads(result["body"])["code"] == "configuration_error"


@pytest.mark.parametrize(
    ("stage", "path"),
    [
        ("$default", "/v1/agents/a1/credentials/"),
        ("$default", "/v1/agents/a1//credentials"),
        ("$default", "/v1/agents/a1/%63redentials"),
        ("$default", "/v1//agents/a1/credentials"),
        ("$default", "/v1/agents/a1/Credentials"),
        ("$default", "/v1/agents/a1/x/../credentials"),
        ("prod", "/prod/v1/agents/a1/credentials"),
    ],
)
def test_catch_all_route_cannot_skip_a_requirement(
    flow: Flow, acme: Member, stage: str, path: str
) -> None:
    # Imported here: importing it at collection would create its logger before the service's.
    from mfa_core import authorizer  # noqa: PLC0415

    token = flow.login_ok(acme, "authenticated")["access_token"]
    event = {
        "version": "2.0",
        "type": "REQUEST",
        "routeKey": "ANY /v1/agents/{proxy+}",
        "rawPath": path,
        "headers": {"authorization": f"Bearer {token}"},
        "requestContext": {"http": {"method": "POST", "path": path}, "stage": stage},
    }
    assert authorizer.authorize(runtime.services(), event) == {"isAuthorized": False}
    event["requestContext"]["http"]["method"] = "GET"
    assert authorizer.authorize(runtime.services(), event)["isAuthorized"] is True
