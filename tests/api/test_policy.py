"""The org's MFA policy: its API, and the login decisions it drives, through the local gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack
from mfa_core import audit, cli, runtime
from mfa_core.clock import ManualClock
from mfa_core.policy import MfaPolicy, mfa_policy, set_mfa_policy
from tests.api.conftest import START, add_member, add_org
from tests.api.harness import Client, Flow, Member
from tests.api.test_webauthn import audit_items, audited
from tests.authenticator import SoftAuthenticator

DAY = 86_400
POLICY_PATH = "/v1/orgs/acme/mfa-policy"


def set_policy(org_id: str, **changes: Any) -> MfaPolicy:
    """Replace an org's policy in-process, as an operator would, starting from the defaults."""
    return set_mfa_policy(
        runtime.services(),
        org_id=org_id,
        policy=MfaPolicy(**changes),
        expected_version=None,
        actor="operator",
        context=audit.SYSTEM,
    )


def document(**changes: Any) -> dict[str, Any]:
    """A whole policy document for PUT, the defaults with `changes`."""
    body = MfaPolicy().as_json()
    body.update(changes)
    return body


def fresh_mfa_token(flow: Flow, member: Member) -> str:
    """Sign in with password and TOTP; return an access token with a fresh MFA."""
    flow.next_step()
    reply = flow.verify(member, flow.mfa_token(member))
    assert reply.status == 200, reply.text
    token: str = reply.body["access_token"]
    return token


# -- The policy API ------------------------------------------------------------------------------


def test_admin_reads_the_default_policy(client: Client, flow: Flow, acme: Member) -> None:
    token = flow.login_ok(acme, "authenticated")["access_token"]
    reply = client.get(POLICY_PATH, token=token)
    assert reply.status == 200, reply.text
    assert reply.body["policy"]["enforcement"] == "optional"
    assert reply.body["policy"]["allowed_methods"] == ["totp", "webauthn", "sms"]
    assert reply.header("ETag") == '"0"'


def test_member_who_is_not_admin_cannot_read_the_policy(
    client: Client, flow: Flow, acme: Member
) -> None:
    viewer = add_member("acme", "viewer@acme.example", role="viewer")
    token = flow.login_ok(viewer, "authenticated")["access_token"]
    reply = client.get(POLICY_PATH, token=token)
    assert reply.status == 403
    assert reply.body["code"] == "forbidden"


def test_admin_of_another_org_gets_not_found(client: Client, flow: Flow, acme: Member) -> None:
    other = add_org("globex")
    token = flow.login_ok(other, "authenticated")["access_token"]
    assert client.get(POLICY_PATH, token=token).status == 404
    put = client.request("PUT", POLICY_PATH, json_body=document(), token=token)
    assert put.status == 404


def test_policy_change_needs_a_recent_mfa(client: Client, flow: Flow, enrolled: Member) -> None:
    token = fresh_mfa_token(flow, enrolled)
    flow.clock.advance(6 * 60)
    reply = client.request("PUT", POLICY_PATH, json_body=document(), token=token)
    assert reply.status == 403
    assert reply.body["code"] == "step_up_required"


