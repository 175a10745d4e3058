"""PynamoDB models, one per DynamoDB table in template.yaml.

Table names, region and endpoint are set at run time by `mfa_core.store.bind`, because they
come from configuration rather than from code.
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model


class _Unbound:
    table_name = "unbound"
    region = "us-east-1"
    host: str | None = None
    max_retry_attempts = 2


# The user_id of Challenges items that belong to no user yet, such as an SSO request.
NO_USER = "-"


def user_key(org_id: str, user_id: str) -> str:
    """Return the partition key that groups one user's items in other tables."""
    return f"{org_id}#{user_id}"


class OrgModel(Model):
    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    enforcement = UnicodeAttribute()  # off | optional | required
    created_at = NumberAttribute()
    # WebAuthn settings, read by mfa_core.policy.WebAuthnPolicy; absent means the defaults.
    webauthn: MapAttribute[str, Any] = MapAttribute(null=True)
    # SMS settings, read by mfa_core.policy.SmsPolicy; absent means the defaults.
    sms: MapAttribute[str, Any] = MapAttribute(null=True)
    # The rest of the MFA policy, read by mfa_core.policy.MfaPolicy; absent means the defaults.
    policy: MapAttribute[str, Any] = MapAttribute(null=True)
    # Incremented by every policy change, so that a change based on a stale read fails.
    policy_version = NumberAttribute(null=True)
    # When the MFA policy last changed, for compliance evidence.
    policy_changed_at = NumberAttribute(null=True)
    # The SSO connection without its secret, read by mfa_core.sso.connection; absent means none.
    sso_connection: MapAttribute[str, Any] = MapAttribute(null=True)
    # The latest hour whose audit digest was written, so that a deleted digest is not
    # written again (mfa_core.audit_trail.seal).
    audit_sealed_through = UnicodeAttribute(null=True)


class UserEmailIndex(GlobalSecondaryIndex["UserModel"]):
    class Meta:
        index_name = "email-index"
        projection = AllProjection()

    email_key = UnicodeAttribute(hash_key=True)


class UserModel(Model):
    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute(range_key=True)
    email = UnicodeAttribute()
    email_key = UnicodeAttribute()  # "<org_id>#<lower-cased email>", for the email index
    email_index = UserEmailIndex()
    role = UnicodeAttribute()
    status = UnicodeAttribute(default="active")  # active | disabled
    password_hash = UnicodeAttribute()
    created_at = NumberAttribute()
    failed_count = NumberAttribute(default=0)
    last_failed_at = NumberAttribute(null=True)
    locked_until = NumberAttribute(null=True)
    # factor_id -> {"type", "label"}, and for a security key also "credential_id" and
    # "transports"; kept in step with the Factors table in the same transaction, so that login
    # and WebAuthn challenges learn a user's factors without another read.
    active_factors: MapAttribute[str, Any] = MapAttribute(default=dict)
    last_mfa_at = NumberAttribute(null=True)
    # Incremented by every change to active_factors, so that a change decided on a read of
    # the factors fails when another change came first.
    factors_version = NumberAttribute(null=True)
    # Sessions created before this time are no longer valid, unless re-confirmed after it (see
    # SessionModel.confirmed_at). Set when the user's factors change.
    sessions_valid_after = NumberAttribute(null=True)
    # Incremented by a password change, a reset or forgetting remembered devices:
    # remember-device tokens that carry an older value fail.
    credentials_version = NumberAttribute(null=True)
    # When MFA enrollment first became required of the user (at a login); the grace period
    # of the org's policy counts from here.
    grace_started_at = NumberAttribute(null=True)
    # Likewise, when a security key first became required of the user's role.
    key_grace_started_at = NumberAttribute(null=True)
    # Set by an MFA reset until its recovery code is used: the password alone must not let
    # anyone enroll the new factor.
    recovery_required = BooleanAttribute(null=True)
    # When the latest MFA reset of the user completed; a reset requested before it is void.
    last_reset_at = NumberAttribute(null=True)
    # Where and when the user signed in before, for anomaly signals (mfa_core.risk).
    login_history: MapAttribute[str, Any] = MapAttribute(null=True)

    def factor_summaries(self) -> dict[str, dict[str, Any]]:
        """Return the active factors as plain dicts: factor_id -> {"type", "label"}."""
        value: Any = self.active_factors
        if value is None:
            return {}
        if isinstance(value, MapAttribute):
            value = value.as_dict()
        return {str(k): dict(v) for k, v in value.items()}


