"""Member management and the enrollment dashboard, through the local gateway."""

from __future__ import annotations

from typing import Any

import pytest

from local.stack import LocalStack
from mfa_core import members, runtime
from mfa_core.clock import ManualClock
from tests.api.conftest import add_member, add_org
from tests.api.harness import Client, Flow, Member
from tests.api.test_policy import DAY, _enroll_totp, fresh_mfa_token, set_policy
from tests.api.test_webauthn import audit_items

USERS = "/v1/orgs/acme/users"
STATUS = "/v1/orgs/acme/mfa-status"


def _patch(client: Client, token: str, member: Member, body: dict[str, Any]) -> Any:
    return client.request("PATCH", f"{USERS}/{member.user_id}", json_body=body, token=token)


def test_admin_lists_members_page_by_page(client: Client, flow: Flow, acme: Member) -> None:
    created = [add_member("acme", f"m{i}@acme.example") for i in range(5)]
    token = flow.login_ok(acme, "authenticated")["access_token"]
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&next={cursor}" if cursor else "")
        page = client.get(USERS + query, token=token)
        assert page.status == 200, page.text
        assert len(page.body["members"]) <= 2
        seen += [m["user_id"] for m in page.body["members"]]
        cursor = page.body["next"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([acme.user_id, *(m.user_id for m in created)])
    assert all("password_hash" not in m for m in page.body["members"])


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?limit=x", "?next=email%23a"])
def test_bad_page_parameters_are_refused(
    client: Client, flow: Flow, acme: Member, query: str
) -> None:
    token = flow.login_ok(acme, "authenticated")["access_token"]
    reply = client.get(USERS + query, token=token)
    assert reply.status == 400
    assert reply.body["field"] in ("limit", "next")


def test_admin_changes_a_role_audited(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    member = add_member("acme", "ops@acme.example")
    token = flow.login_ok(acme, "authenticated")["access_token"]
    reply = _patch(client, token, member, {"role": "viewer"})
    assert reply.status == 200, reply.text
    assert reply.body["role"] == "viewer"
    login = flow.login_ok(member, "authenticated")
    sessions = client.get("/v1/me/sessions", token=login["access_token"])
    assert sessions.status == 200
    [event] = [i for i in audit_items(stack, "acme") if i["event_type"] == "member.update"]
    assert event["details"]["before"]["role"] == "operator"
    assert event["details"]["after"]["role"] == "viewer"
    assert event["actor"] == f"user:{acme.user_id}"


def test_disabling_a_member_ends_their_sessions(client: Client, flow: Flow, acme: Member) -> None:
    member = add_member("acme", "leaver@acme.example")
    session = flow.login_ok(member, "authenticated")
    token = flow.login_ok(acme, "authenticated")["access_token"]
    assert _patch(client, token, member, {"status": "disabled"}).status == 200
    refresh = client.post("/v1/auth/refresh", {"refresh_token": session["refresh_token"]})
    assert refresh.status == 401
    assert client.get("/v1/me/sessions", token=session["access_token"]).status == 401
    assert flow.login(member).status == 401
    assert _patch(client, token, member, {"status": "active"}).status == 200
    assert flow.login(member).status == 200


def test_member_changes_are_refused_where_they_must_be(
    client: Client, flow: Flow, acme: Member
) -> None:
    member = add_member("acme", "ops@acme.example")
    token = flow.login_ok(acme, "authenticated")["access_token"]
    own = _patch(client, token, acme, {"role": "viewer"})
    assert own.status == 403
    assert _patch(client, token, member, {"role": "owner"}).body["field"] == "role"
    assert _patch(client, token, member, {"status": "gone"}).body["field"] == "status"
    assert _patch(client, token, member, {}).status == 400
    missing = client.request(
        "PATCH", f"{USERS}/u_{'0' * 24}", json_body={"role": "viewer"}, token=token
    )
    assert missing.status == 404

    operator_token = flow.login_ok(member, "authenticated")["access_token"]
    assert _patch(client, operator_token, acme, {"role": "viewer"}).status == 403
    globex = add_org("globex")
    other = flow.login_ok(globex, "authenticated")["access_token"]
    assert _patch(client, other, member, {"role": "viewer"}).status == 404
    assert client.get(USERS, token=other).status == 404


def test_demoted_admin_token_loses_admin_role(
    client: Client, flow: Flow, acme: Member, clock: ManualClock
) -> None:
    second = add_member("acme", "second@acme.example", role="admin")
    flow.enroll(second, flow.login_ok(second, "authenticated")["access_token"])
    flow.next_step()
    demoted = flow.verify(second, flow.mfa_token(second)).body
    config = "/v1/agents/a1/config"
    before = client.request("PUT", config, json_body={}, token=demoted["access_token"])
    assert before.status == 200, before.text
    assert before.body["caller"]["roles"] == "admin"

    clock.advance(1)
    token = flow.login_ok(acme, "authenticated")["access_token"]
    assert _patch(client, token, second, {"role": "viewer"}).status == 200
    clock.advance(11)  # past the authorizer's session cache

    after = client.request("PUT", config, json_body={}, token=demoted["access_token"])
    assert after.status == 403, after.text
    refresh = client.post("/v1/auth/refresh", {"refresh_token": demoted["refresh_token"]})
    assert refresh.status == 401, refresh.text
    flow.next_step()
    again = flow.verify(second, flow.mfa_token(second)).body
    fresh = client.request("PUT", config, json_body={}, token=again["access_token"])
    assert fresh.status == 200, fresh.text
    assert fresh.body["caller"]["roles"] == "viewer"


def test_admins_demoting_each_other_keep_one(
    client: Client, flow: Flow, acme: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = add_member("acme", "second@acme.example", role="admin")
    token = flow.login_ok(acme, "authenticated")["access_token"]
    require_admin = members.require_admin

    def demoted_after_the_check(*args: Any, **kwargs: Any) -> Any:
        # The second admin demotes the first between the first's role check and its write.
        admin = require_admin(*args, **kwargs)
        store = runtime.services().store
        current = store.get_user("acme", admin.user_id)
        assert current is not None
        store.update_member(current, role="operator", status=None, now=flow.clock.now(), events=[])
        return admin

    monkeypatch.setattr(members, "require_admin", demoted_after_the_check)
    reply = _patch(client, token, second, {"role": "operator"})
    assert reply.status == 403, reply.text
    admins = runtime.services().store.list_admins("acme")
    assert [admin.user_id for admin in admins] == [second.user_id]


def test_member_change_needs_a_recent_mfa_once_the_admin_has_a_factor(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    member = add_member("acme", "ops@acme.example")
    set_policy("acme", reauthentication="sensitive_only")
    password_only = flow.login_ok(enrolled, "authenticated")["access_token"]
    refused = _patch(client, password_only, member, {"role": "admin"})
    assert refused.status == 403
    assert refused.body["code"] == "step_up_required"
    set_policy("acme")
    allowed = _patch(client, fresh_mfa_token(flow, enrolled), member, {"role": "admin"})
    assert allowed.status == 200


def test_dashboard_reports_each_state_and_the_summary(
    client: Client, flow: Flow, clock: ManualClock, acme: Member
) -> None:
    enrolled_member = add_member("acme", "enrolled@acme.example")
    _enroll_totp(flow, enrolled_member)
    in_grace = add_member("acme", "grace@acme.example")
    overdue = add_member("acme", "overdue@acme.example", role="viewer")
    disabled = add_member("acme", "gone@acme.example", role="viewer")
    set_policy("acme", enforcement="required", grace_days=7)
    flow.login_ok(overdue, "authenticated")  # starts the grace period
    clock.advance(8 * DAY)
    grace_start = int(clock.now())
    flow.login_ok(in_grace, "authenticated")
    admin_token = fresh_mfa_token(flow, _enrolled_admin(flow, acme))
    assert _patch(client, admin_token, disabled, {"status": "disabled"}).status == 200

    reply = client.get(STATUS, token=admin_token)
    assert reply.status == 200, reply.text
    states = {m["user_id"]: m for m in reply.body["members"]}
    assert states[enrolled_member.user_id]["status"] == "enrolled"
    assert states[enrolled_member.user_id]["methods"] == ["totp"]
    assert states[in_grace.user_id]["status"] == "grace"
    assert states[in_grace.user_id]["deadline"] == grace_start + 7 * DAY
    assert states[overdue.user_id]["status"] == "overdue"
    assert states[disabled.user_id]["status"] == "disabled"
    assert states[acme.user_id]["status"] == "enrolled"

    summary = reply.body["summary"]
    assert summary["members"] == 4
    assert summary["enrollment_rate"] == 0.5
    assert summary["by_role"]["admin"] == {"members": 1, "enrolled": 1, "enrollment_rate": 1.0}
    assert summary["by_role"]["operator"]["enrolled"] == 1
    assert summary["by_role"]["viewer"] == {"members": 1, "enrolled": 0, "enrollment_rate": 0.0}
    assert summary["by_method"] == {"totp": 2}


def test_dashboard_pages_and_reports_locked_members(
    client: Client, flow: Flow, clock: ManualClock, acme: Member
) -> None:
    locked = add_member("acme", "locked@acme.example")
    _enroll_totp(flow, locked)
    mfa_token = flow.mfa_token(locked)
    for _ in range(10):
        flow.verify(locked, mfa_token, "000000")
    token = flow.login_ok(acme, "authenticated")["access_token"]
    first = client.get(STATUS + "?limit=1", token=token)
    assert len(first.body["members"]) == 1
    second = client.get(STATUS + f"?limit=1&next={first.body['next']}", token=token)
    states = {m["user_id"]: m["status"] for m in first.body["members"] + second.body["members"]}
    assert states[locked.user_id] == "locked"
    assert first.body["summary"] == second.body["summary"]


def _enrolled_admin(flow: Flow, admin: Member) -> Member:
    """Give the org's admin TOTP during the grace period that this login starts."""
    body = flow.login_ok(admin, "authenticated")
    assert body["mfa_enrollment_deadline"]
    flow.enroll(admin, body["access_token"])
    return admin
