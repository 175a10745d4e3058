"""The whole flow over HTTP: bootstrap, login, enroll, confirm, logout, login, verify, refresh."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pyotp
import pytest

from mfa_core import cli
from tests.api.conftest import add_member, add_org
from tests.api.harness import Client, Flow, Member


def test_whole_flow_from_bootstrap_to_logout(client: Client, flow: Flow) -> None:
    output = io.StringIO()
    with redirect_stdout(output):
        exit_code = cli.main(
            [
                "org", "bootstrap", "--org-id", "initech", "--name", "Initech",
                "--admin-email", "Admin@Initech.example", "--enforcement", "optional",
            ]
        )  # fmt: skip
    assert exit_code == 0
    printed = json.loads(output.getvalue())
    admin = Member("initech", "admin@initech.example", printed["password"], printed["user_id"])
    assert printed["role"] == "admin"

    # First login: no factor yet and enforcement optional, so a password-only session.
    first = flow.login_ok(admin, "authenticated")
    assert first["mfa_enrollment_recommended"] is True
    access = first["access_token"]

    enroll = client.post("/v1/me/factors/totp", {"label": "Work phone"}, token=access)
    assert enroll.status == 201, enroll.text
    assert enroll.body["status"] == "pending"
    assert enroll.body["otpauth_uri"].startswith("otpauth://totp/")
    assert enroll.body["qr_svg"].startswith("<svg")
    factor_id = enroll.body["factor_id"]
    admin.totp_secret, admin.factor_id = enroll.body["secret"], factor_id

    confirm = client.post(
        f"/v1/me/factors/totp/{factor_id}/confirm",
        {"code": flow.code(admin.totp_secret)},
        token=access,
    )
    assert confirm.status == 200, confirm.text
    assert confirm.body["status"] == "active"

    listed = client.get("/v1/me/factors", token=access)
    assert listed.status == 200
    assert [f["factor_id"] for f in listed.body["factors"]] == [factor_id]
    assert "secret" not in listed.text
    assert admin.totp_secret not in listed.text

    logout = client.post("/v1/auth/logout", token=access)
    assert logout.status == 204
    assert client.get("/v1/me/sessions", token=access).status == 401
    refresh_after_logout = client.post(
        "/v1/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert refresh_after_logout.status == 401

    # Second login: the factor is active, so MFA is required.
    second = flow.login_ok(admin, "mfa_required")
    assert second["factors"] == [{"factor_id": factor_id, "type": "totp", "label": "Work phone"}]
    flow.next_step()  # the confirmation used the current step
    verified = flow.verify(admin, second["mfa_token"])
    assert verified.status == 200, verified.text
    tokens = verified.body
    assert tokens["status"] == "authenticated"
    claims = _claims(tokens["access_token"])
    assert claims["acr"] == "aal2"
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["mfa_time"] == int(flow.clock.now())

    sessions = client.get("/v1/me/sessions", token=tokens["access_token"])
    assert sessions.status == 200
    assert [s["current"] for s in sessions.body["sessions"]] == [True]

    refreshed = client.post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert refreshed.status == 200, refreshed.text
    assert refreshed.body["refresh_token"] != tokens["refresh_token"]
    assert _claims(refreshed.body["access_token"])["acr"] == "aal2"

    final_logout = client.post("/v1/auth/logout", token=refreshed.body["access_token"])
    assert final_logout.status == 204
    again = client.post("/v1/auth/refresh", {"refresh_token": refreshed.body["refresh_token"]})
    assert again.status == 401


def _claims(token: str) -> dict[str, object]:
    from jose import jwt  # noqa: PLC0415

    claims: dict[str, object] = jwt.get_unverified_claims(token)
    return claims


def test_required_enforcement_asks_for_enrollment(client: Client, flow: Flow) -> None:
    member = add_org("globex", enforcement="required")
    body = flow.login_ok(member, "enrollment_required")
    enrollment_token = body["enrollment_token"]
    assert "access_token" not in body

    # The enrollment token enrolls factors and does nothing else.
    assert client.get("/v1/me/sessions", token=enrollment_token).status == 401
    flow.enroll(member, enrollment_token)
    flow.next_step()

    mfa_token = flow.mfa_token(member)
    verified = flow.verify(member, mfa_token)
    assert verified.status == 200, verified.text


def test_pending_factor_grants_nothing(client: Client, flow: Flow) -> None:
    member = add_org("hooli", enforcement="required")
    enrollment_token = flow.login_ok(member, "enrollment_required")["enrollment_token"]
    pending = client.post("/v1/me/factors/totp", {}, token=enrollment_token)
    assert pending.status == 201

    # Still no factor counts: the next login again requires enrollment.
    flow.login_ok(member, "enrollment_required")
    listed = client.get("/v1/me/factors", token=enrollment_token)
    assert listed.body["factors"][0]["status"] == "pending"


def test_enforcement_off_skips_mfa_even_when_enrolled(flow: Flow, client: Client) -> None:
    member = add_org("umbrella", enforcement="off")
    access = flow.login_ok(member, "authenticated")["access_token"]
    flow.enroll(member, access)
    body = flow.login_ok(member, "authenticated")
    assert _claims(body["access_token"])["acr"] == "aal1"


def test_admin_creates_member_who_can_log_in(client: Client, flow: Flow, acme: Member) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    created = client.post(
        "/v1/orgs/acme/users", {"email": "Dev@Acme.example", "role": "operator"}, token=access
    )
    assert created.status == 201, created.text
    assert created.body["email"] == "dev@acme.example"
    member = Member("acme", "dev@acme.example", created.body["initial_password"], "")
    body = flow.login_ok(member, "authenticated")
    assert _claims(body["access_token"])["roles"] == ["operator"]

    duplicate = client.post(
        "/v1/orgs/acme/users", {"email": "dev@acme.example", "role": "viewer"}, token=access
    )
    assert duplicate.status == 409


def test_non_admin_cannot_create_members(client: Client, flow: Flow, acme: Member) -> None:
    operator = add_member("acme", "op@acme.example")
    access = flow.login_ok(operator, "authenticated")["access_token"]
    reply = client.post(
        "/v1/orgs/acme/users", {"email": "x@acme.example", "role": "admin"}, token=access
    )
    assert reply.status == 403
    assert reply.body["code"] == "forbidden"


@pytest.mark.parametrize("email", ["nobody@acme.example", "admin@acme.example"])
def test_login_failures_look_the_same(client: Client, acme: Member, email: str) -> None:
    reply = client.post(
        "/v1/auth/login", {"org_id": "acme", "email": email, "password": "wrong password!!"}
    )
    assert reply.status == 401
    assert reply.body == {
        "type": "urn:agent-console:mfa:problem:authentication_failed",
        "title": "Authentication failed",
        "status": 401,
        "detail": "The email or password is incorrect.",
        "code": "authentication_failed",
    }


def test_unknown_email_costs_one_argon2_verification(
    client: Client, acme: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfa_core import passwords  # noqa: PLC0415

    hasher = passwords._hasher()
    calls: list[str] = []
    original = type(hasher).verify

    def counting_verify(self: object, hash: str, password: str) -> bool:
        calls.append(hash[:9])
        return original(self, hash, password)  # type: ignore[arg-type]

    monkeypatch.setattr(type(hasher), "verify", counting_verify)
    for email in ("nobody@acme.example", "admin@acme.example"):
        reply = client.post(
            "/v1/auth/login", {"org_id": "acme", "email": email, "password": "wrong password!!"}
        )
        assert reply.status == 401
    assert calls == ["$argon2id", "$argon2id"]


def test_totp_uri_parses_as_authenticator_apps_read_it(
    client: Client, flow: Flow, acme: Member
) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    enroll = client.post("/v1/me/factors/totp", {}, token=access)
    parsed = pyotp.parse_uri(enroll.body["otpauth_uri"])
    assert parsed.issuer == "Agent Console"
    assert parsed.name == "admin@acme.example"
    assert parsed.digits == 6
    assert parsed.interval == 30
    assert parsed.secret == enroll.body["secret"]
