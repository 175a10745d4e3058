"""DynamoDB access for the security scan: its position in each org's audit trail, its hourly
counters and login-hour profiles, and the findings it writes.

A finding is read, changed and written back whole, on the condition that its revision is still
the one read. Of two runs that change one finding at once, the second therefore reads it again,
and only one of them reports it as new. Resolution is a conditional update, so it never touches
a finding that a concurrent run already resolved.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, PynamoDBException, UpdateError
from pynamodb.expressions.condition import Condition

from mfa_core.errors import DependencyFailed
from mfa_core.store.models import (
    AuditModel,
    FindingModel,
    LoginProfileModel,
    ScanCounterModel,
    ScanStateModel,
)

STATE_KEY = "scan"
PROFILE_PREFIX = "profile#"
CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"
# Conditional writes tried again after another run changed the item first.
WRITE_ATTEMPTS = 3


class ScanStore:
    # -- the scan's position -------------------------------------------------------------------

    def get_state(self, org_id: str) -> ScanStateModel | None:
        with _dynamodb_errors():
            try:
                return ScanStateModel.get(org_id, STATE_KEY, consistent_read=True)
            except DoesNotExist:
                return None

    def save_state(self, state: ScanStateModel) -> None:
        with _dynamodb_errors():
            state.save()

    def events_after(
        self, org_id: str, *, after: str | None, until_ms: int, limit: int
    ) -> list[AuditModel]:
        """Return up to `limit` of the org's audit events after the id `after` and no later
        than `until_ms` (epoch milliseconds), oldest first, from one key-range Query."""
        # "g" sorts after every hex digit, so the bound includes every id of that millisecond.
        high = f"{until_ms:015d}-g"
        low = after or "0"
        if low >= high:
            return []
        start_key = None
        if after is not None:
            # The between condition includes `after` itself; starting after its key skips it.
            start_key = {"org_id": {"S": org_id}, "event_id": {"S": after}}
        with _dynamodb_errors():
            return list(
                AuditModel.query(
                    org_id,
                    AuditModel.event_id.between(low, high),
                    limit=limit,
                    last_evaluated_key=start_key,
                )
            )

    # -- counters and profiles -----------------------------------------------------------------

    def add_members(self, org_id: str, key: str, *, members: set[str], expires_at: int) -> int:
        """Add distinct values to a counter in one UpdateItem and return how many it holds.

        Adding a value twice changes nothing, so a run that reads events again counts right.
        """
        counter = ScanCounterModel(org_id, key)
        with _dynamodb_errors():
            counter.update(
                actions=[
                    ScanCounterModel.expires_at.set(expires_at),
                    ScanCounterModel.members.add(members),
                ]
            )
        return len(counter.members or ())

    def add_events(self, org_id: str, key: str, *, event_ids: list[str], expires_at: int) -> int:
        """Add events (ids oldest first) to a counter and return its total.

        Each addition is one UpdateItem on the condition that the counter contains no event from
        `event_ids` yet. When it does, because a run failed after counting, the counter is read
        and only the newer events are added.
        """
        remaining = event_ids
        for _attempt in range(WRITE_ATTEMPTS):
            if not remaining:
                break
            counter = ScanCounterModel(org_id, key)
            try:
                counter.update(
                    actions=[
                        ScanCounterModel.expires_at.set(expires_at),
                        ScanCounterModel.total.add(len(remaining)),
                        ScanCounterModel.upto.set(remaining[-1]),
                    ],
                    condition=ScanCounterModel.upto.does_not_exist()
                    | (ScanCounterModel.upto < remaining[0]),
                )
            except UpdateError as exc:
                if exc.cause_response_code != CONDITIONAL_CHECK_FAILED:
                    raise DependencyFailed() from exc
            except PynamoDBException as exc:
                raise DependencyFailed() from exc
            else:
                return int(counter.total or 0)
            stored = self._get_counter(org_id, key)
            counted = stored.upto if stored is not None and stored.upto else ""
            remaining = [event_id for event_id in remaining if event_id > counted]
        else:
            raise DependencyFailed()
        stored = self._get_counter(org_id, key)
        return int(stored.total or 0) if stored is not None else 0

    def _get_counter(self, org_id: str, key: str) -> ScanCounterModel | None:
        with _dynamodb_errors():
            try:
                return ScanCounterModel.get(org_id, key, consistent_read=True)
            except DoesNotExist:
                return None

    def get_profiles(self, org_id: str, user_ids: Iterable[str]) -> dict[str, LoginProfileModel]:
        """Return the login-hour profiles of these users that exist, by user id, from
        BatchGetItem reads."""
        keys = [(org_id, profile_key(user_id)) for user_id in sorted(set(user_ids))]
        with _dynamodb_errors():
            found = LoginProfileModel.batch_get(keys, consistent_read=True)
            return {item.state_key.removeprefix(PROFILE_PREFIX): item for item in found}

    def save_profiles(self, profiles: Iterable[LoginProfileModel]) -> None:
        """Write profiles with BatchWriteItem.

        NOTE: the last writer wins, so two runs of one org at the same moment (the schedule and
        a manual run) can each lose the other's logins from a profile.
        """
        with _dynamodb_errors(), LoginProfileModel.batch_write() as batch:
            for profile in profiles:
                batch.save(profile)

    # -- findings ------------------------------------------------------------------------------

    def get_finding(self, org_id: str, finding_id: str) -> FindingModel | None:
        with _dynamodb_errors():
            try:
                return FindingModel.get(org_id, finding_id, consistent_read=True)
            except DoesNotExist:
                return None

    def get_findings(self, org_id: str, finding_ids: Iterable[str]) -> dict[str, FindingModel]:
        """Return the findings among `finding_ids` that exist, by id, from BatchGetItem reads."""
        keys = [(org_id, finding_id) for finding_id in sorted(set(finding_ids))]
        with _dynamodb_errors():
            return {
                item.finding_id: item for item in FindingModel.batch_get(keys, consistent_read=True)
            }

    def put_finding(self, finding: FindingModel, *, read: FindingModel | None) -> bool:
        """Write a finding whole if it is still as `read` (None: if it does not exist yet), and
        raise its revision. Return False when another run changed it first."""
        condition: Condition
        if read is None:
            condition = FindingModel.finding_id.does_not_exist()
        elif read.revision is None:
            condition = FindingModel.revision.does_not_exist()
        else:
            condition = FindingModel.revision == read.revision
        finding.revision = (0 if read is None else int(read.revision or 0)) + 1
        try:
            finding.save(condition=condition)
        except PutError as exc:
            if exc.cause_response_code == CONDITIONAL_CHECK_FAILED:
                return False
            raise DependencyFailed() from exc
        except PynamoDBException as exc:
            raise DependencyFailed() from exc
        return True

    def resolve_finding(self, org_id: str, finding_id: str, *, now: float) -> FindingModel | None:
        """Mark an open finding resolved; return it, or None when it is not open."""
        finding = FindingModel(org_id, finding_id)
        try:
            finding.update(
                actions=[
                    FindingModel.status.set("resolved"),
                    FindingModel.resolved_at.set(now),
                    FindingModel.revision.add(1),
                ],
                condition=FindingModel.status == "open",
            )
        except UpdateError as exc:
            if exc.cause_response_code == CONDITIONAL_CHECK_FAILED:
                return None
            raise DependencyFailed() from exc
        except PynamoDBException as exc:
            raise DependencyFailed() from exc
        return finding

    def open_findings(self, org_id: str, rule: str) -> list[FindingModel]:
        """Return the org's open findings of one rule, from a Query of that rule's key range."""
        with _dynamodb_errors():
            return list(
                FindingModel.query(
                    org_id,
                    FindingModel.finding_id.startswith(f"{rule}#"),
                    filter_condition=FindingModel.status == "open",
                    consistent_read=True,
                )
            )

    def list_findings(
        self,
        org_id: str,
        *,
        rule: str | None,
        status: str | None,
        severity: str | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[FindingModel], str | None]:
        """Return up to `limit` findings in finding-id order, and the id to continue after
        (None at the end)."""
        range_condition = FindingModel.finding_id.startswith(f"{rule}#") if rule else None
        filter_condition: Any = None
        if status is not None:
            filter_condition = FindingModel.status == status
        if severity is not None:
            by_severity = FindingModel.severity == severity
            filter_condition = (
                by_severity if filter_condition is None else filter_condition & by_severity
            )
        start_key = None
        if after is not None:
            start_key = {"org_id": {"S": org_id}, "finding_id": {"S": after}}
        with _dynamodb_errors():
            items = list(
                FindingModel.query(
                    org_id,
                    range_condition,
                    filter_condition=filter_condition,
                    limit=limit + 1,
                    last_evaluated_key=start_key,
                )
            )
        if len(items) > limit:
            items = items[:limit]
            return items, items[-1].finding_id
        return items, None


def profile_key(user_id: str) -> str:
    return f"{PROFILE_PREFIX}{user_id}"


@contextmanager
def _dynamodb_errors() -> Iterator[None]:
    try:
        yield
    except PynamoDBException as exc:
        raise DependencyFailed() from exc
