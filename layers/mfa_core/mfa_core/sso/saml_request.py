"""The SAML 2.0 AuthnRequest that starts an SP-initiated login, by the HTTP-Redirect binding."""

from __future__ import annotations

import base64
import secrets
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from lxml import etree

NS_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
NS_SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
NAMEID_FORMAT_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"


@dataclass(frozen=True, kw_only=True)
class SamlAuthnRequest:
    """An AuthnRequest ready to send: its ID and the IdP URL that carries it.

    The caller stores `request_id` server-side and passes it to `verify_saml_response` as the
    expected InResponseTo, once.
    """

    request_id: str
    redirect_url: str


def build_authn_request(
    *,
    sp_entity_id: str,
    acs_url: str,
    idp_sso_url: str,
    now: float,
    relay_state: str | None = None,
) -> SamlAuthnRequest:
    """Build an AuthnRequest for the IdP's SSO service and encode it as a redirect URL.

    `now` is the issue instant in epoch seconds. The request is not signed, and it requests the
    response by HTTP-POST at `acs_url`. The encoding is the DEFLATE encoding of the SAML 2.0
    HTTP-Redirect binding: raw DEFLATE, then base64, then the `SAMLRequest` query parameter,
    added to any query that `idp_sso_url` already has. `relay_state`, if given, goes in
    `RelayState`.
    """
    # An xs:ID must not start with a digit. The 160 random bits make the ID unguessable.
    request_id = "_" + secrets.token_hex(20)
    issue_instant = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    request = etree.Element(
        f"{{{NS_SAMLP}}}AuthnRequest",
        nsmap={"samlp": NS_SAMLP, "saml": NS_SAML},
        ID=request_id,
        Version="2.0",
        IssueInstant=issue_instant,
        Destination=idp_sso_url,
        ProtocolBinding=BINDING_HTTP_POST,
        AssertionConsumerServiceURL=acs_url,
    )
    issuer = etree.SubElement(request, f"{{{NS_SAML}}}Issuer")
    issuer.text = sp_entity_id
    etree.SubElement(
        request,
        f"{{{NS_SAMLP}}}NameIDPolicy",
        Format=NAMEID_FORMAT_UNSPECIFIED,
        AllowCreate="true",
    )
    xml = etree.tostring(request, encoding="utf-8")

    # wbits=-15 gives raw DEFLATE (RFC 1951) with no zlib header, as the binding requires.
    compressor = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, -15)
    deflated = compressor.compress(xml) + compressor.flush()
    parameters = [("SAMLRequest", base64.b64encode(deflated).decode("ascii"))]
    if relay_state is not None:
        parameters.append(("RelayState", relay_state))

    url = urlsplit(idp_sso_url)
    query = [*parse_qsl(url.query, keep_blank_values=True), *parameters]
    redirect_url = urlunsplit(url._replace(query=urlencode(query)))
    return SamlAuthnRequest(request_id=request_id, redirect_url=redirect_url)
