"""The services of one process, built once per cold start and shared by every request.

AWS clients are created on first use, so a function builds only the clients its routes need.
Tests and the local stack call `reset` to start over with another clock or configuration.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mfa_core.adapters import aws
from mfa_core.adapters.events import EventPublisher
from mfa_core.adapters.keys import SigningKeys
from mfa_core.adapters.kms import EnvelopeCipher
from mfa_core.adapters.sns import SecurityNotifier, SmsSender, SnsSmsSender
from mfa_core.adapters.sso_secrets import SsoSecretStore
from mfa_core.clock import Clock, SystemClock
from mfa_core.errors import ConfigurationError
from mfa_core.session_cache import SessionCache
from mfa_core.settings import Settings
from mfa_core.store import bind
from mfa_core.store.findings import ScanStore
from mfa_core.store.repository import Store
from mfa_core.tokens import TokenService

if TYPE_CHECKING:
    from mfa_core.adapters.evidence_store import EvidenceStore
    from mfa_core.adapters.geo import GeoLocator
    from mfa_core.sso.oidc import ProviderCache


@dataclass
class Services:
    settings: Settings
    clock: Clock

    @cached_property
    def dynamodb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    @cached_property
    def store(self) -> Store:
        connection = bind(self.settings, self.dynamodb)
        return Store(connection)

    @cached_property
    def scan_store(self) -> ScanStore:
        self.store  # noqa: B018 - binds the models to their tables and client
        return ScanStore()

    @cached_property
    def session_cache(self) -> SessionCache:
        """Return the authorizer's short-lived cache of session and user reads."""
        return SessionCache(
            self.store.load_session_and_user,
            ttl_seconds=self.settings.authorizer_cache_seconds,
            now=self.clock.now,
        )

    @cached_property
    def kms(self) -> Any:
        return aws.client("kms", self.settings)

    @cached_property
    def secrets_manager(self) -> Any:
        return aws.client("secretsmanager", self.settings)

    @cached_property
    def ssm(self) -> Any:
        return aws.client("ssm", self.settings)

    @cached_property
    def sso_secrets(self) -> SsoSecretStore:
        """The OIDC client secrets of the orgs' SSO connections."""
        return SsoSecretStore(
            lambda: self.secrets_manager,
            prefix=self.settings.sso_secret_prefix,
            kms_key_id=self.settings.kms_key_id,
        )

    @cached_property
    def sso_metadata(self) -> ProviderCache:
        """The OIDC providers' discovery documents and signing keys, cached for the process."""
        # Imported here because only the SSO routes fetch from providers.
        from mfa_core.sso.connection import loopback_allowed  # noqa: PLC0415
        from mfa_core.sso.oidc import ProviderCache  # noqa: PLC0415

        return ProviderCache(
            now=self.clock.now, allow_loopback=loopback_allowed(self.settings.public_base_url)
        )

    @cached_property
    def cipher(self) -> EnvelopeCipher:
        return EnvelopeCipher(self.kms, self.settings.kms_key_id)

    @cached_property
    def sns(self) -> Any:
        return aws.client("sns", self.settings, retry=False)

    @cached_property
    def sms_sender(self) -> SmsSender:
        return SnsSmsSender(lambda: self.sns, sender_id=self.settings.sms_sender_id)

    @cached_property
    def pepper(self) -> bytes:
        """Return the key of the backup codes' HMAC, read from Secrets Manager once."""
        secret = self.secrets_manager.get_secret_value(SecretId=self.settings.pepper_secret)
        value = str(secret.get("SecretString") or "")
        if len(value) < 32:
            raise ConfigurationError("the pepper secret is missing or shorter than 32 characters")
        return value.encode("utf-8")

    @cached_property
    def notifier(self) -> SecurityNotifier:
        return SecurityNotifier(lambda: self.sns, topic_arn=self.settings.security_topic_arn)

    @cached_property
    def events(self) -> Any:
        return aws.client("events", self.settings, retry=False)

    @cached_property
    def finding_events(self) -> EventPublisher:
        """The publisher of new scan findings to the findings bus."""
        return EventPublisher(
            lambda: self.events, bus_name=self.settings.findings_bus_name, source="mfa.cso_scan"
        )

    @cached_property
    def evidence_store(self) -> EvidenceStore:
        """The S3 bucket of compliance evidence packs, for the scan and the operator CLI."""
        from mfa_core.adapters.evidence_store import EvidenceStore  # noqa: PLC0415 - scan only

        if self.settings.evidence_bucket is None:
            raise ConfigurationError("MFA_EVIDENCE_BUCKET is not set; set it to the bucket name.")
        s3 = aws.client("s3", self.settings)
        return EvidenceStore(s3_client=lambda: s3, bucket=self.settings.evidence_bucket)

    @cached_property
    def geo(self) -> GeoLocator:
        """The source-address locator; its database loads on the first lookup that needs it."""
        from mfa_core.adapters.geo import GeoLocator  # noqa: PLC0415 - only login locates

        return GeoLocator.from_settings(self.settings)

    @cached_property
    def signing_keys(self) -> SigningKeys:
        return SigningKeys(
            secrets_client=lambda: self.secrets_manager,
            ssm_client=lambda: self.ssm,
            secret_id=self.settings.signing_key_secret,
            parameter_name=self.settings.jwks_parameter,
            archive_parameter_name=self.settings.audit_keys_parameter,
            cache_seconds=self.settings.key_cache_seconds,
            now=self.clock.now,
        )

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(
            keys=self.signing_keys,
            clock=self.clock,
            issuer=self.settings.token_issuer,
            audience=self.settings.token_audience,
        )


_services: Services | None = None
_services_lock = threading.Lock()


def services() -> Services:
    """Return this process's services, building them from the environment on first use."""
    global _services  # noqa: PLW0603 - one container per process, by design
    with _services_lock:
        if _services is None:
            _services = Services(settings=Settings.from_env(), clock=SystemClock())
        return _services


def reset(*, clock: Clock | None = None, settings: Settings | None = None) -> Services:
    """Replace this process's services, for tests and the local stack."""
    global _services  # noqa: PLW0603 - one container per process, by design
    with _services_lock:
        _services = Services(settings=settings or Settings.from_env(), clock=clock or SystemClock())
        return _services
