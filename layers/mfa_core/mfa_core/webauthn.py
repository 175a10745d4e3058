"""WebAuthn security keys: the ceremony options, and the checks of what the browser returns.

Built on py_webauthn, which implements the verification procedures of W3C Web Authentication
Level 3 (§7.1 registration, §7.2 authentication). This module adds what the relying party
decides: allowed origins and algorithms, the org's user-verification and attestation rules,
and the signature counter. Challenges, factors and sessions are handled by the callers.

py_webauthn is imported by the functions that use it, not at module level: importing it loads
every attestation format, which adds about 40 ms to the cold start of a function that may only
verify TOTP codes.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509

from mfa_core.errors import InvalidInput, RegistrationRejected
from mfa_core.policy import WebAuthnPolicy
from mfa_core.settings import Settings

if TYPE_CHECKING:
    from webauthn.helpers.structs import (
        AuthenticationCredential,
        PublicKeyCredentialDescriptor,
        RegistrationCredential,
    )

REGISTRATION = "webauthn.registration"
AUTHENTICATION = "webauthn.authentication"
TYPE = "webauthn"
DEFAULT_LABEL = "Security key"
# W3C WebAuthn §13.4.3 recommends at least 16 random bytes, and NIST SP 800-63B 64 bits.
CHALLENGE_BYTES = 32
FIDO_GEN_CE_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
# COSE algorithm identifiers: ES256, EdDSA and RS256.
ALGORITHMS = (-7, -8, -257)
# W3C WebAuthn §7.1 step 25: reject credential ids longer than 1023 bytes.
MAX_CREDENTIAL_ID_BYTES = 1023
TRANSPORTS = ("usb", "nfc", "ble", "smart-card", "hybrid", "internal", "cable")


@dataclass(frozen=True, kw_only=True)
class RelyingParty:
    rp_id: str
    rp_name: str
    origins: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class KeyRef:
    """A registered credential as the options name it: its base64url id and transports."""

    credential_id: str
    transports: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RegisteredKey:
    credential_id: str
    public_key: str
    sign_count: int
    aaguid: str
    attestation_format: str
    backup_eligible: bool
    backup_state: bool
    user_verified: bool
    transports: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Assertion:
    sign_count: int
    user_verified: bool
    backup_eligible: bool
    backup_state: bool


class AssertionRejected(Exception):
    """An assertion failed a check; `reason` names the check, for the audit trail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_challenge() -> str:
    return _encode(secrets.token_bytes(CHALLENGE_BYTES))


def factor_id_for(org_id: str, user_id: str, credential_id: str) -> str:
    """Return the factor id of a user's credential.

    Derived from the credential id, so that a verification can read the factor without the
    client sending its id, and so that one key cannot be registered twice for the same user.
    """
    digest = hashlib.sha256(f"{org_id}#{user_id}#{credential_id}".encode()).hexdigest()
    return f"f_{digest[:24]}"


def creation_options(
    rp: RelyingParty,
    *,
    user_handle: str,
    user_name: str,
    challenge: str,
    exclude: Iterable[KeyRef],
    policy: WebAuthnPolicy,
    timeout_ms: int,
) -> dict[str, Any]:
    """Return PublicKeyCredentialCreationOptionsJSON, as parseCreationOptionsFromJSON takes it."""
    from webauthn import generate_registration_options  # noqa: PLC0415
    from webauthn.helpers.cose import COSEAlgorithmIdentifier  # noqa: PLC0415
    from webauthn.helpers.options_to_json_dict import options_to_json_dict  # noqa: PLC0415
    from webauthn.helpers.structs import (  # noqa: PLC0415
        AttestationConveyancePreference,
        AuthenticatorSelectionCriteria,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=rp.rp_name,
        user_id=user_handle.encode("utf-8"),
        user_name=user_name,
        user_display_name=user_name,
        challenge=_decode(challenge),
        timeout=timeout_ms,
        attestation=AttestationConveyancePreference(policy.attestation),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement(policy.user_verification),
        ),
        exclude_credentials=[_descriptor(key) for key in exclude],
        supported_pub_key_algs=[COSEAlgorithmIdentifier(a) for a in ALGORITHMS],
    )
    return options_to_json_dict(options)


