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
from pynamodb.exceptions import AttributeDeserializationError, PynamoDBException
from pynamodb.pagination import ResultIterator

from mfa_core import audit, members
from mfa_core.audit import OUTCOMES, RequestContext
from mfa_core.errors import InvalidInput, MfaError
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
EXPORT_PARAMETERS = ("from", "to", "user_id", "event_type", "outcome", "limit", "next", "format")

PERIOD_SECONDS = 3600
PERIOD_FORMAT = "%Y-%m-%dT%H"
DIGEST_VERSION = 1
# Events listed per digest part: at about 115 bytes each (an estimate), a part stays near
# 175 KB, within DynamoDB's 400 KB item limit, and 20 parts fit one 4 MB transaction.
# NOTE: an hour with more than MAX_PARTS parts, about 30,000 events, cannot be sealed.
EVENTS_PER_PART = 1500
MAX_PARTS = 20
# Periods one sealer run seals per org, so that a backlog is worked off over several runs
# within the function's timeout.
MAX_PERIODS_PER_RUN = 48
# An hour without a digest counts as missing once it ended this long ago, because the
# sealer runs five minutes past each hour.
SEAL_GRACE_SECONDS = 3600
# An hour is sealed only this long after it ended, so that the events of requests that read
# the clock before the hour ended are written by then (API functions time out after 10 s).
SEAL_DELAY_SECONDS = 60
# Verification reads the window's events in one paginated query and its digests in another:
# a week by default, a month at most. NOTE: the time a month takes against DynamoDB is not
# measured (benchmarks/RESULTS.md counts the requests); the admin function's timeout is 10 s.
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

    def filters(self) -> dict[str, Any]:
        """Describe the query for the audit trail, without values left unset."""
        values = {
            "from_ms": self.start_ms,
            "to_ms": self.end_ms,
            "user_id": self.user_id,
            "event_type": self.event_type,
            "outcome": self.outcome,
            "after": self.after,
            "format": self.format,
        }
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class ExportPage:
    body: str
    content_type: str
    next_cursor: str | None
    count: int


def parse_query(params: Mapping[str, str]) -> ExportQuery:
    """Validate the export's query string; a bad parameter raises InvalidInput naming it."""
    _reject_unknown(params, EXPORT_PARAMETERS)
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


def export(
    svc: Services,
    principal: Principal,
    org_id: str,
    params: Mapping[str, str],
    *,
    context: RequestContext,
) -> ExportPage:
    """Return one page of the org's audit events, oldest first, for one of its admins.

    The query parameters are read only after the caller is known to be an admin.

    Each page is audited as `audit.export` with its filters, before it is returned.
    """
    admin = members.require_admin(svc, principal, org_id)
    query = parse_query(params)
    items = list(_query_events(org_id, query))
    next_cursor = None
    if len(items) > query.limit:
        items = items[: query.limit]
        next_cursor = _encode_cursor(items[-1].event_id)
    records = [export_record(item) for item in items]
    body = _jsonl(records) if query.format == "jsonl" else _csv(records)
    svc.store.record(
        audit.event(
            now=svc.clock.now(),
            event_type="audit.export",
            outcome="success",
            org_id=org_id,
            actor=f"user:{admin.user_id}",
            context=context,
            session_id=principal.session_id,
            details={**query.filters(), "events": len(records)},
        )
    )
    return ExportPage(body, FORMATS[query.format], next_cursor, len(records))


def export_record(item: AuditModel) -> dict[str, Any]:
    """Return an audit item's exported fields, in FIELDS order."""
    # NOTE: an item rewritten with attributes of the wrong type (only a direct write to the
    # table can do that) fails to load in the export's query and gives a 500; verify reports it.
    values = _stored_values(item)
    return {name: values.get(name) for name in FIELDS}


def _query_events(org_id: str, query: ExportQuery) -> Iterator[AuditModel]:
    """Query one key range, one more item than the page contains to learn whether more follow."""
    low = f"{query.start_ms:015d}-" if query.start_ms is not None else "0"
    # "g" sorts after every hex digit, so the bound includes every id of that millisecond.
    high = f"{query.end_ms:015d}-g" if query.end_ms is not None else "9" * 15 + "-g"
    after = query.after
    # A cursor outside the window (the filters changed between pages) would put the start key
    # outside the key range, which DynamoDB rejects: start at the window's edge instead.
    if after is not None and after < low:
        after = None
    if after is not None:
        low = after
    if low > high:
        return iter(())
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
    if after is not None:
        start_key = {"org_id": {"S": org_id}, "event_id": {"S": after}}

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


