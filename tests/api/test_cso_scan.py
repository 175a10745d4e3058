"""The security scan: each rule on real audit events, idempotent re-runs, resolution,
notifications over SNS and EventBridge, the findings API and the incremental reads.

The scan runs through its Lambda handler (CsoScanFunction) against the moto server. Most
events come from the API flows. Cloned keys, resets and factor changes of other types are
recorded through the store as the services record them, because their flows are long.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient

from local.stack import LocalStack
from mfa_core import audit, runtime
from mfa_core.audit import RequestContext
from mfa_core.clock import ManualClock
from mfa_core.cso import rules
from mfa_core.errors import DependencyFailed
from mfa_core.policy import SsoTrust
from mfa_core.store.models import AuditModel, FindingModel, UserModel
from tests.api.conftest import SOURCE_IP_HEADER, add_member, add_org
from tests.api.harness import Client, Flow, Member, wrong_code
from tests.api.test_policy import set_policy

# LAZY_IMPORTS: mfa_core.cli and mfa_core.cso.scan are imported inside the tests, once the
# stack has set POWERTOOLS_SERVICE_NAME, because their imports create Powertools child loggers
# whose names take the service name from the environment at that moment.
HOUR = 3600
DAY = 24 * HOUR
# Past the scan's settle time, so that the events written so far are read.
SETTLE = 31
FRANCE = "94.23.0.1"
AUSTRALIA = "203.2.218.214"
CONTEXT = RequestContext(source_ip="192.0.2.10", user_agent="tests", request_id="test")


def run_scan(stack: LocalStack, clock: ManualClock, org_id: str = "acme") -> dict[str, Any]:
    """Run the scan function for one org, after the settle time; return its result."""
    clock.advance(SETTLE)
    result = stack.function("CsoScanFunction").invoke({"org_id": org_id})
    [org] = result["orgs"]
    assert org["org_id"] == org_id
    return dict(org)


def finding(org_id: str, finding_id: str) -> FindingModel:
    found = runtime.services().scan_store.get_finding(org_id, finding_id)
    assert found is not None, finding_id
    return found


def not_enrolled_id(member: Member) -> str:
    return rules.finding_id(rules.NOT_ENROLLED, f"user:{member.user_id}")


def record(org_id: str, event_type: str, *, user_id: str | None, **fields: Any) -> str:
    """Record an audit event as the services do; return its id."""
    svc = runtime.services()
    event = audit.event(
        now=svc.clock.now(),
        event_type=event_type,
        org_id=org_id,
        user_id=user_id,
        context=CONTEXT,
        outcome=fields.pop("outcome", "success"),
        **fields,
    )
    svc.store.record(event)
    return event.event_id


def set_factors(member: Member, factors: dict[str, dict[str, Any]]) -> None:
    UserModel(member.org_id, member.user_id).update(actions=[UserModel.active_factors.set(factors)])


@pytest.fixture
def thresholds(stack: LocalStack, clock: ManualClock) -> Iterator[Callable[..., None]]:
    """Change the scan's settings for one test."""
    original = runtime.services().settings

    def apply(**values: Any) -> None:
        runtime.reset(clock=clock, settings=dataclasses.replace(original, **values))

    yield apply
    runtime.reset(clock=clock, settings=original)


# -- members not enrolled ------------------------------------------------------------------


