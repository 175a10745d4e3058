"""Geographic anomalies at login, and what the org's policy does about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mfa_core import audit
from mfa_core.audit import RequestContext
from mfa_core.policy import MfaPolicy
from mfa_core.runtime import Services
from mfa_core.store.models import UserModel


@dataclass(frozen=True, kw_only=True)
class LoginRisk:
    """What a login's location means: anomaly signals, the audit events that record them,
    whether MFA must be asked regardless, and how to update the user's login history."""

    signals: tuple[str, ...] = ()
    step_up: bool = False
    events: list[audit.AuditEvent] = field(default_factory=list)
    # The location kept on the login transaction until MFA passes.
    location_item: dict[str, Any] | None = None
    # Actions on the user item that record this login in the history, for a session opened now.
    history_update: list[Any] = field(default_factory=list)


def assess_login(
    svc: Services, user: UserModel, org_policy: MfaPolicy, *, context: RequestContext, now: float
) -> LoginRisk:
    return LoginRisk()


def history_update(location: Any, *, now: float) -> list[Any]:
    """Return the user-item actions that record a successful login from `location`."""
    return []
