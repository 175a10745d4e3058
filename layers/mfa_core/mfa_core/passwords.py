"""Password hashing with argon2id (RFC 9106), through argon2-cffi."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 256


@cache
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults follow RFC 9106's second recommended profile:
    # argon2id, t=3, m=64 MiB, p=4.
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher().hash("no account has this password; hashed once so misses cost the same")


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check `password` against `password_hash` in comparable time whether or not a hash exists.

    With no hash (an unknown account), a dummy hash is verified instead, so an unknown email
    costs as much as a wrong password and timing does not reveal which accounts exist.
    """
    target = password_hash if password_hash is not None else _dummy_hash()
    try:
        matched = _hasher().verify(target, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None
