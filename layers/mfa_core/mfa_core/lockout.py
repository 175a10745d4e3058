"""Consecutive failed verifications, counted per user across all factors.

After `lockout_threshold` failures in a row the account is locked for `lockout_seconds`; a
successful verification resets the count. The count is written with optimistic concurrency, so
concurrent wrong codes are all counted.
"""

from __future__ import annotations

import math

from aws_lambda_powertools import Logger

from mfa_core import audit, telemetry
from mfa_core.audit import AuditEvent, RequestContext
from mfa_core.errors import DependencyFailed, LockedOut
from mfa_core.runtime import Services
from mfa_core.store.models import UserModel
from mfa_core.store.repository import ConditionFailed

logger = Logger(child=True)

_MAX_WRITE_ATTEMPTS = 20


def check_not_locked(user: UserModel, now: float) -> None:
    if user.locked_until is not None and user.locked_until > now:
        raise LockedOut(math.ceil(user.locked_until - now))


def reject_if_locked(
    svc: Services,
    user: UserModel,
    *,
    now: float,
    event_type: str,
    context: RequestContext,
    factor_id: str | None = None,
) -> None:
    """Raise LockedOut while the account is locked, after auditing the rejected attempt."""
    try:
        check_not_locked(user, now)
    except LockedOut:
        svc.store.record(
            audit.event(
                now=now,
                event_type=event_type,
                outcome="denied",
                org_id=user.org_id,
                user_id=user.user_id,
                factor_id=factor_id,
                context=context,
                reason="locked_out",
            )
        )
        raise


def record_failure(
    svc: Services,
    user: UserModel,
    *,
    failure: AuditEvent,
    context: RequestContext,
) -> LockedOut | None:
    """Count one failed verification; return the LockedOut error if the account is now locked."""
    threshold = svc.settings.lockout_threshold
    current: UserModel | None = user
    for _ in range(_MAX_WRITE_ATTEMPTS):
        if current is None:
            return None
        now = svc.clock.now()
        lock_expired = current.locked_until is not None and current.locked_until <= now
        count = 1 if lock_expired else int(current.failed_count or 0) + 1
        locks_now = count >= threshold
        already_locked = current.locked_until is not None and current.locked_until > now
        locked_until = (
            current.locked_until
            if already_locked
            else (now + svc.settings.lockout_seconds if locks_now else None)
        )
        events = [failure]
        if locks_now and not already_locked:
            events.append(
                audit.event(
                    now=now,
                    event_type="account.lockout",
                    outcome="denied",
                    org_id=current.org_id,
                    user_id=current.user_id,
                    context=context,
                    details={"failed_count": count},
                )
            )
        try:
            svc.store.record_failure(
                current, failed_count=count, locked_until=locked_until, now=now, events=events
            )
        except ConditionFailed:
            current = svc.store.get_user(user.org_id, user.user_id)
            continue
        if locks_now and not already_locked:
            telemetry.count(telemetry.ACCOUNT_LOCKED)
            logger.warning(
                "Account locked after consecutive MFA failures",
                extra={"org_id": current.org_id, "user_id": current.user_id, "failed_count": count},
            )
        if locked_until is not None:
            return LockedOut(math.ceil(locked_until - now))
        return None
    # NOTE: a failure that loses this many races in a row gets a 503 and is not counted.
    raise DependencyFailed("Recording the failed attempt kept conflicting. Retry the request.")
