"""A SAML IdP for tests: an RSA key, a self-signed certificate and Responses signed with xmlsec,
and an SSO URL on 127.0.0.1 that responds to an AuthnRequest as an IdP's login page does."""

from __future__ import annotations

import base64
import datetime as dt
import html
import threading
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from mfa_core.clock import ManualClock
from mfa_core.sso.saml import NAMESPACES, NS_SAML, NS_SAMLP

NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
ACR_MFA = "http://schemas.microsoft.com/claims/multipleauthn"


@dataclass(frozen=True)
class FakeIdp:
    entity_id: str
    private_key_pem: bytes
    certificate_pem: str

    @classmethod
    def create(cls, entity_id: str = "https://idp.example.com/saml") -> FakeIdp:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test IdP")])
        start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=3650 * 3))
            .sign(key, hashes.SHA256())
        )
        return cls(
            entity_id=entity_id,
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        )

    def sign(
        self,
        element: etree._Element,
        *,
        method: xmlsec.Transform = xmlsec.constants.TransformRsaSha256,
        digest: xmlsec.Transform = xmlsec.constants.TransformSha256,
    ) -> None:
        """Sign a Response or an Assertion in place, with the Signature after its Issuer."""
        signature = xmlsec.template.create(
            element, xmlsec.constants.TransformExclC14N, method, ns="ds"
        )
        reference = xmlsec.template.add_reference(
            signature, digest, uri="#" + element.get("ID", "")
        )
        xmlsec.template.add_transform(reference, xmlsec.constants.TransformEnveloped)
        xmlsec.template.add_transform(reference, xmlsec.constants.TransformExclC14N)
        key_info = xmlsec.template.ensure_key_info(signature)
        xmlsec.template.add_x509_data(key_info)
        element.find(f"{{{NS_SAML}}}Issuer").addnext(signature)  # type: ignore[union-attr]

        xmlsec.tree.add_ids(element.getroottree().getroot(), ["ID"])
        context = xmlsec.SignatureContext()
        key = xmlsec.Key.from_memory(self.private_key_pem, xmlsec.constants.KeyDataFormatPem)
        key.load_cert_from_memory(self.certificate_pem, xmlsec.constants.KeyDataFormatCertPem)
        context.key = key
        context.sign(signature)


@dataclass
class ResponseFields:
    """What the IdP puts in a Response. A test changes one field to break one check."""

    issuer: str
    sp_entity_id: str
    acs_url: str
    request_id: str
    now: int
    name_id: str = "00u1abcd"
    name_id_format: str = NAMEID_PERSISTENT
    email_attribute: str = "email"
    email: str | None = "ada@example.com"
    status: str = STATUS_SUCCESS
    acr: str | None = ACR_MFA
    session_index: str = "_session-1"
    lifetime: int = 300
    destination: str | None = None
    recipient: str | None = None
    in_response_to: str | None = None
    audience: str | None = None
    authn_instant: int | None = None


