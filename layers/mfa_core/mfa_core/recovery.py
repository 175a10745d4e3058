"""Supervised MFA reset: an admin requests it after verifying the user's identity, and other
admins approve it. The final approval disables the user's factors and issues a one-time
recovery code, with which the user signs in once to enroll a new factor.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core import audit, backup_codes, lockout, members, policy, sessions, stepup
from mfa_core.audit import RequestContext
from mfa_core.errors import AuthenticationFailed, Conflict, Forbidden, InvalidInput, NotFound
from mfa_core.runtime import Services
from mfa_core.store.models import ChallengeModel, MfaResetModel, UserModel
from mfa_core.store.repository import ConditionFailed
from mfa_core.tokens import Principal

logger = Logger(child=True)

REQUEST_ROUTE = "POST /v1/orgs/{org_id}/mfa-resets"
APPROVE_ROUTE = "POST /v1/orgs/{org_id}/mfa-resets/{reset_id}/approve"

HOUR = 60 * 60
# A request can be approved for this long after it was made.
REQUEST_LIFETIME = 24 * HOUR
# A recovery code can be used for this long after the final approval.
CODE_LIFETIME = 24 * HOUR
# Reset records stay this long after their request expires; the audit log keeps the history.
RECORD_RETENTION = 30 * 24 * HOUR
MAX_COOLING_OFF_MINUTES = 24 * 60
VERIFICATION_METHODS = ("video_call", "id_document", "manager_attestation")
MAX_PAGE = 100
# Reset ids are audit event ids: epoch milliseconds, then 64 random bits.
RESET_ID_PATTERN = re.compile(r"[0-9]{15}-[0-9a-f]{16}\Z")

# Recovery codes: 20 characters of Crockford's base32 (100 bits), shown as four groups of five.
CODE_LENGTH = 20
CODE_GROUP = 5
CHALLENGE_PREFIX = "recovery#"
CHALLENGE_KIND = "recovery_code"


@dataclass(frozen=True, kw_only=True)
class Verification:
    """The requester's record of the identity check behind a reset request."""

    method: str
    reference: str
    verified_by: str


@dataclass(frozen=True, kw_only=True)
class ResetRequest:
    user_id: str
    reason: str
    verification: Verification
    cooling_off_minutes: int


@dataclass(frozen=True)
class Approval:
    reset: MfaResetModel
    # Set on the final approval only: shown once to the approving admin.
    recovery_code: str | None = None


def required_approvals(org_policy: policy.MfaPolicy, admin_count: int) -> int:
    """Return the approvals a reset needs besides its requester.

    The policy's `reset_approvals` wins where set. Unset, one other admin must approve when the
    org has two or more admins, and none when the requester is its only admin.
    """
    if org_policy.reset_approvals is not None:
        return org_policy.reset_approvals
    return 1 if admin_count >= 2 else 0


def parse_request(document: dict[str, Any]) -> ResetRequest:
    """Validate a reset request's body. Errors name the field and never echo its value."""
    unknown = sorted(set(document) - {"user_id", "reason", "verification", "cooling_off_minutes"})
    if unknown:
        raise InvalidInput("Remove the unknown field.", field=unknown[0])
    user_id = document.get("user_id")
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 64:
        raise InvalidInput("Use the user's id, a string of 1 to 64 characters.", field="user_id")
    reason = document.get("reason")
    if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= 1024:
        raise InvalidInput("Give a reason of 1 to 1024 characters.", field="reason")
    verification = document.get("verification")
    if not isinstance(verification, dict):
        raise InvalidInput(
            "Give the identity verification as an object with method, reference and verified_by.",
            field="verification",
        )
    minutes = document.get("cooling_off_minutes", 0)
    if (
        not isinstance(minutes, int)
        or isinstance(minutes, bool)
        or not 0 <= minutes <= MAX_COOLING_OFF_MINUTES
    ):
        raise InvalidInput(
            f"Use a whole number of minutes from 0 to {MAX_COOLING_OFF_MINUTES}.",
            field="cooling_off_minutes",
        )
    return ResetRequest(
        user_id=user_id,
        reason=reason.strip(),
        verification=parse_verification(verification),
        cooling_off_minutes=minutes,
    )


