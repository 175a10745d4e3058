"""SAML SSO through the local gateway: the AuthnRequest redirect and the ACS, with Responses
signed by a fake IdP whose key and certificate each test makes anew."""

from __future__ import annotations

import base64
import http.client
import urllib.request
import zlib
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from lxml import etree

from local.stack import LocalStack
from mfa_core import runtime
from mfa_core.clock import ManualClock
from mfa_core.policy import SsoTrust
from mfa_core.sso import saml_login
from mfa_core.sso.connection import SsoConnection
from mfa_core.sso.saml import NS_SAML
from mfa_core.store.models import AuditModel
from tests.api.conftest import add_member, add_org
from tests.api.harness import Client, Flow, Member, Reply, cookie_header, keep_cookie
from tests.api.test_policy import set_policy
from tests.api.test_sso_oidc import claims_of
from tests.saml_idp import (
    ACR_MFA,
    FakeIdp,
    FormReader,
    ResponseFields,
    SamlIdpServer,
    build_response,
    encode,
)

SSO_URL = "https://idp.example.com/app/console/sso/saml"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp.create()


def connect(org_id: str, idp: FakeIdp, **settings: Any) -> None:
    """Give an org a SAML connection to `idp` in-process, as an admin's PUT would."""
    connection = SsoConnection(
        protocol="saml",
        idp_entity_id=idp.entity_id,
        signing_certificate=idp.certificate_pem,
        **{"sso_url": SSO_URL, **settings},
    )
    runtime.services().store.set_sso_connection(org_id, connection.as_item(), [])


def trust(org_id: str, *, max_age: int = 60) -> None:
    set_policy(
        org_id,
        enforcement="optional",
        sso=SsoTrust(trust_idp_mfa=True, accepted_acr=(ACR_MFA,), max_auth_age_minutes=max_age),
    )


