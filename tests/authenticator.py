"""A software FIDO2 authenticator whose output matches a browser's PublicKeyCredential.toJSON().

Options are the PublicKeyCredentialCreationOptionsJSON and PublicKeyCredentialRequestOptionsJSON
that the service returns. The authenticator does not check that `rp_id` fits `origin`, so tests
can produce correctly signed responses for the wrong relying party or origin and see the
service reject them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

ES256, EDDSA, RS256 = -7, -8, -257
# Flag bits of authenticatorData.
UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40
ATTESTATIONS = ("none", "packed-self", "packed-x5c")
# id-fido-gen-ce-aaguid: the AAGUID extension of a packed attestation certificate.
FIDO_GEN_CE_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class WebAuthnError(Exception):
    """A failed ceremony, named like the DOMException a browser raises (`InvalidStateError`)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


@dataclass(frozen=True)
class AttestationCertificates:
    """A throwaway CA and the packed attestation certificate it issued."""

    root_pem: bytes
    leaf_der: bytes
    leaf_key: ec.EllipticCurvePrivateKey


class SoftAuthenticator:
    def __init__(
        self,
        *,
        algorithm: int = ES256,
        aaguid: bytes = bytes(16),
        sign_count: int = 0,
        counter_step: int = 1,
        user_verification: bool = True,
        backup_eligible: bool = False,
        backup_state: bool = False,
        attestation: str = "none",
        transports: tuple[str, ...] = ("usb",),
        credential_id: bytes | None = None,
    ) -> None:
        """Generate the credential key pair.

        Each assertion adds `counter_step` to `sign_count` before signing, so with 0 the counter
        stays at its start value, as a synced passkey's does.
        `attestation` sets the statement whatever conveyance the options request, so tests can
        send any format to the service.
        """
        if attestation not in ATTESTATIONS:
            raise ValueError(f"attestation must be one of {ATTESTATIONS}, not {attestation!r}")
        if len(aaguid) != 16:
            raise ValueError(f"aaguid must be 16 bytes, not {len(aaguid)}")
        self.algorithm = algorithm
        self.key = _generate_key(algorithm)
        self.aaguid = aaguid
        self.sign_count = sign_count
        self.counter_step = counter_step
        self.user_verification = user_verification
        self.backup_eligible = backup_eligible
        self.backup_state = backup_state
        self.attestation = attestation
        self.transports = transports
        self.credential_id = credential_id if credential_id is not None else secrets.token_bytes(32)
        self.user_handle: bytes | None = None
        self.certificates = _issue_certificates(aaguid) if attestation == "packed-x5c" else None

    @property
    def attestation_root_pem(self) -> bytes | None:
        """The PEM root certificate that a `packed-x5c` attestation chains to."""
        return self.certificates.root_pem if self.certificates else None

    @property
    def credential_public_key(self) -> bytes:
        """The COSE_Key of the credential, as a relying party stores it."""
        return cbor2.dumps(_cose_key(self.key))

    def register(
        self,
        options: dict[str, Any],
        *,
        origin: str,
        rp_id: str | None = None,
        challenge: str | None = None,
    ) -> dict[str, Any]:
        """Return RegistrationResponseJSON, as `navigator.credentials.create()` would."""
        # With an empty list a browser offers ES256 and RS256, as WebAuthn's create() steps specify.
        params = options.get("pubKeyCredParams") or [{"alg": ES256}, {"alg": RS256}]
        if not any(p.get("alg") == self.algorithm for p in params):
            message = f"pubKeyCredParams does not offer algorithm {self.algorithm}"
            raise WebAuthnError("NotSupportedError", message)
        excluded = {_unb64(c["id"]) for c in options.get("excludeCredentials", [])}
        if self.credential_id in excluded:
            raise WebAuthnError("InvalidStateError", "excludeCredentials lists this credential")
        selection = options.get("authenticatorSelection", {})
        if selection.get("userVerification") == "required" and not self.user_verification:
            message = "the options require user verification, but user_verification is False"
            raise WebAuthnError("NotAllowedError", message)

        rp_id = rp_id or options["rp"].get("id") or _host(origin)
        self.user_handle = _unb64(options["user"]["id"])
        client_data = _client_data("webauthn.create", challenge, options, origin)
        attested = self.aaguid + len(self.credential_id).to_bytes(2, "big") + self.credential_id
        attested += self.credential_public_key
        auth_data = self._auth_data(rp_id, uv=self.user_verification, attested=attested)
        signed = auth_data + hashlib.sha256(client_data).digest()

        fmt, att_stmt = "none", {}
        if self.attestation == "packed-self":
            fmt, att_stmt = "packed", {"alg": self.algorithm, "sig": _sign(self.key, signed)}
        elif self.certificates is not None:
            x5c = [self.certificates.leaf_der]
            sig = _sign(self.certificates.leaf_key, signed)
            fmt, att_stmt = "packed", {"alg": ES256, "sig": sig, "x5c": x5c}
        attestation_object = cbor2.dumps({"fmt": fmt, "attStmt": att_stmt, "authData": auth_data})
        spki = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        response = {
            "clientDataJSON": _b64(client_data),
            "attestationObject": _b64(attestation_object),
            "transports": list(self.transports),
            "publicKeyAlgorithm": self.algorithm,
            "publicKey": _b64(spki),
            "authenticatorData": _b64(auth_data),
        }
        return self._credential(response)

    def authenticate(
        self,
        options: dict[str, Any],
        *,
        origin: str,
        rp_id: str | None = None,
        challenge: str | None = None,
        user_verified: bool | None = None,
        user_present: bool = True,
    ) -> dict[str, Any]:
        """Return AuthenticationResponseJSON, as `navigator.credentials.get()` would.

        `user_verified` defaults to the authenticator's capability, and an explicit value
        overrides it even when the options require verification.
        """
        allowed = {_unb64(c["id"]) for c in options.get("allowCredentials", [])}
        if allowed and self.credential_id not in allowed:
            raise WebAuthnError("NotAllowedError", "allowCredentials does not list this credential")
        uv = self.user_verification if user_verified is None else user_verified
        if user_verified is None and options.get("userVerification") == "required" and not uv:
            message = "the options require user verification, but user_verification is False"
            raise WebAuthnError("NotAllowedError", message)

        self.sign_count += self.counter_step
        rp_id = rp_id or options.get("rpId") or _host(origin)
        client_data = _client_data("webauthn.get", challenge, options, origin)
        auth_data = self._auth_data(rp_id, uv=uv, up=user_present)
        signature = _sign(self.key, auth_data + hashlib.sha256(client_data).digest())
        response = {
            "clientDataJSON": _b64(client_data),
            "authenticatorData": _b64(auth_data),
            "signature": _b64(signature),
        }
        if self.user_handle is not None:
            response["userHandle"] = _b64(self.user_handle)
        return self._credential(response)

    def _auth_data(self, rp_id: str, *, uv: bool, up: bool = True, attested: bytes = b"") -> bytes:
        flags = 0
        for bit, is_set in [
            (UP, up),
            (UV, uv),
            (BE, self.backup_eligible),
            (BS, self.backup_state),
            (AT, bool(attested)),
        ]:
            if is_set:
                flags |= bit
        rp_id_hash = hashlib.sha256(rp_id.encode("utf-8")).digest()
        return rp_id_hash + bytes([flags]) + self.sign_count.to_bytes(4, "big") + attested

    def _credential(self, response: dict[str, Any]) -> dict[str, Any]:
        credential_id = _b64(self.credential_id)
        return {
            "id": credential_id,
            "rawId": credential_id,
            "type": "public-key",
            "response": response,
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {},
        }


