"""Geographic anomalies at login, located with the embedded database or CloudFront's headers.

The addresses are real ones whose country and network are in the embedded geoip2fast data:
94.23.0.1 (France, OVH), 80.12.0.1 (France, Orange), 81.2.69.142 (Great Britain, Andrews &
Arnold) and 203.2.218.214 (Australia, ABC).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from local.stack import LocalStack
from mfa_core import risk, runtime
from mfa_core.clock import ManualClock
from tests.api.conftest import SOURCE_IP_HEADER
from tests.api.harness import Client, Flow, Member, Reply
from tests.api.test_policy import set_policy
from tests.api.test_webauthn import audit_items

FRANCE_OVH = "94.23.0.1"
FRANCE_ORANGE = "80.12.0.1"
BRITAIN = "81.2.69.142"
AUSTRALIA = "203.2.218.214"
HOUR = 3600


def login_from(client: Client, member: Member, ip: str, **headers: str) -> Reply:
    return client.post(
        "/v1/auth/login",
        {"org_id": member.org_id, "email": member.email, "password": member.password},
        headers={SOURCE_IP_HEADER: ip, **headers},
    )


def anomalies(stack: LocalStack, org_id: str) -> list[dict[str, Any]]:
    return [i for i in audit_items(stack, org_id) if i["event_type"] == "login.anomaly"]


def history(member: Member) -> risk.LoginHistory:
    user = runtime.services().store.get_user(member.org_id, member.user_id)
    assert user is not None
    value: Any = user.login_history
    return risk.LoginHistory.from_item(value.as_dict() if value is not None else None)


def test_first_login_sets_the_baseline_without_signals(
    client: Client, acme: Member, stack: LocalStack
) -> None:
    reply = login_from(client, acme, FRANCE_OVH)
    assert reply.status == 200, reply.text
    assert anomalies(stack, "acme") == []
    assert history(acme).countries == ("FR",)


def test_new_network_in_the_same_country_is_flagged(
    client: Client, clock: ManualClock, acme: Member, stack: LocalStack
) -> None:
    login_from(client, acme, FRANCE_OVH)
    clock.advance(HOUR)
    reply = login_from(client, acme, FRANCE_ORANGE)
    assert reply.status == 200
    assert reply.body["status"] == "authenticated"
    [event] = anomalies(stack, "acme")
    assert event["details"]["signals"] == ["new_asn"]
    assert event["details"]["country"] == "FR"
    assert event["outcome"] == "success"


def test_new_country_is_flagged_once(
    client: Client, clock: ManualClock, acme: Member, stack: LocalStack
) -> None:
    login_from(client, acme, FRANCE_OVH)
    clock.advance(5 * HOUR)
    login_from(client, acme, BRITAIN)
    [event] = anomalies(stack, "acme")
    assert event["details"]["signals"] == ["new_country", "new_asn"]
    assert event["details"]["country"] == "GB"

    clock.advance(HOUR)
    login_from(client, acme, BRITAIN)
    assert len(anomalies(stack, "acme")) == 1


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        (2, ["new_country", "impossible_travel", "new_asn"]),
        (30, ["new_country", "new_asn"]),
    ],
)
def test_impossible_travel_depends_on_the_time_between_logins(
    *,
    client: Client,
    clock: ManualClock,
    acme: Member,
    stack: LocalStack,
    hours: int,
    expected: list[str],
) -> None:
    login_from(client, acme, FRANCE_OVH)
    clock.advance(hours * HOUR)
    login_from(client, acme, AUSTRALIA)
    [event] = anomalies(stack, "acme")
    assert event["details"]["signals"] == expected


def test_cloudfront_headers_are_preferred_to_the_address(
    client: Client, clock: ManualClock, acme: Member, stack: LocalStack
) -> None:
    login_from(client, acme, FRANCE_OVH)
    clock.advance(2 * HOUR)
    sydney = {
        "CloudFront-Viewer-Country": "AU",
        "CloudFront-Viewer-Latitude": "-33.86880",
        "CloudFront-Viewer-Longitude": "151.20930",
    }
    login_from(client, acme, FRANCE_OVH, **sydney)
    [event] = anomalies(stack, "acme")
    assert event["details"]["country"] == "AU"
    assert "impossible_travel" in event["details"]["signals"]


def test_step_up_action_asks_for_mfa_where_login_would_skip_it(
    client: Client, flow: Flow, clock: ManualClock, enrolled: Member
) -> None:
    set_policy("acme", reauthentication="sensitive_only", geo_anomaly_action="step_up")
    usual = login_from(client, enrolled, FRANCE_OVH)
    assert usual.body["status"] == "authenticated"
    clock.advance(2 * HOUR)
    unusual = login_from(client, enrolled, AUSTRALIA)
    assert unusual.body["status"] == "mfa_required"
    assert unusual.body["reason"] == "unusual_sign_in"


def test_history_records_an_mfa_login_only_once_mfa_passes(
    client: Client, flow: Flow, clock: ManualClock, enrolled: Member, stack: LocalStack
) -> None:
    set_policy("acme", enforcement="required")
    first = login_from(client, enrolled, FRANCE_OVH).body
    flow.next_step()
    assert flow.verify(enrolled, first["mfa_token"]).status == 200
    assert history(enrolled).countries == ("FR",)

    clock.advance(6 * HOUR)
    abandoned = login_from(client, enrolled, BRITAIN)
    assert abandoned.body["status"] == "mfa_required"
    assert history(enrolled).countries == ("FR",)
    again = login_from(client, enrolled, BRITAIN).body
    assert len(anomalies(stack, "acme")) == 2
    flow.next_step()
    assert flow.verify(enrolled, again["mfa_token"]).status == 200
    assert set(history(enrolled).countries) == {"FR", "GB"}


def test_block_action_denies_audits_and_notifies(
    client: Client, clock: ManualClock, acme: Member, stack: LocalStack
) -> None:
    topic_arn = runtime.services().settings.security_topic_arn
    assert topic_arn is not None
    sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint_url, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="security-notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns = boto3.client("sns", endpoint_url=stack.aws_endpoint_url, region_name="us-east-1")
    subscription = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    try:
        set_policy("acme", enforcement="optional", geo_anomaly_action="block")
        assert login_from(client, acme, FRANCE_OVH).status == 200
        clock.advance(2 * HOUR)
        blocked = login_from(client, acme, AUSTRALIA)
        assert blocked.status == 403
        assert blocked.body["code"] == "login_blocked"
        [event] = anomalies(stack, "acme")
        assert event["outcome"] == "denied"
        assert event["details"]["action"] == "block"
        assert history(acme).countries == ("FR",)

        messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
        notification = json.loads(json.loads(messages[0]["Body"])["Message"])
        assert notification["kind"] == "login.blocked"
        assert notification["user_id"] == acme.user_id
        assert notification["country"] == "AU"
        assert "impossible_travel" in notification["signals"]
    finally:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
        sqs.delete_queue(QueueUrl=queue_url)


def test_private_addresses_give_no_signals(
    client: Client, clock: ManualClock, acme: Member, stack: LocalStack
) -> None:
    login_from(client, acme, FRANCE_OVH)
    clock.advance(HOUR)
    assert login_from(client, acme, "10.1.2.3").status == 200
    assert login_from(client, acme, "::1").status == 200
    assert anomalies(stack, "acme") == []
    assert history(acme).countries == ("FR",)
