"""Password login: the first factor, and the decision on what the second one must be."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core import audit, lockout, passwords, sessions, telemetry, tokens
from mfa_core.audit import RequestContext
from mfa_core.errors import AuthenticationFailed
from mfa_core.identity import normalize_email, normalize_org_id
from mfa_core.runtime import Services
from mfa_core.store.models import ChallengeModel, UserModel

logger = Logger(child=True)

AUTHENTICATED = "authenticated"
MFA_REQUIRED = "mfa_required"
ENROLLMENT_REQUIRED = "enrollment_required"


@dataclass(frozen=True)
class LoginResult:
    status: str
    body: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, **self.body}


def login(
    svc: Services, *, org_id: str, email: str, password: str, context: RequestContext
) -> LoginResult:
    """Check the password and decide the next step from the org's enforcement setting.

    An unknown email, a disabled account and a wrong password all raise the same
    AuthenticationFailed after the same argon2 work.
    """
    org_id = normalize_org_id(org_id)
    email = normalize_email(email)
    now = svc.clock.now()

    # NOTE: wrong passwords are not counted per account (that would let anyone lock an account
    # whose email they know); API Gateway's route throttling and argon2's cost slow guessing.
    user = svc.store.find_user_by_email(org_id, email)
    known = user is not None and user.status == "active"
    password_ok = passwords.verify_password(
        user.password_hash if known and user else None, password
    )
    if user is None or not known or not password_ok:
        reason = "wrong_password" if known else "unknown_or_disabled_account"
        svc.store.record(
            audit.event(
                now=now,
                event_type="login.password",
                outcome="failure",
                org_id=org_id,
                user_id=user.user_id if user else None,
                context=context,
                reason=reason,
            )
        )
        logger.info("Login failed", extra={"org_id": org_id, "reason": reason})
        telemetry.count(telemetry.LOGIN_FAILED)
        raise AuthenticationFailed()

    lockout.reject_if_locked(svc, user, now=now, event_type="login.password", context=context)

    org = svc.store.get_org(org_id)
    enforcement = org.enforcement if org else "required"
    factors = user.factor_summaries()

    if factors and enforcement != "off":
        return _start_mfa(svc, user=user, factors=factors, now=now, context=context)
    if enforcement == "required":
        return _require_enrollment(svc, user=user, now=now, context=context)

    session, pair = sessions.new_session(
        svc, user=user, amr=["pwd"], acr="aal1", auth_time=now, mfa_time=None, context=context
    )
    svc.store.open_session(
        session,
        [_event(now, user, "login", "success", context, session_id=session.session_id)],
    )
    logger.info("Login succeeded", extra={"org_id": org_id, "user_id": user.user_id, "acr": "aal1"})
    telemetry.count(telemetry.LOGIN_SUCCEEDED)
    body: dict[str, Any] = pair.as_json()
    if not factors:
        body["mfa_enrollment_recommended"] = enforcement == "optional"
    return LoginResult(AUTHENTICATED, body)


def _start_mfa(
    svc: Services, *, user: UserModel, factors: dict[str, Any], now: float, context: RequestContext
) -> LoginResult:
    transaction_id = secrets.token_urlsafe(24)
    lifetime = svc.settings.mfa_token_seconds
    challenge = ChallengeModel(
        transaction_id,
        kind="login",
        org_id=user.org_id,
        user_id=user.user_id,
        created_at=now,
        expires_at=int(now) + lifetime,
        auth_time=now,
        amr=["pwd"],
    )
    svc.store.save_challenge(
        challenge, [_event(now, user, "login.password", "success", context, reason="mfa_required")]
    )
    mfa_token = svc.tokens.issue(
        token_type=tokens.MFA_PENDING,
        org_id=user.org_id,
        user_id=user.user_id,
        lifetime=lifetime,
        txn=transaction_id,
    )
    logger.info(
        "Password accepted; MFA required", extra={"org_id": user.org_id, "user_id": user.user_id}
    )
    listed = [
        {"factor_id": factor_id, "type": info.get("type"), "label": info.get("label")}
        for factor_id, info in sorted(factors.items())
    ]
    return LoginResult(
        MFA_REQUIRED, {"mfa_token": mfa_token, "expires_in": lifetime, "factors": listed}
    )


def _require_enrollment(
    svc: Services, *, user: UserModel, now: float, context: RequestContext
) -> LoginResult:
    svc.store.record(
        _event(now, user, "login.password", "success", context, reason="enrollment_required")
    )
    lifetime = svc.settings.enrollment_token_seconds
    enrollment_token = svc.tokens.issue(
        token_type=tokens.ENROLLMENT,
        org_id=user.org_id,
        user_id=user.user_id,
        lifetime=lifetime,
    )
    logger.info(
        "Password accepted; enrollment required",
        extra={"org_id": user.org_id, "user_id": user.user_id},
    )
    return LoginResult(
        ENROLLMENT_REQUIRED, {"enrollment_token": enrollment_token, "expires_in": lifetime}
    )


def _event(
    now: float,
    user: UserModel,
    event_type: str,
    outcome: str,
    context: RequestContext,
    *,
    reason: str | None = None,
    session_id: str | None = None,
) -> audit.AuditEvent:
    return audit.event(
        now=now,
        event_type=event_type,
        outcome=outcome,
        org_id=user.org_id,
        user_id=user.user_id,
        context=context,
        reason=reason,
        session_id=session_id,
    )