def test_not_enrolled_in_grace_is_low_then_high(
    client: Client, flow: Flow, clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy(
        "acme", enforcement="required", scope="roles", scope_roles=("operator",), grace_days=3
    )
    member = add_member("acme", "ops@acme.example")

    first = run_scan(stack, clock)
    assert first["full_member_pass"] is True
    assert not_enrolled_id(member) in first["new"]
    assert not_enrolled_id(acme) not in first["new"]  # admins are out of scope
    assert finding("acme", not_enrolled_id(member)).severity == "low"
    assert finding("acme", not_enrolled_id(member)).deadline is None  # grace not started

    flow.login_ok(member, "authenticated")  # starts the grace period
    second = run_scan(stack, clock)
    assert second["full_member_pass"] is False
    started = finding("acme", not_enrolled_id(member))
    assert started.severity == "low"
    assert started.deadline is not None
    assert not_enrolled_id(member) in second["updated"]

    clock.advance(3 * DAY)
    third = run_scan(stack, clock)
    assert third["events_read"] == 0
    assert third["members_read"] == 0
    assert third["new"] == [not_enrolled_id(member)]
    escalated = finding("acme", not_enrolled_id(member))
    assert escalated.severity == "high"
    assert escalated.status == "open"


def test_not_enrolled_without_grace_is_high(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="required", scope="roles", scope_roles=("operator",))
    member = add_member("acme", "ops@acme.example")

    run_scan(stack, clock)

    found = finding("acme", not_enrolled_id(member))
    assert found.severity == "high"
    assert found.subject == f"user:{member.user_id}"
    assert found.rule == rules.NOT_ENROLLED


def test_enrolling_resolves_not_enrolled(
    flow: Flow, clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy(
        "acme", enforcement="required", scope="roles", scope_roles=("operator",), grace_days=3
    )
    member = add_member("acme", "ops@acme.example")
    run_scan(stack, clock)

    token = flow.login_ok(member, "authenticated")["access_token"]
    flow.enroll(member, token)
    result = run_scan(stack, clock)

    assert result["resolved"] == [not_enrolled_id(member)]
    resolved = finding("acme", not_enrolled_id(member))
    assert resolved.status == "resolved"
    assert resolved.resolved_at is not None


def test_disabling_resolves_not_enrolled(
    client: Client, flow: Flow, clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="required", scope="roles", scope_roles=("operator",))
    member = add_member("acme", "ops@acme.example")
    run_scan(stack, clock)
    admin_token = flow.login_ok(acme, "authenticated")["access_token"]

    disabled = client.request(
        "PATCH",
        f"/v1/orgs/acme/users/{member.user_id}",
        json_body={"status": "disabled"},
        token=admin_token,
    )
    assert disabled.status == 200, disabled.text
    result = run_scan(stack, clock)

    assert not_enrolled_id(member) in result["resolved"]
    assert result["members_read"] == 2  # the admin and the member the events name


def test_narrowed_scope_resolves_not_enrolled(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="required", scope="roles", scope_roles=("operator",))
    member = add_member("acme", "ops@acme.example")
    run_scan(stack, clock)

    set_policy("acme", enforcement="required", scope="roles", scope_roles=("admin",))
    result = run_scan(stack, clock)

    assert result["full_member_pass"] is True
    assert not_enrolled_id(member) in result["resolved"]
    assert not_enrolled_id(acme) in result["new"]


# -- failed MFA ----------------------------------------------------------------------------


def fail_mfa(flow: Flow, member: Member, times: int) -> None:
    assert member.totp_secret is not None
    for _ in range(times):
        reply = flow.verify(member, flow.mfa_token(member), wrong_code(flow, member.totp_secret))
        assert reply.status == 401, reply.text


def test_failed_mfa_spike_per_user_ip_and_org(
    flow: Flow,
    clock: ManualClock,
    stack: LocalStack,
    enrolled: Member,
    thresholds: Callable[..., None],
) -> None:
    thresholds(cso_failed_mfa_per_user=5, cso_failed_mfa_per_ip=5, cso_failed_mfa_per_org=5)
    fail_mfa(flow, enrolled, 3)
    first = run_scan(stack, clock)
    assert not [name for name in first["new"] if name.startswith(rules.FAILED_MFA_SPIKE)]

    fail_mfa(flow, enrolled, 2)  # the same hour: the counts go on across runs
    second = run_scan(stack, clock)

    hour = rules.hour_of(clock.now())
    expected = {
        rules.finding_id(rules.FAILED_MFA_SPIKE, f"user:{enrolled.user_id}", hour),
        rules.finding_id(rules.FAILED_MFA_SPIKE, "ip:127.0.0.1", hour),
        rules.finding_id(rules.FAILED_MFA_SPIKE, "org", hour),
    }
    assert expected <= set(second["new"])
    user_finding = finding(
        "acme", rules.finding_id(rules.FAILED_MFA_SPIKE, f"user:{enrolled.user_id}", hour)
    )
    assert user_finding.details["failures"] == 5
    assert len(user_finding.evidence) == 2  # the events of this run; earlier ones were below


def test_rerun_creates_no_duplicate(
    client: Client, flow: Flow, clock: ManualClock, stack: LocalStack, enrolled: Member
) -> None:
    fail_mfa(flow, enrolled, 5)
    first = run_scan(stack, clock)
    spike = rules.finding_id(
        rules.FAILED_MFA_SPIKE, f"user:{enrolled.user_id}", rules.hour_of(clock.now())
    )
    assert spike in first["new"]

    second = run_scan(stack, clock)
    assert second["new"] == []
    fail_mfa(flow, enrolled, 1)
    third = run_scan(stack, clock)

    assert spike not in third["new"]
    assert spike in third["updated"]
    ids = [item.finding_id for item in FindingModel.query("acme")]
    assert len(ids) == len(set(ids))
    assert finding("acme", spike).details["failures"] == 6
    assert len(finding("acme", spike).evidence) == 6


# -- sessions, resets, keys ----------------------------------------------------------------


def test_refresh_token_reuse(
    client: Client, flow: Flow, clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    first = flow.login_ok(acme, "authenticated")
    rotated = client.post("/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert rotated.status == 200
    reuse = client.post("/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert reuse.status == 401

    result = run_scan(stack, clock)

    reuse_id = rules.finding_id(
        rules.REFRESH_REUSE, f"user:{acme.user_id}", rules.hour_of(clock.now())
    )
    assert reuse_id in result["new"]
    found = finding("acme", reuse_id)
    assert found.severity == "high"
    stored = json.dumps(found.attribute_values, default=str)
    assert first["refresh_token"] not in stored
    assert first["access_token"] not in stored


def test_admin_reset_opens_and_cancel_resolves(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    member = add_member("acme", "ops@acme.example")
    actor = f"user:{acme.user_id}"
    details = {"reset_id": "r-1", "verification_method": "id_document"}
    record("acme", "mfa_reset.request", user_id=member.user_id, actor=actor, details=details)
    result = run_scan(stack, clock)
    reset_id = rules.finding_id(rules.ADMIN_RESET, f"user:{member.user_id}", "reset:r-1")
    assert reset_id in result["new"]
    assert finding("acme", reset_id).severity == "medium"

    record("acme", "mfa_reset.cancel", user_id=member.user_id, actor=actor, details=details)
    cancelled = run_scan(stack, clock)

    assert cancelled["resolved"] == [reset_id]


def test_reset_request_left_to_expire_resolves(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    member = add_member("acme", "ops@acme.example")
    actor = f"user:{acme.user_id}"
    # As the reset service records a request: with the time it expires unless approved.
    details = {"reset_id": "r-1", "expires_at": int(clock.now()) + DAY}
    record("acme", "mfa_reset.request", user_id=member.user_id, actor=actor, details=details)
    reset_id = rules.finding_id(rules.ADMIN_RESET, f"user:{member.user_id}", "reset:r-1")
    assert reset_id in run_scan(stack, clock)["new"]
    clock.advance(DAY - HOUR)
    assert run_scan(stack, clock)["resolved"] == []

    clock.advance(HOUR)
    expired = run_scan(stack, clock)

    assert expired["events_read"] == 0  # nothing marks the request expired
    assert expired["resolved"] == [reset_id]
    assert finding("acme", reset_id).status == "resolved"


def test_completed_reset_is_high(clock: ManualClock, stack: LocalStack, acme: Member) -> None:
    member = add_member("acme", "ops@acme.example")
    actor = f"user:{acme.user_id}"
    for event_type in ("mfa_reset.request", "mfa_reset.approve", "mfa_reset.complete"):
        record(
            "acme",
            event_type,
            user_id=member.user_id,
            actor=actor,
            details={"reset_id": "r-2", "factors_disabled": 1},
        )

    run_scan(stack, clock)

    found = finding(
        "acme", rules.finding_id(rules.ADMIN_RESET, f"user:{member.user_id}", "reset:r-2")
    )
    assert found.severity == "high"
    assert len(found.evidence) == 3


def test_cloned_key_resolved_by_removal(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    record(
        "acme",
        "webauthn.clone_suspected",
        user_id=acme.user_id,
        factor_id="f-key",
        outcome="denied",
        details={"stored_sign_count": 7, "reported_sign_count": 3},
    )
    result = run_scan(stack, clock)
    clone_id = rules.finding_id(rules.CLONED_KEY, f"user:{acme.user_id}", "factor:f-key")
    assert clone_id in result["new"]
    assert finding("acme", clone_id).severity == "high"

    record(
        "acme",
        "factor.remove",
        user_id=acme.user_id,
        factor_id="f-key",
        details={"type": "webauthn"},
    )
    removed = run_scan(stack, clock)

    assert clone_id in removed["resolved"]


# -- factor changes ------------------------------------------------------------------------


def test_last_key_removed_then_added_again(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    run_scan(stack, clock)
    set_factors(acme, {"f-totp": {"type": "totp", "label": "Phone"}})
    record(
        "acme",
        "factor.remove",
        user_id=acme.user_id,
        factor_id="f-key",
        details={"type": "webauthn"},
    )
    result = run_scan(stack, clock)
    key_id = rules.finding_id(
        rules.METHOD_DOWNGRADE, f"user:{acme.user_id}", "security_key_removed"
    )
    assert key_id in result["new"]
    assert finding("acme", key_id).details["remaining_methods"] == ["totp"]

    set_factors(
        acme,
        {
            "f-totp": {"type": "totp", "label": "Phone"},
            "f-key2": {"type": "webauthn", "label": "Key"},
        },
    )
    record(
        "acme",
        "factor.activate",
        user_id=acme.user_id,
        factor_id="f-key2",
        details={"type": "webauthn"},
    )
    added = run_scan(stack, clock)

    assert key_id in added["resolved"]


def test_only_sms_left(clock: ManualClock, stack: LocalStack, acme: Member) -> None:
    run_scan(stack, clock)
    set_factors(acme, {"f-sms": {"type": "sms", "label": "Phone"}})
    record(
        "acme", "factor.remove", user_id=acme.user_id, factor_id="f-totp", details={"type": "totp"}
    )

    result = run_scan(stack, clock)

    sms_id = rules.finding_id(rules.METHOD_DOWNGRADE, f"user:{acme.user_id}", "sms_only")
    assert sms_id in result["new"]
    assert finding("acme", sms_id).severity == "medium"


# -- logins --------------------------------------------------------------------------------


def login_from(client: Client, member: Member, ip: str) -> None:
    reply = client.post(
        "/v1/auth/login",
        {"org_id": member.org_id, "email": member.email, "password": member.password},
        headers={SOURCE_IP_HEADER: ip},
    )
    assert reply.status == 200, reply.text


def test_impossible_travel_is_high(
    client: Client, clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    login_from(client, acme, FRANCE)
    clock.advance(2 * HOUR)
    login_from(client, acme, AUSTRALIA)

    result = run_scan(stack, clock)

    anomaly_id = rules.finding_id(
        rules.ANOMALOUS_LOGIN, f"user:{acme.user_id}", rules.hour_of(clock.now() - SETTLE)
    )
    assert anomaly_id in result["new"]
    found = finding("acme", anomaly_id)
    assert found.severity == "high"
    assert "impossible_travel" in found.details["signals"]
    assert found.details["country"] == "AU"


def test_many_users_from_one_address(
    client: Client, clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    users = [add_member("acme", f"user{n}@acme.example") for n in range(4)]
    for member in [acme, *users[:2]]:
        login_from(client, member, "198.51.100.7")
    first = run_scan(stack, clock)
    assert not [name for name in first["new"] if name.startswith(rules.SHARED_SOURCE_IP)]

    for member in users[2:]:
        login_from(client, member, "198.51.100.7")
    second = run_scan(stack, clock)

    shared_id = rules.finding_id(
        rules.SHARED_SOURCE_IP, "ip:198.51.100.7", rules.hour_of(clock.now())
    )
    assert shared_id in second["new"]
    assert finding("acme", shared_id).details["users"] == 5


def test_login_at_an_unusual_hour(
    client: Client,
    clock: ManualClock,
    stack: LocalStack,
    acme: Member,
    thresholds: Callable[..., None],
) -> None:
    thresholds(cso_profile_min_logins=3)
    for _ in range(3):
        login_from(client, acme, "192.0.2.1")
        clock.advance(60)
    usual = run_scan(stack, clock)
    assert not [name for name in usual["new"] if name.startswith(rules.UNUSUAL_LOGIN_HOUR)]

    clock.advance(12 * HOUR)
    login_from(client, acme, "192.0.2.1")
    result = run_scan(stack, clock)

    unusual = [name for name in result["new"] if name.startswith(rules.UNUSUAL_LOGIN_HOUR)]
    assert len(unusual) == 1
    found = finding("acme", unusual[0])
    assert found.severity == "low"
    assert found.details["logins_on_record"] == 3


# -- the policy ----------------------------------------------------------------------------


def test_enforcement_switched_off_then_restored(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="required", grace_days=7)
    run_scan(stack, clock)
    set_policy("acme", enforcement="off")
    result = run_scan(stack, clock)
    weakened = [name for name in result["new"] if name.startswith(rules.ENFORCEMENT_WEAKENED)]
    assert len(weakened) == 1
    found = finding("acme", weakened[0])
    assert found.severity == "high"
    assert found.subject == "org"
    assert found.details["reasons"] == ["enforcement_lowered"]

    clock.advance(HOUR)
    set_policy("acme", enforcement="required", grace_days=7)
    restored = run_scan(stack, clock)

    assert weakened[0] in restored["resolved"]


def test_trusting_idp_mfa_then_not(clock: ManualClock, stack: LocalStack, acme: Member) -> None:
    set_policy("acme", enforcement="required", grace_days=7)
    run_scan(stack, clock)
    trusted = SsoTrust(trust_idp_mfa=True, accepted_amr=("mfa",), max_auth_age_minutes=60)
    set_policy("acme", enforcement="required", grace_days=7, sso=trusted)
    result = run_scan(stack, clock)
    [weakened] = [name for name in result["new"] if name.startswith(rules.ENFORCEMENT_WEAKENED)]
    found = finding("acme", weakened)
    assert found.severity == "medium"
    assert found.details["reasons"] == ["idp_mfa_trusted"]
    assert found.details["after"]["sso"]["accepted_amr"] == ["mfa"]

    clock.advance(HOUR)
    set_policy("acme", enforcement="required", grace_days=7)
    restored = run_scan(stack, clock)

    assert weakened in restored["resolved"]


def test_scope_narrowed_is_medium(clock: ManualClock, stack: LocalStack, acme: Member) -> None:
    set_policy("acme", enforcement="required", grace_days=7)
    set_policy("acme", enforcement="required", grace_days=7, scope="roles", scope_roles=("admin",))

    result = run_scan(stack, clock)

    [weakened] = [name for name in result["new"] if name.startswith(rules.ENFORCEMENT_WEAKENED)]
    assert finding("acme", weakened).severity == "medium"
    assert finding("acme", weakened).details["reasons"] == ["scope_narrowed"]


# -- notifications -------------------------------------------------------------------------


@pytest.fixture
def queues(stack: LocalStack) -> Iterator[dict[str, str]]:
    """SQS queues that receive the security topic's messages and the findings bus's events."""
    settings = runtime.services().settings
    assert settings.security_topic_arn is not None
    assert settings.findings_bus_name is not None
    endpoint = {"endpoint_url": stack.aws_endpoint_url, "region_name": "us-east-1"}
    sqs = boto3.client("sqs", **endpoint)
    sns = boto3.client("sns", **endpoint)
    events = boto3.client("events", **endpoint)

    urls = {
        name: sqs.create_queue(QueueName=f"findings-{name}")["QueueUrl"]
        for name in ("topic", "bus")
    }
    arns = {
        name: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        for name, url in urls.items()
    }
    subscription = sns.subscribe(
        TopicArn=settings.security_topic_arn, Protocol="sqs", Endpoint=arns["topic"]
    )

    bus = settings.findings_bus_name
    events.put_rule(
        Name="findings-to-queue",
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["mfa.cso_scan"], "detail-type": ["MFA finding"]}),
    )
    events.put_targets(
        Rule="findings-to-queue", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arns["bus"]}]
    )
    try:
        yield urls
    finally:
        events.remove_targets(Rule="findings-to-queue", EventBusName=bus, Ids=["queue"])
        events.delete_rule(Name="findings-to-queue", EventBusName=bus)
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
        for url in urls.values():
            sqs.delete_queue(QueueUrl=url)


def received(stack: LocalStack, url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint_url, region_name="us-east-1")
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    return [json.loads(message["Body"]) for message in messages.get("Messages", [])]


def test_new_findings_reach_topic_and_bus(
    flow: Flow,
    clock: ManualClock,
    stack: LocalStack,
    enrolled: Member,
    queues: dict[str, str],
) -> None:
    fail_mfa(flow, enrolled, 5)
    result = run_scan(stack, clock)
    spike = rules.finding_id(
        rules.FAILED_MFA_SPIKE, f"user:{enrolled.user_id}", rules.hour_of(clock.now())
    )
    assert spike in result["new"]

    topic = [json.loads(body["Message"]) for body in received(stack, queues["topic"])]
    bus = received(stack, queues["bus"])

    [published] = [message for message in topic if message["finding_id"] == spike]
    assert published["kind"] == "cso.finding"
    assert published["org_id"] == "acme"
    assert published["severity"] == "medium"
    [event] = [item for item in bus if item["detail"]["finding_id"] == spike]
    assert event["source"] == "mfa.cso_scan"
    assert event["detail-type"] == "MFA finding"
    assert event["detail"]["rule"] == rules.FAILED_MFA_SPIKE
    assert enrolled.totp_secret is not None
    for message in [*topic, *bus]:
        assert enrolled.totp_secret not in json.dumps(message)
        assert enrolled.password not in json.dumps(message)

    fail_mfa(flow, enrolled, 1)
    again = run_scan(stack, clock)
    assert spike in again["updated"]
    assert received(stack, queues["topic"]) == []  # a re-detection is not notified again
    assert received(stack, queues["bus"]) == []


def test_topic_messages_capped_per_run(
    clock: ManualClock,
    stack: LocalStack,
    acme: Member,
    queues: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mfa_core.cso.scan.MAX_TOPIC_MESSAGES", 2)
    set_policy("acme", enforcement="required", scope="roles", scope_roles=("operator",))
    for n in range(4):
        add_member("acme", f"ops{n}@acme.example")

    result = run_scan(stack, clock)

    assert len(result["new"]) == 4
    topic = [json.loads(body["Message"]) for body in received(stack, queues["topic"])]
    kinds = sorted(message["kind"] for message in topic)
    assert kinds == ["cso.finding", "cso.finding", "cso.findings_summary"]
    [rest] = [message for message in topic if message["kind"] == "cso.findings_summary"]
    assert rest["severities"] == {"high": 2}
    bus = received(stack, queues["bus"])
    assert len(bus) == 4


# -- the findings API ----------------------------------------------------------------------


@pytest.fixture
def listed(client: Client, flow: Flow, clock: ManualClock, stack: LocalStack) -> str:
    """Three "not enrolled" findings, two open (high) and one resolved; the admin's token."""
    add_org("acme")
    set_policy("acme", enforcement="required", scope="roles", scope_roles=("operator",))
    members = [add_member("acme", f"ops{n}@acme.example") for n in range(3)]
    run_scan(stack, clock)
    flow.enroll(members[0], flow.login_ok(members[0], "enrollment_required")["enrollment_token"])
    run_scan(stack, clock)
    admin = Member("acme", "admin@acme.example", "correct horse battery staple", "")
    token: str = flow.login_ok(admin, "authenticated")["access_token"]
    return token


def test_findings_api_filters(client: Client, listed: str) -> None:
    every = client.get("/v1/orgs/acme/findings", token=listed)
    assert every.status == 200, every.text
    assert len(every.body["findings"]) == 3
    assert every.body["next"] is None

    resolved = client.get("/v1/orgs/acme/findings?status=resolved", token=listed).body
    assert [item["status"] for item in resolved["findings"]] == ["resolved"]
    assert resolved["findings"][0]["resolved_at"] is not None
    low = client.get("/v1/orgs/acme/findings?severity=low", token=listed).body["findings"]
    assert low == []
    high = client.get(
        f"/v1/orgs/acme/findings?status=open&severity=high&rule={rules.NOT_ENROLLED}",
        token=listed,
    ).body["findings"]
    assert len(high) == 2
    assert {item["rule"] for item in high} == {rules.NOT_ENROLLED}
    other_rule = client.get(f"/v1/orgs/acme/findings?rule={rules.CLONED_KEY}", token=listed)
    assert other_rule.body["findings"] == []


def test_findings_api_pages(client: Client, listed: str) -> None:
    seen: list[str] = []
    path = "/v1/orgs/acme/findings?limit=2"
    first = client.get(path, token=listed).body
    seen += [item["finding_id"] for item in first["findings"]]
    assert len(first["findings"]) == 2
    assert first["next"] is not None

    second = client.get(f"{path}&next={first['next']}", token=listed).body

    seen += [item["finding_id"] for item in second["findings"]]
    assert len(second["findings"]) == 1
    assert second["next"] is None
    assert len(set(seen)) == 3
    assert seen == sorted(seen)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=closed", "status"),
        ("severity=urgent", "severity"),
        ("rule=unknown", "rule"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("next=not-a-cursor", "next"),
        ("sort=asc", "sort"),
    ],
)
def test_findings_api_rejects_bad_parameters(
    client: Client, listed: str, query: str, field: str
) -> None:
    reply = client.get(f"/v1/orgs/acme/findings?{query}", token=listed)

    assert reply.status == 400
    assert reply.header("content-type") == "application/problem+json"
    assert reply.body["field"] == field


def test_findings_api_other_org_not_found(client: Client, flow: Flow, listed: str) -> None:
    other = add_org("globex")
    token = flow.login_ok(other, "authenticated")["access_token"]

    reply = client.get("/v1/orgs/acme/findings", token=token)

    assert reply.status == 404
    assert client.get("/v1/orgs/globex/findings", token=token).body["findings"] == []


def test_findings_api_forbidden_for_non_admin(client: Client, flow: Flow, acme: Member) -> None:
    member = add_member("acme", "viewer@acme.example", role="viewer")
    token = flow.login_ok(member, "authenticated")["access_token"]

    reply = client.get("/v1/orgs/acme/findings", token=token)

    assert reply.status == 403
    assert client.get("/v1/orgs/acme/findings").status == 401


def test_findings_api_checks_caller_before_query(client: Client, flow: Flow, listed: str) -> None:
    other = add_org("globex")
    token = flow.login_ok(other, "authenticated")["access_token"]

    anonymous = client.get("/v1/orgs/acme/findings?status=closed")
    other_org = client.get("/v1/orgs/acme/findings?status=closed", token=token)

    assert anonymous.status == 401
    assert other_org.status == 404


def cursor(finding_id: str) -> str:
    """A `next` value in the API's encoding, naming `finding_id`."""
    document = json.dumps({"after": finding_id}).encode()
    return base64.urlsafe_b64encode(document).decode().rstrip("=")


def test_findings_api_cursor_of_rule_filter(client: Client, listed: str) -> None:
    path = f"/v1/orgs/acme/findings?rule={rules.NOT_ENROLLED}&limit=2"
    first = client.get(path, token=listed).body
    assert first["next"] is not None

    same_rule = client.get(f"{path}&next={first['next']}", token=listed)
    other_rule = client.get(
        f"/v1/orgs/acme/findings?rule={rules.CLONED_KEY}&next={first['next']}", token=listed
    )

    assert same_rule.status == 200
    assert len(same_rule.body["findings"]) == 1
    assert other_rule.status == 400
    assert other_rule.body["field"] == "next"


@pytest.mark.parametrize(
    "finding_id",
    [
        f"{rules.NOT_ENROLLED}#user:\u00e9",
        f"{rules.NOT_ENROLLED}#user:\ud800",
        f"{rules.NOT_ENROLLED}#user:\n",
        "mfa#user:u_1",
    ],
)
def test_findings_api_rejects_forged_cursor(client: Client, listed: str, finding_id: str) -> None:
    reply = client.get(f"/v1/orgs/acme/findings?next={cursor(finding_id)}", token=listed)

    assert reply.status == 400
    assert reply.body["field"] == "next"


# -- incremental reads ---------------------------------------------------------------------


@pytest.fixture
def dynamodb_calls() -> Iterator[list[tuple[str, dict[str, Any], dict[str, Any]]]]:
    """Record each DynamoDB request of this thread with its response."""
    recorded: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    thread = threading.get_ident()
    original = BaseClient._make_api_call

    def call(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        response = original(self, operation, params)
        if self.meta.service_model.service_name == "dynamodb" and threading.get_ident() == thread:
            recorded.append((operation, params, response))
        return response

    BaseClient._make_api_call = call  # type: ignore[method-assign]
    try:
        yield recorded
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


def on_table(
    calls: list[tuple[str, dict[str, Any], dict[str, Any]]], table: str
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        call
        for call in calls
        if call[1].get("TableName") == table or table in call[1].get("RequestItems", {})
    ]


def test_rerun_without_events_reads_one_empty_range(
    flow: Flow,
    clock: ManualClock,
    stack: LocalStack,
    acme: Member,
    dynamodb_calls: list[tuple[str, dict[str, Any], dict[str, Any]]],
) -> None:
    set_policy(
        "acme", enforcement="required", scope="roles", scope_roles=("operator",), grace_days=3
    )
    for n in range(3):
        add_member("acme", f"ops{n}@acme.example")
    run_scan(stack, clock)
    settings = runtime.services().settings
    dynamodb_calls.clear()

    result = run_scan(stack, clock)

    assert result["events_read"] == 0
    audit_calls = on_table(dynamodb_calls, settings.audit_table)
    assert [operation for operation, _, _ in audit_calls] == ["Query"]
    assert audit_calls[0][2]["Count"] == 0
    assert on_table(dynamodb_calls, settings.users_table) == []
    assert result["members_read"] == 0
    assert not [
        call
        for call in dynamodb_calls
        if call[0] == "Scan" and call[1]["TableName"] != settings.orgs_table
    ]


def test_rerun_reads_only_the_members_named(
    flow: Flow,
    clock: ManualClock,
    stack: LocalStack,
    acme: Member,
    dynamodb_calls: list[tuple[str, dict[str, Any], dict[str, Any]]],
) -> None:
    set_policy(
        "acme", enforcement="required", scope="roles", scope_roles=("operator",), grace_days=3
    )
    members = [add_member("acme", f"ops{n}@acme.example") for n in range(5)]
    run_scan(stack, clock)
    flow.login_ok(members[0], "authenticated")
    settings = runtime.services().settings
    dynamodb_calls.clear()

    result = run_scan(stack, clock)

    users = on_table(dynamodb_calls, settings.users_table)
    assert [operation for operation, _, _ in users] == ["BatchGetItem"]
    [key] = users[0][1]["RequestItems"][settings.users_table]["Keys"]
    assert key["user_id"]["S"] == members[0].user_id
    assert result["members_read"] == 1
    assert result["events_read"] >= 1


def test_full_pass_over_compliant_org_writes_no_finding(
    clock: ManualClock,
    stack: LocalStack,
    acme: Member,
    dynamodb_calls: list[tuple[str, dict[str, Any], dict[str, Any]]],
) -> None:
    for n in range(3):
        add_member("acme", f"ops{n}@acme.example")

    result = run_scan(stack, clock)

    assert result["full_member_pass"] is True
    assert result["members_read"] == 4
    findings_table = runtime.services().settings.findings_table
    operations = [operation for operation, _, _ in on_table(dynamodb_calls, findings_table)]
    # Reads only: the open "not enrolled" findings, and the open findings for the day's
    # evidence pack; none of them.
    assert set(operations) == {"Query"}


# -- the operator command ------------------------------------------------------------------


# -- runs that fail or overlap -------------------------------------------------------------


def counter_writes(calls: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """The state keys of the counters that the recorded requests updated."""
    table = runtime.services().settings.scan_state_table
    return [
        params["Key"]["state_key"]["S"]
        for operation, params, _ in on_table(calls, table)
        if operation == "UpdateItem"
    ]


def test_failed_run_counts_nothing_twice(  # noqa: PLR0917
    flow: Flow,
    clock: ManualClock,
    stack: LocalStack,
    enrolled: Member,
    thresholds: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mfa_core.store.findings import ScanStore  # noqa: PLC0415 - see LAZY_IMPORTS

    thresholds(cso_failed_mfa_per_user=5, cso_failed_mfa_per_ip=100, cso_failed_mfa_per_org=100)
    assert enrolled.totp_secret is not None
    signed_in = flow.verify(enrolled, flow.mfa_token(enrolled), flow.code(enrolled.totp_secret))
    assert signed_in.status == 200, signed_in.text
    fail_mfa(flow, enrolled, 4)
    clock.advance(SETTLE)
    saved = ScanStore.save_state

    def fail(self: ScanStore, state: Any) -> None:
        raise DependencyFailed()

    monkeypatch.setattr(ScanStore, "save_state", fail)
    failed = stack.function("CsoScanFunction").invoke({"org_id": "acme"})
    assert failed["orgs"] == []  # the run counted, then failed before saving its position
    monkeypatch.setattr(ScanStore, "save_state", saved)

    again = run_scan(stack, clock)
    assert again["events_read"] > 4  # the same events, read again
    spike = rules.finding_id(
        rules.FAILED_MFA_SPIKE, f"user:{enrolled.user_id}", rules.hour_of(clock.now())
    )
    assert spike not in again["new"]  # 4 failures, not 8
    logins = [
        item
        for item in AuditModel.query("acme")
        if item.event_type in rules.LOGIN_EVENTS
        and item.outcome == "success"
        and item.user_id == enrolled.user_id
    ]
    profiles = runtime.services().scan_store.get_profiles("acme", [enrolled.user_id])
    assert profiles[enrolled.user_id].logins == len(logins) >= 1

    fail_mfa(flow, enrolled, 1)
    fifth = run_scan(stack, clock)
    assert spike in fifth["new"]
    assert finding("acme", spike).details["failures"] == 5


def test_hours_read_whole_need_no_counter(
    clock: ManualClock,
    stack: LocalStack,
    enrolled: Member,
    thresholds: Callable[..., None],
    dynamodb_calls: list[tuple[str, dict[str, Any], dict[str, Any]]],
) -> None:
    thresholds(cso_failed_mfa_per_user=5, cso_failed_mfa_per_ip=100, cso_failed_mfa_per_org=100)
    hours = []
    for failures in (2, 6, 1):
        clock.advance(HOUR)
        hours.append(rules.hour_of(clock.now()))
        for _ in range(failures):
            record("acme", "login.mfa", user_id=enrolled.user_id, outcome="failure")
    dynamodb_calls.clear()

    result = run_scan(stack, clock)

    # Only the hour of the last event can get more events in a later run.
    written = counter_writes(dynamodb_calls)
    assert written
    assert all(key.endswith(f"#{hours[2]}") for key in written), written
    spike = rules.finding_id(rules.FAILED_MFA_SPIKE, f"user:{enrolled.user_id}", hours[1])
    assert spike in result["new"]
    assert finding("acme", spike).details["failures"] == 6


def test_counts_span_split_hour(
    clock: ManualClock,
    stack: LocalStack,
    enrolled: Member,
    thresholds: Callable[..., None],
) -> None:
    thresholds(
        cso_failed_mfa_per_user=5,
        cso_failed_mfa_per_ip=100,
        cso_failed_mfa_per_org=100,
        cso_max_events=3,
    )
    run_scan(stack, clock)  # reads the events of creating the org, three at a time
    while run_scan(stack, clock)["events_read"]:
        pass
    clock.advance(HOUR)
    for _ in range(5):
        record("acme", "login.mfa", user_id=enrolled.user_id, outcome="failure")
    spike = rules.finding_id(
        rules.FAILED_MFA_SPIKE, f"user:{enrolled.user_id}", rules.hour_of(clock.now())
    )

    first = run_scan(stack, clock)
    second = run_scan(stack, clock)

    assert (first["events_read"], second["events_read"]) == (3, 2)
    assert spike not in first["new"]
    assert spike in second["new"]
    assert finding("acme", spike).details["failures"] == 5


def test_overlapping_runs_notify_a_new_finding_once(  # noqa: PLR0917
    flow: Flow,
    clock: ManualClock,
    stack: LocalStack,
    enrolled: Member,
    thresholds: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mfa_core.cso import scan  # noqa: PLC0415 - see LAZY_IMPORTS
    from mfa_core.store.findings import ScanStore  # noqa: PLC0415 - see LAZY_IMPORTS

    thresholds(cso_failed_mfa_per_user=5, cso_failed_mfa_per_ip=100, cso_failed_mfa_per_org=100)
    fail_mfa(flow, enrolled, 5)
    clock.advance(SETTLE)
    # Both runs read the stored findings before either writes one.
    both_read = threading.Barrier(2, timeout=60)
    read_findings = ScanStore.get_findings

    def get_findings(self: ScanStore, org_id: str, finding_ids: Any) -> Any:
        found = read_findings(self, org_id, finding_ids)
        both_read.wait()
        return found

    monkeypatch.setattr(ScanStore, "get_findings", get_findings)
    svc = runtime.services()
    org = svc.store.get_org("acme")
    assert org is not None
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(scan.scan_org(svc, org))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    spike = rules.finding_id(
        rules.FAILED_MFA_SPIKE, f"user:{enrolled.user_id}", rules.hour_of(clock.now())
    )
    notified = [finding.finding_id for result in results for finding in result.new].count(spike)
    assert notified == 1
    stored = finding("acme", spike)
    assert stored.details["failures"] == 5
    assert len(stored.evidence) == 5


def test_scan_of_every_org_in_new_process(stack: LocalStack, acme: Member) -> None:
    set_policy("acme", enforcement="required")  # the admin has no factor: a finding
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
    # Each new finding is logged as a JSON record that names it, not as a bare message.
    records = [json.loads(line) for line in completed.stderr.splitlines() if line.startswith("{")]
    logged = [record for record in records if record["message"] == "Security finding"]
    assert logged, completed.stderr[-2000:]
    assert all(record["org_id"] and record["finding_id"] for record in logged)


def test_weakened_and_restored_in_one_run(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="required", grace_days=7)
    run_scan(stack, clock)
    set_policy("acme", enforcement="off")
    set_policy("acme", enforcement="required", grace_days=7)

    result = run_scan(stack, clock)

    store = runtime.services().scan_store
    assert store.open_findings("acme", rules.ENFORCEMENT_WEAKENED) == []
    # The hour without enforcement is still reported, and resolved at once.
    [weakened] = [name for name in result["new"] if name.startswith(rules.ENFORCEMENT_WEAKENED)]
    assert weakened in result["resolved"]
    assert finding("acme", weakened).status == "resolved"


def test_failed_run_counts_each_counter_once(
    flow: Flow,
    clock: ManualClock,
    enrolled: Member,
    thresholds: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mfa_core.cso import scan  # noqa: PLC0415 - see LAZY_IMPORTS

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


def test_cli_scan_prints_results(
    clock: ManualClock, acme: Member, capsys: pytest.CaptureFixture[str]
) -> None:
    from mfa_core import cli  # noqa: PLC0415 - see LAZY_IMPORTS

    set_policy("acme", enforcement="required")
    clock.advance(SETTLE)

    assert cli.main(["cso", "scan", "--org-id", "acme"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert [org["org_id"] for org in output["orgs"]] == ["acme"]
    assert not_enrolled_id(acme) in output["orgs"][0]["new"]

    assert cli.main(["cso", "scan", "--org-id", "missing"]) == cli.EXIT_ERROR
    assert "not_found" in capsys.readouterr().err


def test_unusual_hour_found_after_run_failing_past_profiles(  # noqa: PLR0917
    client: Client,
    clock: ManualClock,
    stack: LocalStack,
    acme: Member,
    thresholds: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mfa_core.cso import scan  # noqa: PLC0415 - see LAZY_IMPORTS

    thresholds(cso_profile_min_logins=3)
    for _ in range(3):
        login_from(client, acme, "192.0.2.1")
        clock.advance(60)
    run_scan(stack, clock)
    clock.advance(12 * HOUR)
    login_from(client, acme, "192.0.2.1")
    clock.advance(SETTLE)
    svc = runtime.services()

    def unavailable(*args: object, **kwargs: object) -> None:
        raise DependencyFailed()

    # The run fails after the rules that keep login-hour profiles, before any finding is
    # stored.
    monkeypatch.setattr(svc.scan_store, "get_findings", unavailable)
    assert scan.scan_all(svc, org_id="acme") == []
    monkeypatch.undo()
    [retried] = scan.scan_all(svc, org_id="acme")

    unusual = [
        name for name in retried.as_json()["new"] if name.startswith(rules.UNUSUAL_LOGIN_HOUR)
    ]
    assert len(unusual) == 1
    assert finding("acme", unusual[0]).details["logins_on_record"] == 3
    profiles = svc.scan_store.get_profiles("acme", [acme.user_id])
    assert profiles[acme.user_id].logins == 4


def test_cloned_key_suspected_and_removed_in_one_run(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    record(
        "acme",
        "webauthn.clone_suspected",
        user_id=acme.user_id,
        factor_id="f-key",
        outcome="denied",
        details={"stored_sign_count": 7, "reported_sign_count": 3},
    )
    clock.advance(1)  # event ids of one millisecond are in random order
    record(
        "acme",
        "factor.remove",
        user_id=acme.user_id,
        factor_id="f-key",
        details={"type": "webauthn"},
    )

    result = run_scan(stack, clock)

    clone_id = rules.finding_id(rules.CLONED_KEY, f"user:{acme.user_id}", "factor:f-key")
    assert clone_id in result["new"]
    assert clone_id in result["resolved"]
    assert finding("acme", clone_id).status == "resolved"


def test_reset_requested_and_cancelled_in_one_run(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    member = add_member("acme", "ops@acme.example")
    actor = f"user:{acme.user_id}"
    details = {"reset_id": "r-1", "expires_at": int(clock.now()) + DAY}
    record("acme", "mfa_reset.request", user_id=member.user_id, actor=actor, details=details)
    clock.advance(1)
    record("acme", "mfa_reset.cancel", user_id=member.user_id, actor=actor, details=details)

    result = run_scan(stack, clock)

    reset_id = rules.finding_id(rules.ADMIN_RESET, f"user:{member.user_id}", "reset:r-1")
    assert reset_id in result["resolved"]
    assert finding("acme", reset_id).status == "resolved"


def test_weakened_twice_in_one_run_and_partly_restored(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="required", grace_days=7)
    run_scan(stack, clock)
    hour = rules.hour_of(clock.now())
    set_policy("acme", enforcement="optional")
    clock.advance(1)
    set_policy("acme", enforcement="off")
    clock.advance(1)
    set_policy("acme", enforcement="optional")

    result = run_scan(stack, clock)

    assert rules.hour_of(clock.now()) == hour
    weakened = rules.finding_id(rules.ENFORCEMENT_WEAKENED, "org", hour)
    assert weakened in result["new"]
    assert weakened not in result["resolved"]  # optional is weaker than required
    found = finding("acme", weakened)
    assert found.status == "open"
    assert found.details["before"]["enforcement"] == "required"


def test_weakened_twice_across_runs_of_one_hour(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="required", grace_days=7)
    run_scan(stack, clock)
    hour = rules.hour_of(clock.now())
    weakened = rules.finding_id(rules.ENFORCEMENT_WEAKENED, "org", hour)
    set_policy("acme", enforcement="optional")
    assert weakened in run_scan(stack, clock)["new"]
    set_policy("acme", enforcement="off")
    assert weakened in run_scan(stack, clock)["new"]  # raised to high

    set_policy("acme", enforcement="optional")
    partly = run_scan(stack, clock)

    assert rules.hour_of(clock.now()) == hour
    assert weakened not in partly["resolved"]
    found = finding("acme", weakened)
    assert found.status == "open"
    assert found.details["before"]["enforcement"] == "required"
    assert found.details["after"]["enforcement"] == "off"


def test_weakened_again_and_partly_restored_in_later_run(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="required", grace_days=7)
    run_scan(stack, clock)
    hour = rules.hour_of(clock.now())
    weakened = rules.finding_id(rules.ENFORCEMENT_WEAKENED, "org", hour)
    set_policy("acme", enforcement="optional")
    assert weakened in run_scan(stack, clock)["new"]
    set_policy("acme", enforcement="off")
    clock.advance(1)
    set_policy("acme", enforcement="optional")

    partly = run_scan(stack, clock)

    assert rules.hour_of(clock.now()) == hour
    assert weakened not in partly["resolved"]  # optional is weaker than required
    assert finding("acme", weakened).status == "open"


def test_finding_stored_before_a_failed_write_is_notified(
    clock: ManualClock, stack: LocalStack, acme: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfa_core.cso import scan  # noqa: PLC0415 - see LAZY_IMPORTS

    set_policy("acme", enforcement="required", grace_days=7)
    run_scan(stack, clock)
    set_policy("acme", enforcement="off")
    clock.advance(1)
    set_policy("acme", enforcement="required", grace_days=7)
    clock.advance(SETTLE)
    svc = runtime.services()
    notified: list[str] = []
    publish = scan.notify

    def recorded(svc: Any, findings: list[FindingModel]) -> None:
        notified.extend(finding.finding_id for finding in findings)
        publish(svc, findings)

    def unavailable(*args: object, **kwargs: object) -> None:
        raise DependencyFailed()

    monkeypatch.setattr(scan, "notify", recorded)
    # The weakened finding is stored, then resolving it fails.
    monkeypatch.setattr(svc.scan_store, "resolve_finding", unavailable)
    assert scan.scan_all(svc, org_id="acme") == []
    monkeypatch.undo()
    monkeypatch.setattr(scan, "notify", recorded)
    [retried] = scan.scan_all(svc, org_id="acme")

    weakened = rules.finding_id(rules.ENFORCEMENT_WEAKENED, "org", rules.hour_of(clock.now()))
    assert notified.count(weakened) == 1
    assert weakened in retried.as_json()["resolved"]


@pytest.mark.parametrize("complete_first", [True, False])
def test_completed_reset_stays_open_past_expiry(
    clock: ManualClock, stack: LocalStack, acme: Member, complete_first: bool
) -> None:
    member = add_member("acme", "ops@acme.example")
    svc = runtime.services()
    actor = f"user:{acme.user_id}"
    details = {"reset_id": "r-3", "expires_at": int(clock.now()) + DAY}
    record("acme", "mfa_reset.request", user_id=member.user_id, actor=actor, details=details)
    clock.advance(HOUR)
    # The last approval and the completion share one millisecond, as the reset service
    # records them, so their ids are in either order.
    now = clock.now()
    millisecond = audit.new_event_id(now).partition("-")[0]
    first, last = f"{millisecond}-{'0' * 16}", f"{millisecond}-{'f' * 16}"
    stages = {
        "mfa_reset.approve": last if complete_first else first,
        "mfa_reset.complete": first if complete_first else last,
    }
    for event_type, event_id in stages.items():
        event = audit.event(
            now=now,
            event_type=event_type,
            outcome="success",
            org_id="acme",
            user_id=member.user_id,
            actor=actor,
            context=CONTEXT,
            details={**details, "factors_disabled": 1},
        )
        svc.store.record(dataclasses.replace(event, event_id=event_id))
    reset_id = rules.finding_id(rules.ADMIN_RESET, f"user:{member.user_id}", "reset:r-3")
    run_scan(stack, clock)
    assert finding("acme", reset_id).severity == "high"

    clock.advance(DAY)
    later = run_scan(stack, clock)

    assert reset_id not in later["resolved"]
    completed = finding("acme", reset_id)
    assert completed.status == "open"
    assert completed.details["stage"] == "mfa_reset.complete"
    assert completed.title == "Admins reset a member's MFA"


def test_failed_evidence_pack_written_by_next_run(
    clock: ManualClock, stack: LocalStack, acme: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfa_core.cso import scan  # noqa: PLC0415 - see LAZY_IMPORTS

    clock.advance(DAY - clock.now() % DAY + HOUR)  # the runs below share one UTC day
    svc = runtime.services()

    def unavailable(*args: object, **kwargs: object) -> str:
        raise DependencyFailed("Storing the evidence pack failed.")

    monkeypatch.setattr(svc.evidence_store, "put", unavailable)
    [failed] = scan.scan_all(svc, org_id="acme")
    monkeypatch.undo()
    clock.advance(HOUR)
    [retried] = scan.scan_all(svc, org_id="acme")
    clock.advance(HOUR)
    [same_day] = scan.scan_all(svc, org_id="acme")

    assert failed.evidence_key is None
    assert retried.evidence_key is not None
    assert same_day.evidence_key is None


def test_overlapping_run_does_not_reopen_a_restored_policy(
    clock: ManualClock, stack: LocalStack, acme: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfa_core.cso import scan  # noqa: PLC0415 - see LAZY_IMPORTS
    from mfa_core.store.findings import ScanStore  # noqa: PLC0415 - see LAZY_IMPORTS

    set_policy("acme", enforcement="required", grace_days=7)
    run_scan(stack, clock)
    set_policy("acme", enforcement="off")
    clock.advance(1)
    set_policy("acme", enforcement="required", grace_days=7)
    clock.advance(SETTLE)
    svc = runtime.services()
    started = svc.scan_store.get_state("acme")
    [first] = scan.scan_all(svc, org_id="acme")
    weakened = rules.finding_id(rules.ENFORCEMENT_WEAKENED, "org", rules.hour_of(clock.now()))
    assert weakened in first.as_json()["new"]
    assert weakened in first.as_json()["resolved"]

    # The second run starts from the same position as the first, and its read of the findings
    # returns none, as a read made before the first run stored any.
    monkeypatch.setattr(ScanStore, "get_state", lambda self, org_id: started)
    monkeypatch.setattr(ScanStore, "get_findings", lambda self, org_id, finding_ids: {})
    [second] = scan.scan_all(svc, org_id="acme")

    assert second.events_read == first.events_read
    assert weakened not in second.as_json()["new"]
    assert finding("acme", weakened).status == "resolved"


def test_reopened_weakening_keeps_its_own_baseline(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="optional")
    run_scan(stack, clock)
    hour = rules.hour_of(clock.now())
    weakened = rules.finding_id(rules.ENFORCEMENT_WEAKENED, "org", hour)
    set_policy("acme", enforcement="off")
    assert weakened in run_scan(stack, clock)["new"]
    set_policy("acme", enforcement="required", grace_days=7)
    assert weakened in run_scan(stack, clock)["resolved"]
    set_policy("acme", enforcement="optional")
    assert weakened in run_scan(stack, clock)["new"]  # reopened: required to optional

    set_policy("acme", enforcement="optional", grace_days=5)
    unrelated = run_scan(stack, clock)

    assert rules.hour_of(clock.now()) == hour
    assert weakened not in unrelated["resolved"]
    reopened = finding("acme", weakened)
    assert reopened.status == "open"
    assert reopened.details["before"]["enforcement"] == "required"


def test_weakened_restored_and_weakened_again_in_one_run(
    clock: ManualClock, stack: LocalStack, acme: Member
) -> None:
    set_policy("acme", enforcement="optional")
    run_scan(stack, clock)
    hour = rules.hour_of(clock.now())
    set_policy("acme", enforcement="off")
    clock.advance(1)
    set_policy("acme", enforcement="required", grace_days=7)
    clock.advance(1)
    set_policy("acme", enforcement="optional")

    result = run_scan(stack, clock)

    assert rules.hour_of(clock.now()) == hour
    weakened = rules.finding_id(rules.ENFORCEMENT_WEAKENED, "org", hour)
    assert weakened in result["new"]
    assert weakened not in result["resolved"]  # required to optional is the last change
    found = finding("acme", weakened)
    assert found.status == "open"
    assert found.details["before"]["enforcement"] == "required"
