"""SMS codes over HTTP against moto's SNS: enrollment, login, every limit, and failures.

moto keeps each SMS it is asked to send; the tests read them back from its backend, which runs
in this process.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError
from jose import jwt
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sns.models import sns_backends

from local.stack import LocalStack
from mfa_core import cli, policy, runtime
from tests.api.conftest import START, add_member
from tests.api.harness import Client, Flow, Member, Reply
from tests.api.test_audit_and_logs import captured_logs
from tests.api.test_webauthn import audit_items, audited

PHONE = "+447400123456"  # a United Kingdom mobile number reserved for examples
OTHER_PHONE = "+4915123456789"  # a German one
MASKED = "+" + "*" * 10 + "56"
CODE = re.compile(r"code: (\d{6})\.")


def sent() -> list[tuple[str, str]]:
    """Return every SMS moto has accepted so far, oldest first, as (number, text)."""
    return list(sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sms_messages.values())


def last_code(number: str = PHONE) -> str:
    texts = [text for to, text in sent() if to == number]
    match = CODE.search(texts[-1])
    assert match is not None, texts[-1]
    return match.group(1)


@pytest.fixture(autouse=True)
def _empty_outbox() -> None:
    sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sms_messages.clear()


def enroll_phone(flow: Flow, member: Member, number: str = PHONE) -> tuple[str, str]:
    """Give the member TOTP, then a confirmed phone; return a fresh access token and its id."""
    access = flow.login_ok(member, "authenticated")["access_token"]
    flow.enroll(member, access)
    flow.next_step()
    access = flow.verify(member, flow.mfa_token(member)).body["access_token"]
    reply = flow.client.post("/v1/me/factors/sms", {"phone_number": number}, token=access)
    assert reply.status == 201, reply.text
    factor_id: str = reply.body["factor_id"]
    confirm = flow.client.post(
        f"/v1/me/factors/sms/{factor_id}/confirm", {"code": last_code(number)}, token=access
    )
    assert confirm.status == 200, confirm.text
    return access, factor_id


def send_code(flow: Flow, token: str, factor_id: str) -> Reply:
    return flow.client.post("/v1/auth/mfa/challenge", {"factor_id": factor_id}, token=token)


def verify_code(flow: Flow, token: str, factor_id: str, code: str, challenge: str) -> Reply:
    return flow.client.post(
        "/v1/auth/mfa/verify",
        {"factor_id": factor_id, "code": code, "challenge_id": challenge},
        token=token,
    )


def test_phone_enrolls_and_signs_in(client: Client, flow: Flow, acme: Member) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    flow.enroll(acme, access)
    flow.next_step()
    access = flow.verify(acme, flow.mfa_token(acme)).body["access_token"]
    reply = client.post("/v1/me/factors/sms", {"phone_number": PHONE}, token=access)
    assert reply.status == 201, reply.text
    assert reply.body["phone_number"] == PHONE  # the owner's enrollment shows it whole
    assert [to for to, _ in sent()] == [PHONE]
    confirm = client.post(
        f"/v1/me/factors/sms/{reply.body['factor_id']}/confirm",
        {"code": last_code()},
        token=access,
    )
    assert confirm.status == 200, confirm.text
    assert confirm.body["phone_number"] == MASKED

    flow.clock.advance(31)
    mfa_token = flow.mfa_token(acme)
    challenge = send_code(flow, mfa_token, reply.body["factor_id"])
    assert challenge.status == 200, challenge.text
    assert challenge.body["phone_number"] == MASKED
    login = verify_code(
        flow, mfa_token, reply.body["factor_id"], last_code(), challenge.body["challenge_id"]
    )
    assert login.status == 200, login.text
    claims = jwt.get_unverified_claims(login.body["access_token"])
    assert (claims["acr"], claims["amr"]) == ("aal2", ["pwd", "sms", "mfa"])


def test_sms_cannot_be_the_only_factor_by_default(client: Client, flow: Flow, acme: Member) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    refused = client.post("/v1/me/factors/sms", {"phone_number": PHONE}, token=access)
    assert refused.status == 409
    assert "fallback" in refused.body["detail"]
    assert sent() == []
    policy.set_sms_policy(runtime.services(), org_id="acme", fallback_only=False)
    reply = client.post("/v1/me/factors/sms", {"phone_number": PHONE}, token=access)
    assert reply.status == 201, reply.text
    confirm = client.post(
        f"/v1/me/factors/sms/{reply.body['factor_id']}/confirm",
        {"code": last_code()},
        token=access,
    )
    assert confirm.status == 200, confirm.text


def test_second_send_within_thirty_seconds_is_throttled(
    flow: Flow, acme: Member, stack: LocalStack
) -> None:
    _, factor_id = enroll_phone(flow, acme)
    flow.clock.advance(31)
    mfa_token = flow.mfa_token(acme)
    assert send_code(flow, mfa_token, factor_id).status == 200
    count = len(sent())
    throttled = send_code(flow, mfa_token, factor_id)
    assert throttled.status == 429
    assert throttled.body["limit"] == "user_cooldown"
    assert 1 <= int(throttled.headers["retry-after"]) <= 30
    assert len(sent()) == count
    assert ("denied", "limit_user_cooldown") in audited(stack, "acme", "sms.send")


def test_five_sends_an_hour_per_user(flow: Flow, acme: Member) -> None:
    _, factor_id = enroll_phone(flow, acme)  # the enrollment code is the first of the hour
    statuses = []
    for _ in range(6):
        flow.clock.advance(31)
        statuses.append(send_code(flow, flow.mfa_token(acme), factor_id).status)
    # The tests' clock starts on the hour, so all seven sends fall in one hourly window.
    assert int(flow.clock.now()) // 3600 == START // 3600
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_ten_sends_a_day_per_phone_number(client: Client, flow: Flow, acme: Member) -> None:
    policy.set_sms_policy(runtime.services(), org_id="acme", fallback_only=False)
    statuses = []
    for index in range(11):
        member = add_member("acme", f"user{index}@acme.example")
        access = flow.login_ok(member, "authenticated")["access_token"]
        reply = client.post("/v1/me/factors/sms", {"phone_number": PHONE}, token=access)
        statuses.append(reply.status)
    assert statuses == [201] * 10 + [429]
    assert len(sent()) == 10


def test_org_daily_cap(client: Client, flow: Flow, acme: Member) -> None:
    policy.set_sms_policy(runtime.services(), org_id="acme", daily_cap=2, fallback_only=False)
    numbers = [PHONE, OTHER_PHONE, "+12015550123"]
    statuses = []
    for index, number in enumerate(numbers):
        member = add_member("acme", f"user{index}@acme.example")
        access = flow.login_ok(member, "authenticated")["access_token"]
        statuses.append(
            client.post("/v1/me/factors/sms", {"phone_number": number}, token=access).status
        )
    assert statuses == [201, 201, 429]


def test_concurrent_sends_never_pass_the_cooldown(flow: Flow, acme: Member) -> None:
    _, factor_id = enroll_phone(flow, acme)
    flow.clock.advance(31)
    tokens = [flow.mfa_token(acme) for _ in range(20)]
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    before = len(sent())

    def attempt(token: str) -> None:
        barrier.wait()
        statuses.append(send_code(flow, token, factor_id).status)

    threads = [threading.Thread(target=attempt, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(200) == 1
    assert statuses.count(429) == 19
    assert len(sent()) == before + 1


def test_resend_kills_the_previous_code(flow: Flow, acme: Member) -> None:
    _, factor_id = enroll_phone(flow, acme)
    flow.clock.advance(31)
    mfa_token = flow.mfa_token(acme)
    first = send_code(flow, mfa_token, factor_id).body["challenge_id"]
    old_code = last_code()
    flow.clock.advance(31)
    second = send_code(flow, mfa_token, factor_id).body["challenge_id"]
    assert verify_code(flow, mfa_token, factor_id, old_code, first).status == 401
    assert verify_code(flow, mfa_token, factor_id, last_code(), second).status == 200


def test_five_wrong_attempts_kill_a_code(flow: Flow, acme: Member) -> None:
    _, factor_id = enroll_phone(flow, acme)
    flow.clock.advance(31)
    mfa_token = flow.mfa_token(acme)
    challenge = send_code(flow, mfa_token, factor_id).body["challenge_id"]
    code = last_code()
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert verify_code(flow, mfa_token, factor_id, wrong, challenge).status == 401
    assert verify_code(flow, mfa_token, factor_id, code, challenge).status == 401


def test_expired_code_is_rejected(flow: Flow, acme: Member, stack: LocalStack) -> None:
    _, factor_id = enroll_phone(flow, acme)
    flow.clock.advance(31)
    mfa_token = flow.mfa_token(acme)
    challenge = send_code(flow, mfa_token, factor_id).body["challenge_id"]
    flow.clock.advance(301)
    assert verify_code(flow, flow.mfa_token(acme), factor_id, last_code(), challenge).status == 401


def test_sns_failure_leaves_no_code_and_counts_nothing(
    flow: Flow, acme: Member, stack: LocalStack, monkeypatch: Any
) -> None:
    _, factor_id = enroll_phone(flow, acme)
    flow.clock.advance(31)
    mfa_token = flow.mfa_token(acme)
    sns = runtime.services().sns

    def failing_publish(**_: Any) -> Any:
        raise ClientError({"Error": {"Code": "Throttling", "Message": "x"}}, "Publish")

    monkeypatch.setattr(sns, "publish", failing_publish)
    before = len(sent())
    failed = send_code(flow, mfa_token, factor_id)
    assert failed.status == 503
    assert len(sent()) == before
    assert ("failure", "sender_failed") in audited(stack, "acme", "sms.send")

    monkeypatch.undo()
    retry = send_code(flow, mfa_token, factor_id)  # not throttled: the failure counted nothing
    assert retry.status == 200, retry.text
    login = verify_code(flow, mfa_token, factor_id, last_code(), retry.body["challenge_id"])
    assert login.status == 200


def test_number_outside_the_allow_list_is_a_400(client: Client, flow: Flow, acme: Member) -> None:
    policy.set_sms_policy(
        runtime.services(), org_id="acme", allowed_countries=["DE"], fallback_only=False
    )
    access = flow.login_ok(acme, "authenticated")["access_token"]
    reply = client.post("/v1/me/factors/sms", {"phone_number": PHONE}, token=access)
    assert reply.status == 400
    assert reply.body["field"] == "phone_number"
    assert reply.body["code"] == "phone_country_not_allowed"
    assert sent() == []
    ok = client.post("/v1/me/factors/sms", {"phone_number": OTHER_PHONE}, token=access)
    assert ok.status == 201


@pytest.mark.parametrize(
    "number",
    ["+449012345678", "07400 123456", "+44 7400 123456x"],
    ids=["premium-rate", "national-format", "letters"],
)
def test_unusable_numbers_are_a_400(client: Client, flow: Flow, acme: Member, number: str) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    reply = client.post("/v1/me/factors/sms", {"phone_number": number}, token=access)
    assert reply.status == 400
    assert reply.body["field"] == "phone_number"
    assert "7400" not in reply.body["detail"]
    assert sent() == []


def test_phone_number_absent_from_logs_and_audit(
    flow: Flow, acme: Member, stack: LocalStack
) -> None:
    with captured_logs() as stream:
        _, factor_id = enroll_phone(flow, acme)
        flow.clock.advance(31)
        mfa_token = flow.mfa_token(acme)
        challenge = send_code(flow, mfa_token, factor_id).body["challenge_id"]
        assert verify_code(flow, mfa_token, factor_id, last_code(), challenge).status == 200
    digits = PHONE.lstrip("+")
    assert '"message":"SMS code sent"' in stream.getvalue()
    assert digits not in stream.getvalue()
    assert digits[-9:] not in str(audit_items(stack, "acme"))


def test_fallback_keeps_last_other_factor(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    access, _ = enroll_phone(flow, acme)
    refused = client.delete(f"/v1/me/factors/{acme.factor_id}", token=access)
    assert refused.status == 409
    assert "fallback" in refused.body["detail"]
    assert ("denied", "sms_fallback_only") in audited(stack, "acme", "factor.remove")


def test_hourly_cap_per_source_ip(
    client: Client, flow: Flow, acme: Member, monkeypatch: Any
) -> None:
    svc = runtime.services()
    monkeypatch.setattr(svc, "settings", dataclasses.replace(svc.settings, sms_ip_per_hour=2))
    policy.set_sms_policy(svc, org_id="acme", fallback_only=False)
    numbers = [PHONE, OTHER_PHONE, "+12015550123"]
    replies = []
    for index, number in enumerate(numbers):
        member = add_member("acme", f"user{index}@acme.example")
        access = flow.login_ok(member, "authenticated")["access_token"]
        replies.append(client.post("/v1/me/factors/sms", {"phone_number": number}, token=access))
    assert [reply.status for reply in replies] == [201, 201, 429]
    assert replies[2].body["limit"] == "ip_per_hour"


def test_operator_cli_sets_the_org_sms_rules(
    acme: Member, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["org", "sms", "--org-id", "acme", "--allow-country", "de", "--daily-cap", "50"]
    assert cli.main([*args, "--no-fallback-only"]) == 0
    assert '"allowed_countries": ["DE"]' in capsys.readouterr().out
    rules = policy.sms_policy(runtime.services().store.get_org("acme"))
    assert (rules.allowed_countries, rules.daily_cap, rules.fallback_only) == (("DE",), 50, False)
    assert cli.main(["org", "sms", "--org-id", "acme", "--allow-country", "XX"]) == 2
    assert "sms_countries" in capsys.readouterr().err


def _pending_phone(flow: Flow, member: Member) -> tuple[str, str]:
    """Give the member TOTP and a pending phone; return a fresh access token and its id."""
    access = flow.login_ok(member, "authenticated")["access_token"]
    flow.enroll(member, access)
    flow.next_step()
    access = flow.verify(member, flow.mfa_token(member)).body["access_token"]
    reply = flow.client.post("/v1/me/factors/sms", {"phone_number": PHONE}, token=access)
    assert reply.status == 201, reply.text
    return access, reply.body["factor_id"]


def _at_once(*calls: Any) -> list[int]:
    barrier = threading.Barrier(len(calls))
    statuses: dict[int, int] = {}

    def run(index: int, call: Any) -> None:
        barrier.wait()
        statuses[index] = call().status

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [statuses[index] for index in range(len(calls))]


def test_confirm_removal_race_keeps_other_factor(client: Client, flow: Flow, acme: Member) -> None:
    access, phone_id = _pending_phone(flow, acme)
    code = last_code()
    statuses = _at_once(
        lambda: client.post(f"/v1/me/factors/sms/{phone_id}/confirm", {"code": code}, token=access),
        lambda: client.delete(f"/v1/me/factors/{acme.factor_id}", token=access),
    )
    assert sorted(statuses) in ([200, 409], [204, 409]), statuses
    user = runtime.services().store.get_user("acme", acme.user_id)
    assert user is not None
    types = [info["type"] for info in user.factor_summaries().values()]
    assert types != ["sms"]


def test_two_removals_never_leave_sms_alone(client: Client, flow: Flow, acme: Member) -> None:
    access, _ = enroll_phone(flow, acme)
    flow.next_step()
    spare = client.post("/v1/me/factors/totp", {}, token=access).body
    confirm = client.post(
        f"/v1/me/factors/totp/{spare['factor_id']}/confirm",
        {"code": flow.code(spare["secret"])},
        token=access,
    )
    assert confirm.status == 200, confirm.text
    statuses = _at_once(
        lambda: client.delete(f"/v1/me/factors/{acme.factor_id}", token=access),
        lambda: client.delete(f"/v1/me/factors/{spare['factor_id']}", token=access),
    )
    assert sorted(statuses) == [204, 409], statuses
    user = runtime.services().store.get_user("acme", acme.user_id)
    assert user is not None
    assert sorted(info["type"] for info in user.factor_summaries().values()) == ["sms", "totp"]


def test_retry_after_names_the_longest_limit(flow: Flow, acme: Member) -> None:
    _, factor_id = enroll_phone(flow, acme)  # the first send of the hour
    for _ in range(4):
        flow.clock.advance(31)
        assert send_code(flow, flow.mfa_token(acme), factor_id).status == 200
    throttled = send_code(flow, flow.mfa_token(acme), factor_id)
    assert throttled.status == 429
    assert throttled.body["limit"] == "user_per_hour"
    assert int(throttled.headers["retry-after"]) > 30


def test_sms_confirmation_reports_the_activation(client: Client, flow: Flow, acme: Member) -> None:
    access, phone_id = _pending_phone(flow, acme)
    reply = client.post(
        f"/v1/me/factors/sms/{phone_id}/confirm", {"code": last_code()}, token=access
    )
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "active"
    assert reply.body["confirmed_at"] == int(flow.clock.now())


def test_concurrent_guesses_get_five_checks(flow: Flow, acme: Member, stack: LocalStack) -> None:
    _, factor_id = enroll_phone(flow, acme)
    flow.clock.advance(31)
    mfa_token = flow.mfa_token(acme)
    challenge = send_code(flow, mfa_token, factor_id).body["challenge_id"]
    wrong = "000000" if last_code() != "000000" else "111111"
    statuses = _at_once(
        *[lambda: verify_code(flow, mfa_token, factor_id, wrong, challenge) for _ in range(8)]
    )
    assert statuses.count(200) == 0
    reasons = [reason for _, reason in audited(stack, "acme", "login.mfa")]
    assert reasons.count("invalid_code") == 5
    assert reasons.count("code_attempts_exhausted") == 3