def parse_verification(document: dict[str, Any]) -> Verification:
    """Validate the identity-verification record. Errors name the field."""
    method = document.get("method")
    if method not in VERIFICATION_METHODS:
        raise InvalidInput(
            f"Use one of: {', '.join(VERIFICATION_METHODS)}.", field="verification.method"
        )
    values = {}
    for name in ("reference", "verified_by"):
        value = document.get(name)
        if not isinstance(value, str) or not 1 <= len(value.strip()) <= 256:
            raise InvalidInput("Use a string of 1 to 256 characters.", field=f"verification.{name}")
        values[name] = value.strip()
    unknown = sorted(set(document) - {"method", "reference", "verified_by"})
    if unknown:
        raise InvalidInput("Remove the unknown field.", field=f"verification.{unknown[0]}")
    return Verification(method=method, **values)


def request_reset(
    svc: Services,
    principal: Principal,
    *,
    org_id: str,
    request: ResetRequest,
    context: RequestContext,
) -> Approval:
    """Record an admin's request to reset `user_id`'s MFA.

    Needs a fresh MFA. The requester may not reset themselves (Forbidden), a user of another
    org is not found, and an org without enough other admins for its policy is a Conflict.
    With no approvals required the reset completes at once and the result carries the code.
    """
    admin = _fresh_admin(svc, principal, org_id, REQUEST_ROUTE, "Requesting an MFA reset")
    user_id, cooling_off_minutes = request.user_id, request.cooling_off_minutes
    verification = request.verification
    if user_id == admin.user_id:
        raise Forbidden("An admin cannot reset their own MFA; ask another admin.")
    target = svc.store.get_user(org_id, user_id)
    if target is None or target.status != "active":
        raise NotFound("No user with this id in the org.")

    admins = svc.store.list_admins(org_id)
    needed = required_approvals(policy.mfa_policy(svc.store.get_org(org_id)), len(admins))
    approvers = [user for user in admins if user.user_id not in (admin.user_id, user_id)]
    if len(approvers) < needed:
        raise Conflict(
            f"This reset needs approval by {needed} other admin(s), and the org has "
            f"{len(approvers)}; add an admin who can approve it."
        )
    if needed == 0 and cooling_off_minutes:
        raise InvalidInput(
            "A reset that needs no approval completes at once; use 0 minutes.",
            field="cooling_off_minutes",
        )

    now = svc.clock.now()
    record = {
        "method": verification.method,
        "reference": verification.reference,
        "verified_by": verification.verified_by,
    }
    reset = MfaResetModel(
        org_id,
        audit.new_event_id(now),
        user_id=user_id,
        requested_by=admin.user_id,
        reason=request.reason,
        verification=record,
        status="pending",
        required_approvals=needed,
        approvals=[],
        created_at=now,
        not_before=now + cooling_off_minutes * 60,
        expires_at=now + REQUEST_LIFETIME,
        purge_at=int(now) + REQUEST_LIFETIME + RECORD_RETENTION,
    )
    event = _event(
        now,
        reset,
        "mfa_reset.request",
        context,
        actor=admin.user_id,
        details={
            "reason": request.reason,
            "verification": record,
            "required_approvals": needed,
            "cooling_off_minutes": cooling_off_minutes,
        },
    )
    svc.store.create_reset(reset, [event])
    logger.info(
        "MFA reset requested",
        extra={"org_id": org_id, "user_id": user_id, "reset_id": reset.reset_id},
    )
    if needed == 0:
        return _complete(svc, reset, admin, target, now=now, context=context)
    return Approval(reset)


