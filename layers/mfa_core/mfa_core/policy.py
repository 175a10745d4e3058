"""An org's MFA settings, read from its Orgs item with defaults for what is not set."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mfa_core import audit
from mfa_core.audit import RequestContext
from mfa_core.errors import InvalidInput, NotFound
from mfa_core.runtime import Services
from mfa_core.store.models import OrgModel

USER_VERIFICATION = ("required", "preferred", "discouraged")
ATTESTATION = ("none", "direct")
MAX_AAGUIDS = 100
AAGUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


@dataclass(frozen=True, kw_only=True)
class WebAuthnPolicy:
    """How an org's security keys are registered and used.

    `user_verification` is the WebAuthn requirement (a PIN or biometric on the key) for both
    ceremonies; with "required", an assertion without it is rejected. With `attestation`
    "direct", registration needs an attestation statement from the key's maker, and, when
    `allowed_aaguids` is not empty, a key model on that list.
    """

    user_verification: str = "preferred"
    attestation: str = "none"
    allowed_aaguids: tuple[str, ...] = ()

    @classmethod
    def from_item(cls, value: Mapping[str, Any] | None) -> WebAuthnPolicy:
        if not value:
            return cls()
        return cls(
            user_verification=str(value.get("user_verification") or "preferred"),
            attestation=str(value.get("attestation") or "none"),
            allowed_aaguids=tuple(str(a) for a in value.get("allowed_aaguids") or ()),
        )

    def as_item(self) -> dict[str, Any]:
        return {
            "user_verification": self.user_verification,
            "attestation": self.attestation,
            "allowed_aaguids": list(self.allowed_aaguids),
        }


def webauthn_policy(org: OrgModel | None) -> WebAuthnPolicy:
    if org is None or org.webauthn is None:
        return WebAuthnPolicy()
    value: Any = org.webauthn
    if not isinstance(value, Mapping):
        value = value.as_dict()
    return WebAuthnPolicy.from_item(value)


def mfa_required(org: OrgModel | None) -> bool:
    """Tell whether the org requires MFA at login; an unknown org is treated as requiring it."""
    return org is None or org.enforcement == "required"


def validate_webauthn_policy(
    *, user_verification: str, attestation: str, allowed_aaguids: Iterable[str]
) -> WebAuthnPolicy:
    if user_verification not in USER_VERIFICATION:
        raise InvalidInput(
            f"Use one of: {', '.join(USER_VERIFICATION)}.", field="user_verification"
        )
    if attestation not in ATTESTATION:
        raise InvalidInput(f"Use one of: {', '.join(ATTESTATION)}.", field="attestation")
    aaguids = tuple(sorted({a.strip().lower() for a in allowed_aaguids}))
    if len(aaguids) > MAX_AAGUIDS or not all(AAGUID_PATTERN.match(a) for a in aaguids):
        raise InvalidInput(
            f"List at most {MAX_AAGUIDS} AAGUIDs in the 8-4-4-4-12 hexadecimal form.",
            field="allowed_aaguids",
        )
    if aaguids and attestation != "direct":
        raise InvalidInput(
            "An AAGUID allow-list needs attestation 'direct', which makes keys prove their model.",
            field="allowed_aaguids",
        )
    return WebAuthnPolicy(
        user_verification=user_verification, attestation=attestation, allowed_aaguids=aaguids
    )


def set_webauthn_policy(
    svc: Services,
    *,
    org_id: str,
    user_verification: str,
    attestation: str = "none",
    allowed_aaguids: Iterable[str] = (),
    actor: str = "operator",
    context: RequestContext = audit.SYSTEM,
) -> WebAuthnPolicy:
    """Change an org's WebAuthn settings, audited with the values before and after."""
    policy = validate_webauthn_policy(
        user_verification=user_verification,
        attestation=attestation,
        allowed_aaguids=allowed_aaguids,
    )
    org = svc.store.get_org(org_id)
    if org is None:
        raise NotFound("No org with this id.")
    before = webauthn_policy(org)
    event = audit.event(
        now=svc.clock.now(),
        event_type="policy.webauthn",
        outcome="success",
        org_id=org_id,
        actor=actor,
        context=context,
        details={"before": before.as_item(), "after": policy.as_item()},
    )
    svc.store.set_org_webauthn(org_id, policy.as_item(), [event])
    return policy
