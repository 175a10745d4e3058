"""Password and SSO login, password change, token refresh, logout, the caller's sessions, the
public JWKS, and the authorizer's check for a route."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import account, auth, authorizer, http, sessions, telemetry, tokens
from mfa_core.runtime import services
from mfa_core.sso import oidc, saml_login
from mfa_core.sso.binding import Redirect

logger = Logger()
app = APIGatewayHttpResolver()
http.install(app)


@dataclass(frozen=True)
class LoginRequest:
    org_id: str = field(metadata=http.limits(min_length=1, max_length=63))
    email: str = field(metadata=http.limits(min_length=3, max_length=254))
    password: str = field(metadata=http.limits(min_length=1, max_length=1024))
    device_id: str | None = field(default=None, metadata=http.limits(max_length=128))
    remember_device_token: str | None = field(default=None, metadata=http.limits(max_length=4096))
    recovery_code: str | None = field(default=None, metadata=http.limits(max_length=64))


@dataclass(frozen=True)
class ChangePasswordRequest:
    current_password: str = field(metadata=http.limits(min_length=1, max_length=1024))
    new_password: str = field(metadata=http.limits(min_length=1, max_length=1024))


@dataclass(frozen=True)
class RefreshRequest:
    refresh_token: str = field(metadata=http.limits(min_length=1, max_length=512))


@dataclass(frozen=True)
class AuthorizeRequest:
    method: str = field(metadata=http.limits(min_length=1, max_length=16))
    path: str = field(metadata=http.limits(min_length=1, max_length=authorizer.MAX_PATH_LENGTH))


@app.post("/v1/auth/login")
def login() -> Response[str]:
    body = http.parse_body(app, LoginRequest)
    result = auth.login(
        services(),
        org_id=body.org_id,
        email=body.email,
        password=body.password,
        context=http.request_context(app),
        device_id=body.device_id,
        remember_device_token=body.remember_device_token,
        recovery_code=body.recovery_code,
    )
    return http.json_response(result.as_json())


@app.get("/v1/sso/oidc/<org_id>/start")
def start_oidc(org_id: str) -> Response[str]:
    redirect = oidc.start(
        services(),
        org_id=org_id,
        cookies=app.current_event.cookies or [],
        context=http.request_context(app),
    )
    return _redirect(redirect)


# NOTE: the callback returns the login result as JSON to the browser that follows the
# provider's redirect. A console that wants its own page there must forward code and state here.
@app.get("/v1/sso/oidc/<org_id>/callback")
def oidc_callback(org_id: str) -> Response[str]:
    result = oidc.callback(
        services(),
        org_id=org_id,
        parameters=app.current_event.query_string_parameters or {},
        cookies=app.current_event.cookies or [],
        context=http.request_context(app),
    )
    return http.json_response(result.as_json())


@app.get("/v1/sso/saml/<org_id>/start")
def start_saml(org_id: str) -> Response[str]:
    redirect = saml_login.start(
        services(),
        org_id=org_id,
        cookies=app.current_event.cookies or [],
        context=http.request_context(app),
    )
    return _redirect(redirect)


# The IdP's page posts the Response here from the browser (SAML HTTP-POST binding). Like the
# OIDC callback, the ACS returns the login result as JSON.
@app.post("/v1/sso/saml/<org_id>/acs")
def saml_acs(org_id: str) -> Response[str]:
    form = http.parse_form(
        app, fields=("SAMLResponse", "RelayState"), limit=saml_login.MAX_FORM_BYTES
    )
    result = saml_login.acs(
        services(),
        org_id=org_id,
        form=form,
        cookies=app.current_event.cookies or [],
        context=http.request_context(app),
    )
    return http.json_response(result.as_json())


def _redirect(redirect: Redirect) -> Response[str]:
    """Send the browser to the identity provider with the cookie that binds the login to it."""
    return Response(
        status_code=302,
        body="",
        headers={"Location": redirect.location, "Cache-Control": "no-store"},
        cookies=[redirect.cookie],
    )


@app.post("/v1/auth/refresh")
def refresh() -> Response[str]:
    body = http.parse_body(app, RefreshRequest)
    pair = sessions.refresh(
        services(), refresh_token=body.refresh_token, context=http.request_context(app)
    )
    return http.json_response(pair.as_json())


@app.post("/v1/auth/logout")
def logout() -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    sessions.logout(svc, principal, context=http.request_context(app))
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


@app.post("/v1/auth/authorize")
def authorize() -> Response[str]:
    body = http.parse_body(app, AuthorizeRequest)
    route_key = authorizer.route_key_for(body.method, body.path)
    return http.json_response(authorizer.check(services(), http.bearer_token(app), route_key))


@app.get("/v1/me/sessions")
def list_sessions() -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    return http.json_response({"sessions": sessions.list_sessions(svc, principal)})


@app.delete("/v1/me/sessions/<sid>")
def revoke_session(sid: str) -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    sessions.revoke_own_session(svc, principal, sid, context=http.request_context(app))
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


@app.put("/v1/me/password")
def change_password() -> Response[str]:
    body = http.parse_body(app, ChangePasswordRequest)
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    account.change_password(
        svc,
        principal,
        current_password=body.current_password,
        new_password=body.new_password,
        context=http.request_context(app),
    )
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


@app.delete("/v1/me/remembered-devices")
def forget_devices() -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    account.forget_devices(svc, principal, context=http.request_context(app))
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


@app.get("/.well-known/jwks.json")
def jwks() -> Response[str]:
    document = services().signing_keys.jwks_document()
    return Response(
        status_code=200,
        content_type="application/json",
        body=json.dumps(document),
        headers={"Cache-Control": "public, max-age=300"},
    )


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return app.resolve(event, context)
    finally:
        telemetry.flush()
