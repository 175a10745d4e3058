"""In-process stand-ins for AWS and the store, for the CPU benchmark.

`Services` builds its members as cached properties, which live in the instance's `__dict__`
once built. `services()` puts these fakes there, so the properties that would create AWS
clients never run; everything else (verification, tokens, cipher, signing keys) is real.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mfa_core.adapters.keys import SigningKeys, new_private_jwk, public_jwk
from mfa_core.adapters.kms import EnvelopeCipher
from mfa_core.audit import AuditEvent
from mfa_core.clock import ManualClock
from mfa_core.runtime import Services
from mfa_core.settings import Settings
from mfa_core.store.models import FactorModel, SessionModel, UserModel
from mfa_core.store.repository import StepUp, Verification

KMS_KEY_ID = "alias/bench"
DATA_KEY = bytes(range(32))
WRAPPED_DATA_KEY = b"wrapped-data-key-for-bench"
RP_ID = "console.example.com"
ORIGIN = "https://console.example.com"


class FakeKms:
    """A KMS client that returns one fixed data key. `decrypt` is not reached while it is cached."""

    def __init__(self) -> None:
        self.calls = 0

    def generate_data_key(self, **_: Any) -> dict[str, bytes]:
        self.calls += 1
        return {"Plaintext": DATA_KEY, "CiphertextBlob": WRAPPED_DATA_KEY}

    def decrypt(self, **_: Any) -> dict[str, bytes]:
        self.calls += 1
        return {"Plaintext": DATA_KEY}


class FakeSecrets:
    """A Secrets Manager client whose secret contains the private JWK set."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._value = json.dumps(document)
        self.calls = 0

    def get_secret_value(self, **_: Any) -> dict[str, str]:
        self.calls += 1
        return {"SecretString": self._value}


class FakeSsm:
    """An SSM client whose parameter contains the public JWK set."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._value = json.dumps(document)
        self.calls = 0

    def get_parameter(self, **_: Any) -> dict[str, dict[str, str]]:
        self.calls += 1
        return {"Parameter": {"Value": self._value}}


class FakeStore:
    """The store methods that `verification.verify` calls, with no storage behind them.

    `load_verification` returns `next_read`, which the benchmark sets before each call, and
    `complete_verification` notes the factor it completed. Any other write means that the
    verification failed or was rejected, so it is counted in `other_writes`.
    """

    def __init__(self) -> None:
        self.next_read: Verification | None = None
        self.completed: list[str] = []
        self.other_writes = 0

    def load_verification(
        self,
        *,
        org_id: str,
        user_id: str,
        transaction_id: str | None,
        session_id: str | None,
        factor_id: str,
        challenge_id: str | None,
    ) -> Verification:
        read = self.next_read
        assert read is not None, "no verification read prepared"
        self.next_read = None
        return read

    def complete_verification(
        self,
        *,
        user: UserModel,
        factor: FactorModel,
        factor_actions: list[Any],
        factor_condition: Any,
        transaction_id: str | None,
        challenge_id: str | None,
        new_session: SessionModel | None,
        step_up: StepUp | None,
        now: float,
        events: list[AuditEvent],
        revocations: Sequence[tuple[SessionModel, AuditEvent]] = (),
        user_update: Sequence[Any] = (),
    ) -> None:
        self.completed.append(factor.factor_id)

    def record(self, *events: AuditEvent) -> None:
        self.other_writes += 1

    def record_failure(
        self,
        user: UserModel,
        *,
        failed_count: int,
        locked_until: float | None,
        now: float,
        events: list[AuditEvent],
    ) -> None:
        self.other_writes += 1

    def flag_suspected_clone(
        self, factor: FactorModel, *, challenge_id: str, now: float, events: list[AuditEvent]
    ) -> None:
        self.other_writes += 1

    def get_user(self, org_id: str, user_id: str) -> UserModel | None:
        self.other_writes += 1
        return None


def settings() -> Settings:
    return Settings(
        region="us-east-1",
        aws_endpoint_url=None,
        orgs_table="bench-orgs",
        users_table="bench-users",
        factors_table="bench-factors",
        challenges_table="bench-challenges",
        sessions_table="bench-sessions",
        audit_table="bench-audit",
        counters_table="bench-counters",
        resets_table="bench-resets",
        kms_key_id=KMS_KEY_ID,
        signing_key_secret="bench-signing-keys",
        jwks_parameter="bench-jwks",
        pepper_secret="bench-pepper",
        token_issuer="https://mfa.example.com",
        token_audience="agent-console",
        totp_issuer="Agent Console",
        webauthn_rp_id=RP_ID,
        webauthn_rp_name="Agent Console",
        webauthn_origins=(ORIGIN,),
    )


def services(clock: ManualClock, store: FakeStore, kms: FakeKms) -> Services:
    """Build `Services` with the fake store, a real cipher over `kms` and real signing keys.

    The signing keys read a generated ES256 JWK set from fake Secrets Manager and SSM clients,
    and stay cached for the whole run.
    """
    private = new_private_jwk(int(clock.now()))
    secrets_client = FakeSecrets({"active_kid": private["kid"], "keys": [private]})
    ssm_client = FakeSsm({"keys": [public_jwk(private)]})
    config = settings()
    svc = Services(settings=config, clock=clock)
    members = vars(svc)
    members["store"] = store
    members["cipher"] = EnvelopeCipher(kms, config.kms_key_id)
    members["signing_keys"] = SigningKeys(
        secrets_client=lambda: secrets_client,
        ssm_client=lambda: ssm_client,
        secret_id=config.signing_key_secret,
        parameter_name=config.jwks_parameter,
        # Warm for the whole run: a function re-reads the keys only every few minutes.
        cache_seconds=10**9,
        now=clock.now,
    )
    return svc
