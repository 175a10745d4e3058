"""MFA verification at login."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import http, sessions, telemetry, tokens, verification
from mfa_core.runtime import services

logger = Logger()
app = APIGatewayHttpResolver()
http.install(app)


@dataclass(frozen=True)
class VerifyRequest:
    factor_id: str = field(metadata=http.limits(min_length=1, max_length=64))
    code: str = field(metadata=http.limits(max_length=64))


@app.post("/v1/auth/mfa/verify")
def verify() -> Response[str]:
    body = http.parse_body(app, VerifyRequest)
    code = http.totp_code(body.code)
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.MFA_PENDING})
    )
    pair = verification.verify_login(
        svc, principal, factor_id=body.factor_id, code=code, context=http.request_context(app)
    )
    return http.json_response({"status": "authenticated", **pair.as_json()})


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return app.resolve(event, context)
    finally:
        telemetry.flush()