def request_options(
    rp: RelyingParty,
    *,
    challenge: str,
    allow: Iterable[KeyRef],
    user_verification: str,
    timeout_ms: int,
) -> dict[str, Any]:
    """Return PublicKeyCredentialRequestOptionsJSON, as parseRequestOptionsFromJSON takes it."""
    from webauthn import generate_authentication_options  # noqa: PLC0415
    from webauthn.helpers.options_to_json_dict import options_to_json_dict  # noqa: PLC0415
    from webauthn.helpers.structs import UserVerificationRequirement  # noqa: PLC0415

    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=_decode(challenge),
        timeout=timeout_ms,
        allow_credentials=[_descriptor(key) for key in allow],
        user_verification=UserVerificationRequirement(user_verification),
    )
    return options_to_json_dict(options)


def parse_registration(credential: dict[str, Any]) -> RegistrationCredential:
    """Parse RegistrationResponseJSON; raise InvalidInput on "credential" when malformed."""
    from webauthn.helpers import parse_registration_credential_json  # noqa: PLC0415
    from webauthn.helpers.exceptions import WebAuthnException  # noqa: PLC0415

    try:
        return parse_registration_credential_json(credential)
    except (WebAuthnException, ValueError, TypeError) as exc:
        raise _malformed() from exc


def parse_assertion(credential: dict[str, Any]) -> AuthenticationCredential:
    """Parse AuthenticationResponseJSON; raise InvalidInput on "credential" when malformed."""
    from webauthn.helpers import parse_authentication_credential_json  # noqa: PLC0415
    from webauthn.helpers.exceptions import WebAuthnException  # noqa: PLC0415

    try:
        parsed = parse_authentication_credential_json(credential)
    except (WebAuthnException, ValueError, TypeError) as exc:
        raise _malformed() from exc
    if _encode(parsed.raw_id) != parsed.id:
        raise _malformed()
    return parsed


def verify_registration(
    rp: RelyingParty,
    credential: RegistrationCredential,
    *,
    challenge: str,
    policy: WebAuthnPolicy,
) -> RegisteredKey:
    """Verify a registration response against the challenge, the relying party and the policy."""
    from webauthn import verify_registration_response  # noqa: PLC0415
    from webauthn.helpers import parse_attestation_object, parse_client_data_json  # noqa: PLC0415
    from webauthn.helpers.cose import COSEAlgorithmIdentifier  # noqa: PLC0415
    from webauthn.helpers.decode_credential_public_key import (  # noqa: PLC0415
        decode_credential_public_key,
    )
    from webauthn.helpers.decoded_public_key_to_cryptography import (  # noqa: PLC0415
        decoded_public_key_to_cryptography,
    )
    from webauthn.helpers.exceptions import WebAuthnException  # noqa: PLC0415
    from webauthn.helpers.structs import AttestationFormat, CredentialDeviceType  # noqa: PLC0415

    try:
        client_data = parse_client_data_json(bytes(credential.response.client_data_json))
    except (WebAuthnException, ValueError, TypeError) as exc:
        raise RegistrationRejected(
            "The security key's registration could not be verified; start again.",
            reason="registration_invalid",
        ) from exc
    if client_data.cross_origin:
        raise RegistrationRejected(
            "Register security keys on the console's own page, not inside another site's frame.",
            reason="cross_origin",
        )
    roots = [root.encode("ascii") for root in policy.attestation_roots]
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=_decode(challenge),
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            require_user_verification=policy.user_verification == "required",
            supported_pub_key_algs=[COSEAlgorithmIdentifier(a) for a in ALGORITHMS],
            pem_root_certs_bytes_by_fmt={fmt: roots for fmt in AttestationFormat}
            if roots
            else None,
        )
        # A key whose public key cannot be loaded, or does not fit its algorithm, would fail
        # at every later sign-in.
        decoded = decode_credential_public_key(verified.credential_public_key)
        _check_key_type(decoded_public_key_to_cryptography(decoded), int(decoded.alg))
    except Exception as exc:
        # Malformed keys and attestation statements also raise KeyError, TypeError and others.
        raise RegistrationRejected(
            "The security key's registration could not be verified; start again.",
            reason="registration_invalid",
        ) from exc
    if len(verified.credential_id) > MAX_CREDENTIAL_ID_BYTES:
        raise RegistrationRejected(
            f"The credential id is longer than {MAX_CREDENTIAL_ID_BYTES} bytes.",
            reason="credential_id_too_long",
        )

    fmt = verified.fmt
    if policy.attestation == "direct":
        # Self attestation signs with the credential's own key, which proves nothing about
        # the key's maker; "direct" needs a certificate chain from the maker. py_webauthn
        # anchors packed, tpm and fido-u2f chains in the org's roots alone, but adds Google's
        # and Apple's roots for the android and apple formats, whose certificates do not bind
        # the key model.
        statement = parse_attestation_object(credential.response.attestation_object).att_stmt
        rooted = {AttestationFormat.PACKED, AttestationFormat.TPM, AttestationFormat.FIDO_U2F}
        if fmt not in rooted or not statement.x5c:
            raise RegistrationRejected(
                "This org accepts only security keys that prove their model with attestation.",
                reason="attestation_missing",
            )
        if _certificate_aaguid(statement.x5c[0]) not in (None, verified.aaguid):
            raise RegistrationRejected(
                "The attestation certificate names another key model than the key reports.",
                reason="aaguid_mismatch",
            )
        if policy.allowed_aaguids and verified.aaguid not in policy.allowed_aaguids:
            raise RegistrationRejected(
                "This model of security key is not on the org's list of allowed keys.",
                reason="aaguid_not_allowed",
            )
    return RegisteredKey(
        credential_id=_encode(verified.credential_id),
        public_key=_encode(verified.credential_public_key),
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        attestation_format=AttestationFormat(fmt).value,
        backup_eligible=(
            CredentialDeviceType(verified.credential_device_type)
            == CredentialDeviceType.MULTI_DEVICE
        ),
        backup_state=verified.credential_backed_up,
        user_verified=verified.user_verified,
        transports=tuple(
            sorted({t.value for t in credential.response.transports or ()} & set(TRANSPORTS))
        ),
    )


