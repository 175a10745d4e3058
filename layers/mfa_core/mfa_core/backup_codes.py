"""Backup codes: look-up secrets (NIST SP 800-63B §5.1.2) for a user who lost their factors.

Ten codes of ten characters from Crockford's base32 alphabet, which has no I, L, O or U, so
each character carries 5 bits and each code 50. They are shown once, grouped as XXXXX-XXXXX,
and accepted in either case, with or without the hyphen. Only an HMAC-SHA256 of each code,
keyed with a secret pepper, is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

COUNT = 10
LENGTH = 10
GROUP = 5
# Crockford's base32: digits and letters without I, L, O and U.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Readers confuse these with digits; Crockford's decoding maps them the same way.
LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
# Remaining codes at or below which a use warns the user to generate new ones.
LOW_WATERMARK = 3
FACTOR_ID = "backup_codes"
TYPE = "backup_codes"


def generate() -> list[str]:
    """Return COUNT new codes, formatted for reading."""
    codes = []
    for _ in range(COUNT):
        raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        codes.append(f"{raw[:GROUP]}-{raw[GROUP:]}")
    return codes


def normalize(code: str) -> str | None:
    """Return a code in canonical form, or None if it cannot be a backup code."""
    canonical = code.strip().upper().replace("-", "").replace(" ", "").translate(LOOK_ALIKES)
    if len(canonical) != LENGTH or any(char not in ALPHABET for char in canonical):
        return None
    return canonical


def digest(pepper: bytes, code: str) -> str:
    """Return the stored form of a canonical code: HMAC-SHA256 under the pepper, in hex."""
    return hmac.new(pepper, code.encode("ascii"), hashlib.sha256).hexdigest()


def find(pepper: bytes, code: str, stored: Iterable[str]) -> str | None:
    """Return the stored digest that matches `code`, comparing each in constant time."""
    canonical = normalize(code)
    if canonical is None:
        return None
    candidate = digest(pepper, canonical)
    match = None
    for value in stored:
        if hmac.compare_digest(candidate, value):
            match = value
    return match
