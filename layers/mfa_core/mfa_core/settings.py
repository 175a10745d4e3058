"""Typed configuration, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mfa_core.errors import ConfigurationError


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is missing or empty")
    return value


def _origins(name: str) -> tuple[str, ...]:
    """Read a comma-separated list of web origins such as https://console.example.com."""
    origins = tuple(part.strip() for part in _required(name).split(",") if part.strip())
    if not origins:
        raise ConfigurationError(f"environment variable {name} lists no origin")
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if scheme not in {"https", "http"} or not rest or "/" in rest:
            raise ConfigurationError(
                f"environment variable {name} must list origins such as https://console.example.com"
            )
    return origins


def _base_url(name: str) -> str | None:
    """Read the service's public base URL, such as https://mfa.example.com; unset gives None.

    Plain http is accepted only for loopback hosts, for the local stack and its tests.
    """
    raw = os.environ.get(name, "").strip().rstrip("/")
    if not raw:
        return None
    scheme, _, rest = raw.partition("://")
    host = rest.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    loopback = host in {"localhost", "127.0.0.1", "::1"}
    if not rest or scheme not in {"https", "http"} or (scheme == "http" and not loopback):
        raise ConfigurationError(
            f"environment variable {name} must be an https URL such as https://mfa.example.com"
        )
    return raw


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {name} must be an integer") from exc


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"true", "1", "yes"}:
        return True
    if raw in {"false", "0", "no"}:
        return False
    raise ConfigurationError(f"environment variable {name} must be true or false")