def _reject_unknown(params: Mapping[str, str], known: tuple[str, ...]) -> None:
    """Reject a parameter that is not `known`, so that a misspelt filter never widens a query."""
    for name in params:
        if name not in known:
            field = name if NAME_PATTERN.match(name) else None
            quoted = f"'{name}' " if field else ""
            raise InvalidInput(
                f"Query parameter {quoted}is unknown; use only: {', '.join(known)}.", field=field
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
    """Return the item's stored attributes as plain values."""
    return {
        name: value.as_dict() if isinstance(value, MapAttribute) else value  # type: ignore[no-untyped-call]
        for name, value in item.attribute_values.items()
    }


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
    return list(_events_between(org_id, start, start + PERIOD_SECONDS))


def _events_between(org_id: str, start: int, end: int) -> Iterator[AuditModel]:
    """Yield the org's items from `start` to before `end` (epoch seconds), oldest first."""
    # Without a "-" the bounds of consecutive hours meet, so the hours cover every sort key
    # between them, also a malformed one that a forged item could have.
    low = f"{start * 1000:015d}"
    high = f"{end * 1000:015d}"
    # As AuditModel.query, but with a map function that keeps an item pynamodb cannot load.
    return ResultIterator(
        AuditModel._get_connection().query,
        (org_id,),
        {"range_key_condition": AuditModel.event_id.between(low, high)},
        map_fn=_loaded_or_key,
    )


def _loaded_or_key(data: dict[str, Any]) -> AuditModel:
    """Load a raw audit item, or keep only its key when an attribute has the wrong type.

    Such an item was changed outside the service. Kept by its key, it counts as modified or
    inserted instead of failing the whole verification.
    """
    try:
        return AuditModel.from_raw_data(data)
    except AttributeDeserializationError:
        return AuditModel(data["org_id"]["S"], data["event_id"]["S"])


class _HourlyEvents:
    """Hands out one query's events an hour at a time, so a long window costs a few pages
    instead of one query per hour, and only one hour's events are held at once."""

    def __init__(self, events: Iterator[AuditModel]) -> None:
        self._events = events
        self._next: AuditModel | None = next(self._events, None)

    def until(self, end: int) -> list[AuditModel]:
        """Return the events before `end` (epoch seconds) that were not handed out yet."""
        bound = f"{end * 1000:015d}"
        hour_events = []
        while self._next is not None and self._next.event_id < bound:
            hour_events.append(self._next)
            self._next = next(self._events, None)
        return hour_events


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
    """Return the SHA-256 of the digest's whole JWS, which covers its document."""
    return hashlib.sha256(_attached(digest).encode()).hexdigest()


def _attached(digest: AuditDigestModel) -> str:
    """Return the compact JWS with the document put back between the detached signature's dots.

    A tampered signature without those dots still gives a string, which then fails the
    signature check and no longer matches the next digest's link, instead of raising.
    """
    header, _, rest = digest.signature.partition(".")
    _, _, signature = rest.rpartition(".")
    payload = base64.urlsafe_b64encode(digest.document.encode()).rstrip(b"=").decode("ascii")
    return f"{header}.{payload}.{signature}"


def _hour_of(key: str) -> str:
    """Return the hour of a digest's key: "2027-01-15T08" for that hour's parts "…T08+01" on."""
    return key.split("+", 1)[0]


def _part_key(period: str, part: int) -> str:
    # Two digits, so that the parts of an hour sort in order (at most MAX_PARTS).
    return period if part == 0 else f"{period}+{part:02d}"


def _last_part(org_id: str, period: str) -> AuditDigestModel | None:
    """Return the last digest part of the hour `period`, or None if it has no digest."""
    parts = _hour_digests(org_id, period, period)
    return max(parts, key=lambda digest: _part_number(digest.period), default=None)


def _hour_digests(org_id: str, first: str, last: str) -> list[AuditDigestModel]:
    """Return the digests of the hours `first` to `last`, every part, in key order."""
    # "~" sorts after "+" and every digit, so the range ends after the last hour's parts.
    condition = AuditDigestModel.period.between(first, f"{last}+~")
    return list(AuditDigestModel.query(org_id, condition))


def seal(svc: Services, org_id: str, period: str) -> bool:
    """Write the signed digest of one org's events in one complete hour.

    An hour with more than EVENTS_PER_PART events gets several parts, each linked to the one
    before, all written in one transaction. Returns False when the period was already sealed,
    which the conditional puts detect, or is not over yet. The first part links to the last
    part of the previous hour when there is one.
    """
    start = period_start(period)
    previous = _last_part(org_id, period_of(start - PERIOD_SECONDS))
    return _seal_hour(svc, org_id, period, previous) is not None


def _seal_hour(
    svc: Services, org_id: str, period: str, previous: AuditDigestModel | None
) -> AuditDigestModel | None:
    """Seal one hour after the digest `previous`; return its last part, or None if the hour
    was sealed already or is not over yet."""
    start = period_start(period)
    if start + PERIOD_SECONDS + SEAL_DELAY_SECONDS > svc.clock.now():
        return None
    events = _period_events(org_id, start)
    chunks = [events[i : i + EVENTS_PER_PART] for i in range(0, len(events), EVENTS_PER_PART)]
    chunks = chunks or [[]]
    if len(chunks) > MAX_PARTS:
        # Left unsealed, so that verification reports the hour's digest as missing.
        logger.error(
            "Audit period has too many events to seal",
            extra={"org_id": org_id, "period": period, "events": len(events)},
        )
        return None
    key_set = svc.signing_keys.private_keys()
    signer = jwk.construct(key_set.active_jwk, "ES256")
    digests = []
    for part, chunk in enumerate(chunks):
        key = _part_key(period, part)
        document = {
            "version": DIGEST_VERSION,
            "org_id": org_id,
            "period": key,
            "part": part,
            "parts": len(chunks),
            "count": len(chunk),
            # The TTL is sealed too, so that verification distinguishes early deletion from
            # expiry.
            "events": [[item.event_id, event_hash(item), int(item.expires_at)] for item in chunk],
            "previous_period": previous.period if previous else None,
            "previous_digest": _digest_hash(previous) if previous else None,
        }
        payload = canonical_json(document)
        signed = jws.sign(payload, signer, headers={"kid": key_set.active_kid}, algorithm="ES256")
        header, _, signature = signed.split(".")
        # The document is stored once: the JWS keeps an empty payload (RFC 7515, appendix F).
        previous = AuditDigestModel(
            org_id,
            key,
            document=payload.decode(),
            signature=f"{header}..{signature}",
            kid=key_set.active_kid,
            sealed_at=svc.clock.now(),
        )
        digests.append(previous)
    if not svc.store.put_digests(org_id, period, digests):
        return None
    logger.info(
        "Audit period sealed", extra={"org_id": org_id, "period": period, "parts": len(digests)}
    )
    return digests[-1]


def seal_org(svc: Services, org: OrgModel) -> int:
    """Seal the org's complete hours after the last sealed one, at most MAX_PERIODS_PER_RUN.

    The last sealed hour is the later of the org's mark and its latest digest, so that a
    deleted digest stays missing for verification to report, instead of being written again
    from events that may have been changed meanwhile.
    """
    latest = next(iter(AuditDigestModel.query(org.org_id, scan_index_forward=False, limit=1)), None)
    sealed_through = max(
        org.audit_sealed_through or "", _hour_of(latest.period) if latest is not None else ""
    )
    if sealed_through:
        start = period_start(sealed_through) + PERIOD_SECONDS
    else:
        start = period_start(period_of(float(org.created_at)))
    sealed = 0
    previous = _last_part(org.org_id, period_of(start - PERIOD_SECONDS))
    while (
        sealed < MAX_PERIODS_PER_RUN
        and start + PERIOD_SECONDS + SEAL_DELAY_SECONDS <= svc.clock.now()
    ):
        period = period_of(start)
        written = _seal_hour(svc, org.org_id, period, previous)
        if written is None:
            # Sealed meanwhile by another run: link to what that run wrote.
            written = _last_part(org.org_id, period)
        else:
            sealed += 1
        previous = written
        start += PERIOD_SECONDS
    return sealed


def seal_all(svc: Services) -> int:
    """Seal every org's complete hours; returns how many digests were written."""
    total = 0
    for org in OrgModel.scan(attributes_to_get=["org_id", "created_at", "audit_sealed_through"]):
        try:
            total += seal_org(svc, org)
        except (MfaError, PynamoDBException, ValueError, TypeError):
            # One org's failure does not hold up the others; the next run retries it. Items
            # changed outside the service, such as an unparsable mark or an event without
            # expires_at, raise ValueError or TypeError, and that org stays unsealed.
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
    # Events gone after the expiry that their digest records: deleted by TTL, by design.
    expired: int = 0
    # The first period without a digest at the end of the range, which the sealer has not
    # reached yet; its events are not checked.
    unsealed_from: str | None = None

    @property
    def valid(self) -> bool:
        """Tell whether at least one hour was checked and no check failed."""
        return self.periods_checked > 0 and not (
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
    _reject_unknown(params, ("from", "to"))
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

    by_hour: dict[str, list[AuditDigestModel]] = {}
    for digest in _hour_digests(org_id, period_of(first), period_of(last)):
        by_hour.setdefault(_hour_of(digest.period), []).append(digest)
    previous = _last_part(org_id, period_of(first - PERIOD_SECONDS))
    events = _HourlyEvents(_events_between(org_id, first, last + PERIOD_SECONDS))
    for cursor in range(first, last + 1, PERIOD_SECONDS):
        period = period_of(cursor)
        parts = by_hour.get(period)
        if parts is None and cursor + PERIOD_SECONDS + SEAL_GRACE_SECONDS > now:
            report.unsealed_from = period
            break
        hour_events = events.until(cursor + PERIOD_SECONDS)
        if parts is None:
            report.broken_links.append({"period": period, "problem": "digest missing"})
            previous = None
        else:
            _check_hour(svc, report, period, parts, previous, events=hour_events, now=now)
            previous = parts[-1]
        report.periods_checked += 1
    created = period_start(period_of(float(org.created_at)))
    report.inserted.extend(_events_outside(org_id, first=created, now=now))
    return report


def _check_hour(
    svc: Services,
    report: VerifyReport,
    period: str,
    parts: list[AuditDigestModel],
    previous: AuditDigestModel | None,
    *,
    events: list[AuditModel],
    now: float,
) -> None:
    """Check one hour's digest parts, their links, and the hour's events against them."""
    sealed: dict[str, tuple[str, int]] = {}
    complete = True
    parts = sorted(parts, key=lambda digest: _part_number(digest.period))
    for index, digest in enumerate(parts):
        document = _checked_document(svc, report, digest)
        if document is None:
            complete = False
        else:
            expected_keys = [_part_key(period, n) for n in range(int(document.get("parts", 1)))]
            if index == 0 and [part.period for part in parts] != expected_keys:
                report.broken_links.append({"period": period, "problem": "digest part missing"})
            _check_link(report, digest, document, previous)
            for event_id, expected, expires_at in document["events"]:
                sealed[event_id] = (expected, expires_at)
        previous = digest
    # Events that a digest without a valid signature lists cannot be checked.
    if complete:
        _check_events(report, sealed, events, now)


def _check_link(
    report: VerifyReport,
    digest: AuditDigestModel,
    document: dict[str, Any],
    previous: AuditDigestModel | None,
) -> None:
    if previous is None:
        linked = document.get("previous_period") is None
    else:
        linked = document.get("previous_digest") == _digest_hash(previous)
    if not linked:
        report.broken_links.append({"period": digest.period, "problem": "previous digest differs"})


def _check_events(
    report: VerifyReport,
    sealed: dict[str, tuple[str, int]],
    events: list[AuditModel],
    now: float,
) -> None:
    """Compare an hour's stored events with the hashes and expiries its digests list."""
    current = {item.event_id: item for item in events}
    for event_id, (expected, expires_at) in sealed.items():
        item = current.get(event_id)
        if item is None:
            if expires_at <= now:
                report.expired += 1
            else:
                report.deleted.append(event_id)
        elif event_hash(item) != expected:
            report.modified.append(event_id)
    report.inserted.extend(event_id for event_id in current if event_id not in sealed)


def _part_number(key: str) -> int:
    _, _, number = key.partition("+")
    return int(number) if number.isdigit() else 0


def _checked_document(
    svc: Services, report: VerifyReport, digest: AuditDigestModel
) -> dict[str, Any] | None:
    """Return the digest's document if its signature is valid and it belongs where it is."""
    if not _signature_valid(svc, digest):
        report.bad_signatures.append(digest.period)
        return None
    document: dict[str, Any] = json.loads(digest.document)
    if document.get("org_id") != digest.org_id or document.get("period") != digest.period:
        # A validly signed digest copied from another hour or org.
        report.broken_links.append({"period": digest.period, "problem": "digest of another period"})
        return None
    return document


def _signature_valid(svc: Services, digest: AuditDigestModel) -> bool:
    """Check the digest's ES256 signature and that it signs exactly the stored document."""
    public = svc.signing_keys.archived_key(digest.kid)
    if public is None:
        return False
    try:
        payload = jws.verify(_attached(digest), public, algorithms=["ES256"])
    except (JOSEError, ValueError):
        return False
    return bool(payload == digest.document.encode())
