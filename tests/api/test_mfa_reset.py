"""Supervised MFA reset: request, second-admin approval, and the one-time recovery code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from local.stack import LocalStack
from mfa_core import members, runtime
from mfa_core.clock import ManualClock
from tests.api.conftest import add_member, add_org
from tests.api.harness import Client, Flow, Member, Reply
from tests.api.test_audit_and_logs import _contains, captured_logs
from tests.api.test_policy import fresh_mfa_token, set_policy
from tests.api.test_webauthn import audit_items

RESETS = "/v1/orgs/acme/mfa-resets"
VERIFICATION = {"method": "video_call", "reference": "ticket-4711", "verified_by": "J. Doe"}


@dataclass
class Org:
    requester: Member
    approver: Member
    target: Member


def _enroll(flow: Flow, member: Member) -> None:
    token = flow.login_ok(member, "authenticated")["access_token"]
    flow.enroll(member, token)


@pytest.fixture
def org(client: Client, flow: Flow) -> Org:
    """Two admins and an operator of acme, each with an active TOTP factor."""
    requester = add_org("acme")
    approver = add_member("acme", "second@acme.example", role="admin")
    target = add_member("acme", "target@acme.example")
    for member in (requester, approver, target):
        _enroll(flow, member)
    return Org(requester, approver, target)


def request_reset(client: Client, token: str, user_id: str, **changes: Any) -> Reply:
    body: dict[str, Any] = {
        "user_id": user_id,
        "reason": "Lost phone",
        "verification": VERIFICATION,
    }
    body.update(changes)
    return client.post(RESETS, body, token=token)


def approve(client: Client, token: str, reset_id: str) -> Reply:
    return client.post(f"{RESETS}/{reset_id}/approve", {}, token=token)


def recovery_login(client: Client, member: Member, code: str) -> Reply:
    return client.post(
        "/v1/auth/login",
        {
            "org_id": member.org_id,
            "email": member.email,
            "password": member.password,
            "recovery_code": code,
        },
    )


def event_types(stack: LocalStack) -> list[str]:
    return [item["event_type"] for item in audit_items(stack, "acme")]


@pytest.fixture
def notifications(stack: LocalStack) -> Iterator[Any]:
    """An SQS queue subscribed to the security topic; yields a function that reads it."""
    topic_arn = runtime.services().settings.security_topic_arn
    assert topic_arn is not None
    sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint_url, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="reset-notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns = boto3.client("sns", endpoint_url=stack.aws_endpoint_url, region_name="us-east-1")
    subscription = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)

    def read() -> list[dict[str, Any]]:
        reply = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10)
        return [json.loads(json.loads(m["Body"])["Message"]) for m in reply.get("Messages", [])]

    try:
        yield read
    finally:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
        sqs.delete_queue(QueueUrl=queue_url)


def test_reset_needs_second_admin(
    client: Client, flow: Flow, org: Org, stack: LocalStack, notifications: Any
) -> None:
    requester_token = fresh_mfa_token(flow, org.requester)
    target_login = flow.verify(org.target, flow.mfa_token(org.target)).body
    requested = request_reset(client, requester_token, org.target.user_id)
    assert requested.status == 201, requested.text
    assert requested.body["status"] == "pending"
    assert requested.body["required_approvals"] == 1
    assert requested.body["verification"] == VERIFICATION
    assert "recovery_code" not in requested.body
    reset_id = requested.body["reset_id"]

    own = approve(client, requester_token, reset_id)
    assert own.status == 403, own.text

    approved = approve(client, fresh_mfa_token(flow, org.approver), reset_id)
    assert approved.status == 200, approved.text
    assert approved.body["status"] == "completed"
    assert approved.body["approvals"] == [org.approver.user_id]
    code = approved.body["recovery_code"]

    refresh = client.post("/v1/auth/refresh", {"refresh_token": target_login["refresh_token"]})
    assert refresh.status == 401, refresh.text

    login = recovery_login(client, org.target, code)
    assert login.status == 200, login.text
    assert login.body["status"] == "enrollment_required"
    assert login.body["allowed_methods"] == ["totp", "webauthn"]
    again = recovery_login(client, org.target, code)
    assert again.status == 401, again.text

    user = runtime.services().store.get_user("acme", org.target.user_id)
    assert user is not None
    assert user.factor_summaries() == {}
    factor = runtime.services().store.get_factor(
        "acme", org.target.user_id, org.target.factor_id or ""
    )
    assert factor is not None
    assert factor.status == "disabled"
    codes = runtime.services().store.get_factor("acme", org.target.user_id, "backup_codes")
    assert codes is not None
    assert codes.status == "disabled"

    types = event_types(stack)
    for expected in ("mfa_reset.request", "mfa_reset.approve", "mfa_reset.complete"):
        assert expected in types
    # Both events carry the same clock time, so their order in the table is not fixed.
    outcomes = sorted(
        item["outcome"]
        for item in audit_items(stack, "acme")
        if item["event_type"] == "login.recovery_code"
    )
    assert outcomes == ["failure", "success"]

    [notification] = [n for n in notifications() if n["kind"] == "mfa.reset"]
    assert notification["user_id"] == org.target.user_id
    assert notification["reset_id"] == reset_id


def test_enrollment_token_from_recovery_enrolls(client: Client, flow: Flow, org: Org) -> None:
    token = fresh_mfa_token(flow, org.requester)
    reset_id = request_reset(client, token, org.target.user_id).body["reset_id"]
    code = approve(client, fresh_mfa_token(flow, org.approver), reset_id).body["recovery_code"]
    enrollment = recovery_login(client, org.target, code).body["enrollment_token"]
    flow.enroll(org.target, enrollment)
    flow.next_step()
    assert flow.login_ok(org.target, "mfa_required")["factors"][0]["type"] == "totp"


def test_single_admin_reset_completes_at_once(client: Client, flow: Flow) -> None:
    admin = add_org("acme")
    target = add_member("acme", "target@acme.example")
    _enroll(flow, admin)
    requested = request_reset(client, fresh_mfa_token(flow, admin), target.user_id)
    assert requested.status == 201, requested.text
    assert requested.body["status"] == "completed"
    assert requested.body["required_approvals"] == 0
    assert requested.body["approvals"] == []
    assert recovery_login(client, target, requested.body["recovery_code"]).status == 200


def test_policy_approvals_need_enough_admins(client: Client, flow: Flow, org: Org) -> None:
    set_policy("acme", enforcement="optional", reset_approvals=2)
    reply = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id)
    assert reply.status == 409, reply.text


def test_self_reset_is_forbidden(client: Client, flow: Flow, org: Org) -> None:
    reply = request_reset(client, fresh_mfa_token(flow, org.requester), org.requester.user_id)
    assert reply.status == 403, reply.text


def test_other_org_user_is_not_found(client: Client, flow: Flow, org: Org) -> None:
    outsider = add_org("globex")
    token = fresh_mfa_token(flow, org.requester)
    assert request_reset(client, token, outsider.user_id).status == 404
    other_org = client.post(
        "/v1/orgs/globex/mfa-resets",
        {"user_id": outsider.user_id, "reason": "x", "verification": VERIFICATION},
        token=token,
    )
    assert other_org.status == 404, other_org.text


def test_request_needs_fresh_mfa(client: Client, flow: Flow, org: Org) -> None:
    token = fresh_mfa_token(flow, org.requester)
    flow.clock.advance(301)
    reply = request_reset(client, token, org.target.user_id)
    assert reply.status == 403, reply.text
    assert reply.body["code"] == "step_up_required"


def test_non_admin_cannot_request(client: Client, flow: Flow, org: Org) -> None:
    reply = request_reset(client, fresh_mfa_token(flow, org.target), org.approver.user_id)
    assert reply.status == 403, reply.text


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"verification": {**VERIFICATION, "method": "phone_call"}}, "verification.method"),
        ({"verification": {"method": "id_document", "verified_by": "x"}}, "verification.reference"),
        ({"verification": "yes"}, "verification"),
        ({"reason": " "}, "reason"),
        ({"cooling_off_minutes": 1441}, "cooling_off_minutes"),
        ({"cooling_off_minutes": "5"}, "cooling_off_minutes"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_request_names_field(
    client: Client, flow: Flow, org: Org, changes: dict[str, Any], field: str
) -> None:
    reply = request_reset(
        client, fresh_mfa_token(flow, org.requester), org.target.user_id, **changes
    )
    assert reply.status == 400, reply.text
    assert field in reply.text


def test_request_expires_after_a_day(
    client: Client, flow: Flow, clock: ManualClock, org: Org, stack: LocalStack
) -> None:
    reset_id = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id).body[
        "reset_id"
    ]
    clock.advance(24 * 3600)
    reply = approve(client, fresh_mfa_token(flow, org.approver), reset_id)
    assert reply.status == 409, reply.text
    assert "mfa_reset.expire" in event_types(stack)
    listed = client.get(RESETS, token=fresh_mfa_token(flow, org.requester))
    assert listed.body["resets"][0]["status"] == "expired"


def test_cooling_off_delays_approval(
    client: Client, flow: Flow, clock: ManualClock, org: Org
) -> None:
    requested = request_reset(
        client, fresh_mfa_token(flow, org.requester), org.target.user_id, cooling_off_minutes=30
    )
    reset_id = requested.body["reset_id"]
    early = approve(client, fresh_mfa_token(flow, org.approver), reset_id)
    assert early.status == 409, early.text
    clock.advance(30 * 60)
    later = approve(client, fresh_mfa_token(flow, org.approver), reset_id)
    assert later.status == 200, later.text


def test_cancelled_reset_cannot_be_approved(
    client: Client, flow: Flow, org: Org, stack: LocalStack
) -> None:
    token = fresh_mfa_token(flow, org.requester)
    reset_id = request_reset(client, token, org.target.user_id).body["reset_id"]
    cancelled = client.post(f"{RESETS}/{reset_id}/cancel", {}, token=token)
    assert cancelled.status == 200, cancelled.text
    assert cancelled.body["status"] == "cancelled"
    reply = approve(client, fresh_mfa_token(flow, org.approver), reset_id)
    assert reply.status == 409, reply.text
    assert "mfa_reset.cancel" in event_types(stack)
    user = runtime.services().store.get_user("acme", org.target.user_id)
    assert user is not None
    assert user.factor_summaries() != {}


def test_list_is_newest_first_for_admins(
    client: Client, flow: Flow, clock: ManualClock, org: Org
) -> None:
    token = fresh_mfa_token(flow, org.requester)
    first = request_reset(client, token, org.target.user_id).body["reset_id"]
    clock.advance(5)
    second = request_reset(client, token, org.target.user_id).body["reset_id"]
    listed = client.get(RESETS, token=token)
    assert listed.status == 200, listed.text
    assert [r["reset_id"] for r in listed.body["resets"]] == [second, first]
    operator = fresh_mfa_token(flow, org.target)
    assert client.get(RESETS, token=operator).status == 403


def test_dashboard_shows_pending_recovery(client: Client, flow: Flow, org: Org) -> None:
    token = fresh_mfa_token(flow, org.requester)
    reset_id = request_reset(client, token, org.target.user_id).body["reset_id"]
    code = approve(client, fresh_mfa_token(flow, org.approver), reset_id).body["recovery_code"]

    def target_status() -> str:
        reply = client.get("/v1/orgs/acme/mfa-status", token=fresh_mfa_token(flow, org.requester))
        assert reply.status == 200, reply.text
        [member] = [m for m in reply.body["members"] if m["user_id"] == org.target.user_id]
        return str(member["status"])

    assert target_status() == "recovery_pending"
    assert recovery_login(client, org.target, code).status == 200
    assert target_status() != "recovery_pending"


def test_list_pages_through_every_reset(
    client: Client, flow: Flow, clock: ManualClock, org: Org
) -> None:
    token = fresh_mfa_token(flow, org.requester)
    created = []
    for _ in range(5):
        created.append(request_reset(client, token, org.target.user_id).body["reset_id"])
        clock.advance(1)

    listed: list[str] = []
    query = "?limit=2"
    while True:
        page = client.get(RESETS + query, token=token)
        assert page.status == 200, page.text
        assert len(page.body["resets"]) <= 2
        listed.extend(reset["reset_id"] for reset in page.body["resets"])
        if page.body["next"] is None:
            break
        query = f"?limit=2&next={page.body['next']}"

    assert listed == created[::-1]


@pytest.mark.parametrize(
    ("query", "field"), [("?limit=0", "limit"), ("?limit=101", "limit"), ("?next=x", "next")]
)
def test_list_rejects_bad_page_parameters(
    client: Client, flow: Flow, org: Org, query: str, field: str
) -> None:
    reply = client.get(RESETS + query, token=fresh_mfa_token(flow, org.requester))

    assert reply.status == 400, reply.text
    assert reply.body["field"] == field


def test_recovery_code_wins_once_under_concurrency(client: Client, flow: Flow, org: Org) -> None:
    token = fresh_mfa_token(flow, org.requester)
    reset_id = request_reset(client, token, org.target.user_id).body["reset_id"]
    code = approve(client, fresh_mfa_token(flow, org.approver), reset_id).body["recovery_code"]
    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda _: recovery_login(client, org.target, code), range(10)))
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [200] + [401] * 9


def test_wrong_recovery_code_counts_toward_lockout(client: Client, flow: Flow, org: Org) -> None:
    reply = recovery_login(client, org.target, "AAAAA-AAAAA-AAAAA-AAAAA")
    assert reply.status == 401, reply.text
    user = runtime.services().store.get_user("acme", org.target.user_id)
    assert user is not None
    assert user.failed_count == 1


def test_reset_ends_authorizer_access(
    client: Client, flow: Flow, clock: ManualClock, org: Org
) -> None:
    flow.next_step()
    target_access = flow.verify(org.target, flow.mfa_token(org.target)).body["access_token"]
    config = "/v1/agents/a1/config"
    assert client.request("PUT", config, json_body={}, token=target_access).status == 200
    reset_id = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id).body[
        "reset_id"
    ]
    assert approve(client, fresh_mfa_token(flow, org.approver), reset_id).status == 200
    clock.advance(11)
    assert client.request("PUT", config, json_body={}, token=target_access).status == 403


def test_reset_voids_remember_device_token(client: Client, flow: Flow, org: Org) -> None:
    set_policy("acme", enforcement="optional", reauthentication="every_24h")
    device = "device-0123456789abcdef"
    body = {
        "org_id": "acme",
        "email": org.target.email,
        "password": org.target.password,
        "device_id": device,
    }
    flow.next_step()
    verified = flow.verify(org.target, client.post("/v1/auth/login", body).body["mfa_token"])
    remember_token = verified.body["remember_device_token"]

    reset_id = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id).body[
        "reset_id"
    ]
    code = approve(client, fresh_mfa_token(flow, org.approver), reset_id).body["recovery_code"]
    enrollment = recovery_login(client, org.target, code).body["enrollment_token"]
    flow.enroll(org.target, enrollment)
    flow.next_step()

    again = client.post("/v1/auth/login", {**body, "remember_device_token": remember_token})
    assert again.status == 200, again.text
    assert again.body["status"] == "mfa_required"


def test_policy_can_require_two_approvals(client: Client, flow: Flow, org: Org) -> None:
    third = add_member("acme", "third@acme.example", role="admin")
    _enroll(flow, third)
    set_policy("acme", enforcement="optional", reset_approvals=2)
    requested = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id)
    assert requested.status == 201, requested.text
    assert requested.body["required_approvals"] == 2
    reset_id = requested.body["reset_id"]

    approver_token = fresh_mfa_token(flow, org.approver)
    first = approve(client, approver_token, reset_id)
    assert first.status == 200, first.text
    assert first.body["status"] == "pending"
    assert "recovery_code" not in first.body
    assert approve(client, approver_token, reset_id).status == 403

    second = approve(client, fresh_mfa_token(flow, third), reset_id)
    assert second.status == 200, second.text
    assert second.body["status"] == "completed"
    assert second.body["approvals"] == [org.approver.user_id, third.user_id]
    assert "recovery_code" in second.body


def test_recovery_code_not_in_logs_or_tables(
    client: Client, flow: Flow, org: Org, stack: LocalStack
) -> None:
    with captured_logs() as stream:
        token = fresh_mfa_token(flow, org.requester)
        reset_id = request_reset(client, token, org.target.user_id).body["reset_id"]
        code = approve(client, fresh_mfa_token(flow, org.approver), reset_id).body["recovery_code"]
        assert recovery_login(client, org.target, code).status == 200
    logs = stream.getvalue()
    assert '"message":"MFA reset completed"' in logs  # the capture works
    for form in (code, code.replace("-", "")):
        assert not _contains(logs, form)
        dynamodb = boto3.client("dynamodb", endpoint_url=stack.aws_endpoint_url)
        for table in stack.table_names.values():
            dump = str(dynamodb.scan(TableName=table)["Items"])
            assert not _contains(dump, form), f"recovery code found in {table}"


def test_password_alone_cannot_enroll_after_a_reset(
    client: Client, flow: Flow, org: Org, stack: LocalStack
) -> None:
    set_policy("acme", enforcement="optional")
    token = fresh_mfa_token(flow, org.requester)
    reset_id = request_reset(client, token, org.target.user_id).body["reset_id"]
    code = approve(client, fresh_mfa_token(flow, org.approver), reset_id).body["recovery_code"]
    refused = flow.login(org.target)
    assert refused.status == 401
    assert refused.body["code"] == "recovery_code_required"
    denied = [
        item.get("reason")
        for item in audit_items(stack, "acme")
        if item["event_type"] == "login.password" and item["outcome"] == "denied"
    ]
    assert denied == ["recovery_code_required"]
    assert recovery_login(client, org.target, code).status == 200
    # Once the code is used, the password alone works again as the policy allows.
    assert flow.login(org.target).status == 200


def _factors_intact(member: Member) -> bool:
    user = runtime.services().store.get_user("acme", member.user_id)
    assert user is not None
    return user.factor_summaries() != {} and not user.recovery_required


def _change_member(client: Client, token: str, member: Member, body: dict[str, Any]) -> Reply:
    return client.request(
        "PATCH", f"/v1/orgs/acme/users/{member.user_id}", json_body=body, token=token
    )


def test_disabled_requester_voids_reset(client: Client, flow: Flow, org: Org) -> None:
    third = add_member("acme", "third@acme.example", role="admin")
    _enroll(flow, third)
    reset_id = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id).body[
        "reset_id"
    ]
    disabled = _change_member(
        client, fresh_mfa_token(flow, third), org.requester, {"status": "disabled"}
    )
    assert disabled.status == 200, disabled.text

    reply = approve(client, fresh_mfa_token(flow, org.approver), reset_id)
    assert reply.status == 409, reply.text
    assert "no longer an active admin" in reply.body["detail"]
    assert _factors_intact(org.target)


def test_demoted_approver_no_longer_counts(client: Client, flow: Flow, org: Org) -> None:
    third = add_member("acme", "third@acme.example", role="admin")
    _enroll(flow, third)
    set_policy("acme", enforcement="optional", reset_approvals=2)
    reset_id = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id).body[
        "reset_id"
    ]
    first = approve(client, fresh_mfa_token(flow, org.approver), reset_id)
    assert first.status == 200, first.text
    demoted = _change_member(
        client, fresh_mfa_token(flow, org.requester), org.approver, {"role": "operator"}
    )
    assert demoted.status == 200, demoted.text

    reply = approve(client, fresh_mfa_token(flow, third), reset_id)
    assert reply.status == 409, reply.text
    assert _factors_intact(org.target)


def test_approval_loses_to_concurrent_demotion(
    client: Client, flow: Flow, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_id = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id).body[
        "reset_id"
    ]
    approver_token = fresh_mfa_token(flow, org.approver)
    require_admin = members.require_admin

    def demoted_after_the_check(*args: Any, **kwargs: Any) -> Any:
        # Another admin demotes the approver between the role check and the write.
        admin = require_admin(*args, **kwargs)
        store = runtime.services().store
        current = store.get_user("acme", admin.user_id)
        assert current is not None
        store.update_member(current, role="operator", status=None, now=flow.clock.now(), events=[])
        return admin

    monkeypatch.setattr(members, "require_admin", demoted_after_the_check)
    reply = approve(client, approver_token, reset_id)
    assert reply.status == 409, reply.text
    assert _factors_intact(org.target)


def test_reset_fits_many_factors_and_sessions(client: Client, flow: Flow, org: Org) -> None:
    # Disabling 17 active factors (16 TOTP and the backup codes) and ending 41 sessions takes
    # more items than one DynamoDB transaction holds.
    token = fresh_mfa_token(flow, org.target)
    for number in range(15):
        added = client.post("/v1/me/factors/totp", {"label": f"Phone {number}"}, token=token)
        assert added.status == 201, added.text
        confirmed = client.post(
            f"/v1/me/factors/totp/{added.body['factor_id']}/confirm",
            {"code": flow.code(added.body["secret"])},
            token=token,
        )
        assert confirmed.status == 200, confirmed.text
    set_policy("acme", enforcement="optional", reauthentication="sensitive_only")
    refresh_tokens = [
        flow.login_ok(org.target, "authenticated")["refresh_token"] for _ in range(40)
    ]
    set_policy("acme", enforcement="optional")

    reset_id = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id).body[
        "reset_id"
    ]
    reply = approve(client, fresh_mfa_token(flow, org.approver), reset_id)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "completed"
    factors = runtime.services().store.list_factors("acme", org.target.user_id)
    assert [f.factor_id for f in factors if f.status == "active"] == []
    for refresh_token in (refresh_tokens[0], refresh_tokens[-1]):
        refresh = client.post("/v1/auth/refresh", {"refresh_token": refresh_token})
        assert refresh.status == 401, refresh.text


def test_reset_admin_cannot_cancel_own_reset(client: Client, flow: Flow, org: Org) -> None:
    target = add_member("acme", "third@acme.example", role="admin")
    _enroll(flow, target)
    reset_id = request_reset(client, fresh_mfa_token(flow, org.requester), target.user_id).body[
        "reset_id"
    ]
    cancelled = client.post(f"{RESETS}/{reset_id}/cancel", {}, token=fresh_mfa_token(flow, target))
    assert cancelled.status == 403, cancelled.text

    approved = approve(client, fresh_mfa_token(flow, org.approver), reset_id)
    assert approved.status == 200, approved.text
    assert approved.body["status"] == "completed"


def test_later_reset_voids_earlier_code(
    client: Client, flow: Flow, clock: ManualClock, org: Org
) -> None:
    first_id = request_reset(client, fresh_mfa_token(flow, org.requester), org.target.user_id).body[
        "reset_id"
    ]
    first_code = approve(client, fresh_mfa_token(flow, org.approver), first_id).body[
        "recovery_code"
    ]
    clock.advance(60)
    second_id = request_reset(
        client, fresh_mfa_token(flow, org.requester), org.target.user_id
    ).body["reset_id"]
    second_code = approve(client, fresh_mfa_token(flow, org.approver), second_id).body[
        "recovery_code"
    ]

    stale = recovery_login(client, org.target, first_code)
    assert stale.status == 401, stale.text
    current = recovery_login(client, org.target, second_code)
    assert current.status == 200, current.text


def test_stale_reset_cannot_undo_a_recovery(
    client: Client, flow: Flow, clock: ManualClock, org: Org
) -> None:
    token = fresh_mfa_token(flow, org.requester)
    first = request_reset(client, token, org.target.user_id).body["reset_id"]
    stale = request_reset(client, token, org.target.user_id).body["reset_id"]
    code = approve(client, fresh_mfa_token(flow, org.approver), first).body["recovery_code"]
    clock.advance(60)
    recovered = recovery_login(client, org.target, code)
    assert recovered.status == 200, recovered.text
    enrollment = recovered.body["enrollment_token"]
    flow.enroll(org.target, enrollment)

    reply = approve(client, fresh_mfa_token(flow, org.approver), stale)

    assert reply.status == 409, reply.text
    assert "Another reset" in reply.body["detail"]
    user = runtime.services().store.get_user("acme", org.target.user_id)
    assert user is not None
    assert user.factor_summaries() != {}


def test_reset_audit_names_record_and_approver(
    client: Client, flow: Flow, org: Org, stack: LocalStack
) -> None:
    fresh_mfa_token(flow, org.target)
    token = fresh_mfa_token(flow, org.requester)
    requested_reply = request_reset(client, token, org.target.user_id)
    reset_id = requested_reply.body["reset_id"]
    assert approve(client, fresh_mfa_token(flow, org.approver), reset_id).status == 200

    items = audit_items(stack, "acme")
    [requested] = [item for item in items if item["event_type"] == "mfa_reset.request"]
    assert requested["details"]["reason"] == "Lost phone"
    assert requested["details"]["verification"] == VERIFICATION
    # The security scan resolves a request left to expire by this time.
    assert requested["details"]["expires_at"] == requested_reply.body["expires_at"]
    revoked = [
        item
        for item in items
        if item["event_type"] == "session.revoke" and item.get("reason") == "mfa_reset"
    ]
    assert revoked
    assert {item["actor"] for item in revoked} == {f"user:{org.approver.user_id}"}


def test_overlong_reset_id_is_not_found(client: Client, flow: Flow, org: Org) -> None:
    reply = approve(client, fresh_mfa_token(flow, org.approver), "1" * 2000)

    assert reply.status == 404, reply.text
