"""SAML Response verification and AuthnRequest building, against an IdP made in the tests."""

from __future__ import annotations

import base64
import copy
import dataclasses
import logging
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import xmlsec
from lxml import etree

from mfa_core.errors import AuthenticationFailed
from mfa_core.sso.saml import (
    CLOCK_SKEW_SECONDS,
    MAX_RESPONSE_BYTES,
    NAMESPACES,
    SamlResponseRejected,
    build_authn_request,
    verify_saml_response,
)
from tests.saml_idp import (
    ACR_MFA,
    NAMEID_EMAIL,
    NAMEID_PERSISTENT,
    FakeIdp,
    ResponseFields,
    build_response,
    encode,
)

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
SP_ENTITY_ID = "https://mfa.example.com/saml/acme"
ACS_URL = "https://mfa.example.com/v1/sso/saml/acme/acs"
REQUEST_ID = "_0f3a9c1b2d4e5f60718293a4b5c6d7e8f9012345"


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp.create()


def fields_for(idp: FakeIdp, **changes: Any) -> ResponseFields:
    fields = ResponseFields(
        issuer=idp.entity_id,
        sp_entity_id=SP_ENTITY_ID,
        acs_url=ACS_URL,
        request_id=REQUEST_ID,
        now=NOW,
    )
    return dataclasses.replace(fields, **changes)


def assertion_of(response: etree._Element) -> etree._Element:
    found: etree._Element = response.xpath("saml:Assertion", namespaces=NAMESPACES)[0]
    return found


def verify(idp: FakeIdp, saml_response: str, **changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "idp_entity_id": idp.entity_id,
        "idp_certificate_pem": idp.certificate_pem,
        "sp_entity_id": SP_ENTITY_ID,
        "acs_url": ACS_URL,
        "request_id": REQUEST_ID,
        "email_attribute": "email",
        "now": NOW,
    }
    arguments.update(changes)
    return verify_saml_response(saml_response, **arguments)


def rejected(idp: FakeIdp, saml_response: str, **changes: Any) -> str:
    with pytest.raises(SamlResponseRejected) as caught:
        verify(idp, saml_response, **changes)
    return caught.value.reason


def sign_assertion(idp: FakeIdp, response: etree._Element) -> None:
    idp.sign(assertion_of(response))


def sign_response(idp: FakeIdp, response: etree._Element) -> None:
    idp.sign(response)


def sign_both(idp: FakeIdp, response: etree._Element) -> None:
    idp.sign(assertion_of(response))
    idp.sign(response)


SIGNINGS: list[Callable[[FakeIdp, etree._Element], None]] = [
    sign_assertion,
    sign_response,
    sign_both,
]


# Valid responses


@pytest.mark.parametrize("sign", SIGNINGS, ids=lambda sign: sign.__name__)
def test_valid_response_gives_idp_assertion(
    idp: FakeIdp, sign: Callable[[FakeIdp, etree._Element], None]
) -> None:
    response = build_response(fields_for(idp))
    sign(idp, response)

    result = verify(idp, encode(response))

    assert result.protocol == "saml"
    assert result.issuer == idp.entity_id
    assert result.subject == "00u1abcd"
    assert result.email == "ada@example.com"
    assert result.amr == ()
    assert result.acr == ACR_MFA
    assert result.auth_time == NOW - 10
    assert result.claims["issuer"] == idp.entity_id
    assert result.claims["name_id_format"] == NAMEID_PERSISTENT
    assert result.claims["acr"] == ACR_MFA
    assert result.claims["authn_instant"] == "2025-12-31T23:59:50Z"
    assert result.claims["session_index"] == "_session-1"
    assert result.claims["assertion_id"] == "_assertion-1"


def test_signed_parts_named_in_claims(idp: FakeIdp) -> None:
    signed = {}
    for sign in SIGNINGS:
        response = build_response(fields_for(idp))
        sign(idp, response)
        signed[sign.__name__] = verify(idp, encode(response)).claims["signed"]

    assert signed == {
        "sign_assertion": "assertion",
        "sign_response": "response",
        "sign_both": "response_and_assertion",
    }


def test_email_from_email_format_name_id(idp: FakeIdp) -> None:
    response = build_response(
        fields_for(idp, name_id="grace@example.com", name_id_format=NAMEID_EMAIL, email=None)
    )
    sign_assertion(idp, response)

    result = verify(idp, encode(response))

    assert result.subject == "grace@example.com"
    assert result.email == "grace@example.com"


