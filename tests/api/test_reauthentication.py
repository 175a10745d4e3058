"""Reauthentication policies, remember-device tokens, session limits and password changes."""

from __future__ import annotations

from typing import Any

import pytest

from local.stack import LocalStack
from mfa_core import cli
from mfa_core.clock import ManualClock
from tests.api.harness import Client, Flow, Member
from tests.api.test_policy import fresh_mfa_token, set_policy
from tests.api.test_webauthn import audited
from tests.authenticator import SoftAuthenticator

DEVICE = "device-0123456789abcdef"
OTHER_DEVICE = "device-fedcba9876543210"
NEW_PASSWORD = "a much longer new passphrase"


def _login(client: Client, member: Member, **extra: Any) -> dict[str, Any]:
    reply = client.post(
        "/v1/auth/login",
        {"org_id": member.org_id, "email": member.email, "password": member.password, **extra},
    )
    assert reply.status == 200, reply.text
    body: dict[str, Any] = reply.body
    return body


def _remembered(client: Client, flow: Flow, member: Member) -> str:
    """Sign in on DEVICE with TOTP where the org re-verifies daily; return the device token."""
    login = _login(client, member, device_id=DEVICE)
    assert login["status"] == "mfa_required"
    flow.next_step()
    reply = flow.verify(member, login["mfa_token"])
    assert reply.status == 200, reply.text
    assert reply.body["remember_device_expires_in"] == 24 * 3600
    token: str = reply.body["remember_device_token"]
    return token


@pytest.fixture
def daily(enrolled: Member) -> Member:
    set_policy("acme", reauthentication="every_24h")
    return enrolled


def test_remembered_device_skips_mfa_for_a_day(
    client: Client, flow: Flow, clock: ManualClock, daily: Member
) -> None:
    token = _remembered(client, flow, daily)
    clock.advance(23 * 3600)
    again = _login(client, daily, device_id=DEVICE, remember_device_token=token)
    assert again["status"] == "authenticated"
    session = client.get("/v1/me/sessions", token=again["access_token"]).body["sessions"][0]
    assert session["acr"] == "aal2"
    assert session["amr"] == ["pwd", "otp", "mfa"]

    clock.advance(3600)
    expired = _login(client, daily, device_id=DEVICE, remember_device_token=token)
    assert expired["status"] == "mfa_required"


def test_remember_token_is_bound_to_the_device_and_the_user(
    client: Client, flow: Flow, daily: Member
) -> None:
    token = _remembered(client, flow, daily)
    other = _login(client, daily, device_id=OTHER_DEVICE, remember_device_token=token)
    assert other["status"] == "mfa_required"
    missing = _login(client, daily, remember_device_token=token)
    assert missing["status"] == "mfa_required"


