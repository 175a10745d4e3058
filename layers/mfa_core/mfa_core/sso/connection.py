"""An org's SSO connection: which identity provider it signs in with, and how.

The settings live on the Orgs item (`sso_connection`), except the OIDC client secret, which is
write-only: it goes to Secrets Manager (mfa_core.adapters.sso_secrets), and the item records only
that it is set. When the IdP's MFA replaces ours is part of the MFA policy (`policy.sso`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mfa_core import audit, members, policy, stepup
from mfa_core.audit import RequestContext
from mfa_core.errors import InvalidInput, NotFound
from mfa_core.runtime import Services
from mfa_core.store.models import OrgModel
from mfa_core.tokens import Principal

logger = Logger(child=True)

PROTOCOLS = ("oidc", "saml")
# Roles that auto-provisioning may give. Admins are never created by an IdP's say-so alone.
PROVISION_ROLES = ("operator", "viewer")
CHANGE_SSO_ROUTE = "PUT /v1/orgs/{org_id}/sso"

MAX_URL = 512
MAX_SCOPES = 20
MAX_CERTIFICATE = 16 * 1024
# NIST SP 800-131A disallows RSA keys shorter than 2048 bits for signatures.
MIN_RSA_BITS = 2048
MAX_SECRET = 1024
# RFC 6749 §3.3 scope-token: printable ASCII except space, double quote and backslash.
SCOPE_PATTERN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}\Z")
# Client ids, entity ids and claim names: printable ASCII without spaces.
TOKEN_PATTERN = re.compile(r"[\x21-\x7e]{1,255}\Z")

OIDC_FIELDS = ("issuer", "client_id", "client_secret", "scopes")
SAML_FIELDS = ("idp_entity_id", "sso_url", "signing_certificate")
COMMON_FIELDS = ("protocol", "email_attribute", "auto_provision", "provision_role")


@dataclass(frozen=True, kw_only=True)
class SsoConnection:
    """The non-secret settings of an org's SSO connection.

    OIDC uses `issuer`, `client_id`, `scopes` and a client secret (`client_secret_set`
    records whether one is stored); SAML uses `idp_entity_id`, `sso_url` and `signing_certificate`
    (PEM). `email_attribute` names the claim or attribute that carries the member's email.
    With `auto_provision`, an unknown email becomes a new member with `provision_role`.
    """

    protocol: str
    issuer: str | None = None
    client_id: str | None = None
    scopes: tuple[str, ...] = ("openid", "email")
    client_secret_set: bool = False
    idp_entity_id: str | None = None
    sso_url: str | None = None
    signing_certificate: str | None = None
    email_attribute: str = "email"
    auto_provision: bool = False
    provision_role: str = "viewer"

    def as_json(self) -> dict[str, Any]:
        """Return the settings as GET shows them and the audit records them."""
        document: dict[str, Any] = {
            "protocol": self.protocol,
            "email_attribute": self.email_attribute,
            "auto_provision": self.auto_provision,
            "provision_role": self.provision_role,
        }
        if self.protocol == "oidc":
            document.update(
                issuer=self.issuer,
                client_id=self.client_id,
                scopes=list(self.scopes),
                client_secret_set=self.client_secret_set,
            )
        else:
            document.update(
                idp_entity_id=self.idp_entity_id,
                sso_url=self.sso_url,
                signing_certificate=self.signing_certificate,
            )
        return document

    def as_item(self) -> dict[str, Any]:
        item = asdict(self)
        item["scopes"] = list(self.scopes)
        return {name: value for name, value in item.items() if value is not None}


def sso_connection(org: OrgModel | None) -> SsoConnection | None:
    """Read an org's SSO connection; None when the org has none."""
    if org is None or org.sso_connection is None:
        return None
    value: Any = org.sso_connection
    if not isinstance(value, Mapping):
        value = value.as_dict()
    return SsoConnection(
        protocol=str(value["protocol"]),
        issuer=value.get("issuer"),
        client_id=value.get("client_id"),
        scopes=tuple(str(s) for s in value.get("scopes") or ()),
        client_secret_set=bool(value.get("client_secret_set", False)),
        idp_entity_id=value.get("idp_entity_id"),
        sso_url=value.get("sso_url"),
        signing_certificate=value.get("signing_certificate"),
        email_attribute=str(value.get("email_attribute") or "email"),
        auto_provision=bool(value.get("auto_provision", False)),
        provision_role=str(value.get("provision_role") or "viewer"),
    )


def loopback_allowed(public_base_url: str | None) -> bool:
    """Tell whether identity provider URLs may name loopback hosts: only when this service is
    itself reached on loopback, as the local stack and its tests are."""
    if public_base_url is None:
        return False
    return _is_loopback_host(urlsplit(public_base_url).hostname or "")


