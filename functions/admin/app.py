"""Org administration: members, the MFA policy, the SSO connection, the enrollment dashboard,
the audit trail and the security scan's findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import audit_trail, dashboard, http, members, policy, sessions, telemetry, tokens
from mfa_core.cso import findings
from mfa_core.runtime import services
from mfa_core.sso import connection

logger = Logger()
app = APIGatewayHttpResolver()
http.install(app)


@dataclass(frozen=True)
class CreateMemberRequest:
    email: str = field(metadata=http.limits(min_length=3, max_length=254))
    role: str = field(metadata=http.limits(min_length=1, max_length=32))
    password: str | None = field(default=None, metadata=http.limits(max_length=1024))


@app.post("/v1/orgs/<org_id>/users")
def create_member(org_id: str) -> Response[str]:
    body = http.parse_body(app, CreateMemberRequest)
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    member = members.create_member_as_admin(
        svc,
        principal,
        org_id=org_id,
        email=body.email,
        role=body.role,
        password=body.password,
        context=http.request_context(app),
    )
    result: dict[str, Any] = {
        "user_id": member.user.user_id,
        "org_id": member.user.org_id,
        "email": member.user.email,
        "role": member.user.role,
    }
    if member.generated_password is not None:
        result["initial_password"] = member.generated_password
    return http.json_response(result, status=201)


@dataclass(frozen=True)
class ChangeMemberRequest:
    role: str | None = field(default=None, metadata=http.limits(max_length=32))
    status: str | None = field(default=None, metadata=http.limits(max_length=32))


@app.get("/v1/orgs/<org_id>/users")
def list_members(org_id: str) -> Response[str]:
    svc = services()
    principal = _admin_caller(svc)
    limit, after = http.page_parameters(app, maximum=members.MAX_PAGE)
    return http.json_response(
        members.list_members(svc, principal, org_id=org_id, limit=limit, after=after)
    )


@app.patch("/v1/orgs/<org_id>/users/<user_id>")
def change_member(org_id: str, user_id: str) -> Response[str]:
    body = http.parse_body(app, ChangeMemberRequest)
    svc = services()
    member = members.change_member(
        svc,
        _admin_caller(svc),
        org_id=org_id,
        user_id=user_id,
        role=body.role,
        status=body.status,
        context=http.request_context(app),
    )
    return http.json_response(members.member_json(member))


@app.get("/v1/orgs/<org_id>/mfa-status")
def mfa_status(org_id: str) -> Response[str]:
    svc = services()
    principal = _admin_caller(svc)
    limit, after = http.page_parameters(app, maximum=members.MAX_PAGE)
    return http.json_response(
        dashboard.mfa_status(svc, principal, org_id=org_id, limit=limit, after=after)
    )


def _admin_caller(svc: Any) -> tokens.Principal:
    return sessions.authenticate(svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS}))


@app.get("/v1/orgs/<org_id>/mfa-policy")
def get_mfa_policy(org_id: str) -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    current = policy.read_policy(svc, principal, org_id)
    return _policy_response(current)


@app.put("/v1/orgs/<org_id>/mfa-policy")
def put_mfa_policy(org_id: str) -> Response[str]:
    document = http.parse_object(app)
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    changed = policy.replace_policy(
        svc,
        principal,
        org_id,
        document,
        if_match=app.current_event.headers.get("if-match"),
        context=http.request_context(app),
    )
    return _policy_response(changed)


@app.get("/v1/orgs/<org_id>/sso")
def get_sso(org_id: str) -> Response[str]:
    svc = services()
    current = connection.read_connection(svc, _admin_caller(svc), org_id)
    return http.json_response({"sso": current.as_json() if current else None})


@app.put("/v1/orgs/<org_id>/sso")
def put_sso(org_id: str) -> Response[str]:
    document = http.parse_object(app)
    svc = services()
    changed = connection.replace_connection(
        svc, _admin_caller(svc), org_id, document, context=http.request_context(app)
    )
    return http.json_response({"sso": changed.as_json()})


@app.get("/v1/orgs/<org_id>/audit")
def export_audit(org_id: str) -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    params = app.current_event.query_string_parameters or {}
    page = audit_trail.export(svc, principal, org_id, params, context=http.request_context(app))
    headers = {"Cache-Control": "no-store", "X-Event-Count": str(page.count)}
    if page.next_cursor is not None:
        headers["X-Next-Cursor"] = page.next_cursor
    return Response(
        status_code=200, content_type=page.content_type, body=page.body, headers=headers
    )


@app.get("/v1/orgs/<org_id>/audit/verify")
def verify_audit(org_id: str) -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    report = audit_trail.verify_as_admin(
        svc, principal, org_id, app.current_event.query_string_parameters or {}
    )
    return http.json_response(report.as_json())


@app.get("/v1/orgs/<org_id>/findings")
def list_findings(org_id: str) -> Response[str]:
    svc = services()
    principal = _admin_caller(svc)
    params = app.current_event.query_string_parameters or {}
    return http.json_response(findings.list_findings(svc, principal, org_id, params))


def _policy_response(current: policy.MfaPolicy) -> Response[str]:
    response = http.json_response({"policy": current.as_json(), "version": current.version})
    response.headers["ETag"] = policy.etag(current)
    return response


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return app.resolve(event, context)
    finally:
        telemetry.flush()