def approve_reset(
    svc: Services, principal: Principal, *, org_id: str, reset_id: str, context: RequestContext
) -> Approval:
    """Approve a pending reset as another admin, completing it on the last approval needed.

    Needs a fresh MFA. The requester, and an admin who approved already, are Forbidden. A
    reset that is not pending, still cooling off or expired is a Conflict; an expired one is
    marked expired first. So is a reset whose requester or an earlier approver has been
    demoted or disabled since, because their part in it no longer counts.
    """
    admin = _fresh_admin(svc, principal, org_id, APPROVE_ROUTE, "Approving an MFA reset")
    reset = _pending_reset(svc, org_id, reset_id, context=context)
    now = svc.clock.now()
    if admin.user_id == reset.requested_by:
        raise Forbidden("The admin who requested a reset cannot approve it.")
    if admin.user_id == reset.user_id:
        raise Forbidden("An admin cannot approve the reset of their own MFA.")
    if admin.user_id in (reset.approvals or []):
        raise Forbidden("You approved this reset already; another admin must approve it.")
    if now < reset.not_before:
        raise Conflict(
            f"This reset is cooling off; approve it after {int(reset.not_before)} "
            "(seconds since the epoch)."
        )

    if len(reset.approvals or []) + 1 < reset.required_approvals:
        event = _event(now, reset, "mfa_reset.approve", context, actor=admin.user_id)
        try:
            svc.store.approve_reset(reset, approver_id=admin.user_id, now=now, events=[event])
        except ConditionFailed as exc:
            raise _approval_conflict(exc) from exc
        reset.approvals = [*(reset.approvals or []), admin.user_id]
        return Approval(reset)

    target = svc.store.get_user(org_id, reset.user_id)
    if target is None or target.status != "active":
        raise Conflict("The user of this reset no longer exists or is disabled.")
    return _complete(svc, reset, admin, target, now=now, context=context)


def cancel_reset(
    svc: Services, principal: Principal, *, org_id: str, reset_id: str, context: RequestContext
) -> MfaResetModel:
    """Cancel a pending reset; any admin of the org may, except the admin being reset.

    The holder of a hijacked admin account could otherwise keep cancelling the reset that
    would end its sessions.
    """
    admin = members.require_admin(svc, principal, org_id)
    reset = _pending_reset(svc, org_id, reset_id, context=context)
    if admin.user_id == reset.user_id:
        raise Forbidden("An admin cannot cancel the reset of their own MFA; ask another admin.")
    now = svc.clock.now()
    event = _event(now, reset, "mfa_reset.cancel", context, actor=admin.user_id)
    try:
        svc.store.close_reset(reset, status="cancelled", by=admin.user_id, now=now, events=[event])
    except ConditionFailed as exc:
        raise Conflict("This reset is no longer pending.") from exc
    logger.info(
        "MFA reset cancelled",
        extra={"org_id": org_id, "user_id": reset.user_id, "reset_id": reset_id},
    )
    reset.status, reset.closed_at, reset.closed_by = "cancelled", now, admin.user_id
    return reset


def list_resets(
    svc: Services, principal: Principal, *, org_id: str, limit: int, before: str | None
) -> tuple[list[MfaResetModel], str | None]:
    """Return a page of the org's resets, newest first, for an admin, and the `next` cursor.

    `before` is the `next` of the previous page: the id of its oldest reset.
    """
    members.require_admin(svc, principal, org_id)
    if before is not None and not RESET_ID_PATTERN.match(before):
        raise InvalidInput("Use the 'next' value of the previous page.", field="next")
    return svc.store.list_resets(org_id, limit=limit, before=before)


def as_json(reset: MfaResetModel, *, now: float) -> dict[str, Any]:
    """Describe a reset for admins; a pending one past its expiry shows as expired."""
    status = reset.status
    if status == "pending" and now >= reset.expires_at:
        status = "expired"
    verification: Any = reset.verification
    if not isinstance(verification, dict):
        verification = verification.as_dict()
    return {
        "reset_id": reset.reset_id,
        "user_id": reset.user_id,
        "status": status,
        "requested_by": reset.requested_by,
        "reason": reset.reason,
        "verification": dict(verification),
        "required_approvals": int(reset.required_approvals),
        "approvals": list(reset.approvals or []),
        "created_at": int(reset.created_at),
        "not_before": int(reset.not_before),
        "expires_at": int(reset.expires_at),
        "closed_at": None if reset.closed_at is None else int(reset.closed_at),
        "closed_by": reset.closed_by,
    }


