"""Configuration read from the environment: WebAuthn origins and the relying party."""

from __future__ import annotations

import pytest

from mfa_core.errors import ConfigurationError
from mfa_core.settings import Settings

BASE = {
    "MFA_ORGS_TABLE": "orgs",
    "MFA_USERS_TABLE": "users",
    "MFA_FACTORS_TABLE": "factors",
    "MFA_CHALLENGES_TABLE": "challenges",
    "MFA_SESSIONS_TABLE": "sessions",
    "MFA_AUDIT_TABLE": "audit",
    "MFA_COUNTERS_TABLE": "counters",
    "MFA_RESETS_TABLE": "resets",
    "MFA_KMS_KEY_ID": "alias/mfa",
    "MFA_SIGNING_KEY_SECRET": "signing",
    "MFA_JWKS_PARAMETER": "jwks",
    "MFA_PEPPER_SECRET": "pepper",
    "MFA_TOKEN_ISSUER": "https://mfa.example.com",
    "MFA_TOKEN_AUDIENCE": "agent-console",
    "MFA_WEBAUTHN_RP_ID": "console.example.com",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_origins_are_read_as_a_list(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MFA_WEBAUTHN_ORIGINS", "https://console.example.com, http://localhost:3000")
    settings = Settings.from_env()
    assert settings.webauthn_origins == ("https://console.example.com", "http://localhost:3000")
    assert settings.webauthn_rp_id == "console.example.com"
    assert settings.webauthn_challenge_seconds == 120


@pytest.mark.parametrize(
    "origins",
    ["", " , ", "console.example.com", "ftp://console.example.com", "https://x.example/path"],
    ids=["empty", "only-commas", "no-scheme", "other-scheme", "with-path"],
)
def test_malformed_origins_are_a_configuration_error(
    environment: pytest.MonkeyPatch, origins: str
) -> None:
    environment.setenv("MFA_WEBAUTHN_ORIGINS", origins)
    with pytest.raises(ConfigurationError, match="MFA_WEBAUTHN_ORIGINS"):
        Settings.from_env()


def test_missing_rp_id_is_a_configuration_error(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MFA_WEBAUTHN_ORIGINS", "https://console.example.com")
    environment.delenv("MFA_WEBAUTHN_RP_ID")
    with pytest.raises(ConfigurationError, match="MFA_WEBAUTHN_RP_ID"):
        Settings.from_env()


def test_authorizer_cache_defaults_to_ten_seconds(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MFA_WEBAUTHN_ORIGINS", "https://console.example.com")
    assert Settings.from_env().authorizer_cache_seconds == 10

    environment.setenv("MFA_AUTHORIZER_CACHE_SECONDS", "0")
    assert Settings.from_env().authorizer_cache_seconds == 0


@pytest.mark.parametrize("value", ["-1", "ten"])
def test_invalid_authorizer_cache_rejected(environment: pytest.MonkeyPatch, value: str) -> None:
    environment.setenv("MFA_WEBAUTHN_ORIGINS", "https://console.example.com")
    environment.setenv("MFA_AUTHORIZER_CACHE_SECONDS", value)
    with pytest.raises(ConfigurationError, match="MFA_AUTHORIZER_CACHE_SECONDS"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://mfa.example.com/", "https://mfa.example.com"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
    ],
)
def test_public_base_url_is_read(
    environment: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    environment.setenv("MFA_WEBAUTHN_ORIGINS", "https://console.example.com")
    environment.setenv("MFA_PUBLIC_BASE_URL", value)
    assert Settings.from_env().public_base_url == expected


@pytest.mark.parametrize(
    "value", ["http://mfa.example.com", "ftp://mfa.example.com", "mfa.example.com"]
)
def test_public_base_url_must_be_https(environment: pytest.MonkeyPatch, value: str) -> None:
    environment.setenv("MFA_WEBAUTHN_ORIGINS", "https://console.example.com")
    environment.setenv("MFA_PUBLIC_BASE_URL", value)
    with pytest.raises(ConfigurationError, match="MFA_PUBLIC_BASE_URL"):
        Settings.from_env()
