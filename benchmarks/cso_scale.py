"""The security scan over 10,000 members and 100,000 audit events, on moto over HTTP.

The local stack starts in-process with a manual clock. One org gets MEMBERS members (most with
TOTP, some without a factor, where the policy requires MFA) and EVENTS audit events spread over
a week, written straight to the tables. Then the scan runs as the schedule would:

1. the first runs, until every event is read (each run reads at most `cso_max_events`);
2. a run an hour later with no new events;
3. a run after NEW_EVENTS more events;
4. a run after a second, small org appears.

The report counts each step's DynamoDB requests and times it. Requests should follow the new
events and orgs, not the history: steps 2 to 4 must cost a small fraction of step 1. The
request counts carry over to DynamoDB; moto's times do not.

Run it as `python -m benchmarks.cso_scale [--write]`. It takes several minutes, so
`benchmarks.run` leaves it out; `--write` replaces its own section of RESULTS.md.

Moto's time per query grows with the partition (see benchmarks/audit_scale.py). Over these
100,000 events one page can take longer than the clients' 5-second read timeout, so the
benchmark raises that timeout. DynamoDB reads the key range from its index and needs no such
change.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.config import Config

from benchmarks import run as bench_run
from benchmarks.request_counts import (
    ADMIN_PASSWORD,
    START,
    CallCounter,
    Tally,
    _Discard,
    _loopback_only,
    _quiet_moto_server,
)
from local.stack import LocalStack
from mfa_core import audit, members, runtime
from mfa_core.adapters import aws
from mfa_core.audit import new_event_id
from mfa_core.clock import ManualClock
from mfa_core.cso import scan
from mfa_core.policy import MfaPolicy, set_mfa_policy
from mfa_core.store.models import AuditModel, UserModel, user_key

BEGIN_MARKER = "<!-- security scan results: begin -->"
END_MARKER = "<!-- security scan results: end -->"
ORG_ID = "scale"
MEMBERS = 10_000
EVENTS = 100_000
NEW_EVENTS = 1_000
# One member in this many has no factor, so the scan opens a finding for each.
WITHOUT_FACTOR_EVERY = 20
HOUR = 3600
DAY = 24 * HOUR
RETENTION = 400 * DAY


@dataclass(frozen=True)
class Step:
    label: str
    tally: Tally
    seconds: float
    events_read: int
    members_read: int


@dataclass(frozen=True)
class CsoScaleResult:
    steps: list[Step]
    open_findings: int

    def markdown(self) -> str:
        lines = [
            f"One org of {MEMBERS:,} members (one in {WITHOUT_FACTOR_EVERY} without a factor, "
            f"MFA required) and {EVENTS:,} audit events over a week; "
            f"{self.open_findings:,} findings open after the first runs.",
            "",
            "| Step | Events read | Members read | DynamoDB requests | By operation "
            "| Time on moto |",
            "| --- | ---: | ---: | ---: | --- | ---: |",
        ]
        for step in self.steps:
            operations = ", ".join(f"{k} {v}" for k, v in sorted(step.tally.dynamodb.items()))
            lines.append(
                f"| {step.label} | {step.events_read:,} | {step.members_read:,} "
                f"| {step.tally.total:,} | {operations} | {step.seconds:.1f} s |"
            )
        return "\n".join(lines)


def _user_id(number: int) -> str:
    return f"u_{number:024x}"


def _write_members(org_id: str, count: int, now: float) -> None:
    with UserModel.batch_write() as batch:
        for number in range(count):
            user_id = _user_id(number)
            email = f"member{number}@{org_id}.example"
            factors = (
                {}
                if number % WITHOUT_FACTOR_EVERY == 0
                else {f"f_{number:024x}": {"type": "totp", "label": "Phone"}}
            )
            batch.save(
                UserModel(
                    org_id,
                    user_id,
                    email=email,
                    email_key=f"{org_id}#{email}",
                    role="operator",
                    password_hash="not-a-real-hash",
                    created_at=now,
                    active_factors=factors,
                )
            )


def _write_events(org_id: str, count: int, *, start: float, seconds: float) -> None:
    """Write logins of random members: a password step and an MFA step, one in 50 failing."""
    with AuditModel.batch_write() as batch:
        for index in range(count):
            moment = start + seconds * index / count
            number = (index * 7919) % MEMBERS
            user_id = _user_id(number)
            event_type = "login.password" if index % 2 == 0 else "login.mfa"
            failed = event_type == "login.mfa" and index % 50 == 1
            batch.save(
                AuditModel(
                    org_id,
                    new_event_id(moment),
                    user_key=user_key(org_id, user_id),
                    event_type=event_type,
                    outcome="failure" if failed else "success",
                    actor=f"user:{user_id}",
                    user_id=user_id,
                    source_ip=f"198.51.100.{number % 250}",
                    user_agent="benchmark",
                    reason="invalid_code" if failed else None,
                    created_at=moment,
                    expires_at=int(moment) + RETENTION,
                )
            )


@contextlib.contextmanager
def _patient_clients() -> Iterator[None]:
    """Give the AWS clients a read timeout long enough for moto's large partitions."""
    original = aws._CONFIG
    aws._CONFIG = original.merge(Config(read_timeout=600))
    try:
        yield
    finally:
        aws._CONFIG = original


