"""One run of the security scan over every org, or over one.

Each run of an org reads only what changed since its previous run. That is the audit events
after the stored position, from one key-range Query of the Audit table, and the members those
events name. It also reads the open "not enrolled" findings, to raise those past their
deadline. Every member is read only on the org's first run, after its policy changed, and when
a scheduled enforcement starts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from mfa_core import dashboard, evidence, policy, sms, telemetry, webauthn
from mfa_core.cso import rules
from mfa_core.cso.rules import Detection, Event
from mfa_core.errors import DependencyFailed, MfaError
from mfa_core.runtime import Services
from mfa_core.store.findings import STATE_KEY, WRITE_ATTEMPTS, profile_key
from mfa_core.store.models import (
    FindingModel,
    LoginProfileModel,
    OrgModel,
    ScanStateModel,
    UserModel,
)

logger = Logger(child=True)

HOUR = 3600
# Counters outlive their hour by a day, so a late event of that hour still adds to them.
COUNTER_SECONDS = 25 * HOUR
MEMBER_PAGE = 500
# Event types that change which factors a member has.
FACTOR_EVENTS = frozenset({"factor.activate", "factor.remove", "mfa_reset.complete"})
# Distinct users listed in a shared-address finding.
MAX_LISTED_USERS = 20
# Messages to the security topic per org and run, kept few because people read them. An org's
# first run can open a finding for every member not enrolled. Findings past this count go into
# one summary message, and the event bus gets every finding.
MAX_TOPIC_MESSAGES = 20
# Errors that fail one org's run, or its evidence pack, while the other orgs still run.
SCAN_ERRORS = (MfaError, PynamoDBException, BotoCoreError, ClientError)
# Outcomes of storing a detection in its finding.
NEW, UPDATED, UNCHANGED = "new", "updated", "unchanged"


@dataclass
class ScanResult:
    """The outcome of one run in one org. `new` lists the findings that were notified: first
    seen, reopened or raised to a higher severity in this run."""

    org_id: str
    events_read: int = 0
    members_read: int = 0
    full_member_pass: bool = False
    last_event_id: str | None = None
    # The S3 key of the evidence pack that this run wrote, if it wrote one.
    evidence_key: str | None = None
    new: list[FindingModel] = field(default_factory=list)
    updated: list[FindingModel] = field(default_factory=list)
    resolved: list[FindingModel] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "events_read": self.events_read,
            "members_read": self.members_read,
            "full_member_pass": self.full_member_pass,
            "evidence_key": self.evidence_key,
            "new": [finding.finding_id for finding in self.new],
            "updated": [finding.finding_id for finding in self.updated],
            "resolved": [finding.finding_id for finding in self.resolved],
        }


def scan_all(svc: Services, *, org_id: str | None = None) -> list[ScanResult]:
    """Scan every org (one Scan of the Orgs table), or only `org_id`.

    One org's failure is logged and does not hold up the others; its position is unchanged,
    so the next run reads the same events again.
    """
    if org_id is not None:
        org = svc.store.get_org(org_id)
        orgs: Iterable[OrgModel] = [] if org is None else [org]
    else:
        # NOTE: orgs are scanned in the Scan's order, so when one run over every org needs
        # longer than the function's timeout (300 s), the orgs late in that order wait until
        # runs get shorter. A failed page of the Scan fails the run, and the next run starts over.
        orgs = svc.store.all_orgs()
    results = []
    for org in orgs:
        try:
            results.append(scan_org(svc, org))
        except SCAN_ERRORS:
            logger.exception("Security scan of an org failed", extra={"org_id": org.org_id})
    return results


def scan_org(svc: Services, org: OrgModel) -> ScanResult:
    """Scan one org's changes since its previous run, store the findings, notify the new ones
    and move the org's position forward."""
    now = svc.clock.now()
    settings = svc.settings
    repo = svc.scan_store
    org_id = org.org_id
    org_policy = policy.mfa_policy(org)
    state = repo.get_state(org_id)

    until_ms = int((now - settings.cso_settle_seconds) * 1000)
    after = state.last_event_id if state is not None else None
    items = repo.events_after(org_id, after=after, until_ms=until_ms, limit=settings.cso_max_events)
    events = [Event.from_item(item) for item in items]
    result = ScanResult(org_id, events_read=len(events))
    result.last_event_id = events[-1].event_id if events else after

    batch = _Batch()
    detections, resolved = rules.detect(events)
    batch.add(detections)
    batch.resolve(resolved)
    # A finding that these events open and then resolve is stored, notified and resolved.
    batch.restored.update(resolved & set(batch.detections))
    window = _Window.of(after, events)
    _count_failed_mfa(svc, org_id, events, batch, window)
    _count_shared_addresses(svc, org_id, events, batch, window)
    profiles = _profile_login_hours(svc, org_id, events, batch)
    _check_policy_changes(svc, org_id, events, batch)

    result.full_member_pass = (
        state is None
        or int(state.policy_version) != org_policy.version
        or _enforcement_started(org_policy, since=float(state.last_run_at), now=now)
    )
    checked = _check_members(svc, org_id, org_policy, events, batch=batch, result=result, now=now)
    not_enrolled = svc.scan_store.open_findings(org_id, rules.NOT_ENROLLED)
    _escalate_overdue(not_enrolled, checked, batch, now=now)
    _close_expired_resets(svc.scan_store.open_findings(org_id, rules.ADMIN_RESET), batch, now=now)
    # Members found enrolled resolve only the findings that are open, so that a full pass
    # over an enrolled org makes no write per member.
    open_ids = {finding.finding_id for finding in not_enrolled}
    batch.resolutions = {
        finding_id
        for finding_id in batch.resolutions
        if not finding_id.startswith(f"{rules.NOT_ENROLLED}#") or finding_id in open_ids
    }

    try:
        _apply(svc, org_id, batch, result, now=now)
    finally:
        # The findings stored as new are notified even when a later write fails, because the
        # run that reads their events again finds them stored and unchanged.
        notify(svc, result.new)
    # Profiles are saved after the findings, because a profile skips the logins it contains:
    # a run that failed after saving them would leave the next run to miss their findings.
    svc.scan_store.save_profiles(profiles)
    # Evidence once a day: the first run of each UTC day, and an org's first run.
    evidence_at = 0.0 if state is None else float(_coalesce(state.evidence_at, state.last_run_at))
    if _day(evidence_at) != _day(now):
        try:
            result.evidence_key = write_evidence(svc, org)
            evidence_at = now
        except SCAN_ERRORS:
            # The findings are stored and notified already, so the run still moves on, and
            # the next run writes the pack. The operator can write it at once with
            # `mfa-admin cso evidence --new`.
            logger.exception("Writing the evidence pack failed", extra={"org_id": org_id})
    repo.save_state(
        ScanStateModel(
            org_id,
            STATE_KEY,
            last_event_id=result.last_event_id,
            last_run_at=now,
            policy_version=org_policy.version,
            evidence_at=evidence_at,
        )
    )
    logger.info(
        "Security scan of an org finished",
        extra={
            "org_id": org_id,
            "events_read": result.events_read,
            "members_read": result.members_read,
            "new_findings": len(result.new),
            "resolved_findings": len(result.resolved),
        },
    )
    return result


