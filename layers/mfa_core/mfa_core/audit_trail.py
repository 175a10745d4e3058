"""The audit trail for org admins: filtered export, and tamper evidence by signed hourly digests.

Each digest covers one org's events of one UTC hour: the SHA-256 of every event's canonical
JSON in event_id order, their count, and the SHA-256 of the previous hour's digest, signed with
the service's ES256 token signing key. A changed, deleted or added event, or a removed digest,
then shows up in `verify`, as in CloudTrail's log file integrity validation.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from jose import jwk, jws
from jose.exceptions import JOSEError
from pynamodb.attributes import MapAttribute
from pynamodb.exceptions import PutError, PynamoDBException

from mfa_core import members
from mfa_core.audit import OUTCOMES
from mfa_core.errors import DependencyFailed, InvalidInput, MfaError
from mfa_core.runtime import Services
from mfa_core.store.models import AuditDigestModel, AuditModel, OrgModel, user_key
from mfa_core.tokens import Principal

logger = Logger(child=True)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
# The export's fields, in CSV column order.
FIELDS = (
    "event_id",
    "created_at",
    "event_type",
    "outcome",
    "actor",
    "user_id",
    "factor_id",
    "session_id",
    "source_ip",
    "user_agent",
    "request_id",
    "reason",
    "details",
)
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
EVENT_ID_PATTERN = re.compile(r"[0-9]{15}-[0-9a-f]{16}\Z")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")

PERIOD_SECONDS = 3600
PERIOD_FORMAT = "%Y-%m-%dT%H"
DIGEST_VERSION = 1
# Periods one sealer run seals per org, so that a backlog is worked off over several runs
# within the function's timeout.
MAX_PERIODS_PER_RUN = 48
# An hour without a digest counts as missing once it ended this long ago, because the
# sealer runs five minutes past each hour.
SEAL_GRACE_SECONDS = 3600
# Verification makes one query of events per hour: a week by default, a month at most.
# NOTE: the time a month takes against DynamoDB is not measured; the admin function's
# timeout is 10 seconds.
DEFAULT_VERIFY_SECONDS = 7 * 24 * 3600
MAX_VERIFY_PERIODS = 31 * 24
# An event id may be this far ahead of the verifier's clock, for clock skew between functions.
FUTURE_TOLERANCE_SECONDS = 300
# Items outside the org's lifetime listed per end of the key range.
MAX_OUTSIDE_EVENTS = 100


@dataclass(frozen=True)
class ExportQuery:
    start_ms: int | None = None
    end_ms: int | None = None
    user_id: str | None = None
    event_type: str | None = None
    outcome: str | None = None
    limit: int = DEFAULT_LIMIT
    after: str | None = None  # the last event_id of the previous page
    format: str = "jsonl"


@dataclass(frozen=True)
class ExportPage:
    body: str
    content_type: str
    next_cursor: str | None
    count: int


def parse_query(params: Mapping[str, str]) -> ExportQuery:
    """Validate the export's query string; a bad parameter raises InvalidInput naming it."""
    start = _timestamp_ms(params, "from")
    end = _timestamp_ms(params, "to")
    if start is not None and end is not None and start > end:
        raise InvalidInput("Use a `from` time no later than the `to` time.", field="from")

    limit = DEFAULT_LIMIT
    if "limit" in params:
        text = params["limit"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
            raise InvalidInput(f"Use a limit from 1 to {MAX_LIMIT}.", field="limit")
        limit = int(text)

    export_format = params.get("format", "jsonl")
    if export_format not in FORMATS:
        raise InvalidInput(f"Use a format of: {', '.join(FORMATS)}.", field="format")

    outcome = params.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidInput(f"Use an outcome of: {', '.join(sorted(OUTCOMES))}.", field="outcome")

    for name in ("user_id", "event_type"):
        if name in params and not NAME_PATTERN.match(params[name]):
            raise InvalidInput(
                f"Use a {name} of 1 to 128 letters, digits or the characters _.:-", field=name
            )

    return ExportQuery(
        start_ms=start,
        end_ms=end,
        user_id=params.get("user_id"),
        event_type=params.get("event_type"),
        outcome=outcome,
        limit=limit,
        after=_decode_cursor(params["next"]) if "next" in params else None,
        format=export_format,
    )


def export(svc: Services, principal: Principal, org_id: str, query: ExportQuery) -> ExportPage:
    """Return one page of the org's audit events, oldest first, for one of its admins."""
    members.require_admin(svc, principal, org_id)
    items = list(_query_events(org_id, query))
    next_cursor = None
    if len(items) > query.limit:
        items = items[: query.limit]
        next_cursor = _encode_cursor(items[-1].event_id)
    records = [export_record(item) for item in items]
    body = _jsonl(records) if query.format == "jsonl" else _csv(records)
    logger.info(
        "Audit exported",
        extra={"org_id": org_id, "user_id": principal.user_id, "events": len(records)},
    )
    return ExportPage(body, FORMATS[query.format], next_cursor, len(records))


def export_record(item: AuditModel) -> dict[str, Any]:
    """Return an audit item's exported fields, in FIELDS order."""
    values = _stored_values(item)
    return {name: values.get(name) for name in FIELDS}


def _query_events(org_id: str, query: ExportQuery) -> Iterator[AuditModel]:
    """Query one key range, one more item than the page contains to learn whether more follow."""
    low = f"{query.start_ms:015d}-" if query.start_ms is not None else "0"
    # "g" sorts after every hex digit, so the bound includes every id of that millisecond.
    high = f"{query.end_ms:015d}-g" if query.end_ms is not None else "9" * 15 + "-g"
    if query.after is not None:
        low = max(low, query.after)
    conditions = []
    if query.event_type is not None:
        conditions.append(AuditModel.event_type == query.event_type)
    if query.outcome is not None:
        conditions.append(AuditModel.outcome == query.outcome)
    filter_condition = None
    for condition in conditions:
        filter_condition = condition if filter_condition is None else filter_condition & condition
    # Pagination resumes after the cursor's event, which the between condition still includes.
    start_key: dict[str, Any] | None = None
    if query.after is not None:
        start_key = {"org_id": {"S": org_id}, "event_id": {"S": query.after}}

    if query.user_id is not None:
        if start_key is not None:
            start_key["user_key"] = {"S": user_key(org_id, query.user_id)}
        return AuditModel.user_index.query(
            user_key(org_id, query.user_id),
            AuditModel.event_id.between(low, high),
            filter_condition=filter_condition,
            limit=query.limit + 1,
            last_evaluated_key=start_key,
        )
    return AuditModel.query(
        org_id,
        AuditModel.event_id.between(low, high),
        filter_condition=filter_condition,
        limit=query.limit + 1,
        last_evaluated_key=start_key,
    )


def _timestamp_ms(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInput(
            f"Use an ISO 8601 time with a UTC offset for `{name}`, such as 2027-01-15T08:00:00Z.",
            field=name,
        )
    milliseconds = int(moment.timestamp() * 1000)
    if not 0 <= milliseconds < 10**15:
        raise InvalidInput(f"Use a `{name}` time after 1970.", field=name)
    return milliseconds


def _encode_cursor(event_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": event_id}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    invalid = InvalidInput("Use the `next` value of the previous page unchanged.", field="next")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        event_id = document["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError) as exc:
        raise invalid from exc
    if not isinstance(event_id, str) or not EVENT_ID_PATTERN.match(event_id):
        raise invalid
    return event_id


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def _csv(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(FIELDS)
    for record in records:
        writer.writerow([_csv_cell(record[name]) for name in FIELDS])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def _stored_values(item: AuditModel) -> dict[str, Any]:
    """Return the item's stored attributes as plain values, without TTL bookkeeping."""
    values: dict[str, Any] = {}
    for name, value in item.attribute_values.items():
        if name == "expires_at":
            continue
        values[name] = value.as_dict() if isinstance(value, MapAttribute) else value  # type: ignore[no-untyped-call]
    return values


# --- Tamper evidence ---


def canonical_json(value: Any) -> bytes:
    """Serialize with sorted keys and no whitespace, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(item: AuditModel) -> str:
    return hashlib.sha256(canonical_json(_stored_values(item))).hexdigest()


def period_of(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime(PERIOD_FORMAT)


def period_start(period: str) -> int:
    return int(datetime.strptime(period, PERIOD_FORMAT).replace(tzinfo=UTC).timestamp())


def _period_events(org_id: str, start: int) -> list[AuditModel]:
    # Without a "-" the bounds of consecutive hours meet, so the hours cover every sort key
    # between them, also a malformed one that a forged item could have.
    low = f"{start * 1000:015d}"
    high = f"{(start + PERIOD_SECONDS) * 1000:015d}"
    return list(AuditModel.query(org_id, AuditModel.event_id.between(low, high)))


def _events_outside(org_id: str, *, first: int, now: float) -> list[str]:
    """Return the ids of items sorted before the org's first hour, or after `now` plus
    FUTURE_TOLERANCE_SECONDS.

    No event has such an id, so each is a forged insertion that no hour's digest covers.
    """
    early = AuditModel.query(
        org_id, AuditModel.event_id < f"{first * 1000:015d}", limit=MAX_OUTSIDE_EVENTS
    )
    late_ms = int((now + FUTURE_TOLERANCE_SECONDS) * 1000)
    late = AuditModel.query(
        org_id, AuditModel.event_id > f"{late_ms:015d}-g", limit=MAX_OUTSIDE_EVENTS
    )
    return [item.event_id for item in (*early, *late)]


def _digest_hash(digest: AuditDigestModel) -> str:
    return hashlib.sha256(digest.signature.encode("ascii")).hexdigest()


def seal(svc: Services, org_id: str, period: str) -> bool:
    """Write the signed digest of one org's events in one complete hour.

    Returns False when the period was already sealed, which the conditional put detects, or
    is not over yet. The digest links to the previous hour's digest when there is one.
    """
    start = period_start(period)
    if start + PERIOD_SECONDS > svc.clock.now():
        return False
    previous = _get_digest(org_id, period_of(start - PERIOD_SECONDS))
    events = _period_events(org_id, start)
    document = {
        "version": DIGEST_VERSION,
        "org_id": org_id,
        "period": period,
        "count": len(events),
        "events": [[item.event_id, event_hash(item)] for item in events],
        "previous_period": previous.period if previous else None,
        "previous_digest": _digest_hash(previous) if previous else None,
    }
    payload = canonical_json(document)
    key_set = svc.signing_keys.private_keys()
    signer = jwk.construct(key_set.active_jwk, "ES256")
    signature = jws.sign(payload, signer, headers={"kid": key_set.active_kid}, algorithm="ES256")
    digest = AuditDigestModel(
        org_id,
        period,
        document=payload.decode(),
        signature=signature,
        kid=key_set.active_kid,
        sealed_at=svc.clock.now(),
    )
    try:
        digest.save(condition=AuditDigestModel.period.does_not_exist())
    except PutError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise DependencyFailed() from exc
    logger.info("Audit period sealed", extra={"org_id": org_id, "period": period})
    return True


def _get_digest(org_id: str, period: str) -> AuditDigestModel | None:
    try:
        return AuditDigestModel.get(org_id, period)
    except AuditDigestModel.DoesNotExist:
        return None


def seal_org(svc: Services, org: OrgModel) -> int:
    """Seal the org's complete hours after its latest digest, at most MAX_PERIODS_PER_RUN.

    NOTE: a deleted latest digest is written again from the events as they are then, so
    tampering in that hour alone goes unnoticed.
    """
    latest = next(iter(AuditDigestModel.query(org.org_id, scan_index_forward=False, limit=1)), None)
    if latest is not None:
        start = period_start(latest.period) + PERIOD_SECONDS
    else:
        start = period_start(period_of(float(org.created_at)))
    sealed = 0
    while sealed < MAX_PERIODS_PER_RUN and start + PERIOD_SECONDS <= svc.clock.now():
        if seal(svc, org.org_id, period_of(start)):
            sealed += 1
        start += PERIOD_SECONDS
    return sealed


def seal_all(svc: Services) -> int:
    """Seal every org's complete hours; returns how many digests were written."""
    total = 0
    for org in OrgModel.scan(attributes_to_get=["org_id", "created_at"]):
        try:
            total += seal_org(svc, org)
        except (MfaError, PynamoDBException):
            # One org's failure does not hold up the others; the next run retries it.
            logger.exception("Audit sealing failed", extra={"org_id": org.org_id})
    return total


@dataclass
class VerifyReport:
    org_id: str
    periods_checked: int = 0
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    inserted: list[str] = field(default_factory=list)
    broken_links: list[dict[str, str]] = field(default_factory=list)
    bad_signatures: list[str] = field(default_factory=list)
    # Events past the retention period, which TTL deletes: listed in a digest, gone by design.
    expired: int = 0
    # The first period without a digest at the end of the range, which the sealer has not
    # reached yet; its events are not checked.
    unsealed_from: str | None = None

    @property
    def valid(self) -> bool:
        return not (
            self.modified
            or self.deleted
            or self.inserted
            or self.broken_links
            or self.bad_signatures
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "valid": self.valid,
            "periods_checked": self.periods_checked,
            "modified": self.modified,
            "deleted": self.deleted,
            "inserted": self.inserted,
            "broken_links": self.broken_links,
            "bad_signatures": self.bad_signatures,
            "expired": self.expired,
            "unsealed_from": self.unsealed_from,
        }


def verify_as_admin(
    svc: Services, principal: Principal, org_id: str, params: Mapping[str, str]
) -> VerifyReport:
    members.require_admin(svc, principal, org_id)
    start, end = parse_window(params)
    return verify(svc, org_id, start=start, end=end)


def parse_window(params: Mapping[str, str]) -> tuple[float | None, float | None]:
    """Return the `from` and `to` ISO 8601 times as epoch seconds; None where absent."""
    start = _timestamp_ms(params, "from")
    end = _timestamp_ms(params, "to")
    if start is not None and end is not None and start > end:
        raise InvalidInput("Use a `from` time no later than the `to` time.", field="from")
    return (
        None if start is None else start / 1000,
        None if end is None else end / 1000,
    )


def verify(
    svc: Services,
    org_id: str,
    *,
    start: float | None = None,
    end: float | None = None,
    max_periods: int | None = MAX_VERIFY_PERIODS,
) -> VerifyReport:
    """Recompute the digest chain of the hours from `start` to `end` (epoch seconds).

    Without `start`, checking begins DEFAULT_VERIFY_SECONDS before `end`, or at the org's
    creation if that is later; without `end`, at the current hour. Every hour needs a digest,
    except the hours that ended less than SEAL_GRACE_SECONDS ago, which the sealer may not
    have reached yet. More than `max_periods` hours, or a window outside the org's lifetime,
    raise InvalidInput. Items whose ids sort
    before the org's first hour or after the current time count as inserted, whatever the
    window.
    """
    report = VerifyReport(org_id)
    now = svc.clock.now()
    org = svc.store.get_org(org_id)
    if org is None:
        return report
    end = min(end if end is not None else now, now)
    if start is None:
        start = end - DEFAULT_VERIFY_SECONDS
    first = max(period_start(period_of(start)), period_start(period_of(float(org.created_at))))
    last = period_start(period_of(end))
    if first > last:
        # Otherwise the report would be valid with nothing checked.
        raise InvalidInput(
            "Use a window that overlaps the org's lifetime: `from` no later than now, and "
            "`to` no earlier than the org's creation.",
            field="from",
        )
    if max_periods is not None and (last - first) // PERIOD_SECONDS + 1 > max_periods:
        raise InvalidInput(
            f"Use a window of at most {max_periods} hours between `from` and `to`.", field="from"
        )

    digests = {
        digest.period: digest
        for digest in AuditDigestModel.query(
            org_id, AuditDigestModel.period.between(period_of(first), period_of(last))
        )
    }
    retention = svc.settings.audit_retention_days * 86400
    previous = _get_digest(org_id, period_of(first - PERIOD_SECONDS))
    for cursor in range(first, last + 1, PERIOD_SECONDS):
        period = period_of(cursor)
        digest = digests.get(period)
        if digest is None and cursor + PERIOD_SECONDS + SEAL_GRACE_SECONDS > now:
            report.unsealed_from = period
            break
        if digest is None:
            report.broken_links.append({"period": period, "problem": "digest missing"})
        else:
            _check_digest(svc, report, digest, previous, now=now, retention=retention)
        previous = digest
        report.periods_checked += 1
    created = period_start(period_of(float(org.created_at)))
    report.inserted.extend(_events_outside(org_id, first=created, now=now))
    return report


def _check_digest(
    svc: Services,
    report: VerifyReport,
    digest: AuditDigestModel,
    previous: AuditDigestModel | None,
    *,
    now: float,
    retention: int,
) -> None:
    if not _signature_valid(svc, digest):
        report.bad_signatures.append(digest.period)
        return
    document = json.loads(digest.document)
    if document.get("org_id") != digest.org_id or document.get("period") != digest.period:
        # A validly signed digest copied from another hour or org.
        report.broken_links.append({"period": digest.period, "problem": "digest of another period"})
        return

    if previous is None:
        linked = document.get("previous_period") is None
    else:
        linked = document.get("previous_digest") == _digest_hash(previous)
    if not linked:
        report.broken_links.append({"period": digest.period, "problem": "previous digest differs"})

    sealed: dict[str, str] = dict(document["events"])
    current = {
        item.event_id: item for item in _period_events(digest.org_id, period_start(digest.period))
    }
    for event_id, expected in sealed.items():
        item = current.get(event_id)
        if item is None:
            if EVENT_ID_PATTERN.match(event_id) and int(event_id[:15]) / 1000 + retention <= now:
                report.expired += 1
            else:
                report.deleted.append(event_id)
        elif event_hash(item) != expected:
            report.modified.append(event_id)
    report.inserted.extend(event_id for event_id in current if event_id not in sealed)


def _signature_valid(svc: Services, digest: AuditDigestModel) -> bool:
    """Check the digest's ES256 signature and that it signs exactly the stored document.

    NOTE: published keys are kept for a day after a rotation (mfa_core.adapters.keys), so a
    digest signed with a key rotated out more than a day ago fails here as a bad signature.
    """
    public = svc.signing_keys.public_key(digest.kid)
    if public is None:
        return False
    try:
        payload = jws.verify(digest.signature, public, algorithms=["ES256"])
    except JOSEError:
        return False
    return bool(payload == digest.document.encode())
