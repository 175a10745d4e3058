"""A user's own factors: TOTP enrollment, its confirmation, and the factor list."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core import audit, lockout, sessions, telemetry, tokens, totp
from mfa_core.adapters.kms import SealedValueError
from mfa_core.audit import RequestContext
from mfa_core.errors import (
    Conflict,
    InvalidCode,
    InvalidInput,
    InvalidToken,
    NotFound,
    StepUpRequired,
)
from mfa_core.runtime import Services
from mfa_core.store.models import FactorModel, UserModel, user_key
from mfa_core.store.repository import ConditionFailed
from mfa_core.tokens import Principal

logger = Logger(child=True)

PENDING_SECONDS = 15 * 60
MAX_FACTORS = 20
MAX_LABEL = 64
DEFAULT_LABEL = "Authenticator app"
# Maximum age in seconds of the MFA that lets a user who has a factor add another.
FACTOR_CHANGE_MAX_MFA_AGE = 5 * 60


@dataclass(frozen=True)
class TotpEnrollment:
    factor_id: str
    secret: str
    otpauth_uri: str
    qr_svg: str
    expires_at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "factor_id": self.factor_id,
            "type": "totp",
            "status": "pending",
            "secret": self.secret,
            "otpauth_uri": self.otpauth_uri,
            "qr_svg": self.qr_svg,
            "expires_at": self.expires_at,
        }


def validate_label(label: str | None) -> str:
    if label is None:
        return DEFAULT_LABEL
    label = label.strip()
    if not 1 <= len(label) <= MAX_LABEL or not label.isprintable():
        raise InvalidInput(f"Use a label of 1 to {MAX_LABEL} printable characters.", field="label")
    return label


def _current_user(svc: Services, principal: Principal) -> UserModel:
    user = svc.store.get_user(principal.org_id, principal.user_id)
    if user is None or user.status != "active":
        raise InvalidToken()
    return user


def authorize_factor_change(svc: Services, principal: Principal, user: UserModel) -> bool:
    """Allow a change to a user's factors; return whether the user has no active factor yet.

    Once a user has a factor, a change needs an MFA in the last FACTOR_CHANGE_MAX_MFA_AGE
    seconds. Otherwise a password alone, through an older password-only session or an
    enrollment token, could add a factor of its own next to the owner's. Enrollment tokens
    serve only users without an active factor. In an org whose enforcement is "off", login
    never requests a factor, so a session is enough there.
    """
    if not user.factor_summaries():
        return True
    if principal.token_type == tokens.ENROLLMENT:
        raise InvalidToken("The enrollment token is spent: the user already has an active factor.")
    org = svc.store.get_org(user.org_id)
    if org is not None and org.enforcement == "off":
        return False
    mfa_time = principal.claims.get("mfa_time")
    max_age = FACTOR_CHANGE_MAX_MFA_AGE
    if not isinstance(mfa_time, int) or svc.clock.now() - mfa_time > max_age:
        raise StepUpRequired(
            f"Changing factors needs an MFA verification in the last {max_age // 60} minutes; "
            "sign in again with a factor.",
            max_mfa_age=max_age,
        )
    return False


def enroll_totp(
    svc: Services, principal: Principal, *, label: str | None, context: RequestContext
) -> TotpEnrollment:
    """Create a pending TOTP factor; the secret is returned here once and stored sealed."""
    label = validate_label(label)
    user = _current_user(svc, principal)
    authorize_factor_change(svc, principal, user)
    now = svc.clock.now()
    live = [f for f in svc.store.list_factors(user.org_id, user.user_id) if _is_usable(f, now)]
    # NOTE: the limit is read before the write, so concurrent enrollments can pass it by a few.
    if len(live) >= MAX_FACTORS:
        raise Conflict(f"A user can have at most {MAX_FACTORS} factors; remove one first.")

    secret = totp.new_secret()
    factor_id = f"f_{secrets.token_hex(12)}"
    expires_at = int(now) + PENDING_SECONDS
    factor = FactorModel(
        user_key(user.org_id, user.user_id),
        factor_id,
        org_id=user.org_id,
        user_id=user.user_id,
        type="totp",
        status="pending",
        label=label,
        created_at=now,
        sealed_secret=svc.cipher.seal(
            secret.encode("ascii"), org_id=user.org_id, user_id=user.user_id
        ),
        expires_at=expires_at,
    )
    event = audit.event(
        now=now,
        event_type="factor.enroll",
        outcome="success",
        org_id=user.org_id,
        user_id=user.user_id,
        factor_id=factor_id,
        context=context,
        details={"type": "totp", "status": "pending"},
    )
    svc.store.add_pending_factor(factor, [event])
    logger.info(
        "TOTP factor pending",
        extra={"org_id": user.org_id, "user_id": user.user_id, "factor_id": factor_id},
    )
    uri = totp.provisioning_uri(secret, account=user.email, issuer=svc.settings.totp_issuer)
    return TotpEnrollment(
        factor_id=factor_id,
        secret=secret,
        otpauth_uri=uri,
        qr_svg=totp.qr_svg(uri),
        expires_at=expires_at,
    )


def confirm_totp(
    svc: Services, principal: Principal, *, factor_id: str, code: str, context: RequestContext
) -> dict[str, Any]:
    """Activate a pending TOTP factor with a valid code; wrong codes count towards lockout."""
    now = svc.clock.now()
    user = _current_user(svc, principal)
    first_factor = authorize_factor_change(svc, principal, user)
    lockout.reject_if_locked(
        svc, user, now=now, event_type="factor.confirm", factor_id=factor_id, context=context
    )
    factor = svc.store.get_factor(user.org_id, user.user_id, factor_id)
    if factor is None or factor.type != "totp" or not _is_usable(factor, now):
        raise NotFound("No TOTP factor with this id.")
    if factor.status != "pending":
        raise Conflict("This factor is already active.")

    secret = open_totp_secret(svc, factor)
    step = totp.matching_step(secret, code, now=now)
    if step is None:
        failure = _event(now, factor, "factor.confirm", "failure", context, reason="invalid_code")
        locked = lockout.record_failure(svc, user, failure=failure, context=context)
        telemetry.count(telemetry.MFA_FAILED)
        logger.info("TOTP confirmation failed", extra=_ids(factor))
        if locked is not None:
            raise locked
        raise InvalidCode()

    success = _event(now, factor, "factor.activate", "success", context)
    others = [
        session
        for session in svc.store.list_sessions(user.org_id, user.user_id)
        if session.session_id != principal.session_id and sessions.is_live(session, now)
    ]
    revoked = sessions.revocations(svc, others, reason="factor_added", context=context)
    try:
        svc.store.activate_factor(
            factor,
            step=step,
            now=now,
            events=[success],
            keep_session_id=principal.session_id,
            first_factor=first_factor,
            revoked_sessions=revoked,
        )
    except ConditionFailed as exc:
        if 1 in exc.failed_items:
            fresh = svc.store.get_user(user.org_id, user.user_id)
            if fresh is not None:
                lockout.check_not_locked(fresh, now)
            raise Conflict(
                "Another factor was activated meanwhile; adding one more needs a recent MFA."
            ) from exc
        raise Conflict("This factor is no longer pending; list your factors.") from exc
    telemetry.count(telemetry.FACTOR_ACTIVATED)
    logger.info("TOTP factor activated", extra={**_ids(factor), "sessions_revoked": len(others)})
    return {
        "factor_id": factor.factor_id,
        "type": factor.type,
        "status": "active",
        "label": factor.label,
    }


def list_factors(svc: Services, principal: Principal) -> list[dict[str, Any]]:
    now = svc.clock.now()
    return [
        {
            "factor_id": f.factor_id,
            "type": f.type,
            "status": f.status,
            "label": f.label,
            "created_at": int(f.created_at),
            "confirmed_at": int(f.confirmed_at) if f.confirmed_at else None,
            "last_used_at": int(f.last_used_at) if f.last_used_at else None,
        }
        for f in svc.store.list_factors(principal.org_id, principal.user_id)
        if _is_usable(f, now)
    ]


def open_totp_secret(svc: Services, factor: FactorModel) -> str:
    if factor.sealed_secret is None:
        raise NotFound("No TOTP factor with this id.")
    try:
        return svc.cipher.open(
            factor.sealed_secret, org_id=factor.org_id, user_id=factor.user_id
        ).decode("ascii")
    except SealedValueError:
        logger.error("TOTP seed failed to open", extra=_ids(factor))
        raise


def _is_usable(factor: FactorModel, now: float) -> bool:
    """Tell whether a factor counts: active, or pending and not yet expired."""
    if factor.status == "active":
        return True
    return factor.expires_at is not None and factor.expires_at > now


def _ids(factor: FactorModel) -> dict[str, str]:
    return {"org_id": factor.org_id, "user_id": factor.user_id, "factor_id": factor.factor_id}


def _event(
    now: float,
    factor: FactorModel,
    event_type: str,
    outcome: str,
    context: RequestContext,
    *,
    reason: str | None = None,
) -> audit.AuditEvent:
    return audit.event(
        now=now,
        event_type=event_type,
        outcome=outcome,
        org_id=factor.org_id,
        user_id=factor.user_id,
        factor_id=factor.factor_id,
        context=context,
        reason=reason,
        details={"type": factor.type},
    )
