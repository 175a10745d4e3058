"""The software authenticator's responses pass py_webauthn's own verification."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
import webauthn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from webauthn.authentication.verify_authentication_response import VerifiedAuthentication
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AttestationFormat,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
)
from webauthn.registration.verify_registration_response import VerifiedRegistration

from tests.authenticator import (
    EDDSA,
    ES256,
    FIDO_GEN_CE_AAGUID,
    RS256,
    UP,
    UV,
    SoftAuthenticator,
    WebAuthnError,
    with_authenticator_data,
    with_client_data,
    with_flipped_signature_bit,
)

RP_ID = "console.example.com"
ORIGIN = "https://console.example.com"
OTHER_RP_ID = "attacker.example"
OTHER_ORIGIN = "https://attacker.example"
AAGUID = bytes.fromhex("2fc0579f811347eab116bb5a8db9202a")
OTHER_CHALLENGE = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode("ascii")
ALGORITHMS = [
    pytest.param(ES256, id="ES256"),
    pytest.param(EDDSA, id="EdDSA"),
    pytest.param(RS256, id="RS256"),
]

Tamper = Callable[[dict[str, Any]], dict[str, Any]]


def creation_options(
    *, exclude: tuple[bytes, ...] = (), algorithms: tuple[int, ...] = (ES256, EDDSA, RS256)
) -> dict[str, Any]:
    options = webauthn.generate_registration_options(
        rp_id=RP_ID,
        rp_name="Agent Console",
        user_name="ada@example.com",
        exclude_credentials=[PublicKeyCredentialDescriptor(id=i) for i in exclude],
        supported_pub_key_algs=[COSEAlgorithmIdentifier(a) for a in algorithms],
    )
    parsed: dict[str, Any] = json.loads(webauthn.options_to_json(options))
    return parsed


def request_options(*, allow: tuple[bytes, ...] = ()) -> dict[str, Any]:
    options = webauthn.generate_authentication_options(
        rp_id=RP_ID, allow_credentials=[PublicKeyCredentialDescriptor(id=i) for i in allow]
    )
    parsed: dict[str, Any] = json.loads(webauthn.options_to_json(options))
    return parsed


def verify_registration(
    credential: dict[str, Any], options: dict[str, Any], **overrides: Any
) -> VerifiedRegistration:
    arguments: dict[str, Any] = {
        "credential": credential,
        "expected_challenge": base64url_to_bytes(options["challenge"]),
        "expected_rp_id": RP_ID,
        "expected_origin": ORIGIN,
        **overrides,
    }
    return webauthn.verify_registration_response(**arguments)


def verify_authentication(
    credential: dict[str, Any],
    options: dict[str, Any],
    public_key: bytes,
    *,
    current_sign_count: int = 0,
    **overrides: Any,
) -> VerifiedAuthentication:
    arguments: dict[str, Any] = {
        "credential": credential,
        "expected_challenge": base64url_to_bytes(options["challenge"]),
        "expected_rp_id": RP_ID,
        "expected_origin": ORIGIN,
        "credential_public_key": public_key,
        "credential_current_sign_count": current_sign_count,
        **overrides,
    }
    return webauthn.verify_authentication_response(**arguments)


def registered(authenticator: SoftAuthenticator) -> bytes:
    """Register the authenticator and return the public key the relying party stores."""
    options = creation_options()
    verified = verify_registration(authenticator.register(options, origin=ORIGIN), options)
    return verified.credential_public_key


def decoded(text: str) -> bytes:
    return base64url_to_bytes(text)


def all_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in all_strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in all_strings(item)]
    return [value] if isinstance(value, str) else []


def leaf_certificate(credential: dict[str, Any]) -> x509.Certificate:
    attestation_object = cbor2.loads(decoded(credential["response"]["attestationObject"]))
    return x509.load_der_x509_certificate(attestation_object["attStmt"]["x5c"][0])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_registration_verifies_for_algorithm(algorithm: int) -> None:
    authenticator = SoftAuthenticator(algorithm=algorithm)
    options = creation_options()

    verified = verify_registration(authenticator.register(options, origin=ORIGIN), options)

    assert verified.credential_id == authenticator.credential_id
    assert verified.credential_public_key == authenticator.credential_public_key
    assert verified.fmt == AttestationFormat.NONE
    assert verified.sign_count == 0
    assert verified.user_verified is True


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_registration_json_matches_browser(algorithm: int) -> None:
    authenticator = SoftAuthenticator(algorithm=algorithm, transports=("usb", "nfc"))
    options = creation_options()

    credential = authenticator.register(options, origin=ORIGIN)

    assert set(credential) == {
        "id",
        "rawId",
        "type",
        "response",
        "authenticatorAttachment",
        "clientExtensionResults",
    }
    assert credential["id"] == credential["rawId"]
    assert decoded(credential["rawId"]) == authenticator.credential_id
    assert credential["type"] == "public-key"
    assert credential["authenticatorAttachment"] == "cross-platform"
    assert credential["clientExtensionResults"] == {}
    response = credential["response"]
    assert response["transports"] == ["usb", "nfc"]
    assert response["publicKeyAlgorithm"] == algorithm
    spki = serialization.load_der_public_key(decoded(response["publicKey"]))
    assert spki.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == decoded(response["publicKey"])
    client_data = decoded(response["clientDataJSON"])
    expected_client_data = {
        "type": "webauthn.create",
        "challenge": options["challenge"],
        "origin": ORIGIN,
        "crossOrigin": False,
    }
    assert client_data == json.dumps(expected_client_data, separators=(",", ":")).encode()
    assert not [s for s in all_strings(credential) if "=" in s]


ATTESTATIONS = [
    ("none", AttestationFormat.NONE),
    ("packed-self", AttestationFormat.PACKED),
    ("packed-x5c", AttestationFormat.PACKED),
]


@pytest.mark.parametrize(("attestation", "fmt"), ATTESTATIONS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_registration_verifies_for_attestation(
    attestation: str, fmt: AttestationFormat, algorithm: int
) -> None:
    authenticator = SoftAuthenticator(algorithm=algorithm, attestation=attestation, aaguid=AAGUID)
    options = creation_options()
    root = authenticator.attestation_root_pem
    roots = {AttestationFormat.PACKED: [root]} if root else None

    credential = authenticator.register(options, origin=ORIGIN)
    verified = verify_registration(credential, options, pem_root_certs_bytes_by_fmt=roots)

    assert verified.fmt == fmt
    assert verified.aaguid == str(uuid.UUID(bytes=AAGUID))
    assert (root is not None) is (attestation == "packed-x5c")


def test_packed_x5c_rejected_under_other_root() -> None:
    authenticator = SoftAuthenticator(attestation="packed-x5c", aaguid=AAGUID)
    other_root = SoftAuthenticator(attestation="packed-x5c").attestation_root_pem
    assert other_root is not None
    options = creation_options()
    credential = authenticator.register(options, origin=ORIGIN)

    with pytest.raises(InvalidRegistrationResponse, match="chain could not be validated"):
        verify_registration(
            credential,
            options,
            pem_root_certs_bytes_by_fmt={AttestationFormat.PACKED: [other_root]},
        )


def test_packed_x5c_certificate_meets_webauthn_rules() -> None:
    authenticator = SoftAuthenticator(attestation="packed-x5c", aaguid=AAGUID)

    leaf = leaf_certificate(authenticator.register(creation_options(), origin=ORIGIN))

    assert leaf.version == x509.Version.v3
    subject = {attribute.oid: attribute.value for attribute in leaf.subject}
    assert subject[x509.NameOID.COUNTRY_NAME] == "US"
    assert subject[x509.NameOID.ORGANIZATION_NAME]
    assert subject[x509.NameOID.ORGANIZATIONAL_UNIT_NAME] == "Authenticator Attestation"
    assert subject[x509.NameOID.COMMON_NAME]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    aaguid_extension = leaf.extensions.get_extension_for_oid(FIDO_GEN_CE_AAGUID)
    assert aaguid_extension.critical is False
    assert isinstance(aaguid_extension.value, x509.UnrecognizedExtension)
    assert aaguid_extension.value.value == b"\x04\x10" + AAGUID


def test_packed_x5c_zero_aaguid_omits_extension() -> None:
    authenticator = SoftAuthenticator(attestation="packed-x5c")

    leaf = leaf_certificate(authenticator.register(creation_options(), origin=ORIGIN))

    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_oid(FIDO_GEN_CE_AAGUID)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_authentication_verifies_and_counts(algorithm: int) -> None:
    authenticator = SoftAuthenticator(algorithm=algorithm)
    public_key = registered(authenticator)

    counts: list[int] = []
    for _ in range(2):
        options = request_options(allow=(authenticator.credential_id,))
        credential = authenticator.authenticate(options, origin=ORIGIN)
        current = counts[-1] if counts else 0
        verified = verify_authentication(
            credential, options, public_key, current_sign_count=current
        )
        assert verified.credential_id == authenticator.credential_id
        assert verified.user_verified is True
        counts.append(verified.new_sign_count)

    assert counts == [1, 2]
    assert authenticator.sign_count == 2


def test_authentication_json_matches_browser() -> None:
    authenticator = SoftAuthenticator()
    creation = creation_options()
    authenticator.register(creation, origin=ORIGIN)
    options = request_options()

    credential = authenticator.authenticate(options, origin=ORIGIN)

    assert credential["id"] == credential["rawId"]
    assert credential["type"] == "public-key"
    assert credential["authenticatorAttachment"] == "cross-platform"
    assert credential["clientExtensionResults"] == {}
    response = credential["response"]
    assert set(response) == {"clientDataJSON", "authenticatorData", "signature", "userHandle"}
    assert response["userHandle"] == creation["user"]["id"]
    client_data = json.loads(decoded(response["clientDataJSON"]))
    assert list(client_data) == ["type", "challenge", "origin", "crossOrigin"]
    assert client_data["type"] == "webauthn.get"
    assert not [s for s in all_strings(credential) if "=" in s]


def test_counter_step_zero_reports_zero() -> None:
    authenticator = SoftAuthenticator(counter_step=0, backup_eligible=True, backup_state=True)
    public_key = registered(authenticator)

    for _ in range(2):
        options = request_options()
        credential = authenticator.authenticate(options, origin=ORIGIN)
        assert verify_authentication(credential, options, public_key).new_sign_count == 0


def test_sign_count_starts_at_configured_value() -> None:
    authenticator = SoftAuthenticator(sign_count=41)
    options = creation_options()
    verified = verify_registration(authenticator.register(options, origin=ORIGIN), options)
    assert verified.sign_count == 41

    request = request_options()
    credential = authenticator.authenticate(request, origin=ORIGIN)
    result = verify_authentication(
        credential, request, verified.credential_public_key, current_sign_count=41
    )
    assert result.new_sign_count == 42


ASSERTION_TAMPERING: list[tuple[str, Tamper, str]] = [
    ("origin", lambda c: with_client_data(c, origin=OTHER_ORIGIN), "client data origin"),
    ("challenge", lambda c: with_client_data(c, challenge=OTHER_CHALLENGE), "challenge"),
    ("type", lambda c: with_client_data(c, type="webauthn.create"), "client data type"),
    ("cross_origin", lambda c: with_client_data(c, crossOrigin=True), "signature"),
    ("signature", with_flipped_signature_bit, "signature"),
    ("sign_count", lambda c: with_authenticator_data(c, sign_count=1000), "signature"),
    ("uv_flag", lambda c: with_authenticator_data(c, flags=UP), "signature"),
    ("up_flag", lambda c: with_authenticator_data(c, flags=UV), "User was not present"),
]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [pytest.param(tamper, message, id=name) for name, tamper, message in ASSERTION_TAMPERING],
)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_tampered_assertion_rejected(tamper: Tamper, message: str, algorithm: int) -> None:
    authenticator = SoftAuthenticator(algorithm=algorithm)
    public_key = registered(authenticator)
    options = request_options()
    credential = authenticator.authenticate(options, origin=ORIGIN)

    with pytest.raises(InvalidAuthenticationResponse, match=message):
        verify_authentication(tamper(credential), options, public_key)


REGISTRATION_TAMPERING: list[tuple[str, Tamper, str]] = [
    ("origin", lambda c: with_client_data(c, origin=OTHER_ORIGIN), "client data origin"),
    ("challenge", lambda c: with_client_data(c, challenge=OTHER_CHALLENGE), "challenge"),
    ("cross_origin", lambda c: with_client_data(c, crossOrigin=True), "signature"),
    ("signature", with_flipped_signature_bit, "signature"),
    ("sign_count", lambda c: with_authenticator_data(c, sign_count=7), "signature"),
]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [pytest.param(tamper, message, id=name) for name, tamper, message in REGISTRATION_TAMPERING],
)
@pytest.mark.parametrize("attestation", ["packed-self", "packed-x5c"])
def test_tampered_registration_rejected(tamper: Tamper, message: str, attestation: str) -> None:
    authenticator = SoftAuthenticator(attestation=attestation)
    options = creation_options()
    credential = authenticator.register(options, origin=ORIGIN)

    with pytest.raises(InvalidRegistrationResponse, match=message):
        verify_registration(tamper(credential), options)


def test_none_attestation_leaves_auth_data_unsigned() -> None:
    authenticator = SoftAuthenticator()
    options = creation_options()
    credential = authenticator.register(options, origin=ORIGIN)

    verified = verify_registration(with_authenticator_data(credential, sign_count=7), options)

    assert verified.sign_count == 7
    with pytest.raises(ValueError, match="no signature"):
        with_flipped_signature_bit(credential)


WRONG_PARTY = [
    pytest.param(
        {"origin": OTHER_ORIGIN}, {"expected_origin": OTHER_ORIGIN}, "origin", id="origin"
    ),
    pytest.param({"rp_id": OTHER_RP_ID}, {"expected_rp_id": OTHER_RP_ID}, "RP ID", id="rp_id"),
]


@pytest.mark.parametrize(("signed_for", "accepted_by", "message"), WRONG_PARTY)
def test_wrong_party_registration_rejected_by_check(
    signed_for: dict[str, Any], accepted_by: dict[str, Any], message: str
) -> None:
    authenticator = SoftAuthenticator(attestation="packed-self")
    options = creation_options()
    credential = authenticator.register(options, **{"origin": ORIGIN, **signed_for})

    with pytest.raises(InvalidRegistrationResponse, match=message):
        verify_registration(credential, options)
    assert verify_registration(credential, options, **accepted_by).fmt == AttestationFormat.PACKED


@pytest.mark.parametrize(("signed_for", "accepted_by", "message"), WRONG_PARTY)
def test_wrong_party_assertion_rejected_by_check(
    signed_for: dict[str, Any], accepted_by: dict[str, Any], message: str
) -> None:
    authenticator = SoftAuthenticator()
    public_key = registered(authenticator)
    options = request_options()
    credential = authenticator.authenticate(options, **{"origin": ORIGIN, **signed_for})

    with pytest.raises(InvalidAuthenticationResponse, match=message):
        verify_authentication(credential, options, public_key)
    assert verify_authentication(credential, options, public_key, **accepted_by).new_sign_count == 1


def test_challenge_override_is_signed() -> None:
    authenticator = SoftAuthenticator()
    public_key = registered(authenticator)
    options = request_options()

    credential = authenticator.authenticate(options, origin=ORIGIN, challenge=OTHER_CHALLENGE)

    client_data = json.loads(decoded(credential["response"]["clientDataJSON"]))
    assert client_data["challenge"] == OTHER_CHALLENGE
    with pytest.raises(InvalidAuthenticationResponse, match="challenge"):
        verify_authentication(credential, options, public_key)
    override: dict[str, Any] = {"expected_challenge": decoded(OTHER_CHALLENGE)}
    assert verify_authentication(credential, options, public_key, **override).new_sign_count == 1


def test_exclude_credentials_lists_credential() -> None:
    authenticator = SoftAuthenticator()
    options = creation_options(exclude=(bytes(32), authenticator.credential_id))

    with pytest.raises(WebAuthnError, match="InvalidStateError") as raised:
        authenticator.register(options, origin=ORIGIN)
    assert raised.value.name == "InvalidStateError"


def test_exclude_credentials_lists_others() -> None:
    authenticator = SoftAuthenticator()
    options = creation_options(exclude=(bytes(32),))

    verified = verify_registration(authenticator.register(options, origin=ORIGIN), options)

    assert verified.credential_id == authenticator.credential_id


def test_pub_key_cred_params_lacks_algorithm() -> None:
    authenticator = SoftAuthenticator(algorithm=EDDSA)
    options = creation_options(algorithms=(ES256, RS256))

    with pytest.raises(WebAuthnError, match="NotSupportedError"):
        authenticator.register(options, origin=ORIGIN)


def test_required_verification_without_capability() -> None:
    authenticator = SoftAuthenticator(user_verification=False)
    options = creation_options()
    options["authenticatorSelection"] = {"userVerification": "required"}

    with pytest.raises(WebAuthnError, match="NotAllowedError"):
        authenticator.register(options, origin=ORIGIN)


ALLOW_CREDENTIALS = [
    pytest.param(False, (), True, id="empty"),
    pytest.param(True, (), True, id="own"),
    pytest.param(False, (bytes(32),), False, id="other"),
    pytest.param(True, (bytes(32),), True, id="other_and_own"),
]


@pytest.mark.parametrize(("list_own", "others", "responds"), ALLOW_CREDENTIALS)
def test_allow_credentials_honoured(list_own: bool, others: tuple[bytes], responds: bool) -> None:
    authenticator = SoftAuthenticator()
    public_key = registered(authenticator)
    own = (authenticator.credential_id,) if list_own else ()
    options = request_options(allow=others + own)

    if not responds:
        with pytest.raises(WebAuthnError, match="NotAllowedError"):
            authenticator.authenticate(options, origin=ORIGIN)
        return
    credential = authenticator.authenticate(options, origin=ORIGIN)
    assert verify_authentication(credential, options, public_key).new_sign_count == 1


def test_user_absent_rejected() -> None:
    authenticator = SoftAuthenticator()
    public_key = registered(authenticator)
    options = request_options()

    credential = authenticator.authenticate(options, origin=ORIGIN, user_present=False)

    with pytest.raises(InvalidAuthenticationResponse, match="not present"):
        verify_authentication(credential, options, public_key)


def test_unverified_user_rejected_when_required() -> None:
    authenticator = SoftAuthenticator()
    public_key = registered(authenticator)
    options = request_options()

    credential = authenticator.authenticate(options, origin=ORIGIN, user_verified=False)

    assert verify_authentication(credential, options, public_key).user_verified is False
    with pytest.raises(InvalidAuthenticationResponse, match="User verification is required"):
        verify_authentication(credential, options, public_key, require_user_verification=True)


BACKUP_FLAGS = [
    pytest.param(False, False, CredentialDeviceType.SINGLE_DEVICE, id="device_bound"),
    pytest.param(True, False, CredentialDeviceType.MULTI_DEVICE, id="eligible"),
    pytest.param(True, True, CredentialDeviceType.MULTI_DEVICE, id="backed_up"),
]


@pytest.mark.parametrize(("eligible", "backed_up", "device_type"), BACKUP_FLAGS)
def test_backup_flags_reported(
    eligible: bool, backed_up: bool, device_type: CredentialDeviceType
) -> None:
    authenticator = SoftAuthenticator(backup_eligible=eligible, backup_state=backed_up)
    options = creation_options()
    registration = verify_registration(authenticator.register(options, origin=ORIGIN), options)
    request = request_options()
    credential = authenticator.authenticate(request, origin=ORIGIN)

    authentication = verify_authentication(credential, request, registration.credential_public_key)

    assert registration.credential_device_type == device_type
    assert registration.credential_backed_up is backed_up
    assert authentication.credential_device_type == device_type
    assert authentication.credential_backed_up is backed_up


@pytest.mark.parametrize(
    "arguments",
    [{"algorithm": -35}, {"attestation": "tpm"}, {"aaguid": bytes(15)}],
    ids=["algorithm", "attestation", "aaguid"],
)
def test_invalid_settings_raise(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SoftAuthenticator(**arguments)