def write_evidence(svc: Services, org: OrgModel) -> str:
    """Build the org's evidence pack with its open findings, store it, and return its key."""
    open_findings: list[dict[str, Any]] = []
    after = None
    while True:
        page, after = svc.scan_store.list_findings(
            org.org_id, rule=None, status="open", severity=None, after=after, limit=500
        )
        open_findings += [{"rule": item.rule, "severity": item.severity} for item in page]
        if after is None:
            break
    pack = evidence.build_pack(svc, org, open_findings=open_findings)
    stamp = datetime.fromtimestamp(pack.generated_at, UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    return svc.evidence_store.put(org.org_id, stamp, pack.as_json(), pack.markdown())


def _coalesce(value: Any, default: Any) -> Any:
    return default if value is None else value


def _day(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


class _Batch:
    """The detections and resolutions of one run, one per finding id."""

    def __init__(self) -> None:
        self.detections: dict[str, Detection] = {}
        self.resolutions: set[str] = set()
        # Detections of this run that a later event of the run undid: stored, then resolved.
        self.restored: set[str] = set()

    def add(self, detections: Iterable[Detection]) -> None:
        for detection in detections:
            current = self.detections.get(detection.finding_id)
            if current is None:
                self.detections[detection.finding_id] = detection
            else:
                current.merge(detection)

    def resolve(self, finding_ids: Iterable[str]) -> None:
        self.resolutions.update(finding_ids)


# -- rules that count per hour -------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """The UTC hours of one run's events that other runs read events of too.

    Earlier runs may have counted events of the hour that the run's position lies in, and later
    runs may count more events of the hour of the run's last event and after. Every event of an
    hour between those two is in this run, so its counts need no stored counter: that keeps the
    requests of a run that catches up on a long history to a few per stored hour.
    """

    first_hour: str | None
    last_hour: str

    @classmethod
    def of(cls, after: str | None, events: list[Event]) -> _Window:
        first_hour = None
        if after is not None:
            moment = _event_time(after)
            # "~" sorts after every hour: a position without a time shares them all.
            first_hour = "~" if moment is None else rules.hour_of(moment)
        return cls(first_hour, events[-1].hour if events else "")

    def shared(self, hour: str) -> bool:
        if self.first_hour is not None and hour <= self.first_hour:
            return True
        return hour >= self.last_hour


def _event_time(event_id: str) -> float | None:
    """Return the time in an event id (epoch milliseconds before the dash), or None."""
    milliseconds = event_id.partition("-")[0]
    return int(milliseconds) / 1000 if milliseconds.isdigit() else None


def _count_failed_mfa(
    svc: Services, org_id: str, events: list[Event], batch: _Batch, window: _Window
) -> None:
    """Failed MFA proofs per user, per org and per source address in each UTC hour."""
    settings = svc.settings
    thresholds = {
        "user": settings.cso_failed_mfa_per_user,
        "org": settings.cso_failed_mfa_per_org,
        "ip": settings.cso_failed_mfa_per_ip,
    }
    groups: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for event in events:
        if event.event_type not in rules.FAILED_MFA_EVENTS or event.outcome != "failure":
            continue
        groups[("org", event.hour)].append(event)
        if event.user_id is not None:
            groups[(rules.user_subject(event.user_id), event.hour)].append(event)
        if event.source_ip is not None:
            groups[(f"ip:{event.source_ip}", event.hour)].append(event)

    for (subject, hour), grouped in groups.items():
        kind = subject.split(":", 1)[0]
        total = len(grouped)
        if window.shared(hour):
            total = svc.scan_store.add_events(
                org_id,
                f"count#{rules.FAILED_MFA_SPIKE}#{subject}#{hour}",
                event_ids=[event.event_id for event in grouped],
                expires_at=_counter_expiry(hour),
            )
        threshold = thresholds[kind]
        if total < threshold:
            continue
        batch.add(
            [
                _grouped_detection(
                    grouped,
                    rule=rules.FAILED_MFA_SPIKE,
                    subject=subject,
                    qualifier=hour,
                    severity="high" if total >= 3 * threshold else "medium",
                    title=f"{total} failed MFA attempts in one hour",
                    details={"failures": total, "threshold": threshold, "hour": hour},
                )
            ]
        )


def _count_shared_addresses(
    svc: Services, org_id: str, events: list[Event], batch: _Batch, window: _Window
) -> None:
    """Distinct users who tried to sign in from one source address in each UTC hour."""
    groups: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for event in events:
        if event.event_type in rules.LOGIN_ATTEMPT_EVENTS and event.source_ip and event.user_id:
            groups[(event.source_ip, event.hour)].append(event)

    threshold = svc.settings.cso_users_per_ip
    for (address, hour), grouped in groups.items():
        users = {event.user_id for event in grouped if event.user_id is not None}
        total = len(users)
        if window.shared(hour):
            total = svc.scan_store.add_members(
                org_id,
                f"count#{rules.SHARED_SOURCE_IP}#ip:{address}#{hour}",
                members=users,
                expires_at=_counter_expiry(hour),
            )
        if total < threshold:
            continue
        batch.add(
            [
                _grouped_detection(
                    grouped,
                    rule=rules.SHARED_SOURCE_IP,
                    subject=f"ip:{address}",
                    qualifier=hour,
                    severity="medium",
                    title=f"{total} users signed in from one address in one hour",
                    details={
                        "users": total,
                        "threshold": threshold,
                        "hour": hour,
                        "user_ids": sorted(users)[:MAX_LISTED_USERS],
                    },
                )
            ]
        )


def _grouped_detection(grouped: list[Event], **fields: Any) -> Detection:
    return Detection(
        evidence=rules.merge_evidence([], [event.event_id for event in grouped]),
        first_at=grouped[0].created_at,
        last_at=grouped[-1].created_at,
        **fields,
    )


def _counter_expiry(hour: str) -> int:
    start = datetime.strptime(hour, rules.HOUR_FORMAT).replace(tzinfo=UTC).timestamp()
    return int(start) + COUNTER_SECONDS


# -- login hours ---------------------------------------------------------------------------


def _profile_login_hours(
    svc: Services, org_id: str, events: list[Event], batch: _Batch
) -> list[LoginProfileModel]:
    """Flag a login in an hour of the day when the user never signed in, within an hour either
    side, once the profile contains enough logins. Then add the login to the profile, and
    return the profiles changed, for the caller to save."""
    logins: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.event_type in rules.LOGIN_EVENTS and event.outcome == "success" and event.user_id:
            logins[event.user_id].append(event)

    minimum = svc.settings.cso_profile_min_logins
    profiles = svc.scan_store.get_profiles(org_id, logins)
    changed = []
    for user_id, read in logins.items():
        profile = profiles.get(user_id) or LoginProfileModel(
            org_id, profile_key(user_id), hours={}, logins=0
        )
        # Logins up to `upto` are in the profile already, from a run that failed after it.
        counted = profile.upto or ""
        user_logins = [event for event in read if event.event_id > counted]
        if not user_logins:
            continue
        counts = profile.hour_counts()
        total = int(profile.logins or 0)
        for event in user_logins:
            hour = datetime.fromtimestamp(event.created_at, UTC).hour
            near = [(hour + offset) % 24 for offset in (-1, 0, 1)]
            if total >= minimum and not any(counts.get(h) for h in near):
                batch.add(
                    [
                        rules.event_detection(
                            event,
                            rule=rules.UNUSUAL_LOGIN_HOUR,
                            subject=rules.user_subject(user_id),
                            qualifier=event.hour,
                            severity="low",
                            title="A login at an hour of the day unusual for this member",
                            details={"utc_hour": hour, "logins_on_record": total},
                        )
                    ]
                )
            counts[hour] = counts.get(hour, 0) + 1
            total += 1
        profile.hours = {str(hour): count for hour, count in counts.items()}
        profile.logins = total
        profile.upto = user_logins[-1].event_id
        changed.append(profile)
    return changed


# -- the policy ----------------------------------------------------------------------------


def _check_policy_changes(svc: Services, org_id: str, events: list[Event], batch: _Batch) -> None:
    """Resolve "enforcement weakened" findings once a later policy is as strict as the one
    they record before the change: those stored, and those of this run's events, which are
    stored and notified first so that a policy switched off and on again is still reported."""
    changes = [event for event in events if event.event_type == "policy.mfa"]
    if not changes:
        return
    # Two changes in one millisecond have ids in random order; their versions are in order.
    changes.sort(key=lambda event: _as_int(event.details.get("version")))
    current = changes[-1].details.get("after") or {}
    changed_at = changes[-1].created_at
    stored_before: dict[str, Any] = {}
    for finding in svc.scan_store.open_findings(org_id, rules.ENFORCEMENT_WEAKENED):
        before = _plain(finding.details).get("before") or {}
        stored_before[finding.finding_id] = before
        if not rules.weakening(before, current, at=changed_at):
            batch.resolve([finding.finding_id])
    for finding_id, detection in batch.detections.items():
        if detection.rule != rules.ENFORCEMENT_WEAKENED:
            continue
        # An open finding of the same hour can keep the policy before an earlier run's change.
        before = rules.baseline(stored_before.get(finding_id), detection.details.get("before"))
        before = before or {}
        if not rules.weakening(before, current, at=changed_at):
            batch.restored.add(finding_id)


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _enforcement_started(org_policy: policy.MfaPolicy, *, since: float, now: float) -> bool:
    start = org_policy.enforce_after
    return start is not None and since < start <= now


# -- members -------------------------------------------------------------------------------


def _check_members(
    svc: Services,
    org_id: str,
    org_policy: policy.MfaPolicy,
    events: list[Event],
    *,
    batch: _Batch,
    result: ScanResult,
    now: float,
) -> set[str]:
    """Check the enrollment and factors of every member (full pass) or of those the events
    name; return the ids of the members checked."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.user_id is not None:
            by_user[event.user_id].append(event)

    users: Iterable[UserModel]
    if result.full_member_pass:
        users = _every_member(svc, org_id)
    else:
        users = svc.store.get_users(org_id, by_user)

    checked = set()
    for user in users:
        result.members_read += 1
        checked.add(user.user_id)
        _check_enrollment(user, org_policy, batch, by_user.get(user.user_id, []), now=now)
        factor_events = [e for e in by_user.get(user.user_id, []) if e.event_type in FACTOR_EVENTS]
        if factor_events:
            _check_downgrade(user, org_policy, batch, factor_events, now=now)
    return checked


def _every_member(svc: Services, org_id: str) -> Iterable[UserModel]:
    after = None
    while True:
        users, after = svc.store.list_users(org_id, limit=MEMBER_PAGE, after=after)
        yield from users
        if after is None:
            return


def _check_enrollment(
    user: UserModel,
    org_policy: policy.MfaPolicy,
    batch: _Batch,
    events: list[Event],
    *,
    now: float,
) -> None:
    """Open a "not enrolled" finding while MFA is required of a member without a factor: low
    within the grace period, high after it. Enrolled, disabled and out-of-scope members
    resolve it."""
    entry = dashboard.member_status(user, org_policy, now)
    subject = rules.user_subject(user.user_id)
    if entry["status"] == dashboard.LOCKED:
        # NOTE: a locked-out member's enrollment is not shown by the dashboard's state, so
        # the finding is left as it is until the lockout ends and an event names the member.
        return
    if entry["status"] not in (dashboard.GRACE, dashboard.OVERDUE):
        batch.resolve([rules.finding_id(rules.NOT_ENROLLED, subject)])
        return
    overdue = entry["status"] == dashboard.OVERDUE
    batch.add(
        [
            Detection(
                rule=rules.NOT_ENROLLED,
                subject=subject,
                severity="high" if overdue else "low",
                title=(
                    "A member required to use MFA is past the enrollment deadline"
                    if overdue
                    else "A member required to use MFA has not enrolled yet"
                ),
                evidence=[event.event_id for event in events][-rules.MAX_EVIDENCE :],
                details={
                    "role": user.role,
                    "state": entry["status"],
                    "security_key_required": entry["security_key_required"],
                    "deadline": entry["deadline"],
                },
                deadline=entry["deadline"],
                first_at=now,
                last_at=now,
            )
        ]
    )


def _check_downgrade(
    user: UserModel,
    org_policy: policy.MfaPolicy,
    batch: _Batch,
    events: list[Event],
    *,
    now: float,
) -> None:
    """After a factor change: the member's last security key removed, or only SMS left."""
    subject = rules.user_subject(user.user_id)
    remaining = {
        str(info.get("type"))
        for info in user.factor_summaries().values()
        if not info.get("blocked") and info.get("type") != "backup_codes"
    }
    key_id = rules.finding_id(rules.METHOD_DOWNGRADE, subject, "security_key_removed")
    key_removed = [
        event
        for event in events
        if event.event_type == "factor.remove"
        and event.outcome == "success"
        and event.details.get("type") == webauthn.TYPE
    ]
    if webauthn.TYPE in remaining or user.status != "active":
        batch.resolve([key_id])
    elif key_removed:
        key_required = org_policy.rule_for(role=user.role, now=now).security_key
        batch.add(
            [
                _grouped_detection(
                    key_removed,
                    rule=rules.METHOD_DOWNGRADE,
                    subject=subject,
                    qualifier="security_key_removed",
                    severity="high" if key_required else "medium",
                    title="A member removed their last security key",
                    details={"remaining_methods": sorted(remaining), "key_required": key_required},
                )
            ]
        )

    sms_id = rules.finding_id(rules.METHOD_DOWNGRADE, subject, "sms_only")
    if remaining == {sms.TYPE} and user.status == "active":
        batch.add(
            [
                _grouped_detection(
                    events,
                    rule=rules.METHOD_DOWNGRADE,
                    subject=subject,
                    qualifier="sms_only",
                    severity="medium",
                    title="A member's only MFA method left is SMS",
                    details={"remaining_methods": sorted(remaining)},
                )
            ]
        )
    else:
        batch.resolve([sms_id])


def _escalate_overdue(
    not_enrolled: list[FindingModel], checked: set[str], batch: _Batch, *, now: float
) -> None:
    """Raise open low "not enrolled" findings whose grace deadline has passed to high,
    for members not checked in this run. A member who enrolled since would have an event."""
    for finding in not_enrolled:
        user_id = finding.subject.removeprefix("user:")
        if user_id in checked or finding.severity != "low" or finding.deadline is None:
            continue
        if float(finding.deadline) > now:
            continue
        batch.add(
            [
                Detection(
                    rule=rules.NOT_ENROLLED,
                    subject=finding.subject,
                    severity="high",
                    title="A member required to use MFA is past the enrollment deadline",
                    details={**_plain(finding.details), "state": dashboard.OVERDUE},
                    deadline=float(finding.deadline),
                    first_at=now,
                    last_at=now,
                )
            ]
        )


def _close_expired_resets(open_resets: list[FindingModel], batch: _Batch, *, now: float) -> None:
    """Resolve the findings of reset requests that expired before their last approval. Such a
    request is marked expired only when an admin next acts on it, which may be never."""
    for finding in open_resets:
        details = _plain(finding.details)
        expires_at = details.get("expires_at")
        if details.get("stage") == rules.RESET_COMPLETE or expires_at is None:
            continue
        if float(expires_at) <= now:
            batch.resolve([finding.finding_id])


# -- storing and notifying -----------------------------------------------------------------


def _apply(svc: Services, org_id: str, batch: _Batch, result: ScanResult, *, now: float) -> None:
    repo = svc.scan_store
    stored = repo.get_findings(org_id, batch.detections)
    for finding_id, detection in batch.detections.items():
        read = stored.get(finding_id)
        for _attempt in range(WRITE_ATTEMPTS):
            finding, kind = _merge(org_id, finding_id, read, detection, now=now)
            if kind == UNCHANGED or repo.put_finding(finding, read=read):
                break
            # Another run wrote this finding since it was read: merge into its version.
            read = repo.get_finding(org_id, finding_id)
        else:
            raise DependencyFailed()
        if kind == NEW:
            result.new.append(finding)
        elif kind == UPDATED:
            result.updated.append(finding)

    for finding_id in sorted((batch.resolutions - set(batch.detections)) | batch.restored):
        resolved = repo.resolve_finding(org_id, finding_id, now=now)
        if resolved is None:
            continue
        result.resolved.append(resolved)
        # A finding notified as new in this run is notified as resolved already.
        for finding in result.new:
            if finding.finding_id == finding_id:
                finding.status = "resolved"
                finding.resolved_at = now


def _merge(
    org_id: str, finding_id: str, read: FindingModel | None, detection: Detection, *, now: float
) -> tuple[FindingModel, str]:
    """Return the finding with the detection merged in, and whether that makes it NEW (first
    seen, reopened or raised in severity), UPDATED or UNCHANGED."""
    first_at = detection.first_at or now
    last_at = detection.last_at or now
    if read is None:
        finding = FindingModel(
            org_id,
            finding_id,
            rule=detection.rule,
            severity=detection.severity,
            status="open",
            subject=detection.subject,
            title=detection.title,
            evidence=rules.merge_evidence([], detection.evidence),
            details=detection.details,
            first_seen=first_at,
            last_seen=last_at,
            resolved_at=None,
            deadline=detection.deadline,
        )
        return finding, NEW

    reopened = read.status != "open"
    if reopened and detection.evidence and set(detection.evidence) <= set(read.evidence or []):
        # The finding held these events before it was resolved, so a run that overlapped this
        # one, or failed after storing, read them already and resolved the finding since.
        return read, UNCHANGED
    severity = (
        detection.severity if reopened else rules.max_severity(read.severity, detection.severity)
    )
    # A reopened finding starts again from the detection, and keeps nothing of what its
    # resolution ended, such as a weakened policy's earlier baseline.
    details = (
        {**_plain(read.details), **detection.details}
        if reopened
        else rules.merge_details(read.rule, _plain(read.details), detection.details)
    )
    finding = FindingModel(
        org_id,
        finding_id,
        rule=read.rule,
        severity=severity,
        status="open",
        subject=read.subject,
        # The title goes with the severity, which a less severe detection does not lower.
        title=detection.title if severity == detection.severity else read.title,
        evidence=rules.merge_evidence(list(read.evidence or []), detection.evidence),
        details=details,
        first_seen=float(read.first_seen),
        last_seen=max(float(read.last_seen), last_at),
        resolved_at=None,
        deadline=detection.deadline,
        revision=read.revision,
    )
    if reopened or severity != read.severity:
        return finding, NEW
    if summary(finding) == summary(read) and finding.deadline == read.deadline:
        return finding, UNCHANGED
    return finding, UPDATED


def summary(finding: FindingModel) -> dict[str, Any]:
    """Return a finding as notifications carry it: ids, rule, severity and the rule's own
    details, which hold counts, types and locations, never a secret, code or token."""
    return {
        "org_id": finding.org_id,
        "finding_id": finding.finding_id,
        "rule": finding.rule,
        "severity": finding.severity,
        "status": finding.status,
        "subject": finding.subject,
        "title": finding.title,
        "evidence": list(finding.evidence or []),
        "details": _plain(finding.details),
        "first_seen": float(finding.first_seen),
        "last_seen": float(finding.last_seen),
    }


def notify(svc: Services, findings: list[FindingModel]) -> None:
    """Publish each finding of one org to the findings event bus, and to the security topic
    up to MAX_TOPIC_MESSAGES, with one summary message for the rest."""
    if not findings:
        return
    summaries = [summary(finding) for finding in findings]
    for item in summaries:
        telemetry.count(telemetry.SCAN_FINDING_NEW)
        logger.warning(
            "Security finding",
            extra={
                "org_id": item["org_id"],
                "finding_id": item["finding_id"],
                "rule": item["rule"],
                "severity": item["severity"],
            },
        )
    for item in summaries[:MAX_TOPIC_MESSAGES]:
        svc.notifier.finding(item)
    rest = summaries[MAX_TOPIC_MESSAGES:]
    if rest:
        svc.notifier.findings_summary(
            org_id=rest[0]["org_id"],
            severities=dict(Counter(item["severity"] for item in rest)),
        )
    svc.finding_events.publish("MFA finding", summaries)


def _plain(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "as_dict"):
        return dict(value.as_dict())
    return dict(value)
