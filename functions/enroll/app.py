"""A user's own factors: TOTP, security keys, the factor list and factor removal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import enrollment, http, sessions, telemetry, tokens
from mfa_core.runtime import services

logger = Logger()
app = APIGatewayHttpResolver()
http.install(app)

# Enrollment works with a full session or with the enrollment_token of a user who must enroll.
ACCEPTED = frozenset({tokens.ACCESS, tokens.ENROLLMENT})


@dataclass(frozen=True)
class EnrollTotpRequest:
    label: str | None = field(default=None, metadata=http.limits(max_length=256))


@dataclass(frozen=True)
class ConfirmRequest:
    code: str = field(metadata=http.limits(max_length=64))


@dataclass(frozen=True)
class KeyOptionsRequest:
    label: str | None = field(default=None, metadata=http.limits(max_length=256))


@dataclass(frozen=True)
class RegisterKeyRequest:
    challenge_id: str = field(metadata=http.limits(min_length=1, max_length=64))
    credential: dict[str, Any]
    label: str | None = field(default=None, metadata=http.limits(max_length=256))


@dataclass(frozen=True)
class EnrollSmsRequest:
    phone_number: str = field(metadata=http.limits(min_length=1, max_length=32))
    label: str | None = field(default=None, metadata=http.limits(max_length=256))


@app.get("/v1/me/factors")
def list_factors() -> Response[str]:
    svc = services()
    principal = sessions.authenticate(svc, http.bearer_token(app), accept=ACCEPTED)
    return http.json_response({"factors": enrollment.list_factors(svc, principal)})


@app.post("/v1/me/factors/totp")
def enroll_totp() -> Response[str]:
    body = http.parse_body(app, EnrollTotpRequest)
    svc = services()
    principal = sessions.authenticate(svc, http.bearer_token(app), accept=ACCEPTED)
    result = enrollment.enroll_totp(
        svc, principal, label=body.label, context=http.request_context(app)
    )
    return http.json_response(result.as_json(), status=201)


@app.post("/v1/me/factors/totp/<factor_id>/confirm")
def confirm_totp(factor_id: str) -> Response[str]:
    body = http.parse_body(app, ConfirmRequest)
    code = http.totp_code(body.code)
    svc = services()
    principal = sessions.authenticate(svc, http.bearer_token(app), accept=ACCEPTED)
    result = enrollment.confirm_totp(
        svc, principal, factor_id=factor_id, code=code, context=http.request_context(app)
    )
    return http.json_response(result)


@app.post("/v1/me/factors/webauthn/options")
def key_options() -> Response[str]:
    body = http.parse_body(app, KeyOptionsRequest)
    svc = services()
    principal = sessions.authenticate(svc, http.bearer_token(app), accept=ACCEPTED)
    options = enrollment.start_key_registration(
        svc, principal, label=body.label, context=http.request_context(app)
    )
    return http.json_response(options.as_json())


@app.post("/v1/me/factors/webauthn")
def register_key() -> Response[str]:
    body = http.parse_body(app, RegisterKeyRequest)
    svc = services()
    principal = sessions.authenticate(svc, http.bearer_token(app), accept=ACCEPTED)
    factor = enrollment.register_key(
        svc,
        principal,
        challenge_id=body.challenge_id,
        credential=body.credential,
        label=body.label,
        context=http.request_context(app),
    )
    return http.json_response(factor, status=201)


@app.delete("/v1/me/factors/<factor_id>")
def remove_factor(factor_id: str) -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    enrollment.remove_factor(svc, principal, factor_id=factor_id, context=http.request_context(app))
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


@app.post("/v1/me/factors/sms")
def enroll_sms() -> Response[str]:
    body = http.parse_body(app, EnrollSmsRequest)
    svc = services()
    principal = sessions.authenticate(svc, http.bearer_token(app), accept=ACCEPTED)
    result = enrollment.enroll_sms(
        svc,
        principal,
        phone_number=body.phone_number,
        label=body.label,
        context=http.request_context(app),
    )
    return http.json_response(result, status=201)


@app.post("/v1/me/factors/sms/<factor_id>/confirm")
def confirm_sms(factor_id: str) -> Response[str]:
    body = http.parse_body(app, ConfirmRequest)
    code = http.totp_code(body.code)
    svc = services()
    principal = sessions.authenticate(svc, http.bearer_token(app), accept=ACCEPTED)
    result = enrollment.confirm_sms(
        svc, principal, factor_id=factor_id, code=code, context=http.request_context(app)
    )
    return http.json_response(result)


@app.get("/v1/me/backup-codes")
def backup_code_status() -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    return http.json_response(enrollment.backup_code_status(svc, principal))


@app.post("/v1/me/backup-codes")
def regenerate_backup_codes() -> Response[str]:
    svc = services()
    principal = sessions.authenticate(
        svc, http.bearer_token(app), accept=frozenset({tokens.ACCESS})
    )
    result = enrollment.regenerate_backup_codes(svc, principal, context=http.request_context(app))
    return http.json_response(result, status=201)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return app.resolve(event, context)
    finally:
        telemetry.flush()