def test_email_none_without_source(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp, email=None))
    sign_assertion(idp, response)

    assert verify(idp, encode(response)).email is None


def test_email_read_from_configured_attribute_name(idp: FakeIdp) -> None:
    claim = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
    response = build_response(fields_for(idp, email_attribute=claim))
    sign_assertion(idp, response)

    assert verify(idp, encode(response), email_attribute=claim).email == "ada@example.com"
    assert verify(idp, encode(response), email_attribute="mail").email is None


def test_acr_absent_gives_none(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp, acr=None))
    sign_assertion(idp, response)

    result = verify(idp, encode(response))

    assert result.acr is None
    assert result.claims["acr"] is None


def test_base64_wrapped_in_lines_accepted(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    sign_response(idp, response)
    value = encode(response)
    wrapped = "\r\n".join(value[i : i + 76] for i in range(0, len(value), 76))

    assert verify(idp, wrapped).subject == "00u1abcd"


# Signatures


def test_unsigned_response_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))

    assert rejected(idp, encode(response)) == "unsigned"


@pytest.mark.parametrize("sign", SIGNINGS, ids=lambda sign: sign.__name__)
def test_response_signed_by_other_key_rejected(
    idp: FakeIdp, sign: Callable[[FakeIdp, etree._Element], None]
) -> None:
    # The other IdP has the same entity id and puts its own certificate in KeyInfo.
    impostor = FakeIdp.create(entity_id=idp.entity_id)
    response = build_response(fields_for(idp))
    sign(impostor, response)

    assert rejected(idp, encode(response)) == "signature_invalid"


@pytest.mark.parametrize("sign", SIGNINGS, ids=lambda sign: sign.__name__)
def test_name_id_altered_after_signing_rejected(
    idp: FakeIdp, sign: Callable[[FakeIdp, etree._Element], None]
) -> None:
    response = build_response(fields_for(idp))
    sign(idp, response)
    name_id = response.xpath("//saml:NameID", namespaces=NAMESPACES)[0]
    name_id.text = "admin-user"

    assert rejected(idp, encode(response)) == "signature_invalid"


@pytest.mark.parametrize("sign", SIGNINGS, ids=lambda sign: sign.__name__)
def test_email_altered_after_signing_rejected(
    idp: FakeIdp, sign: Callable[[FakeIdp, etree._Element], None]
) -> None:
    response = build_response(fields_for(idp))
    sign(idp, response)
    value = response.xpath("//saml:AttributeValue", namespaces=NAMESPACES)[0]
    value.text = "admin@example.com"

    assert rejected(idp, encode(response)) == "signature_invalid"


def test_destination_altered_after_signing_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp, destination="https://other.example.com/acs"))
    sign_response(idp, response)
    response.set("Destination", ACS_URL)

    assert rejected(idp, encode(response)) == "signature_invalid"


def test_sha1_signature_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    idp.sign(
        response,
        method=xmlsec.constants.TransformRsaSha1,
        digest=xmlsec.constants.TransformSha1,
    )

    assert rejected(idp, encode(response)) == "signature_invalid"


def test_sha1_digest_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    idp.sign(response, digest=xmlsec.constants.TransformSha1)

    assert rejected(idp, encode(response)) == "signature_invalid"


def test_reference_to_other_element_rejected(idp: FakeIdp) -> None:
    # The Response carries a signature that covers only the Assertion: it proves nothing
    # about the Response around it.
    response = build_response(fields_for(idp))
    sign_assertion(idp, response)
    signature = assertion_of(response).xpath("ds:Signature", namespaces=NAMESPACES)[0]
    response.xpath("saml:Issuer", namespaces=NAMESPACES)[0].addnext(signature)

    assert rejected(idp, encode(response)) == "signature_invalid"


def test_certificate_not_pem_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    sign_assertion(idp, response)

    reason = rejected(idp, encode(response), idp_certificate_pem="not a certificate")

    assert reason == "certificate_invalid"


def test_comment_inside_name_id_read_whole(idp: FakeIdp) -> None:
    # The signature covers "ada@example.com.evil.com": a reader that stopped at the comment
    # would see another user.
    response = build_response(fields_for(idp, name_id="ada@example.com"))
    name_id = response.xpath("//saml:NameID", namespaces=NAMESPACES)[0]
    comment = etree.Comment("")
    comment.tail = ".evil.com"
    name_id.append(comment)
    sign_assertion(idp, response)

    assert verify(idp, encode(response)).subject == "ada@example.com.evil.com"


