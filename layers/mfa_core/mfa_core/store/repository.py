"""DynamoDB access for the services: reads, and the transactions that pair each state change
with its audit event.

Single-use things are consumed with conditional writes, so concurrent requests cannot both
win. Failed conditions surface as the exceptions below; any other DynamoDB failure surfaces as
DependencyFailed, with nothing half-written because every change is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import monotonic
from typing import Any

from aws_lambda_powertools import Logger
from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, PynamoDBException, TransactWriteError
from pynamodb.expressions.condition import size
from pynamodb.models import Model
from pynamodb.transactions import TransactGet, TransactWrite

from mfa_core.audit import AuditEvent
from mfa_core.errors import Conflict, DependencyFailed, MfaError, NotFound
from mfa_core.store.models import (
    AuditDigestModel,
    AuditModel,
    ChallengeModel,
    CounterModel,
    EmailClaimModel,
    FactorModel,
    MfaResetModel,
    OrgModel,
    SessionModel,
    UserModel,
    user_key,
)

logger = Logger(child=True)

DAY = 24 * 60 * 60
# How long audit events stay before TTL deletes them, unless the org's policy sets it.
DEFAULT_AUDIT_RETENTION_DAYS = 400
# Seconds an org's audit retention, learnt from a read of the org, is reused.
RETENTION_CACHE_SECONDS = 300
# DynamoDB's limit of items in one TransactWriteItems.
MAX_TRANSACTION_ITEMS = 100
# Sessions revoked per transaction: two items each, within DynamoDB's 100 items a transaction.
SESSIONS_PER_TRANSACTION = 40


class ConditionFailed(Exception):
    """A conditional write lost; `failed` contains the names of the items whose condition failed."""

    def __init__(self, failed: frozenset[str]) -> None:
        super().__init__(f"condition failed for transaction items {sorted(failed)}")
        self.failed = failed


class _Transaction:
    """A TransactWriteItems whose items have names, so that a lost condition names its item.

    PynamoDB sends condition checks first, then deletes, puts and updates, whatever the order
    of the calls, and DynamoDB reports failed conditions by position in that order.
    """

    def __init__(self, tx: TransactWrite) -> None:
        self._tx = tx
        self._checks: list[str] = []
        self._deletes: list[str] = []
        self._puts: list[str] = []
        self._updates: list[str] = []

    @property
    def names(self) -> list[str]:
        """Return the item names in the order that DynamoDB receives the items."""
        return [*self._checks, *self._deletes, *self._puts, *self._updates]

    def check(
        self,
        name: str,
        model: type[Model],
        hash_key: str,
        range_key: str | None = None,
        *,
        condition: Any,
    ) -> None:
        self._checks.append(name)
        self._tx.condition_check(model, hash_key, range_key, condition=condition)

    def delete(self, name: str, item: Model, *, condition: Any) -> None:
        self._deletes.append(name)
        self._tx.delete(item, condition=condition)

    def put(self, name: str, item: Model, *, condition: Any) -> None:
        self._puts.append(name)
        self._tx.save(item, condition=condition)

    def update(self, name: str, item: Model, *, actions: list[Any], condition: Any) -> None:
        self._updates.append(name)
        self._tx.update(item, actions=actions, condition=condition)


@dataclass(frozen=True)
class Verification:
    """The items that an MFA verification reads in one round trip.

    `anchor` is the login transaction at login, or the session at step-up; `challenge` is the
    WebAuthn challenge when one was named.
    """

    anchor: ChallengeModel | SessionModel | None
    user: UserModel | None
    factor: FactorModel | None
    challenge: ChallengeModel | None
    org: OrgModel | None = None


@dataclass(frozen=True, kw_only=True)
class CounterLimit:
    """One rate limit as the store counts it: a fixed window, or a cool-down when `cooldown`."""

    name: str
    key: str
    limit: int
    window: int
    window_end: float
    cooldown: bool = False


@dataclass(frozen=True, kw_only=True)
class StepUp:
    """The new MFA state of a session after a step-up verification."""

    session_id: str
    amr: list[str]
    acr: str


def audit_retention_days(policy: Any) -> int:
    """Return the audit retention that an Orgs item's `policy` map sets, or the default."""
    if policy is not None and not isinstance(policy, Mapping):
        policy = policy.as_dict()
    value = (policy or {}).get("audit_retention_days")
    return DEFAULT_AUDIT_RETENTION_DAYS if value is None else int(value)


