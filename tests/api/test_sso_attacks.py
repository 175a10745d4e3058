"""Attacks on SSO sign-in and its settings: provider URLs that reach private networks, ID token
claims in unusual forms, emails that fold onto another member's, and members whom the IdP's
MFA must not let in."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mfa_core import runtime
from mfa_core.clock import ManualClock
from mfa_core.sso.connection import is_allowed_url, loopback_allowed
from mfa_core.sso.oidc import ProviderError, parse_metadata
from mfa_core.store.models import AuditModel, UserModel
from tests.api.conftest import add_member, add_org
from tests.api.harness import Client, Flow, Member
from tests.api.test_policy import document, fresh_mfa_token
from tests.api.test_sso_oidc import (
    FakeProvider,
    callback,
    claims_of,
    connect,
    failure_reasons,
    oidc_document,
    put,
    sso_events,
    sso_login,
    start,
    trust,
)
from tests.api.test_sso_saml import connect as saml_connect
from tests.api.test_sso_saml import post_acs
from tests.api.test_sso_saml import start as saml_start
from tests.saml_idp import FakeIdp


@pytest.fixture
def idp(clock: ManualClock) -> Iterator[FakeProvider]:
    with FakeProvider(clock) as provider:
        yield provider


# -- Provider URLs -------------------------------------------------------------------------------

# Hosts that must never receive a server-side request: cloud metadata, private and shared
# ranges, and the spellings of 169.254.169.254 that getaddrinfo accepts (decimal, hexadecimal,
# shortened and IPv4-mapped IPv6).
PRIVATE_URLS = [
    "https://169.254.169.254/latest/meta-data",
    "https://2852039166/",
    "https://0xa9fea9fe/",
    "https://169.254.43518/",
    "https://[::ffff:169.254.169.254]/",
    "https://[fd00:ec2::254]/",
    "https://10.0.0.1/",
    "https://172.16.0.1/",
    "https://192.168.1.1/",
    "https://100.64.0.1/",
    "https://0/",
    "https://0.0.0.0/",
    "https://[::]/",
    "https://224.0.0.1/",
]
LOOPBACK_URLS = [
    "http://127.0.0.1:9001/2018-06-01/runtime",
    "https://127.0.0.1/",
    "http://localhost:2773/",
    "https://[::1]/",
    "https://127.1/",
    "https://localhost./",
    "https://app.localhost/",
]


@pytest.mark.parametrize("url", PRIVATE_URLS + LOOPBACK_URLS)
def test_private_provider_url_not_allowed(url: str) -> None:
    assert is_allowed_url(url, allow_loopback=False) is False


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_private_url_not_allowed_on_local_stack(url: str) -> None:
    assert is_allowed_url(url, allow_loopback=True) is False


@pytest.mark.parametrize(
    "url", ["https://idp.example.com", "https://8.8.8.8/", "https://[2606:4700::1111]/"]
)
def test_public_provider_url_allowed(url: str) -> None:
    assert is_allowed_url(url, allow_loopback=False) is True


def test_loopback_allowed_only_for_local_base_url() -> None:
    assert loopback_allowed("http://localhost:3000") is True
    assert loopback_allowed("http://127.0.0.1:3000") is True
    assert loopback_allowed("https://mfa.example.com") is False
    assert loopback_allowed(None) is False


@pytest.mark.parametrize("name", ["authorization_endpoint", "token_endpoint", "jwks_uri"])
def test_discovery_endpoint_on_private_host_rejected(name: str) -> None:
    issuer = "https://idp.example.com"
    document = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "jwks_uri": issuer + "/jwks",
        name: "https://169.254.169.254/latest/meta-data",
    }
    with pytest.raises(ProviderError) as caught:
        parse_metadata(issuer, document, allow_loopback=False)
    assert caught.value.reason == f"{name}_invalid"


@pytest.mark.parametrize("url", PRIVATE_URLS[:6])
def test_settings_reject_private_issuer(
    client: Client, flow: Flow, enrolled: Member, idp: FakeProvider, url: str
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    reply = put(client, token, oidc_document(idp, issuer=url.rstrip("/")))
    assert reply.status == 400, reply.text
    assert reply.body["field"] == "issuer"


@pytest.mark.parametrize("url", PRIVATE_URLS[:6])
def test_settings_reject_private_sso_url(
    client: Client, flow: Flow, enrolled: Member, url: str
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    body = {
        "protocol": "saml",
        "idp_entity_id": "https://idp.example.com/entity",
        "sso_url": url,
        "signing_certificate": FakeIdp.create().certificate_pem,
    }
    reply = put(client, token, body)
    assert reply.status == 400, reply.text
    assert reply.body["field"] == "sso_url"


# -- ID token claims -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "False", 0, "no", []])
def test_email_verified_not_true_rejected(
    client: Client, enrolled: Member, idp: FakeProvider, value: Any
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, email_verified=value)
    assert reply.status == 401, reply.text
    assert failure_reasons() == ["email_not_verified"]


@pytest.mark.parametrize("value", [True, "true", "TRUE"])
def test_email_verified_true_accepted(
    client: Client, enrolled: Member, idp: FakeProvider, value: Any
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, email_verified=value)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "authenticated"


def test_email_verified_absent_accepted(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, email_verified=None)
    assert reply.status == 200, reply.text


@pytest.mark.parametrize(
    ("auth_time", "reason"),
    [
        ("1800000000", "auth_time_invalid"),
        (True, "auth_time_invalid"),
        (10**12, "auth_time_invalid"),
    ],
)
def test_odd_auth_time_rejected(
    client: Client, enrolled: Member, idp: FakeProvider, auth_time: Any, reason: str
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, auth_time=auth_time)
    assert reply.status == 401, reply.text
    assert failure_reasons() == [reason]


def test_future_auth_time_gives_no_future_mfa_time(
    client: Client, enrolled: Member, idp: FakeProvider, clock: ManualClock
) -> None:
    connect("acme", idp)
    trust("acme")
    now = int(clock.now())
    reply = sso_login(client, idp, auth_time=now + 50)
    assert reply.status == 200, reply.text
    claims = claims_of(reply.body["access_token"])
    assert claims["mfa_time"] <= now


def test_future_iat_rejected(client: Client, enrolled: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, iat=int(idp.clock.now()) + 600)
    assert reply.status == 401, reply.text
    assert failure_reasons() == ["issued_at_out_of_range"]


def test_nonce_of_another_login_rejected(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    _, first = start(client)
    _, second = start(client)
    code = idp.grant(first, nonce=second["nonce"])
    reply = callback(client, code=code, state=first["state"])
    assert reply.status == 401, reply.text
    assert failure_reasons() == ["wrong_nonce"]


# -- Emails --------------------------------------------------------------------------------------


def test_kelvin_sign_email_does_not_match_ascii_member(
    client: Client, acme: Member, idp: FakeProvider
) -> None:
    add_member("acme", "kate@acme.example")
    connect("acme", idp)
    trust("acme")
    # U+212A KELVIN SIGN lowercases to the ASCII letter k.
    reply = sso_login(client, idp, email="\u212aate@acme.example")
    assert reply.status == 401, reply.text
    assert failure_reasons() == ["email_missing"]


def test_kelvin_sign_email_not_provisioned(client: Client, acme: Member, idp: FakeProvider) -> None:
    connect("acme", idp, auto_provision=True)
    trust("acme")
    reply = sso_login(client, idp, email="\u212aen@acme.example")
    assert reply.status == 401, reply.text
    assert [
        u.user_id for u in UserModel.query("acme") if (u.email or "").endswith("en@acme.example")
    ] == []


def test_email_with_spaces_matches_trimmed(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, email="  admin@acme.example\t")
    assert reply.status == 200, reply.text
    assert claims_of(reply.body["access_token"])["sub"] == enrolled.user_id


def test_email_claim_as_list_rejected(client: Client, enrolled: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, email=["admin@acme.example"])
    assert reply.status == 401, reply.text
    assert failure_reasons() == ["email_missing"]


# -- Members the IdP's MFA must not let in ------------------------------------------------------


def _user(member: Member) -> UserModel:
    user = runtime.services().store.get_user(member.org_id, member.user_id)
    assert user is not None
    return user


def test_security_key_role_needs_more_than_aal2(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme", enforcement="required", security_key_roles=("admin",))
    reply = sso_login(client, idp)
    assert reply.status == 200, reply.text
    assert reply.body["status"] != "authenticated"
    assert "access_token" not in reply.body

    hardware = sso_login(client, idp, amr=["hwk", "mfa"])
    assert hardware.status == 200, hardware.text
    assert hardware.body["status"] == "authenticated"
    assert claims_of(hardware.body["access_token"])["acr"] == "aal3"


def test_member_pending_recovery_not_let_in(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    _user(enrolled).update(actions=[UserModel.recovery_required.set(True)])
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp)
    assert reply.status == 401, reply.text
    assert "access_token" not in reply.text


def test_locked_member_not_let_in(
    client: Client, enrolled: Member, idp: FakeProvider, clock: ManualClock
) -> None:
    _user(enrolled).update(actions=[UserModel.locked_until.set(int(clock.now()) + 600)])
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp)
    assert reply.status in {401, 423, 429}, reply.text
    assert "access_token" not in reply.text
    assert [e.reason for e in sso_events() if e.outcome == "denied"] == ["locked_out"]


def test_provisioned_member_never_admin(client: Client, acme: Member, idp: FakeProvider) -> None:
    connect("acme", idp, auto_provision=True, provision_role="viewer")
    trust("acme")
    reply = sso_login(client, idp, email="newcomer@acme.example")
    assert reply.status == 200, reply.text
    [created] = [u for u in UserModel.query("acme") if u.email == "newcomer@acme.example"]
    assert created.role == "viewer"


# -- State across protocols ----------------------------------------------------------------------


def test_oidc_state_rejected_at_saml_acs(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    add_org("globex")
    saml_connect("globex", FakeIdp.create())
    connect("acme", idp)
    trust("acme")
    _, request = start(client)
    form = {"SAMLResponse": "PHg+", "RelayState": request["state"]}
    reply = post_acs(client, form, "globex")
    assert reply.status == 401, reply.text
    assert failure_reasons("globex") == ["relay_state_of_another_org"]
    # The state is still good for the OIDC login it belongs to.
    own = callback(client, code=idp.grant(request), state=request["state"])
    assert own.status == 200, own.text


def test_saml_relay_state_rejected_at_oidc_callback(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    add_org("globex")
    saml_connect("globex", FakeIdp.create())
    connect("acme", idp)
    _, _, relay_state, _ = saml_start(client, "globex")
    reply = callback(client, code="any-code", state=relay_state)
    assert reply.status == 401, reply.text
    assert failure_reasons("acme") == ["state_of_another_org"]
    assert idp.token_requests == []


# -- SAML signing certificate --------------------------------------------------------------------


def _saml_document(certificate: str) -> dict[str, Any]:
    return {
        "protocol": "saml",
        "idp_entity_id": "https://idp.example.com/entity",
        "sso_url": "https://idp.example.com/sso",
        "signing_certificate": certificate,
    }


def _certificate(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Weak IdP")])
    start_time = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start_time)
        .not_valid_after(start_time + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("key_first", [True, False])
def test_private_key_beside_certificate_rejected(
    client: Client, flow: Flow, enrolled: Member, key_first: bool
) -> None:
    saml_idp = FakeIdp.create()
    key = saml_idp.private_key_pem.decode()
    pasted = key + saml_idp.certificate_pem if key_first else saml_idp.certificate_pem + key
    token = fresh_mfa_token(flow, enrolled)
    reply = put(client, token, _saml_document(pasted))
    assert reply.status == 400, reply.text
    assert reply.body["field"] == "signing_certificate"
    stored = json.dumps([item.serialize() for item in AuditModel.query("acme")])
    assert "PRIVATE KEY" not in stored
    assert "PRIVATE KEY" not in client.get("/v1/orgs/acme/sso", token=token).text


def test_text_around_certificate_not_stored(client: Client, flow: Flow, enrolled: Member) -> None:
    saml_idp = FakeIdp.create()
    pasted = "Subject: CN=Test IdP\nnote: see the vault\n" + saml_idp.certificate_pem
    token = fresh_mfa_token(flow, enrolled)
    reply = put(client, token, _saml_document(pasted))
    assert reply.status == 200, reply.text
    assert reply.body["sso"]["signing_certificate"] == saml_idp.certificate_pem
    stored = json.dumps([item.serialize() for item in AuditModel.query("acme")])
    assert "see the vault" not in stored


def test_weak_rsa_certificate_rejected(client: Client, flow: Flow, enrolled: Member) -> None:
    # The point of the test is a key too weak to accept.
    weak = _certificate(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505
    token = fresh_mfa_token(flow, enrolled)
    reply = put(client, token, _saml_document(weak))
    assert reply.status == 400, reply.text
    assert reply.body["field"] == "signing_certificate"


def test_two_certificates_rejected(client: Client, flow: Flow, enrolled: Member) -> None:
    pasted = FakeIdp.create().certificate_pem + FakeIdp.create().certificate_pem
    token = fresh_mfa_token(flow, enrolled)
    reply = put(client, token, _saml_document(pasted))
    assert reply.status == 400, reply.text
    assert reply.body["field"] == "signing_certificate"


# -- Trust settings ------------------------------------------------------------------------------

PASSWORD_CLASS = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


@pytest.mark.parametrize(
    ("amr", "acr", "field_name"),
    [
        (["pwd"], [], "sso.accepted_amr"),
        (["mfa", "fed"], [], "sso.accepted_amr"),
        (["kba"], [], "sso.accepted_amr"),
        ([], [PASSWORD_CLASS], "sso.accepted_acr"),
        ([], ["urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"], "sso.accepted_acr"),
    ],
)
def test_single_factor_evidence_not_trusted(  # noqa: PLR0917 - fixtures and one table row
    client: Client,
    flow: Flow,
    enrolled: Member,
    amr: list[str],
    acr: list[str],
    field_name: str,
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    body = document(
        sso={
            "trust_idp_mfa": True,
            "accepted_amr": amr,
            "accepted_acr": acr,
            "max_auth_age_minutes": 60,
        }
    )
    reply = client.request("PUT", "/v1/orgs/acme/mfa-policy", json_body=body, token=token)
    assert reply.status == 400, reply.text
    assert reply.body["field"] == field_name


def test_password_at_idp_not_taken_for_mfa(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, amr=["pwd"], acr=None)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "mfa_required"


# -- ACS form bodies -----------------------------------------------------------------------------


def test_non_ascii_form_body_rejected(client: Client, acme: Member) -> None:
    saml_connect("acme", FakeIdp.create())
    body = "SAMLResponse=PHg+&RelayState=caf\u00e9".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    reply = client.request("POST", "/v1/sso/saml/acme/acs", raw=body, headers=headers)
    assert reply.status == 400, reply.text


def test_percent_encoded_utf8_relay_state_unknown(client: Client, acme: Member) -> None:
    saml_connect("acme", FakeIdp.create())
    reply = post_acs(client, {"SAMLResponse": "PHg+", "RelayState": "caf\u00e9\u0000"})
    assert reply.status == 401, reply.text
    assert failure_reasons("acme") == ["relay_state_unknown"]
