"""A signed-in user's own credentials: changing the password, forgetting remembered devices."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from mfa_core import audit, lockout, passwords, policy, stepup, telemetry
from mfa_core.audit import RequestContext
from mfa_core.errors import Conflict, InvalidInput, InvalidToken
from mfa_core.members import validate_password
from mfa_core.runtime import Services
from mfa_core.store.repository import ConditionFailed
from mfa_core.tokens import Principal

logger = Logger(child=True)

CHANGE_PASSWORD_ROUTE = "PUT /v1/me/password"  # noqa: S105 - a route key


def change_password(
    svc: Services,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
    context: RequestContext,
) -> None:
    """Replace the caller's password after the current password and, once the user has a
    factor, a recent MFA. Wrong current passwords count towards the lockout.

    Every other session of the user ends (their refresh fails at once and the authorizer
    rejects their access tokens), and every remember-device token stops working. The session
    that made the change stays valid.
    """
    session_id = principal.session_id
    if session_id is None:
        raise InvalidToken()
    user = svc.store.get_user(principal.org_id, principal.user_id)
    if user is None or user.status != "active":
        raise InvalidToken()
    # A user without a factor cannot step up, so the current password alone must do.
    if user.factor_summaries():
        stepup.require(
            svc,
            principal,
            CHANGE_PASSWORD_ROUTE,
            action="Changing the password",
            max_age_cap=policy.step_up_cap(svc.store.get_org(principal.org_id)),
        )
    validate_password(new_password, field="new_password")
    now = svc.clock.now()
    lockout.reject_if_locked(svc, user, now=now, event_type="password.change", context=context)

    def _event(outcome: str, reason: str | None = None) -> audit.AuditEvent:
        return audit.event(
            now=now,
            event_type="password.change",
            outcome=outcome,
            org_id=user.org_id,
            user_id=user.user_id,
            session_id=session_id,
            context=context,
            reason=reason,
        )

    if not passwords.verify_password(user.password_hash, current_password):
        # Counted towards the lockout: a stolen session must not become a way to guess the
        # password. NOTE: guesses sent at the same moment are each checked before any of them
        # is counted, as for the password at login.
        locked = lockout.record_failure(
            svc, user, failure=_event("failure", "wrong_password"), context=context
        )
        telemetry.count(telemetry.PASSWORD_CHANGE_FAILED)
        if locked is not None:
            raise locked
        raise InvalidInput("The current password is incorrect.", field="current_password")
    if current_password == new_password:
        raise InvalidInput("Choose a password other than the current one.", field="new_password")
    try:
        svc.store.change_password(
            user,
            password_hash=passwords.hash_password(new_password),
            keep_session_id=session_id,
            now=now,
            events=[_event("success")],
        )
    except ConditionFailed as exc:
        if "session" in exc.failed:
            raise InvalidToken() from exc
        # A concurrent wrong guess may have locked the account after this check passed.
        fresh = svc.store.get_user(user.org_id, user.user_id)
        if fresh is None or fresh.status != "active":
            raise InvalidToken() from exc
        lockout.check_not_locked(fresh, svc.clock.now())
        raise Conflict("The password changed meanwhile; sign in again and retry.") from exc
    logger.info(
        "Password changed; other sessions ended",
        extra={"org_id": user.org_id, "user_id": user.user_id},
    )


def forget_devices(svc: Services, principal: Principal, *, context: RequestContext) -> None:
    """Make every remember-device token of the caller stop working, on every device.

    Needs no recent MFA: it only takes a shortcut away.
    """
    user = svc.store.get_user(principal.org_id, principal.user_id)
    if user is None or user.status != "active":
        raise InvalidToken()
    event = audit.event(
        now=svc.clock.now(),
        event_type="devices.forget",
        outcome="success",
        org_id=user.org_id,
        user_id=user.user_id,
        session_id=principal.session_id,
        context=context,
    )
    svc.store.forget_devices(user, events=[event])
    logger.info(
        "Remembered devices forgotten", extra={"org_id": user.org_id, "user_id": user.user_id}
    )