class Store:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        # org_id -> (monotonic time of the read, audit retention in days)
        self._retention: dict[str, tuple[float, int]] = {}

    def forget_orgs(self) -> None:
        """Drop what earlier reads of orgs taught, after the tables were emptied or restored."""
        self._retention.clear()

    # -- reads ---------------------------------------------------------------------------------

    def get_org(self, org_id: str) -> OrgModel | None:
        with _dynamodb_errors():
            try:
                org = OrgModel.get(org_id, consistent_read=True)
            except DoesNotExist:
                return None
        self._retention[org_id] = (monotonic(), audit_retention_days(org.policy))
        return org

    def all_orgs(self) -> Iterator[OrgModel]:
        """Yield every org, from a paginated Scan of the Orgs table."""
        with _dynamodb_errors():
            yield from OrgModel.scan()

    def get_user(self, org_id: str, user_id: str) -> UserModel | None:
        if user_id.startswith("email#"):
            return None
        with _dynamodb_errors():
            try:
                return UserModel.get(org_id, user_id, consistent_read=True)
            except DoesNotExist:
                return None

    def get_users(self, org_id: str, user_ids: Iterable[str]) -> list[UserModel]:
        """Return the org's members among `user_ids`, in id order, from consistent
        BatchGetItem reads (100 keys per request)."""
        keys = [
            (org_id, user_id)
            for user_id in sorted(set(user_ids))
            if not user_id.startswith("email#")
        ]
        with _dynamodb_errors():
            found = list(UserModel.batch_get(keys, consistent_read=True))
        return sorted(found, key=lambda user: user.user_id)

    def list_users(
        self, org_id: str, *, limit: int, after: str | None
    ) -> tuple[list[UserModel], str | None]:
        """Return up to `limit` members of an org in user-id order, and the id to continue
        after (None at the end). One Query on the org's partition; email claims are skipped."""
        users: list[UserModel] = []
        with _dynamodb_errors():
            # Member ids start with "u_", after the "email#" claims in the same partition.
            query = UserModel.query(
                org_id,
                range_key_condition=UserModel.user_id > (after or "u_"),
                filter_condition=UserModel.user_id.startswith("u_"),
                consistent_read=True,
                limit=limit,
                page_size=limit,
            )
            users = list(query)
        last = query.last_evaluated_key
        following = users[-1].user_id if users and last is not None else None
        return users, following

    def update_member(
        self,
        user: UserModel,
        *,
        role: str | None,
        status: str | None,
        now: float,
        events: list[AuditEvent],
        admin_id: str | None = None,
    ) -> None:
        """Change a member's role or status. Disabling, or a new role, also ends every session
        of the member, because access tokens carry the role that the authorizer passes on.

        Raises ConditionFailed naming "user" when the member changed since `user` was read, or
        "admin" when `admin_id`, the admin making the change, is no longer an active admin.
        """
        actions: list[Any] = []
        if role is not None:
            actions.append(UserModel.role.set(role))
        if status is not None:
            actions.append(UserModel.status.set(status))
        if status == "disabled" or (role is not None and role != user.role):
            actions.append(UserModel.sessions_valid_after.set(now))
        with self._transaction() as tx:
            tx.update(
                "user",
                UserModel(user.org_id, user.user_id),
                actions=actions,
                condition=(UserModel.role == user.role) & (UserModel.status == user.status),
            )
            if admin_id is not None:
                # Two admins who demote or disable each other at once must not both succeed
                # and leave the org without an admin.
                tx.check(
                    "admin",
                    UserModel,
                    user.org_id,
                    admin_id,
                    condition=(UserModel.role == "admin") & (UserModel.status == "active"),
                )
            self._audit(tx, events)

    def find_user_by_email(self, org_id: str, email: str) -> UserModel | None:
        """Look a user up by normalized email through the email index (eventually consistent)."""
        with _dynamodb_errors():
            for user in UserModel.email_index.query(f"{org_id}#{email}", limit=1):
                return user
        return None

    def get_factor(self, org_id: str, user_id: str, factor_id: str) -> FactorModel | None:
        with _dynamodb_errors():
            try:
                return FactorModel.get(user_key(org_id, user_id), factor_id, consistent_read=True)
            except DoesNotExist:
                return None

    def list_factors(self, org_id: str, user_id: str) -> list[FactorModel]:
        with _dynamodb_errors():
            return list(FactorModel.query(user_key(org_id, user_id), consistent_read=True))

    def get_session(self, session_id: str) -> SessionModel | None:
        with _dynamodb_errors():
            try:
                return SessionModel.get(session_id, consistent_read=True)
            except DoesNotExist:
                return None

    def list_sessions(self, org_id: str, user_id: str) -> list[SessionModel]:
        with _dynamodb_errors():
            return list(SessionModel.user_index.query(user_key(org_id, user_id)))

    def load_verification(
        self,
        *,
        org_id: str,
        user_id: str,
        transaction_id: str | None,
        session_id: str | None,
        factor_id: str,
        challenge_id: str | None,
    ) -> Verification:
        """Read the login transaction (or session), user, factor, challenge and org at once."""
        anchor: Any
        with _dynamodb_errors(), TransactGet(connection=self._connection) as read:
            if transaction_id is not None:
                anchor = read.get(ChallengeModel, transaction_id)
            else:
                anchor = read.get(SessionModel, session_id)
            user = read.get(UserModel, org_id, user_id)
            factor = read.get(FactorModel, user_key(org_id, user_id), factor_id)
            challenge = read.get(ChallengeModel, challenge_id) if challenge_id else None
            org = read.get(OrgModel, org_id)
        return Verification(
            anchor=_resolved(anchor),
            user=_resolved(user),
            factor=_resolved(factor),
            challenge=_resolved(challenge) if challenge is not None else None,
            org=_resolved(org),
        )

    def load_login_context(
        self, *, transaction_id: str, org_id: str, user_id: str
    ) -> tuple[ChallengeModel | None, UserModel | None, OrgModel | None]:
        """Read a login transaction, its user and the org in a single TransactGetItems."""
        with _dynamodb_errors(), TransactGet(connection=self._connection) as read:
            challenge = read.get(ChallengeModel, transaction_id)
            user = read.get(UserModel, org_id, user_id)
            org = read.get(OrgModel, org_id)
        return _resolved(challenge), _resolved(user), _resolved(org)

    def get_challenge(self, challenge_id: str) -> ChallengeModel | None:
        with _dynamodb_errors():
            try:
                return ChallengeModel.get(challenge_id, consistent_read=True)
            except DoesNotExist:
                return None

    # -- writes --------------------------------------------------------------------------------

    def record(self, *events: AuditEvent) -> None:
        """Write audit events that accompany no other change, such as a failed attempt."""
        with self._transaction() as tx:
            self._audit(tx, events)

    def create_org(self, org: OrgModel, admin: UserModel, events: list[AuditEvent]) -> None:
        with self._transaction({"org": _org_exists, "email": _email_taken}) as tx:
            tx.put("org", org, condition=OrgModel.org_id.does_not_exist())
            tx.put("user", admin, condition=UserModel.user_id.does_not_exist())
            tx.put("email", _email_claim(admin), condition=EmailClaimModel.user_id.does_not_exist())
            self._audit(tx, events)

    def create_user(self, user: UserModel, events: list[AuditEvent]) -> None:
        with self._transaction({"org": _no_such_org, "email": _email_taken}) as tx:
            tx.check("org", OrgModel, user.org_id, condition=OrgModel.org_id.exists())
            tx.put("email", _email_claim(user), condition=EmailClaimModel.user_id.does_not_exist())
            tx.put("user", user, condition=UserModel.user_id.does_not_exist())
            self._audit(tx, events)

    def save_challenge(self, challenge: ChallengeModel, events: list[AuditEvent]) -> None:
        """Store a new login transaction or WebAuthn challenge with its audit events."""
        with self._transaction() as tx:
            tx.put("challenge", challenge, condition=ChallengeModel.challenge_id.does_not_exist())
            self._audit(tx, events)

    def set_sso_connection(
        self, org_id: str, connection: dict[str, Any], events: list[AuditEvent]
    ) -> None:
        """Replace an org's SSO connection settings (never its client secret)."""
        with self._transaction({"org": _no_such_org}) as tx:
            tx.update(
                "org",
                OrgModel(org_id),
                actions=[OrgModel.sso_connection.set(connection)],
                condition=OrgModel.org_id.exists(),
            )
            self._audit(tx, events)

    def consume_sso_request(
        self, challenge_id: str, *, kind: str, org_id: str, now: float, events: list[AuditEvent]
    ) -> None:
        """Mark an SSO request used, once: of two callbacks with the same state, one wins.

        Raises ConditionFailed naming "request" when the request is unknown, of another kind
        or org, already used or expired.
        """
        with self._transaction() as tx:
            tx.update(
                "request",
                ChallengeModel(challenge_id),
                actions=[ChallengeModel.consumed_at.set(now)],
                condition=_unspent(now)
                & (ChallengeModel.kind == kind)
                & (ChallengeModel.org_id == org_id),
            )
            self._audit(tx, events)

    def open_session(
        self,
        session: SessionModel,
        events: list[AuditEvent],
        *,
        revocations: Sequence[tuple[SessionModel, AuditEvent]] = (),
        user_update: Sequence[Any] = (),
    ) -> None:
        """Store a new session, revoking `revocations` (the session limit) in the same write.

        `user_update` contains actions on the user item, such as the login history.
        """
        with self._transaction() as tx:
            tx.put("session", session, condition=SessionModel.session_id.does_not_exist())
            if user_update:
                tx.update(
                    "user",
                    UserModel(session.org_id, session.user_id),
                    actions=list(user_update),
                    condition=UserModel.user_id.exists(),
                )
            self._revoke(tx, list(revocations), reason="session_limit", now=session.created_at)
            self._audit(tx, events)

    def start_grace(
        self, user: UserModel, *, attribute: str, now: float, events: list[AuditEvent]
    ) -> None:
        """Record when a grace period of the user began: `attribute` is "grace_started_at" or
        "key_grace_started_at". Raises ConditionFailed if it was already set."""
        started = {
            "grace_started_at": UserModel.grace_started_at,
            "key_grace_started_at": UserModel.key_grace_started_at,
        }[attribute]
        with self._transaction() as tx:
            tx.update(
                "user",
                UserModel(user.org_id, user.user_id),
                actions=[started.set(now)],
                condition=UserModel.user_id.exists() & started.does_not_exist(),
            )
            self._audit(tx, events)

    def change_password(
        self,
        user: UserModel,
        *,
        password_hash: str,
        keep_session_id: str,
        now: float,
        events: list[AuditEvent],
    ) -> None:
        """Replace a password, end every other session of the user and forget their devices.

        Sessions end through the user's cut-off (`sessions_valid_after`), which the refresh and
        the authorizer check, and the remembered devices through `credentials_version`. Raises
        ConditionFailed when the password changed meanwhile, the account is locked or the
        session has ended.
        """
        with self._transaction() as tx:
            tx.update(
                "user",
                UserModel(user.org_id, user.user_id),
                actions=[
                    UserModel.password_hash.set(password_hash),
                    UserModel.credentials_version.add(1),
                    UserModel.sessions_valid_after.set(now),
                ],
                condition=(UserModel.status == "active")
                & (UserModel.password_hash == user.password_hash)
                & _not_locked(now),
            )
            tx.update(
                "session",
                SessionModel(keep_session_id),
                actions=[SessionModel.confirmed_at.set(now)],
                condition=(SessionModel.status == "active") & (SessionModel.expires_at > now),
            )
            self._audit(tx, events)

    def forget_devices(self, user: UserModel, *, events: list[AuditEvent]) -> None:
        """Invalidate every remember-device token of `user` by moving `credentials_version`."""
        with self._transaction() as tx:
            tx.update(
                "user",
                UserModel(user.org_id, user.user_id),
                actions=[UserModel.credentials_version.add(1)],
                condition=UserModel.user_id.exists(),
            )
            self._audit(tx, events)

    def set_org_policy(
        self,
        org_id: str,
        *,
        enforcement: str,
        policy: dict[str, Any],
        sms: dict[str, Any],
        version: int,
        previous_version: float | None,
        changed_at: float,
        events: list[AuditEvent],
    ) -> None:
        """Replace an org's MFA policy if its version is still `previous_version`."""
        condition = OrgModel.org_id.exists()
        if previous_version is None:
            condition &= OrgModel.policy_version.does_not_exist()
        else:
            condition &= OrgModel.policy_version == previous_version
        with self._transaction() as tx:
            tx.update(
                "org",
                OrgModel(org_id),
                actions=[
                    OrgModel.enforcement.set(enforcement),
                    OrgModel.policy.set(policy),
                    OrgModel.sms.set(sms),
                    OrgModel.policy_version.set(version),
                    OrgModel.policy_changed_at.set(changed_at),
                ],
                condition=condition,
            )
            self._audit(tx, events)
        self._retention[org_id] = (monotonic(), audit_retention_days(policy))

    def set_org_webauthn(
        self, org_id: str, settings: dict[str, Any], *, changed_at: float, events: list[AuditEvent]
    ) -> None:
        with self._transaction({"org": _no_such_org}) as tx:
            tx.update(
                "org",
                OrgModel(org_id),
                # Remember-device tokens carry the policy version: a stricter key rule voids
                # them, as any change of the policy document does.
                actions=[
                    OrgModel.webauthn.set(settings),
                    OrgModel.policy_version.add(1),
                    OrgModel.policy_changed_at.set(changed_at),
                ],
                condition=OrgModel.org_id.exists(),
            )
            self._audit(tx, events)

    def set_org_sms(
        self, org_id: str, settings: dict[str, Any], *, changed_at: float, events: list[AuditEvent]
    ) -> None:
        with self._transaction({"org": _no_such_org}) as tx:
            tx.update(
                "org",
                OrgModel(org_id),
                # The policy document shows SMS's fallback rule, so its version moves too.
                actions=[
                    OrgModel.sms.set(settings),
                    OrgModel.policy_version.add(1),
                    OrgModel.policy_changed_at.set(changed_at),
                ],
                condition=OrgModel.org_id.exists(),
            )
            self._audit(tx, events)

    def add_pending_factor(self, factor: FactorModel, events: list[AuditEvent]) -> None:
        with self._transaction() as tx:
            tx.put("factor", factor, condition=FactorModel.factor_id.does_not_exist())
            self._audit(tx, events)

    def activate_factor(
        self,
        factor: FactorModel,
        *,
        step: int | None,
        now: float,
        events: list[AuditEvent],
        keep_session_id: str | None,
        first_factor: bool,
        revoked_sessions: list[tuple[SessionModel, AuditEvent]],
        factors_version: float | None = None,
        backup_codes: FactorModel | None = None,
        code_id: str | None = None,
    ) -> None:
        """Activate a pending TOTP or SMS factor and end the user's other sessions.

        A TOTP factor is activated with the time step its confirmation code used. An SMS factor
        spends the code `code_id`, which must still be its latest.

        Raises ConditionFailed naming "factor" when the factor is no longer pending (confirmed
        concurrently or expired). It names "user" when the user is locked out, when the factors
        changed since `factors_version`, or when, with `first_factor`, the user gained a factor
        meanwhile. See `_factor_added` for the sessions.
        """
        actions = [
            FactorModel.status.set("active"),
            FactorModel.confirmed_at.set(now),
            FactorModel.expires_at.remove(),
        ]
        condition = (FactorModel.status == "pending") & (FactorModel.expires_at > now)
        if step is not None:
            actions.append(FactorModel.last_step.set(step))
        if code_id is not None:
            condition &= FactorModel.sms_code_id == code_id
        with self._transaction() as tx:
            tx.update("factor", factor, actions=actions, condition=condition)
            if code_id is not None:
                tx.update(
                    "challenge",
                    ChallengeModel(code_id),
                    actions=[ChallengeModel.consumed_at.set(now)],
                    condition=_unspent(now),
                )
            rest = self._factor_added(
                tx,
                factor,
                summary={"type": factor.type, "label": factor.label},
                now=now,
                events=events,
                keep_session_id=keep_session_id,
                first_factor=first_factor,
                revoked_sessions=revoked_sessions,
                factors_version=factors_version,
                backup_codes=backup_codes,
            )
        self._revoke_rest(rest, factor, reason="factor_added", now=now)

    def add_security_key(
        self,
        factor: FactorModel,
        *,
        challenge_id: str,
        now: float,
        events: list[AuditEvent],
        keep_session_id: str | None,
        first_factor: bool,
        revoked_sessions: list[tuple[SessionModel, AuditEvent]],
        factors_version: float | None = None,
        backup_codes: FactorModel | None = None,
    ) -> None:
        """Store a verified security key as an active factor and spend its registration challenge.

        Raises ConditionFailed naming "factor" when the user already has this credential,
        "challenge" when the challenge was spent or expired meanwhile, and "user" as in
        `activate_factor`.
        """
        with self._transaction() as tx:
            tx.put("factor", factor, condition=FactorModel.factor_id.does_not_exist())
            tx.update(
                "challenge",
                ChallengeModel(challenge_id),
                actions=[ChallengeModel.consumed_at.set(now)],
                condition=_unspent(now),
            )
            rest = self._factor_added(
                tx,
                factor,
                summary=_key_summary(factor),
                now=now,
                events=events,
                keep_session_id=keep_session_id,
                first_factor=first_factor,
                revoked_sessions=revoked_sessions,
                factors_version=factors_version,
                backup_codes=backup_codes,
            )
        self._revoke_rest(rest, factor, reason="factor_added", now=now)

    def reserve_counters(self, limits: list[CounterLimit], *, now: float) -> None:
        """Count one use against every limit in one transaction, or against none.

        Raises ConditionFailed naming the limits that are reached.
        """
        with self._transaction() as tx:
            for limit in limits:
                if limit.cooldown:
                    tx.update(
                        limit.name,
                        CounterModel(limit.key),
                        actions=[
                            CounterModel.until.set(now + limit.window),
                            CounterModel.expires_at.set(int(now) + limit.window + 60),
                        ],
                        condition=CounterModel.until.does_not_exist() | (CounterModel.until <= now),
                    )
                else:
                    tx.update(
                        limit.name,
                        CounterModel(limit.key),
                        actions=[
                            CounterModel.uses.add(1),
                            CounterModel.expires_at.set(int(limit.window_end) + 60),
                        ],
                        condition=CounterModel.uses.does_not_exist()
                        | (CounterModel.uses < limit.limit),
                    )

    def release_counters(self, limits: list[CounterLimit]) -> None:
        """Give back a use counted by `reserve_counters`, for an action that did not happen."""
        with self._transaction() as tx:
            for limit in limits:
                actions = (
                    [CounterModel.until.remove()] if limit.cooldown else [CounterModel.uses.add(-1)]
                )
                tx.update(
                    limit.name,
                    CounterModel(limit.key),
                    actions=actions,
                    condition=CounterModel.counter_key.exists(),
                )

    def get_counter(self, key: str) -> CounterModel | None:
        with _dynamodb_errors():
            try:
                return CounterModel.get(key, consistent_read=True)
            except DoesNotExist:
                return None

    def start_sms_factor(
        self, factor: FactorModel, code: ChallengeModel, events: list[AuditEvent]
    ) -> None:
        """Store a pending SMS factor with the code sent to confirm it."""
        with self._transaction() as tx:
            tx.put("factor", factor, condition=FactorModel.factor_id.does_not_exist())
            tx.put("challenge", code, condition=ChallengeModel.challenge_id.does_not_exist())
            self._audit(tx, events)

    def issue_sms_code(
        self, factor: FactorModel, code: ChallengeModel, events: list[AuditEvent]
    ) -> None:
        """Store a new SMS code and make it the factor's only valid one."""
        with self._transaction() as tx:
            tx.put("challenge", code, condition=ChallengeModel.challenge_id.does_not_exist())
            tx.update(
                "factor",
                factor,
                actions=[FactorModel.sms_code_id.set(code.challenge_id)],
                condition=FactorModel.factor_id.exists(),
            )
            self._audit(tx, events)

    def count_code_attempt(self, code_id: str, *, now: float, max_attempts: int) -> bool:
        """Count one verification of an SMS code; False when it is spent, expired or used up.

        NOTE: this write carries no audit event. The verification that follows audits its
        outcome, and the count is bookkeeping of that verification.
        """
        try:
            with self._transaction() as tx:
                tx.update(
                    "challenge",
                    ChallengeModel(code_id),
                    actions=[ChallengeModel.attempts.add(1)],
                    condition=_unspent(now)
                    & (
                        ChallengeModel.attempts.does_not_exist()
                        | (ChallengeModel.attempts < max_attempts)
                    ),
                )
        except ConditionFailed:
            return False
        return True

    def replace_backup_codes(self, codes: FactorModel, events: list[AuditEvent]) -> None:
        """Store a new set of backup codes in place of the user's current one."""
        with self._transaction() as tx:
            tx.put("backup_codes", codes, condition=None)
            self._audit(tx, events)

    def remove_factor(
        self,
        factor: FactorModel,
        *,
        keep_another: bool,
        blocked: int,
        factors_version: float | None,
        now: float,
        events: list[AuditEvent],
        keep_session_id: str | None,
        revoked_sessions: list[tuple[SessionModel, AuditEvent]],
    ) -> None:
        """Delete a factor; an active one also leaves the user's factor map and ends sessions.

        With `keep_another`, the user must keep at least one other usable factor, that is, one
        not blocked as a suspected clone. `blocked` is the number of the user's blocked factors.

        Raises ConditionFailed naming "factor" when the factor is gone or, for a pending one, was
        activated meanwhile. It names "user" when the factor was the last one that
        `keep_another` protects, or when the factors changed since `factors_version`.
        """
        if factor.status != "active":
            with self._transaction() as tx:
                tx.delete("factor", factor, condition=FactorModel.status == "pending")
                self._audit(tx, events)
            return
        user_condition = UserModel.active_factors[factor.factor_id].exists() & _factors_version_is(
            factors_version
        )
        if keep_another:
            user_condition &= size(UserModel.active_factors) > 1 + blocked
        first, rest = _split(revoked_sessions)
        with self._transaction() as tx:
            tx.delete("factor", factor, condition=FactorModel.status == "active")
            tx.update(
                "user",
                UserModel(factor.org_id, factor.user_id),
                actions=[
                    UserModel.active_factors[factor.factor_id].remove(),
                    UserModel.sessions_valid_after.set(now),
                    UserModel.factors_version.add(1),
                ],
                condition=user_condition,
            )
            self._confirm_session(tx, keep_session_id, now)
            self._audit(tx, events)
            self._revoke(tx, first, reason="factor_removed", now=now)
        self._revoke_rest(rest, factor, reason="factor_removed", now=now)

    def _factor_added(
        self,
        tx: _Transaction,
        factor: FactorModel,
        *,
        summary: dict[str, Any],
        now: float,
        events: list[AuditEvent],
        keep_session_id: str | None,
        first_factor: bool,
        revoked_sessions: list[tuple[SessionModel, AuditEvent]],
        factors_version: float | None,
        backup_codes: FactorModel | None,
    ) -> list[tuple[SessionModel, AuditEvent]]:
        """Add the user-side writes of a new active factor to `tx`; return the sessions left.

        The user's `sessions_valid_after` moves to `now`, which ends every session created
        before, listed or not. The session `keep_session_id` is confirmed and stays valid. With
        `first_factor`, the user must still have no active factor. The first
        SESSIONS_PER_TRANSACTION listed sessions are marked revoked in this transaction; the
        caller marks the returned rest after it. A first factor comes with `backup_codes`, which
        replace any earlier set.
        """
        user_condition = _not_locked(now) & _factors_version_is(factors_version)
        if first_factor:
            user_condition &= UserModel.active_factors.does_not_exist() | (
                size(UserModel.active_factors) == 0
            )
        first, rest = _split(revoked_sessions)
        tx.update(
            "user",
            UserModel(factor.org_id, factor.user_id),
            actions=[
                UserModel.active_factors[factor.factor_id].set(summary),
                UserModel.failed_count.set(0),
                UserModel.locked_until.remove(),
                UserModel.last_mfa_at.set(now),
                UserModel.sessions_valid_after.set(now),
                UserModel.factors_version.add(1),
            ],
            condition=user_condition,
        )
        self._confirm_session(tx, keep_session_id, now)
        if backup_codes is not None:
            tx.put("backup_codes", backup_codes, condition=None)
        self._audit(tx, events)
        self._revoke(tx, first, reason="factor_added", now=now)
        return rest

    def _confirm_session(self, tx: _Transaction, session_id: str | None, now: float) -> None:
        if session_id is not None:
            tx.update(
                "session",
                SessionModel(session_id),
                actions=[SessionModel.confirmed_at.set(now)],
                condition=SessionModel.session_id.exists(),
            )

    def _revoke_rest(
        self,
        rest: list[tuple[SessionModel, AuditEvent]],
        factor: FactorModel,
        *,
        reason: str,
        now: float,
    ) -> None:
        # The later batches only tidy the session list: sessions_valid_after already ended them.
        for start in range(0, len(rest), SESSIONS_PER_TRANSACTION):
            batch = rest[start : start + SESSIONS_PER_TRANSACTION]
            try:
                with self._transaction() as tx:
                    self._revoke(tx, batch, reason=reason, now=now)
            except (DependencyFailed, ConditionFailed):
                logger.warning(
                    "Marking ended sessions as revoked failed",
                    extra={"org_id": factor.org_id, "user_id": factor.user_id},
                )

    def load_session_and_user(
        self, session_id: str, org_id: str, user_id: str
    ) -> tuple[SessionModel | None, UserModel | None]:
        """Read a session and its user in a single TransactGetItems."""
        with _dynamodb_errors(), TransactGet(connection=self._connection) as read:
            session = read.get(SessionModel, session_id)
            user = read.get(UserModel, org_id, user_id)
        return _resolved(session), _resolved(user)

    def complete_verification(
        self,
        *,
        user: UserModel,
        factor: FactorModel,
        factor_actions: list[Any],
        factor_condition: Any,
        transaction_id: str | None,
        challenge_id: str | None,
        new_session: SessionModel | None,
        step_up: StepUp | None,
        now: float,
        events: list[AuditEvent],
        revocations: Sequence[tuple[SessionModel, AuditEvent]] = (),
        user_update: Sequence[Any] = (),
    ) -> None:
        """Record a successful MFA verification at login or step-up in one transaction.

        Spends the login transaction and the WebAuthn challenge, updates the factor under
        `factor_condition`, resets the user's failures and either opens `new_session` (login)
        or refreshes the MFA of the `step_up` session. Raises ConditionFailed naming the
        items that lost: "transaction", "challenge", "factor", "user" or "session".
        """
        with self._transaction() as tx:
            if transaction_id is not None:
                tx.update(
                    "transaction",
                    ChallengeModel(transaction_id),
                    actions=[ChallengeModel.consumed_at.set(now)],
                    condition=_unspent(now),
                )
            if challenge_id is not None:
                tx.update(
                    "challenge",
                    ChallengeModel(challenge_id),
                    actions=[ChallengeModel.consumed_at.set(now)],
                    condition=_unspent(now),
                )
            tx.update("factor", factor, actions=factor_actions, condition=factor_condition)
            tx.update(
                "user",
                UserModel(user.org_id, user.user_id),
                actions=[
                    UserModel.failed_count.set(0),
                    UserModel.locked_until.remove(),
                    UserModel.last_mfa_at.set(now),
                    *user_update,
                ],
                condition=(UserModel.status == "active") & _not_locked(now),
            )
            if new_session is not None:
                tx.put("session", new_session, condition=SessionModel.session_id.does_not_exist())
                self._revoke(tx, list(revocations), reason="session_limit", now=now)
            if step_up is not None:
                tx.update(
                    "session",
                    SessionModel(step_up.session_id),
                    actions=[
                        SessionModel.mfa_time.set(now),
                        SessionModel.amr.set(step_up.amr),
                        SessionModel.acr.set(step_up.acr),
                    ],
                    condition=(SessionModel.status == "active") & (SessionModel.expires_at > now),
                )
            self._audit(tx, events)

    def flag_suspected_clone(
        self, factor: FactorModel, *, challenge_id: str, now: float, events: list[AuditEvent]
    ) -> None:
        """Flag a security key whose signature counter went back, and spend the challenge.

        The user's factor map marks the key "blocked", so that it no longer counts as a
        usable factor. Raises ConditionFailed naming "challenge" when the challenge was spent
        meanwhile, so that a replay can never flag a key.
        """
        with self._transaction() as tx:
            tx.update(
                "factor",
                factor,
                actions=[FactorModel.clone_suspected_at.set(now)],
                condition=FactorModel.factor_id.exists(),
            )
            tx.update(
                "user",
                UserModel(factor.org_id, factor.user_id),
                actions=[
                    UserModel.active_factors[factor.factor_id]["blocked"].set(True),
                    UserModel.factors_version.add(1),
                ],
                condition=UserModel.active_factors[factor.factor_id].exists(),
            )
            tx.update(
                "challenge",
                ChallengeModel(challenge_id),
                actions=[ChallengeModel.consumed_at.set(now)],
                condition=_unspent(now),
            )
            self._audit(tx, events)

    def record_failure(
        self,
        user: UserModel,
        *,
        failed_count: int,
        locked_until: float | None,
        now: float,
        events: list[AuditEvent],
    ) -> None:
        """Store a new consecutive-failure count, unless the count changed since `user` was read.

        Raises ConditionFailed naming "user" when a concurrent request changed the count first:
        the caller re-reads the user and tries again, so no failure goes uncounted.
        """
        actions: list[Any] = [
            UserModel.failed_count.set(failed_count),
            UserModel.last_failed_at.set(now),
        ]
        if locked_until is not None:
            actions.append(UserModel.locked_until.set(locked_until))
        else:
            actions.append(UserModel.locked_until.remove())
        with self._transaction() as tx:
            tx.update(
                "user", user, actions=actions, condition=UserModel.failed_count == user.failed_count
            )
            self._audit(tx, events)

    def rotate_refresh_token(
        self,
        session: SessionModel,
        *,
        presented_hash: str,
        new_hash: str,
        rotated_hashes: list[str],
        now: float,
        events: list[AuditEvent],
    ) -> None:
        """Replace the refresh token if `presented_hash` is still the current one."""
        with self._transaction() as tx:
            tx.update(
                "session",
                session,
                actions=[
                    SessionModel.refresh_hash.set(new_hash),
                    SessionModel.rotated_hashes.set(rotated_hashes),
                    SessionModel.refreshed_at.set(now),
                ],
                condition=(SessionModel.refresh_hash == presented_hash)
                & (SessionModel.status == "active")
                & (SessionModel.expires_at > now),
            )
            self._audit(tx, events)

    def revoke_session(
        self, session: SessionModel, *, reason: str, now: float, events: list[AuditEvent]
    ) -> None:
        """Revoke an active session; raises ConditionFailed when it was already revoked."""
        with self._transaction() as tx:
            tx.update(
                "session",
                session,
                actions=_revoked(reason, now),
                condition=SessionModel.status == "active",
            )
            self._audit(tx, events)

    # -- supervised MFA resets ----------------------------------------------------------------

    def list_admins(self, org_id: str) -> list[UserModel]:
        """Return the org's active admins."""
        with _dynamodb_errors():
            return list(
                UserModel.query(
                    org_id,
                    filter_condition=(UserModel.role == "admin") & (UserModel.status == "active"),
                )
            )

    def get_reset(self, org_id: str, reset_id: str) -> MfaResetModel | None:
        with _dynamodb_errors():
            try:
                return MfaResetModel.get(org_id, reset_id, consistent_read=True)
            except DoesNotExist:
                return None

    def list_resets(
        self, org_id: str, *, limit: int, before: str | None
    ) -> tuple[list[MfaResetModel], str | None]:
        """Return up to `limit` of the org's resets older than `before`, newest first, and the
        id to continue before (None at the end)."""
        with _dynamodb_errors():
            query = MfaResetModel.query(
                org_id,
                range_key_condition=None if before is None else MfaResetModel.reset_id < before,
                scan_index_forward=False,
                limit=limit,
                page_size=limit,
            )
            resets = list(query)
        following = resets[-1].reset_id if resets and query.last_evaluated_key else None
        return resets, following

    def put_digests(self, org_id: str, period: str, digests: Sequence[AuditDigestModel]) -> bool:
        """Write one hour's audit digest parts and mark the org sealed through that hour.

        Returns False, writing nothing, when a part exists already or the org is marked
        sealed through that hour or a later one.
        """
        try:
            with self._transaction() as tx:
                tx.update(
                    "org",
                    OrgModel(org_id),
                    actions=[OrgModel.audit_sealed_through.set(period)],
                    condition=OrgModel.org_id.exists()
                    & (
                        OrgModel.audit_sealed_through.does_not_exist()
                        | (OrgModel.audit_sealed_through < period)
                    ),
                )
                for digest in digests:
                    tx.put(
                        digest.period, digest, condition=AuditDigestModel.period.does_not_exist()
                    )
        except ConditionFailed:
            return False
        return True

    def create_reset(self, reset: MfaResetModel, events: list[AuditEvent]) -> None:
        with self._transaction() as tx:
            tx.put("reset", reset, condition=MfaResetModel.reset_id.does_not_exist())
            self._audit(tx, events)

    def close_reset(
        self,
        reset: MfaResetModel,
        *,
        status: str,
        by: str | None,
        now: float,
        events: list[AuditEvent],
    ) -> None:
        """Move a pending reset to `status` (cancelled or expired).

        Raises ConditionFailed naming "reset" when the reset is no longer pending.
        """
        with self._transaction() as tx:
            tx.update(
                "reset",
                reset,
                actions=[
                    MfaResetModel.status.set(status),
                    MfaResetModel.closed_at.set(now),
                    MfaResetModel.closed_by.set(by) if by else MfaResetModel.closed_by.remove(),
                ],
                condition=MfaResetModel.status == "pending",
            )
            self._audit(tx, events)

    def approve_reset(
        self, reset: MfaResetModel, *, approver_id: str, now: float, events: list[AuditEvent]
    ) -> None:
        """Add an approval that is not the last one needed.

        Raises ConditionFailed naming "reset" when the reset changed since it was read, or
        "admin" when its requester or one of its approvers is no longer an active admin.
        """
        with self._transaction() as tx:
            tx.update(
                "reset",
                reset,
                actions=[
                    MfaResetModel.approvals.set(MfaResetModel.approvals.append([approver_id]))
                ],
                condition=_reset_unchanged(reset, now),
            )
            self._check_admins(tx, reset, approver_id)
            self._audit(tx, events)

    def complete_reset(
        self,
        reset: MfaResetModel,
        *,
        approver_id: str,
        user: UserModel,
        factors: list[FactorModel],
        recovery_code: ChallengeModel,
        now: float,
        events: list[AuditEvent],
        revoked_sessions: list[tuple[SessionModel, AuditEvent]],
    ) -> None:
        """Apply the final approval of a reset in one transaction.

        The user's factors are disabled, the user's sessions end through the cut-off
        (`sessions_valid_after`), remember-device tokens through `credentials_version`, and the
        recovery code is stored. Raises ConditionFailed naming "reset" when the reset changed
        since it was read, "admin" when its requester or one of its approvers is no longer an
        active admin, or "user" when the user's factors changed or the user is disabled. It also
        raises "user" when another reset of the user completed after this one was requested.
        """
        # A user can hold up to enrollment.MAX_FACTORS factors, so the sessions marked in the
        # first transaction get only the room that its other items leave.
        admins = len({reset.requested_by, *(reset.approvals or []), approver_id})
        other_items = 3 + admins + len(factors) + len(events)
        first, rest = _split(revoked_sessions, (MAX_TRANSACTION_ITEMS - other_items) // 2)
        with self._transaction() as tx:
            # A reset that needs no approval completes at its request, with no approval listed.
            approval = (
                []
                if approver_id == reset.requested_by
                else [MfaResetModel.approvals.set(MfaResetModel.approvals.append([approver_id]))]
            )
            tx.update(
                "reset",
                reset,
                actions=[
                    *approval,
                    MfaResetModel.status.set("completed"),
                    MfaResetModel.closed_at.set(now),
                    MfaResetModel.closed_by.set(approver_id),
                ],
                condition=_reset_unchanged(reset, now),
            )
            self._check_admins(tx, reset, approver_id)
            tx.update(
                "user",
                UserModel(user.org_id, user.user_id),
                actions=[
                    UserModel.active_factors.set({}),
                    UserModel.factors_version.add(1),
                    UserModel.sessions_valid_after.set(now),
                    UserModel.credentials_version.add(1),
                    UserModel.recovery_required.set(True),
                    UserModel.last_reset_at.set(now),
                ],
                condition=(UserModel.status == "active")
                & _factors_version_is(user.factors_version)
                & (
                    UserModel.last_reset_at.does_not_exist()
                    | (UserModel.last_reset_at < reset.created_at)
                ),
            )
            for factor in factors:
                tx.update(
                    "factor",
                    factor,
                    actions=[FactorModel.status.set("disabled")],
                    condition=FactorModel.status == "active",
                )
            tx.put(
                "recovery_code",
                recovery_code,
                condition=ChallengeModel.challenge_id.does_not_exist(),
            )
            self._audit(tx, events)
            self._revoke(tx, first, reason="mfa_reset", now=now)
        for start in range(0, len(rest), SESSIONS_PER_TRANSACTION):
            try:
                with self._transaction() as tx:
                    self._revoke(
                        tx,
                        rest[start : start + SESSIONS_PER_TRANSACTION],
                        reason="mfa_reset",
                        now=now,
                    )
            except (DependencyFailed, ConditionFailed):
                # The cut-off already ended these sessions; the items are only marked.
                logger.warning(
                    "Marking ended sessions as revoked failed",
                    extra={"org_id": user.org_id, "user_id": user.user_id},
                )

    def spend_recovery_code(
        self,
        challenge_id: str,
        user: UserModel,
        *,
        issued_at: float,
        now: float,
        events: list[AuditEvent],
    ) -> None:
        """Mark a recovery code used, and let `user` sign in without one again.

        Raises ConditionFailed naming "recovery_code" when it was used, or has expired,
        meanwhile, or "user" when the user's sessions cut-off moved past `issued_at`, the
        code's creation, as a later reset or a new factor moves it.
        """
        with self._transaction() as tx:
            tx.update(
                "recovery_code",
                ChallengeModel(challenge_id),
                actions=[ChallengeModel.consumed_at.set(now)],
                condition=_unspent(now),
            )
            tx.update(
                "user",
                UserModel(user.org_id, user.user_id),
                actions=[UserModel.recovery_required.remove()],
                condition=UserModel.user_id.exists()
                & (
                    UserModel.sessions_valid_after.does_not_exist()
                    | (UserModel.sessions_valid_after <= issued_at)
                ),
            )
            self._audit(tx, events)

    # -- helpers -------------------------------------------------------------------------------

    def _check_admins(self, tx: _Transaction, reset: MfaResetModel, approver_id: str) -> None:
        # The requester and every approver must still be active admins when an approval is
        # written, so that demoting or disabling one of them meanwhile fails the approval.
        for admin_id in dict.fromkeys((reset.requested_by, *(reset.approvals or []), approver_id)):
            tx.check(
                "admin",
                UserModel,
                reset.org_id,
                admin_id,
                condition=(UserModel.role == "admin") & (UserModel.status == "active"),
            )

    def _revoke(
        self,
        tx: _Transaction,
        revocations: list[tuple[SessionModel, AuditEvent]],
        *,
        reason: str,
        now: float,
    ) -> None:
        # Only existence is a condition, so that a session revoked meanwhile (a logout) cannot
        # fail the change, and an update cannot create a session item.
        for session, event in revocations:
            tx.update(
                "revoked_session",
                session,
                actions=_revoked(reason, now),
                condition=SessionModel.session_id.exists(),
            )
            self._audit(tx, [event])

    def _audit(self, tx: _Transaction, events: Any) -> None:
        for item in events:
            tx.put("audit", self._audit_item(item), condition=AuditModel.event_id.does_not_exist())

    def _audit_item(self, item: AuditEvent) -> AuditModel:
        ctx = item.context
        return AuditModel(
            item.org_id,
            item.event_id,
            user_key=user_key(item.org_id, item.user_id) if item.user_id else None,
            event_type=item.event_type,
            outcome=item.outcome,
            user_id=item.user_id,
            actor=item.actor,
            factor_id=item.factor_id,
            session_id=item.session_id,
            source_ip=ctx.source_ip,
            user_agent=ctx.short_user_agent,
            request_id=ctx.request_id,
            reason=item.reason,
            details=item.details,
            created_at=item.created_at,
            expires_at=int(item.created_at) + self._retention_days(item.org_id) * DAY,
        )

    def _retention_days(self, org_id: str) -> int:
        """Return the org's audit retention, from its latest read if that is recent.

        Most requests read their org anyway, so this rarely costs a read of its own. A policy
        change applies to the events written after it, here within RETENTION_CACHE_SECONDS.
        """
        cached = self._retention.get(org_id)
        if cached is None or monotonic() - cached[0] > RETENTION_CACHE_SECONDS:
            if self.get_org(org_id) is None:
                return DEFAULT_AUDIT_RETENTION_DAYS
            cached = self._retention[org_id]
        return cached[1]

    @contextmanager
    def _transaction(
        self, errors: dict[str, Callable[[], MfaError]] | None = None
    ) -> Iterator[_Transaction]:
        """Run one TransactWriteItems.

        A lost condition on an item named in `errors` raises that item's error. Any other lost
        condition raises ConditionFailed with the names of the items that lost.
        """
        named: _Transaction | None = None
        try:
            with TransactWrite(connection=self._connection) as tx:
                named = _Transaction(tx)
                yield named
        except TransactWriteError as exc:
            if exc.cause_response_code != "TransactionCanceledException" or named is None:
                raise DependencyFailed() from exc
            names = named.names
            failed = frozenset(
                names[index]
                for index, reason in enumerate(exc.cancellation_reasons)
                if reason is not None
                and reason.code == "ConditionalCheckFailed"
                and index < len(names)
            )
            if not failed:
                # Cancelled for another reason, such as a conflicting concurrent transaction.
                raise DependencyFailed() from exc
            for name, error in (errors or {}).items():
                if name in failed:
                    raise error() from exc
            raise ConditionFailed(failed) from exc
        except PynamoDBException as exc:
            raise DependencyFailed() from exc


def _org_exists() -> MfaError:
    return Conflict("An org with this id already exists.")


def _no_such_org() -> MfaError:
    return NotFound("No org with this id.")


def _email_taken() -> MfaError:
    return Conflict("A member with this email already exists in the org.")


def _revoked(reason: str, now: float) -> list[Any]:
    return [
        SessionModel.status.set("revoked"),
        SessionModel.revoked_at.set(now),
        SessionModel.revoke_reason.set(reason),
    ]


def _factors_version_is(version: float | None) -> Any:
    """Require that the user's factors did not change since `version` was read."""
    if version is None:
        return UserModel.factors_version.does_not_exist()
    return UserModel.factors_version == version


def _unspent(now: float) -> Any:
    return (
        ChallengeModel.challenge_id.exists()
        & ChallengeModel.consumed_at.does_not_exist()
        & (ChallengeModel.expires_at > now)
    )


def _reset_unchanged(reset: MfaResetModel, now: float) -> Any:
    """Require a reset that is still pending, unexpired and has the approvals that were read."""
    return (
        (MfaResetModel.status == "pending")
        & (MfaResetModel.expires_at > now)
        & (size(MfaResetModel.approvals) == len(reset.approvals or []))
    )


def _split(
    revocations: list[tuple[SessionModel, AuditEvent]],
    first_size: int = SESSIONS_PER_TRANSACTION,
) -> tuple[list[tuple[SessionModel, AuditEvent]], list[tuple[SessionModel, AuditEvent]]]:
    return revocations[:first_size], revocations[first_size:]


def _key_summary(factor: FactorModel) -> dict[str, Any]:
    return {
        "type": factor.type,
        "label": factor.label,
        "credential_id": factor.credential_id,
        "transports": list(factor.transports or []),
    }


def _not_locked(now: float) -> Any:
    return UserModel.locked_until.does_not_exist() | (UserModel.locked_until <= now)


def _email_claim(user: UserModel) -> EmailClaimModel:
    return EmailClaimModel(user.org_id, f"email#{user.email_key}", owner_user_id=user.user_id)


def _resolved(future: Any) -> Any:
    try:
        return future.get()
    except DoesNotExist:
        return None


@contextmanager
def _dynamodb_errors() -> Iterator[None]:
    try:
        yield
    except PynamoDBException as exc:
        raise DependencyFailed() from exc
