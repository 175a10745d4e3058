"""An org's MFA settings, read from its Orgs item with defaults for what is not set."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mfa_core import audit, members, stepup
from mfa_core.audit import RequestContext
from mfa_core.errors import InvalidInput, NotFound, PreconditionFailed
from mfa_core.identity import ROLES
from mfa_core.runtime import Services
from mfa_core.store.models import OrgModel
from mfa_core.store.repository import DEFAULT_AUDIT_RETENTION_DAYS, ConditionFailed
from mfa_core.tokens import Principal

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
    svc.store.set_org_sms(org_id, after.as_item(), changed_at=event.created_at, events=[event])
    return after


def webauthn_policy(org: OrgModel | None) -> WebAuthnPolicy:
    if org is None or org.webauthn is None:
        return WebAuthnPolicy()
    value: Any = org.webauthn
    if not isinstance(value, Mapping):
        value = value.as_dict()
    return WebAuthnPolicy.from_item(value)


def step_up_cap(org: OrgModel | None) -> int:
    """Return the org's maximum MFA age, in seconds, for this service's sensitive routes."""
    return mfa_policy(org).step_up_max_age_minutes * 60


def mfa_required(org: OrgModel | None, *, role: str, now: float) -> bool:
    """Tell whether the org requires MFA of a member with `role` now; an unknown org does."""
    return org is None or mfa_policy(org).rule_for(role=role, now=now).enforcement == "required"


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
    svc.store.set_org_webauthn(
        org_id, policy.as_item(), changed_at=event.created_at, events=[event]
    )
    return policy


def _audited(policy: WebAuthnPolicy) -> dict[str, Any]:
    """Describe a policy for the audit trail, with the roots as SHA-256 fingerprints."""
    item = policy.as_item()
    item["attestation_roots"] = [
        x509.load_pem_x509_certificate(root.encode("ascii")).fingerprint(hashes.SHA256()).hex()
        for root in policy.attestation_roots
    ]
    return item


# -- The org's MFA policy ------------------------------------------------------------------------

ENFORCEMENT = ("off", "optional", "required")
SCOPES = ("all", "roles")
REAUTHENTICATION = ("every_login", "every_24h", "sensitive_only")
METHODS = ("totp", "webauthn", "sms")
SESSION_LIMIT_ACTIONS = ("reject", "revoke_oldest")
GEO_ACTIONS = ("flag", "step_up", "block")
MAX_GRACE_DAYS = 90
MAX_SESSIONS = 100
MAX_RESET_APPROVALS = 3
# Audit retention, in days: three months to ten years.
MIN_AUDIT_RETENTION_DAYS = 90
MAX_AUDIT_RETENTION_DAYS = 3650
# RFC 8176 values and IdP-specific ones alike: short tokens or URIs.
CLAIM_VALUE_PATTERN = re.compile(r"[\x21-\x7e]{1,256}\Z")
MAX_CLAIM_VALUES = 20
# Values that never show an MFA at the identity provider, so the trust settings reject them.
# They are the RFC 8176 amr values of a knowledge factor alone (password, PIN, knowledge-based)
# and of no factor at all (location, risk score, Windows integrated sign-in, user presence).
# "fed" is rejected too, because it shows only that another provider took part.
SINGLE_FACTOR_AMR = frozenset({"pwd", "pin", "kba", "geo", "rba", "wia", "user", "fed"})
# The SAML 2.0 authentication context classes of a password alone, an IP address or an earlier
# session, "unspecified", and the OIDC acr "0", which OpenID Connect Core 1.0 defines as below
# ISO/IEC 29115 level 1.
_SAML_CLASSES = "urn:oasis:names:tc:SAML:2.0:ac:classes:"
SINGLE_FACTOR_ACR = frozenset(
    {
        "0",
        _SAML_CLASSES + "Password",
        _SAML_CLASSES + "PasswordProtectedTransport",
        _SAML_CLASSES + "InternetProtocol",
        _SAML_CLASSES + "InternetProtocolPassword",
        _SAML_CLASSES + "PreviousSession",
        _SAML_CLASSES + "unspecified",
    }
)
EARLIEST_TIME = 946_684_800  # 2000-01-01T00:00:00Z
LATEST_TIME = 253_370_678_400  # 9998-12-31T00:00:00Z


@dataclass(frozen=True, kw_only=True)
class SsoTrust:
    """When the identity provider's own MFA replaces ours at an SSO login.

    The IdP's MFA counts only with `trust_idp_mfa`, when its token or assertion carries one of
    `accepted_amr` or `accepted_acr`, and when it authenticated the user no more than
    `max_auth_age_minutes` ago.
    """

    trust_idp_mfa: bool = False
    accepted_amr: tuple[str, ...] = ()
    accepted_acr: tuple[str, ...] = ()
    max_auth_age_minutes: int = 60

    def as_item(self) -> dict[str, Any]:
        return {
            "trust_idp_mfa": self.trust_idp_mfa,
            "accepted_amr": list(self.accepted_amr),
            "accepted_acr": list(self.accepted_acr),
            "max_auth_age_minutes": self.max_auth_age_minutes,
        }


@dataclass(frozen=True, kw_only=True)
class UserRule:
    """The policy's requirements for one user at one moment (see MfaPolicy.rule_for)."""

    enforcement: str
    methods: frozenset[str]
    security_key: bool


