"""The scan's rules that need nothing but audit events: pure functions from events to
detections (a condition seen) and resolutions (a condition that no longer holds).

Rules that count across runs, read members or keep profiles live in mfa_core.cso.scan, and
build their detections with the same Detection type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import MapAttribute

from mfa_core import risk
from mfa_core.store.models import AuditModel

NOT_ENROLLED = "mfa_not_enrolled"
FAILED_MFA_SPIKE = "failed_mfa_spike"
METHOD_DOWNGRADE = "mfa_method_downgrade"
CLONED_KEY = "cloned_security_key"
REFRESH_REUSE = "refresh_token_reuse"
ADMIN_RESET = "admin_mfa_reset"
ANOMALOUS_LOGIN = "anomalous_login"
UNUSUAL_LOGIN_HOUR = "unusual_login_hour"
SHARED_SOURCE_IP = "shared_source_ip"
ENFORCEMENT_WEAKENED = "mfa_enforcement_weakened"
RULES = (
    NOT_ENROLLED,
    FAILED_MFA_SPIKE,
    METHOD_DOWNGRADE,
    CLONED_KEY,
    REFRESH_REUSE,
    ADMIN_RESET,
    ANOMALOUS_LOGIN,
    UNUSUAL_LOGIN_HOUR,
    SHARED_SOURCE_IP,
    ENFORCEMENT_WEAKENED,
)

SEVERITIES = ("low", "medium", "high", "critical")
STATUSES = ("open", "resolved")
MAX_EVIDENCE = 50
HOUR_FORMAT = "%Y-%m-%dT%H"

# Event types of a failed MFA proof: at login, and for a step-up.
FAILED_MFA_EVENTS = frozenset({"login.mfa", "mfa.step_up"})
# Event types whose success completes a login and opens a session.
LOGIN_EVENTS = frozenset({"login", "login.mfa"})
# Event types of a step of a login, whatever its outcome, that name the user.
LOGIN_ATTEMPT_EVENTS = frozenset({"login", "login.password", "login.mfa"})
RESET_COMPLETE = "mfa_reset.complete"
RESET_OPENED = frozenset({"mfa_reset.request", "mfa_reset.approve", RESET_COMPLETE})
RESET_CLOSED = frozenset({"mfa_reset.cancel", "mfa_reset.expire"})
ENFORCEMENT_RANK = {"off": 0, "optional": 1, "required": 2}


@dataclass(frozen=True, kw_only=True)
class Event:
    """The fields of an audit event that the rules read."""

    event_id: str
    event_type: str
    outcome: str
    created_at: float
    user_id: str | None = None
    factor_id: str | None = None
    source_ip: str | None = None
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_item(cls, item: AuditModel) -> Event:
        details: Any = item.details
        if isinstance(details, MapAttribute):
            details = details.as_dict()  # type: ignore[no-untyped-call]
        return cls(
            event_id=item.event_id,
            event_type=item.event_type,
            outcome=item.outcome,
            created_at=float(item.created_at),
            user_id=item.user_id,
            factor_id=item.factor_id,
            source_ip=item.source_ip,
            reason=item.reason,
            details=details or {},
        )

    @property
    def hour(self) -> str:
        return hour_of(self.created_at)


@dataclass(kw_only=True)
class Detection:
    """A condition seen by a rule. `qualifier` distinguishes findings of one rule and subject,
    such as the UTC hour of rules that count per hour."""

    rule: str
    subject: str
    severity: str
    title: str
    evidence: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    qualifier: str | None = None
    deadline: float | None = None
    first_at: float | None = None
    last_at: float | None = None

    @property
    def finding_id(self) -> str:
        return finding_id(self.rule, self.subject, self.qualifier)

    def merge(self, other: Detection) -> None:
        """Fold a second detection of the same finding into this one."""
        self.severity = max_severity(self.severity, other.severity)
        self.title = other.title if other.severity == self.severity else self.title
        self.evidence = merge_evidence(self.evidence, other.evidence)
        self.details = merge_details(self.rule, self.details, other.details)
        self.deadline = other.deadline if other.deadline is not None else self.deadline
        self.first_at = _earliest(self.first_at, other.first_at)
        self.last_at = _latest(self.last_at, other.last_at)


def finding_id(rule: str, subject: str, qualifier: str | None = None) -> str:
    return f"{rule}#{subject}" if qualifier is None else f"{rule}#{subject}#{qualifier}"


def user_subject(user_id: str) -> str:
    return f"user:{user_id}"


def hour_of(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime(HOUR_FORMAT)


def max_severity(first: str, second: str) -> str:
    return first if SEVERITIES.index(first) >= SEVERITIES.index(second) else second


def merge_evidence(current: Iterable[str], new: Iterable[str]) -> list[str]:
    """Return both lists' event ids without repeats, oldest first, keeping the newest
    MAX_EVIDENCE. Event ids sort by time."""
    return sorted(set(current) | set(new))[-MAX_EVIDENCE:]


def merge_details(
    rule: str, current: Mapping[str, Any], later: Mapping[str, Any]
) -> dict[str, Any]:
    """Return a finding's details with those of a later detection merged in.

    A weakened policy keeps the policy before its first change and every reason while no
    change in between restored it, so that the finding resolves only once a policy is as strict
    as that one again. A completed reset stays completed: its last approval has an event of the
    same millisecond, in either order.
    """
    merged = {**current, **later}
    if rule == ADMIN_RESET and current.get("stage") == RESET_COMPLETE:
        merged["stage"] = RESET_COMPLETE
    if rule == ENFORCEMENT_WEAKENED:
        merged["before"] = baseline(current.get("before"), later.get("before"))
        if merged["before"] is not later.get("before"):
            reasons = [*(current.get("reasons") or ()), *(later.get("reasons") or ())]
            merged["reasons"] = list(dict.fromkeys(reasons))
    return merged


def baseline(first: Mapping[str, Any] | None, later: Mapping[str, Any] | None) -> Any:
    """Return the policy that two weakening changes of one finding are measured against: the
    one before the first change, unless the later change started from a policy as strict,
    which means that a change in between restored it."""
    if first is None:
        return later
    if later is None or weakening(first, later):
        return first
    return later


def event_detection(event: Event, **fields: Any) -> Detection:
    """Build a detection whose evidence is one event."""
    return Detection(
        evidence=[event.event_id],
        first_at=event.created_at,
        last_at=event.created_at,
        **fields,
    )


# -- rules on single events ----------------------------------------------------------------


def detect(events: Iterable[Event]) -> tuple[list[Detection], set[str]]:
    """Apply the single-event rules; return the detections and the ids of findings that the
    events resolve.

    A finding id is in both when an event resolves it after an event that detects it, as a
    key suspected cloned and then removed. A detection after a resolution leaves it open.
    """
    detections: list[Detection] = []
    resolved: set[str] = set()
    for event in sorted(events, key=_event_order):
        count = len(detections)
        _detect_one(event, detections, resolved)
        for detection in detections[count:]:
            resolved.discard(detection.finding_id)
    return detections, resolved


def _event_order(event: Event) -> tuple[str, int, str]:
    """Order events by id, except that policy changes of one millisecond, whose ids are in
    random order, go by policy version."""
    version = 0
    if event.event_type == "policy.mfa":
        try:
            version = int(event.details.get("version") or 0)
        except (TypeError, ValueError):
            version = 0
    return event.event_id.partition("-")[0], version, event.event_id


def _detect_one(event: Event, detections: list[Detection], resolved: set[str]) -> None:
    if event.user_id is None:
        weakened = enforcement_weakened(event)
        if weakened is not None:
            detections.append(weakened)
        return
    subject = user_subject(event.user_id)
    if event.event_type == "webauthn.clone_suspected":
        detections.append(
            event_detection(
                event,
                rule=CLONED_KEY,
                subject=subject,
                qualifier=f"factor:{event.factor_id}",
                severity="high",
                title="A security key's signature counter went back: the key may be cloned",
                details={"factor_id": event.factor_id},
            )
        )
    elif event.event_type == "factor.remove" and event.outcome == "success":
        # A removed key can no longer be used, cloned or not.
        resolved.add(finding_id(CLONED_KEY, subject, f"factor:{event.factor_id}"))
    elif event.event_type == "session.refresh_reuse":
        detections.append(
            event_detection(
                event,
                rule=REFRESH_REUSE,
                subject=subject,
                qualifier=event.hour,
                severity="high",
                title="A rotated refresh token was presented again; its session was revoked",
                details={"hour": event.hour},
            )
        )
    elif event.event_type in RESET_OPENED:
        detections.append(_reset_detection(event, subject))
    elif event.event_type in RESET_CLOSED:
        reset_id = event.details.get("reset_id")
        resolved.add(finding_id(ADMIN_RESET, subject, f"reset:{reset_id}"))
    elif event.event_type == "login.anomaly" and event.outcome != "denied":
        detections.append(_anomaly_detection(event, subject))


def _reset_detection(event: Event, subject: str) -> Detection:
    reset_id = event.details.get("reset_id")
    completed = event.event_type == RESET_COMPLETE
    details: dict[str, Any] = {"reset_id": reset_id, "stage": event.event_type}
    if completed:
        details["factors_disabled"] = event.details.get("factors_disabled")
    elif event.details.get("expires_at") is not None:
        # A request left alone expires without an event; the scan resolves it after this.
        details["expires_at"] = event.details["expires_at"]
    return event_detection(
        event,
        rule=ADMIN_RESET,
        subject=subject,
        qualifier=f"reset:{reset_id}",
        severity="high" if completed else "medium",
        title="Admins reset a member's MFA" if completed else "An admin requested an MFA reset",
        details=details,
    )


def _anomaly_detection(event: Event, subject: str) -> Detection:
    signals = [str(signal) for signal in event.details.get("signals") or ()]
    if risk.IMPOSSIBLE_TRAVEL in signals:
        severity = "high"
    elif risk.NEW_COUNTRY in signals:
        severity = "medium"
    else:
        severity = "low"
    details: dict[str, Any] = {"signals": signals, "action": event.details.get("action")}
    if event.details.get("country"):
        details["country"] = event.details["country"]
    return event_detection(
        event,
        rule=ANOMALOUS_LOGIN,
        subject=subject,
        qualifier=event.hour,
        severity=severity,
        title="A login from an unusual location was let through",
        details=details,
    )


# -- the MFA policy ------------------------------------------------------------------------


def weakening(
    before: Mapping[str, Any], after: Mapping[str, Any], *, at: float | None = None
) -> list[str]:
    """Return how `after` requires MFA of fewer members, or later, than `before` (as
    MfaPolicy.as_json gives them); empty when it does not.

    `at` is the time of the change (epoch seconds). A start date that is already past at
    that time does not postpone enforcement.
    """
    reasons = []
    rank_before = ENFORCEMENT_RANK.get(str(before.get("enforcement")), 0)
    rank_after = ENFORCEMENT_RANK.get(str(after.get("enforcement")), 0)
    if rank_after < rank_before:
        reasons.append("enforcement_lowered")
    # The scope and the start date limit only "required": other members get "optional".
    if rank_after == rank_before == ENFORCEMENT_RANK["required"]:
        if _narrower_scope(before, after):
            reasons.append("scope_narrowed")
        if _postponed(before, after, at=at):
            reasons.append("enforcement_postponed")
    if _idp_trust_widened(before.get("sso"), after.get("sso")):
        reasons.append("idp_mfa_trusted")
    return reasons


def _idp_trust_widened(before: Any, after: Any) -> bool:
    """Tell whether the identity provider's MFA replaces ours in more logins after the change:
    trusted where it was not, for more amr or acr values, or for older logins."""
    before, after = dict(before or {}), dict(after or {})
    if not after.get("trust_idp_mfa"):
        return False
    if not before.get("trust_idp_mfa"):
        return True
    for name in ("accepted_amr", "accepted_acr"):
        if not set(after.get(name) or ()) <= set(before.get(name) or ()):
            return True
    return int(after.get("max_auth_age_minutes") or 0) > int(
        before.get("max_auth_age_minutes") or 0
    )


def _narrower_scope(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    if after.get("scope") != "roles":
        return False
    if before.get("scope") != "roles":
        return True
    return not set(before.get("scope_roles") or ()) <= set(after.get("scope_roles") or ())


def _postponed(before: Mapping[str, Any], after: Mapping[str, Any], *, at: float | None) -> bool:
    old, new = before.get("enforce_after"), after.get("enforce_after")
    if new is None:
        return False
    # ISO 8601 times in UTC with one format sort by time.
    if at is not None and str(new) <= _iso(at):
        return False
    return old is None or str(new) > str(old)


def enforcement_weakened(event: Event) -> Detection | None:
    if event.event_type != "policy.mfa" or event.outcome != "success":
        return None
    before = event.details.get("before") or {}
    after = event.details.get("after") or {}
    reasons = weakening(before, after, at=event.created_at)
    if not reasons:
        return None
    turned_off = after.get("enforcement") == "off"
    if turned_off:
        title = "MFA enforcement was switched off"
    elif reasons == ["idp_mfa_trusted"]:
        title = "The identity provider's MFA now stands in for ours in more logins"
    else:
        title = "MFA enforcement was narrowed"
    return event_detection(
        event,
        rule=ENFORCEMENT_WEAKENED,
        subject="org",
        qualifier=event.hour,
        severity="high" if turned_off else "medium",
        title=title,
        details={
            "reasons": reasons,
            "before": _enforcement_fields(before),
            "after": _enforcement_fields(after),
        },
    )


def _enforcement_fields(policy: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "enforcement": policy.get("enforcement"),
        "scope": policy.get("scope"),
        "scope_roles": list(policy.get("scope_roles") or ()),
        "enforce_after": policy.get("enforce_after"),
        "sso": _trust_fields(policy.get("sso")),
    }


def _trust_fields(sso: Any) -> dict[str, Any]:
    sso = dict(sso or {})
    return {
        "trust_idp_mfa": bool(sso.get("trust_idp_mfa")),
        "accepted_amr": list(sso.get("accepted_amr") or ()),
        "accepted_acr": list(sso.get("accepted_acr") or ()),
        "max_auth_age_minutes": sso.get("max_auth_age_minutes"),
    }


def _iso(moment: float) -> str:
    """Format a time as MfaPolicy.as_json formats `enforce_after`."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _earliest(first: float | None, second: float | None) -> float | None:
    values = [value for value in (first, second) if value is not None]
    return min(values) if values else None


def _latest(first: float | None, second: float | None) -> float | None:
    values = [value for value in (first, second) if value is not None]
    return max(values) if values else None
