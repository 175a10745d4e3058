"""Password login: the first factor, and the decision on what the second one must be."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core import (
    anomalies,
    audit,
    lockout,
    passwords,
    policy,
    recovery,
    remember,
    sessions,
    sms,
    stepup,
    telemetry,
    tokens,
    webauthn,
)
from mfa_core.audit import RequestContext
from mfa_core.errors import AuthenticationFailed, RecoveryCodeRequired
from mfa_core.identity import normalize_email, normalize_org_id
from mfa_core.runtime import Services
from mfa_core.store.models import ChallengeModel, UserModel
from mfa_core.store.repository import ConditionFailed

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
    svc: Services,
    *,
    org_id: str,
    email: str,
    password: str,
    context: RequestContext,
    device_id: str | None = None,
    remember_device_token: str | None = None,
    recovery_code: str | None = None,
) -> LoginResult:
    """Check the password and decide the next step from the org's policy, role and factors.

    An unknown email, a disabled account and a wrong password all raise the same
    AuthenticationFailed after the same argon2 work. The decision:
    - enforcement off, or optional for a user without a factor: a session (aal1);
    - a usable factor: MFA (mfa_required), unless the policy re-verifies only before
      sensitive operations, or a valid remember-device token replaces it;
    - required without a usable factor: a session with a deadline during the grace period,
      then enrollment_required;
    - a role that must use a security key, without one: MFA with the factors it has, and past
      the grace period an enrollment token for a key instead of a session;
    - with a `recovery_code` from a supervised MFA reset: the code is spent and the user must
      enroll (enrollment_required with every allowed method), or AuthenticationFailed.
    """
    org_id = normalize_org_id(org_id)
    email = normalize_email(email)
    device = remember.device_hash(device_id)
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

    return decide_login(
        svc,
        user,
        first_factor=PASSWORD,
        context=context,
        now=now,
        device=device,
        remember_device_token=remember_device_token,
        recovery_code=recovery_code,
    )


@dataclass(frozen=True, kw_only=True)
class FirstFactor:
    """The first factor of a login, before any MFA of ours: a password, or an SSO login.

    `amr` is the RFC 8176 value it adds ("pwd" or "fed"), `event_type` the audit event of the
    login's outcome, with `details` added to it. `idp_mfa` is set when an identity provider's
    MFA replaces ours: the session's amr, acr and mfa_time.
    """

    amr: str
    event_type: str
    details: dict[str, Any] = field(default_factory=dict)
    idp_mfa: tuple[list[str], str, float] | None = None


PASSWORD = FirstFactor(amr="pwd", event_type="login.password")
# The RFC 8176 amr value of a login through an identity provider.
FEDERATED = "fed"


def decide_login(
    svc: Services,
    user: UserModel,
    *,
    first_factor: FirstFactor,
    context: RequestContext,
    now: float,
    device: str | None = None,
    remember_device_token: str | None = None,
    recovery_code: str | None = None,
) -> LoginResult:
    """Decide what follows a first factor that passed, from the org's policy, role and factors.

    The rules are those of `login`. An identity provider's MFA (`first_factor.idp_mfa`) opens
    a session at once, unless the user's role must use a security key and the IdP's MFA was
    not phishing-resistant (aal3), or the policy steps up a login from an unusual place.
    """
    lockout.reject_if_locked(
        svc, user, now=now, event_type=first_factor.event_type, context=context
    )

    org_policy = policy.mfa_policy(svc.store.get_org(user.org_id))
    rule = org_policy.rule_for(role=user.role, now=now)
    anomaly = anomalies.assess_login(svc, user, org_policy, context=context, now=now)
    login = _Login(
        svc, user, org_policy, context=context, now=now, anomaly=anomaly, first_factor=first_factor
    )
    if recovery_code is not None:
        recovery.spend_code(svc, user, recovery_code, context=context)
        return login.require_enrollment(methods=enrollment_methods(org_policy, rule))
    if user.recovery_required:
        # After an MFA reset, only the recovery code handed over through the verified channel
        # lets the user in to enroll; the password alone must not.
        svc.store.record(login.event("denied", reason="recovery_code_required"))
        raise RecoveryCodeRequired()
    idp_mfa = first_factor.idp_mfa
    # A login from an unusual place that the policy steps up gets our own MFA, even after the
    # provider's, because the policy requires a proof that this service checked.
    if (
        idp_mfa is not None
        and not anomaly.step_up
        and (not rule.security_key or idp_mfa[1] == "aal3")
    ):
        return login.open_session(idp_mfa=idp_mfa)
    held = user.factor_summaries()
    factors = allowed_factors(user, rule.methods)

    if rule.enforcement == "off":
        return login.open_session()
    if held:
        return _login_with_factors(
            login,
            rule,
            held=held,
            factors=factors,
            device=device,
            remember_device_token=remember_device_token,
        )
    if rule.enforcement == "optional":
        return login.open_session(extra={"mfa_enrollment_recommended": True})
    deadline = _grace_deadline(svc, user, org_policy, now=now, context=context)
    if now < deadline:
        return login.open_session(extra={"mfa_enrollment_deadline": int(deadline)})
    return login.require_enrollment(methods=enrollment_methods(org_policy, rule))


# Steps that replace the session once a login's MFA passes.
REGISTER_SECURITY_KEY = "register_security_key"
ENROLL_ALLOWED_METHOD = "enroll_allowed_method"


def enrollment_methods(org_policy: policy.MfaPolicy, rule: policy.UserRule) -> list[str]:
    """Return the methods a user who must enroll may choose, in the policy's order.

    A role that must use security keys gets keys only; SMS is left out where it is only a
    fallback, because it cannot be a user's only factor.
    """
    if rule.security_key:
        return [webauthn.TYPE]
    return [
        method
        for method in policy.METHODS
        if method in rule.methods and not (method == sms.TYPE and org_policy.sms_fallback_only)
    ]


def _login_with_factors(
    login: _Login,
    rule: policy.UserRule,
    *,
    held: dict[str, Any],
    factors: dict[str, Any],
    device: str | None,
    remember_device_token: str | None,
) -> LoginResult:
    """Decide the login of a user with active factors (`held`; `factors`: those allowed)."""
    svc, user, org_policy, now = login.svc, login.user, login.policy, login.now
    offered = factors
    next_step = None
    key_deadline = None
    keys = {fid: info for fid, info in factors.items() if info.get("type") == webauthn.TYPE}
    if not factors:
        # Only factors of methods that the policy no longer allows: they still prove the
        # user, and where MFA is required the user then enrolls an allowed method.
        offered = held
        if rule.enforcement == "required":
            next_step = ENROLL_ALLOWED_METHOD
    elif rule.security_key and keys:
        offered = keys
    elif rule.security_key:
        key_deadline = _grace_deadline(
            svc, user, org_policy, now=now, context=login.context, security_key=True
        )
        if now >= key_deadline:
            next_step, key_deadline = REGISTER_SECURITY_KEY, None

    if next_step is None and not login.anomaly.step_up:
        if org_policy.reauthentication == "sensitive_only":
            extra: dict[str, Any] = {"reauthentication": "sensitive_only"}
            if key_deadline is not None:
                extra["security_key_deadline"] = int(key_deadline)
            return login.open_session(extra=extra)
        if org_policy.reauthentication == "every_24h" and remember_device_token:
            remembered = remember.check(
                svc,
                remember_device_token,
                user=user,
                device=device,
                policy_version=org_policy.version,
                methods=rule.methods,
                # Within the key grace period, a login without a key still passes.
                security_key=rule.security_key and bool(keys),
            )
            if remembered is not None:
                return login.open_session(remembered=remembered)
    return login.start_mfa(
        factors=offered,
        device=device if org_policy.reauthentication == "every_24h" else None,
        next_step=next_step,
        key_deadline=key_deadline,
    )


def allowed_factors(user: UserModel, methods: frozenset[str]) -> dict[str, dict[str, Any]]:
    """Return the user's active factors of the methods that the policy allows.

    A key blocked as a suspected clone stays in: it must not turn a login into a password-only
    one, and verification rejects it with its own reason (backup codes still work).
    """
    return {
        fid: info for fid, info in user.factor_summaries().items() if info.get("type") in methods
    }


def _grace_deadline(
    svc: Services,
    user: UserModel,
    org_policy: policy.MfaPolicy,
    *,
    now: float,
    context: RequestContext,
    security_key: bool = False,
) -> float:
    """Return when the user's grace period ends, starting it at this login if it has not.

    The period to enroll at all and the period to add a security key (`security_key`) are
    counted apart, each from the first login that needed it.
    """
    attribute = "key_grace_started_at" if security_key else "grace_started_at"
    started = getattr(user, attribute)
    if started is None:
        event = _event(
            now,
            user,
            "mfa.grace_started",
            "success",
            context,
            reason="security_key" if security_key else "enrollment",
        )
        try:
            svc.store.start_grace(user, attribute=attribute, now=now, events=[event])
            started = now
        except ConditionFailed:
            # A concurrent login started it first.
            fresh = svc.store.get_user(user.org_id, user.user_id)
            started = getattr(fresh, attribute, None) or now
        setattr(user, attribute, started)
    return org_policy.grace_deadline(started)


class _Login:
    """The outcomes of a login whose password passed."""

    def __init__(
        self,
        svc: Services,
        user: UserModel,
        org_policy: policy.MfaPolicy,
        *,
        context: RequestContext,
        now: float,
        anomaly: anomalies.LoginRisk,
        first_factor: FirstFactor,
    ) -> None:
        self.svc, self.user, self.policy = svc, user, org_policy
        self.context, self.now, self.anomaly = context, now, anomaly
        self.first_factor = first_factor

    def event(
        self,
        outcome: str,
        *,
        reason: str | None,
        event_type: str | None = None,
        session_id: str | None = None,
    ) -> audit.AuditEvent:
        """Build the audit event of this login's outcome. An SSO login's events are all
        sso.login, with the IdP's claims in their details."""
        first = self.first_factor
        return audit.event(
            now=self.now,
            event_type=first.event_type if first.amr != "pwd" else event_type or first.event_type,
            outcome=outcome,
            org_id=self.user.org_id,
            user_id=self.user.user_id,
            context=self.context,
            reason=reason,
            session_id=session_id,
            details=dict(first.details) or None,
        )

    def open_session(
        self,
        *,
        extra: dict[str, Any] | None = None,
        remembered: remember.RememberedMfa | None = None,
        idp_mfa: tuple[list[str], str, float] | None = None,
    ) -> LoginResult:
        svc, user, now, context = self.svc, self.user, self.now, self.context
        revoke = sessions.make_room(
            svc,
            user=user,
            max_sessions=self.policy.max_sessions,
            action=self.policy.session_limit_action,
            context=context,
        )
        if idp_mfa is not None:
            amr, acr, mfa_time = idp_mfa
            reason: str | None = "idp_mfa_accepted"
        elif remembered is None:
            amr, acr, mfa_time, reason = [self.first_factor.amr], "aal1", None, None
        else:
            amr, acr = remembered.amr, remembered.acr
            mfa_time, reason = float(remembered.mfa_time), "remembered_device"
        session, pair = sessions.new_session(
            svc, user=user, amr=amr, acr=acr, auth_time=now, mfa_time=mfa_time, context=context
        )
        events = [
            *self.anomaly.events,
            self.event("success", event_type="login", session_id=session.session_id, reason=reason),
        ]
        svc.store.open_session(
            session, events, revocations=revoke, user_update=self.anomaly.history_update
        )
        logger.info(
            "Login succeeded",
            extra={"org_id": user.org_id, "user_id": user.user_id, "acr": acr, "reason": reason},
        )
        telemetry.count(telemetry.LOGIN_SUCCEEDED)
        body: dict[str, Any] = pair.as_json()
        body.update(extra or {})
        if revoke:
            body["sessions_ended"] = [ended.session_id for ended, _ in revoke]
        return LoginResult(AUTHENTICATED, body)

    def start_mfa(
        self,
        *,
        factors: dict[str, Any],
        device: str | None,
        next_step: str | None,
        key_deadline: float | None,
    ) -> LoginResult:
        svc, user, now = self.svc, self.user, self.now
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
            amr=[self.first_factor.amr],
            factor_ids=sorted(factors),
            device=device,
            next_step=next_step,
            location=self.anomaly.location_item,
        )
        reason = "mfa_required" if not self.anomaly.step_up else "anomaly_step_up"
        events = [
            *self.anomaly.events,
            self.event("success", reason=reason),
        ]
        svc.store.save_challenge(challenge, events)
        mfa_token = svc.tokens.issue(
            token_type=tokens.MFA_PENDING,
            org_id=user.org_id,
            user_id=user.user_id,
            lifetime=lifetime,
            txn=transaction_id,
        )
        logger.info(
            "Password accepted; MFA required",
            extra={"org_id": user.org_id, "user_id": user.user_id, "reason": reason},
        )
        listed = [
            {"factor_id": factor_id, "type": info.get("type"), "label": info.get("label")}
            for factor_id, info in sorted(factors.items())
        ]
        body: dict[str, Any] = {"mfa_token": mfa_token, "expires_in": lifetime, "factors": listed}
        if next_step is not None:
            body["next_step"] = next_step
        if key_deadline is not None:
            body["security_key_deadline"] = int(key_deadline)
        if self.anomaly.step_up:
            body["reason"] = "unusual_sign_in"
        return LoginResult(MFA_REQUIRED, body)

    def require_enrollment(self, *, methods: list[str]) -> LoginResult:
        svc, user = self.svc, self.user
        svc.store.record(
            *self.anomaly.events,
            self.event("success", reason="enrollment_required"),
        )
        token, lifetime = enrollment_token(svc, user, methods=methods)
        logger.info(
            "Password accepted; enrollment required",
            extra={"org_id": user.org_id, "user_id": user.user_id},
        )
        return LoginResult(
            ENROLLMENT_REQUIRED,
            {"enrollment_token": token, "expires_in": lifetime, "allowed_methods": methods},
        )


def enrollment_token(
    svc: Services, user: UserModel, *, methods: list[str], mfa_time: float | None = None
) -> tuple[str, int]:
    """Sign an enrollment token that lets `user` add one factor of one of `methods`.

    With `mfa_time` (after an MFA at login, for a user who must add a security key or an
    allowed method), the token lives only as long as a factor change may follow an MFA.
    """
    lifetime = svc.settings.enrollment_token_seconds
    if mfa_time is not None:
        lifetime = min(lifetime, stepup.FACTOR_CHANGE_MAX_MFA_AGE)
    claims: dict[str, Any] = {"methods": methods}
    if mfa_time is not None:
        claims["mfa_time"] = int(mfa_time)
    token = svc.tokens.issue(
        token_type=tokens.ENROLLMENT,
        org_id=user.org_id,
        user_id=user.user_id,
        lifetime=lifetime,
        **claims,
    )
    return token, lifetime


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