@dataclass(frozen=True, kw_only=True)
class MfaPolicy:
    """An org's MFA policy: who must use MFA, with what, how often, and what happens at limits.

    `enforcement` "required" with `enforce_after` set means "optional" until that moment and
    "required" from it, so a rollout needs no change on the day. A member for whom MFA became
    required has `grace_days` from their first login after that to enroll. `scope` "roles"
    limits enforcement to `scope_roles`; other members are treated as "optional".
    """

    enforcement: str = "required"
    scope: str = "all"
    scope_roles: tuple[str, ...] = ()
    enforce_after: int | None = None
    grace_days: int = 0
    reauthentication: str = "every_login"
    step_up_max_age_minutes: int = 5
    allowed_methods: tuple[str, ...] = METHODS
    sms_fallback_only: bool = True
    security_key_roles: tuple[str, ...] = ()
    max_sessions: int = 0
    session_limit_action: str = "revoke_oldest"
    reset_approvals: int | None = None
    # Read by SSO logins (mfa_core.sso.decision).
    sso: SsoTrust = SsoTrust()
    geo_anomaly_action: str = "flag"
    # Days each audit event is kept before TTL deletes it; a change applies to later events.
    audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS
    version: int = 0

    def rule_for(self, *, role: str, now: float) -> UserRule:
        """Return the effective rule for a member with `role` at time `now`."""
        enforcement = self.enforcement
        if (
            enforcement == "required"
            and self.enforce_after is not None
            and now < self.enforce_after
        ):
            enforcement = "optional"
        if enforcement != "off" and self.scope == "roles" and role not in self.scope_roles:
            enforcement = "optional"
        return UserRule(
            enforcement=enforcement,
            methods=frozenset(self.allowed_methods),
            security_key=enforcement == "required" and role in self.security_key_roles,
        )

    def grace_deadline(self, started_at: float) -> float:
        return started_at + self.grace_days * 86_400

    def as_json(self) -> dict[str, Any]:
        return {
            "enforcement": self.enforcement,
            "scope": self.scope,
            "scope_roles": list(self.scope_roles),
            "enforce_after": _iso(self.enforce_after),
            "grace_days": self.grace_days,
            "reauthentication": self.reauthentication,
            "step_up_max_age_minutes": self.step_up_max_age_minutes,
            "allowed_methods": list(self.allowed_methods),
            "sms_fallback_only": self.sms_fallback_only,
            "security_key_roles": list(self.security_key_roles),
            "max_sessions": self.max_sessions,
            "session_limit_action": self.session_limit_action,
            "reset_approvals": self.reset_approvals,
            "sso": self.sso.as_item(),
            "geo_anomaly_action": self.geo_anomaly_action,
            "audit_retention_days": self.audit_retention_days,
        }

    def as_item(self) -> dict[str, Any]:
        """Return the Orgs item's `policy` map: every field but enforcement and SMS fallback,
        which have their own attributes."""
        item = self.as_json()
        del item["enforcement"], item["sms_fallback_only"]
        item["enforce_after"] = self.enforce_after
        return item


