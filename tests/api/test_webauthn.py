"""Security keys over HTTP: registration, login, step-up and removal, and every rejection rule.

A software authenticator plays the key; each rejection is checked for its status, its problem
code and its audit event.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import boto3
import cbor2
import pytest
from jose import jwt

from local.stack import LocalStack
from mfa_core import cli, policy, runtime
from mfa_core.errors import InvalidInput
from mfa_core.store.repository import ConditionFailed
from tests.api.conftest import add_member, add_org
from tests.api.harness import Client, Flow, Member, Reply
from tests.authenticator import (
    EDDSA,
    ES256,
    RS256,
    SoftAuthenticator,
    with_client_data,
    with_flipped_signature_bit,
)

AAGUID = bytes.fromhex("2fc0579f811347eab116bb5a8db9202a")
AAGUID_TEXT = "2fc0579f-8113-47ea-b116-bb5a8db9202a"


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def audit_items(stack: LocalStack, org_id: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb", endpoint_url=stack.aws_endpoint_url).Table(
        runtime.services().settings.audit_table
    )
    items: list[dict[str, Any]] = table.query(
        KeyConditionExpression="org_id = :o", ExpressionAttributeValues={":o": org_id}
    )["Items"]
    return items


def audited(stack: LocalStack, org_id: str, event_type: str) -> list[tuple[str, str | None]]:
    """Return (outcome, reason) of each audit event of `event_type`, oldest first."""
    return [
        (item["outcome"], item.get("reason"))
        for item in audit_items(stack, org_id)
        if item["event_type"] == event_type
    ]


def assert_rejected(reply: Reply, *, status: int = 401, code: str = "invalid_credential") -> None:
    assert reply.status == status, reply.text
    assert reply.body["code"] == code, reply.body


@pytest.fixture
def key() -> SoftAuthenticator:
    return SoftAuthenticator()


@pytest.fixture
def keyed(acme: Member, flow: Flow, key: SoftAuthenticator) -> Member:
    """The acme admin with one registered security key (and no other factor)."""
    access = flow.login_ok(acme, "authenticated")["access_token"]
    factor = flow.register_key(access, key)
    acme.factor_id = factor["factor_id"]
    return acme


# -- registration ------------------------------------------------------------------------------


def test_creation_options_are_what_a_browser_takes(
    client: Client, flow: Flow, acme: Member
) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    reply = client.post("/v1/me/factors/webauthn/options", {}, token=access)
    assert reply.status == 200, reply.text
    assert reply.body["expires_in"] == 120
    options = reply.body["options"]
    assert options["rp"] == {"id": "localhost", "name": "Agent Console"}
    assert len(_b64decode(options["challenge"])) >= 32
    assert {p["alg"] for p in options["pubKeyCredParams"]} == {ES256, EDDSA, RS256}
    assert options["attestation"] == "none"
    assert options["excludeCredentials"] == []
    assert options["user"]["name"] == acme.email
    # The user handle is the opaque user id, never the email.
    assert _b64decode(options["user"]["id"]) == acme.user_id.encode()
    again = client.post("/v1/me/factors/webauthn/options", {}, token=access).body["options"]
    assert again["challenge"] != options["challenge"]


@pytest.mark.parametrize("algorithm", [ES256, EDDSA, RS256], ids=["ES256", "EdDSA", "RS256"])
def test_key_of_each_algorithm_registers_and_signs_in(
    flow: Flow, acme: Member, algorithm: int
) -> None:
    key = SoftAuthenticator(algorithm=algorithm)
    access = flow.login_ok(acme, "authenticated")["access_token"]
    factor = flow.register_key(access, key, label="YubiKey 5")
    assert factor["type"] == "webauthn"
    assert factor["status"] == "active"
    assert factor["label"] == "YubiKey 5"

    reply = flow.login_with_key(acme, key)
    assert reply.status == 200, reply.text
    claims = jwt.get_unverified_claims(reply.body["access_token"])
    assert claims["acr"] == "aal3"
    assert claims["amr"] == ["pwd", "hwk", "mfa"]


def test_factor_list_shows_key_details_without_key_material(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    access = flow.login_with_key(keyed, key).body["access_token"]
    factors = client.get("/v1/me/factors", token=access).body["factors"]
    assert len(factors) == 1
    listed = factors[0]
    assert listed["sign_count"] == key.sign_count == 1
    assert listed["transports"] == ["usb"]
    assert listed["aaguid"] == "00000000-0000-0000-0000-000000000000"
    assert listed["backup_eligible"] is False
    assert listed["clone_suspected"] is False
    assert listed["last_used_at"] is not None
    assert "public_key" not in listed
    assert "credential_id" not in listed


def test_registered_key_is_excluded_from_the_next_registration(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    access = flow.login_with_key(keyed, key).body["access_token"]
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    excluded = [entry["id"] for entry in options["options"]["excludeCredentials"]]
    assert excluded == [base64.urlsafe_b64encode(key.credential_id).rstrip(b"=").decode()]

    # A client that ignores the exclusion list still cannot register the key twice.
    options["options"]["excludeCredentials"] = []
    credential = key.register(options["options"], origin=flow.origin)
    reply = client.post(
        "/v1/me/factors/webauthn",
        {"challenge_id": options["challenge_id"], "credential": credential},
        token=access,
    )
    assert_rejected(reply, status=409, code="conflict")


def test_registration_from_another_origin_is_rejected(
    client: Client, flow: Flow, acme: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    credential = key.register(options["options"], origin="https://evil.example")
    reply = client.post(
        "/v1/me/factors/webauthn",
        {"challenge_id": options["challenge_id"], "credential": credential},
        token=access,
    )
    assert_rejected(reply, status=400, code="registration_rejected")
    assert reply.body["field"] == "credential"
    assert ("failure", "registration_invalid") in audited(stack, "acme", "factor.register")


def test_registration_challenge_is_single_use(
    client: Client, flow: Flow, acme: Member, key: SoftAuthenticator
) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    body = {
        "challenge_id": options["challenge_id"],
        "credential": key.register(options["options"], origin=flow.origin),
    }
    first = client.post("/v1/me/factors/webauthn", body, token=access)
    assert first.status == 201, first.text
    # Now the user has a factor, so the same session needs a recent MFA, which it lacks.
    again = client.post("/v1/me/factors/webauthn", body, token=access)
    assert_rejected(again, status=403, code="step_up_required")


def test_authentication_challenge_cannot_register_a_key(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    access = flow.login_with_key(keyed, key).body["access_token"]
    challenge = flow.key_challenge(access)
    other = SoftAuthenticator()
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body["options"]
    credential = other.register(
        options, origin=flow.origin, challenge=challenge["options"]["challenge"]
    )
    reply = client.post(
        "/v1/me/factors/webauthn",
        {"challenge_id": challenge["challenge_id"], "credential": credential},
        token=access,
    )
    assert_rejected(reply, status=400, code="registration_rejected")
    assert reply.body["field"] == "challenge_id"


@pytest.mark.parametrize(
    "credential",
    [
        {},
        {"id": "abc"},
        {"id": "abc", "rawId": "abc", "type": "public-key", "response": {}},
        {"id": "abc", "rawId": "!!", "type": "public-key", "response": {"clientDataJSON": 1}},
    ],
    ids=["empty", "no-raw-id", "no-client-data", "not-base64url"],
)
def test_malformed_credential_json_is_a_400(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator, credential: dict[str, Any]
) -> None:
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    reply = flow.key_verify(mfa_token, challenge, credential)
    assert_rejected(reply, status=400, code="invalid_credential_format")
    assert reply.body["field"] == "credential"


def test_credential_not_object_is_400(client: Client, flow: Flow, keyed: Member) -> None:
    reply = client.post(
        "/v1/auth/mfa/verify",
        {"challenge_id": "c", "credential": "a string"},
        token=flow.mfa_token(keyed),
    )
    assert_rejected(reply, status=400, code="invalid_input")
    assert reply.body["field"] == "credential"


# -- authentication rules ----------------------------------------------------------------------


def test_sign_count_is_stored_after_each_login(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    for expected in (1, 2, 3):
        reply = flow.login_with_key(keyed, key)
        assert reply.status == 200, reply.text
        factors = client.get("/v1/me/factors", token=reply.body["access_token"]).body["factors"]
        assert factors[0]["sign_count"] == expected


def test_wrong_origin_is_rejected_and_audited(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    reply = flow.login_with_key(keyed, key, origin="https://phishing.example")
    assert_rejected(reply)
    assert ("failure", "origin_not_allowed") in audited(stack, "acme", "login.mfa")


def test_wrong_rp_id_is_rejected_and_audited(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    reply = flow.login_with_key(keyed, key, rp_id="phishing.example")
    assert_rejected(reply)
    assert ("failure", "rp_id_mismatch") in audited(stack, "acme", "login.mfa")


def test_replayed_assertion_is_rejected_and_audited(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    credential = key.authenticate(challenge["options"], origin=flow.origin)
    assert flow.key_verify(mfa_token, challenge, credential).status == 200
    # The same response again, with a fresh login so that only the challenge is spent.
    assert_rejected(flow.key_verify(flow.mfa_token(keyed), challenge, credential))
    assert ("denied", "challenge_used") in audited(stack, "acme", "login.mfa")


def test_expired_challenge_is_rejected_and_audited(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    credential = key.authenticate(challenge["options"], origin=flow.origin)
    flow.clock.advance(121)
    assert_rejected(flow.key_verify(mfa_token, challenge, credential))
    assert ("failure", "challenge_expired") in audited(stack, "acme", "login.mfa")


def test_challenge_of_another_user_is_rejected_and_audited(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    other = add_member("acme", "other@acme.example")
    other_key = SoftAuthenticator()
    flow.register_key(flow.login_ok(other, "authenticated")["access_token"], other_key)
    theirs = flow.key_challenge(flow.mfa_token(other))

    mfa_token = flow.mfa_token(keyed)
    credential = key.authenticate({**theirs["options"], "allowCredentials": []}, origin=flow.origin)
    assert_rejected(flow.key_verify(mfa_token, theirs, credential))
    assert ("failure", "challenge_not_bound") in audited(stack, "acme", "login.mfa")


def test_challenge_of_another_login_is_rejected(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    first_login = flow.mfa_token(keyed)
    challenge = flow.key_challenge(first_login)
    credential = key.authenticate(challenge["options"], origin=flow.origin)
    assert_rejected(flow.key_verify(flow.mfa_token(keyed), challenge, credential))
    assert ("failure", "challenge_not_bound") in audited(stack, "acme", "login.mfa")


def test_registration_challenge_cannot_authenticate(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    access = flow.login_with_key(keyed, key).body["access_token"]
    registration = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    step_up = flow.key_challenge(access)
    credential = key.authenticate(
        step_up["options"], origin=flow.origin, challenge=registration["options"]["challenge"]
    )
    assert_rejected(flow.key_verify(access, registration, credential))
    assert ("failure", "challenge_unknown") in audited(stack, "acme", "mfa.step_up")


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda c: with_client_data(c, challenge="AAAA"), "challenge_mismatch"),
        (lambda c: with_client_data(c, crossOrigin=True), "cross_origin"),
        (lambda c: with_client_data(c, extra="x"), "signature_invalid"),
        (with_flipped_signature_bit, "signature_invalid"),
    ],
    ids=["client-data-challenge", "client-data-cross-origin", "client-data-field", "signature"],
)
def test_tampered_response_is_rejected_and_audited(  # noqa: PLR0917 - fixtures
    flow: Flow,
    keyed: Member,
    key: SoftAuthenticator,
    stack: LocalStack,
    tamper: Any,
    reason: str,
) -> None:
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    credential = tamper(key.authenticate(challenge["options"], origin=flow.origin))
    assert_rejected(flow.key_verify(mfa_token, challenge, credential))
    assert ("failure", reason) in audited(stack, "acme", "login.mfa")
    # The genuine response still works: a rejected one spends nothing.
    genuine = key.authenticate(challenge["options"], origin=flow.origin)
    assert flow.key_verify(mfa_token, challenge, genuine).status == 200


def test_key_of_another_user_is_not_accepted(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    stranger = SoftAuthenticator()
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    credential = stranger.authenticate(
        {**challenge["options"], "allowCredentials": []}, origin=flow.origin
    )
    assert_rejected(flow.key_verify(mfa_token, challenge, credential))
    assert ("failure", "credential_unknown") in audited(stack, "acme", "login.mfa")


def test_cloned_key_is_rejected_audited_and_flagged(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    for _ in range(3):
        assert flow.login_with_key(keyed, key).status == 200
    access = flow.login_with_key(keyed, key).body["access_token"]
    flow.enroll(keyed, access)
    clone = SoftAuthenticator(credential_id=key.credential_id, sign_count=1)
    clone.key, clone.user_handle = key.key, key.user_handle

    reply = flow.login_with_key(keyed, clone)
    assert_rejected(reply)
    assert audited(stack, "acme", "webauthn.clone_suspected") == [
        ("denied", "sign_count_not_increased")
    ]
    flow.next_step()
    signed_in = flow.verify(keyed, flow.mfa_token(keyed)).body["access_token"]
    listed = next(
        f
        for f in client.get("/v1/me/factors", token=signed_in).body["factors"]
        if f["type"] == "webauthn"
    )
    assert listed["clone_suspected"] is True
    assert listed["sign_count"] == 4


def test_flagged_key_is_blocked_for_every_copy(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    assert flow.login_with_key(keyed, key).status == 200
    clone = SoftAuthenticator(credential_id=key.credential_id, sign_count=0)
    clone.key, clone.user_handle = key.key, key.user_handle
    assert_rejected(flow.login_with_key(keyed, clone))
    # A copy that jumps ahead of the counter, and the genuine key, are both refused now.
    clone.sign_count = 1000
    assert_rejected(flow.login_with_key(keyed, clone))
    assert_rejected(flow.login_with_key(keyed, key))
    assert audited(stack, "acme", "login.mfa").count(("denied", "clone_suspected")) == 2


def test_key_that_always_reports_zero_keeps_working(
    client: Client, flow: Flow, acme: Member
) -> None:
    passkey = SoftAuthenticator(counter_step=0, backup_eligible=True, backup_state=True)
    flow.register_key(flow.login_ok(acme, "authenticated")["access_token"], passkey)
    for _ in range(3):
        reply = flow.login_with_key(acme, passkey)
        assert reply.status == 200, reply.text
    claims = jwt.get_unverified_claims(reply.body["access_token"])
    # A synced passkey is not bound to one device: AAL2, and amr "swk".
    assert claims["acr"] == "aal2"
    assert claims["amr"] == ["pwd", "swk", "mfa"]


def test_concurrent_assertion_uses_one_wins(
    flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    credential = key.authenticate(challenge["options"], origin=flow.origin)
    statuses: list[int] = []
    barrier = threading.Barrier(10)

    def attempt() -> None:
        barrier.wait()
        statuses.append(flow.key_verify(mfa_token, challenge, credential).status)

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [401] * 9


def test_rejected_assertions_count_towards_lockout(
    flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    for _ in range(9):
        credential = with_flipped_signature_bit(
            key.authenticate(challenge["options"], origin=flow.origin)
        )
        assert_rejected(flow.key_verify(mfa_token, challenge, credential))
    credential = with_flipped_signature_bit(
        key.authenticate(challenge["options"], origin=flow.origin)
    )
    locked = flow.key_verify(mfa_token, challenge, credential)
    assert_rejected(locked, status=429, code="locked_out")


def test_challenge_for_a_totp_factor_is_a_400(client: Client, flow: Flow, enrolled: Member) -> None:
    reply = client.post(
        "/v1/auth/mfa/challenge", {"factor_id": enrolled.factor_id}, token=flow.mfa_token(enrolled)
    )
    assert_rejected(reply, status=400, code="invalid_input")
    assert reply.body["field"] == "factor_id"
    without = client.post("/v1/auth/mfa/challenge", {}, token=flow.mfa_token(enrolled))
    assert_rejected(without, status=404, code="not_found")


def test_challenge_names_only_the_chosen_key(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    access = flow.login_with_key(keyed, key).body["access_token"]
    second = SoftAuthenticator()
    factor = flow.register_key(access, second, label="Backup key")
    mfa_token = flow.mfa_token(keyed)
    both = flow.key_challenge(mfa_token)["options"]["allowCredentials"]
    assert len(both) == 2
    one = flow.key_challenge(mfa_token, factor["factor_id"])
    assert len(one["options"]["allowCredentials"]) == 1
    # The first key cannot respond to a challenge that names only the second.
    with pytest.raises(Exception, match=r"NotAllowedError|allowCredentials"):
        key.authenticate(one["options"], origin=flow.origin)
    forced = key.authenticate({**one["options"], "allowCredentials": []}, origin=flow.origin)
    assert_rejected(flow.key_verify(mfa_token, one, forced))


# -- org settings ------------------------------------------------------------------------------


def test_required_uv_rejects_key_without_uv(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    policy.set_webauthn_policy(runtime.services(), org_id="acme", user_verification="required")
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    assert challenge["options"]["userVerification"] == "required"
    credential = key.authenticate(challenge["options"], origin=flow.origin, user_verified=False)
    assert_rejected(flow.key_verify(mfa_token, challenge, credential))
    assert ("failure", "user_verification_missing") in audited(stack, "acme", "login.mfa")

    verified = key.authenticate(challenge["options"], origin=flow.origin)
    assert flow.key_verify(mfa_token, challenge, verified).status == 200


def test_key_without_user_verification_gives_aal2(flow: Flow, acme: Member) -> None:
    policy.set_webauthn_policy(runtime.services(), org_id="acme", user_verification="discouraged")
    plain = SoftAuthenticator(user_verification=False)
    flow.register_key(flow.login_ok(acme, "authenticated")["access_token"], plain)
    reply = flow.login_with_key(acme, plain)
    assert reply.status == 200, reply.text
    assert jwt.get_unverified_claims(reply.body["access_token"])["acr"] == "aal2"


@pytest.mark.parametrize(
    ("attestation", "aaguid", "trusted", "accepted", "reason"),
    [
        ("none", AAGUID, True, False, "attestation_missing"),
        ("packed-self", AAGUID, True, False, "attestation_missing"),
        ("packed-x5c", AAGUID, True, True, None),
        ("packed-x5c", bytes(range(16)), True, False, "aaguid_not_allowed"),
        ("packed-x5c", AAGUID, False, False, "registration_invalid"),
    ],
    ids=["none", "self", "allowed-model", "other-model", "self-made-root"],
)
def test_org_requiring_direct_attestation_checks_the_key_model(  # noqa: PLR0917 - fixtures
    client: Client,
    flow: Flow,
    acme: Member,
    stack: LocalStack,
    attestation: str,
    aaguid: bytes,
    trusted: bool,
    accepted: bool,
    reason: str | None,
) -> None:
    key = SoftAuthenticator(attestation=attestation, aaguid=aaguid)
    maker = (
        key if key.attestation_root_pem and trusted else SoftAuthenticator(attestation="packed-x5c")
    )
    assert maker.attestation_root_pem is not None
    policy.set_webauthn_policy(
        runtime.services(),
        org_id="acme",
        user_verification="preferred",
        attestation="direct",
        allowed_aaguids=[AAGUID_TEXT],
        attestation_roots=[maker.attestation_root_pem.decode()],
    )
    access = flow.login_ok(acme, "authenticated")["access_token"]
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    assert options["options"]["attestation"] == "direct"
    reply = client.post(
        "/v1/me/factors/webauthn",
        {
            "challenge_id": options["challenge_id"],
            "credential": key.register(options["options"], origin=flow.origin),
        },
        token=access,
    )
    if accepted:
        assert reply.status == 201, reply.text
        assert reply.body["aaguid"] == AAGUID_TEXT
        assert reply.body["attestation_format"] == "packed"
    else:
        assert_rejected(reply, status=400, code="registration_rejected")
        assert ("failure", reason) in audited(stack, "acme", "factor.register")


def test_policy_change_is_audited_with_before_and_after(stack: LocalStack, acme: Member) -> None:
    policy.set_webauthn_policy(runtime.services(), org_id="acme", user_verification="required")
    [event] = [i for i in audit_items(stack, "acme") if i["event_type"] == "policy.webauthn"]
    assert event["details"]["before"]["user_verification"] == "preferred"
    assert event["details"]["after"]["user_verification"] == "required"


# -- several factors, step-up and removal ------------------------------------------------------


def test_user_can_hold_totp_and_several_keys(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    access = flow.login_with_key(keyed, key).body["access_token"]
    flow.enroll(keyed, access)
    flow.register_key(access, SoftAuthenticator(), label="Spare")
    flow.next_step()
    login = flow.login_ok(keyed, "mfa_required")
    assert sorted(f["type"] for f in login["factors"]) == ["totp", "webauthn", "webauthn"]
    assert flow.verify(keyed, login["mfa_token"]).status == 200


def test_key_step_up_returns_fresh_token(flow: Flow, keyed: Member, key: SoftAuthenticator) -> None:
    login = flow.login_with_key(keyed, key).body
    flow.clock.advance(600)
    challenge = flow.key_challenge(login["access_token"])
    reply = flow.key_verify(
        login["access_token"], challenge, key.authenticate(challenge["options"], origin=flow.origin)
    )
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "verified"
    before = jwt.get_unverified_claims(login["access_token"])
    after = jwt.get_unverified_claims(reply.body["access_token"])
    assert after["mfa_time"] == before["mfa_time"] + 600
    assert after["sid"] == before["sid"]
    assert after["acr"] == "aal3"


def test_removing_a_factor_needs_a_recent_mfa(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    access = flow.login_with_key(keyed, key).body["access_token"]
    spare = flow.register_key(access, SoftAuthenticator(), label="Spare")
    flow.clock.advance(301)
    refused = client.delete(f"/v1/me/factors/{spare['factor_id']}", token=access)
    assert_rejected(refused, status=403, code="step_up_required")
    assert refused.body["max_mfa_age"] == 300

    challenge = flow.key_challenge(access)
    fresh = flow.key_verify(
        access, challenge, key.authenticate(challenge["options"], origin=flow.origin)
    ).body["access_token"]
    assert client.delete(f"/v1/me/factors/{spare['factor_id']}", token=fresh).status == 204
    remaining = client.get("/v1/me/factors", token=fresh).body["factors"]
    assert [f["label"] for f in remaining] == ["Key"]
    assert ("success", None) in audited(stack, "acme", "factor.remove")


def test_last_factor_stays_where_mfa_is_required(
    client: Client, flow: Flow, key: SoftAuthenticator, stack: LocalStack
) -> None:
    add_org("strict", enforcement="required")
    admin = Member("strict", "admin@strict.example", "correct horse battery staple", "")
    enrollment = flow.login_ok(admin, "enrollment_required")["enrollment_token"]
    factor = flow.register_key(enrollment, key)
    access = flow.login_with_key(admin, key).body["access_token"]
    reply = client.delete(f"/v1/me/factors/{factor['factor_id']}", token=access)
    assert_rejected(reply, status=409, code="last_factor")
    assert ("denied", "last_factor") in audited(stack, "strict", "factor.remove")

    spare = SoftAuthenticator()
    flow.register_key(access, spare, label="Spare")
    assert client.delete(f"/v1/me/factors/{factor['factor_id']}", token=access).status == 204
    assert flow.login_with_key(admin, spare).status == 200


def test_removing_a_factor_ends_the_other_sessions(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    other = flow.login_with_key(keyed, key).body
    current = flow.login_with_key(keyed, key).body["access_token"]
    spare = flow.register_key(current, SoftAuthenticator(), label="Spare")
    assert client.delete(f"/v1/me/factors/{spare['factor_id']}", token=current).status == 204
    assert client.get("/v1/me/sessions", token=current).status == 200
    assert client.get("/v1/me/sessions", token=other["access_token"]).status == 401
    refreshed = client.post("/v1/auth/refresh", {"refresh_token": other["refresh_token"]})
    assert refreshed.status == 401


def test_removing_an_unknown_factor_is_a_404(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    access = flow.login_with_key(keyed, key).body["access_token"]
    assert_rejected(
        client.delete("/v1/me/factors/f_nope", token=access), status=404, code="not_found"
    )


def test_allow_list_without_roots_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        policy.validate_webauthn_policy(
            user_verification="preferred", attestation="direct", allowed_aaguids=[AAGUID_TEXT]
        )
    assert caught.value.field == "attestation_roots"


def test_operator_cli_sets_the_org_key_rules(
    flow: Flow, acme: Member, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    root = SoftAuthenticator(attestation="packed-x5c").attestation_root_pem
    assert root is not None
    root_file = tmp_path / "root.pem"
    root_file.write_bytes(root)
    exit_code = cli.main(
        [
            "org",
            "webauthn",
            "--org-id",
            "acme",
            "--user-verification",
            "required",
            "--attestation",
            "direct",
            "--allow-aaguid",
            AAGUID_TEXT.upper(),
            "--attestation-root",
            str(root_file),
        ]
    )
    assert exit_code == 0
    assert f'"allowed_aaguids": ["{AAGUID_TEXT}"]' in capsys.readouterr().out
    access = flow.login_ok(acme, "authenticated")["access_token"]
    options = flow.client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    assert options["options"]["attestation"] == "direct"
    assert options["options"]["authenticatorSelection"]["userVerification"] == "required"

    # Options left out keep their values.
    assert (
        cli.main(["org", "webauthn", "--org-id", "acme", "--user-verification", "preferred"]) == 0
    )
    kept = policy.webauthn_policy(runtime.services().store.get_org("acme"))
    assert kept.user_verification == "preferred"
    assert kept.attestation == "direct"
    assert kept.allowed_aaguids == (AAGUID_TEXT,)
    assert len(kept.attestation_roots) == 1
    capsys.readouterr()

    bad = cli.main(
        [
            "org",
            "webauthn",
            "--org-id",
            "acme",
            "--user-verification",
            "preferred",
            "--allow-aaguid",
            "not-an-aaguid",
        ]
    )
    assert bad == 2
    assert "allowed_aaguids" in capsys.readouterr().err


# -- hostile input and races -------------------------------------------------------------------


def _with_public_key(credential: dict[str, Any], cose_key: Any) -> dict[str, Any]:
    """Replace the COSE public key inside an unsigned ("none") registration response."""
    attestation = cbor2.loads(_b64decode(credential["response"]["attestationObject"]))
    auth_data = attestation["authData"]
    id_length = int.from_bytes(auth_data[53:55], "big")
    attestation["authData"] = auth_data[: 55 + id_length] + cbor2.dumps(cose_key)
    encoded = base64.urlsafe_b64encode(cbor2.dumps(attestation)).rstrip(b"=").decode()
    return {**credential, "response": {**credential["response"], "attestationObject": encoded}}


@pytest.mark.parametrize(
    "cose_key",
    [
        {3: -7, -1: 1, -2: bytes(32), -3: bytes(32)},
        {1: 2, 3: -7, -1: 1, -2: bytes(range(32)), -3: bytes(range(32))},
        {1: 3, 3: -257, -1: bytes(256), -2: b"\x01"},
        {1: 1, 3: -8, -1: 6, -2: b"short"},
        [1, 2, 3],
    ],
    ids=["no-kty", "off-curve", "rsa-e-1", "short-ed25519", "not-a-map"],
)
def test_unusable_public_key_is_rejected_at_registration(
    client: Client, flow: Flow, acme: Member, cose_key: Any
) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    credential = _with_public_key(
        SoftAuthenticator().register(options["options"], origin=flow.origin), cose_key
    )
    reply = client.post(
        "/v1/me/factors/webauthn",
        {"challenge_id": options["challenge_id"], "credential": credential},
        token=access,
    )
    assert_rejected(reply, status=400, code="registration_rejected")


def test_overlong_credential_id_is_rejected(client: Client, flow: Flow, acme: Member) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    key = SoftAuthenticator(credential_id=bytes(1024))
    reply = client.post(
        "/v1/me/factors/webauthn",
        {
            "challenge_id": options["challenge_id"],
            "credential": key.register(options["options"], origin=flow.origin),
        },
        token=access,
    )
    assert_rejected(reply, status=400, code="registration_rejected")


def test_transports_are_deduplicated_and_known(flow: Flow, acme: Member) -> None:
    key = SoftAuthenticator(transports=("usb",) * 50 + ("nfc", "carrier-pigeon"))
    factor = flow.register_key(flow.login_ok(acme, "authenticated")["access_token"], key)
    assert factor["transports"] == ["nfc", "usb"]


def test_backup_eligibility_cannot_change(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    key.backup_eligible = True
    assert_rejected(flow.login_with_key(keyed, key))
    assert ("failure", "backup_eligibility_changed") in audited(stack, "acme", "login.mfa")


def test_factor_id_of_another_factor_is_audited(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    reply = client.post(
        "/v1/auth/mfa/verify",
        {
            "challenge_id": challenge["challenge_id"],
            "factor_id": "f_000000000000000000000000",
            "credential": key.authenticate(challenge["options"], origin=flow.origin),
        },
        token=mfa_token,
    )
    assert_rejected(reply)
    assert ("failure", "factor_mismatch") in audited(stack, "acme", "login.mfa")


def test_locked_user_cannot_change_keys(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    access = flow.login_with_key(keyed, key).body["access_token"]
    spare = flow.register_key(access, SoftAuthenticator(), label="Spare")
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    for _ in range(10):
        forged = with_flipped_signature_bit(
            key.authenticate(challenge["options"], origin=flow.origin)
        )
        flow.key_verify(mfa_token, challenge, forged)
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access)
    assert_rejected(options, status=429, code="locked_out")
    removal = client.delete(f"/v1/me/factors/{spare['factor_id']}", token=access)
    assert_rejected(removal, status=429, code="locked_out")


def test_pending_factor_removable_without_any_active_one(
    client: Client, flow: Flow, acme: Member
) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    pending = client.post("/v1/me/factors/totp", {}, token=access).body
    assert client.delete(f"/v1/me/factors/{pending['factor_id']}", token=access).status == 204
    assert client.get("/v1/me/factors", token=access).body["factors"] == []


def test_removal_racing_a_confirmation_keeps_factors_consistent(
    client: Client, flow: Flow, keyed: Member, key: SoftAuthenticator, monkeypatch: Any
) -> None:
    """A pending factor confirmed between the removal's read and write is left in place."""
    access = flow.login_with_key(keyed, key).body["access_token"]
    pending = client.post("/v1/me/factors/totp", {}, token=access).body
    store = runtime.services().store
    stale = store.get_factor("acme", keyed.user_id, pending["factor_id"])
    flow.next_step()
    confirm = client.post(
        f"/v1/me/factors/totp/{pending['factor_id']}/confirm",
        {"code": flow.code(pending["secret"])},
        token=access,
    )
    assert confirm.status == 200, confirm.text
    reads = iter([stale])
    original = store.get_factor
    monkeypatch.setattr(store, "get_factor", lambda *args: next(reads, None) or original(*args))
    reply = client.delete(f"/v1/me/factors/{pending['factor_id']}", token=access)
    assert_rejected(reply, status=409, code="conflict")
    user = store.get_user("acme", keyed.user_id)
    assert user is not None
    assert pending["factor_id"] in user.factor_summaries()
    listed = client.get("/v1/me/factors", token=access).body["factors"]
    assert sorted((f["type"], f["status"]) for f in listed) == [
        ("totp", "active"),
        ("webauthn", "active"),
    ]
    # Sent again, the removal goes through the checks of an active factor.
    assert client.delete(f"/v1/me/factors/{pending['factor_id']}", token=access).status == 204