def verify_assertion(
    rp: RelyingParty,
    credential: AuthenticationCredential,
    *,
    challenge: str,
    public_key: str,
    user_handle: str,
) -> Assertion:
    """Verify an assertion's client data, authenticator data and signature (W3C §7.2).

    The checks whose failures the audit trail records by name run first, on the parsed data.
    py_webauthn then repeats them and checks the signature. User verification and the signature
    counter are left to the caller, which has the org's rule and the stored count. Raises
    AssertionRejected.
    """
    from webauthn import verify_authentication_response  # noqa: PLC0415
    from webauthn.helpers import parse_authenticator_data, parse_client_data_json  # noqa: PLC0415
    from webauthn.helpers.exceptions import WebAuthnException  # noqa: PLC0415
    from webauthn.helpers.structs import ClientDataType  # noqa: PLC0415

    response = credential.response
    try:
        client_data = parse_client_data_json(bytes(response.client_data_json))
        auth_data = parse_authenticator_data(bytes(response.authenticator_data))
    except (WebAuthnException, ValueError, TypeError) as exc:
        raise AssertionRejected("malformed_response") from exc

    if client_data.type != ClientDataType.WEBAUTHN_GET:
        raise AssertionRejected("wrong_ceremony")

    if not secrets.compare_digest(client_data.challenge, _decode(challenge)):
        raise AssertionRejected("challenge_mismatch")

    if client_data.origin not in rp.origins:
        raise AssertionRejected("origin_not_allowed")

    # The console never runs the ceremony inside another site's frame.
    if client_data.cross_origin:
        raise AssertionRejected("cross_origin")

    if auth_data.rp_id_hash != hashlib.sha256(rp.rp_id.encode("utf-8")).digest():
        raise AssertionRejected("rp_id_mismatch")

    if not auth_data.flags.up:
        raise AssertionRejected("user_not_present")

    # A user handle, when the key returns one, must be the one it was registered with.
    returned_handle = response.user_handle
    if returned_handle is not None and bytes(returned_handle) != user_handle.encode("utf-8"):
        raise AssertionRejected("user_handle_mismatch")

    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=_decode(challenge),
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            credential_public_key=_decode(public_key),
            # The counter is checked by the caller, after the signature.
            credential_current_sign_count=0,
            require_user_verification=False,
        )
    except Exception as exc:
        # A stored key that cannot be loaded also raises ValueError, KeyError and others.
        raise AssertionRejected("signature_invalid") from exc
    return Assertion(
        sign_count=verified.new_sign_count,
        user_verified=verified.user_verified,
        backup_eligible=auth_data.flags.be,
        backup_state=verified.credential_backed_up,
    )


