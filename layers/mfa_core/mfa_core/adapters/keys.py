"""ES256 signing keys: private keys in Secrets Manager, public keys (the JWKS) in SSM.

Functions that only verify tokens read the public set; only the functions that issue tokens
may read the secret. `rotate` is run by the operator CLI: it adds a key, makes it the active
signer and keeps the previous ones published for a day, well past the expiry of the tokens they
signed.

The same keys sign the audit trail's digests, which must stay verifiable for as long as the
audit events are kept. `rotate` therefore also adds each key's public half to a second set, the
archive, which nothing reads to verify tokens.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.asymmetric import ec

from mfa_core.errors import ConfigurationError, DependencyFailed

logger = Logger(child=True)

ALGORITHM = "ES256"
# Previous signing keys stay published for this long, at most MAX_KEYS keys in all.
KEEP_SECONDS = 24 * 60 * 60
MAX_KEYS = 10
# Minimum seconds between two reads of the public key set caused by an unknown kid.
REREAD_SECONDS = 30
# An archived key stays while a key created after it is younger than the longest audit
# retention that a policy may set (ten years), plus a day for the digests of its last hour.
ARCHIVE_SECONDS = (3650 + 1) * 24 * 60 * 60
# NOTE: an SSM parameter value is at most 8 KB, room for 40 archived keys of about 170 bytes.
# Rotating more often than every three months over ten years drops the oldest, and digests
# that they signed then fail verification.
MAX_ARCHIVED_KEYS = 40


@dataclass(frozen=True)
class PrivateKeySet:
    active_kid: str
    keys: dict[str, dict[str, str]]  # kid -> private JWK

    @property
    def active_jwk(self) -> dict[str, str]:
        return self.keys[self.active_kid]


def _b64url_int(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode("ascii")


def new_private_jwk(created_at: float) -> dict[str, str]:
    """Generate a P-256 key pair as a private JWK (RFC 7518 §6.2) with a random kid."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    numbers = private_key.private_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "alg": ALGORITHM,
        "use": "sig",
        "kid": secrets.token_urlsafe(12),
        "x": _b64url_int(numbers.public_numbers.x),
        "y": _b64url_int(numbers.public_numbers.y),
        "d": _b64url_int(numbers.private_value),
        "created_at": str(int(created_at)),
    }


def public_jwk(private_jwk: dict[str, str]) -> dict[str, str]:
    return {name: private_jwk[name] for name in ("kty", "crv", "alg", "use", "kid", "x", "y")}


