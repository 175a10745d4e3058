"""The decision after a verified SSO login, the same for OIDC and SAML.

The member is found by email within the org (or created, with auto-provisioning). The
identity provider's MFA replaces ours only when the org's policy trusts it (`policy.sso`), the
assertion names an accepted amr or acr value, and the IdP authenticated the user no more than
`max_auth_age_minutes` ago. Otherwise our own MFA follows, as after a password login, with
"fed" in place of "pwd" in the session's amr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from aws_lambda_powertools import Logger

from mfa_core import audit, auth, members, policy, telemetry
from mfa_core.audit import RequestContext
from mfa_core.auth import FEDERATED, FirstFactor, LoginResult
from mfa_core.errors import Conflict, InvalidInput, SsoLoginFailed
from mfa_core.identity import normalize_email
from mfa_core.policy import SsoTrust
from mfa_core.runtime import Services
from mfa_core.sso.assertion import IdpAssertion
from mfa_core.sso.connection import SsoConnection
from mfa_core.store.models import OrgModel, UserModel

logger = Logger(child=True)

# The only signs of a phishing-resistant method at the IdP, and so the only ones that give
# aal3. One is the RFC 8176 amr "hwk" (proof of possession of a hardware-secured key). The
# others are the acr values "phr" (phishing-resistant) and "phrh" (phishing-resistant with a
# hardware-protected key) of OpenID Connect EAP ACR Values 1.0.
PHISHING_RESISTANT_AMR = frozenset({"hwk"})
PHISHING_RESISTANT_ACR = frozenset({"phr", "phrh"})


@dataclass(frozen=True)
class IdpMfa:
    """Whether the IdP's MFA replaces ours (`accepted`), why, and the assurance it gives."""

    accepted: bool
    reason: str
    amr: tuple[str, ...] = ()
    acr: str | None = None


def assess_idp_mfa(trust: SsoTrust, assertion: IdpAssertion, *, now: float) -> IdpMfa:
    """Decide whether the IdP's MFA counts, from the org's trust settings alone."""
    if not trust.trust_idp_mfa:
        return IdpMfa(False, "idp_mfa_not_trusted")

    amr_accepted = bool(set(assertion.amr) & set(trust.accepted_amr))
    acr_accepted = assertion.acr is not None and assertion.acr in trust.accepted_acr
    if not (amr_accepted or acr_accepted):
        return IdpMfa(False, "idp_mfa_not_asserted")

    if assertion.auth_time is None:
        return IdpMfa(False, "auth_time_missing")
    if now - assertion.auth_time > trust.max_auth_age_minutes * 60:
        return IdpMfa(False, "idp_mfa_too_old")

    hardware = bool(set(assertion.amr) & PHISHING_RESISTANT_AMR)
    phishing_resistant = hardware or assertion.acr in PHISHING_RESISTANT_ACR
    amr = (FEDERATED, "mfa", "hwk") if hardware else (FEDERATED, "mfa")
    return IdpMfa(True, "idp_mfa_accepted", amr=amr, acr="aal3" if phishing_resistant else "aal2")


def complete_login(
    svc: Services,
    *,
    org: OrgModel,
    connection: SsoConnection,
    assertion: IdpAssertion,
    context: RequestContext,
) -> LoginResult:
    """Turn a verified IdP assertion into the login's outcome, as POST /v1/auth/login returns it.

    Raises SsoLoginFailed, audited, for an assertion without an email, an unknown email (unless
    `connection.auto_provision`) and a disabled member; the detail is the same for each.
    """
    now = svc.clock.now()
    details: dict[str, Any] = {"protocol": assertion.protocol, **assertion.claims}
    try:
        email = normalize_email(assertion.email or "")
    except InvalidInput:
        _fail(svc, org.org_id, "email_missing", context, details)

    # NOTE: members are matched by email alone. The IdP's subject is audited but not stored, so
    # a provider that lets users change their email can move a login to another member.
    user = svc.store.find_user_by_email(org.org_id, email)
    if user is None and connection.auto_provision:
        user = _provision(svc, org.org_id, email, connection.provision_role, context)
    if user is None:
        _fail(svc, org.org_id, "unknown_email", context, details)
    if user.status != "active":
        _fail(svc, org.org_id, "member_disabled", context, details, user_id=user.user_id)

    idp_mfa = assess_idp_mfa(policy.mfa_policy(org).sso, assertion, now=now)
    details["idp_mfa"] = idp_mfa.reason
    first_factor = FirstFactor(
        amr=FEDERATED,
        event_type="sso.login",
        details=details,
        idp_mfa=(
            # An auth_time ahead of our clock (within the allowed skew) must not make the
            # session's MFA look younger than it is to the step-up checks.
            (list(idp_mfa.amr), idp_mfa.acr, min(float(assertion.auth_time or now), now))
            if idp_mfa.accepted and idp_mfa.acr is not None
            else None
        ),
    )
    logger.info(
        "SSO login verified",
        extra={"org_id": org.org_id, "user_id": user.user_id, "idp_mfa": idp_mfa.reason},
    )
    return auth.decide_login(svc, user, first_factor=first_factor, context=context, now=now)


def _provision(
    svc: Services, org_id: str, email: str, role: str, context: RequestContext
) -> UserModel | None:
    """Create the member that an SSO login names; its random password is never shown."""
    try:
        return members.create_member(
            svc,
            org_id=org_id,
            email=email,
            role=role,
            password=None,
            actor="sso",
            context=context,
        ).user
    except Conflict:
        # A concurrent login created the member first; the email index may lag behind.
        return svc.store.find_user_by_email(org_id, email)


def record_failure(
    svc: Services,
    *,
    org_id: str,
    reason: str,
    context: RequestContext,
    details: dict[str, Any],
    user_id: str | None = None,
) -> None:
    """Audit and log an SSO login that failed, with the claims that were verified, if any."""
    svc.store.record(
        audit.event(
            now=svc.clock.now(),
            event_type="sso.login",
            outcome="failure",
            org_id=org_id,
            user_id=user_id,
            context=context,
            reason=reason,
            details=details,
        )
    )
    logger.warning("SSO login failed", extra={"org_id": org_id, "reason": reason})
    telemetry.count(telemetry.LOGIN_FAILED)


def _fail(
    svc: Services,
    org_id: str,
    reason: str,
    context: RequestContext,
    details: dict[str, Any],
    *,
    user_id: str | None = None,
) -> NoReturn:
    record_failure(
        svc, org_id=org_id, reason=reason, context=context, details=details, user_id=user_id
    )
    raise SsoLoginFailed(reason)