def counter_regressed(*, stored: int, reported: int) -> bool:
    """Tell whether a signature counter failed to increase (W3C WebAuthn §6.1.1).

    Authenticators that do not count report 0 every time, which is allowed. Any other value
    must exceed the stored one, or two copies of the credential may exist.
    """
    return (reported != 0 or stored != 0) and reported <= stored


def assurance(*, user_verified: bool, backup_eligible: bool) -> tuple[list[str], str]:
    """Return the amr values and acr of a login with a security key.

    A device-bound key with user verification is multi-factor cryptographic hardware: AAL3.
    A key without user verification, or a synced passkey, gives AAL2.
    """
    amr = ["pwd", "swk" if backup_eligible else "hwk", "mfa"]
    acr = "aal3" if user_verified and not backup_eligible else "aal2"
    return amr, acr


def relying_party(settings: Settings) -> RelyingParty:
    return RelyingParty(
        rp_id=settings.webauthn_rp_id,
        rp_name=settings.webauthn_rp_name,
        origins=settings.webauthn_origins,
    )


def key_ref(summary: dict[str, Any]) -> KeyRef | None:
    credential_id = summary.get("credential_id")
    if summary.get("type") != TYPE or not isinstance(credential_id, str):
        return None
    return KeyRef(credential_id=credential_id, transports=tuple(summary.get("transports") or ()))


def _check_key_type(public_key: object, algorithm: int) -> None:
    """Raise ValueError unless the public key is of the kind its COSE algorithm signs with."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: PLC0415

    expected: dict[int, type] = {
        -7: ec.EllipticCurvePublicKey,
        -8: ed25519.Ed25519PublicKey,
        -257: rsa.RSAPublicKey,
    }
    if not isinstance(public_key, expected.get(algorithm, type(None))):
        raise ValueError(f"public key does not match COSE algorithm {algorithm}")
    if isinstance(public_key, ec.EllipticCurvePublicKey) and not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise ValueError("ES256 needs a P-256 key")


def _certificate_aaguid(certificate_der: bytes) -> str | None:
    """Return the AAGUID in a packed attestation certificate's id-fido-gen-ce-aaguid extension.

    W3C WebAuthn §8.2.1: when present, it must match the AAGUID in the authenticator data.
    """
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
        extension = certificate.extensions.get_extension_for_oid(FIDO_GEN_CE_AAGUID)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise RegistrationRejected(
            "The attestation certificate is not valid DER.", reason="attestation_invalid"
        ) from exc
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    # The extension's value is an OCTET STRING (tag 4, length 16) holding the 16 AAGUID bytes.
    if len(raw) != 18 or raw[:2] != b"\x04\x10":
        return ""
    return str(uuid.UUID(bytes=raw[2:]))


def _descriptor(key: KeyRef) -> PublicKeyCredentialDescriptor:
    from webauthn.helpers.structs import (  # noqa: PLC0415
        AuthenticatorTransport,
        PublicKeyCredentialDescriptor,
    )

    transports = []
    for value in key.transports:
        try:
            transports.append(AuthenticatorTransport(value))
        except ValueError:
            continue
    return PublicKeyCredentialDescriptor(
        id=_decode(key.credential_id), transports=transports or None
    )


def _encode(data: bytes) -> str:
    """Encode bytes as base64url without padding, as WebAuthn's JSON does."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _malformed() -> InvalidInput:
    return InvalidInput(
        "Field 'credential' must be the JSON of a PublicKeyCredential, as its toJSON() returns.",
        field="credential",
        code="invalid_credential_format",
    )