def _fresh_admin(
    svc: Services, principal: Principal, org_id: str, route: str, action: str
) -> UserModel:
    admin = members.require_admin(svc, principal, org_id)
    stepup.require(
        svc,
        principal,
        route,
        action=action,
        max_age_cap=policy.step_up_cap(svc.store.get_org(org_id)),
    )
    return admin


def _approval_conflict(exc: ConditionFailed) -> Conflict:
    if "admin" in exc.failed:
        return Conflict(
            "The admin who requested or approved this reset is no longer an active admin; "
            "request a new reset."
        )
    return Conflict("This reset changed meanwhile; read it again and retry.")


def _pending_reset(
    svc: Services, org_id: str, reset_id: str, *, context: RequestContext
) -> MfaResetModel:
    """Return a pending, unexpired reset; mark an expired one as such and raise Conflict."""
    # An id of another shape names no reset, and DynamoDB rejects keys over 1,024 bytes.
    reset = svc.store.get_reset(org_id, reset_id) if RESET_ID_PATTERN.match(reset_id) else None
    if reset is None:
        raise NotFound("No MFA reset with this id in the org.")
    if reset.status != "pending":
        raise Conflict(f"This reset is {reset.status}; request a new one.")
    now = svc.clock.now()
    if now >= reset.expires_at:
        event = _event(now, reset, "mfa_reset.expire", context, actor=None)
        # A request that closed it meanwhile audited that itself.
        with contextlib.suppress(ConditionFailed):
            svc.store.close_reset(reset, status="expired", by=None, now=now, events=[event])
        raise Conflict("This reset expired; request a new one.")
    return reset


def _complete(
    svc: Services,
    reset: MfaResetModel,
    admin: UserModel,
    target: UserModel,
    *,
    now: float,
    context: RequestContext,
) -> Approval:
    if target.last_reset_at is not None and target.last_reset_at >= reset.created_at:
        # Otherwise a stale request could undo the recovery that a later reset started.
        raise Conflict(
            "Another reset of this user completed after this one was requested; cancel this "
            "one, and request a new reset if the user needs one."
        )
    code = generate_code()
    challenge = ChallengeModel(
        CHALLENGE_PREFIX + code_digest(svc.pepper, normalize_code(code) or ""),
        kind=CHALLENGE_KIND,
        org_id=target.org_id,
        user_id=target.user_id,
        created_at=now,
        expires_at=int(now) + CODE_LIFETIME,
    )
    factors = [
        f for f in svc.store.list_factors(target.org_id, target.user_id) if f.status == "active"
    ]
    live = [
        s
        for s in svc.store.list_sessions(target.org_id, target.user_id)
        if sessions.is_live(s, now)
    ]
    events = [
        _event(now, reset, "mfa_reset.approve", context, actor=admin.user_id),
        _event(
            now,
            reset,
            "mfa_reset.complete",
            context,
            actor=admin.user_id,
            details={"factors_disabled": len(factors), "sessions_ended": len(live)},
        ),
    ]
    try:
        svc.store.complete_reset(
            reset,
            approver_id=admin.user_id,
            user=target,
            factors=factors,
            recovery_code=challenge,
            now=now,
            events=events,
            revoked_sessions=sessions.revocations(
                svc, live, reason="mfa_reset", context=context, actor=f"user:{admin.user_id}"
            ),
        )
    except ConditionFailed as exc:
        if "admin" in exc.failed:
            raise _approval_conflict(exc) from exc
        raise Conflict("This reset or the user's factors changed meanwhile; retry.") from exc
    logger.info(
        "MFA reset completed",
        extra={"org_id": target.org_id, "user_id": target.user_id, "reset_id": reset.reset_id},
    )
    svc.notifier.mfa_reset(org_id=target.org_id, user_id=target.user_id, reset_id=reset.reset_id)
    reset.status, reset.closed_at, reset.closed_by = "completed", now, admin.user_id
    if admin.user_id != reset.requested_by:
        reset.approvals = [*(reset.approvals or []), admin.user_id]
    return Approval(reset, recovery_code=code)


