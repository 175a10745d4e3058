"""Security rules of TOTP verification: single use, concurrency, lockout, input validation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from mfa_core import runtime
from tests.api.harness import Client, Flow, Member, wrong_code


def test_code_rejected_on_second_use(flow: Flow, enrolled: Member) -> None:
    assert enrolled.totp_secret is not None
    code = flow.code(enrolled.totp_secret)
    first = flow.verify(enrolled, flow.mfa_token(enrolled), code)
    assert first.status == 200, first.text

    second = flow.verify(enrolled, flow.mfa_token(enrolled), code)
    assert second.status == 401
    assert second.body["code"] == "invalid_code"


def test_earlier_step_rejected_after_later_one(flow: Flow, enrolled: Member) -> None:
    assert enrolled.totp_secret is not None
    later = flow.verify(
        enrolled, flow.mfa_token(enrolled), flow.code(enrolled.totp_secret, steps_ahead=1)
    )
    assert later.status == 200

    current = flow.verify(enrolled, flow.mfa_token(enrolled), flow.code(enrolled.totp_secret))
    assert current.status == 401


def test_mfa_token_works_once(flow: Flow, enrolled: Member) -> None:
    assert enrolled.totp_secret is not None
    mfa_token = flow.mfa_token(enrolled)
    assert flow.verify(enrolled, mfa_token).status == 200
    flow.next_step()
    again = flow.verify(enrolled, mfa_token)
    assert again.status == 401
    assert again.body["code"] == "invalid_token"


def test_concurrent_codes_one_wins(flow: Flow, enrolled: Member) -> None:
    """50 logins submit the same valid code at once: the time step is accepted exactly once."""
    assert enrolled.totp_secret is not None
    mfa_tokens = [flow.mfa_token(enrolled) for _ in range(50)]
    code = flow.code(enrolled.totp_secret)
    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(lambda token: flow.verify(enrolled, token, code), mfa_tokens))
    statuses = sorted(reply.status for reply in replies)
    assert statuses.count(200) == 1, statuses
    assert statuses.count(401) == 49, statuses


def test_concurrent_token_use_one_wins(flow: Flow, enrolled: Member) -> None:
    assert enrolled.totp_secret is not None
    mfa_token = flow.mfa_token(enrolled)
    code = flow.code(enrolled.totp_secret)
    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(lambda _: flow.verify(enrolled, mfa_token, code), range(50)))
    statuses = sorted(reply.status for reply in replies)
    assert statuses.count(200) == 1, statuses
    assert statuses.count(401) == 49, statuses


def _wrong_code(flow: Flow, member: Member) -> str:
    assert member.totp_secret is not None
    return wrong_code(flow, member.totp_secret)


def test_lockout_after_ten_failures_and_its_end(flow: Flow, enrolled: Member) -> None:
    wrong = _wrong_code(flow, enrolled)
    mfa_token = flow.mfa_token(enrolled)
    for attempt in range(1, 10):
        reply = flow.verify(enrolled, mfa_token, wrong)
        assert reply.status == 401, (attempt, reply.text)

    tenth = flow.verify(enrolled, mfa_token, wrong)
    assert tenth.status == 429
    assert tenth.body["code"] == "locked_out"
    assert tenth.header("Retry-After") == str(30 * 60)

    # While locked, even the right code and the right password are refused.
    assert flow.verify(enrolled, mfa_token).status == 429
    assert flow.login(enrolled).status == 429

    flow.clock.advance(29 * 60)
    locked = flow.login(enrolled)
    assert locked.status == 429
    assert locked.header("Retry-After") == "60"

    flow.clock.advance(60 + 1)
    flow.next_step()
    after = flow.verify(enrolled, flow.mfa_token(enrolled))
    assert after.status == 200, after.text


def test_success_resets_failure_count(flow: Flow, enrolled: Member) -> None:
    wrong = _wrong_code(flow, enrolled)
    mfa_token = flow.mfa_token(enrolled)
    for _ in range(9):
        assert flow.verify(enrolled, mfa_token, wrong).status == 401
    assert flow.verify(enrolled, mfa_token).status == 200

    flow.next_step()
    mfa_token = flow.mfa_token(enrolled)
    for _ in range(9):
        assert flow.verify(enrolled, mfa_token, wrong).status == 401
    assert flow.verify(enrolled, mfa_token).status == 200


def test_concurrent_wrong_codes_are_all_counted(flow: Flow, enrolled: Member) -> None:
    wrong = _wrong_code(flow, enrolled)
    mfa_tokens = [flow.mfa_token(enrolled) for _ in range(10)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda token: flow.verify(enrolled, token, wrong), mfa_tokens))
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [401] * 9 + [429]
    user = runtime.services().store.get_user(enrolled.org_id, enrolled.user_id)
    assert user is not None
    assert user.failed_count == 10
    assert user.locked_until == flow.clock.now() + 30 * 60
    assert flow.verify(enrolled, mfa_tokens[0]).status == 429


@pytest.mark.parametrize(
    "code",
    [
        "\uff11\uff12\uff13\uff14\uff15\uff16",  # full-width digits
        "\u0661\u0662\u0663\u0664\u0665\u0666",  # Arabic-Indic digits
        "1234567",
        "12345",
        "",
        "123456\n",
        123456,
        None,
        ["123456"],
    ],
)
def test_malformed_code_is_400(client: Client, flow: Flow, enrolled: Member, code: object) -> None:
    reply = client.post(
        "/v1/auth/mfa/verify",
        {"factor_id": enrolled.factor_id, "code": code},
        token=flow.mfa_token(enrolled),
    )
    assert reply.status == 400, reply.text
    assert reply.header("Content-Type") == "application/problem+json"
    assert reply.body["field"] == "code"
    assert reply.body["status"] == 400
    if isinstance(code, str) and code:
        assert code not in reply.text


def test_malformed_code_is_rejected_before_the_token(client: Client, enrolled: Member) -> None:
    reply = client.post("/v1/auth/mfa/verify", {"factor_id": "x", "code": "12345"}, token="junk")
    assert reply.status == 400
    assert reply.body["code"] == "invalid_code_format"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"factor_id": "f", "code": "' + b"1" * 100_000 + b'"}', "body_too_large"),
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"factor_id": 5, "code": "123456"}', "invalid_input"),
        (b'{"code": "123456"}', "invalid_input"),
        (b'{"factor_id": "f", "code": "123456", "extra": 1}', "invalid_input"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
def test_bad_bodies_are_400_problems(
    client: Client, flow: Flow, enrolled: Member, raw: bytes, code: str
) -> None:
    reply = client.request("POST", "/v1/auth/mfa/verify", raw=raw, token=flow.mfa_token(enrolled))
    assert reply.status == 400, reply.text
    assert reply.header("Content-Type") == "application/problem+json"
    assert reply.body["code"] == code
    assert set(reply.body) >= {"type", "title", "status", "detail", "code"}


def test_wrong_json_types_name_the_field(client: Client) -> None:
    reply = client.post("/v1/auth/login", {"org_id": "acme", "email": ["a"], "password": "x"})
    assert reply.status == 400
    assert reply.body["field"] == "email"
    assert "string" in reply.body["detail"]


def test_unknown_factor_is_not_found(client: Client, flow: Flow, enrolled: Member) -> None:
    reply = client.post(
        "/v1/auth/mfa/verify",
        {"factor_id": "f_000000000000000000000000", "code": "123456"},
        token=flow.mfa_token(enrolled),
    )
    assert reply.status == 404
