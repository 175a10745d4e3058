"""Verification of a SAML 2.0 Response from an org's IdP (Web Browser SSO profile, HTTP-POST).

Only SP-initiated logins are accepted, so the Response must carry the ID of an AuthnRequest
made by `build_authn_request`. The checks follow SAML 2.0 Core and the Web Browser SSO profile
of SAML 2.0 Profiles. python3-saml's hardened parser reads the XML (no DTD, no entities, no
network), its copy of the SAML protocol schema validates the document, and xmlsec verifies the
signatures.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import xmlsec
from lxml import etree
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML
from onelogin.saml2.xmlparser import DTDForbidden, EntitiesForbidden, NotSupportedError

from mfa_core.errors import AuthenticationFailed
from mfa_core.sso.assertion import IdpAssertion
from mfa_core.sso.saml_request import NS_SAML, NS_SAMLP, SamlAuthnRequest, build_authn_request

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "MAX_RESPONSE_BYTES",
    "SamlAuthnRequest",
    "SamlResponseRejected",
    "build_authn_request",
    "verify_saml_response",
]

NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NAMESPACES = {"saml": NS_SAML, "samlp": NS_SAMLP, "ds": NS_DS}

STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
CONFIRMATION_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
NAMEID_FORMAT_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_FORMAT_ENTITY = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"

# The largest decoded Response accepted, which bounds the parsing and schema work. It is an
# estimate with a wide margin: a signed Response with a few dozen attributes takes a few KiB.
MAX_RESPONSE_BYTES = 256 * 1024

# The maximum length of the acr and NameID kept, as for OIDC claims.
MAX_CLAIM_LENGTH = 256

# How far the IdP's clock may be from ours, in seconds, applied to every NotBefore,
# NotOnOrAfter and SessionNotOnOrAfter.
CLOCK_SKEW_SECONDS = 120

# SAML signatures use exclusive canonicalization and the enveloped-signature transform (the XML
# signature profile of SAML 2.0 Core), so no XPath or XSLT transform runs on attacker input.
# SHA-1 is rejected, as a signature method and as a digest.
_SIGNATURE_TRANSFORMS = (
    xmlsec.constants.TransformExclC14N,
    xmlsec.constants.TransformExclC14NWithComments,
    xmlsec.constants.TransformRsaSha256,
    xmlsec.constants.TransformRsaSha384,
    xmlsec.constants.TransformRsaSha512,
    xmlsec.constants.TransformEcdsaSha256,
    xmlsec.constants.TransformEcdsaSha384,
    xmlsec.constants.TransformEcdsaSha512,
)
_REFERENCE_TRANSFORMS = (
    xmlsec.constants.TransformEnveloped,
    xmlsec.constants.TransformExclC14N,
    xmlsec.constants.TransformExclC14NWithComments,
    xmlsec.constants.TransformSha256,
    xmlsec.constants.TransformSha384,
    xmlsec.constants.TransformSha512,
)


class SamlResponseRejected(AuthenticationFailed):
    """The IdP's SAML Response failed verification.

    `reason` names the failed check for the audit record, for example "signature_invalid",
    "audience_mismatch" or "expired". The caller sees only the generic detail.
    """

    def __init__(self, reason: str) -> None:
        super().__init__("The identity provider's response could not be verified. Sign in again.")
        self.reason = reason


def verify_saml_response(
    saml_response: str,
    *,
    idp_entity_id: str,
    idp_certificate_pem: str,
    sp_entity_id: str,
    acs_url: str,
    request_id: str,
    email_attribute: str,
    now: float,
) -> IdpAssertion:
    """Verify a POSTed SAMLResponse form value and return what its assertion states.

    `saml_response` is the base64 form value as received. The Response or its Assertion (or
    both) must be signed by the key of `idp_certificate_pem`. The certificate's own validity
    dates are not checked, as is usual for SAML metadata keys. `request_id` is the ID of the
    AuthnRequest this login sent, and the caller must accept each one once. `now` is the time
    of verification in epoch seconds, and validity windows allow CLOCK_SKEW_SECONDS either way.
    `email` is the single value of the attribute named `email_attribute`, else the NameID when
    its format is emailAddress, else None.

    Raises SamlResponseRejected with the reason of the first failed check. Encrypted
    assertions, NameIDs and attributes are rejected, as are IdP-initiated responses.
    """
    document = _parse(_decode(saml_response))
    assertion = _single_assertion(document)
    signed = _verify_signatures(document, assertion, idp_certificate_pem)
    response_signed = document in signed

    # A signed Response must name our ACS URL as its Destination (SAML 2.0 Bindings, HTTP-POST),
    # and an unsigned one must not name another.
    destination = document.get("Destination")
    if (destination is None and response_signed) or (
        destination is not None and destination != acs_url
    ):
        raise SamlResponseRejected("destination_mismatch")

    # The Response's InResponseTo, when present, is the ID of our AuthnRequest.
    if document.get("InResponseTo") not in (None, request_id):
        raise SamlResponseRejected("in_response_to_mismatch")

    # The IdP issued the assertion, and the Response too if the Response names an issuer.
    assertion_issuers = _issuers(assertion)
    issuers = [*_issuers(document), *assertion_issuers]
    if not assertion_issuers or any(issuer != idp_entity_id for issuer in issuers):
        raise SamlResponseRejected("issuer_mismatch")

    _check_conditions(assertion, sp_entity_id=sp_entity_id, now=now)
    _check_subject_confirmation(assertion, acs_url=acs_url, request_id=request_id, now=now)

    name_id = _one(assertion, "saml:Subject/saml:NameID")
    subject = _text(name_id)
    if not subject:
        raise SamlResponseRejected("malformed")
    name_id_format = name_id.get("Format")

    authn_statement = _one(assertion, "saml:AuthnStatement")
    authn_instant = _check_authn_statement(authn_statement, now=now)
    class_refs = _elements(authn_statement, "saml:AuthnContext/saml:AuthnContextClassRef")
    acr = _text(class_refs[0]) if class_refs else None

    email = _email(assertion, email_attribute)
    if email is None and name_id_format == NAMEID_FORMAT_EMAIL:
        email = subject

    # The audit record keeps at most MAX_CLAIM_LENGTH characters of each value from the IdP.
    acr = acr[:MAX_CLAIM_LENGTH] if acr is not None else None
    claims: dict[str, Any] = {
        "issuer": idp_entity_id,
        "sub": subject[:MAX_CLAIM_LENGTH],
        "name_id_format": name_id_format,
        "acr": acr,
        "authn_instant": authn_statement.get("AuthnInstant"),
        "session_index": authn_statement.get("SessionIndex"),
        "assertion_id": assertion.get("ID"),
        "signed": "_and_".join("response" if e is document else "assertion" for e in signed),
    }
    return IdpAssertion(
        protocol="saml",
        issuer=idp_entity_id,
        subject=subject,
        email=email,
        acr=acr,
        auth_time=authn_instant,
        claims=claims,
    )


def _decode(saml_response: str) -> bytes:
    # Base64 is 4/3 as long as the bytes it encodes, and some IdPs wrap it in lines.
    if len(saml_response) > MAX_RESPONSE_BYTES * 2:
        raise SamlResponseRejected("too_large")
    compact = "".join(saml_response.split())
    try:
        decoded = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise SamlResponseRejected("malformed") from None
    if len(decoded) > MAX_RESPONSE_BYTES:
        raise SamlResponseRejected("too_large")
    return decoded


def _parse(xml: bytes) -> etree._Element:
    try:
        document: etree._Element = OneLogin_Saml2_XML.to_etree(xml)
    except (DTDForbidden, EntitiesForbidden, NotSupportedError):
        raise SamlResponseRejected("dtd_forbidden") from None
    except etree.XMLSyntaxError:
        raise SamlResponseRejected("malformed") from None
    return document


def _single_assertion(document: etree._Element) -> etree._Element:
    """Check the Response as a whole and return its one Assertion."""
    # The root is a SAML 2.0 Response that the protocol schema accepts.
    if document.tag != f"{{{NS_SAMLP}}}Response" or document.get("Version") != "2.0":
        raise SamlResponseRejected("malformed")
    if isinstance(OneLogin_Saml2_XML.validate_xml(document, "saml-schema-protocol-2.0.xsd"), str):
        raise SamlResponseRejected("malformed")

    # Every ID is unique, so that a signature's Reference names exactly one element.
    ids = [element.get("ID") for element in _elements(document, "//*[@ID]")]
    if len(ids) != len(set(ids)):
        raise SamlResponseRejected("malformed")

    # The login succeeded at the IdP. IdPs often send their error responses unsigned, so this
    # check comes before the signature check and the audit record gets the real reason.
    status_codes = [
        code.get("Value") for code in _elements(document, "samlp:Status/samlp:StatusCode")
    ]
    if status_codes != [STATUS_SUCCESS]:
        raise SamlResponseRejected("status_not_success")

    # No encrypted content, because the service has no SAML decryption key.
    if _elements(
        document, "//saml:EncryptedAssertion | //saml:EncryptedID | //saml:EncryptedAttribute"
    ):
        raise SamlResponseRejected("encrypted_unsupported")

    # Exactly one Assertion, a child of the Response. A second one anywhere, signed or not, is
    # the usual shape of a signature-wrapping attack.
    assertions = _elements(document, "//saml:Assertion")
    if len(assertions) != 1 or assertions[0].getparent() is not document:
        raise SamlResponseRejected("assertion_count")
    return assertions[0]


def _signature_of(element: etree._Element) -> etree._Element | None:
    signatures = _elements(element, "ds:Signature")
    return signatures[0] if signatures else None


def _verify_signatures(
    document: etree._Element, assertion: etree._Element, certificate_pem: str
) -> list[etree._Element]:
    """Require a valid signature on the Response or the Assertion, and no other signature.

    Each signature is an enveloped child of the element it signs, with one Reference to that
    element's ID, so that what was verified is what the later checks read. Returns the signed
    elements, the Response first.
    """
    signed = [element for element in (document, assertion) if _signature_of(element) is not None]
    if not signed:
        raise SamlResponseRejected("unsigned")

    if len(_elements(document, "//ds:Signature")) != len(signed):
        raise SamlResponseRejected("signature_invalid")
    for element in signed:
        signatures = _elements(element, "ds:Signature")
        references = _elements(element, "ds:Signature/ds:SignedInfo/ds:Reference")
        element_id = element.get("ID")
        if (
            len(signatures) != 1
            or len(references) != 1
            or not element_id
            or references[0].get("URI") != f"#{element_id}"
        ):
            raise SamlResponseRejected("signature_invalid")

    try:
        key = xmlsec.Key.from_memory(certificate_pem, xmlsec.constants.KeyDataFormatCertPem)
    except xmlsec.Error:
        raise SamlResponseRejected("certificate_invalid") from None
    xmlsec.tree.add_ids(document, ["ID"])
    for element in signed:
        context = xmlsec.SignatureContext()
        context.key = key
        # Only the configured key counts: a certificate or key inside KeyInfo is ignored.
        context.set_enabled_key_data([xmlsec.constants.KeyDataX509])
        for transform in _SIGNATURE_TRANSFORMS:
            context.enable_signature_transform(transform)
        for transform in _REFERENCE_TRANSFORMS:
            context.enable_reference_transform(transform)
        try:
            context.verify(_elements(element, "ds:Signature")[0])
        except xmlsec.Error:
            raise SamlResponseRejected("signature_invalid") from None
    return signed


def _check_conditions(assertion: etree._Element, *, sp_entity_id: str, now: float) -> None:
    """Check the assertion's validity window and that every AudienceRestriction names us."""
    conditions = _one(assertion, "saml:Conditions")

    not_before = conditions.get("NotBefore")
    if not_before is not None and _parse_instant(not_before) > now + CLOCK_SKEW_SECONDS:
        raise SamlResponseRejected("not_yet_valid")
    not_on_or_after = conditions.get("NotOnOrAfter")
    if not_on_or_after is not None and _parse_instant(not_on_or_after) <= now - CLOCK_SKEW_SECONDS:
        raise SamlResponseRejected("expired")

    # Each AudienceRestriction must be satisfied on its own (SAML 2.0 Core), and the Web Browser
    # SSO profile requires at least one that names the SP.
    restrictions = _elements(conditions, "saml:AudienceRestriction")
    if not restrictions:
        raise SamlResponseRejected("audience_mismatch")
    for restriction in restrictions:
        audiences = [_text(audience) for audience in _elements(restriction, "saml:Audience")]
        if sp_entity_id not in audiences:
            raise SamlResponseRejected("audience_mismatch")