def test_concurrent_removals_keep_one_factor(client: Client, flow: Flow, stack: LocalStack) -> None:
    add_org("strict", enforcement="required")
    admin = Member("strict", "admin@strict.example", "correct horse battery staple", "")
    first, second = SoftAuthenticator(), SoftAuthenticator()
    enrollment = flow.login_ok(admin, "enrollment_required")["enrollment_token"]
    one = flow.register_key(enrollment, first)
    access = flow.login_with_key(admin, first).body["access_token"]
    two = flow.register_key(access, second, label="Second")
    barrier = threading.Barrier(2)
    statuses: dict[str, int] = {}

    def remove(factor_id: str) -> None:
        barrier.wait()
        statuses[factor_id] = client.delete(f"/v1/me/factors/{factor_id}", token=access).status

    threads = [threading.Thread(target=remove, args=(f["factor_id"],)) for f in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses.values()) == [204, 409]
    assert ("denied", "last_factor") in audited(stack, "strict", "factor.remove")
    remaining = client.get("/v1/me/factors", token=access).body["factors"]
    assert len(remaining) == 1


def test_blocked_key_not_a_spare(
    client: Client, flow: Flow, key: SoftAuthenticator, stack: LocalStack
) -> None:
    add_org("strict", enforcement="required")
    admin = Member("strict", "admin@strict.example", "correct horse battery staple", "")
    enrollment = flow.login_ok(admin, "enrollment_required")["enrollment_token"]
    flow.enroll(admin, enrollment)
    flow.next_step()
    access = flow.verify(admin, flow.mfa_token(admin)).body["access_token"]
    flow.register_key(access, key)
    assert flow.login_with_key(admin, key).status == 200
    clone = SoftAuthenticator(credential_id=key.credential_id, sign_count=0)
    clone.key, clone.user_handle = key.key, key.user_handle
    assert_rejected(flow.login_with_key(admin, clone))

    reply = client.delete(f"/v1/me/factors/{admin.factor_id}", token=access)
    assert_rejected(reply, status=409, code="last_factor")


