"""Supervised MFA reset: request, approve, cancel and list an org's resets."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import http, recovery, sessions, telemetry, tokens
from mfa_core.runtime import Services, services
from mfa_core.tokens import Principal

logger = Logger()
app = APIGatewayHttpResolver()
http.install(app)


def _caller(svc: Services) -> Principal:
    return sessions.authenticate(svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS}))


def _reset_response(svc: Services, approval: recovery.Approval, *, status: int) -> Response[str]:
    body: dict[str, Any] = recovery.as_json(approval.reset, now=svc.clock.now())
    if approval.recovery_code is not None:
        # Shown once: only its keyed digest is stored.
        body["recovery_code"] = approval.recovery_code
        body["recovery_code_expires_in"] = recovery.CODE_LIFETIME
    return http.json_response(body, status=status)


@app.post("/v1/orgs/<org_id>/mfa-resets")
def request_reset(org_id: str) -> Response[str]:
    request = recovery.parse_request(http.parse_object(app))
    svc = services()
    approval = recovery.request_reset(
        svc, _caller(svc), org_id=org_id, request=request, context=http.request_context(app)
    )
    return _reset_response(svc, approval, status=201)


@app.post("/v1/orgs/<org_id>/mfa-resets/<reset_id>/approve")
def approve_reset(org_id: str, reset_id: str) -> Response[str]:
    svc = services()
    approval = recovery.approve_reset(
        svc, _caller(svc), org_id=org_id, reset_id=reset_id, context=http.request_context(app)
    )
    return _reset_response(svc, approval, status=200)


@app.post("/v1/orgs/<org_id>/mfa-resets/<reset_id>/cancel")
def cancel_reset(org_id: str, reset_id: str) -> Response[str]:
    svc = services()
    reset = recovery.cancel_reset(
        svc, _caller(svc), org_id=org_id, reset_id=reset_id, context=http.request_context(app)
    )
    return http.json_response(recovery.as_json(reset, now=svc.clock.now()))


@app.get("/v1/orgs/<org_id>/mfa-resets")
def list_resets(org_id: str) -> Response[str]:
    svc = services()
    limit, before = http.page_parameters(app, maximum=recovery.MAX_PAGE)
    resets, following = recovery.list_resets(
        svc, _caller(svc), org_id=org_id, limit=limit, before=before
    )
    now = svc.clock.now()
    return http.json_response(
        {"resets": [recovery.as_json(reset, now=now) for reset in resets], "next": following}
    )


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return app.resolve(event, context)
    finally:
        telemetry.flush()