def mfa_policy(org: OrgModel | None) -> MfaPolicy:
    """Read an org's policy; an unknown org gets the strictest reading of the defaults."""
    if org is None:
        return MfaPolicy()
    value: Any = org.policy
    if value is not None and not isinstance(value, Mapping):
        value = value.as_dict()
    item: Mapping[str, Any] = value or {}
    sso: Mapping[str, Any] = item.get("sso") or {}
    enforce_after = item.get("enforce_after")
    approvals = item.get("reset_approvals")
    return MfaPolicy(
        enforcement=org.enforcement,
        scope=str(item.get("scope") or "all"),
        scope_roles=tuple(str(r) for r in item.get("scope_roles") or ()),
        enforce_after=None if enforce_after is None else int(enforce_after),
        grace_days=int(item.get("grace_days", 0)),
        reauthentication=str(item.get("reauthentication") or "every_login"),
        step_up_max_age_minutes=int(item.get("step_up_max_age_minutes", 5)),
        allowed_methods=tuple(str(m) for m in item.get("allowed_methods") or METHODS),
        sms_fallback_only=sms_policy(org).fallback_only,
        security_key_roles=tuple(str(r) for r in item.get("security_key_roles") or ()),
        max_sessions=int(item.get("max_sessions", 0)),
        session_limit_action=str(item.get("session_limit_action") or "revoke_oldest"),
        reset_approvals=None if approvals is None else int(approvals),
        sso=SsoTrust(
            trust_idp_mfa=bool(sso.get("trust_idp_mfa", False)),
            accepted_amr=tuple(str(v) for v in sso.get("accepted_amr") or ()),
            accepted_acr=tuple(str(v) for v in sso.get("accepted_acr") or ()),
            max_auth_age_minutes=int(sso.get("max_auth_age_minutes", 60)),
        ),
        geo_anomaly_action=str(item.get("geo_anomaly_action") or "flag"),
        audit_retention_days=int(item.get("audit_retention_days") or DEFAULT_AUDIT_RETENTION_DAYS),
        version=int(org.policy_version or 0),
    )


def parse_policy(document: Mapping[str, Any]) -> MfaPolicy:
    """Validate a whole policy document, as sent to PUT /v1/orgs/{org}/mfa-policy.

    Every field is required, so that a change never resets a setting by leaving it out.
    Raises InvalidInput naming the first field at fault.
    """
    if "policy" in document and "enforcement" not in document:
        raise InvalidInput(
            "Send the policy object itself: the value of 'policy' in the GET response, "
            "without the wrapper around it.",
            field="policy",
        )
    reader = _Reader(document)
    policy = MfaPolicy(
        enforcement=reader.choice("enforcement", ENFORCEMENT),
        scope=reader.choice("scope", SCOPES),
        scope_roles=reader.roles("scope_roles"),
        enforce_after=reader.timestamp("enforce_after"),
        grace_days=reader.integer("grace_days", 0, MAX_GRACE_DAYS),
        reauthentication=reader.choice("reauthentication", REAUTHENTICATION),
        step_up_max_age_minutes=reader.integer("step_up_max_age_minutes", 1, 60),
        allowed_methods=reader.choices("allowed_methods", METHODS),
        sms_fallback_only=reader.boolean("sms_fallback_only"),
        security_key_roles=reader.roles("security_key_roles"),
        max_sessions=reader.integer("max_sessions", 0, MAX_SESSIONS),
        session_limit_action=reader.choice("session_limit_action", SESSION_LIMIT_ACTIONS),
        reset_approvals=reader.integer("reset_approvals", 0, MAX_RESET_APPROVALS, nullable=True),
        sso=_parse_sso(reader.object("sso")),
        geo_anomaly_action=reader.choice("geo_anomaly_action", GEO_ACTIONS),
        audit_retention_days=reader.integer(
            "audit_retention_days", MIN_AUDIT_RETENTION_DAYS, MAX_AUDIT_RETENTION_DAYS
        ),
    )
    reader.reject_unknown()
    _check_consistency(policy)
    return policy


