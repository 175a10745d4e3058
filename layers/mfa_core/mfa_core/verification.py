"""MFA verification at login: a TOTP code against the login transaction of an mfa_token.

One read (the transaction, the user and the factor together) and one transactional write
(consume the transaction and the time step, reset failures, open the session, audit) make a
successful verification.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from mfa_core import audit, lockout, sessions, telemetry, totp
from mfa_core.audit import RequestContext
from mfa_core.enrollment import open_totp_secret
from mfa_core.errors import InvalidCode, InvalidToken, NotFound
from mfa_core.runtime import Services
from mfa_core.sessions import TokenPair
from mfa_core.store.models import FactorModel, UserModel
from mfa_core.store.repository import ConditionFailed
from mfa_core.tokens import Principal

logger = Logger(child=True)


def verify_login(
    svc: Services,
    principal: Principal,
    *,
    factor_id: str,
    code: str,
    context: RequestContext,
) -> TokenPair:
    """Complete a login with a TOTP code; return the session's token pair.

    `code` must already be six ASCII digits. Raises InvalidToken when the login transaction is
    gone, NotFound for a factor the user does not have, InvalidCode for a wrong or replayed
    code, and LockedOut when the account is locked.
    """
    now = svc.clock.now()
    transaction_id = principal.transaction_id
    if transaction_id is None:
        raise InvalidToken()
    attempt = svc.store.load_login_attempt(
        challenge_id=transaction_id,
        org_id=principal.org_id,
        user_id=principal.user_id,
        factor_id=factor_id,
    )
    challenge, user, factor = attempt.challenge, attempt.user, attempt.factor
    if (
        challenge is None
        or challenge.kind != "login"
        or challenge.consumed_at is not None
        or challenge.expires_at <= now
        or challenge.org_id != principal.org_id
        or challenge.user_id != principal.user_id
        or user is None
        or user.status != "active"
    ):
        raise InvalidToken()
    lockout.reject_if_locked(
        svc, user, now=now, event_type="login.mfa", factor_id=factor_id, context=context
    )
    if factor is None or factor.status != "active" or factor.type != "totp":
        raise NotFound("No active factor with this id.")

    step = totp.matching_step(open_totp_secret(svc, factor), code, now=now)
    if step is None:
        _fail(svc, user, factor, now=now, context=context, reason="invalid_code")
    assert step is not None
    if factor.last_step is not None and step <= factor.last_step:
        _reject_replay(svc, factor, now=now, context=context)

    session, pair = sessions.new_session(
        svc,
        user=user,
        amr=["pwd", "otp", "mfa"],
        acr="aal2",
        auth_time=challenge.auth_time,
        mfa_time=now,
        context=context,
    )
    success = audit.event(
        now=now,
        event_type="login.mfa",
        outcome="success",
        org_id=user.org_id,
        user_id=user.user_id,
        factor_id=factor.factor_id,
        session_id=session.session_id,
        context=context,
        details={"type": "totp"},
    )
    try:
        svc.store.complete_login(
            challenge_id=transaction_id,
            factor=factor,
            step=step,
            session=session,
            now=now,
            events=[success],
        )
    except ConditionFailed as exc:
        _explain_lost_race(svc, exc, user, factor, now=now, context=context)
    telemetry.count(telemetry.MFA_VERIFIED)
    logger.info(
        "MFA verified",
        extra={"org_id": user.org_id, "user_id": user.user_id, "factor_id": factor.factor_id},
    )
    return pair


def _fail(
    svc: Services,
    user: UserModel,
    factor: FactorModel,
    *,
    now: float,
    context: RequestContext,
    reason: str,
) -> None:
    failure = audit.event(
        now=now,
        event_type="login.mfa",
        outcome="failure",
        org_id=user.org_id,
        user_id=user.user_id,
        factor_id=factor.factor_id,
        context=context,
        reason=reason,
        details={"type": factor.type},
    )
    locked = lockout.record_failure(svc, user, failure=failure, context=context)
    telemetry.count(telemetry.MFA_FAILED)
    logger.info(
        "MFA verification failed",
        extra={"org_id": user.org_id, "user_id": user.user_id, "reason": reason},
    )
    if locked is not None:
        raise locked
    raise InvalidCode()


def _reject_replay(
    svc: Services, factor: FactorModel, *, now: float, context: RequestContext
) -> None:
    """Reject a correct code whose time step was already used.

    A replay is audited and logged as a security event but not counted towards lockout. The
    code was right, so it is no evidence of guessing, and counting it would let one
    double-submitted form lock its own user out.
    """
    svc.store.record(
        audit.event(
            now=now,
            event_type="login.mfa",
            outcome="denied",
            org_id=factor.org_id,
            user_id=factor.user_id,
            factor_id=factor.factor_id,
            context=context,
            reason="code_replayed",
            details={"type": factor.type},
        )
    )
    telemetry.count(telemetry.MFA_CODE_REPLAYED)
    logger.warning(
        "TOTP code replayed",
        extra={"org_id": factor.org_id, "user_id": factor.user_id, "factor_id": factor.factor_id},
    )
    raise InvalidCode()


def _explain_lost_race(
    svc: Services,
    exc: ConditionFailed,
    user: UserModel,
    factor: FactorModel,
    *,
    now: float,
    context: RequestContext,
) -> None:
    """Turn a lost conditional write into the error the caller would have got a moment later."""
    if 2 in exc.failed_items:
        fresh = svc.store.get_user(user.org_id, user.user_id)
        if fresh is not None:
            lockout.check_not_locked(fresh, now)
    if 1 in exc.failed_items:
        _reject_replay(svc, factor, now=now, context=context)
    raise InvalidToken() from exc
