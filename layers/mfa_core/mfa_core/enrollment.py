"""A user's own factors: TOTP enrollment and confirmation, security key registration, the
factor list and factor removal."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from aws_lambda_powertools import Logger

from mfa_core import (
    audit,
    backup_codes,
    lockout,
    policy,
    sessions,
    sms,
    stepup,
    telemetry,
    tokens,
    totp,
    webauthn,
)
from mfa_core.adapters.kms import SealedValueError
from mfa_core.audit import RequestContext
from mfa_core.errors import (
    Conflict,
    InvalidCode,
    InvalidInput,
    InvalidToken,
    LastFactor,
    MethodNotAllowed,
    NotFound,
    RegistrationRejected,
)
from mfa_core.runtime import Services
from mfa_core.store.models import ChallengeModel, FactorModel, OrgModel, UserModel, user_key
from mfa_core.store.repository import ConditionFailed
from mfa_core.tokens import Principal

logger = Logger(child=True)

PENDING_SECONDS = 15 * 60
MAX_FACTORS = 20
MAX_LABEL = 64
DEFAULT_LABEL = "Authenticator app"
# Maximum age in seconds of the MFA that lets a user who has a factor add another.
# Route keys of the routes whose requirement mfa_core.stepup declares.
REMOVE_FACTOR_ROUTE = "DELETE /v1/me/factors/{factor_id}"
REGENERATE_BACKUP_CODES_ROUTE = "POST /v1/me/backup-codes"


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


@dataclass(frozen=True)
class CeremonyOptions:
    """WebAuthn options for the browser, and the id of the challenge stored for them."""

    challenge_id: str
    options: dict[str, Any]
    expires_in: int

    def as_json(self) -> dict[str, Any]:
        return {
            "challenge_id": self.challenge_id,
            "expires_in": self.expires_in,
            "options": self.options,
        }


def validate_label(label: str | None, *, default: str = DEFAULT_LABEL) -> str:
    if label is None:
        return default
    label = label.strip()
    if not 1 <= len(label) <= MAX_LABEL or not label.isprintable():
        raise InvalidInput(f"Use a label of 1 to {MAX_LABEL} printable characters.", field="label")
    return label


def _current_user(svc: Services, principal: Principal) -> UserModel:
    user = svc.store.get_user(principal.org_id, principal.user_id)
    if user is None or user.status != "active":
        raise InvalidToken()
    return user


def authorize_factor_change(
    svc: Services,
    principal: Principal,
    user: UserModel,
    *,
    factor_type: str,
    org: OrgModel | Literal[False] | None = False,
) -> bool:
    """Allow a change to a user's factors; return whether the user has no active factor yet.

    Once a user has a factor, a change needs an MFA in the last five minutes, in every org.
    Otherwise a password alone, through an older password-only session or an enrollment token,
    could add a factor of its own next to the owner's and then step up with it. An enrollment
    token issued at login without an MFA serves only while the user has no active factor. One
    issued after an MFA at login (a role that must add a security key, or a user whose factors
    the policy no longer allows) serves for five minutes after that MFA, until the user has a
    factor of the methods it names. Where login asks for no factor (enforcement "off"), a
    step-up at /v1/auth/mfa/verify gives the session a recent MFA.

    With `org` (the user's org, read by the caller), a method that the org's policy does not
    allow is refused.
    """
    if org is not False:
        rule = policy.mfa_policy(org).rule_for(role=user.role, now=svc.clock.now())
        if factor_type not in rule.methods:
            raise MethodNotAllowed(
                f"Your org's policy does not allow {factor_type} factors; use one of: "
                f"{', '.join(m for m in policy.METHODS if m in rule.methods)}."
            )
    first_factor = not user.factor_summaries()
    if principal.token_type == tokens.ENROLLMENT:
        methods = principal.claims.get("methods")
        if isinstance(methods, list) and factor_type not in methods:
            raise MethodNotAllowed(f"This enrollment token is for: {', '.join(map(str, methods))}.")
        if first_factor:
            return True
        # Only a token issued after an MFA at login serves a user with factors, until they
        # have one of its methods, and within the age that any factor change allows.
        mfa_time = principal.claims.get("mfa_time")
        held = {info.get("type") for info in user.factor_summaries().values()}
        if (
            isinstance(mfa_time, int)
            and svc.clock.now() - mfa_time <= stepup.FACTOR_CHANGE_MAX_MFA_AGE
            and isinstance(methods, list)
            and not held & set(methods)
        ):
            return False
        raise InvalidToken("The enrollment token is spent: the user already has an active factor.")
    if first_factor:
        return True
    require_recent_mfa(svc, principal, action="Changing factors")
    return False


def require_recent_mfa(
    svc: Services,
    principal: Principal,
    *,
    action: str,
    max_age: int = stepup.FACTOR_CHANGE_MAX_MFA_AGE,
) -> None:
    """Raise StepUpRequired unless the access token carries an MFA of the last `max_age` s.

    Every MFA gives at least aal2, so this is the aal2 requirement with that age limit.
    """
    stepup.enforce(svc, principal, stepup.Requirement("aal2", max_age), action=action)


def enroll_totp(
    svc: Services, principal: Principal, *, label: str | None, context: RequestContext
) -> TotpEnrollment:
    """Create a pending TOTP factor; the secret is returned here once and stored sealed."""
    label = validate_label(label)
    user = _current_user(svc, principal)
    authorize_factor_change(
        svc, principal, user, factor_type=totp.TYPE, org=svc.store.get_org(user.org_id)
    )
    now = svc.clock.now()
    _check_factor_limit(svc, user, now)

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
    first_factor = authorize_factor_change(svc, principal, user, factor_type=totp.TYPE)
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
    others = _other_live_sessions(svc, principal, user, now)
    revoked = sessions.revocations(svc, others, reason="factor_added", context=context)
    codes = backup_codes.generate() if first_factor else None
    try:
        svc.store.activate_factor(
            factor,
            step=step,
            now=now,
            events=[success],
            keep_session_id=principal.session_id,
            first_factor=first_factor,
            factors_version=user.factors_version,
            revoked_sessions=revoked,
            backup_codes=_backup_item(svc, user, codes, now) if codes else None,
        )
    except ConditionFailed as exc:
        _raise_if_user_changed(svc, user, exc, now=now)
        raise Conflict("This factor is no longer pending; list your factors.") from exc
    telemetry.count(telemetry.FACTOR_ACTIVATED)
    logger.info("TOTP factor activated", extra={**_ids(factor), "sessions_revoked": len(others)})
    body: dict[str, Any] = {
        "factor_id": factor.factor_id,
        "type": factor.type,
        "status": "active",
        "label": factor.label,
    }
    if codes:
        body["backup_codes"] = codes
    return body


def start_key_registration(
    svc: Services, principal: Principal, *, label: str | None, context: RequestContext
) -> CeremonyOptions:
    """Store a registration challenge and return the creation options for the browser."""
    label = validate_label(label, default=webauthn.DEFAULT_LABEL)
    user = _current_user(svc, principal)
    org = svc.store.get_org(user.org_id)
    authorize_factor_change(svc, principal, user, factor_type=webauthn.TYPE, org=org)
    now = svc.clock.now()
    lockout.reject_if_locked(svc, user, now=now, event_type="factor.register", context=context)
    _check_factor_limit(svc, user, now)

    org_policy = policy.webauthn_policy(org)
    lifetime = svc.settings.webauthn_challenge_seconds
    record = ChallengeModel(
        secrets.token_urlsafe(24),
        kind=webauthn.REGISTRATION,
        org_id=user.org_id,
        user_id=user.user_id,
        created_at=now,
        expires_at=int(now) + lifetime,
        challenge=webauthn.new_challenge(),
        bound_to=binding(principal),
        user_verification=org_policy.user_verification,
        label=label,
    )

    registered = [webauthn.key_ref(info) for info in user.factor_summaries().values()]
    options = webauthn.creation_options(
        webauthn.relying_party(svc.settings),
        # The user handle is the opaque user id, never the email (W3C WebAuthn §14.6.1).
        user_handle=user.user_id,
        user_name=user.email,
        challenge=record.challenge,
        exclude=[key for key in registered if key is not None],
        policy=org_policy,
        timeout_ms=lifetime * 1000,
    )
    event = audit.event(
        now=now,
        event_type="factor.register_start",
        outcome="success",
        org_id=user.org_id,
        user_id=user.user_id,
        context=context,
        details={"type": webauthn.TYPE},
    )
    svc.store.save_challenge(record, [event])
    return CeremonyOptions(record.challenge_id, options, lifetime)


def register_key(
    svc: Services,
    principal: Principal,
    *,
    challenge_id: str,
    credential: dict[str, Any],
    label: str | None,
    context: RequestContext,
) -> dict[str, Any]:
    """Verify a registration response and store the key as an active factor."""
    parsed = webauthn.parse_registration(credential)
    label = validate_label(label) if label is not None else None
    user = _current_user(svc, principal)
    org = svc.store.get_org(user.org_id)
    first_factor = authorize_factor_change(svc, principal, user, factor_type=webauthn.TYPE, org=org)
    now = svc.clock.now()
    lockout.reject_if_locked(svc, user, now=now, event_type="factor.register", context=context)
    record = svc.store.get_challenge(challenge_id)
    if (
        record is None
        or record.kind != webauthn.REGISTRATION
        or record.org_id != user.org_id
        or record.user_id != user.user_id
        or record.bound_to != binding(principal)
        or record.consumed_at is not None
        or record.expires_at <= now
        or record.challenge is None
    ):
        _registration_failed(svc, user, context, now=now, reason="challenge_invalid")
        raise RegistrationRejected(
            "The registration challenge is unknown, used or expired; request new options.",
            reason="challenge_invalid",
            field="challenge_id",
        )
    org_policy = policy.webauthn_policy(org)
    try:
        key = webauthn.verify_registration(
            webauthn.relying_party(svc.settings),
            parsed,
            challenge=record.challenge,
            policy=org_policy,
        )
    except RegistrationRejected as exc:
        _registration_failed(svc, user, context, now=now, reason=exc.reason)
        raise

    factor = FactorModel(
        user_key(user.org_id, user.user_id),
        webauthn.factor_id_for(user.org_id, user.user_id, key.credential_id),
        org_id=user.org_id,
        user_id=user.user_id,
        type=webauthn.TYPE,
        status="active",
        label=label or record.label or webauthn.DEFAULT_LABEL,
        created_at=now,
        confirmed_at=now,
        credential_id=key.credential_id,
        public_key=key.public_key,
        sign_count=key.sign_count,
        aaguid=key.aaguid,
        transports=list(key.transports),
        attestation_format=key.attestation_format,
        backup_eligible=key.backup_eligible,
        backup_state=key.backup_state,
    )
    success = _event(now, factor, "factor.activate", "success", context)
    success.details.update({"aaguid": key.aaguid, "attestation_format": key.attestation_format})
    others = _other_live_sessions(svc, principal, user, now)
    codes = backup_codes.generate() if first_factor else None
    try:
        svc.store.add_security_key(
            factor,
            challenge_id=challenge_id,
            now=now,
            events=[success],
            keep_session_id=principal.session_id,
            first_factor=first_factor,
            factors_version=user.factors_version,
            revoked_sessions=sessions.revocations(
                svc, others, reason="factor_added", context=context
            ),
            backup_codes=_backup_item(svc, user, codes, now) if codes else None,
        )
    except ConditionFailed as exc:
        if "factor" in exc.failed:
            raise Conflict("This security key is already registered for this user.") from exc
        _raise_if_user_changed(svc, user, exc, now=now)
        raise RegistrationRejected(
            "The registration challenge is unknown, used or expired; request new options.",
            reason="challenge_invalid",
            field="challenge_id",
        ) from exc
    telemetry.count(telemetry.FACTOR_ACTIVATED)
    logger.info("Security key registered", extra={**_ids(factor), "sessions_revoked": len(others)})
    body = factor_json(factor)
    if codes:
        body["backup_codes"] = codes
    return body


def enroll_sms(
    svc: Services,
    principal: Principal,
    *,
    phone_number: str,
    label: str | None,
    context: RequestContext,
) -> dict[str, Any]:
    """Create a pending SMS factor for a phone number and send the code that confirms it."""
    label = sms.validate_label(label)
    user = _current_user(svc, principal)
    authorize_factor_change(
        svc, principal, user, factor_type=sms.TYPE, org=svc.store.get_org(user.org_id)
    )
    now = svc.clock.now()
    lockout.reject_if_locked(svc, user, now=now, event_type="factor.enroll", context=context)
    _check_factor_limit(svc, user, now)
    return sms.start_enrollment(
        svc,
        principal,
        user,
        raw_number=phone_number,
        label=label,
        binding=binding(principal),
        context=context,
    )


def confirm_sms(
    svc: Services, principal: Principal, *, factor_id: str, code: str, context: RequestContext
) -> dict[str, Any]:
    """Activate a pending SMS factor with the code sent to it."""
    now = svc.clock.now()
    user = _current_user(svc, principal)
    first_factor = authorize_factor_change(svc, principal, user, factor_type=sms.TYPE)
    lockout.reject_if_locked(
        svc, user, now=now, event_type="factor.confirm", factor_id=factor_id, context=context
    )
    factor = svc.store.get_factor(user.org_id, user.user_id, factor_id)
    if factor is None or factor.type != sms.TYPE or not _is_usable(factor, now):
        raise NotFound("No SMS factor with this id.")
    if factor.status != "pending":
        raise Conflict("This factor is already active.")
    sms.ensure_not_sole_factor(svc, user)

    record = svc.store.get_challenge(factor.sms_code_id) if factor.sms_code_id else None
    reason = sms.check_code(svc, factor, record, code, now=now)
    if reason is None and record is not None and record.bound_to != binding(principal):
        reason = "code_not_bound"
    if reason is not None or record is None:
        failure = _event(now, factor, "factor.confirm", "failure", context, reason=reason)
        locked = lockout.record_failure(svc, user, failure=failure, context=context)
        telemetry.count(telemetry.MFA_FAILED)
        logger.info("SMS confirmation failed", extra={**_ids(factor), "reason": reason})
        if locked is not None:
            raise locked
        raise InvalidCode()

    success = _event(now, factor, "factor.activate", "success", context)
    others = _other_live_sessions(svc, principal, user, now)
    codes = backup_codes.generate() if first_factor else None
    try:
        svc.store.activate_factor(
            factor,
            step=None,
            now=now,
            events=[success],
            keep_session_id=principal.session_id,
            first_factor=first_factor,
            factors_version=user.factors_version,
            revoked_sessions=sessions.revocations(
                svc, others, reason="factor_added", context=context
            ),
            backup_codes=_backup_item(svc, user, codes, now) if codes else None,
            code_id=record.challenge_id,
        )
    except ConditionFailed as exc:
        _raise_if_user_changed(svc, user, exc, now=now)
        raise InvalidCode() from exc
    telemetry.count(telemetry.FACTOR_ACTIVATED)
    logger.info("SMS factor activated", extra={**_ids(factor), "sessions_revoked": len(others)})
    factor.status, factor.confirmed_at, factor.expires_at = "active", now, None
    body = factor_json(factor)
    if codes:
        body["backup_codes"] = codes
    return body


def backup_code_status(svc: Services, principal: Principal) -> dict[str, Any]:
    """Count the caller's unused backup codes."""
    item = svc.store.get_factor(principal.org_id, principal.user_id, backup_codes.FACTOR_ID)
    if item is None:
        return {"remaining": 0, "total": 0, "generated_at": None}
    hashes = item.code_digests()
    return {
        "remaining": sum(1 for used in hashes.values() if not used),
        "total": len(hashes),
        "generated_at": int(item.created_at),
    }


def regenerate_backup_codes(
    svc: Services, principal: Principal, *, context: RequestContext
) -> dict[str, Any]:
    """Replace the caller's backup codes with a new set, shown once; needs a recent MFA."""
    user = _current_user(svc, principal)
    stepup.require(
        svc,
        principal,
        REGENERATE_BACKUP_CODES_ROUTE,
        action="Generating backup codes",
        max_age_cap=policy.step_up_cap(svc.store.get_org(user.org_id)),
    )
    now = svc.clock.now()
    lockout.reject_if_locked(
        svc, user, now=now, event_type="backup_codes.regenerate", context=context
    )
    if not user.factor_summaries():
        raise Conflict("Backup codes recover a factor; activate a factor first.")
    codes = backup_codes.generate()
    event = audit.event(
        now=now,
        event_type="backup_codes.regenerate",
        outcome="success",
        org_id=user.org_id,
        user_id=user.user_id,
        factor_id=backup_codes.FACTOR_ID,
        context=context,
        details={"count": len(codes)},
    )
    svc.store.replace_backup_codes(_backup_item(svc, user, codes, now), [event])
    logger.info("Backup codes regenerated", extra={"org_id": user.org_id, "user_id": user.user_id})
    return {"backup_codes": codes, "remaining": len(codes), "generated_at": int(now)}


def _backup_item(svc: Services, user: UserModel, codes: list[str], now: float) -> FactorModel:
    """Build the item that stores a set of backup codes as keyed digests, all unused."""
    digests = {}
    for code in codes:
        canonical = backup_codes.normalize(code)
        assert canonical is not None, "a generated code is always valid"
        digests[backup_codes.digest(svc.pepper, canonical)] = 0
    return FactorModel(
        user_key(user.org_id, user.user_id),
        backup_codes.FACTOR_ID,
        org_id=user.org_id,
        user_id=user.user_id,
        type=backup_codes.TYPE,
        status="active",
        label="Backup codes",
        created_at=now,
        code_hashes=digests,
    )


def remove_factor(
    svc: Services, principal: Principal, *, factor_id: str, context: RequestContext
) -> None:
    """Remove one of the caller's factors, after a recent MFA; never the last one required.

    A user without an active factor may remove a pending one without an MFA.
    """
    user = _current_user(svc, principal)
    if user.factor_summaries():
        stepup.require(
            svc,
            principal,
            REMOVE_FACTOR_ROUTE,
            action="Removing a factor",
            max_age_cap=policy.step_up_cap(svc.store.get_org(user.org_id)),
        )
    now = svc.clock.now()
    lockout.reject_if_locked(
        svc, user, now=now, event_type="factor.remove", factor_id=factor_id, context=context
    )
    factor = svc.store.get_factor(user.org_id, user.user_id, factor_id)
    if factor is None or not _is_usable(factor, now) or factor.type == backup_codes.TYPE:
        raise NotFound("No factor with this id.")
    try:
        _remove(svc, principal, user, factor, now=now, context=context)
    except ConditionFailed as exc:
        fresh = svc.store.get_factor(user.org_id, user.user_id, factor_id)
        if factor.status == "active" or fresh is None:
            raise NotFound("No factor with this id.") from exc
        # The pending factor was confirmed meanwhile. Removing it now is a change to an active
        # factor, with its own checks, so the client has to send the request again.
        raise Conflict(
            "The factor was activated while it was being removed; list your factors and retry."
        ) from exc


def _remove(
    svc: Services,
    principal: Principal,
    user: UserModel,
    factor: FactorModel,
    *,
    now: float,
    context: RequestContext,
) -> None:
    """Remove `factor`; raise ConditionFailed naming "factor" if it changed since it was read."""
    active = factor.status == "active"
    org = svc.store.get_org(user.org_id)
    keep_another = active and policy.mfa_required(org, role=user.role, now=now)
    summaries = user.factor_summaries()
    blocked = {fid for fid, info in summaries.items() if info.get("blocked")}
    usable_others = set(summaries) - blocked - {factor.factor_id}
    if keep_another and not usable_others:
        _reject_last_factor_removal(svc, factor, context, now=now)
    # NOTE: read, not a write condition: a concurrent change can still leave SMS alone.
    only_sms_left = usable_others and all(
        summaries[fid].get("type") == sms.TYPE for fid in usable_others
    )
    if active and only_sms_left and policy.sms_policy(org).fallback_only:
        svc.store.record(
            _event(now, factor, "factor.remove", "denied", context, reason="sms_fallback_only")
        )
        raise Conflict(
            "This org allows SMS only as a fallback, and this is your last other factor; add "
            "an authenticator app or a security key before removing it."
        )

    others = _other_live_sessions(svc, principal, user, now) if active else []
    removed = _event(now, factor, "factor.remove", "success", context)
    try:
        svc.store.remove_factor(
            factor,
            keep_another=keep_another,
            blocked=len(blocked - {factor.factor_id}),
            factors_version=user.factors_version,
            now=now,
            events=[removed],
            keep_session_id=principal.session_id,
            revoked_sessions=sessions.revocations(
                svc, others, reason="factor_removed", context=context
            ),
        )
    except ConditionFailed as exc:
        if "user" in exc.failed and "factor" not in exc.failed:
            fresh = svc.store.get_user(user.org_id, user.user_id)
            left = (
                {fid for fid, info in fresh.factor_summaries().items() if not info.get("blocked")}
                - {factor.factor_id}
                if fresh
                else set()
            )
            if keep_another and not left:
                _reject_last_factor_removal(svc, factor, context, now=now)
            raise Conflict(
                "Your factors changed while this one was being removed; list them and retry."
            ) from exc
        raise
    telemetry.count(telemetry.FACTOR_REMOVED)
    logger.info("Factor removed", extra={**_ids(factor), "sessions_revoked": len(others)})


def list_factors(svc: Services, principal: Principal) -> list[dict[str, Any]]:
    now = svc.clock.now()
    return [
        factor_json(f)
        for f in svc.store.list_factors(principal.org_id, principal.user_id)
        if _is_usable(f, now) and f.type != backup_codes.TYPE
    ]


def factor_json(factor: FactorModel) -> dict[str, Any]:
    """Describe a factor for its owner, without its secret or public key."""
    body: dict[str, Any] = {
        "factor_id": factor.factor_id,
        "type": factor.type,
        "status": factor.status,
        "label": factor.label,
        "created_at": int(factor.created_at),
        "confirmed_at": int(factor.confirmed_at) if factor.confirmed_at else None,
        "last_used_at": int(factor.last_used_at) if factor.last_used_at else None,
    }
    if factor.type == sms.TYPE and factor.phone_number:
        from mfa_core.phone import mask  # noqa: PLC0415 - see mfa_core.sms

        body["phone_number"] = mask(factor.phone_number)
    if factor.type == webauthn.TYPE:
        body.update(
            {
                "sign_count": int(factor.sign_count or 0),
                "aaguid": factor.aaguid,
                "transports": list(factor.transports or []),
                "attestation_format": factor.attestation_format,
                "backup_eligible": bool(factor.backup_eligible),
                "backup_state": bool(factor.backup_state),
                "clone_suspected": factor.clone_suspected_at is not None,
            }
        )
    return body


def binding(principal: Principal) -> str:
    """Name what a challenge is bound to: the login transaction, session or enrollment token."""
    if principal.token_type == tokens.MFA_PENDING and principal.transaction_id:
        return f"login:{principal.transaction_id}"
    if principal.token_type == tokens.ACCESS and principal.session_id:
        return f"session:{principal.session_id}"
    token_id = principal.claims.get("jti")
    if principal.token_type == tokens.ENROLLMENT and isinstance(token_id, str):
        return f"enrollment:{token_id}"
    raise InvalidToken()


def _raise_if_user_changed(
    svc: Services, user: UserModel, exc: ConditionFailed, *, now: float
) -> None:
    """Explain a lost condition on the user item: a lockout, or a concurrent factor change."""
    if "user" not in exc.failed:
        return
    fresh = svc.store.get_user(user.org_id, user.user_id)
    if fresh is not None:
        lockout.check_not_locked(fresh, now)
    raise Conflict("Your factors changed meanwhile; list them and retry.") from exc


def _check_factor_limit(svc: Services, user: UserModel, now: float) -> None:
    live = [
        f
        for f in svc.store.list_factors(user.org_id, user.user_id)
        if _is_usable(f, now) and f.type != backup_codes.TYPE
    ]
    # NOTE: the limit is read before the write, so concurrent enrollments can pass it by a few.
    if len(live) >= MAX_FACTORS:
        raise Conflict(f"A user can have at most {MAX_FACTORS} factors; remove one first.")


def _other_live_sessions(
    svc: Services, principal: Principal, user: UserModel, now: float
) -> list[Any]:
    return [
        session
        for session in svc.store.list_sessions(user.org_id, user.user_id)
        if session.session_id != principal.session_id and sessions.is_live(session, now)
    ]


def _registration_failed(
    svc: Services, user: UserModel, context: RequestContext, *, now: float, reason: str
) -> None:
    svc.store.record(
        audit.event(
            now=now,
            event_type="factor.register",
            outcome="failure",
            org_id=user.org_id,
            user_id=user.user_id,
            context=context,
            reason=reason,
            details={"type": webauthn.TYPE},
        )
    )
    logger.info(
        "Security key registration rejected",
        extra={"org_id": user.org_id, "user_id": user.user_id, "reason": reason},
    )


def _reject_last_factor_removal(
    svc: Services, factor: FactorModel, context: RequestContext, *, now: float
) -> NoReturn:
    svc.store.record(_event(now, factor, "factor.remove", "denied", context, reason="last_factor"))
    raise LastFactor(
        "This is your last factor and the org requires MFA; add another factor before "
        "removing this one."
    )


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
