"""Who may add a factor once a user has one, and what activation does to other sessions."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr

import boto3
import pytest

from local.stack import LocalStack
from mfa_core import cli, runtime
from tests.api.conftest import add_org
from tests.api.harness import Client, Flow, Member, wrong_code


def test_password_session_revoked_when_factor_added(
    client: Client, flow: Flow, acme: Member
) -> None:
    """An attacker's password-only session must not outlive the owner's enrollment."""
    attacker = flow.login_ok(acme, "authenticated")
    owner = flow.login_ok(acme, "authenticated")
    flow.enroll(acme, owner["access_token"])

    assert client.get("/v1/me/sessions", token=attacker["access_token"]).status == 401
    refresh = client.post("/v1/auth/refresh", {"refresh_token": attacker["refresh_token"]})
    assert refresh.status == 401
    add = client.post("/v1/me/factors/totp", {}, token=attacker["access_token"])
    assert add.status == 401
    # The session that enrolled stays signed in.
    assert client.get("/v1/me/sessions", token=owner["access_token"]).status == 200


def test_second_factor_needs_recent_mfa(client: Client, flow: Flow, enrolled: Member) -> None:
    password_only = flow.login_ok(enrolled, "mfa_required")
    assert "access_token" not in password_only
    tokens = flow.verify(enrolled, password_only["mfa_token"]).body

    fresh = client.post("/v1/me/factors/totp", {"label": "Backup"}, token=tokens["access_token"])
    assert fresh.status == 201, fresh.text

    flow.clock.advance(5 * 60)
    at_limit = client.post("/v1/me/factors/totp", {}, token=tokens["access_token"])
    assert at_limit.status == 201

    flow.clock.advance(1)
    stale = client.post("/v1/me/factors/totp", {}, token=tokens["access_token"])
    assert stale.status == 403
    assert stale.body["code"] == "step_up_required"
    assert stale.body["max_mfa_age"] == 300
    assert stale.body["required_acr"] == "aal2"
    assert stale.body["missing"] == ["mfa_age"]
    pending_id = fresh.body["factor_id"]
    confirm = client.post(
        f"/v1/me/factors/totp/{pending_id}/confirm",
        {"code": flow.code(fresh.body["secret"])},
        token=tokens["access_token"],
    )
    assert confirm.status == 403

    # Refreshing keeps the time of the MFA, so it does not make the session fresh again.
    refreshed = client.post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    again = client.post("/v1/me/factors/totp", {}, token=refreshed.body["access_token"])
    assert again.status == 403


def test_enrollment_token_spent_after_first_factor(client: Client, flow: Flow) -> None:
    member = add_org("globex", enforcement="required")
    enrollment_token = flow.login_ok(member, "enrollment_required")["enrollment_token"]
    spare = client.post("/v1/me/factors/totp", {}, token=enrollment_token).body
    flow.enroll(member, enrollment_token)

    second = client.post("/v1/me/factors/totp", {}, token=enrollment_token)
    assert second.status == 401
    assert second.body["code"] == "invalid_token"
    confirm_spare = client.post(
        f"/v1/me/factors/totp/{spare['factor_id']}/confirm",
        {"code": flow.code(spare["secret"], steps_ahead=1)},
        token=enrollment_token,
    )
    assert confirm_spare.status == 401


def test_mfa_off_org_adds_factor_after_step_up(client: Client, flow: Flow) -> None:
    """Login requests no factor where enforcement is off, but a factor change still does."""
    member = add_org("umbrella", enforcement="off")
    flow.enroll(member, flow.login_ok(member, "authenticated")["access_token"])
    password_only = flow.login_ok(member, "authenticated")["access_token"]
    refused = client.post("/v1/me/factors/totp", {}, token=password_only)
    assert refused.status == 403
    assert refused.body["code"] == "step_up_required"
    assert refused.body["missing"] == ["acr", "mfa"]

    flow.next_step()
    step_up = flow.verify(member, password_only)
    assert step_up.status == 200, step_up.text
    fresh = step_up.body["access_token"]
    assert client.post("/v1/me/factors/totp", {}, token=fresh).status == 201


def test_concurrent_first_factors_only_one_wins(client: Client, flow: Flow, acme: Member) -> None:
    """Two sessions confirming a first factor at once: the second finds one already active."""
    sessions = [flow.login_ok(acme, "authenticated")["access_token"] for _ in range(2)]
    pending = [client.post("/v1/me/factors/totp", {}, token=token).body for token in sessions]
    barrier = threading.Barrier(2)

    def confirm(index: int) -> int:
        barrier.wait()
        return client.post(
            f"/v1/me/factors/totp/{pending[index]['factor_id']}/confirm",
            {"code": flow.code(pending[index]["secret"])},
            token=sessions[index],
        ).status

    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = sorted(pool.map(confirm, range(2)))
    assert statuses == [200, 409]
    login = flow.login_ok(acme, "mfa_required")
    assert len(login["factors"]) == 1


def test_unlisted_session_ends_on_activation(
    client: Client,
    flow: Flow,
    acme: Member,
    monkeypatch: pytest.MonkeyPatch,
    stack: LocalStack,
) -> None:
    """A session that the user index does not show yet (it lags writes) ends all the same."""
    attacker = flow.login_ok(acme, "authenticated")
    owner = flow.login_ok(acme, "authenticated")
    flow.clock.advance(1)
    monkeypatch.setattr(runtime.services().store, "list_sessions", lambda *_: [])
    flow.enroll(acme, owner["access_token"])
    monkeypatch.undo()

    assert client.get("/v1/me/sessions", token=attacker["access_token"]).status == 401
    refresh = client.post("/v1/auth/refresh", {"refresh_token": attacker["refresh_token"]})
    assert refresh.status == 401
    table = boto3.resource("dynamodb", endpoint_url=stack.aws_endpoint_url).Table(
        runtime.services().settings.audit_table
    )
    reasons = {(i["event_type"], i.get("reason")) for i in table.scan()["Items"]}
    assert ("session.refresh", "session_ended") in reasons
    listed = client.get("/v1/me/sessions", token=owner["access_token"])
    assert [s["session_id"] for s in listed.body["sessions"]] == [owner["session_id"]]


def test_activation_ends_more_than_forty_sessions(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    others = [flow.login_ok(acme, "authenticated") for _ in range(45)]
    owner = flow.login_ok(acme, "authenticated")
    flow.clock.advance(1)
    flow.enroll(acme, owner["access_token"])

    for session in others:
        assert client.get("/v1/me/sessions", token=session["access_token"]).status == 401
    table = boto3.resource("dynamodb", endpoint_url=stack.aws_endpoint_url).Table(
        runtime.services().settings.audit_table
    )
    revoked = [
        item
        for item in table.scan()["Items"]
        if item["event_type"] == "session.revoke" and item.get("reason") == "factor_added"
    ]
    assert {item["session_id"] for item in revoked} == {s["session_id"] for s in others}


def test_locked_out_attempt_is_audited(
    client: Client, flow: Flow, enrolled: Member, stack: LocalStack
) -> None:
    assert enrolled.totp_secret is not None
    mfa_token = flow.mfa_token(enrolled)
    wrong = wrong_code(flow, enrolled.totp_secret)
    for _ in range(10):
        flow.verify(enrolled, mfa_token, wrong)
    assert flow.verify(enrolled, mfa_token).status == 429

    table = boto3.resource("dynamodb", endpoint_url=stack.aws_endpoint_url).Table(
        runtime.services().settings.audit_table
    )
    items = table.scan()["Items"]
    outcomes = [(i["event_type"], i["outcome"], i.get("reason")) for i in items]
    assert outcomes.count(("login.mfa", "failure", "invalid_code")) == 10
    assert outcomes.count(("account.lockout", "denied", None)) == 1
    assert outcomes.count(("login.mfa", "denied", "locked_out")) == 1


def test_cli_reports_missing_org(client: Client) -> None:
    errors = io.StringIO()
    with redirect_stderr(errors):
        exit_code = cli.main(["user", "create", "--org-id", "nosuchorg", "--email", "a@b.example"])
    assert exit_code == 2
    assert "not_found" in errors.getvalue()
