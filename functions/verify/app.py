"""MFA challenges and verification, at login and for step-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import http, sessions, telemetry, tokens, verification
from mfa_core.errors import InvalidInput
from mfa_core.runtime import services

logger = Logger()
app = APIGatewayHttpResolver()
http.install(app)

# The mfa_token completes a login, and an access token requests a step-up.
ACCEPTED = frozenset({tokens.MFA_PENDING, tokens.ACCESS})


@dataclass(frozen=True)
class ChallengeRequest:
    factor_id: str | None = field(default=None, metadata=http.limits(min_length=1, max_length=64))


@dataclass(frozen=True)
class VerifyRequest:
    factor_id: str | None = field(default=None, metadata=http.limits(min_length=1, max_length=64))
    code: str | None = field(default=None, metadata=http.limits(max_length=64))
    backup_code: str | None = field(default=None, metadata=http.limits(max_length=64))
    credential: dict[str, Any] | None = None
    challenge_id: str | None = field(
        default=None, metadata=http.limits(min_length=1, max_length=64)
    )


@app.post("/v1/auth/mfa/challenge")
def challenge() -> Response[str]:
    body = http.parse_body(app, ChallengeRequest)
    svc = services()
    principal = sessions.authenticate(svc, http.bearer_token(app), accept=ACCEPTED)
    options = verification.start_challenge(
        svc, principal, factor_id=body.factor_id, context=http.request_context(app)
    )
    return http.json_response(options.as_json())


@app.post("/v1/auth/mfa/verify")
def verify() -> Response[str]:
    body = http.parse_body(app, VerifyRequest)
    proof = _proof(body)
    svc = services()
    principal = sessions.authenticate(svc, http.bearer_token(app), accept=ACCEPTED)
    result = verification.verify(svc, principal, proof, context=http.request_context(app))
    return http.json_response(result)


def _proof(body: VerifyRequest) -> verification.Proof:
    given = [body.code, body.credential, body.backup_code]
    if sum(value is not None for value in given) != 1:
        raise InvalidInput(
            "Send exactly one of 'code' (with 'factor_id'), 'credential' (with "
            "'challenge_id') or 'backup_code'.",
            field="code" if body.code is None else "credential",
        )
    if body.backup_code is not None:
        return verification.Proof(backup_code=body.backup_code)
    if body.code is not None:
        if body.factor_id is None:
            raise InvalidInput("Field 'factor_id' is required with a code.", field="factor_id")
        return verification.Proof(
            factor_id=body.factor_id, code=http.totp_code(body.code), challenge_id=body.challenge_id
        )
    if body.challenge_id is None:
        raise InvalidInput(
            "Field 'challenge_id' is required with a credential; it comes from "
            "/v1/auth/mfa/challenge.",
            field="challenge_id",
        )
    return verification.Proof(
        factor_id=body.factor_id, credential=body.credential, challenge_id=body.challenge_id
    )


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return app.resolve(event, context)
    finally:
        telemetry.flush()