def measure() -> CsoScaleResult:
    counter = CallCounter()
    clock = ManualClock(START)
    steps: list[Step] = []
    with (
        _loopback_only(),
        _patient_clients(),
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
            name="Scale",
            admin_email=f"admin@{ORG_ID}.example",
            admin_password=ADMIN_PASSWORD,
            enforcement="required",
        )
        set_mfa_policy(
            svc,
            org_id=ORG_ID,
            policy=MfaPolicy(enforcement="required", grace_days=7),
            expected_version=None,
            actor="operator",
            context=audit.SYSTEM,
        )
        _write_members(ORG_ID, MEMBERS, START)
        _write_events(ORG_ID, EVENTS, start=START + 60, seconds=7 * DAY)

        def run(label: str, org_id: str = ORG_ID, *, until_quiet: bool = False) -> None:
            results: list[scan.ScanResult] = []

            def runs() -> None:
                while True:
                    [result] = scan.scan_all(svc, org_id=org_id)
                    results.append(result)
                    if not until_quiet or result.events_read < svc.settings.cso_max_events:
                        break

            started = time.perf_counter()
            tally, _ = counter.count(runs)
            seconds = time.perf_counter() - started
            steps.append(
                Step(
                    f"{label} ({len(results)} runs)" if len(results) > 1 else label,
                    tally,
                    seconds,
                    sum(result.events_read for result in results),
                    sum(result.members_read for result in results),
                )
            )

        clock.set(START + 7 * DAY + HOUR)
        run("First runs, until every event is read", until_quiet=True)
        clock.advance(HOUR)
        run("An hour later, no new events")
        _write_events(ORG_ID, NEW_EVENTS, start=clock.now(), seconds=HOUR)
        clock.advance(HOUR + 60)
        run(f"After {NEW_EVENTS:,} new events")
        members.bootstrap_org(
            svc,
            org_id="second",
            name="Second",
            admin_email="admin@second.example",
            admin_password=ADMIN_PASSWORD,
            enforcement="required",
        )
        clock.advance(HOUR)
        run("A new org's first run", "second")
        open_findings = 0
        after = None
        while True:
            page, after = svc.scan_store.list_findings(
                ORG_ID, rule=None, status="open", severity=None, after=after, limit=1000
            )
            open_findings += len(page)
            if after is None:
                break
    return CsoScaleResult(steps, open_findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cso_scale", description=__doc__)
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"replace the security scan's section of {bench_run.RESULTS_PATH.name}",
    )
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    clock_start = time.monotonic()
    result = measure()
    text = "\n\n".join(
        [
            "### 6. The security scan over 10,000 members and 100,000 events",
            bench_run.machine_line(started, time.monotonic() - clock_start),
            result.markdown(),
        ]
    )
    print(text)
    if args.write:
        bench_run.write_results(text, begin_marker=BEGIN_MARKER, end_marker=END_MARKER)
        print(f"wrote {bench_run.RESULTS_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