# Signature wrapping


def test_second_unsigned_assertion_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    sign_assertion(idp, response)
    evil = build_response(fields_for(idp, name_id="admin-user"))
    evil_assertion = assertion_of(evil)
    evil_assertion.set("ID", "_evil")
    assertion_of(response).addprevious(evil_assertion)

    assert rejected(idp, encode(response)) == "assertion_count"


def test_assertion_moved_to_extensions_rejected(idp: FakeIdp) -> None:
    # XSW: the signed original hides in samlp:Extensions, and an unsigned copy takes its place.
    response = build_response(fields_for(idp))
    sign_assertion(idp, response)
    original = assertion_of(response)
    evil = copy.deepcopy(original)
    evil.set("ID", "_evil")
    evil.remove(evil.xpath("ds:Signature", namespaces=NAMESPACES)[0])
    evil.xpath("saml:Subject/saml:NameID", namespaces=NAMESPACES)[0].text = "admin-user"
    extensions = etree.Element(f"{{{NAMESPACES['samlp']}}}Extensions")
    response.xpath("saml:Issuer", namespaces=NAMESPACES)[0].addnext(extensions)
    extensions.append(original)
    response.append(evil)

    assert rejected(idp, encode(response)) == "assertion_count"


def test_response_wrapped_in_response_rejected(idp: FakeIdp) -> None:
    # XSW: an unsigned Response carries the signed original inside its Extensions. The schema
    # allows only other namespaces there, so the protocol schema check rejects it first.
    original = build_response(fields_for(idp))
    sign_response(idp, original)
    evil = build_response(fields_for(idp, name_id="admin-user"))
    evil.set("ID", "_evil-response")
    assertion_of(evil).set("ID", "_evil-assertion")
    extensions = etree.Element(f"{{{NAMESPACES['samlp']}}}Extensions")
    evil.xpath("saml:Issuer", namespaces=NAMESPACES)[0].addnext(extensions)
    extensions.append(original)

    assert rejected(idp, encode(evil)) == "malformed"


def test_duplicate_ids_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    response.set("ID", "_assertion-1")
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "malformed"


# Protocol checks


def test_wrong_audience_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp, audience="https://other-sp.example.com"))
    sign_both(idp, response)

    assert rejected(idp, encode(response)) == "audience_mismatch"


def test_missing_audience_restriction_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    restriction = response.xpath("//saml:AudienceRestriction", namespaces=NAMESPACES)[0]
    restriction.getparent().remove(restriction)
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "audience_mismatch"


def test_wrong_recipient_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp, recipient="https://other.example.com/acs"))
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "recipient_mismatch"


def test_wrong_destination_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp, destination="https://other.example.com/acs"))
    sign_response(idp, response)

    assert rejected(idp, encode(response)) == "destination_mismatch"


def test_signed_response_without_destination_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    del response.attrib["Destination"]
    sign_response(idp, response)

    assert rejected(idp, encode(response)) == "destination_mismatch"


@pytest.mark.parametrize("sign", SIGNINGS, ids=lambda sign: sign.__name__)
def test_wrong_issuer_rejected(
    idp: FakeIdp, sign: Callable[[FakeIdp, etree._Element], None]
) -> None:
    response = build_response(fields_for(idp, issuer="https://other-idp.example.com"))
    sign(idp, response)

    assert rejected(idp, encode(response)) == "issuer_mismatch"


def test_wrong_issuer_on_response_only_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    response.xpath("saml:Issuer", namespaces=NAMESPACES)[0].text = "https://other.example.com"
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "issuer_mismatch"


def test_expired_assertion_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    sign_assertion(idp, response)

    reason = rejected(idp, encode(response), now=NOW + 300 + CLOCK_SKEW_SECONDS)

    assert reason == "expired"