class EmailClaimModel(Model):
    """Uniqueness guard: one item per email address in an org, in the Users table.

    Its range key starts with "email#", which no user id does, and it carries no email_key,
    so it never appears in the email index.
    """

    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute(range_key=True)
    owner_user_id = UnicodeAttribute()


class FactorModel(Model):
    class Meta(_Unbound):
        pass

    user_key = UnicodeAttribute(hash_key=True)
    factor_id = UnicodeAttribute(range_key=True)
    org_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    type = UnicodeAttribute()  # totp | webauthn | backup_codes
    status = UnicodeAttribute()  # pending | active
    label = UnicodeAttribute()
    created_at = NumberAttribute()
    confirmed_at = NumberAttribute(null=True)
    last_used_at = NumberAttribute(null=True)
    # The TOTP seed, sealed by mfa_core.adapters.kms.EnvelopeCipher; never stored in clear.
    sealed_secret = UnicodeAttribute(null=True)
    # Highest RFC 6238 time step accepted so far. A code for it or an earlier step is a replay.
    last_step = NumberAttribute(null=True)
    # Pending factors expire through TTL; confirmation removes the attribute.
    expires_at = NumberAttribute(null=True)
    # WebAuthn: the credential (base64url id, COSE public key) and what registration reported.
    credential_id = UnicodeAttribute(null=True)
    public_key = UnicodeAttribute(null=True)
    sign_count = NumberAttribute(null=True)
    aaguid = UnicodeAttribute(null=True)
    transports: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, null=True)  # type: ignore[arg-type]
    attestation_format = UnicodeAttribute(null=True)
    backup_eligible = BooleanAttribute(null=True)
    backup_state = BooleanAttribute(null=True)
    # Set when an assertion's signature counter failed to increase: a possible cloned key.
    clone_suspected_at = NumberAttribute(null=True)
    # Backup codes: HMAC-SHA256 digest of each code -> 0 while unused, else when it was used.
    code_hashes: MapAttribute[str, Any] = MapAttribute(null=True)
    # SMS: the E.164 number, and the id of the code sent last, the only one that counts.
    phone_number = UnicodeAttribute(null=True)
    sms_code_id = UnicodeAttribute(null=True)

    def code_digests(self) -> dict[str, float]:
        """Return the backup code digests as a plain dict: digest -> 0 or the time of use."""
        value: Any = self.code_hashes
        if value is None:
            return {}
        if isinstance(value, MapAttribute):
            value = value.as_dict()
        return {str(k): float(v) for k, v in value.items()}


class ChallengeModel(Model):
    """A short-lived, single-use server-side record: a login transaction or a WebAuthn challenge."""

    class Meta(_Unbound):
        pass

    challenge_id = UnicodeAttribute(hash_key=True)
    # login | webauthn.registration | webauthn.authentication | sso.oidc | ...
    kind = UnicodeAttribute()
    org_id = UnicodeAttribute()
    # An SSO request is stored before the user is known: its user_id is NO_USER.
    user_id = UnicodeAttribute()
    created_at = NumberAttribute()
    expires_at = NumberAttribute()
    consumed_at = NumberAttribute(null=True)
    # Login transactions: when and how the first factor passed.
    auth_time = NumberAttribute(null=True)
    amr: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    # WebAuthn challenges: the random challenge (base64url), what it is bound to
    # ("login:<transaction id>", "session:<session id>" or "enrollment:<token id>"), the user
    # verification it asked for, and the factors it allows.
    challenge = UnicodeAttribute(null=True)
    bound_to = UnicodeAttribute(null=True)
    user_verification = UnicodeAttribute(null=True)
    factor_ids: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, null=True)  # type: ignore[arg-type]
    label = UnicodeAttribute(null=True)
    # SMS codes: how many verifications the code has had.
    attempts = NumberAttribute(null=True)
    # Login transactions: what the password step decided for the MFA step. `factor_ids` (above)
    # lists the factors the policy lets this login use; `device` is the SHA-256 of the
    # client's device id when a remember-device token may be issued; `next_step` is
    # "register_security_key" when the user must add a key instead of getting a session.
    device = UnicodeAttribute(null=True)
    next_step = UnicodeAttribute(null=True)
    # Where the password step came from (mfa_core.anomalies), recorded once MFA passes.
    location: MapAttribute[str, Any] = MapAttribute(null=True)
    # SSO requests (kind "sso.oidc"), stored under the SHA-256 of their state: the OIDC nonce
    # and PKCE code verifier sent with the authorization request (mfa_core.sso.oidc).
    nonce = UnicodeAttribute(null=True)
    code_verifier = UnicodeAttribute(null=True)