def is_allowed_url(value: str, *, allow_loopback: bool) -> bool:
    """Tell whether an identity provider URL may be used: https to a public host, or, with
    `allow_loopback`, http or https to a loopback host.

    The service fetches OIDC provider URLs itself, so an IP address must be global. This
    rejects private, shared, link-local (cloud metadata), loopback, multicast and reserved
    addresses, in every spelling that getaddrinfo accepts, such as 2852039166 or 0xa9fea9fe.
    """
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
    except ValueError:
        return False
    if parts.username or parts.password or not host:
        return False
    if _is_loopback_host(host):
        return allow_loopback and parts.scheme in {"http", "https"}
    address = _ip_address(host)
    if address is not None and (not address.is_global or address.is_multicast):
        return False
    # NOTE: a host name is not resolved here, so a name whose DNS record points at a private
    # address still passes this check.
    return parts.scheme == "https"


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse `host` as an IP address as the resolver would; None for a host name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            # inet_aton reads the legacy forms (a.b.c.d with fewer parts, decimal, octal and
            # hexadecimal) that getaddrinfo also resolves without DNS.
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_loopback_host(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = _ip_address(host)
    return address is not None and address.is_loopback


def parse_connection(
    document: Mapping[str, Any], current: SsoConnection | None, *, allow_loopback: bool
) -> tuple[SsoConnection, str | None]:
    """Validate a whole connection document, as sent to PUT /v1/orgs/{org}/sso.

    Returns the settings and the new client secret (None keeps the stored one). Provider URLs
    must pass `is_allowed_url` with `allow_loopback`. Raises InvalidInput naming the first
    field at fault, never echoing a value.
    """
    protocol = document.get("protocol")
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"Use one of: {', '.join(PROTOCOLS)}.", field="protocol")
    allowed = (*COMMON_FIELDS, *(OIDC_FIELDS if protocol == "oidc" else SAML_FIELDS))
    for name in document:
        if name not in allowed:
            field_name = name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) else None
            raise InvalidInput(
                f"Field '{field_name}' is not a setting of a {protocol} connection; remove it."
                if field_name
                else "The body contains a field that is not a setting; remove it.",
                field=field_name,
            )

    email_attribute = _token(document, "email_attribute", default="email")
    auto_provision = document.get("auto_provision", False)
    if not isinstance(auto_provision, bool):
        raise InvalidInput("Use true or false.", field="auto_provision")
    provision_role = document.get("provision_role", "viewer")
    if provision_role not in PROVISION_ROLES:
        raise InvalidInput(f"Use one of: {', '.join(PROVISION_ROLES)}.", field="provision_role")
    common = {
        "email_attribute": email_attribute,
        "auto_provision": auto_provision,
        "provision_role": str(provision_role),
    }
    if protocol == "saml":
        return _parse_saml(document, common, allow_loopback=allow_loopback), None
    return _parse_oidc(document, common, current, allow_loopback=allow_loopback)


def _parse_oidc(
    document: Mapping[str, Any],
    common: dict[str, Any],
    current: SsoConnection | None,
    *,
    allow_loopback: bool,
) -> tuple[SsoConnection, str | None]:
    issuer = _url(document, "issuer", allow_loopback=allow_loopback)
    parts = urlsplit(issuer)
    if parts.query or parts.fragment:
        raise InvalidInput("Use an issuer URL without a query or fragment.", field="issuer")
    client_id = _token(document, "client_id")
    scopes = document.get("scopes", ["openid", "email"])
    if (
        not isinstance(scopes, list)
        or not 1 <= len(scopes) <= MAX_SCOPES
        or not all(isinstance(s, str) and SCOPE_PATTERN.match(s) for s in scopes)
    ):
        raise InvalidInput(
            f'Use a list of 1 to {MAX_SCOPES} OAuth scopes, such as ["openid", "email"].',
            field="scopes",
        )
    if "openid" not in scopes:
        raise InvalidInput("The scopes must include openid.", field="scopes")

    secret = document.get("client_secret")
    if secret is not None and (
        not isinstance(secret, str)
        or not 1 <= len(secret) <= MAX_SECRET
        or not secret.isascii()
        or not secret.isprintable()
    ):
        raise InvalidInput(
            f"Use a client secret of 1 to {MAX_SECRET} printable ASCII characters.",
            field="client_secret",
        )
    # The stored secret belongs to one client of one issuer: a new client needs its own.
    same_client = (
        current is not None
        and current.protocol == "oidc"
        and current.issuer == issuer
        and current.client_id == client_id
    )
    keeps_secret = same_client and current is not None and current.client_secret_set
    if secret is None and not keeps_secret:
        raise InvalidInput(
            "Field 'client_secret' is required for a new OIDC client.", field="client_secret"
        )
    connection = SsoConnection(
        protocol="oidc",
        issuer=issuer,
        client_id=client_id,
        scopes=tuple(dict.fromkeys(scopes)),
        client_secret_set=True,
        **common,
    )
    return connection, secret