class SigningKeys:
    """Reads and caches the key sets; re-reads them after `cache_seconds` to follow rotation."""

    def __init__(
        self,
        *,
        secrets_client: Callable[[], Any],
        ssm_client: Callable[[], Any],
        secret_id: str,
        parameter_name: str,
        cache_seconds: int,
        now: Callable[[], float],
        archive_parameter_name: str | None = None,
    ) -> None:
        self._secrets_client = secrets_client
        self._ssm_client = ssm_client
        self._secret_id = secret_id
        self._parameter_name = parameter_name
        self._archive_parameter_name = archive_parameter_name
        self._cache_seconds = cache_seconds
        self._now = now
        self._lock = threading.Lock()
        self._private: tuple[float, PrivateKeySet] | None = None
        self._public: tuple[float, dict[str, dict[str, str]]] | None = None
        self._archived: tuple[float, dict[str, dict[str, str]]] | None = None

    def private_keys(self) -> PrivateKeySet:
        with self._lock:
            if self._private is None or self._now() - self._private[0] > self._cache_seconds:
                self._private = (self._now(), self._load_private())
            return self._private[1]

    def public_keys(self) -> dict[str, dict[str, str]]:
        """Return the published public keys by kid."""
        with self._lock:
            if self._public is None or self._now() - self._public[0] > self._cache_seconds:
                self._public = (self._now(), self._load_public())
            return self._public[1]

    def public_key(self, kid: str) -> dict[str, str] | None:
        """Return the public key `kid`, reading the published set again if it is not cached.

        Another function may already sign with a key that was published after this process
        cached the set. The set is read again at most once per REREAD_SECONDS, so that
        tokens with made-up kids cannot turn into a flood of SSM requests.
        """
        key = self.public_keys().get(kid)
        if key is not None:
            return key
        with self._lock:
            assert self._public is not None
            if self._now() - self._public[0] < REREAD_SECONDS:
                return None
            self._public = (self._now(), self._load_public())
            return self._public[1].get(kid)

    def archived_key(self, kid: str) -> dict[str, str] | None:
        """Return the public key `kid` from the published set or, failing that, the archive.

        For checking signatures made long ago, such as audit digests; never for tokens.
        """
        key = self.public_key(kid)
        if key is not None or self._archive_parameter_name is None:
            return key
        with self._lock:
            if self._archived is None or self._now() - self._archived[0] > self._cache_seconds:
                self._archived = (self._now(), self._load_set(self._archive_parameter_name))
            return self._archived[1].get(kid)

    def jwks_document(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": list(self.public_keys().values())}

    def rotate(self) -> str:
        """Add a new active key, drop keys older than KEEP_SECONDS, and return the new kid."""
        try:
            current = self._load_private()
            keys = dict(current.keys)
        except ConfigurationError:
            keys = {}
        now = self._now()
        new_key = new_private_jwk(now)
        previous = sorted(keys.values(), key=lambda jwk: int(jwk["created_at"]), reverse=True)
        # Previous keys stay for a day, so tokens they signed stay valid to their expiry however
        # often keys rotate. The latest previous key always stays. The new key goes first, so
        # it is kept even when the operator's clock is behind the others' creation times.
        retained = [
            jwk
            for index, jwk in enumerate(previous)
            if index == 0 or now - int(jwk["created_at"]) < KEEP_SECONDS
        ][: MAX_KEYS - 1]
        newest = [new_key, *retained]
        document = {"active_kid": new_key["kid"], "keys": newest}
        public = {"keys": [public_jwk(jwk) for jwk in newest]}
        # The public key is published first, so that no function signs with a key that the
        # others cannot verify yet.
        try:
            if self._archive_parameter_name is not None:
                self._archive(newest, now)
            self._ssm_client().put_parameter(
                Name=self._parameter_name, Value=json.dumps(public), Type="String", Overwrite=True
            )
            self._secrets_client().put_secret_value(
                SecretId=self._secret_id, SecretString=json.dumps(document)
            )
        except (BotoCoreError, ClientError) as exc:
            raise DependencyFailed("Storing the new signing key failed.") from exc
        with self._lock:
            self._private = None
            self._public = None
            self._archived = None
        return new_key["kid"]

    def _archive(self, private_jwks: list[dict[str, str]], now: float) -> None:
        """Add the keys' public halves to the archive and drop keys no digest may need."""
        parameter = self._archive_parameter_name
        assert parameter is not None
        # A malformed archive raises instead of being replaced, because the keys it contains
        # may still be needed to check kept digests. Only the CLI rotates, so the message may
        # name the parameter.
        try:
            archived = self._load_set(parameter)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"The parameter {parameter} is not a JWK set; restore an earlier version of it and "
                "rotate again."
            ) from exc

        for jwk in private_jwks:
            archived[jwk["kid"]] = {
                name: jwk[name] for name in ("kty", "crv", "kid", "x", "y", "created_at")
            }
        try:
            keys = sorted(
                archived.values(), key=lambda jwk: int(jwk.get("created_at", "0")), reverse=True
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"The parameter {parameter} has a key whose created_at is "
                "not a number; restore an earlier version of it and rotate again."
            ) from exc

        # A key is needed while its successor, the key created next, is young enough.
        retained = [
            jwk
            for index, jwk in enumerate(keys)
            if index == 0 or now - int(keys[index - 1].get("created_at", "0")) < ARCHIVE_SECONDS
        ]

        if len(retained) > MAX_ARCHIVED_KEYS:
            logger.warning(
                "Archived signing keys dropped for lack of space",
                extra={"dropped": len(retained) - MAX_ARCHIVED_KEYS},
            )

        self._ssm_client().put_parameter(
            Name=parameter,
            Value=json.dumps({"keys": retained[:MAX_ARCHIVED_KEYS]}, separators=(",", ":")),
            Type="String",
            Tier="Intelligent-Tiering",
            Overwrite=True,
        )

    def _load_private(self) -> PrivateKeySet:
        try:
            response = self._secrets_client().get_secret_value(SecretId=self._secret_id)
        except (BotoCoreError, ClientError) as exc:
            raise DependencyFailed("Reading the signing keys failed.") from exc
        try:
            document = json.loads(response.get("SecretString") or "{}")
            keys = {jwk["kid"]: jwk for jwk in document["keys"]}
            key_set = PrivateKeySet(active_kid=document["active_kid"], keys=keys)
            key_set.active_jwk  # noqa: B018 - fails early when the active kid is missing
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                "The signing key secret contains no valid key; run `mfa-admin signing-key rotate`."
            ) from exc
        return key_set

    def _load_public(self) -> dict[str, dict[str, str]]:
        return self._load_set(self._parameter_name)

    def _load_set(self, name: str) -> dict[str, dict[str, str]]:
        try:
            response = self._ssm_client().get_parameter(Name=name)
        except (BotoCoreError, ClientError) as exc:
            raise DependencyFailed("Reading the public signing keys failed.") from exc
        try:
            document = json.loads(response["Parameter"]["Value"])
            return {jwk["kid"]: jwk for jwk in document["keys"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError("The public key parameter is not a JWK set.") from exc