def start(client: Client, org_id: str = "acme") -> tuple[int, str, str, etree._Element]:
    """Call the start route without following its redirect. Return the status, the redirect's
    target without its query, the RelayState and the decoded AuthnRequest."""
    url = urlsplit(client.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    connection.request("GET", f"/v1/sso/saml/{org_id}/start", headers=cookie_header(client))
    response = connection.getresponse()
    response.read()
    keep_cookie(client, response.getheader("Set-Cookie"))
    location = urlsplit(response.getheader("Location") or "")
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    # HTTP-Redirect binding: raw DEFLATE, then base64.
    request = etree.fromstring(zlib.decompress(base64.b64decode(query["SAMLRequest"]), -15))
    target = f"{location.scheme}://{location.netloc}{location.path}"
    return response.status, target, query["RelayState"], request


def post_acs(client: Client, form: dict[str, str], org_id: str = "acme") -> Reply:
    body = urlencode(form).encode("ascii")
    return client.request("POST", f"/v1/sso/saml/{org_id}/acs", raw=body, headers=FORM)


def response_fields(
    clock: ManualClock, idp: FakeIdp, request_id: str, org_id: str = "acme", **changes: Any
) -> ResponseFields:
    entity_id, acs_url = saml_login.service_urls(runtime.services(), org_id)
    fields = ResponseFields(
        issuer=idp.entity_id,
        sp_entity_id=entity_id,
        acs_url=acs_url,
        request_id=request_id,
        now=int(clock.now()),
    )
    return replace(fields, **changes)


def signed_response(idp: FakeIdp, fields: ResponseFields) -> etree._Element:
    document = build_response(fields)
    assertion = document.find(f"{{{NS_SAML}}}Assertion")
    assert assertion is not None
    idp.sign(assertion)
    return document


def login_through_idp(
    client: Client, clock: ManualClock, idp: FakeIdp, member: Member, **changes: Any
) -> Reply:
    """Start a login and post the IdP's signed Response for `member` to the ACS."""
    _, _, relay_state, request = start(client, member.org_id)
    fields = response_fields(
        clock, idp, request.get("ID", ""), member.org_id, email=member.email, **changes
    )
    document = signed_response(idp, fields)
    form = {"SAMLResponse": encode(document), "RelayState": relay_state}
    return post_acs(client, form, member.org_id)


def failure_reasons(org_id: str = "acme") -> list[str | None]:
    return sorted(
        item.reason
        for item in AuditModel.query(org_id)
        if item.event_type == "sso.login" and item.outcome == "failure"
    )


# -- the redirect ----------------------------------------------------------------------------


def test_start_redirects_with_authn_request(client: Client, acme: Member, idp: FakeIdp) -> None:
    connect("acme", idp)

    status, target, relay_state, request = start(client)

    entity_id, acs_url = saml_login.service_urls(runtime.services(), "acme")
    assert status == 302
    assert target == SSO_URL
    assert len(relay_state) >= 43
    assert request.get("AssertionConsumerServiceURL") == acs_url
    assert request.get("Destination") == SSO_URL
    assert request.findtext(f"{{{NS_SAML}}}Issuer") == entity_id


def test_start_without_saml_connection_not_found(client: Client, acme: Member) -> None:
    reply = client.get("/v1/sso/saml/acme/start")
    assert reply.status == 404


# -- the decision ----------------------------------------------------------------------------


def test_trusted_acr_gives_session_without_prompt(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    connect("acme", idp)
    trust("acme")

    reply = login_through_idp(client, clock, idp, enrolled)

    assert reply.status == 200, reply.text
    assert reply.body["status"] == "authenticated"
    claims = claims_of(reply.body["access_token"])
    assert claims["amr"] == ["fed", "mfa"]
    assert claims["acr"] == "aal2"
    [decision] = [
        item
        for item in AuditModel.query("acme")
        if item.event_type == "sso.login" and item.outcome == "success"
    ]
    assert decision.details["sub"] == "00u1abcd"  # the NameID
    assert decision.details["acr"] == ACR_MFA
    assert decision.details["idp_mfa"] == "idp_mfa_accepted"


def test_other_acr_prompts_our_mfa(
    client: Client, flow: Flow, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    connect("acme", idp)
    trust("acme")

    reply = login_through_idp(
        client, clock, idp, enrolled, acr="urn:oasis:names:tc:SAML:2.0:ac:classes:Password"
    )

    assert reply.status == 200, reply.text
    assert reply.body["status"] == "mfa_required"
    verified = flow.verify(enrolled, reply.body["mfa_token"])
    assert verified.status == 200, verified.text
    assert claims_of(verified.body["access_token"])["amr"] == ["fed", "otp", "mfa"]


def test_stale_authn_instant_prompts(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    connect("acme", idp)
    trust("acme", max_age=30)

    reply = login_through_idp(client, clock, idp, enrolled, authn_instant=int(clock.now()) - 3600)

    assert reply.status == 200, reply.text
    assert reply.body["status"] == "mfa_required"


def test_unknown_email_rejected(
    client: Client, clock: ManualClock, acme: Member, idp: FakeIdp
) -> None:
    connect("acme", idp)
    stranger = Member("acme", "nobody@acme.example", "unused", "u_unknown")

    reply = login_through_idp(client, clock, idp, stranger)

    assert reply.status == 401
    assert failure_reasons() == ["unknown_email"]


def follow_login(client: Client, server: SamlIdpServer, org_id: str = "acme") -> Reply:
    """Sign in as a browser does: start, follow the redirect to the IdP's page on 127.0.0.1,
    and post its form to the ACS that it names."""
    url = urlsplit(client.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    connection.request("GET", f"/v1/sso/saml/{org_id}/start", headers=cookie_header(client))
    redirect = connection.getresponse()
    redirect.read()
    keep_cookie(client, redirect.getheader("Set-Cookie"))
    assert redirect.status == 302
    location = redirect.getheader("Location") or ""
    assert location.startswith(server.sso_url + "?")
    # The location is the test IdP's URL on 127.0.0.1, so S310's scheme check is moot.
    with urllib.request.urlopen(location, timeout=30) as page:  # noqa: S310
        reader = FormReader()
        reader.feed(page.read().decode("utf-8"))
    assert reader.action is not None
    action = urlsplit(reader.action)
    assert client.base_url.endswith(str(action.port))
    body = urlencode(reader.fields).encode("ascii")
    return client.request("POST", action.path, raw=body, headers=FORM)


def test_browser_login_through_idp_page(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    with SamlIdpServer(idp, clock, email=enrolled.email) as server:
        connect("acme", idp, sso_url=server.sso_url)
        trust("acme")

        trusted = follow_login(client, server)
        server.acr = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
        prompted = follow_login(client, server)

    assert trusted.status == 200, trusted.text
    assert trusted.body["status"] == "authenticated"
    assert claims_of(trusted.body["access_token"])["acr"] == "aal2"
    assert prompted.status == 200, prompted.text
    assert prompted.body["status"] == "mfa_required"
    assert len(server.requests) == 2


# -- rejected Responses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"audience": "https://other-sp.example.com"}, "audience_mismatch"),
        ({"recipient": "https://other-sp.example.com/acs"}, "recipient_mismatch"),
        ({"issuer": "https://other-idp.example.com"}, "issuer_mismatch"),
        ({"in_response_to": "_another-request"}, "in_response_to_mismatch"),
        ({"lifetime": -200}, "expired"),
    ],
)
def test_bad_response_rejected_and_audited(  # noqa: PLR0917 - fixtures and cases
    client: Client,
    clock: ManualClock,
    enrolled: Member,
    idp: FakeIdp,
    changes: dict[str, Any],
    reason: str,
) -> None:
    connect("acme", idp)
    trust("acme")

    reply = login_through_idp(client, clock, idp, enrolled, **changes)

    assert reply.status == 401, reply.text
    assert "access_token" not in reply.text
    assert failure_reasons() == [reason]


def test_unsigned_response_rejected(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    connect("acme", idp)
    _, _, relay_state, request = start(client)
    fields = response_fields(clock, idp, request.get("ID", ""), email=enrolled.email)

    reply = post_acs(
        client, {"SAMLResponse": encode(build_response(fields)), "RelayState": relay_state}
    )

    assert reply.status == 401
    assert failure_reasons() == ["unsigned"]


def test_response_altered_after_signing_rejected(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    viewer = add_member("acme", "viewer@acme.example", role="viewer")
    connect("acme", idp)
    _, _, relay_state, request = start(client)
    fields = response_fields(clock, idp, request.get("ID", ""), email=viewer.email)
    document = signed_response(idp, fields)
    # Claim to be the admin instead of the viewer the IdP signed for.
    value = document.find(f".//{{{NS_SAML}}}AttributeValue")
    assert value is not None
    value.text = enrolled.email

    reply = post_acs(client, {"SAMLResponse": encode(document), "RelayState": relay_state})

    assert reply.status == 401
    assert failure_reasons() == ["signature_invalid"]


def test_response_signed_by_another_key_rejected(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    connect("acme", idp)
    impostor = FakeIdp.create(idp.entity_id)

    reply = login_through_idp(client, clock, impostor, enrolled)

    assert reply.status == 401
    assert failure_reasons() == ["signature_invalid"]


def test_replayed_response_rejected(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    connect("acme", idp)
    trust("acme")
    _, _, relay_state, request = start(client)
    fields = response_fields(clock, idp, request.get("ID", ""), email=enrolled.email)
    form = {"SAMLResponse": encode(signed_response(idp, fields)), "RelayState": relay_state}

    first = post_acs(client, form)
    again = post_acs(client, form)

    assert first.status == 200, first.text
    assert again.status == 401
    assert failure_reasons() == ["relay_state_replayed"]


def test_relay_state_of_another_org_rejected(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    add_org("globex")
    connect("acme", idp)
    connect("globex", idp)
    _, _, relay_state, request = start(client, "globex")
    fields = response_fields(clock, idp, request.get("ID", ""), email=enrolled.email)
    form = {"SAMLResponse": encode(signed_response(idp, fields)), "RelayState": relay_state}

    reply = post_acs(client, form, org_id="acme")

    assert reply.status == 401
    assert failure_reasons() == ["relay_state_of_another_org"]
    # The request was not spent, so the login it belongs to can still finish.
    assert failure_reasons("globex") == []


def test_response_from_another_browser_rejected(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp, stack: LocalStack
) -> None:
    connect("acme", idp)
    trust("acme")
    _, _, relay_state, request = start(client)
    fields = response_fields(clock, idp, request.get("ID", ""), email=enrolled.email)
    form = {"SAMLResponse": encode(signed_response(idp, fields)), "RelayState": relay_state}

    forced = post_acs(Client(stack.api_url), form)
    own = post_acs(client, form)

    assert forced.status == 401
    assert failure_reasons() == ["browser_mismatch"]
    assert own.status == 200, own.text
    assert own.body["status"] == "authenticated"


def test_expired_request_rejected(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeIdp
) -> None:
    connect("acme", idp)
    _, _, relay_state, request = start(client)
    clock.advance(saml_login.REQUEST_SECONDS)
    fields = response_fields(clock, idp, request.get("ID", ""), email=enrolled.email)

    reply = post_acs(
        client, {"SAMLResponse": encode(signed_response(idp, fields)), "RelayState": relay_state}
    )

    assert reply.status == 401
    assert failure_reasons() == ["relay_state_expired"]


# -- the form --------------------------------------------------------------------------------


def test_missing_fields_rejected(client: Client, acme: Member, idp: FakeIdp) -> None:
    connect("acme", idp)
    _, _, relay_state, _ = start(client)

    without_state = post_acs(client, {"SAMLResponse": "PHNhbWw+"})
    without_response = post_acs(client, {"RelayState": relay_state})

    assert without_state.status == 401
    assert without_response.status == 401
    assert failure_reasons() == ["relay_state_missing", "response_missing"]


def test_json_body_unsupported(client: Client, acme: Member, idp: FakeIdp) -> None:
    connect("acme", idp)

    reply = client.request("POST", "/v1/sso/saml/acme/acs", json_body={"SAMLResponse": "x"})

    assert reply.status == 415


def test_field_sent_twice_rejected(client: Client, acme: Member, idp: FakeIdp) -> None:
    connect("acme", idp)
    body = b"SAMLResponse=a&SAMLResponse=b&RelayState=c"

    reply = client.request("POST", "/v1/sso/saml/acme/acs", raw=body, headers=FORM)

    assert reply.status == 400
    assert reply.body["field"] == "SAMLResponse"


def test_oversized_form_rejected(client: Client, acme: Member, idp: FakeIdp) -> None:
    connect("acme", idp)
    body = b"SAMLResponse=" + b"A" * (saml_login.MAX_FORM_BYTES + 1)

    reply = client.request("POST", "/v1/sso/saml/acme/acs", raw=body, headers=FORM)

    assert reply.status == 400
    assert reply.body["code"] == "body_too_large"
