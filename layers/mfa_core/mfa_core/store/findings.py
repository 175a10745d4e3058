"""DynamoDB access for the security scan: its position in each org's audit trail, its hourly
counters and login-hour profiles, and the findings it writes.

Findings are written by one scan at a time per org (the schedule runs one function), so a
finding is read, changed and written back whole. Resolution is a conditional update, so it
never touches a finding that a concurrent run already resolved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException, UpdateError

from mfa_core.errors import DependencyFailed
from mfa_core.store.models import (
    AuditModel,
    FindingModel,
    LoginProfileModel,
    ScanCounterModel,
    ScanStateModel,
)

STATE_KEY = "scan"
CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"


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

    def add_to_counter(
        self, org_id: str, key: str, *, count: int, members: set[str] | None, expires_at: int
    ) -> int:
        """Add `count` events, or the distinct values `members`, to a counter in one UpdateItem.

        Returns the new total, which is the event count or the number of distinct values.
        """
        counter = ScanCounterModel(org_id, key)
        actions: list[Any] = [ScanCounterModel.expires_at.set(expires_at)]
        if members is None:
            actions.append(ScanCounterModel.total.add(count))
        else:
            actions.append(ScanCounterModel.members.add(members))
        with _dynamodb_errors():
            counter.update(actions=actions)
        if members is None:
            return int(counter.total or 0)
        return len(counter.members or ())

    def get_profile(self, org_id: str, user_id: str) -> LoginProfileModel | None:
        with _dynamodb_errors():
            try:
                return LoginProfileModel.get(org_id, profile_key(user_id), consistent_read=True)
            except DoesNotExist:
                return None

    def save_profile(self, profile: LoginProfileModel) -> None:
        with _dynamodb_errors():
            profile.save()

    # -- findings ------------------------------------------------------------------------------

    def get_finding(self, org_id: str, finding_id: str) -> FindingModel | None:
        with _dynamodb_errors():
            try:
                return FindingModel.get(org_id, finding_id, consistent_read=True)
            except DoesNotExist:
                return None

    def save_finding(self, finding: FindingModel) -> None:
        with _dynamodb_errors():
            finding.save()

    def resolve_finding(self, org_id: str, finding_id: str, *, now: float) -> FindingModel | None:
        """Mark an open finding resolved; return it, or None when it is not open."""
        finding = FindingModel(org_id, finding_id)
        try:
            finding.update(
                actions=[FindingModel.status.set("resolved"), FindingModel.resolved_at.set(now)],
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
    return f"profile#{user_id}"


@contextmanager
def _dynamodb_errors() -> Iterator[None]:
    try:
        yield
    except PynamoDBException as exc:
        raise DependencyFailed() from exc