def with_client_data(credential: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Copy a response with keys of clientDataJSON changed (such as `origin`), not re-signed."""
    result = copy.deepcopy(credential)
    client_data = json.loads(_unb64(result["response"]["clientDataJSON"]))
    client_data.update(changes)
    result["response"]["clientDataJSON"] = _b64(_compact_json(client_data))
    return result


def with_flipped_signature_bit(credential: dict[str, Any]) -> dict[str, Any]:
    """Copy a response with the last bit of its assertion or attestation signature flipped."""
    result = copy.deepcopy(credential)
    response = result["response"]
    if "signature" in response:
        response["signature"] = _b64(_flip_last_bit(_unb64(response["signature"])))
        return result
    attestation_object = cbor2.loads(_unb64(response["attestationObject"]))
    if "sig" not in attestation_object["attStmt"]:
        raise ValueError(f"a {attestation_object['fmt']!r} attestation has no signature to flip")
    attestation_object["attStmt"]["sig"] = _flip_last_bit(attestation_object["attStmt"]["sig"])
    response["attestationObject"] = _b64(cbor2.dumps(attestation_object))
    return result


def with_authenticator_data(
    credential: dict[str, Any], *, sign_count: int | None = None, flags: int | None = None
) -> dict[str, Any]:
    """Copy a response with the counter or flags of authenticatorData rewritten, not re-signed.

    In a registration response the authData inside attestationObject changes too.
    """

    def rewrite(auth_data: bytes) -> bytes:
        if flags is not None:
            auth_data = _set_flags(auth_data, flags)
        if sign_count is not None:
            auth_data = auth_data[:33] + sign_count.to_bytes(4, "big") + auth_data[37:]
        return auth_data

    result = copy.deepcopy(credential)
    response = result["response"]
    response["authenticatorData"] = _b64(rewrite(_unb64(response["authenticatorData"])))
    if "attestationObject" in response:
        attestation_object = cbor2.loads(_unb64(response["attestationObject"]))
        attestation_object["authData"] = rewrite(attestation_object["authData"])
        response["attestationObject"] = _b64(cbor2.dumps(attestation_object))
    return result


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _host(origin: str) -> str:
    return urlsplit(origin).hostname or ""


def _compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _client_data(
    ceremony: str, challenge: str | None, options: dict[str, Any], origin: str
) -> bytes:
    if challenge is None:
        # A browser decodes the options' challenge to bytes and reports it unpadded.
        challenge = _b64(_unb64(options["challenge"]))
    fields = {"type": ceremony, "challenge": challenge, "origin": origin, "crossOrigin": False}
    return _compact_json(fields)


def _set_flags(auth_data: bytes, flags: int) -> bytes:
    return auth_data[:32] + bytes([flags]) + auth_data[33:]


def _flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _generate_key(algorithm: int) -> PrivateKey:
    if algorithm == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == RS256:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"algorithm must be ES256 (-7), EdDSA (-8) or RS256 (-257), not {algorithm}")


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))  # DER-encoded (r, s)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _cose_key(key: PrivateKey) -> dict[int, Any]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
        return {1: 2, 3: ES256, -1: 1, -2: x, -3: y}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {1: 1, 3: EDDSA, -1: 6, -2: raw}
    rsa_numbers = key.public_key().public_numbers()
    n, e = (v.to_bytes((v.bit_length() + 7) // 8, "big") for v in (rsa_numbers.n, rsa_numbers.e))
    return {1: 3, 3: RS256, -1: n, -2: e}


def _issue_certificates(aaguid: bytes) -> AttestationCertificates:
    """Issue a CA and a leaf that meet WebAuthn's packed attestation certificate requirements."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Soft Authenticator Test CA")])
    ca_usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ca_constraints = x509.BasicConstraints(ca=True, path_length=0)
    root = _certificate(ca_name, ca_name, ca_key, ca_key, ca_constraints, ca_usage)

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Soft Authenticator Vendor"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Soft Authenticator Attestation"),
        ]
    )
    leaf_extensions: list[x509.ExtensionType] = [x509.BasicConstraints(ca=False, path_length=None)]
    if aaguid != bytes(16):
        # The extension value is the AAGUID wrapped in a DER OCTET STRING (tag 0x04, length 16).
        leaf_extensions.append(x509.UnrecognizedExtension(FIDO_GEN_CE_AAGUID, b"\x04\x10" + aaguid))
    leaf = _certificate(leaf_name, ca_name, leaf_key, ca_key, *leaf_extensions)

    return AttestationCertificates(
        root_pem=root.public_bytes(serialization.Encoding.PEM),
        leaf_der=leaf.public_bytes(serialization.Encoding.DER),
        leaf_key=leaf_key,
    )


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    *extensions: x509.ExtensionType,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()  # cryptography always writes version 3 certificates
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
    )
    for extension in extensions:
        # Only the AAGUID extension is non-critical, as WebAuthn requires.
        critical = not isinstance(extension, x509.UnrecognizedExtension)
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())