def test_assertion_within_clock_skew_accepted(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    sign_assertion(idp, response)

    late = verify(idp, encode(response), now=NOW + 300 + CLOCK_SKEW_SECONDS - 1)
    early = verify(idp, encode(response), now=NOW - 5 - CLOCK_SKEW_SECONDS)

    assert late.subject == "00u1abcd"
    assert early.subject == "00u1abcd"


def test_expired_subject_confirmation_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    data = response.xpath("//saml:SubjectConfirmationData", namespaces=NAMESPACES)[0]
    data.set("NotOnOrAfter", "2025-12-31T23:00:00Z")
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "expired"


def test_expired_session_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    authn = response.xpath("//saml:AuthnStatement", namespaces=NAMESPACES)[0]
    authn.set("SessionNotOnOrAfter", "2025-12-31T23:00:00Z")
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "expired"


def test_not_yet_valid_assertion_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    sign_assertion(idp, response)

    reason = rejected(idp, encode(response), now=NOW - 5 - CLOCK_SKEW_SECONDS - 1)

    assert reason == "not_yet_valid"


def test_authn_instant_in_future_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp, authn_instant=NOW + CLOCK_SKEW_SECONDS + 60))
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "not_yet_valid"


def test_wrong_in_response_to_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    sign_both(idp, response)

    reason = rejected(idp, encode(response), request_id="_another-request")

    assert reason == "in_response_to_mismatch"


def test_wrong_in_response_to_in_assertion_rejected(idp: FakeIdp) -> None:
    # Only the assertion is signed, so its SubjectConfirmationData is what counts.
    response = build_response(fields_for(idp))
    data = response.xpath("//saml:SubjectConfirmationData", namespaces=NAMESPACES)[0]
    data.set("InResponseTo", "_another-request")
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "in_response_to_mismatch"


def test_unsolicited_response_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    del response.attrib["InResponseTo"]
    data = response.xpath("//saml:SubjectConfirmationData", namespaces=NAMESPACES)[0]
    del data.attrib["InResponseTo"]
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "in_response_to_mismatch"


def test_non_success_status_rejected(idp: FakeIdp) -> None:
    response = build_response(
        fields_for(idp, status="urn:oasis:names:tc:SAML:2.0:status:Responder")
    )
    sign_response(idp, response)

    assert rejected(idp, encode(response)) == "status_not_success"


def test_encrypted_assertion_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    response.remove(assertion_of(response))
    encrypted = etree.SubElement(response, f"{{{NAMESPACES['saml']}}}EncryptedAssertion")
    etree.SubElement(encrypted, "{http://www.w3.org/2001/04/xmlenc#}EncryptedData").append(
        etree.Element("{http://www.w3.org/2001/04/xmlenc#}CipherData")
    )
    encrypted[0][0].append(etree.Element("{http://www.w3.org/2001/04/xmlenc#}CipherValue"))
    encrypted[0][0][0].text = "AAAA"
    sign_response(idp, response)

    assert rejected(idp, encode(response)) == "encrypted_unsupported"


def test_two_email_values_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    attribute = response.xpath("//saml:Attribute", namespaces=NAMESPACES)[0]
    second = etree.SubElement(attribute, f"{{{NAMESPACES['saml']}}}AttributeValue")
    second.text = "admin@example.com"
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "email_ambiguous"


# Input limits and XML parsing


def test_xxe_entity_rejected(idp: FakeIdp) -> None:
    xml = (
        b'<?xml version="1.0"?>\n'
        b'<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_r"'
        b' Version="2.0" IssueInstant="2026-01-01T00:00:00Z">&xxe;</samlp:Response>'
    )

    assert rejected(idp, encode(xml)) == "dtd_forbidden"


def test_entity_expansion_rejected(idp: FakeIdp) -> None:
    xml = (
        b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&b;</samlp:Response>'
    )

    assert rejected(idp, encode(xml)) == "dtd_forbidden"


def test_signed_response_with_doctype_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    sign_response(idp, response)
    xml = b"<!DOCTYPE samlp:Response>" + etree.tostring(response)

    assert rejected(idp, encode(xml)) == "dtd_forbidden"


def test_oversized_response_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    attribute = response.xpath("//saml:AttributeValue", namespaces=NAMESPACES)[0]
    attribute.text = "a" * MAX_RESPONSE_BYTES
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "too_large"


def test_oversized_form_value_rejected(idp: FakeIdp) -> None:
    assert rejected(idp, "A" * (MAX_RESPONSE_BYTES * 2 + 1)) == "too_large"


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        base64.b64encode(b"<samlp:Response").decode(),
        base64.b64encode(b"<Response Version='2.0'/>").decode(),
        "",
    ],
    ids=["not_base64", "not_xml", "not_saml", "empty"],
)
def test_malformed_input_rejected(idp: FakeIdp, value: str) -> None:
    assert rejected(idp, value) == "malformed"