def _check_subject_confirmation(
    assertion: etree._Element, *, acs_url: str, request_id: str, now: float
) -> None:
    """Require a bearer SubjectConfirmation for our ACS URL, our request and the present time.

    The Web Browser SSO profile requires its SubjectConfirmationData to have a Recipient, a
    NotOnOrAfter and, for an SP-initiated login, an InResponseTo, and no NotBefore. Candidates
    are narrowed one rule at a time, so the reason names the first rule that none of them meets.
    """
    candidates = _elements(
        assertion,
        "saml:Subject/saml:SubjectConfirmation[@Method=$method]/saml:SubjectConfirmationData",
        method=CONFIRMATION_BEARER,
    )
    if not candidates:
        raise SamlResponseRejected("subject_confirmation_missing")

    candidates = [data for data in candidates if data.get("Recipient") == acs_url]
    if not candidates:
        raise SamlResponseRejected("recipient_mismatch")

    candidates = [data for data in candidates if data.get("InResponseTo") == request_id]
    if not candidates:
        raise SamlResponseRejected("in_response_to_mismatch")

    candidates = [data for data in candidates if data.get("NotBefore") is None]
    if not candidates:
        raise SamlResponseRejected("subject_confirmation_missing")

    candidates = [
        data
        for data in candidates
        if _parse_instant(data.get("NotOnOrAfter", "")) > now - CLOCK_SKEW_SECONDS
    ]
    if not candidates:
        raise SamlResponseRejected("expired")


