"""Known faults of the security scan's run and store, each shown by a test that fails now.

Each test is marked xfail(strict=True): once the fault is fixed, the test passes and pytest
reports it as a failure until the mark is removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from local.stack import LocalStack
from mfa_core import runtime
from mfa_core.clock import ManualClock
from mfa_core.cso import rules
from mfa_core.errors import DependencyFailed
from tests.api.harness import Flow, Member

# `thresholds` is a fixture of test_cso_scan.
from tests.api.test_cso_scan import (
    SETTLE,
    fail_mfa,
    run_scan,
    thresholds,  # noqa: F401
)
from tests.api.test_policy import set_policy


@pytest.mark.xfail(
    strict=True,
    reason="scan.scan_all lists the orgs with OrgModel.scan() before anything binds the models "
    "to their tables, so a new process scans the table named 'unbound' and fails",
)
def test_scan_of_every_org_in_new_process(stack: LocalStack, acme: Member) -> None:
    # A new process is what a cold Lambda container and `mfa-admin cso scan` start from. The
    # stack's variables are in os.environ, so the child reaches the same moto server.
    command = "from mfa_core.cli import main; raise SystemExit(main(['cso', 'scan']))"

    completed = subprocess.run(  # noqa: S603 - a fixed command line
        [sys.executable, "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    scanned = [org["org_id"] for org in json.loads(completed.stdout)["orgs"]]
    assert "acme" in scanned


@pytest.mark.xfail(
    strict=True,
    reason="scan._check_policy_changes reads only stored open findings, so a weakening and a "
    "restore read in one run leave a finding open while the policy is as strict again",
)
def test_weakened_and_restored_in_one_run(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="required", grace_days=7)
    run_scan(stack, clock)
    set_policy("acme", enforcement="off")
    set_policy("acme", enforcement="required", grace_days=7)

    run_scan(stack, clock)

    store = runtime.services().scan_store
    assert store.open_findings("acme", rules.ENFORCEMENT_WEAKENED) == []


@pytest.mark.xfail(
    strict=True,
    reason="scan._count_failed_mfa adds a run's failures to the hourly counters before the "
    "run saves its position, so a run that fails later counts the same events again on the "
    "next run",
)
def test_failed_run_counts_failures_once(
    flow: Flow,
    clock: ManualClock,
    enrolled: Member,
    thresholds: Callable[..., None],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mfa_core.cso import scan  # noqa: PLC0415 - see LAZY_IMPORTS in test_cso_scan

    thresholds(cso_failed_mfa_per_user=5, cso_failed_mfa_per_ip=5, cso_failed_mfa_per_org=5)
    fail_mfa(flow, enrolled, 3)
    clock.advance(SETTLE)
    svc = runtime.services()

    def unavailable(*args: object, **kwargs: object) -> None:
        raise DependencyFailed()

    # The run stores nothing of its position, as when DynamoDB or the Lambda timeout
    # interrupts it after the counters were written.
    monkeypatch.setattr(svc.scan_store, "save_state", unavailable)
    assert scan.scan_all(svc, org_id="acme") == []
    monkeypatch.undo()
    [retried] = scan.scan_all(svc, org_id="acme")

    assert retried.events_read > 0
    spikes = [name for name in retried.as_json()["new"] if name.startswith(rules.FAILED_MFA_SPIKE)]
    assert spikes == []