class SessionUserIndex(GlobalSecondaryIndex["SessionModel"]):
    class Meta:
        index_name = "user-index"
        projection = AllProjection()

    user_key = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class SessionModel(Model):
    class Meta(_Unbound):
        pass

    session_id = UnicodeAttribute(hash_key=True)
    user_key = UnicodeAttribute()
    user_index = SessionUserIndex()
    org_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    status = UnicodeAttribute()  # active | revoked
    created_at = NumberAttribute()
    expires_at = NumberAttribute()
    refreshed_at = NumberAttribute(null=True)
    revoked_at = NumberAttribute(null=True)
    revoke_reason = UnicodeAttribute(null=True)
    # Set on the session that changed the user's factors, which stays valid after the change.
    confirmed_at = NumberAttribute(null=True)
    # SHA-256 of the current refresh token, and of the rotated ones (newest last), which
    # identify a reuse.
    refresh_hash = UnicodeAttribute()
    rotated_hashes: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    amr: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    acr = UnicodeAttribute()
    auth_time = NumberAttribute()
    mfa_time = NumberAttribute(null=True)
    source_ip = UnicodeAttribute(null=True)
    user_agent = UnicodeAttribute(null=True)


class AuditUserIndex(GlobalSecondaryIndex["AuditModel"]):
    class Meta:
        index_name = "user-index"
        projection = AllProjection()

    user_key = UnicodeAttribute(hash_key=True)
    event_id = UnicodeAttribute(range_key=True)


class AuditModel(Model):
    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    # Time-ordered: zero-padded milliseconds since the epoch, then random hex.
    event_id = UnicodeAttribute(range_key=True)
    user_key = UnicodeAttribute(null=True)
    user_index = AuditUserIndex()
    event_type = UnicodeAttribute()
    outcome = UnicodeAttribute()  # success | failure | denied
    user_id = UnicodeAttribute(null=True)
    actor = UnicodeAttribute()
    factor_id = UnicodeAttribute(null=True)
    session_id = UnicodeAttribute(null=True)
    source_ip = UnicodeAttribute(null=True)
    user_agent = UnicodeAttribute(null=True)
    request_id = UnicodeAttribute(null=True)
    reason = UnicodeAttribute(null=True)
    details: MapAttribute[str, Any] = MapAttribute(default=dict)
    created_at = NumberAttribute()
    expires_at = NumberAttribute()


class AuditDigestModel(Model):
    """A sealed digest of one org's audit events in one period (mfa_core.audit_trail)."""

    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    # The UTC hour, "2027-01-15T08", and "2027-01-15T08+01" and on for the parts of a busy hour.
    period = UnicodeAttribute(range_key=True)
    # The canonical JSON document that `signature` signs, kept verbatim so verification
    # recomputes the same bytes.
    document = UnicodeAttribute()
    # The ES256 JWS of `document` in compact serialization with the payload left out
    # (detached), and the signing key's id.
    signature = UnicodeAttribute()
    kid = UnicodeAttribute()
    sealed_at = NumberAttribute()


class CounterModel(Model):
    """A rate-limit counter for one key and time window, or a cool-down (`until`)."""

    class Meta(_Unbound):
        pass

    counter_key = UnicodeAttribute(hash_key=True)
    uses = NumberAttribute(null=True)
    until = NumberAttribute(null=True)
    expires_at = NumberAttribute()


class MfaResetModel(Model):
    """A supervised MFA reset of one user: the request, its approvals and how it ended."""

    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    # Time-ordered like audit event ids, so that a query lists an org's resets by age.
    reset_id = UnicodeAttribute(range_key=True)
    user_id = UnicodeAttribute()
    requested_by = UnicodeAttribute()
    reason = UnicodeAttribute()
    # How the requester verified the user's identity: method, reference and verified_by.
    verification: MapAttribute[str, Any] = MapAttribute(default=dict)
    status = UnicodeAttribute()  # pending | completed | cancelled | expired
    required_approvals = NumberAttribute()
    # User ids of the admins who approved, in order.
    approvals: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    created_at = NumberAttribute()
    # The end of the cooling-off period: no approval counts before it.
    not_before = NumberAttribute()
    # The request can no longer be approved from this time.
    expires_at = NumberAttribute()
    closed_at = NumberAttribute(null=True)
    closed_by = UnicodeAttribute(null=True)
    # DynamoDB's TTL deletes the item at this time; the audit log keeps the history.
    purge_at = NumberAttribute()