def test_key_type_must_match_its_algorithm(client: Client, flow: Flow, acme: Member) -> None:
    rsa_key = SoftAuthenticator(algorithm=RS256)
    cose = cbor2.loads(rsa_key.credential_public_key)
    cose[3] = ES256
    access = flow.login_ok(acme, "authenticated")["access_token"]
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    credential = _with_public_key(rsa_key.register(options["options"], origin=flow.origin), cose)
    reply = client.post(
        "/v1/me/factors/webauthn",
        {"challenge_id": options["challenge_id"], "credential": credential},
        token=access,
    )
    assert_rejected(reply, status=400, code="registration_rejected")


def test_direct_attestation_without_roots_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        policy.validate_webauthn_policy(
            user_verification="preferred", attestation="direct", allowed_aaguids=[]
        )
    assert caught.value.field == "attestation_roots"


def test_cli_rejects_unreadable_roots_and_conflicting_options(
    acme: Member, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    broken = tmp_path / "root.pem"
    broken.write_bytes(b"\xff\xfe not a certificate")
    assert cli.main(["org", "webauthn", "--org-id", "acme", "--attestation-root", str(broken)]) == 2
    assert "attestation_roots" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(
            [
                "org",
                "webauthn",
                "--org-id",
                "acme",
                "--clear-aaguids",
                "--allow-aaguid",
                AAGUID_TEXT,
            ]
        )


def test_removal_race_with_blocked_key_audited(
    client: Client, flow: Flow, stack: LocalStack
) -> None:
    add_org("strict", enforcement="required")
    admin = Member("strict", "admin@strict.example", "correct horse battery staple", "")
    flow.enroll(admin, flow.login_ok(admin, "enrollment_required")["enrollment_token"])
    flow.next_step()
    access = flow.verify(admin, flow.mfa_token(admin)).body["access_token"]
    kept, flagged = SoftAuthenticator(), SoftAuthenticator()
    kept_factor = flow.register_key(access, kept, label="Kept")
    flow.register_key(access, flagged, label="Flagged")
    assert flow.login_with_key(admin, flagged).status == 200
    clone = SoftAuthenticator(credential_id=flagged.credential_id, sign_count=0)
    clone.key, clone.user_handle = flagged.key, flagged.user_handle
    assert_rejected(flow.login_with_key(admin, clone))

    barrier = threading.Barrier(2)
    statuses: dict[str, Reply] = {}

    def remove(factor_id: str) -> None:
        barrier.wait()
        statuses[factor_id] = client.delete(f"/v1/me/factors/{factor_id}", token=access)

    ids = [admin.factor_id or "", kept_factor["factor_id"]]
    threads = [threading.Thread(target=remove, args=(fid,)) for fid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    replies = sorted(statuses.values(), key=lambda reply: reply.status)
    assert [reply.status for reply in replies] == [204, 409]
    assert replies[1].body["code"] == "last_factor"
    assert ("denied", "last_factor") in audited(stack, "strict", "factor.remove")


def test_spent_challenge_cannot_flag_a_key(
    flow: Flow, keyed: Member, key: SoftAuthenticator
) -> None:
    mfa_token = flow.mfa_token(keyed)
    challenge = flow.key_challenge(mfa_token)
    credential = key.authenticate(challenge["options"], origin=flow.origin)
    assert flow.key_verify(mfa_token, challenge, credential).status == 200
    store = runtime.services().store
    factor = store.get_factor("acme", keyed.user_id, keyed.factor_id or "")
    assert factor is not None
    with pytest.raises(ConditionFailed):
        store.flag_suspected_clone(
            factor, challenge_id=challenge["challenge_id"], now=flow.clock.now(), events=[]
        )
    flagged = store.get_factor("acme", keyed.user_id, keyed.factor_id or "")
    assert flagged is not None
    assert flagged.clone_suspected_at is None


def test_registration_in_a_frame_is_rejected(
    client: Client, flow: Flow, acme: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    credential = with_client_data(
        key.register(options["options"], origin=flow.origin), crossOrigin=True
    )
    reply = client.post(
        "/v1/me/factors/webauthn",
        {"challenge_id": options["challenge_id"], "credential": credential},
        token=access,
    )
    assert_rejected(reply, status=400, code="registration_rejected")
    assert ("failure", "cross_origin") in audited(stack, "acme", "factor.register")


def test_user_handle_of_another_user_is_rejected(
    flow: Flow, keyed: Member, key: SoftAuthenticator, stack: LocalStack
) -> None:
    key.user_handle = b"u_000000000000000000000000"
    assert_rejected(flow.login_with_key(keyed, key))
    assert ("failure", "user_handle_mismatch") in audited(stack, "acme", "login.mfa")
