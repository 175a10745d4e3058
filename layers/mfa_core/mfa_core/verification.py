"""MFA verification at login (with an mfa_token) and for step-up (with an access token).

A TOTP code or a WebAuthn assertion is checked against a factor of the caller. At login one
read (the login transaction, the user, the factor and the WebAuthn challenge together) and one
transactional write (spend the transaction and the challenge, update the factor, reset
failures, open the session, audit) make a successful verification.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Any, NoReturn

from aws_lambda_powertools import Logger

from mfa_core import (
    anomalies,
    audit,
    auth,
    backup_codes,
    lockout,
    policy,
    remember,
    sessions,
    sms,
    telemetry,
    tokens,
    totp,
    webauthn,
)
from mfa_core.audit import RequestContext
from mfa_core.enrollment import CeremonyOptions, binding, open_totp_secret
from mfa_core.errors import (
    InvalidCode,
    InvalidCredential,
    InvalidInput,
    InvalidToken,
    MethodNotAllowed,
    MfaError,
    NotFound,
)
from mfa_core.runtime import Services
from mfa_core.store.models import ChallengeModel, FactorModel, OrgModel, SessionModel, UserModel
from mfa_core.store.repository import ConditionFailed, StepUp
from mfa_core.tokens import Principal

logger = Logger(child=True)

LOGIN_EVENT = "login.mfa"
STEP_UP_EVENT = "mfa.step_up"


@dataclass(frozen=True, kw_only=True)
class Proof:
    """The proof a caller presents: a TOTP code, a WebAuthn assertion with its challenge id, or
    a backup code."""

    factor_id: str | None = None
    code: str | None = None
    backup_code: str | None = None
    credential: dict[str, Any] | None = None
    challenge_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class _Checked:
    """A proof that passed: how to update the factor, and the assurance it gives."""

    factor_actions: list[Any]
    factor_condition: Any
    amr: list[str]
    acr: str
    details: dict[str, Any]
    # The challenge or SMS code that the verification spends.
    spends: str | None = None


def start_challenge(
    svc: Services, principal: Principal, *, factor_id: str | None, context: RequestContext
) -> CeremonyOptions | sms.SentCode:
    """Send an SMS code, or store a WebAuthn challenge and return the request options.

    With the `factor_id` of a phone, a new code is sent and the previous one stops working.
    With a key's `factor_id`, the options allow that key only; without, any of the user's keys.
    """
    now = svc.clock.now()
    if principal.token_type == tokens.MFA_PENDING:
        transaction_id = principal.transaction_id
        if transaction_id is None:
            raise InvalidToken()
        login, user, org = svc.store.load_login_context(
            transaction_id=transaction_id, org_id=principal.org_id, user_id=principal.user_id
        )
        if not _login_open(login, principal, now):
            raise InvalidToken()
    else:
        login = None
        user = svc.store.get_user(principal.org_id, principal.user_id)
        org = svc.store.get_org(principal.org_id)
    if user is None or user.status != "active":
        raise InvalidToken()
    lockout.reject_if_locked(
        svc, user, now=now, event_type=_event_type(principal), factor_id=factor_id, context=context
    )

    factors = user.factor_summaries()
    if principal.token_type == tokens.MFA_PENDING and login is not None and login.factor_ids:
        factors = {fid: info for fid, info in factors.items() if fid in login.factor_ids}
    if factor_id is not None:
        if factor_id not in factors:
            raise NotFound("No active factor with this id.")
        if factors[factor_id].get("type") == sms.TYPE:
            return _send_sms_code(
                svc, principal, user, factor_id, login=login, org=org, now=now, context=context
            )
        if factors[factor_id].get("type") != webauthn.TYPE:
            raise InvalidInput(
                "This factor needs no challenge; send its code to /v1/auth/mfa/verify.",
                field="factor_id",
            )
        factors = {factor_id: factors[factor_id]}
    keys = {fid: webauthn.key_ref(info) for fid, info in factors.items()}
    allowed = {fid: key for fid, key in keys.items() if key is not None}
    if not allowed:
        raise NotFound("The user has no security key; verify with another factor.")

    user_verification = policy.webauthn_policy(org).user_verification
    lifetime = svc.settings.webauthn_challenge_seconds
    record = ChallengeModel(
        secrets.token_urlsafe(24),
        kind=webauthn.AUTHENTICATION,
        org_id=user.org_id,
        user_id=user.user_id,
        created_at=now,
        expires_at=int(now) + lifetime,
        challenge=webauthn.new_challenge(),
        bound_to=binding(principal),
        user_verification=user_verification,
        factor_ids=sorted(allowed),
    )
    options = webauthn.request_options(
        webauthn.relying_party(svc.settings),
        challenge=record.challenge,
        allow=allowed.values(),
        user_verification=user_verification,
        timeout_ms=lifetime * 1000,
    )
    event = audit.event(
        now=now,
        event_type="mfa.challenge",
        outcome="success",
        org_id=user.org_id,
        user_id=user.user_id,
        factor_id=factor_id,
        context=context,
        details={"type": webauthn.TYPE},
    )
    svc.store.save_challenge(record, [event])
    return CeremonyOptions(record.challenge_id, options, lifetime)


def _send_sms_code(
    svc: Services,
    principal: Principal,
    user: UserModel,
    factor_id: str,
    *,
    login: ChallengeModel | None,
    org: OrgModel | None,
    now: float,
    context: RequestContext,
) -> sms.SentCode:
    phone_factor = svc.store.get_factor(user.org_id, user.user_id, factor_id)
    if phone_factor is None or phone_factor.status != "active":
        raise NotFound("No active factor with this id.")
    if not _allowed(phone_factor, login, org, user, now):
        _refuse_factor(
            svc,
            user,
            factor_id,
            at_login=login is not None,
            event_type=_event_type(principal),
            now=now,
            context=context,
        )
    return sms.send_code(svc, user, phone_factor, binding=binding(principal), context=context)


def verify(
    svc: Services, principal: Principal, proof: Proof, *, context: RequestContext
) -> dict[str, Any]:
    """Check a proof; return a session's tokens at login, or a fresh access token at step-up.

    Raises InvalidToken when the login transaction or session is gone, NotFound for a factor
    the user does not have, InvalidCode or InvalidCredential for a wrong, replayed or rejected
    proof, and LockedOut when the account is locked.
    """
    now = svc.clock.now()
    assertion = webauthn.parse_assertion(proof.credential) if proof.credential is not None else None
    factor_id, named_other = _factor_id(principal, proof, assertion)
    at_login = principal.token_type == tokens.MFA_PENDING
    transaction_id = principal.transaction_id if at_login else None
    if at_login and transaction_id is None:
        raise InvalidToken()
    read = svc.store.load_verification(
        org_id=principal.org_id,
        user_id=principal.user_id,
        transaction_id=transaction_id,
        session_id=None if at_login else principal.session_id,
        factor_id=factor_id,
        challenge_id=proof.challenge_id if proof.backup_code is None else None,
    )
    user, factor = read.user, read.factor
    if (
        user is None
        or user.status != "active"
        or not _anchor_valid(read.anchor, user, principal, now)
    ):
        raise InvalidToken()
    event_type = _event_type(principal)
    lockout.reject_if_locked(
        svc, user, now=now, event_type=event_type, factor_id=factor_id, context=context
    )
    if named_other:
        _reject_unknown_key(
            svc, user, event_type=event_type, now=now, context=context, reason="factor_mismatch"
        )
    expected_types = (
        {webauthn.TYPE}
        if assertion is not None
        else {backup_codes.TYPE}
        if proof.backup_code is not None
        else {"totp", sms.TYPE}
    )
    login = read.anchor if isinstance(read.anchor, ChallengeModel) else None
    if factor is not None and not _allowed(factor, login, read.org, user, now):
        _refuse_factor(
            svc,
            user,
            factor.factor_id,
            at_login=login is not None,
            event_type=event_type,
            now=now,
            context=context,
        )
    if factor is None or factor.status != "active" or factor.type not in expected_types:
        if assertion is not None:
            _reject_unknown_key(
                svc,
                user,
                event_type=event_type,
                now=now,
                context=context,
                reason="credential_unknown",
            )
        if proof.backup_code is not None:
            # The same response as a wrong code, so that it does not reveal whether codes exist.
            _reject_unknown_key(
                svc,
                user,
                event_type=event_type,
                now=now,
                context=context,
                reason="backup_codes_missing",
                error=InvalidCode(),
            )
        raise NotFound("No active factor with this id.")

    attempt = _Attempt(svc, principal, user, factor, event_type=event_type, context=context)
    if assertion is not None:
        checked = attempt.check_assertion(assertion, read.challenge, now=now)
    elif proof.backup_code is not None:
        checked = attempt.check_backup_code(proof.backup_code, now=now)
    elif factor.type == sms.TYPE:
        checked = attempt.check_sms(proof.code or "", read.challenge, now=now)
    else:
        checked = attempt.check_code(proof.code or "", now=now)

    return _complete(svc, attempt, checked, read.anchor, read.org, now=now)


def _allowed(
    factor: FactorModel,
    login: ChallengeModel | None,
    org: OrgModel | None,
    user: UserModel,
    now: float,
) -> bool:
    """Tell whether a factor may verify this login (`login`) or a step-up (`login` None).

    At login, the password step's decision stored on the transaction rules. At step-up, the
    org's policy does: an allowed method, and a security key for a role that must use one
    once the user has a key. Backup codes are the way back in when factors are lost, so they
    always count.
    """
    if factor.type == backup_codes.TYPE:
        return True
    if login is not None and login.factor_ids is not None:
        return factor.factor_id in login.factor_ids
    rule = policy.mfa_policy(org).rule_for(role=user.role, now=now)
    if rule.enforcement == "off":
        return True
    summaries = user.factor_summaries().values()
    if factor.type not in rule.methods:
        # A user left with only factors of methods no longer allowed still proves it with them,
        # except where MFA is required: there such a factor only earns an enrollment, at login.
        return rule.enforcement != "required" and not any(
            info.get("type") in rule.methods for info in summaries
        )
    has_key = any(
        info.get("type") == webauthn.TYPE and not info.get("blocked") for info in summaries
    )
    return not (rule.security_key and has_key and factor.type != webauthn.TYPE)


def _refuse_factor(
    svc: Services,
    user: UserModel,
    factor_id: str,
    *,
    at_login: bool,
    event_type: str,
    now: float,
    context: RequestContext,
) -> NoReturn:
    """Audit and raise the refusal of a factor that the policy or the login does not accept."""
    svc.store.record(
        audit.event(
            now=now,
            event_type=event_type,
            outcome="denied",
            org_id=user.org_id,
            user_id=user.user_id,
            factor_id=factor_id,
            context=context,
            reason="factor_type_not_allowed",
        )
    )
    where = (
        "use one of the factors that the login response listed"
        if at_login
        else "step up with another of your factors that the policy allows"
    )
    raise MethodNotAllowed(f"Your org's policy does not accept this factor here; {where}.")


def _complete(
    svc: Services,
    attempt: _Attempt,
    checked: _Checked,
    anchor: ChallengeModel | SessionModel | None,
    org: OrgModel | None,
    *,
    now: float,
) -> dict[str, Any]:
    """Write the verification's outcome and build the response."""
    user, factor, context = attempt.user, attempt.factor, attempt.context
    if anchor is not None and auth.FEDERATED in (anchor.amr or []):
        # The first factor was an SSO login, not a password.
        amr = [auth.FEDERATED if value == "pwd" else value for value in checked.amr]
        checked = dataclasses.replace(checked, amr=amr)
    transaction_id = anchor.challenge_id if isinstance(anchor, ChallengeModel) else None
    org_policy = policy.mfa_policy(org)
    revoke: list[tuple[SessionModel, audit.AuditEvent]] = []
    user_update: list[Any] = []
    pair: sessions.TokenPair | None = None
    if isinstance(anchor, ChallengeModel):
        step_up = None
        if anchor.next_step in (auth.REGISTER_SECURITY_KEY, auth.ENROLL_ALLOWED_METHOD):
            session = None
        else:
            revoke = sessions.make_room(
                svc,
                user=user,
                max_sessions=org_policy.max_sessions,
                action=org_policy.session_limit_action,
                context=context,
            )
            session, pair = sessions.new_session(
                svc,
                user=user,
                amr=checked.amr,
                acr=checked.acr,
                auth_time=anchor.auth_time or now,
                mfa_time=now,
                context=context,
            )
        user_update = anomalies.history_update(user, anchor.location, now=now)
    else:
        current = anchor
        assert isinstance(current, SessionModel)
        session, pair = current, None
        step_up = StepUp(session_id=current.session_id, amr=checked.amr, acr=checked.acr)

    success = audit.event(
        now=now,
        event_type=attempt.event_type,
        outcome="success",
        org_id=user.org_id,
        user_id=user.user_id,
        factor_id=factor.factor_id,
        session_id=session.session_id if session else None,
        context=context,
        details={"type": factor.type, "acr": checked.acr, **checked.details},
    )
    try:
        svc.store.complete_verification(
            user=user,
            factor=factor,
            factor_actions=checked.factor_actions,
            factor_condition=checked.factor_condition,
            transaction_id=transaction_id,
            challenge_id=checked.spends,
            new_session=session if transaction_id is not None else None,
            step_up=step_up,
            now=now,
            events=[success],
            revocations=revoke,
            user_update=user_update,
        )
    except ConditionFailed as exc:
        attempt.explain_lost_race(exc, now=now)
    ids = {"org_id": user.org_id, "user_id": user.user_id, "factor_id": factor.factor_id}
    extra = _backup_code_notice(checked)
    if isinstance(anchor, ChallengeModel) and pair is None:
        telemetry.count(telemetry.MFA_VERIFIED)
        logger.info("MFA verified; a new factor is required", extra=ids)
        methods = auth.enrollment_methods(org_policy, org_policy.rule_for(role=user.role, now=now))
        token, lifetime = auth.enrollment_token(svc, user, methods=methods, mfa_time=now)
        return {
            "status": auth.ENROLLMENT_REQUIRED,
            "enrollment_token": token,
            "expires_in": lifetime,
            "allowed_methods": methods,
            "next_step": anchor.next_step,
            **extra,
        }
    if pair is not None:
        assert isinstance(anchor, ChallengeModel)
        telemetry.count(telemetry.MFA_VERIFIED)
        logger.info("MFA verified", extra={**ids, "acr": checked.acr})
        body = {"status": "authenticated", **pair.as_json(), **extra}
        if revoke:
            body["sessions_ended"] = [ended.session_id for ended, _ in revoke]
        if anchor.device is not None and org_policy.reauthentication == "every_24h":
            token, lifetime = remember.issue(
                svc,
                user=user,
                device=anchor.device,
                amr=checked.amr,
                acr=checked.acr,
                mfa_time=now,
                policy_version=org_policy.version,
            )
            body["remember_device_token"] = token
            body["remember_device_expires_in"] = lifetime
        return body
    assert session is not None

    session.mfa_time, session.amr, session.acr = now, checked.amr, checked.acr
    telemetry.count(telemetry.STEP_UP_VERIFIED)
    logger.info("Step-up verified", extra={**ids, "acr": checked.acr})
    return {
        "status": "verified",
        "access_token": sessions.access_token(svc, session=session, role=user.role),
        "token_type": "Bearer",
        "expires_in": svc.settings.access_token_seconds,
        "acr": checked.acr,
        "mfa_time": int(now),
        **extra,
    }


