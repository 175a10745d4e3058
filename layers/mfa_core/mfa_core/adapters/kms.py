"""Envelope encryption of TOTP seeds: AES-256-GCM under a data key that KMS wraps.

Each sealed value carries its own wrapped data key. The org and user ids are bound in twice,
as the KMS encryption context of the data key and as AES-GCM associated data, so a sealed seed
copied onto another user's factor cannot be opened. Unwrapped data keys are cached in memory
for the life of the process, so a warm verification makes no KMS call.
"""

from __future__ import annotations

import base64
import os
import threading
from collections import OrderedDict
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mfa_core.errors import DependencyFailed

_VERSION = "v1"
_NONCE_BYTES = 12


class SealedValueError(Exception):
    """A sealed value is malformed or was not sealed for this org and user."""


class EnvelopeCipher:
    def __init__(self, kms_client: Any, key_id: str, *, cache_size: int = 10_000) -> None:
        self._kms = kms_client
        self._key_id = key_id
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def seal(self, plaintext: bytes, *, org_id: str, user_id: str) -> str:
        """Encrypt `plaintext` under a fresh data key; return a printable sealed value."""
        context = _context(org_id, user_id)
        try:
            response = self._kms.generate_data_key(
                KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=context
            )
        except (BotoCoreError, ClientError) as exc:
            raise DependencyFailed("KMS failed to generate a data key. Retry the request.") from exc
        data_key: bytes = response["Plaintext"]
        wrapped: bytes = response["CiphertextBlob"]
        self._remember(wrapped, data_key)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _associated_data(org_id, user_id))
        parts = (wrapped, nonce, ciphertext)
        return ".".join([_VERSION, *(base64.urlsafe_b64encode(p).decode("ascii") for p in parts)])

    def open(self, sealed: str, *, org_id: str, user_id: str) -> bytes:
        """Decrypt a value made by `seal` for the same org and user.

        Raises SealedValueError when it was sealed for someone else or altered, and
        DependencyFailed when KMS cannot be reached.
        """
        try:
            version, *encoded = sealed.split(".")
            wrapped, nonce, ciphertext = (base64.urlsafe_b64decode(p) for p in encoded)
        except ValueError as exc:
            raise SealedValueError("sealed value is malformed") from exc
        if version != _VERSION:
            raise SealedValueError("sealed value has an unknown version")

        data_key = self._cached(wrapped)
        if data_key is None:
            data_key = self._unwrap(wrapped, org_id=org_id, user_id=user_id)
            self._remember(wrapped, data_key)
        try:
            return AESGCM(data_key).decrypt(nonce, ciphertext, _associated_data(org_id, user_id))
        except InvalidTag as exc:
            raise SealedValueError("sealed value does not belong to this org and user") from exc

    def _unwrap(self, wrapped: bytes, *, org_id: str, user_id: str) -> bytes:
        try:
            response = self._kms.decrypt(
                CiphertextBlob=wrapped,
                KeyId=self._key_id,
                EncryptionContext=_context(org_id, user_id),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidCiphertextException":
                raise SealedValueError("data key does not belong to this org and user") from exc
            raise DependencyFailed("KMS failed to decrypt a data key. Retry the request.") from exc
        except BotoCoreError as exc:
            raise DependencyFailed("KMS failed to decrypt a data key. Retry the request.") from exc
        plaintext: bytes = response["Plaintext"]
        return plaintext

    def _cached(self, wrapped: bytes) -> bytes | None:
        with self._lock:
            data_key = self._cache.get(wrapped)
            if data_key is not None:
                self._cache.move_to_end(wrapped)
            return data_key

    def _remember(self, wrapped: bytes, data_key: bytes) -> None:
        with self._lock:
            self._cache[wrapped] = data_key
            self._cache.move_to_end(wrapped)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


def _context(org_id: str, user_id: str) -> dict[str, str]:
    return {"org_id": org_id, "user_id": user_id, "purpose": "totp-seed"}


def _associated_data(org_id: str, user_id: str) -> bytes:
    return f"totp-seed\x00{org_id}\x00{user_id}".encode()