def _file(name: str) -> Path | None:
    """Read the path of a file that must exist. An unset or empty variable gives None."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigurationError(
            f"environment variable {name} names {raw}, which is not an existing file: "
            "correct the path or unset the variable"
        )
    return path


def _non_negative_int(name: str, default: int) -> int:
    value = _int(name, default)
    if value < 0:
        raise ConfigurationError(f"environment variable {name} must be 0 or a positive integer")
    return value


def _positive_int(name: str, default: int) -> int:
    value = _int(name, default)
    if value < 1:
        raise ConfigurationError(f"environment variable {name} must be a positive integer")
    return value


@dataclass(frozen=True, kw_only=True)
class Settings:
    region: str
    # None means the AWS default endpoints; locally this is the moto server.
    aws_endpoint_url: str | None
    orgs_table: str
    users_table: str
    factors_table: str
    challenges_table: str
    sessions_table: str
    audit_table: str
    counters_table: str
    resets_table: str
    audit_digests_table: str = "unset"
    kms_key_id: str
    signing_key_secret: str
    jwks_parameter: str
    # SSM parameter with the public keys of every signing key that may have sealed audit
    # digests still kept; None where no function verifies digests.
    audit_keys_parameter: str | None = None
    # Secrets Manager secret whose value keys the HMAC of stored backup codes.
    pepper_secret: str
    token_issuer: str
    token_audience: str
    totp_issuer: str
    # WebAuthn relying party: the domain that credentials are scoped to, and the exact origins
    # (scheme, host and port) whose pages may run the ceremonies.
    webauthn_rp_id: str
    webauthn_rp_name: str
    webauthn_origins: tuple[str, ...]
    webauthn_challenge_seconds: int = 2 * 60
    # SMS: the sender id shown on phones that support one, and the per-user and per-IP limits.
    sms_sender_id: str | None = None
    # SNS topic for security notifications such as a blocked login; None logs them only.
    security_topic_arn: str | None = None
    # S3 bucket of the compliance evidence packs; None where no function writes or reads them.
    evidence_bucket: str | None = None
    sms_user_per_hour: int = 5
    sms_ip_per_hour: int = 20
    sms_phone_per_day: int = 10
    access_token_seconds: int = 15 * 60
    mfa_token_seconds: int = 5 * 60
    enrollment_token_seconds: int = 15 * 60
    session_seconds: int = 12 * 60 * 60
    lockout_threshold: int = 10
    lockout_seconds: int = 30 * 60
    # A security key's registration with an attestation certificate chain takes a few KiB.
    max_body_bytes: int = 32 * 1024
    # Seconds the signing keys are cached before Secrets Manager and SSM are read again.
    key_cache_seconds: int = 300
    # Geolocation of source addresses: MaxMind-format (.mmdb) City or Country and ASN
    # databases. Without them, the database embedded in the geoip2fast package is used.
    geoip_database: Path | None = None
    geoip_asn_database: Path | None = None
    # Whether CloudFront's viewer location headers are trusted. Only safe when the API can be
    # reached through CloudFront alone: a direct caller can send any header.
    geoip_trust_cloudfront: bool = False
    # Seconds the Lambda authorizer reuses a read of a session and its user, or 0 to read every
    # time. A revocation takes effect in the authorizer within this time.
    authorizer_cache_seconds: int = 10
    # The security scan (mfa_core.cso): its findings, its per-org position and counters, and
    # the EventBridge bus that receives new findings (None publishes to no bus).
    findings_table: str = "unset"
    scan_state_table: str = "unset"
    findings_bus_name: str | None = None
    # Thresholds of the scan's rules, each per UTC hour.
    cso_failed_mfa_per_user: int = 5
    cso_failed_mfa_per_org: int = 25
    cso_failed_mfa_per_ip: int = 10
    cso_users_per_ip: int = 5
    # Logins a user needs on record before an hour without earlier logins counts as unusual.
    cso_profile_min_logins: int = 10
    # Events younger than this are left to the next run, because a transaction that began
    # earlier can still commit an event with an earlier id.
    cso_settle_seconds: int = 30
    # Audit events one run reads per org; a longer backlog is worked off over several runs.
    cso_max_events: int = 10_000
    # SSO: the URL where this API is reached from browsers (the OIDC redirect_uri starts with
    # it), and the name prefix of the Secrets Manager secrets that hold each org's OIDC client
    # secret. Without a base URL, SSO logins fail with a configuration error.
    public_base_url: str | None = None
    sso_secret_prefix: str = "mfa/sso/"  # noqa: S105 - a name prefix, not a secret

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            region=os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
            aws_endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            orgs_table=_required("MFA_ORGS_TABLE"),
            users_table=_required("MFA_USERS_TABLE"),
            factors_table=_required("MFA_FACTORS_TABLE"),
            challenges_table=_required("MFA_CHALLENGES_TABLE"),
            sessions_table=_required("MFA_SESSIONS_TABLE"),
            audit_table=_required("MFA_AUDIT_TABLE"),
            counters_table=_required("MFA_COUNTERS_TABLE"),
            resets_table=_required("MFA_RESETS_TABLE"),
            audit_digests_table=os.environ.get("MFA_AUDIT_DIGESTS_TABLE", "").strip() or "unset",
            kms_key_id=_required("MFA_KMS_KEY_ID"),
            signing_key_secret=_required("MFA_SIGNING_KEY_SECRET"),
            jwks_parameter=_required("MFA_JWKS_PARAMETER"),
            audit_keys_parameter=os.environ.get("MFA_AUDIT_KEYS_PARAMETER", "").strip() or None,
            pepper_secret=_required("MFA_PEPPER_SECRET"),
            token_issuer=_required("MFA_TOKEN_ISSUER"),
            token_audience=_required("MFA_TOKEN_AUDIENCE"),
            totp_issuer=os.environ.get("MFA_TOTP_ISSUER", "").strip() or "Agent Console",
            webauthn_rp_id=_required("MFA_WEBAUTHN_RP_ID"),
            webauthn_rp_name=os.environ.get("MFA_WEBAUTHN_RP_NAME", "").strip() or "Agent Console",
            webauthn_origins=_origins("MFA_WEBAUTHN_ORIGINS"),
            sms_sender_id=os.environ.get("MFA_SMS_SENDER_ID", "").strip() or None,
            security_topic_arn=os.environ.get("MFA_SECURITY_TOPIC_ARN", "").strip() or None,
            evidence_bucket=os.environ.get("MFA_EVIDENCE_BUCKET", "").strip() or None,
            sms_ip_per_hour=_int("MFA_SMS_IP_PER_HOUR", 20),
            sms_user_per_hour=_int("MFA_SMS_USER_PER_HOUR", 5),
            sms_phone_per_day=_int("MFA_SMS_PHONE_PER_DAY", 10),
            access_token_seconds=_int("MFA_ACCESS_TOKEN_SECONDS", 15 * 60),
            session_seconds=_int("MFA_SESSION_SECONDS", 12 * 60 * 60),
            lockout_threshold=_int("MFA_LOCKOUT_THRESHOLD", 10),
            lockout_seconds=_int("MFA_LOCKOUT_SECONDS", 30 * 60),
            geoip_database=_file("MFA_GEOIP_DATABASE"),
            geoip_asn_database=_file("MFA_GEOIP_ASN_DATABASE"),
            geoip_trust_cloudfront=_bool("MFA_GEOIP_TRUST_CLOUDFRONT", False),
            authorizer_cache_seconds=_non_negative_int("MFA_AUTHORIZER_CACHE_SECONDS", 10),
            findings_table=os.environ.get("MFA_FINDINGS_TABLE", "").strip() or "unset",
            scan_state_table=os.environ.get("MFA_SCAN_STATE_TABLE", "").strip() or "unset",
            findings_bus_name=os.environ.get("MFA_FINDINGS_BUS_NAME", "").strip() or None,
            cso_failed_mfa_per_user=_positive_int("MFA_CSO_FAILED_MFA_PER_USER", 5),
            cso_failed_mfa_per_org=_positive_int("MFA_CSO_FAILED_MFA_PER_ORG", 25),
            cso_failed_mfa_per_ip=_positive_int("MFA_CSO_FAILED_MFA_PER_IP", 10),
            cso_users_per_ip=_positive_int("MFA_CSO_USERS_PER_IP", 5),
            cso_profile_min_logins=_positive_int("MFA_CSO_PROFILE_MIN_LOGINS", 10),
            cso_settle_seconds=_non_negative_int("MFA_CSO_SETTLE_SECONDS", 30),
            cso_max_events=_positive_int("MFA_CSO_MAX_EVENTS", 10_000),
            public_base_url=_base_url("MFA_PUBLIC_BASE_URL"),
            sso_secret_prefix=os.environ.get("MFA_SSO_SECRET_PREFIX", "").strip() or "mfa/sso/",
        )


@cache
def settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return Settings.from_env()