def _check_authn_statement(authn_statement: etree._Element, *, now: float) -> float:
    """Check when the IdP authenticated the user and return that time in epoch seconds."""
    authn_instant = _parse_instant(authn_statement.get("AuthnInstant", ""))
    if authn_instant > now + CLOCK_SKEW_SECONDS:
        raise SamlResponseRejected("not_yet_valid")

    session_not_on_or_after = authn_statement.get("SessionNotOnOrAfter")
    if (
        session_not_on_or_after is not None
        and _parse_instant(session_not_on_or_after) <= now - CLOCK_SKEW_SECONDS
    ):
        raise SamlResponseRejected("expired")
    return authn_instant


def _issuers(element: etree._Element) -> list[str]:
    issuers = _elements(element, "saml:Issuer")
    if any(
        issuer.get("Format", NAMEID_FORMAT_ENTITY) != NAMEID_FORMAT_ENTITY for issuer in issuers
    ):
        raise SamlResponseRejected("issuer_mismatch")
    return [_text(issuer) for issuer in issuers]


def _email(assertion: etree._Element, attribute_name: str) -> str | None:
    values = _elements(
        assertion,
        "saml:AttributeStatement/saml:Attribute[@Name=$name]/saml:AttributeValue",
        name=attribute_name,
    )
    emails = {_text(value) for value in values} - {""}
    if len(emails) > 1:
        raise SamlResponseRejected("email_ambiguous")
    return emails.pop() if emails else None


def _elements(element: etree._Element, path: str, **variables: str) -> list[etree._Element]:
    found = element.xpath(path, namespaces=NAMESPACES, smart_strings=False, **variables)
    if not isinstance(found, list):
        raise SamlResponseRejected("malformed")
    return [node for node in found if isinstance(node, etree._Element)]


def _one(element: etree._Element, path: str) -> etree._Element:
    found = _elements(element, path)
    if len(found) != 1:
        raise SamlResponseRejected("malformed")
    return found[0]


def _text(element: etree._Element) -> str:
    # The parser drops comments, so text split by a comment reads as one string here, as it
    # does in the canonical form that the signature covers.
    return etree.tostring(element, method="text", encoding="unicode", with_tail=False).strip()


def _parse_instant(value: str) -> float:
    """Parse an xs:dateTime to epoch seconds. SAML 2.0 Core requires UTC with a time zone."""
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise SamlResponseRejected("malformed") from None
    if instant.tzinfo is None:
        raise SamlResponseRejected("malformed")
    return instant.timestamp()