def _backup_code_notice(checked: _Checked) -> dict[str, Any]:
    """Tell the user how many backup codes remain after using one, with a warning when few do."""
    remaining = checked.details.get("backup_codes_remaining")
    if remaining is None:
        return {}
    notice: dict[str, Any] = {"backup_codes_remaining": remaining}
    if remaining <= backup_codes.LOW_WATERMARK:
        notice["warning"] = (
            f"Only {remaining} backup codes remain; generate a new set at /v1/me/backup-codes."
        )
    return notice


class _Attempt:
    """One verification attempt: the checks of each kind of proof and how failures are kept."""

    def __init__(
        self,
        svc: Services,
        principal: Principal,
        user: UserModel,
        factor: FactorModel,
        *,
        event_type: str,
        context: RequestContext,
    ) -> None:
        self.svc = svc
        self.principal = principal
        self.user = user
        self.factor = factor
        self.event_type = event_type
        self.context = context

    def check_code(self, code: str, *, now: float) -> _Checked:
        step = totp.matching_step(open_totp_secret(self.svc, self.factor), code, now=now)
        if step is None:
            self.fail(now=now, reason="invalid_code")
        if self.factor.last_step is not None and step <= self.factor.last_step:
            self.reject_replay(now=now, reason="code_replayed")
        return _Checked(
            factor_actions=[FactorModel.last_step.set(step), FactorModel.last_used_at.set(now)],
            factor_condition=(FactorModel.status == "active")
            & (FactorModel.last_step.does_not_exist() | (FactorModel.last_step < step)),
            amr=["pwd", "otp", "mfa"],
            acr="aal2",
            details={},
        )

    def check_sms(self, code: str, record: ChallengeModel | None, *, now: float) -> _Checked:
        factor = self.factor
        if record is None and factor.sms_code_id:
            record = self.svc.store.get_challenge(factor.sms_code_id)
        reason = sms.check_code(self.svc, factor, record, code, now=now)
        if reason is None and record is not None and record.bound_to != binding(self.principal):
            reason = "code_not_bound"
        if reason == "code_used":
            self.reject_replay(now=now, reason=reason)
        if reason is not None or record is None:
            self.fail(now=now, reason=reason or "code_unknown")
        return _Checked(
            factor_actions=[FactorModel.last_used_at.set(now)],
            factor_condition=(FactorModel.status == "active")
            & (FactorModel.sms_code_id == record.challenge_id),
            amr=["pwd", "sms", "mfa"],
            acr="aal2",
            details={},
            spends=record.challenge_id,
        )

    def check_backup_code(self, code: str, *, now: float) -> _Checked:
        hashes = self.factor.code_digests()
        match = backup_codes.find(self.svc.pepper, code, hashes)
        if match is None:
            self.fail(now=now, reason="invalid_backup_code")
        if hashes[match]:
            self.reject_replay(now=now, reason="backup_code_used")
        remaining = sum(1 for used in hashes.values() if not used) - 1
        return _Checked(
            factor_actions=[
                FactorModel.code_hashes[match].set(now),
                FactorModel.last_used_at.set(now),
            ],
            factor_condition=FactorModel.code_hashes[match] == 0,
            amr=["pwd", "mfa"],
            acr="aal2",
            details={"backup_codes_remaining": remaining},
        )

    def check_assertion(
        self, assertion: Any, challenge: ChallengeModel | None, *, now: float
    ) -> _Checked:
        factor = self.factor
        if challenge is None or challenge.kind != webauthn.AUTHENTICATION:
            self.fail(now=now, reason="challenge_unknown", error=InvalidCredential())
        if challenge.consumed_at is not None:
            self.reject_replay(now=now, reason="challenge_used", error=InvalidCredential())
        if (
            challenge.org_id != self.user.org_id
            or challenge.user_id != self.user.user_id
            or challenge.bound_to != binding(self.principal)
        ):
            self.fail(now=now, reason="challenge_not_bound", error=InvalidCredential())
        if challenge.expires_at <= now:
            self.fail(now=now, reason="challenge_expired", error=InvalidCredential())
        if factor.factor_id not in (challenge.factor_ids or []):
            self.fail(now=now, reason="credential_not_allowed", error=InvalidCredential())
        if factor.clone_suspected_at is not None:
            self.deny_suspected_clone(now=now)
        if challenge.challenge is None or factor.public_key is None:
            self.fail(now=now, reason="challenge_unknown", error=InvalidCredential())

        try:
            result = webauthn.verify_assertion(
                webauthn.relying_party(self.svc.settings),
                assertion,
                challenge=challenge.challenge,
                public_key=factor.public_key,
                user_handle=self.user.user_id,
            )
        except webauthn.AssertionRejected as exc:
            # The challenge stays usable until it expires: a rejected response spends nothing,
            # and every rejection counts towards the lockout.
            self.fail(now=now, reason=exc.reason, error=InvalidCredential())

        # W3C WebAuthn §7.2: backup eligibility is fixed when the credential is created.
        if result.backup_eligible != bool(factor.backup_eligible):
            self.fail(now=now, reason="backup_eligibility_changed", error=InvalidCredential())

        if challenge.user_verification == "required" and not result.user_verified:
            self.fail(
                now=now,
                reason="user_verification_missing",
                error=InvalidCredential(
                    "This org requires user verification (a PIN or biometric) on the security "
                    "key; use a key that supports it."
                ),
            )

        stored = int(factor.sign_count or 0)
        if webauthn.counter_regressed(stored=stored, reported=result.sign_count):
            self.flag_clone(challenge, stored=stored, reported=result.sign_count, now=now)

        amr, acr = webauthn.assurance(
            user_verified=result.user_verified, backup_eligible=bool(factor.backup_eligible)
        )
        return _Checked(
            factor_actions=[
                FactorModel.sign_count.set(result.sign_count),
                FactorModel.backup_state.set(result.backup_state),
                FactorModel.last_used_at.set(now),
            ],
            # The count read above must still be the stored one, so that of two concurrent
            # assertions with the same count only one wins.
            factor_condition=(FactorModel.status == "active")
            & (FactorModel.sign_count == stored)
            & FactorModel.clone_suspected_at.does_not_exist(),
            amr=amr,
            acr=acr,
            details={"user_verified": result.user_verified, "sign_count": result.sign_count},
            spends=challenge.challenge_id,
        )

    def fail(self, *, now: float, reason: str, error: Exception | None = None) -> NoReturn:
        """Audit a failed proof, count it towards lockout and raise."""
        failure = self._event(now, "failure", reason)
        locked = lockout.record_failure(self.svc, self.user, failure=failure, context=self.context)
        telemetry.count(telemetry.MFA_FAILED)
        logger.info(
            "MFA verification failed",
            extra={"org_id": self.user.org_id, "user_id": self.user.user_id, "reason": reason},
        )
        if locked is not None:
            raise locked
        raise error or InvalidCode()

    def reject_replay(self, *, now: float, reason: str, error: Exception | None = None) -> NoReturn:
        """Reject a proof that was right once but is used again.

        A replay is audited and logged as a security event but not counted towards lockout.
        The proof was right, so it is no evidence of guessing, and counting it would let one
        double-submitted form lock its own user out.
        """
        self.svc.store.record(self._event(now, "denied", reason))
        telemetry.count(telemetry.MFA_CODE_REPLAYED)
        logger.warning("MFA proof replayed", extra={**self._ids(), "reason": reason})
        raise error or InvalidCode()

    def deny_suspected_clone(self, *, now: float) -> NoReturn:
        """Reject any assertion from a key flagged as possibly cloned, without counting it.

        Either copy of the credential could be the attacker's, so the key stays unusable until
        its owner removes it and registers it again.
        """
        self.svc.store.record(self._event(now, "denied", "clone_suspected"))
        logger.warning("Security key flagged as possibly cloned was used", extra=self._ids())
        raise InvalidCredential(
            "This security key is blocked because it may have been copied; sign in with "
            "another factor, remove the key and register it again."
        )

    def flag_clone(
        self, challenge: ChallengeModel, *, stored: int, reported: int, now: float
    ) -> NoReturn:
        """Reject a correctly signed assertion whose counter went back: a possible cloned key."""
        event = audit.event(
            now=now,
            event_type="webauthn.clone_suspected",
            outcome="denied",
            org_id=self.user.org_id,
            user_id=self.user.user_id,
            factor_id=self.factor.factor_id,
            context=self.context,
            reason="sign_count_not_increased",
            details={"stored_sign_count": stored, "reported_sign_count": reported},
        )
        try:
            self.svc.store.flag_suspected_clone(
                self.factor, challenge_id=challenge.challenge_id, now=now, events=[event]
            )
        except ConditionFailed:
            self.reject_replay(now=now, reason="challenge_used", error=InvalidCredential())
        telemetry.count(telemetry.WEBAUTHN_CLONE_SUSPECTED)
        logger.warning(
            "Security key signature counter did not increase; possible cloned key",
            extra={**self._ids(), "stored_sign_count": stored, "reported_sign_count": reported},
        )
        raise InvalidCredential()

    def explain_lost_race(self, exc: ConditionFailed, *, now: float) -> NoReturn:
        """Turn a lost conditional write into the error the caller would have got a moment later."""
        if "user" in exc.failed:
            fresh = self.svc.store.get_user(self.user.org_id, self.user.user_id)
            if fresh is not None:
                lockout.check_not_locked(fresh, now)
        is_key = self.factor.type == webauthn.TYPE
        if "challenge" in exc.failed:
            error = InvalidCredential() if is_key else InvalidCode()
            self.reject_replay(now=now, reason="challenge_used", error=error)
        if "factor" in exc.failed:
            if self.factor.type == "totp":
                self.reject_replay(now=now, reason="code_replayed")
            if self.factor.type == backup_codes.TYPE:
                self.reject_replay(now=now, reason="backup_code_used")
            if self.factor.type == sms.TYPE:
                self.reject_replay(now=now, reason="code_superseded")
            self.reject_replay(now=now, reason="concurrent_use", error=InvalidCredential())
        raise InvalidToken() from exc

    def _event(self, now: float, outcome: str, reason: str) -> audit.AuditEvent:
        return audit.event(
            now=now,
            event_type=self.event_type,
            outcome=outcome,
            org_id=self.user.org_id,
            user_id=self.user.user_id,
            factor_id=self.factor.factor_id,
            context=self.context,
            reason=reason,
            details={"type": self.factor.type},
        )

    def _ids(self) -> dict[str, str]:
        return {
            "org_id": self.user.org_id,
            "user_id": self.user.user_id,
            "factor_id": self.factor.factor_id,
        }