def test_policy_change_is_applied_versioned_and_audited(
    client: Client, flow: Flow, enrolled: Member, stack: LocalStack
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    new = document(grace_days=14, max_sessions=3, geo_anomaly_action="step_up")
    reply = client.request(
        "PUT", POLICY_PATH, json_body=new, token=token, headers={"If-Match": '"0"'}
    )
    assert reply.status == 200, reply.text
    assert reply.body["version"] == 1
    assert reply.header("ETag") == '"1"'
    assert client.get(POLICY_PATH, token=token).body["policy"] == new

    [event] = [i for i in audit_items(stack, "acme") if i["event_type"] == "policy.mfa"]
    assert event["actor"] == f"user:{enrolled.user_id}"
    assert event["details"]["before"]["grace_days"] == 0
    assert event["details"]["after"]["grace_days"] == 14
    assert event["details"]["before"]["enforcement"] == "optional"


def test_if_match_star_accepts_any_version(client: Client, flow: Flow, enrolled: Member) -> None:
    token = fresh_mfa_token(flow, enrolled)
    reply = client.request(
        "PUT", POLICY_PATH, json_body=document(), token=token, headers={"If-Match": "*"}
    )
    assert reply.status == 200, reply.text


def test_unchanged_policy_is_not_written_again(
    client: Client, flow: Flow, enrolled: Member, stack: LocalStack
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    new = document(grace_days=3)
    first = client.request("PUT", POLICY_PATH, json_body=new, token=token)
    assert first.status == 200, first.text

    again = client.request("PUT", POLICY_PATH, json_body=new, token=token)

    assert again.status == 200, again.text
    assert again.body["version"] == first.body["version"] == 1
    events = [i for i in audit_items(stack, "acme") if i["event_type"] == "policy.mfa"]
    assert len(events) == 1


def test_get_response_sent_back_whole_is_explained(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    wrapped = client.get(POLICY_PATH, token=token).body
    reply = client.request("PUT", POLICY_PATH, json_body=wrapped, token=token)
    assert reply.status == 400
    assert reply.body["field"] == "policy"
    assert "without the wrapper" in reply.body["detail"]


def test_sms_settings_change_moves_the_policy_version(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    before = client.get(POLICY_PATH, token=token).header("ETag")
    assert cli.main(["org", "sms", "--org-id", "acme", "--no-fallback-only"]) == 0
    after = client.get(POLICY_PATH, token=token)
    assert after.header("ETag") != before
    assert after.body["policy"]["sms_fallback_only"] is False
    stale = client.request(
        "PUT", POLICY_PATH, json_body=document(), token=token, headers={"If-Match": before or ""}
    )
    assert stale.status == 412


def test_authorize_applies_the_policy_cap_to_own_routes(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    set_policy("acme", enforcement="optional", step_up_max_age_minutes=1)
    token = fresh_mfa_token(flow, enrolled)
    flow.clock.advance(76)
    check = client.post("/v1/auth/authorize", {"method": "PUT", "path": POLICY_PATH}, token=token)
    assert check.status == 403, check.text
    assert check.body["max_mfa_age"] == 60
    put = client.request("PUT", POLICY_PATH, json_body=document(), token=token)
    assert put.status == 403
    assert put.body["max_mfa_age"] == 60
    agents = client.post(
        "/v1/auth/authorize", {"method": "PUT", "path": "/v1/agents/a1/config"}, token=token
    )
    assert agents.status == 200, agents.text


def test_stale_if_match_is_refused(client: Client, flow: Flow, enrolled: Member) -> None:
    token = fresh_mfa_token(flow, enrolled)
    first = client.request("PUT", POLICY_PATH, json_body=document(), token=token)
    assert first.status == 200
    stale = client.request(
        "PUT", POLICY_PATH, json_body=document(), token=token, headers={"If-Match": '"0"'}
    )
    assert stale.status == 412
    assert stale.body["code"] == "precondition_failed"
    malformed = client.request(
        "PUT", POLICY_PATH, json_body=document(), token=token, headers={"If-Match": "v1"}
    )
    assert malformed.status == 400
    assert malformed.body["field"] == "If-Match"


def _without(name: str) -> dict[str, Any]:
    body = document()
    del body[name]
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_without("grace_days"), "grace_days"),
        (document(extra=1), "extra"),
        (document(enforcement="mandatory"), "enforcement"),
        (document(grace_days=91), "grace_days"),
        (document(grace_days=True), "grace_days"),
        (document(grace_days="7"), "grace_days"),
        (document(max_sessions=-1), "max_sessions"),
        (document(allowed_methods=[]), "allowed_methods"),
        (document(allowed_methods=["totp", "totp"]), "allowed_methods"),
        (document(allowed_methods=["email"]), "allowed_methods"),
        (document(allowed_methods=["sms"]), "allowed_methods"),
        (document(scope="roles", scope_roles=[]), "scope_roles"),
        (document(scope="all", scope_roles=["admin"]), "scope_roles"),
        (document(scope_roles=["owner"]), "scope_roles"),
        (
            document(security_key_roles=["admin"], allowed_methods=["totp"]),
            "security_key_roles",
        ),
        (document(enforcement="optional", enforce_after="2027-03-01T00:00:00Z"), "enforce_after"),
        (document(enforce_after="2027-03-01T00:00:00"), "enforce_after"),
        (document(enforce_after="next tuesday"), "enforce_after"),
        (document(reauthentication="weekly"), "reauthentication"),
        (document(step_up_max_age_minutes=0), "step_up_max_age_minutes"),
        (document(session_limit_action="ignore"), "session_limit_action"),
        (document(reset_approvals=4), "reset_approvals"),
        (document(geo_anomaly_action="alert"), "geo_anomaly_action"),
        (document(audit_retention_days=89), "audit_retention_days"),
        (document(audit_retention_days=3651), "audit_retention_days"),
        (document(audit_retention_days="400"), "audit_retention_days"),
        (_without("audit_retention_days"), "audit_retention_days"),
        (document(sso={"trust_idp_mfa": True}), "sso.accepted_amr"),
        (
            document(
                sso={
                    "trust_idp_mfa": True,
                    "accepted_amr": [],
                    "accepted_acr": [],
                    "max_auth_age_minutes": 60,
                }
            ),
            "sso.accepted_amr",
        ),
        (
            document(
                sso={
                    "trust_idp_mfa": False,
                    "accepted_amr": ["has space"],
                    "accepted_acr": [],
                    "max_auth_age_minutes": 60,
                }
            ),
            "sso.accepted_amr",
        ),
        # A password-only login at the provider must not count as MFA.
        *[
            (
                document(
                    sso={
                        "trust_idp_mfa": True,
                        "accepted_amr": ["mfa", single],
                        "accepted_acr": [],
                        "max_auth_age_minutes": 60,
                    }
                ),
                "sso.accepted_amr",
            )
            for single in ("pwd", "pin", "kba")
        ],
    ],
)
def test_invalid_policy_is_refused_naming_the_field(
    client: Client, flow: Flow, enrolled: Member, body: dict[str, Any], field: str
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    reply = client.request("PUT", POLICY_PATH, json_body=body, token=token)
    assert reply.status == 400, reply.text
    assert reply.body["field"] == field
    assert client.get(POLICY_PATH, token=token).body["version"] == 0


# -- Login decisions -----------------------------------------------------------------------------


def _enroll_totp(flow: Flow, member: Member) -> None:
    """Give `member` an active TOTP factor while the org's enforcement is optional."""
    token = flow.login_ok(member, "authenticated")["access_token"]
    flow.enroll(member, token)
    flow.next_step()


@pytest.mark.parametrize(
    ("policy", "role", "enrolled_factor", "expected"),
    [
        ({"enforcement": "off"}, "operator", False, "authenticated"),
        ({"enforcement": "off"}, "operator", True, "authenticated"),
        ({"enforcement": "optional"}, "operator", False, "authenticated"),
        ({"enforcement": "optional"}, "operator", True, "mfa_required"),
        ({"enforcement": "required"}, "operator", False, "enrollment_required"),
        ({"enforcement": "required"}, "operator", True, "mfa_required"),
        ({"enforcement": "required", "grace_days": 7}, "operator", False, "authenticated"),
        (
            {"enforcement": "required", "scope": "roles", "scope_roles": ("admin",)},
            "operator",
            False,
            "authenticated",
        ),
        (
            {"enforcement": "required", "scope": "roles", "scope_roles": ("operator",)},
            "operator",
            False,
            "enrollment_required",
        ),
        (
            {"enforcement": "required", "scope": "roles", "scope_roles": ("admin",)},
            "operator",
            True,
            "mfa_required",
        ),
        (
            {"enforcement": "required", "allowed_methods": ("webauthn",)},
            "operator",
            True,
            "mfa_required",
        ),
        (
            {"enforcement": "optional", "allowed_methods": ("webauthn",)},
            "operator",
            True,
            "mfa_required",
        ),
        (
            {"enforcement": "required", "reauthentication": "sensitive_only"},
            "viewer",
            True,
            "authenticated",
        ),
    ],
)
def test_login_decision_matrix(
    *,
    flow: Flow,
    acme: Member,
    policy: dict[str, Any],
    role: str,
    enrolled_factor: bool,
    expected: str,
) -> None:
    member = add_member("acme", f"{role}@acme.example", role=role)
    if enrolled_factor:
        _enroll_totp(flow, member)
    set_policy("acme", **policy)
    body = flow.login_ok(member, expected)
    if expected == "authenticated" and not enrolled_factor:
        required = policy["enforcement"] == "required" and "scope" not in policy
        if required:
            assert body["mfa_enrollment_deadline"] == int(flow.clock.now()) + 7 * DAY
        elif policy["enforcement"] == "optional" or "scope" in policy:
            assert body["mfa_enrollment_recommended"] is True
    if expected == "enrollment_required":
        # In the policy's order, without SMS, which is a fallback only by default.
        allowed = policy.get("allowed_methods", ("totp", "webauthn", "sms"))
        assert body["allowed_methods"] == [m for m in allowed if m != "sms"]
    if expected == "authenticated" and enrolled_factor and policy["enforcement"] != "off":
        assert body["reauthentication"] == "sensitive_only"


def test_grace_period_counts_from_the_first_login_after_enforcement(
    flow: Flow, clock: ManualClock, acme: Member, stack: LocalStack
) -> None:
    member = add_member("acme", "late@acme.example")
    set_policy("acme", enforcement="required", grace_days=7)
    clock.advance(3 * DAY)
    first = flow.login_ok(member, "authenticated")
    deadline = START + 3 * DAY + 7 * DAY
    assert first["mfa_enrollment_deadline"] == deadline
    clock.advance(6 * DAY)
    assert flow.login_ok(member, "authenticated")["mfa_enrollment_deadline"] == deadline
    clock.advance(1 * DAY)
    assert flow.login_ok(member, "enrollment_required")
    assert audited(stack, "acme", "mfa.grace_started") == [("success", "enrollment")]


def test_scheduled_enforcement_switches_on_without_a_change(
    flow: Flow, clock: ManualClock, acme: Member
) -> None:
    member = add_member("acme", "rollout@acme.example")
    set_policy("acme", enforcement="required", enforce_after=START + 2 * DAY)
    assert flow.login_ok(member, "authenticated")["mfa_enrollment_recommended"] is True
    clock.set(START + 2 * DAY - 1)
    assert flow.login_ok(member, "authenticated")["mfa_enrollment_recommended"] is True
    clock.set(START + 2 * DAY)
    body = flow.login_ok(member, "enrollment_required")
    assert body["enrollment_token"]


def test_enrollment_token_refuses_a_method_the_policy_does_not_allow(
    client: Client, flow: Flow, acme: Member
) -> None:
    member = add_member("acme", "keyonly@acme.example")
    set_policy("acme", allowed_methods=("webauthn",))
    token = flow.login_ok(member, "enrollment_required")["enrollment_token"]
    reply = client.post("/v1/me/factors/totp", {"label": "Phone"}, token=token)
    assert reply.status == 403
    assert reply.body["code"] == "factor_type_not_allowed"


def test_disallowed_factor_is_refused_at_step_up(
    client: Client, flow: Flow, enrolled: Member, stack: LocalStack
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    flow.register_key(token, SoftAuthenticator())
    set_policy("acme", enforcement="optional", allowed_methods=("webauthn", "sms"))
    assert enrolled.totp_secret is not None
    flow.next_step()
    reply = client.post(
        "/v1/auth/mfa/verify",
        {"factor_id": enrolled.factor_id, "code": flow.code(enrolled.totp_secret)},
        token=token,
    )
    assert reply.status == 403, reply.text
    assert reply.body["code"] == "factor_type_not_allowed"
    assert audited(stack, "acme", "mfa.step_up") == [("denied", "factor_type_not_allowed")]


# -- Roles that must use a security key ----------------------------------------------------------


def test_key_role_with_totp_only_must_register_a_key_past_grace(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    set_policy("acme", security_key_roles=("admin",))
    login = flow.login_ok(enrolled, "mfa_required")
    assert login["next_step"] == "register_security_key"
    verified = flow.verify(enrolled, login["mfa_token"])
    assert verified.status == 200, verified.text
    assert verified.body["status"] == "enrollment_required"
    assert "access_token" not in verified.body
    token = verified.body["enrollment_token"]
    assert client.post("/v1/me/factors/totp", {}, token=token).body["code"] == (
        "factor_type_not_allowed"
    )

    key = SoftAuthenticator()
    flow.register_key(token, key)
    again = flow.login_ok(enrolled, "mfa_required")
    assert [f["type"] for f in again["factors"]] == ["webauthn"]
    assert "next_step" not in again
    spent = client.post("/v1/me/factors/webauthn/options", {}, token=token)
    assert spent.status == 401
    totp_reply = flow.verify(enrolled, again["mfa_token"])
    assert totp_reply.status == 403
    assert totp_reply.body["code"] == "factor_type_not_allowed"
    assert flow.login_with_key(enrolled, key).status == 200


def test_key_role_within_grace_signs_in_with_a_deadline(
    flow: Flow, clock: ManualClock, enrolled: Member
) -> None:
    set_policy("acme", security_key_roles=("admin",), grace_days=5)
    login = flow.login_ok(enrolled, "mfa_required")
    assert login["security_key_deadline"] == int(clock.now()) + 5 * DAY
    reply = flow.verify(enrolled, login["mfa_token"])
    assert reply.body["status"] == "authenticated"
    clock.advance(5 * DAY)
    assert flow.login_ok(enrolled, "mfa_required")["next_step"] == "register_security_key"


def test_key_role_rule_does_not_apply_to_other_roles(flow: Flow, acme: Member) -> None:
    member = add_member("acme", "ops@acme.example")
    _enroll_totp(flow, member)
    set_policy("acme", security_key_roles=("admin",))
    login = flow.login_ok(member, "mfa_required")
    assert "next_step" not in login
    assert flow.verify(member, login["mfa_token"]).body["status"] == "authenticated"


def test_operator_cli_prints_and_replaces_the_policy(
    acme: Member, tmp_path: Path, capsys: pytest.CaptureFixture[str], stack: LocalStack
) -> None:
    assert cli.main(["org", "policy", "--org-id", "acme"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 0
    assert shown["policy"]["enforcement"] == "optional"

    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document(grace_days=10)), encoding="utf-8")
    assert cli.main(["org", "policy", "--org-id", "acme", "--set", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["policy"]["grace_days"] == 10
    stored = mfa_policy(runtime.services().store.get_org("acme"))
    assert (stored.grace_days, stored.version) == (10, 1)
    events = [i for i in audit_items(stack, "acme") if i["event_type"] == "policy.mfa"]
    assert {e["actor"] for e in events} == {"operator"}

    # The file the command prints is accepted as it is.
    printed = {"org_id": "acme", "version": 1, "policy": document(grace_days=12)}
    path.write_text(json.dumps(printed), encoding="utf-8")
    assert cli.main(["org", "policy", "--org-id", "acme", "--set", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["policy"]["grace_days"] == 12

    assert cli.main(["org", "policy", "--org-id", "nosuch"]) == 2
    assert "not_found" in capsys.readouterr().err

    # A printed file that is stale, or of another org, is refused.
    path.write_text(json.dumps(printed), encoding="utf-8")
    assert cli.main(["org", "policy", "--org-id", "acme", "--set", str(path)]) == 2
    assert "precondition_failed" in capsys.readouterr().err
    for wrong in ({"org_id": "globex", "version": 2}, {"version": "2"}, {"version": True}):
        path.write_text(json.dumps({**printed, **wrong}), encoding="utf-8")
        assert cli.main(["org", "policy", "--org-id", "acme", "--set", str(path)]) == 2
        assert "(policy)" in capsys.readouterr().err

    path.write_text(json.dumps(document(grace_days=-1)), encoding="utf-8")
    assert cli.main(["org", "policy", "--org-id", "acme", "--set", str(path)]) == 2
    assert "(grace_days)" in capsys.readouterr().err


def test_factor_of_a_method_no_longer_allowed_still_proves_the_user(
    client: Client, flow: Flow, acme: Member
) -> None:
    member = add_member("acme", "legacy@acme.example")
    _enroll_totp(flow, member)
    set_policy("acme", allowed_methods=("webauthn",))
    login = flow.login_ok(member, "mfa_required")
    assert login["next_step"] == "enroll_allowed_method"
    assert [f["type"] for f in login["factors"]] == ["totp"]
    verified = flow.verify(member, login["mfa_token"])
    assert verified.status == 200, verified.text
    assert verified.body["status"] == "enrollment_required"
    assert verified.body["allowed_methods"] == ["webauthn"]
    assert verified.body["expires_in"] == 300
    token = verified.body["enrollment_token"]
    assert client.post("/v1/me/factors/totp", {}, token=token).status == 403
    flow.register_key(token, SoftAuthenticator())
    assert [f["type"] for f in flow.login_ok(member, "mfa_required")["factors"]] == ["webauthn"]


def test_member_creation_needs_a_recent_mfa_once_the_admin_has_a_factor(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    set_policy("acme", reauthentication="sensitive_only")
    password_only = flow.login_ok(enrolled, "authenticated")["access_token"]
    body = {"email": "evil@acme.example", "role": "admin"}
    refused = client.post("/v1/orgs/acme/users", body, token=password_only)
    assert refused.status == 403
    assert refused.body["code"] == "step_up_required"
    set_policy("acme")
    created = client.post("/v1/orgs/acme/users", body, token=fresh_mfa_token(flow, enrolled))
    assert created.status == 201, created.text


def test_key_role_steps_up_only_with_its_key(client: Client, flow: Flow, enrolled: Member) -> None:
    key = SoftAuthenticator()
    flow.register_key(fresh_mfa_token(flow, enrolled), key)
    set_policy("acme", security_key_roles=("admin",), reauthentication="sensitive_only")
    token = flow.login_ok(enrolled, "authenticated")["access_token"]
    assert enrolled.totp_secret is not None
    flow.next_step()
    by_totp = client.post(
        "/v1/auth/mfa/verify",
        {"factor_id": enrolled.factor_id, "code": flow.code(enrolled.totp_secret)},
        token=token,
    )
    assert by_totp.status == 403
    assert by_totp.body["code"] == "factor_type_not_allowed"
    challenge = flow.key_challenge(token)
    credential = key.authenticate(challenge["options"], origin=flow.origin)
    by_key = flow.key_verify(token, challenge, credential)
    assert by_key.status == 200, by_key.text


def test_key_grace_counts_apart_from_the_enrollment_grace(
    flow: Flow, clock: ManualClock, acme: Member
) -> None:
    member = add_member("acme", "early@acme.example", role="admin")
    set_policy("acme", enforcement="required", grace_days=14)
    flow.login_ok(member, "authenticated")  # the enrollment grace starts here
    clock.advance(10 * DAY)
    _enroll_totp(flow, member)
    set_policy("acme", enforcement="required", grace_days=14, security_key_roles=("admin",))
    login = flow.login_ok(member, "mfa_required")
    assert login["security_key_deadline"] == int(clock.now()) + 14 * DAY


def test_key_role_without_any_factor_must_enroll_a_key(flow: Flow, acme: Member) -> None:
    member = add_member("acme", "fresh-admin@acme.example", role="admin")
    set_policy("acme", security_key_roles=("admin",))
    body = flow.login_ok(member, "enrollment_required")
    assert body["allowed_methods"] == ["webauthn"]


def test_enrollment_token_without_mfa_is_spent_by_any_factor(
    client: Client, flow: Flow, acme: Member
) -> None:
    # The owner keeps a session from before enforcement; an attacker with the password gets a
    # key-only enrollment token; the owner then enrolls TOTP.
    owner_session = flow.login_ok(acme, "authenticated")["access_token"]
    set_policy("acme", security_key_roles=("admin",))
    attacker_token = flow.login_ok(acme, "enrollment_required")["enrollment_token"]
    flow.enroll(acme, owner_session)
    options = client.post("/v1/me/factors/webauthn/options", {}, token=attacker_token)
    assert options.status == 401
    assert options.body["code"] == "invalid_token"


def test_post_mfa_enrollment_token_expires_with_its_mfa(
    client: Client, flow: Flow, clock: ManualClock, enrolled: Member
) -> None:
    set_policy("acme", security_key_roles=("admin",))
    login = flow.login_ok(enrolled, "mfa_required")
    token = flow.verify(enrolled, login["mfa_token"]).body["enrollment_token"]
    clock.advance(301)
    assert client.post("/v1/me/factors/webauthn/options", {}, token=token).status == 401


def test_authorize_matches_handlers_for_a_user_without_factors(
    client: Client, flow: Flow, acme: Member
) -> None:
    token = flow.login_ok(acme, "authenticated")["access_token"]
    for method, path in (("POST", "/v1/orgs/acme/users"), ("PUT", "/v1/me/password")):
        check = client.post("/v1/auth/authorize", {"method": method, "path": path}, token=token)
        assert check.status == 200, (path, check.text)
    regenerate = client.post(
        "/v1/auth/authorize", {"method": "POST", "path": "/v1/me/backup-codes"}, token=token
    )
    assert regenerate.status == 403


def test_user_with_only_disallowed_factors_can_still_step_up(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    set_policy(
        "acme",
        enforcement="optional",
        allowed_methods=("webauthn",),
        reauthentication="sensitive_only",
    )
    token = flow.login_ok(enrolled, "authenticated")["access_token"]
    assert enrolled.totp_secret is not None
    flow.next_step()
    step_up = client.post(
        "/v1/auth/mfa/verify",
        {"factor_id": enrolled.factor_id, "code": flow.code(enrolled.totp_secret)},
        token=token,
    )
    assert step_up.status == 200, step_up.text
    flow.register_key(step_up.body["access_token"], SoftAuthenticator())


@pytest.mark.parametrize("value", ['"²"', '"' + "9" * 5000 + '"', 'W/"0"', "0", '""'])
def test_malformed_if_match_is_refused(
    client: Client, flow: Flow, enrolled: Member, value: str
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    reply = client.request(
        "PUT", POLICY_PATH, json_body=document(), token=token, headers={"If-Match": value}
    )
    assert reply.status == 400, reply.text
    assert reply.body["field"] == "If-Match"


def test_disallowed_factor_cannot_step_up_where_mfa_is_required(
    client: Client, flow: Flow, enrolled: Member
) -> None:
    old_session = fresh_mfa_token(flow, enrolled)
    set_policy("acme", enforcement="required", allowed_methods=("webauthn",))
    assert enrolled.totp_secret is not None
    flow.next_step()
    step_up = client.post(
        "/v1/auth/mfa/verify",
        {"factor_id": enrolled.factor_id, "code": flow.code(enrolled.totp_secret)},
        token=old_session,
    )
    assert step_up.status == 403
    assert step_up.body["code"] == "factor_type_not_allowed"