# -- recovery codes ----------------------------------------------------------------------------


def generate_code() -> str:
    raw = "".join(secrets.choice(backup_codes.ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + CODE_GROUP] for i in range(0, CODE_LENGTH, CODE_GROUP))


def normalize_code(code: str) -> str | None:
    """Return a recovery code in canonical form, or None if it cannot be one."""
    canonical = (
        code.strip().upper().replace("-", "").replace(" ", "").translate(backup_codes.LOOK_ALIKES)
    )
    if len(canonical) != CODE_LENGTH or any(c not in backup_codes.ALPHABET for c in canonical):
        return None
    return canonical


def code_digest(pepper: bytes, canonical: str) -> str:
    """Return the stored form of a canonical code: HMAC-SHA256 under the pepper, in hex."""
    return hmac.new(pepper, b"recovery:" + canonical.encode("ascii"), hashlib.sha256).hexdigest()


def spend_code(svc: Services, user: UserModel, code: str, *, context: RequestContext) -> None:
    """Spend `user`'s recovery code at login, once.

    A wrong, expired or used code, one of another user, or one issued before the user's
    sessions cut-off last moved (as a later reset moves it) is audited, counts toward the
    lockout and raises AuthenticationFailed (LockedOut when the account locks now).
    """
    now = svc.clock.now()
    canonical = normalize_code(code)
    challenge_id = CHALLENGE_PREFIX + code_digest(svc.pepper, canonical) if canonical else None
    stored = svc.store.get_challenge(challenge_id) if challenge_id else None
    usable = (
        stored is not None
        and stored.kind == CHALLENGE_KIND
        and stored.org_id == user.org_id
        and stored.user_id == user.user_id
        and stored.consumed_at is None
        and stored.expires_at > now
        # A later reset, a new factor or a new role moves the cut-off and voids older codes.
        and (user.sessions_valid_after is None or stored.created_at >= user.sessions_valid_after)
    )
    if usable and stored is not None and challenge_id is not None:
        success = _login_event(now, user, "success", context)
        try:
            svc.store.spend_recovery_code(
                challenge_id, user, issued_at=stored.created_at, now=now, events=[success]
            )
        except ConditionFailed:
            usable = False  # Another login spent it first, or the cut-off moved meanwhile.
        else:
            logger.info(
                "Recovery code accepted", extra={"org_id": user.org_id, "user_id": user.user_id}
            )
            return

    failure = _login_event(now, user, "failure", context, reason="invalid_recovery_code")
    logger.warning("Recovery code rejected", extra={"org_id": user.org_id, "user_id": user.user_id})
    locked = lockout.record_failure(svc, user, failure=failure, context=context)
    if locked is not None:
        raise locked
    raise AuthenticationFailed()


def _login_event(
    now: float, user: UserModel, outcome: str, context: RequestContext, *, reason: str | None = None
) -> audit.AuditEvent:
    return audit.event(
        now=now,
        event_type="login.recovery_code",
        outcome=outcome,
        org_id=user.org_id,
        user_id=user.user_id,
        context=context,
        reason=reason,
    )


def _event(
    now: float,
    reset: MfaResetModel,
    event_type: str,
    context: RequestContext,
    *,
    actor: str | None,
    details: dict[str, Any] | None = None,
) -> audit.AuditEvent:
    return audit.event(
        now=now,
        event_type=event_type,
        outcome="success",
        org_id=reset.org_id,
        user_id=reset.user_id,
        actor=f"user:{actor}" if actor else "system",
        context=context,
        details={
            "reset_id": reset.reset_id,
            "expires_at": int(reset.expires_at),
            **(details or {}),
        },
    )
