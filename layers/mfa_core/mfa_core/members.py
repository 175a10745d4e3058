"""Orgs and their members: bootstrapping an org with its first admin, and adding members."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from mfa_core import audit, passwords, stepup
from mfa_core.audit import RequestContext
from mfa_core.errors import Conflict, Forbidden, InvalidInput, NotFound
from mfa_core.identity import (
    is_user_id,
    new_user_id,
    normalize_email,
    normalize_org_id,
    validate_role,
)
from mfa_core.runtime import Services
from mfa_core.store.models import OrgModel, UserModel
from mfa_core.store.repository import ConditionFailed
from mfa_core.tokens import Principal

logger = Logger(child=True)

ENFORCEMENT_LEVELS = ("off", "optional", "required")


@dataclass(frozen=True)
class NewMember:
    user: UserModel
    # Set only when the service generated the password, which is shown once to the creator.
    generated_password: str | None


def validate_password(password: str, *, field: str = "password") -> str:
    """Apply NIST 800-63B length rules: at least 12 characters, at most 256, nothing else."""
    if len(password) < passwords.MIN_LENGTH:
        raise InvalidInput(
            f"Use a password of at least {passwords.MIN_LENGTH} characters.", field=field
        )
    if len(password) > passwords.MAX_LENGTH:
        raise InvalidInput(
            f"Use a password of at most {passwords.MAX_LENGTH} characters.", field=field
        )
    return password


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def _new_user(*, org_id: str, email: str, role: str, password: str | None, now: float) -> NewMember:
    generated = None
    if password is None:
        generated = generate_password()
        password = generated
    validate_password(password)
    email = normalize_email(email)
    user = UserModel(
        org_id,
        new_user_id(),
        email=email,
        email_key=f"{org_id}#{email}",
        role=validate_role(role),
        status="active",
        password_hash=passwords.hash_password(password),
        created_at=now,
        failed_count=0,
        active_factors={},
    )
    return NewMember(user=user, generated_password=generated)


def bootstrap_org(
    svc: Services,
    *,
    org_id: str,
    name: str,
    admin_email: str,
    admin_password: str | None,
    enforcement: str,
) -> NewMember:
    """Create an org with its first admin; an operator action, audited with actor "operator"."""
    org_id = normalize_org_id(org_id)
    if enforcement not in ENFORCEMENT_LEVELS:
        raise InvalidInput(f"Use one of: {', '.join(ENFORCEMENT_LEVELS)}.", field="enforcement")
    name = name.strip()
    if not 1 <= len(name) <= 128:
        raise InvalidInput("Use an org name of 1 to 128 characters.", field="name")
    now = svc.clock.now()
    member = _new_user(
        org_id=org_id, email=admin_email, role="admin", password=admin_password, now=now
    )
    org = OrgModel(org_id, name=name, enforcement=enforcement, created_at=now)
    events = [
        audit.event(
            now=now,
            event_type="org.create",
            outcome="success",
            org_id=org_id,
            actor="operator",
            context=audit.SYSTEM,
            details={"enforcement": enforcement},
        ),
        audit.event(
            now=now,
            event_type="member.create",
            outcome="success",
            org_id=org_id,
            user_id=member.user.user_id,
            actor="operator",
            context=audit.SYSTEM,
            details={"role": "admin"},
        ),
    ]
    svc.store.create_org(org, member.user, events)
    logger.info("Org created", extra={"org_id": org_id, "user_id": member.user.user_id})
    return member


def create_member(
    svc: Services,
    *,
    org_id: str,
    email: str,
    role: str,
    password: str | None,
    actor: str,
    context: RequestContext,
) -> NewMember:
    """Add a member to an org; `actor` is "user:<id>" for an admin, or "operator" for the CLI."""
    org_id = normalize_org_id(org_id, field="org")
    now = svc.clock.now()
    member = _new_user(org_id=org_id, email=email, role=role, password=password, now=now)
    event = audit.event(
        now=now,
        event_type="member.create",
        outcome="success",
        org_id=org_id,
        user_id=member.user.user_id,
        actor=actor,
        context=context,
        details={"role": member.user.role},
    )
    svc.store.create_user(member.user, [event])
    logger.info(
        "Member created", extra={"org_id": org_id, "user_id": member.user.user_id, "actor": actor}
    )
    return member


def require_admin(svc: Services, principal: Principal, org_id: str) -> UserModel:
    """Return the calling admin; another org is not found, a non-admin is forbidden."""
    if principal.org_id != org_id:
        raise NotFound("No org with this id.")
    user = svc.store.get_user(principal.org_id, principal.user_id)
    if user is None or user.status != "active":
        raise NotFound("No org with this id.")
    if user.role != "admin":
        raise Forbidden("Only org admins may do this.")
    return user


CREATE_MEMBER_ROUTE = "POST /v1/orgs/{org_id}/users"


def create_member_as_admin(
    svc: Services,
    principal: Principal,
    *,
    org_id: str,
    email: str,
    role: str,
    password: str | None,
    context: RequestContext,
) -> NewMember:
    """Add a member for one of the org's admins.

    An admin who has a factor needs a recent MFA first (the step-up table's requirement, capped
    by the org's policy), so that a password alone, such as in an org that requires MFA only
    before sensitive operations, cannot create an admin of its own.
    """
    from mfa_core import policy  # noqa: PLC0415 - policy imports this module

    admin = require_admin(svc, principal, org_id)
    if admin.factor_summaries():
        stepup.require(
            svc,
            principal,
            CREATE_MEMBER_ROUTE,
            action="Creating a member",
            max_age_cap=policy.step_up_cap(svc.store.get_org(org_id)),
        )
    return create_member(
        svc,
        org_id=org_id,
        email=email,
        role=role,
        password=password,
        actor=f"user:{admin.user_id}",
        context=context,
    )


MEMBER_STATUSES = ("active", "disabled")
CHANGE_MEMBER_ROUTE = "PATCH /v1/orgs/{org_id}/users/{user_id}"
MAX_PAGE = 1000


def list_members(
    svc: Services, principal: Principal, *, org_id: str, limit: int, after: str | None
) -> dict[str, object]:
    """List an org's members for one of its admins, a page at a time (`after`: a user id)."""
    require_admin(svc, principal, org_id)
    check_cursor(after)
    users, following = svc.store.list_users(org_id, limit=limit, after=after)
    return {
        "members": [member_json(user) for user in users],
        "next": following,
    }


def check_cursor(after: str | None) -> None:
    """Reject a page cursor that is not a member id, as the `next` of a previous page is."""
    if after is not None and not is_user_id(after):
        raise InvalidInput("Use the 'next' value of the previous page.", field="next")


def member_json(user: UserModel) -> dict[str, object]:
    return {
        "user_id": user.user_id,
        "email": user.email,
        "role": user.role,
        "status": user.status,
        "created_at": int(user.created_at),
        "factors": sorted({str(info.get("type")) for info in user.factor_summaries().values()}),
    }


def change_member(
    svc: Services,
    principal: Principal,
    *,
    org_id: str,
    user_id: str,
    role: str | None,
    status: str | None,
    context: RequestContext,
) -> UserModel:
    """Change a member's role or disable (or re-enable) the member, for one of the org's admins.

    Needs a recent MFA once the admin has a factor. An admin cannot change their own role or
    status, and the change is written only while its admin still is an active admin, so an org
    cannot lose its last admin this way, even to two admins demoting each other at once.
    Disabling, or a new role, ends the member's sessions, so that no access token keeps the
    old role.
    """
    from mfa_core import policy  # noqa: PLC0415 - policy imports this module

    admin = require_admin(svc, principal, org_id)
    if admin.factor_summaries():
        stepup.require(
            svc,
            principal,
            CHANGE_MEMBER_ROUTE,
            action="Changing a member",
            max_age_cap=policy.step_up_cap(svc.store.get_org(org_id)),
        )
    if role is None and status is None:
        raise InvalidInput("Send a role, a status, or both.", field="role")
    if role is not None:
        validate_role(role)
    if status is not None and status not in MEMBER_STATUSES:
        raise InvalidInput(f"Use one of: {', '.join(MEMBER_STATUSES)}.", field="status")
    if not is_user_id(user_id):
        raise NotFound("No member with this id.")
    member = svc.store.get_user(org_id, user_id)
    if member is None:
        raise NotFound("No member with this id.")
    if member.user_id == admin.user_id:
        raise Forbidden("Admins cannot change their own role or status; ask another admin.")
    now = svc.clock.now()
    before = {"role": member.role, "status": member.status}
    after = {"role": role or member.role, "status": status or member.status}
    event = audit.event(
        now=now,
        event_type="member.update",
        outcome="success",
        org_id=org_id,
        user_id=member.user_id,
        actor=f"user:{admin.user_id}",
        context=context,
        details={"before": before, "after": after},
    )
    try:
        svc.store.update_member(
            member, role=role, status=status, now=now, events=[event], admin_id=admin.user_id
        )
    except ConditionFailed as exc:
        if "admin" in exc.failed:
            raise Forbidden("Only org admins may do this.") from exc
        raise Conflict("The member changed meanwhile; read it again and retry.") from exc
    logger.info(
        "Member changed",
        extra={"org_id": org_id, "user_id": member.user_id, "actor": admin.user_id, **after},
    )
    member.role, member.status = after["role"], after["status"]
    return member