def _reject_unknown_key(
    svc: Services,
    user: UserModel,
    *,
    event_type: str,
    now: float,
    context: RequestContext,
    reason: str,
    error: MfaError | None = None,
) -> NoReturn:
    """Reject a proof for a factor the user does not have: an assertion from a key that is
    not the user's or not the factor named, or a backup code of a user without any.

    It counts as a failure towards the lockout.
    """
    failure = audit.event(
        now=now,
        event_type=event_type,
        outcome="failure",
        org_id=user.org_id,
        user_id=user.user_id,
        context=context,
        reason=reason,
        details={"type": webauthn.TYPE},
    )
    locked = lockout.record_failure(svc, user, failure=failure, context=context)
    telemetry.count(telemetry.MFA_FAILED)
    logger.info(
        "MFA verification failed",
        extra={"org_id": user.org_id, "user_id": user.user_id, "reason": reason},
    )
    if locked is not None:
        raise locked
    raise error or InvalidCredential()


def _factor_id(principal: Principal, proof: Proof, assertion: Any) -> tuple[str, bool]:
    """Return the factor a proof is for, and whether the request named another factor.

    A security key's factor follows from its credential id.
    """
    if proof.backup_code is not None:
        return backup_codes.FACTOR_ID, False
    if assertion is None:
        if proof.factor_id is None:
            raise InvalidInput("Field 'factor_id' is required with a code.", field="factor_id")
        return proof.factor_id, False
    derived = webauthn.factor_id_for(principal.org_id, principal.user_id, assertion.id)
    return derived, proof.factor_id is not None and proof.factor_id != derived


def _event_type(principal: Principal) -> str:
    return LOGIN_EVENT if principal.token_type == tokens.MFA_PENDING else STEP_UP_EVENT


def _login_open(login: ChallengeModel | None, principal: Principal, now: float) -> bool:
    return (
        login is not None
        and login.kind == "login"
        and login.consumed_at is None
        and login.expires_at > now
        and login.org_id == principal.org_id
        and login.user_id == principal.user_id
    )


def _anchor_valid(
    anchor: ChallengeModel | SessionModel | None,
    user: UserModel,
    principal: Principal,
    now: float,
) -> bool:
    if isinstance(anchor, ChallengeModel):
        return _login_open(anchor, principal, now)
    if isinstance(anchor, SessionModel):
        return (
            anchor.org_id == principal.org_id
            and anchor.user_id == principal.user_id
            and sessions.is_valid(anchor, user, now)
        )
    return False