def _instant(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sub(
    parent: etree._Element, tag: str, text: str | None = None, **attributes: str
) -> etree._Element:
    prefix, local = tag.split(":")
    element = etree.SubElement(parent, f"{{{NAMESPACES[prefix]}}}{local}", **attributes)
    element.text = text
    return element


def build_response(fields: ResponseFields) -> etree._Element:
    """Build an unsigned Response with one Assertion, for the AuthnRequest `request_id`."""
    issue_instant = _instant(fields.now)
    in_response_to = fields.in_response_to or fields.request_id
    response = etree.Element(
        f"{{{NS_SAMLP}}}Response",
        nsmap={"samlp": NS_SAMLP, "saml": NS_SAML},
        ID="_response-1",
        Version="2.0",
        IssueInstant=issue_instant,
        Destination=fields.destination or fields.acs_url,
        InResponseTo=in_response_to,
    )
    _sub(response, "saml:Issuer", fields.issuer)
    status = _sub(response, "samlp:Status")
    _sub(status, "samlp:StatusCode", Value=fields.status)

    assertion = _sub(
        response, "saml:Assertion", ID="_assertion-1", Version="2.0", IssueInstant=issue_instant
    )
    _sub(assertion, "saml:Issuer", fields.issuer)
    subject = _sub(assertion, "saml:Subject")
    _sub(subject, "saml:NameID", fields.name_id, Format=fields.name_id_format)
    confirmation = _sub(
        subject, "saml:SubjectConfirmation", Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"
    )
    _sub(
        confirmation,
        "saml:SubjectConfirmationData",
        InResponseTo=in_response_to,
        NotOnOrAfter=_instant(fields.now + fields.lifetime),
        Recipient=fields.recipient or fields.acs_url,
    )
    conditions = _sub(
        assertion,
        "saml:Conditions",
        NotBefore=_instant(fields.now - 5),
        NotOnOrAfter=_instant(fields.now + fields.lifetime),
    )
    restriction = _sub(conditions, "saml:AudienceRestriction")
    _sub(restriction, "saml:Audience", fields.audience or fields.sp_entity_id)

    authn = _sub(
        assertion,
        "saml:AuthnStatement",
        AuthnInstant=_instant(fields.authn_instant or fields.now - 10),
        SessionIndex=fields.session_index,
    )
    context = _sub(authn, "saml:AuthnContext")
    if fields.acr is not None:
        _sub(context, "saml:AuthnContextClassRef", fields.acr)
    else:
        # The schema requires a class or a declaration in every AuthnContext.
        _sub(context, "saml:AuthnContextDeclRef", "urn:example:authn-declaration")

    if fields.email is not None:
        statement = _sub(assertion, "saml:AttributeStatement")
        attribute = _sub(statement, "saml:Attribute", Name=fields.email_attribute)
        _sub(attribute, "saml:AttributeValue", fields.email)
    return response


def encode(document: etree._Element | bytes) -> str:
    """Encode a Response as the SAMLResponse form value of the HTTP-POST binding."""
    xml = document if isinstance(document, bytes) else etree.tostring(document)
    return base64.b64encode(xml).decode("ascii")


class SamlIdpServer:
    """`idp` serving its SSO URL on 127.0.0.1, as a browser meets it.

    GET /sso reads the AuthnRequest of the HTTP-Redirect binding and returns the HTML page
    of the HTTP-POST binding: a form that posts the signed Response and the RelayState to the
    request's ACS URL. The Response names `email` and, when set, `acr`, and says the user
    authenticated `authenticated_ago` seconds before the clock's time.
    """

    def __init__(self, idp: FakeIdp, clock: ManualClock, *, email: str) -> None:
        self.idp = idp
        self.clock = clock
        self.email = email
        self.acr: str | None = ACR_MFA
        self.authenticated_ago = 10
        self.requests: list[etree._Element] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _sso_handler(self))
        self.sso_url = f"http://127.0.0.1:{self.server.server_address[1]}/sso"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SamlIdpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def login_page(self, query: str) -> str:
        """Return the auto-posting form that responds to the AuthnRequest in `query`."""
        parameters = {name: values[0] for name, values in parse_qs(query).items()}
        request = etree.fromstring(
            zlib.decompress(base64.b64decode(parameters["SAMLRequest"]), -15)
        )
        self.requests.append(request)

        acs_url = request.get("AssertionConsumerServiceURL", "")
        now = int(self.clock.now())
        fields = ResponseFields(
            issuer=self.idp.entity_id,
            sp_entity_id=request.findtext(f"{{{NS_SAML}}}Issuer") or "",
            acs_url=acs_url,
            request_id=request.get("ID", ""),
            now=now,
            email=self.email,
            acr=self.acr,
            authn_instant=now - self.authenticated_ago,
        )
        document = build_response(fields)
        assertion = document.find(f"{{{NS_SAML}}}Assertion")
        assert assertion is not None
        self.idp.sign(assertion)

        inputs = {"SAMLResponse": encode(document), "RelayState": parameters["RelayState"]}
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
            for name, value in inputs.items()
        )
        return (
            '<!DOCTYPE html><html><body onload="document.forms[0].submit()">'
            f'<form method="post" action="{html.escape(acs_url)}">{hidden}'
            '<noscript><button type="submit">Continue</button></noscript></form></body></html>'
        )


def _sso_handler(server: SamlIdpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = urlsplit(self.path)
            if path.path != "/sso":
                self.send_error(404)
                return
            page = server.login_page(path.query).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    return Handler


class FormReader(HTMLParser):
    """The action and input values of the first form of an HTML page, as a browser reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = attributes.get("action")
        elif tag == "input" and "name" in attributes:
            self.fields[attributes["name"]] = attributes.get("value", "")
