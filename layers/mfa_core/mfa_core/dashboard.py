"""The enrollment dashboard: each member's MFA state under the org's policy, and a summary."""

from __future__ import annotations

from collections import Counter
from typing import Any

from mfa_core import members, policy, webauthn
from mfa_core.runtime import Services
from mfa_core.store.models import UserModel
from mfa_core.tokens import Principal

ENROLLED = "enrolled"
GRACE = "grace"
OVERDUE = "overdue"
LOCKED = "locked"
# After a supervised reset, until the member signs in with the recovery code.
RECOVERY_PENDING = "recovery_pending"
NOT_REQUIRED = "not_required"
DISABLED = "disabled"
# Members read per request while the summary goes through the whole org.
SUMMARY_PAGE = 500


def mfa_status(
    svc: Services, principal: Principal, *, org_id: str, limit: int, after: str | None
) -> dict[str, Any]:
    """Return one page of members with their MFA state, and a summary of the whole org.

    A member is `enrolled` with a factor of an allowed method (and a security key where the
    role needs one), `grace` or `overdue` without one where MFA is required of them (before or
    after the deadline; a grace period that has not started yet counts as grace), `locked`
    while locked out, `recovery_pending` after an MFA reset until the recovery code is used,
    `not_required` otherwise, and `disabled` when disabled.
    """
    members.require_admin(svc, principal, org_id)
    members.check_cursor(after)
    org_policy = policy.mfa_policy(svc.store.get_org(org_id))
    now = svc.clock.now()
    users, following = svc.store.list_users(org_id, limit=limit, after=after)
    listed = [member_status(user, org_policy, now) for user in users]
    # NOTE: the summary reads every member of the org on each request, so its cost grows with
    # the org; the scheduled scan is the place for very large orgs.
    summary = summarize(svc, org_id, org_policy, now)
    return {"members": listed, "next": following, "summary": summary}


def member_status(user: UserModel, org_policy: policy.MfaPolicy, now: float) -> dict[str, Any]:
    rule = org_policy.rule_for(role=user.role, now=now)
    # A security key blocked as a suspected clone is rejected at every verification, so it
    # counts neither as a method nor towards enrollment.
    usable = {
        factor_id: info
        for factor_id, info in user.factor_summaries().items()
        if not info.get("blocked")
    }
    methods = sorted({str(info.get("type")) for info in usable.values()})
    allowed = {str(info.get("type")) for info in usable.values()} & rule.methods
    has_key = webauthn.TYPE in allowed
    required = rule.enforcement == "required"
    deadline = None
    if user.status != "active":
        status = DISABLED
    elif user.locked_until is not None and user.locked_until > now:
        status = LOCKED
    elif user.recovery_required:
        status = RECOVERY_PENDING
    elif allowed and (has_key or not rule.security_key):
        status = ENROLLED
    elif not required and not allowed:
        status = NOT_REQUIRED
    else:
        started = user.key_grace_started_at if allowed else user.grace_started_at
        if started is not None:
            deadline = int(org_policy.grace_deadline(started))
        in_grace = org_policy.grace_days > 0 and (deadline is None or now < deadline)
        status = GRACE if in_grace else OVERDUE
    return {
        "user_id": user.user_id,
        "email": user.email,
        "role": user.role,
        "methods": methods,
        "enforced": required,
        "security_key_required": rule.security_key,
        "deadline": deadline,
        "last_mfa_at": int(user.last_mfa_at) if user.last_mfa_at else None,
        "status": status,
    }


def summarize(
    svc: Services, org_id: str, org_policy: policy.MfaPolicy, now: float
) -> dict[str, Any]:
    """Count the org's members by status, by role and by method, reading every member."""
    statuses: Counter[str] = Counter()
    by_role: dict[str, Counter[str]] = {}
    by_method: Counter[str] = Counter()
    after = None
    while True:
        users, after = svc.store.list_users(org_id, limit=SUMMARY_PAGE, after=after)
        for user in users:
            entry = member_status(user, org_policy, now)
            statuses[entry["status"]] += 1
            if entry["status"] == DISABLED:
                continue
            role = by_role.setdefault(user.role, Counter())
            role["members"] += 1
            role["enrolled"] += entry["status"] == ENROLLED
            by_method.update(entry["methods"])
        if after is None:
            break
    active = sum(count for status, count in statuses.items() if status != DISABLED)
    return {
        "members": active,
        "by_status": dict(statuses),
        "enrollment_rate": _rate(statuses[ENROLLED], active),
        "by_role": {
            role: {
                "members": counts["members"],
                "enrolled": counts["enrolled"],
                "enrollment_rate": _rate(counts["enrolled"], counts["members"]),
            }
            for role, counts in sorted(by_role.items())
        },
        "by_method": dict(sorted(by_method.items())),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