def test_no_remember_token_where_the_policy_asks_every_login(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    login = _login(client, enrolled, device_id=DEVICE)
    flow.next_step()
    reply = flow.verify(enrolled, login["mfa_token"])
    assert reply.status == 200
    assert "remember_device_token" not in reply.body


def test_remember_token_stops_when_the_policy_changes(
    client: Client, flow: Flow, daily: Member
) -> None:
    token = _remembered(client, flow, daily)
    set_policy("acme", reauthentication="every_login")
    again = _login(client, daily, device_id=DEVICE, remember_device_token=token)
    assert again["status"] == "mfa_required"
    # Switching back does not revive tokens issued before the change.
    set_policy("acme", reauthentication="every_24h")
    back = _login(client, daily, device_id=DEVICE, remember_device_token=token)
    assert back["status"] == "mfa_required"


def test_remember_token_stops_after_an_mfa_change(
    client: Client, flow: Flow, daily: Member
) -> None:
    token = _remembered(client, flow, daily)
    access = fresh_mfa_token(flow, daily)
    flow.register_key(access, SoftAuthenticator())
    again = _login(client, daily, device_id=DEVICE, remember_device_token=token)
    assert again["status"] == "mfa_required"


def test_remember_token_stops_after_a_password_change(
    client: Client, flow: Flow, daily: Member
) -> None:
    token = _remembered(client, flow, daily)
    access = fresh_mfa_token(flow, daily)
    changed = client.request(
        "PUT",
        "/v1/me/password",
        json_body={"current_password": daily.password, "new_password": NEW_PASSWORD},
        token=access,
    )
    assert changed.status == 204, changed.text
    daily.password = NEW_PASSWORD
    again = _login(client, daily, device_id=DEVICE, remember_device_token=token)
    assert again["status"] == "mfa_required"


def test_forgotten_devices_need_mfa_again(
    client: Client, flow: Flow, daily: Member, stack: LocalStack
) -> None:
    token = _remembered(client, flow, daily)
    session = _login(client, daily, device_id=DEVICE, remember_device_token=token)
    assert session["status"] == "authenticated"
    forgotten = client.delete("/v1/me/remembered-devices", token=session["access_token"])
    assert forgotten.status == 204
    again = _login(client, daily, device_id=DEVICE, remember_device_token=token)
    assert again["status"] == "mfa_required"
    assert audited(stack, "acme", "devices.forget") == [("success", None)]


def test_tampered_remember_token_is_ignored(client: Client, flow: Flow, daily: Member) -> None:
    token = _remembered(client, flow, daily)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    again = _login(client, daily, device_id=DEVICE, remember_device_token=tampered)
    assert again["status"] == "mfa_required"


def test_malformed_device_id_is_refused(client: Client, daily: Member) -> None:
    reply = client.post(
        "/v1/auth/login",
        {
            "org_id": daily.org_id,
            "email": daily.email,
            "password": daily.password,
            "device_id": "short",
        },
    )
    assert reply.status == 400
    assert reply.body["field"] == "device_id"


def test_sensitive_only_asks_for_mfa_before_sensitive_operations(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    set_policy("acme", reauthentication="sensitive_only")
    login = flow.login_ok(enrolled, "authenticated")
    token = login["access_token"]
    removal = client.delete(f"/v1/me/factors/{enrolled.factor_id}", token=token)
    assert removal.status == 403
    assert removal.body["code"] == "step_up_required"
    assert enrolled.totp_secret is not None
    flow.next_step()
    step_up = client.post(
        "/v1/auth/mfa/verify",
        {"factor_id": enrolled.factor_id, "code": flow.code(enrolled.totp_secret)},
        token=token,
    )
    assert step_up.status == 200, step_up.text
    assert step_up.body["acr"] == "aal2"


# -- Session limits -----------------------------------------------------------------------------


def test_session_limit_rejects_a_new_login(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    set_policy("acme", enforcement="optional", max_sessions=2, session_limit_action="reject")
    first = flow.login_ok(acme, "authenticated")
    flow.login_ok(acme, "authenticated")
    third = flow.login(acme)
    assert third.status == 409
    assert third.body["code"] == "session_limit_reached"
    assert audited(stack, "acme", "session.limit") == [("denied", "session_limit")]

    assert "your org allows 2" in third.body["detail"]
    assert client.post("/v1/auth/logout", token=first["access_token"]).status == 204
    flow.login_ok(acme, "authenticated")


def test_session_limit_revokes_the_oldest_session(
    client: Client, flow: Flow, clock: ManualClock, acme: Member
) -> None:
    set_policy("acme", enforcement="optional", max_sessions=2, session_limit_action="revoke_oldest")
    sessions = []
    for _ in range(3):
        sessions.append(flow.login_ok(acme, "authenticated"))
        clock.advance(1)
    assert sessions[2]["sessions_ended"] == [sessions[0]["session_id"]]
    assert "sessions_ended" not in sessions[1]
    oldest = client.post("/v1/auth/refresh", {"refresh_token": sessions[0]["refresh_token"]})
    assert oldest.status == 401
    for kept in sessions[1:]:
        reply = client.post("/v1/auth/refresh", {"refresh_token": kept["refresh_token"]})
        assert reply.status == 200, reply.text
    listed = client.get("/v1/me/sessions", token=sessions[2]["access_token"]).body["sessions"]
    assert {s["session_id"] for s in listed} == {s["session_id"] for s in sessions[1:]}


def test_session_limit_applies_after_mfa(
    client: Client, flow: Flow, clock: ManualClock, enrolled: Member
) -> None:
    # The enrollment left one password-only session open.
    set_policy("acme", enforcement="required", max_sessions=2, session_limit_action="reject")
    flow.next_step()
    first = flow.verify(enrolled, flow.mfa_token(enrolled))
    assert first.status == 200
    flow.next_step()
    second = flow.verify(enrolled, flow.mfa_token(enrolled))
    assert second.status == 409
    assert second.body["code"] == "session_limit_reached"

    set_policy("acme", enforcement="required", max_sessions=2)
    flow.next_step()
    third = flow.verify(enrolled, flow.mfa_token(enrolled))
    assert third.status == 200
    listed = client.get("/v1/me/sessions", token=third.body["access_token"]).body["sessions"]
    assert {s["session_id"] for s in listed} == {
        first.body["session_id"],
        third.body["session_id"],
    }


# -- Password change ----------------------------------------------------------------------------


def test_password_change_ends_every_other_session(
    client: Client, flow: Flow, enrolled: Member, stack: LocalStack
) -> None:
    other = flow.verify(enrolled, flow.mfa_token(enrolled)).body
    current = fresh_mfa_token(flow, enrolled)
    reply = client.request(
        "PUT",
        "/v1/me/password",
        json_body={"current_password": enrolled.password, "new_password": NEW_PASSWORD},
        token=current,
    )
    assert reply.status == 204, reply.text

    assert client.post("/v1/auth/refresh", {"refresh_token": other["refresh_token"]}).status == 401
    assert client.get("/v1/me/sessions", token=other["access_token"]).status == 401
    ended = client.request("PUT", "/v1/agents/a1/config", json_body={}, token=other["access_token"])
    assert ended.status == 403
    kept = client.request("PUT", "/v1/agents/a1/config", json_body={}, token=current)
    assert kept.status == 200, kept.text
    assert client.get("/v1/me/sessions", token=current).status == 200
    assert flow.login(enrolled).status == 401
    enrolled.password = NEW_PASSWORD
    assert flow.login(enrolled).status == 200
    assert audited(stack, "acme", "password.change") == [("success", None)]


def test_password_change_needs_the_current_password_and_a_recent_mfa(
    client: Client, flow: Flow, clock: ManualClock, enrolled: Member, stack: LocalStack
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    wrong = client.request(
        "PUT",
        "/v1/me/password",
        json_body={"current_password": "not the password", "new_password": NEW_PASSWORD},
        token=token,
    )
    assert wrong.status == 400
    assert wrong.body["field"] == "current_password"
    short = client.request(
        "PUT",
        "/v1/me/password",
        json_body={"current_password": enrolled.password, "new_password": "short"},
        token=token,
    )
    assert short.status == 400
    assert short.body["field"] == "new_password"
    clock.advance(6 * 60)
    stale = client.request(
        "PUT",
        "/v1/me/password",
        json_body={"current_password": enrolled.password, "new_password": NEW_PASSWORD},
        token=token,
    )
    assert stale.status == 403
    assert stale.body["code"] == "step_up_required"
    assert audited(stack, "acme", "password.change") == [("failure", "wrong_password")]


def test_password_change_without_a_factor_needs_only_the_password(
    client: Client, flow: Flow, acme: Member
) -> None:
    token = flow.login_ok(acme, "authenticated")["access_token"]
    reply = client.request(
        "PUT",
        "/v1/me/password",
        json_body={"current_password": acme.password, "new_password": NEW_PASSWORD},
        token=token,
    )
    assert reply.status == 204, reply.text


def test_wrong_current_passwords_lock_the_account(
    client: Client, flow: Flow, enrolled: Member, stack: LocalStack
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    statuses = []
    for _ in range(10):
        reply = client.request(
            "PUT",
            "/v1/me/password",
            json_body={"current_password": "wrong password guess", "new_password": NEW_PASSWORD},
            token=token,
        )
        statuses.append(reply.status)
    assert statuses == [400] * 9 + [429]
    right = client.request(
        "PUT",
        "/v1/me/password",
        json_body={"current_password": enrolled.password, "new_password": NEW_PASSWORD},
        token=token,
    )
    assert right.status == 429
    assert ("denied", None) in [
        (outcome, None) for outcome, _ in audited(stack, "acme", "account.lockout")
    ]


def test_remember_token_fails_when_enforcement_tightens_on_schedule(
    client: Client, flow: Flow, clock: ManualClock, enrolled: Member
) -> None:
    flow.register_key(fresh_mfa_token(flow, enrolled), SoftAuthenticator())
    switch = int(clock.now()) + 3600
    set_policy(
        "acme",
        reauthentication="every_24h",
        enforce_after=switch,
        security_key_roles=("admin",),
    )
    token = _remembered(client, flow, enrolled)  # a TOTP login while optional
    clock.set(switch)
    again = _login(client, enrolled, device_id=DEVICE, remember_device_token=token)
    assert again["status"] == "mfa_required"
    assert [f["type"] for f in again["factors"]] == ["webauthn"]


def test_remember_token_works_within_the_key_grace_period(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    set_policy("acme", reauthentication="every_24h", security_key_roles=("admin",), grace_days=7)
    token = _remembered(client, flow, enrolled)
    again = _login(client, enrolled, device_id=DEVICE, remember_device_token=token)
    assert again["status"] == "authenticated"


def test_remember_token_stops_when_key_settings_change(
    client: Client, flow: Flow, daily: Member
) -> None:
    token = _remembered(client, flow, daily)
    assert cli.main(["org", "webauthn", "--org-id", "acme", "--user-verification", "required"]) == 0
    again = _login(client, daily, device_id=DEVICE, remember_device_token=token)
    assert again["status"] == "mfa_required"
