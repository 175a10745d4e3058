"""Remember-device tokens: a day without MFA at login on a device that passed MFA.

Where an org re-verifies every 24 hours, a successful MFA at login on a device that sent a
`device_id` earns a signed token bound to the user, the org and that device id (as its
SHA-256). At the next login on that device, the token replaces the MFA until 24 hours
after the MFA it records. It stops working at once when the user's factors change
(`factors_version`), when the password changes or is reset or the user forgets their devices
(`credentials_version`), and when the org's policy changes in any way (its version).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mfa_core import tokens
from mfa_core.errors import InvalidInput, InvalidToken
from mfa_core.runtime import Services
from mfa_core.store.models import UserModel

DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}\Z")
LIFETIME = 24 * 60 * 60


@dataclass(frozen=True, kw_only=True)
class RememberedMfa:
    """The MFA that a valid remember-device token records."""

    amr: list[str]
    acr: str
    mfa_time: int


def device_hash(device_id: str | None) -> str | None:
    """Validate a client's device id and return its SHA-256, or None when none was sent."""
    if device_id is None:
        return None
    if not DEVICE_ID_PATTERN.match(device_id):
        raise InvalidInput(
            "Use a device_id of 16 to 128 letters, digits, '-' or '_', generated randomly once "
            "per device and kept with the device.",
            field="device_id",
        )
    return hashlib.sha256(device_id.encode("ascii")).hexdigest()


def issue(
    svc: Services,
    *,
    user: UserModel,
    device: str,
    amr: list[str],
    acr: str,
    mfa_time: float,
    policy_version: int,
) -> tuple[str, int]:
    """Sign a token for `device` (a device_hash) and return it with its lifetime in seconds.

    `policy_version` is the org policy's version: any later policy change voids the token.
    """
    lifetime = max(0, int(mfa_time) + LIFETIME - int(svc.clock.now()))
    token = svc.tokens.issue(
        token_type=tokens.REMEMBER_DEVICE,
        org_id=user.org_id,
        user_id=user.user_id,
        lifetime=lifetime,
        did=device,
        fv=int(user.factors_version or 0),
        cv=int(user.credentials_version or 0),
        pv=policy_version,
        amr=amr,
        acr=acr,
        mfa_time=int(mfa_time),
    )
    return token, lifetime


# The factor type behind each RFC 8176 method that a verification records.
_METHOD_TYPES = {"otp": "totp", "sms": "sms", "hwk": "webauthn", "swk": "webauthn"}


def check(
    svc: Services,
    token: str,
    *,
    user: UserModel,
    device: str | None,
    policy_version: int,
    methods: frozenset[str],
    security_key: bool,
) -> RememberedMfa | None:
    """Return the remembered MFA if `token` is valid for this user, device and policy version
    and its MFA would pass at login now, else None.

    The policy can tighten without a new version, when `enforce_after` arrives, so the
    remembered methods are checked against the current rule: `methods` allowed, and a security
    key where the role must use one (a backup code, which records no method, fails that).
    """
    if device is None:
        return None
    try:
        principal = svc.tokens.verify(token, accept=frozenset({tokens.REMEMBER_DEVICE}))
    except InvalidToken:
        return None
    claims = principal.claims
    mfa_time, amr, acr = claims.get("mfa_time"), claims.get("amr"), claims.get("acr")
    if (
        principal.org_id != user.org_id
        or principal.user_id != user.user_id
        or claims.get("did") != device
        or claims.get("fv") != int(user.factors_version or 0)
        or claims.get("cv") != int(user.credentials_version or 0)
        or claims.get("pv") != policy_version
        or not isinstance(mfa_time, int)
        or svc.clock.now() - mfa_time >= LIFETIME
        or not isinstance(amr, list)
        or not all(isinstance(method, str) for method in amr)
        or acr not in ("aal2", "aal3")
    ):
        return None
    used = {_METHOD_TYPES[method] for method in amr if method in _METHOD_TYPES}
    if not used <= methods or (security_key and "webauthn" not in used):
        return None
    return RememberedMfa(amr=amr, acr=acr, mfa_time=mfa_time)