def _parse_saml(
    document: Mapping[str, Any], common: dict[str, Any], *, allow_loopback: bool
) -> SsoConnection:
    entity_id = document.get("idp_entity_id")
    if (
        not isinstance(entity_id, str)
        or not 1 <= len(entity_id) <= 1024
        or not entity_id.isprintable()
    ):
        raise InvalidInput(
            "Use the identity provider's entity id, 1 to 1024 printable characters.",
            field="idp_entity_id",
        )
    sso_url = _url(document, "sso_url", allow_loopback=allow_loopback)
    certificate = _signing_certificate(document.get("signing_certificate"))
    return SsoConnection(
        protocol="saml",
        idp_entity_id=entity_id,
        sso_url=sso_url,
        signing_certificate=certificate,
        **common,
    )


def _signing_certificate(pem: Any) -> str:
    """Check the pasted signing certificate and return it as PEM, without any other text.

    The value is shown by GET and written to the audit trail, so a private key pasted with the
    certificate is rejected, not stored. The key must be RSA of at least MIN_RSA_BITS or EC,
    the key types of the signature algorithms that SAML verification accepts.
    """
    field_name = "signing_certificate"
    if not isinstance(pem, str) or not 0 < len(pem) <= MAX_CERTIFICATE:
        raise InvalidInput(
            "Use the identity provider's signing certificate in PEM.", field=field_name
        )
    if "PRIVATE KEY" in pem:
        raise InvalidInput(
            "The signing certificate field contains a private key. Remove it, rotate the key at "
            "the identity provider, and paste only the -----BEGIN CERTIFICATE----- block.",
            field=field_name,
        )
    if pem.count("-----BEGIN ") != 1:
        raise InvalidInput(
            "Paste exactly one PEM block: the identity provider's signing certificate.",
            field=field_name,
        )
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidInput(
            "The signing certificate is not a PEM X.509 certificate; paste the whole "
            "-----BEGIN CERTIFICATE----- block.",
            field=field_name,
        ) from exc
    public_key = certificate.public_key()
    strong_rsa = isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= MIN_RSA_BITS
    if not (strong_rsa or isinstance(public_key, ec.EllipticCurvePublicKey)):
        raise InvalidInput(
            f"The signing certificate's key must be RSA of at least {MIN_RSA_BITS} bits, or EC.",
            field=field_name,
        )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _url(document: Mapping[str, Any], name: str, *, allow_loopback: bool) -> str:
    value = document.get(name)
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_URL
        or not is_allowed_url(value, allow_loopback=allow_loopback)
    ):
        raise InvalidInput(
            f"Use an https URL of at most {MAX_URL} characters whose host is a public name or "
            "address.",
            field=name,
        )
    return value.rstrip("/") if name == "issuer" else value


def _token(document: Mapping[str, Any], name: str, *, default: str | None = None) -> str:
    value = document.get(name, default)
    if not isinstance(value, str) or not TOKEN_PATTERN.match(value):
        raise InvalidInput("Use 1 to 255 printable ASCII characters without spaces.", field=name)
    return value


def read_connection(svc: Services, principal: Principal, org_id: str) -> SsoConnection | None:
    """Return the org's SSO connection to one of its admins; None when there is none."""
    members.require_admin(svc, principal, org_id)
    return sso_connection(svc.store.get_org(org_id))


def replace_connection(
    svc: Services,
    principal: Principal,
    org_id: str,
    document: Mapping[str, Any],
    *,
    context: RequestContext,
) -> SsoConnection:
    """Replace the org's SSO connection for one of its admins, after a recent MFA.

    A new client secret is written to Secrets Manager before the settings; the audit event
    records whether it changed, never its value.
    """
    admin = members.require_admin(svc, principal, org_id)
    org = svc.store.get_org(org_id)
    if org is None:
        raise NotFound("No org with this id.")
    stepup.require(
        svc,
        principal,
        CHANGE_SSO_ROUTE,
        action="Changing the SSO connection",
        max_age_cap=policy.step_up_cap(org),
    )
    before = sso_connection(org)
    after, secret = parse_connection(
        document, before, allow_loopback=loopback_allowed(svc.settings.public_base_url)
    )
    if secret is not None:
        # NOTE: if the settings write below fails, the new secret is already the current
        # version; a retry of the same request completes the change.
        svc.sso_secrets.put(org_id, secret)
    event = audit.event(
        now=svc.clock.now(),
        event_type="sso.connection",
        outcome="success",
        org_id=org_id,
        actor=f"user:{admin.user_id}",
        context=context,
        details={
            "before": before.as_json() if before else {},
            "after": after.as_json(),
            "client_secret_changed": secret is not None,
        },
    )
    svc.store.set_sso_connection(org_id, after.as_item(), [event])
    logger.info(
        "SSO connection changed",
        extra={"org_id": org_id, "actor": admin.user_id, "protocol": after.protocol},
    )
    return after
