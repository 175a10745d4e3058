"""SMS codes: enrolling a phone, and sending the codes that confirm it and sign in with it.

SMS is a fallback: its codes can be intercepted or redirected, so an org may keep it from
being a user's only factor. A code is 6 digits from `secrets`, valid for 5 minutes and for 5
verifications, and stored only as a digest keyed with the pepper. Sending a new code voids the
previous one. Phone numbers never reach logs or audit details.

`mfa_core.phone` is imported where it is used: its phonenumbers metadata adds about 12 ms to
the cold start of functions that may never handle a phone number.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core import audit, policy, ratelimit, telemetry
from mfa_core.audit import RequestContext
from mfa_core.errors import Conflict, DependencyFailed, InvalidInput, Throttled
from mfa_core.runtime import Services
from mfa_core.store.models import ChallengeModel, FactorModel, UserModel, user_key
from mfa_core.tokens import Principal

logger = Logger(child=True)

TYPE = "sms"
KIND = "sms"
DEFAULT_LABEL = "Phone (SMS)"
CODE_DIGITS = 6
CODE_SECONDS = 5 * 60
MAX_ATTEMPTS = 5
PENDING_SECONDS = 15 * 60


@dataclass(frozen=True)
class SentCode:
    """A code that was sent: the id to verify it with, and the masked number it went to."""

    challenge_id: str
    expires_in: int
    masked_number: str

    def as_json(self) -> dict[str, Any]:
        return {
            "challenge_id": self.challenge_id,
            "expires_in": self.expires_in,
            "phone_number": self.masked_number,
        }


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_digest(pepper: bytes, code: str) -> str:
    return hmac.new(pepper, f"sms:{code}".encode("ascii"), hashlib.sha256).hexdigest()


def code_matches(pepper: bytes, code: str, stored: str) -> bool:
    return hmac.compare_digest(code_digest(pepper, code), stored)


def phone_key(pepper: bytes, number: str) -> str:
    """Identify a phone number for rate limits without storing the number itself."""
    return hmac.new(pepper, f"phone:{number}".encode("ascii"), hashlib.sha256).hexdigest()[:32]


def start_enrollment(
    svc: Services,
    principal: Principal,
    user: UserModel,
    *,
    raw_number: str,
    label: str,
    binding: str,
    context: RequestContext,
) -> dict[str, Any]:
    """Create a pending SMS factor and send the code that confirms it."""
    from mfa_core import phone  # noqa: PLC0415

    org_policy = policy.sms_policy(svc.store.get_org(user.org_id))
    number = phone.normalize(raw_number, allowed_countries=org_policy.allowed_countries or None)
    # Refused before any code is sent: an SMS that can never be confirmed only costs money.
    ensure_not_sole_factor(svc, user)
    now = svc.clock.now()
    factor = FactorModel(
        user_key(user.org_id, user.user_id),
        f"f_{secrets.token_hex(12)}",
        org_id=user.org_id,
        user_id=user.user_id,
        type=TYPE,
        status="pending",
        label=label,
        created_at=now,
        phone_number=number.e164,
        expires_at=int(now) + PENDING_SECONDS,
    )
    record = _send(svc, user, factor, binding=binding, context=context, now=now)
    factor.sms_code_id = record.challenge_id
    event = _event(now, factor, "factor.enroll", context, details={"country": number.country})
    svc.store.start_sms_factor(factor, record, [event])
    logger.info("SMS factor pending", extra=_ids(factor))
    return {
        "factor_id": factor.factor_id,
        "type": TYPE,
        "status": "pending",
        "label": label,
        # The owner's own enrollment is the only response that shows the whole number.
        "phone_number": number.e164,
        "challenge_id": record.challenge_id,
        "expires_in": CODE_SECONDS,
        "expires_at": int(factor.expires_at or 0),
    }


def send_code(
    svc: Services,
    user: UserModel,
    factor: FactorModel,
    *,
    binding: str,
    context: RequestContext,
) -> SentCode:
    """Send a new code for an SMS factor; the previous code stops working."""
    from mfa_core import phone  # noqa: PLC0415

    now = svc.clock.now()
    record = _send(svc, user, factor, binding=binding, context=context, now=now)
    event = _event(now, factor, "mfa.challenge", context, details={})
    svc.store.issue_sms_code(factor, record, [event])
    return SentCode(record.challenge_id, CODE_SECONDS, phone.mask(factor.phone_number or ""))


def check_code(
    svc: Services, factor: FactorModel, record: ChallengeModel | None, code: str, *, now: float
) -> str | None:
    """Check an SMS code against its record; return None when it matches, else the reason.

    Each check counts against the code's MAX_ATTEMPTS before the comparison, so concurrent
    guesses cannot exceed them.
    """
    if record is None or record.kind != KIND or record.factor_ids != [factor.factor_id]:
        return "code_unknown"
    if record.challenge_id != factor.sms_code_id:
        return "code_superseded"
    if record.consumed_at is not None:
        return "code_used"
    if record.expires_at <= now:
        return "code_expired"
    if not svc.store.count_code_attempt(record.challenge_id, now=now, max_attempts=MAX_ATTEMPTS):
        return "code_attempts_exhausted"
    if record.challenge is None or not code_matches(svc.pepper, code, record.challenge):
        return "invalid_code"
    return None


def _send(
    svc: Services,
    user: UserModel,
    factor: FactorModel,
    *,
    binding: str,
    context: RequestContext,
    now: float,
) -> ChallengeModel:
    """Count the send against the limits, send the SMS and build the code's record.

    Over a limit: Throttled, audited, nothing sent. When SNS fails: DependencyFailed, the uses
    are given back and no code exists that could be used.
    """
    number = factor.phone_number or ""
    org_policy = policy.sms_policy(svc.store.get_org(user.org_id))
    limits = ratelimit.SmsLimits(
        user_per_hour=svc.settings.sms_user_per_hour,
        phone_per_day=svc.settings.sms_phone_per_day,
        ip_per_hour=svc.settings.sms_ip_per_hour,
        org_per_day=org_policy.daily_cap,
    )
    counters = ratelimit.sms_limits(
        limits,
        org_id=user.org_id,
        user_id=user.user_id,
        phone_key=phone_key(svc.pepper, number),
        source_ip=context.source_ip,
        now=now,
    )
    try:
        ratelimit.reserve(svc, counters, now=now)
    except Throttled as exc:
        svc.store.record(
            _event(now, factor, "sms.send", context, outcome="denied", reason=f"limit_{exc.limit}")
        )
        telemetry.count(telemetry.SMS_THROTTLED)
        logger.warning("SMS not sent: limit reached", extra={**_ids(factor), "limit": exc.limit})
        raise

    code = new_code()
    try:
        svc.sms_sender.send(
            phone_number=number,
            message=f"{svc.settings.totp_issuer} code: {code}. It expires in 5 minutes.",
        )
    except DependencyFailed:
        ratelimit.release(svc, counters)
        svc.store.record(
            _event(now, factor, "sms.send", context, outcome="failure", reason="sender_failed")
        )
        raise
    telemetry.count(telemetry.SMS_SENT)
    logger.info("SMS code sent", extra=_ids(factor))
    record = ChallengeModel(
        secrets.token_urlsafe(24),
        kind=KIND,
        org_id=user.org_id,
        user_id=user.user_id,
        created_at=now,
        expires_at=int(now) + CODE_SECONDS,
        challenge=code_digest(svc.pepper, code),
        bound_to=binding,
        factor_ids=[factor.factor_id],
        attempts=0,
    )
    return record


def ensure_not_sole_factor(svc: Services, user: UserModel) -> None:
    """Reject SMS as the user's only usable factor where the org keeps SMS a fallback.

    Usable means active, not SMS and not blocked as a suspected clone. The caller's write
    carries the user's factors version, so a concurrent change cannot slip past this check.
    """
    others = [
        info
        for info in user.factor_summaries().values()
        if info.get("type") != TYPE and not info.get("blocked")
    ]
    if not others and policy.sms_policy(svc.store.get_org(user.org_id)).fallback_only:
        raise Conflict(
            "This org allows SMS only as a fallback; add an authenticator app or a security "
            "key first, then add the phone."
        )


def validate_label(label: str | None) -> str:
    if label is None:
        return DEFAULT_LABEL
    label = label.strip()
    if not 1 <= len(label) <= 64 or not label.isprintable():
        raise InvalidInput("Use a label of 1 to 64 printable characters.", field="label")
    return label


def _event(
    now: float,
    factor: FactorModel,
    event_type: str,
    context: RequestContext,
    *,
    details: dict[str, Any] | None = None,
    outcome: str = "success",
    reason: str | None = None,
) -> audit.AuditEvent:
    # The phone number is personal data: never in the audit trail, at most its country.
    return audit.event(
        now=now,
        event_type=event_type,
        outcome=outcome,
        org_id=factor.org_id,
        user_id=factor.user_id,
        factor_id=factor.factor_id,
        context=context,
        reason=reason,
        details={"type": TYPE, **(details or {})},
    )


def _ids(factor: FactorModel) -> dict[str, str]:
    return {"org_id": factor.org_id, "user_id": factor.user_id, "factor_id": factor.factor_id}