def _check_consistency(policy: MfaPolicy) -> None:
    if policy.scope == "roles" and not policy.scope_roles:
        raise InvalidInput(
            "Scope 'roles' needs at least one role in scope_roles.", field="scope_roles"
        )
    if policy.scope == "all" and policy.scope_roles:
        raise InvalidInput(
            "Scope 'all' takes no scope_roles; send an empty list, or use scope 'roles'.",
            field="scope_roles",
        )
    if not policy.allowed_methods:
        raise InvalidInput("Allow at least one method.", field="allowed_methods")
    if policy.sms_fallback_only and set(policy.allowed_methods) == {"sms"}:
        raise InvalidInput(
            "SMS is a fallback only, so it cannot be the only allowed method; allow totp or "
            "webauthn too, or set sms_fallback_only to false.",
            field="allowed_methods",
        )
    if policy.security_key_roles and "webauthn" not in policy.allowed_methods:
        raise InvalidInput(
            "Roles that must use security keys need 'webauthn' among the allowed methods.",
            field="security_key_roles",
        )
    if policy.enforce_after is not None and policy.enforcement != "required":
        raise InvalidInput(
            "enforce_after schedules enforcement 'required'; set enforcement to 'required' or "
            "enforce_after to null.",
            field="enforce_after",
        )
    if policy.sso.trust_idp_mfa and not (policy.sso.accepted_amr or policy.sso.accepted_acr):
        raise InvalidInput(
            "Trusting the identity provider's MFA needs at least one accepted amr or acr value.",
            field="sso.accepted_amr",
        )
    if SINGLE_FACTOR_AMR.intersection(policy.sso.accepted_amr):
        raise InvalidInput(
            "accepted_amr lists a value of one factor or none (pwd, pin, kba, geo, rba, wia, "
            "user or fed), which is no evidence of MFA; list values such as mfa.",
            field="sso.accepted_amr",
        )
    if SINGLE_FACTOR_ACR.intersection(policy.sso.accepted_acr):
        raise InvalidInput(
            "accepted_acr lists a password, IP address, earlier session, unspecified or level 0 "
            "context, which is no evidence of MFA; list the provider's MFA context class.",
            field="sso.accepted_acr",
        )


def _parse_sso(document: Mapping[str, Any]) -> SsoTrust:
    reader = _Reader(document, prefix="sso.")
    trust = SsoTrust(
        trust_idp_mfa=reader.boolean("trust_idp_mfa"),
        accepted_amr=reader.strings("accepted_amr"),
        accepted_acr=reader.strings("accepted_acr"),
        max_auth_age_minutes=reader.integer("max_auth_age_minutes", 1, 24 * 60),
    )
    reader.reject_unknown()
    return trust


