"""Attacks on SAML Response verification: canonicalization tricks added after signing, moved
signatures, other signature algorithms, and subject and audience rules."""

from __future__ import annotations

import copy

import pytest
import xmlsec
from lxml import etree

from mfa_core.sso.saml import NAMESPACES
from tests.saml_idp import NAMEID_PERSISTENT, FakeIdp, build_response, encode
from tests.unit.test_sso_saml import (
    assertion_of,
    fields_for,
    rejected,
    sign_assertion,
    sign_response,
    verify,
)


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp.create()


def _signed_xml(idp: FakeIdp, **changes: object) -> bytes:
    response = build_response(fields_for(idp, **changes))
    sign_assertion(idp, response)
    return etree.tostring(response)


# Canonicalization: the parser drops comments, and CDATA becomes text, so neither changes the
# digest. The reader must then see the whole signed text.


@pytest.mark.parametrize("marker", [b"<!---->", b"<![CDATA[]]>", b"<!-- x -->"])
def test_marker_in_signed_email_read_whole(idp: FakeIdp, marker: bytes) -> None:
    xml = _signed_xml(idp, email="ada@example.com.evil.com")
    tampered = xml.replace(b"ada@example.com.evil.com", b"ada@example.com" + marker + b".evil.com")
    assert tampered != xml

    result = verify(idp, encode(tampered))

    assert result.email == "ada@example.com.evil.com"


@pytest.mark.parametrize("marker", [b"<!---->", b"<![CDATA[]]>"])
def test_marker_in_signed_name_id_read_whole(idp: FakeIdp, marker: bytes) -> None:
    xml = _signed_xml(idp, name_id="ada@example.com.evil.com", email=None)
    tampered = xml.replace(b"ada@example.com.evil.com", b"ada@example.com" + marker + b".evil.com")

    result = verify(idp, encode(tampered))

    assert result.subject == "ada@example.com.evil.com"


def test_processing_instruction_in_signed_email_read_whole(idp: FakeIdp) -> None:
    # The parser drops processing instructions before the signature is verified, so one added
    # after signing changes neither the digest nor the text read.
    xml = _signed_xml(idp, email="ada@example.com.evil.com")
    tampered = xml.replace(b"ada@example.com.evil.com", b"ada@example.com<?x y?>.evil.com")
    assert tampered != xml

    assert verify(idp, encode(tampered)).email == "ada@example.com.evil.com"


# Emails


def test_email_like_persistent_name_id_not_email(idp: FakeIdp) -> None:
    response = build_response(
        fields_for(idp, name_id="admin@example.com", name_id_format=NAMEID_PERSISTENT, email=None)
    )
    sign_assertion(idp, response)

    result = verify(idp, encode(response))

    assert result.subject == "admin@example.com"
    assert result.email is None


def test_repeated_equal_email_values_accepted(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    value = response.xpath("//saml:AttributeValue", namespaces=NAMESPACES)[0]
    value.addnext(copy.deepcopy(value))
    sign_assertion(idp, response)

    assert verify(idp, encode(response)).email == "ada@example.com"


def test_email_attribute_in_second_statement_ambiguous(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    statement = response.xpath("//saml:AttributeStatement", namespaces=NAMESPACES)[0]
    other = copy.deepcopy(statement)
    other.xpath("saml:Attribute/saml:AttributeValue", namespaces=NAMESPACES)[
        0
    ].text = "admin@example.com"
    statement.addnext(other)
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "email_ambiguous"


# Signatures


def test_assertion_signature_moved_to_response_rejected(idp: FakeIdp) -> None:
    # The Response carries a Signature whose Reference names the Assertion, not the Response.
    response = build_response(fields_for(idp))
    sign_assertion(idp, response)
    signature = assertion_of(response).xpath("ds:Signature", namespaces=NAMESPACES)[0]
    response.xpath("saml:Issuer", namespaces=NAMESPACES)[0].addnext(signature)

    assert rejected(idp, encode(response)) == "signature_invalid"


def test_reference_to_whole_document_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    sign_response(idp, response)
    reference = response.xpath("ds:Signature/ds:SignedInfo/ds:Reference", namespaces=NAMESPACES)
    reference[0].set("URI", "")

    assert rejected(idp, encode(response)) == "signature_invalid"


def test_hmac_signature_with_certificate_as_secret_rejected(idp: FakeIdp) -> None:
    # Algorithm confusion: an HMAC keyed with the public certificate, which anyone has.
    response = build_response(fields_for(idp))
    assertion = assertion_of(response)
    signature = xmlsec.template.create(
        assertion, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformHmacSha256
    )
    reference = xmlsec.template.add_reference(
        signature, xmlsec.constants.TransformSha256, uri="#" + assertion.get("ID", "")
    )
    xmlsec.template.add_transform(reference, xmlsec.constants.TransformEnveloped)
    xmlsec.template.add_transform(reference, xmlsec.constants.TransformExclC14N)
    assertion.xpath("saml:Issuer", namespaces=NAMESPACES)[0].addnext(signature)
    xmlsec.tree.add_ids(response, ["ID"])
    context = xmlsec.SignatureContext()
    context.key = xmlsec.Key.from_binary_data(
        xmlsec.constants.KeyDataHmac, idp.certificate_pem.encode()
    )
    context.sign(signature)

    assert rejected(idp, encode(response)) == "signature_invalid"


# Subject and audience


def test_subject_confirmation_without_recipient_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    data = response.xpath("//saml:SubjectConfirmationData", namespaces=NAMESPACES)[0]
    del data.attrib["Recipient"]
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "recipient_mismatch"


def test_second_audience_restriction_without_us_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    restriction = response.xpath("//saml:AudienceRestriction", namespaces=NAMESPACES)[0]
    other = copy.deepcopy(restriction)
    other.xpath("saml:Audience", namespaces=NAMESPACES)[0].text = "https://other-sp.example"
    restriction.addnext(other)
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "audience_mismatch"


def test_authn_instant_without_time_zone_rejected(idp: FakeIdp) -> None:
    response = build_response(fields_for(idp))
    statement = response.xpath("//saml:AuthnStatement", namespaces=NAMESPACES)[0]
    statement.set("AuthnInstant", "2025-12-31T23:59:50")
    sign_assertion(idp, response)

    assert rejected(idp, encode(response)) == "malformed"