def test_schema_invalid_response_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    etree.SubElement(response, "{urn:example}Unexpected")
    sign_response(idp, response)

    assert rejected(idp, encode(response)) == "malformed"


def test_rejection_hides_submitted_values(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp, audience="https://other-sp.example.com"))
    sign_assertion(idp, response)

    with pytest.raises(SamlResponseRejected) as caught:
        verify(idp, encode(response))

    assert isinstance(caught.value, AuthenticationFailed)
    assert caught.value.code == "authentication_failed"
    assert "ada@example.com" not in str(caught.value)
    assert "00u1abcd" not in str(caught.value)
    assert "other-sp" not in str(caught.value)


def test_verification_logs_nothing(idp: FakeIdp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = build_response(fields_for(idp))
    sign_assertion(idp, response)

    verify(idp, encode(response))
    rejected(idp, encode(response), sp_entity_id="https://other-sp.example.com")

    assert caplog.records == []


# AuthnRequest


def decode_authn_request(redirect_url: str) -> tuple[etree._Element, dict[str, list[str]]]:
    query = parse_qs(urlsplit(redirect_url).query)
    deflated = base64.b64decode(query["SAMLRequest"][0])
    xml = zlib.decompress(deflated, -15)
    return etree.fromstring(xml), query


def test_authn_request_fields() -> None:
    idp_sso_url = "https://idp.example.com/sso/saml"

    request = build_authn_request(
        sp_entity_id=SP_ENTITY_ID, acs_url=ACS_URL, idp_sso_url=idp_sso_url, now=NOW
    )
    document, _ = decode_authn_request(request.redirect_url)

    assert request.redirect_url.startswith(idp_sso_url + "?SAMLRequest=")
    assert document.tag == f"{{{NAMESPACES['samlp']}}}AuthnRequest"
    assert document.get("ID") == request.request_id
    assert document.get("Version") == "2.0"
    assert document.get("IssueInstant") == "2026-01-01T00:00:00Z"
    assert document.get("Destination") == idp_sso_url
    assert document.get("AssertionConsumerServiceURL") == ACS_URL
    assert document.get("ProtocolBinding") == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
    assert document.xpath("saml:Issuer/text()", namespaces=NAMESPACES) == [SP_ENTITY_ID]


def test_authn_request_ids_are_unique_ncnames() -> None:
    ids = {
        build_authn_request(
            sp_entity_id=SP_ENTITY_ID,
            acs_url=ACS_URL,
            idp_sso_url="https://idp.example.com/sso",
            now=NOW,
        ).request_id
        for _ in range(20)
    }

    assert len(ids) == 20
    assert all(request_id.startswith("_") and len(request_id) == 41 for request_id in ids)


def test_authn_request_keeps_idp_query_and_relay_state() -> None:
    request = build_authn_request(
        sp_entity_id=SP_ENTITY_ID,
        acs_url=ACS_URL,
        idp_sso_url="https://accounts.example.com/o/saml2/idp?idpid=C01abc",
        now=NOW,
        relay_state="login-7f3a",
    )
    _, query = decode_authn_request(request.redirect_url)

    assert query["idpid"] == ["C01abc"]
    assert query["RelayState"] == ["login-7f3a"]


def test_authn_request_escapes_configured_values() -> None:
    entity_id = 'https://sp.example.com/"><x a="'

    request = build_authn_request(
        sp_entity_id=entity_id, acs_url=ACS_URL, idp_sso_url="https://idp.example.com/sso", now=NOW
    )
    document, _ = decode_authn_request(request.redirect_url)

    assert document.xpath("saml:Issuer/text()", namespaces=NAMESPACES) == [entity_id]


def test_authn_request_round_trip_with_response(idp: FakeIdp) -> None:
    request = build_authn_request(
        sp_entity_id=SP_ENTITY_ID,
        acs_url=ACS_URL,
        idp_sso_url="https://idp.example.com/sso",
        now=NOW,
    )
    response = build_response(
        ResponseFields(
            issuer=idp.entity_id,
            sp_entity_id=SP_ENTITY_ID,
            acs_url=ACS_URL,
            request_id=request.request_id,
            now=NOW,
        )
    )
    sign_response(idp, response)

    result = verify(idp, encode(response), request_id=request.request_id)

    assert result.subject == "00u1abcd"
