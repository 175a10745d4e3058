"""An org's MFA settings, read from its Orgs item with defaults for what is not set."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mfa_core import audit
from mfa_core.audit import RequestContext
from mfa_core.errors import InvalidInput, NotFound
from mfa_core.runtime import Services
from mfa_core.store.models import OrgModel

USER_VERIFICATION = ("required", "preferred", "discouraged")
ATTESTATION = ("none", "direct")
MAX_AAGUIDS = 100
MAX_ATTESTATION_ROOTS = 20
AAGUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


@dataclass(frozen=True, kw_only=True)
class WebAuthnPolicy:
    """The rules for registering and using an org's security keys.

    `user_verification` is the WebAuthn requirement (a PIN or biometric on the key) for both
    ceremonies; with "required", an assertion without it is rejected. With `attestation`
    "direct", registration needs an attestation statement from the key's maker, and, when
    `allowed_aaguids` is not empty, a key model on that list. The attestation certificate
    chain must end in one of `attestation_roots` (PEM), such as the roots that the FIDO
    Metadata Service publishes for the allowed models, or a self-made certificate could claim
    any model.
    """

    user_verification: str = "preferred"
    attestation: str = "none"
    allowed_aaguids: tuple[str, ...] = ()
    attestation_roots: tuple[str, ...] = ()

    @classmethod
    def from_item(cls, value: Mapping[str, Any] | None) -> WebAuthnPolicy:
        if not value:
            return cls()
        return cls(
            user_verification=str(value.get("user_verification") or "preferred"),
            attestation=str(value.get("attestation") or "none"),
            allowed_aaguids=tuple(str(a) for a in value.get("allowed_aaguids") or ()),
            attestation_roots=tuple(str(r) for r in value.get("attestation_roots") or ()),
        )

    def as_item(self) -> dict[str, Any]:
        return {
            "user_verification": self.user_verification,
            "attestation": self.attestation,
            "allowed_aaguids": list(self.allowed_aaguids),
            "attestation_roots": list(self.attestation_roots),
        }


@dataclass(frozen=True, kw_only=True)
class SmsPolicy:
    """An org's rules for SMS codes.

    `allowed_countries` (ISO 3166 region codes, empty for any) limits where codes go.
    `daily_cap` is how many the org may send a day. `fallback_only` keeps SMS from being a
    user's only active factor.
    """

    allowed_countries: tuple[str, ...] = ()
    daily_cap: int = 1000
    fallback_only: bool = True

    def as_item(self) -> dict[str, Any]:
        return {
            "allowed_countries": list(self.allowed_countries),
            "daily_cap": self.daily_cap,
            "fallback_only": self.fallback_only,
        }


def sms_policy(org: OrgModel | None) -> SmsPolicy:
    if org is None or org.sms is None:
        return SmsPolicy()
    value: Any = org.sms
    if not isinstance(value, Mapping):
        value = value.as_dict()
    return SmsPolicy(
        allowed_countries=tuple(str(c) for c in value.get("allowed_countries") or ()),
        daily_cap=int(value.get("daily_cap", 1000)),
        fallback_only=bool(value.get("fallback_only", True)),
    )


def set_sms_policy(
    svc: Services,
    *,
    org_id: str,
    allowed_countries: Iterable[str] | None = None,
    daily_cap: int | None = None,
    fallback_only: bool | None = None,
    actor: str = "operator",
    context: RequestContext = audit.SYSTEM,
) -> SmsPolicy:
    """Change an org's SMS settings, audited with the values before and after.

    A setting given as None keeps its current value.
    """
    from mfa_core.phone import validate_country_list  # noqa: PLC0415 - phonenumbers is large

    org = svc.store.get_org(org_id)
    if org is None:
        raise NotFound("No org with this id.")
    before = sms_policy(org)
    if daily_cap is not None and not 0 <= daily_cap <= 1_000_000:
        raise InvalidInput("Use a daily cap from 0 to 1000000.", field="daily_cap")
    after = SmsPolicy(
        allowed_countries=(
            before.allowed_countries
            if allowed_countries is None
            else validate_country_list(allowed_countries)
        ),
        daily_cap=before.daily_cap if daily_cap is None else daily_cap,
        fallback_only=before.fallback_only if fallback_only is None else fallback_only,
    )
    event = audit.event(
        now=svc.clock.now(),
        event_type="policy.sms",
        outcome="success",
        org_id=org_id,
        actor=actor,
        context=context,
        details={"before": before.as_item(), "after": after.as_item()},
    )
    svc.store.set_org_sms(org_id, after.as_item(), [event])
    return after


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
    *,
    user_verification: str,
    attestation: str,
    allowed_aaguids: Iterable[str],
    attestation_roots: Iterable[str] = (),
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
    roots = tuple(root.strip() for root in attestation_roots)
    if len(roots) > MAX_ATTESTATION_ROOTS or not all(_is_certificate(root) for root in roots):
        raise InvalidInput(
            f"List at most {MAX_ATTESTATION_ROOTS} attestation roots, each a PEM certificate.",
            field="attestation_roots",
        )
    if attestation == "direct" and not roots:
        raise InvalidInput(
            "Attestation 'direct' needs the root certificates that attestation chains must end "
            "in; without them any self-made certificate would pass.",
            field="attestation_roots",
        )
    return WebAuthnPolicy(
        user_verification=user_verification,
        attestation=attestation,
        allowed_aaguids=aaguids,
        attestation_roots=roots,
    )


def _is_certificate(pem: str) -> bool:
    try:
        x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def set_webauthn_policy(
    svc: Services,
    *,
    org_id: str,
    user_verification: str | None = None,
    attestation: str | None = None,
    allowed_aaguids: Iterable[str] | None = None,
    attestation_roots: Iterable[str] | None = None,
    actor: str = "operator",
    context: RequestContext = audit.SYSTEM,
) -> WebAuthnPolicy:
    """Change an org's WebAuthn settings, audited with the values before and after.

    A setting given as None keeps its current value.
    """
    org = svc.store.get_org(org_id)
    if org is None:
        raise NotFound("No org with this id.")
    before = webauthn_policy(org)
    policy = validate_webauthn_policy(
        user_verification=user_verification or before.user_verification,
        attestation=attestation or before.attestation,
        allowed_aaguids=before.allowed_aaguids if allowed_aaguids is None else allowed_aaguids,
        attestation_roots=(
            before.attestation_roots if attestation_roots is None else attestation_roots
        ),
    )
    event = audit.event(
        now=svc.clock.now(),
        event_type="policy.webauthn",
        outcome="success",
        org_id=org_id,
        actor=actor,
        context=context,
        details={"before": _audited(before), "after": _audited(policy)},
    )
    svc.store.set_org_webauthn(org_id, policy.as_item(), [event])
    return policy


def _audited(policy: WebAuthnPolicy) -> dict[str, Any]:
    """Describe a policy for the audit trail, with the roots as SHA-256 fingerprints."""
    item = policy.as_item()
    item["attestation_roots"] = [
        x509.load_pem_x509_certificate(root.encode("ascii")).fingerprint(hashes.SHA256()).hex()
        for root in policy.attestation_roots
    ]
    return item
