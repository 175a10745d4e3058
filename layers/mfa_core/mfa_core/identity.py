"""Validation and normalization of identifiers: org ids, emails, roles, user ids."""

from __future__ import annotations

import re
import secrets

from mfa_core.errors import InvalidInput

ORG_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{1,62}\Z")
USER_ID_PATTERN = re.compile(r"u_[0-9a-f]{24}\Z")
# Deliberately narrow: one @, no spaces, control characters or colons (the colon separates
# issuer and account in an otpauth label).
EMAIL_PATTERN = re.compile(r"[^@\s:\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}\Z")
ROLES = ("admin", "operator", "viewer")


def normalize_org_id(org_id: str, *, field: str = "org_id") -> str:
    if not ORG_ID_PATTERN.match(org_id):
        raise InvalidInput(
            "Use 2 to 63 lower-case letters, digits or hyphens, starting with a letter or digit.",
            field=field,
        )
    return org_id


def normalize_email(email: str, *, field: str = "email") -> str:
    candidate = email.strip().lower()
    if len(candidate) > 254 or not EMAIL_PATTERN.match(candidate):
        raise InvalidInput("Use an email address such as name@example.com.", field=field)
    # A few non-ASCII letters lowercase to ASCII ones (U+212A KELVIN SIGN becomes "k"), so such
    # an address would match another member's ASCII address.
    if any(not char.isascii() and char.lower().isascii() for char in email):
        raise InvalidInput(
            "The email address contains a character that lowercases to an ASCII letter, such "
            "as the Kelvin sign; use the ASCII letter.",
            field=field,
        )
    return candidate


def validate_role(role: str, *, field: str = "role") -> str:
    if role not in ROLES:
        raise InvalidInput(f"Use one of: {', '.join(ROLES)}.", field=field)
    return role


def is_user_id(value: str) -> bool:
    return USER_ID_PATTERN.match(value) is not None


def new_user_id() -> str:
    return f"u_{secrets.token_hex(12)}"