class _Reader:
    """Strict, field-naming access to a JSON object; never echoes a value back."""

    def __init__(self, document: Mapping[str, Any], *, prefix: str = "") -> None:
        self._document = document
        self._prefix = prefix
        self._read: set[str] = set()

    def _value(self, name: str) -> Any:
        self._read.add(name)
        if name not in self._document:
            raise InvalidInput(
                f"Field '{self._prefix}{name}' is required.", field=self._prefix + name
            )
        return self._document[name]

    def _fail(self, name: str, detail: str) -> InvalidInput:
        return InvalidInput(detail, field=self._prefix + name)

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self._value(name)
        if value not in allowed:
            raise self._fail(name, f"Use one of: {', '.join(allowed)}.")
        return str(value)

    def choices(self, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        value = self._value(name)
        if not isinstance(value, list) or any(item not in allowed for item in value):
            raise self._fail(name, f"Use a list of: {', '.join(allowed)}.")
        if len(set(value)) != len(value):
            raise self._fail(name, "List each value once.")
        return tuple(sorted(value, key=allowed.index))

    def roles(self, name: str) -> tuple[str, ...]:
        return self.choices(name, ROLES)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._value(name)
        if (
            not isinstance(value, list)
            or len(value) > MAX_CLAIM_VALUES
            or not all(isinstance(v, str) and CLAIM_VALUE_PATTERN.match(v) for v in value)
        ):
            raise self._fail(
                name,
                f"Use a list of at most {MAX_CLAIM_VALUES} values, each 1 to 256 printable "
                "ASCII characters without spaces.",
            )
        return tuple(dict.fromkeys(value))

    def integer(self, name: str, low: int, high: int, *, nullable: bool = False) -> Any:
        value = self._value(name)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            null = " or null" if nullable else ""
            raise self._fail(name, f"Use a whole number from {low} to {high}{null}.")
        return value

    def boolean(self, name: str) -> bool:
        value = self._value(name)
        if not isinstance(value, bool):
            raise self._fail(name, "Use true or false.")
        return value

    def timestamp(self, name: str) -> int | None:
        value = self._value(name)
        if value is None:
            return None
        moment = _parse_iso(value) if isinstance(value, str) else None
        if moment is None:
            raise self._fail(
                name,
                "Use an ISO 8601 time with a UTC offset between the years 2000 and 9998, such as "
                "2027-03-01T00:00:00Z, or null.",
            )
        return moment

    def object(self, name: str) -> Mapping[str, Any]:
        value = self._value(name)
        if not isinstance(value, dict):
            raise self._fail(name, "Use a JSON object.")
        return value

    def reject_unknown(self) -> None:
        for name in self._document:
            if name not in self._read:
                field = self._prefix + name if _FIELD.match(name) else None
                shown = f"'{field}' " if field else ""
                raise InvalidInput(f"Field {shown}is not a policy field; remove it.", field=field)


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def _parse_iso(value: str) -> int | None:
    if len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    epoch = int(moment.timestamp())
    # Years 2000 to 9998 only, so that every stored time can be written back as ISO 8601.
    if not EARLIEST_TIME <= epoch <= LATEST_TIME:
        return None
    return epoch


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_mfa_policy(
    svc: Services,
    *,
    org_id: str,
    policy: MfaPolicy,
    expected_version: int | None,
    actor: str,
    context: RequestContext,
) -> MfaPolicy:
    """Replace an org's policy, audited with the values before and after.

    A policy equal to the current one is not written. With `expected_version`, the change
    applies only if the stored policy still has that version (PreconditionFailed otherwise).
    Two concurrent changes never both apply.
    """
    org = svc.store.get_org(org_id)
    if org is None:
        raise NotFound("No org with this id.")
    before = mfa_policy(org)
    if expected_version is not None and expected_version != before.version:
        raise PreconditionFailed(
            "The policy changed since it was read; read it again and reapply the change."
        )
    if MfaPolicy(**{**policy.__dict__, "version": before.version}) == before:
        # Nothing changes: no new version, so remembered devices stay valid, and no event.
        return before
    after = MfaPolicy(**{**policy.__dict__, "version": before.version + 1})
    now = svc.clock.now()
    event = audit.event(
        now=now,
        event_type="policy.mfa",
        outcome="success",
        org_id=org_id,
        actor=actor,
        context=context,
        details={"before": before.as_json(), "after": after.as_json(), "version": after.version},
    )
    current_sms = sms_policy(org)
    sms = SmsPolicy(
        allowed_countries=current_sms.allowed_countries,
        daily_cap=current_sms.daily_cap,
        fallback_only=after.sms_fallback_only,
    )
    try:
        svc.store.set_org_policy(
            org_id,
            enforcement=after.enforcement,
            policy=after.as_item(),
            sms=sms.as_item(),
            version=after.version,
            previous_version=org.policy_version,
            changed_at=now,
            events=[event],
        )
    except ConditionFailed as exc:
        raise PreconditionFailed(
            "The policy changed while this change was applied; read it again and retry."
        ) from exc
    return after


def read_policy(svc: Services, principal: Principal, org_id: str) -> MfaPolicy:
    """Return the org's policy to one of its admins."""
    members.require_admin(svc, principal, org_id)
    return mfa_policy(svc.store.get_org(org_id))


def replace_policy(
    svc: Services,
    principal: Principal,
    org_id: str,
    document: Mapping[str, Any],
    *,
    if_match: str | None,
    context: RequestContext,
) -> MfaPolicy:
    """Replace the org's policy for one of its admins, after a recent MFA.

    `if_match` is the ETag of the policy the change was based on, when the client sent one.
    """
    admin = members.require_admin(svc, principal, org_id)
    org = svc.store.get_org(org_id)
    stepup.require(
        svc,
        principal,
        CHANGE_POLICY_ROUTE,
        action="Changing the MFA policy",
        max_age_cap=step_up_cap(org),
    )
    new = parse_policy(document)
    return set_mfa_policy(
        svc,
        org_id=org_id,
        policy=new,
        expected_version=_version_from_etag(if_match),
        actor=f"user:{admin.user_id}",
        context=context,
    )


CHANGE_POLICY_ROUTE = "PUT /v1/orgs/{org_id}/mfa-policy"


def etag(policy: MfaPolicy) -> str:
    return f'"{policy.version}"'


def _version_from_etag(value: str | None) -> int | None:
    """Return the version that an If-Match header names, or None for none or "*".

    If-Match compares strongly (RFC 9110, section 13.1.1), so a weak ETag (W/"3") is invalid.
    """
    if value is None or value.strip() == "*":
        return None
    text = value.strip()
    digits = text[1:-1]
    if (
        len(text) > 20
        or not text.startswith('"')
        or not text.endswith('"')
        or not digits
        or not (digits.isascii() and digits.isdigit())
    ):
        raise InvalidInput(
            'Send If-Match with the ETag from GET, such as "3", or leave it out.', field="If-Match"
        )
    return int(digits)
