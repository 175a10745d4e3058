"""Sealing and verifying a month of one org's audit trail, on moto over HTTP.

The local stack starts in-process with a manual clock, as in the request counts. One org gets
31 days of audit events, EVENTS_PER_HOUR in every hour and BUSY_HOUR_EVENTS in one busy hour,
written straight to the Audit table. Then the sealer runs until every hour is sealed, and the
operator's verification checks all 744 hours in one call. The report counts the DynamoDB
requests of each step and times it. The request counts carry over to DynamoDB; the times do
not, because moto's time per query grows with the number of items in the partition.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from benchmarks.request_counts import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    START,
    CallCounter,
    Tally,
    _Discard,
    _loopback_only,
    _quiet_moto_server,
)
from local.stack import LocalStack
from mfa_core import audit_trail, members, runtime
from mfa_core.audit import new_event_id
from mfa_core.clock import ManualClock
from mfa_core.store.models import AuditDigestModel, AuditModel

ORG_ID = "audit-bench"
DAYS = 31
EVENTS_PER_HOUR = 5
# More than EVENTS_PER_PART, so that this hour is sealed in parts.
BUSY_HOUR_EVENTS = 2000
HOUR = 3600
RETENTION = 400 * 24 * HOUR


@dataclass(frozen=True)
class Step:
    label: str
    tally: Tally
    seconds: float


@dataclass(frozen=True)
class AuditScaleResult:
    events: int
    hours: int
    digests: int
    steps: list[Step]
    valid: bool

    def markdown(self) -> str:
        lines = [
            f"One org, {self.events:,} events over {self.hours} hours ({DAYS} days; one hour "
            f"holds {BUSY_HOUR_EVENTS:,} of them), sealed in {self.digests} digests. "
            f"Verification result: {'valid' if self.valid else 'NOT valid'}.",
            "",
            "| Step | DynamoDB requests | By operation | Time on moto |",
            "| --- | ---: | --- | ---: |",
        ]
        for step in self.steps:
            operations = ", ".join(f"{k} {v}" for k, v in sorted(step.tally.dynamodb.items()))
            lines.append(
                f"| {step.label} | {step.tally.total:,} | {operations} | {step.seconds:.1f} s |"
            )
        return "\n".join(lines)


def _write_events(clock: ManualClock) -> int:
    """Write the month's events straight to the Audit table; returns how many."""
    written = 0
    busy_hour = START + 10 * 24 * HOUR + 9 * HOUR
    with AuditModel.batch_write() as batch:
        for hour in range(DAYS * 24):
            begin = START + hour * HOUR
            count = BUSY_HOUR_EVENTS if begin == busy_hour else EVENTS_PER_HOUR
            for index in range(count):
                moment = begin + (index + 0.5) * HOUR / count
                batch.save(
                    AuditModel(
                        ORG_ID,
                        new_event_id(moment),
                        event_type="login.password",
                        outcome="success",
                        actor="user:u_bench",
                        user_id="u_bench",
                        source_ip="192.0.2.10",
                        details={"index": index},
                        created_at=moment,
                        expires_at=int(moment) + RETENTION,
                    )
                )
                written += 1
    clock.set(START + DAYS * 24 * HOUR + 2 * HOUR)
    return written


def measure() -> AuditScaleResult:
    counter = CallCounter()
    clock = ManualClock(START)
    with (
        _loopback_only(),
        _quiet_moto_server(),
        counter.installed(),
        contextlib.redirect_stdout(_Discard()),
        LocalStack(),
    ):
        svc = runtime.reset(clock=clock)
        svc.signing_keys.rotate()
        members.bootstrap_org(
            svc,
            org_id=ORG_ID,
            name="Audit bench",
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            enforcement="optional",
        )
        events = _write_events(clock)

        def seal_everything() -> int:
            runs = 0
            while audit_trail.seal_all(svc):
                runs += 1
            return runs

        started = time.perf_counter()
        seal_tally, runs = counter.count(seal_everything)
        seal_seconds = time.perf_counter() - started

        end = START + DAYS * 24 * HOUR - 1
        started = time.perf_counter()
        verify_tally, report = counter.count(
            lambda: audit_trail.verify(svc, ORG_ID, start=START, end=end)
        )
        verify_seconds = time.perf_counter() - started
        digests = len(list(AuditDigestModel.query(ORG_ID)))
    steps = [
        Step(f"Seal every hour ({runs} sealer runs)", seal_tally, seal_seconds),
        Step(f"Verify {report.periods_checked} hours in one call", verify_tally, verify_seconds),
    ]
    return AuditScaleResult(events, report.periods_checked, digests, steps, report.valid)


if __name__ == "__main__":
    print(measure().markdown())