class FindingModel(Model):
    """A finding of the security scan (mfa_core.cso): one condition of one subject."""

    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    # "<rule>#<subject>", and "#<UTC hour>" after it for rules that count per hour, so that a
    # later run finds the same item again instead of adding another.
    finding_id = UnicodeAttribute(range_key=True)
    rule = UnicodeAttribute()
    severity = UnicodeAttribute()  # low | medium | high | critical
    status = UnicodeAttribute()  # open | resolved
    subject = UnicodeAttribute()  # "user:<id>", "ip:<address>" or "org"
    title = UnicodeAttribute()
    # Ids of the audit events that show the condition, oldest first, at most MAX_EVIDENCE.
    evidence: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    details: MapAttribute[str, Any] = MapAttribute(default=dict)
    first_seen = NumberAttribute()
    last_seen = NumberAttribute()
    resolved_at = NumberAttribute(null=True)
    # The end of a member's enrollment grace period, on "not enrolled" findings only.
    deadline = NumberAttribute(null=True)
    # Raised by every write, which is conditional on the value read, so that of two runs
    # changing one finding the second reads it again instead of overwriting the first.
    revision = NumberAttribute(null=True)


class ScanStateModel(Model):
    """The security scan's position in one org's audit trail, in the ScanState table."""

    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    state_key = UnicodeAttribute(range_key=True)  # always "scan"
    last_event_id = UnicodeAttribute(null=True)
    last_run_at = NumberAttribute()
    # The org's policy version at the last run: another one means every member is checked again.
    policy_version = NumberAttribute()
    # The time the scan last wrote the org's evidence pack, or 0 before the first one. A state
    # without it had its pack written at `last_run_at`.
    evidence_at = NumberAttribute(null=True)


class ScanCounterModel(Model):
    """A count of the scan for one subject and UTC hour, in the ScanState table.

    `state_key` is "count#<rule>#<subject>#<hour>". `members` contains distinct values (such as
    the users seen from one address) where the rule counts those instead of events.
    """

    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    state_key = UnicodeAttribute(range_key=True)
    total = NumberAttribute(null=True)
    members = UnicodeSetAttribute(null=True)
    expires_at = NumberAttribute()
    # The newest event id in `total`: a run that reads events again, after a run that failed
    # before saving its position, adds only the events after it.
    upto = UnicodeAttribute(null=True)


class LoginProfileModel(Model):
    """The UTC hours at which one user signed in, in the ScanState table ("profile#<user id>")."""

    class Meta(_Unbound):
        pass

    org_id = UnicodeAttribute(hash_key=True)
    state_key = UnicodeAttribute(range_key=True)
    # "0" to "23" -> logins that started in that hour.
    hours: MapAttribute[str, Any] = MapAttribute(default=dict)
    logins = NumberAttribute(default=0)
    # The newest login event id in the profile, so that no login is added twice.
    upto = UnicodeAttribute(null=True)

    def hour_counts(self) -> dict[int, int]:
        value: Any = self.hours
        if isinstance(value, MapAttribute):
            value = value.as_dict()
        return {int(hour): int(count) for hour, count in (value or {}).items()}


ALL_MODELS: dict[str, type[Model]] = {
    "orgs_table": OrgModel,
    "users_table": UserModel,
    "factors_table": FactorModel,
    "challenges_table": ChallengeModel,
    "sessions_table": SessionModel,
    "audit_table": AuditModel,
    "counters_table": CounterModel,
    "resets_table": MfaResetModel,
    "audit_digests_table": AuditDigestModel,
    "findings_table": FindingModel,
    "scan_state_table": ScanStateModel,
}
# Further models that share a table with one of ALL_MODELS: model -> its settings name.
SHARED_TABLE_MODELS: dict[type[Model], str] = {
    EmailClaimModel: "users_table",
    ScanCounterModel: "scan_state_table",
    LoginProfileModel: "scan_state_table",
}
