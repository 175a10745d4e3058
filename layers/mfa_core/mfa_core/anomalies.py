"""Geographic anomalies at login, and what the org's policy does about them.

The password step locates the source address and compares it with the user's login history
(mfa_core.risk). An anomaly is audited as `login.anomaly`; the policy's `geo_anomaly_action`
then flags it only, requires MFA even where a remembered device or `sensitive_only` would skip
it (`step_up`), or rejects the login (`block`). The history records a login once it succeeds,
which for an MFA login is at the verification.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core import audit, risk, telemetry
from mfa_core.adapters.geo import Location
from mfa_core.audit import RequestContext
from mfa_core.errors import LoginBlocked
from mfa_core.policy import MfaPolicy
from mfa_core.runtime import Services
from mfa_core.store.models import UserModel

logger = Logger(child=True)


@dataclass(frozen=True, kw_only=True)
class LoginRisk:
    """The risk of a login's location: the anomaly signals, the audit events that record them,
    whether MFA is required regardless, and how to record the login in the history."""

    signals: tuple[str, ...] = ()
    step_up: bool = False
    events: list[audit.AuditEvent] = field(default_factory=list)
    # The location kept on the login transaction until MFA passes.
    location_item: dict[str, Any] | None = None
    # Actions on the user item that record this login, for a session opened at once.
    history_update: list[Any] = field(default_factory=list)


def assess_login(
    svc: Services, user: UserModel, org_policy: MfaPolicy, *, context: RequestContext, now: float
) -> LoginRisk:
    """Locate the login and apply the policy's action to its anomalies.

    Raises LoginBlocked, audited, when the action is "block" and the login is anomalous.
    """
    location = svc.geo.locate(context.source_ip, dict(context.viewer_headers))
    history = risk.LoginHistory.from_item(_plain(user.login_history))
    signals = tuple(risk.assess(history, location, now))
    item = _location_item(location)
    update = _history_actions(history, location, now)
    if not signals:
        return LoginRisk(location_item=item, history_update=update)

    action = org_policy.geo_anomaly_action
    details: dict[str, Any] = {"signals": list(signals), "action": action}
    if location.country:
        details["country"] = location.country
    if location.asn is not None:
        details["asn"] = location.asn
    event = audit.event(
        now=now,
        event_type="login.anomaly",
        outcome="denied" if action == "block" else "success",
        org_id=user.org_id,
        user_id=user.user_id,
        context=context,
        reason=signals[0],
        details=details,
    )
    telemetry.count(telemetry.LOGIN_ANOMALY)
    logger.warning(
        "Anomalous login location",
        extra={
            "org_id": user.org_id,
            "user_id": user.user_id,
            "signals": list(signals),
            "action": action,
        },
    )
    # NOTE: "flag" records the anomaly in the audit trail only; no finding is stored for it
    # until a scan turns audit events into findings.
    if action == "block":
        svc.store.record(event)
        svc.notifier.login_blocked(user=user, signals=signals, country=location.country)
        raise LoginBlocked(
            "This sign-in was blocked because its location is unusual for this account. If it "
            "was you, ask an admin of your org to review it."
        )
    return LoginRisk(
        signals=signals,
        step_up=action == "step_up",
        events=[event],
        location_item=item,
        history_update=update,
    )


def history_update(user: UserModel, location_item: Any, *, now: float) -> list[Any]:
    """Return the user-item actions that record a login from a stored `location_item`."""
    location = _location_from_item(_plain(location_item))
    if location is None:
        return []
    history = risk.LoginHistory.from_item(_plain(user.login_history))
    return _history_actions(history, location, now)


def _history_actions(history: risk.LoginHistory, location: Location, now: float) -> list[Any]:
    updated = risk.record(history, location, now)
    if updated == history:
        return []
    return [UserModel.login_history.set(updated.as_item())]


def _location_item(location: Location) -> dict[str, Any] | None:
    """Describe a location for the login transaction; None when it gives nothing to record."""
    if location.country is None and location.asn is None and location.as_organization is None:
        return None
    values = {
        "source": location.source,
        "country": location.country,
        "latitude": location.latitude,
        "longitude": location.longitude,
        "accuracy_radius_km": location.accuracy_radius_km,
        "asn": location.asn,
        "as_organization": location.as_organization,
    }
    # Floats become strings, because DynamoDB numbers through pynamodb need exact decimals.
    return {
        key: (repr(value) if isinstance(value, float) else value)
        for key, value in values.items()
        if value is not None
    }


def _location_from_item(item: Any) -> Location | None:
    if not isinstance(item, dict) or not item.get("source"):
        return None

    def number(key: str) -> float | None:
        value = item.get(key)
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            return None

    asn = item.get("asn")
    return Location(
        source=str(item["source"]),
        country=item.get("country"),
        latitude=number("latitude"),
        longitude=number("longitude"),
        accuracy_radius_km=number("accuracy_radius_km"),
        asn=int(asn) if asn is not None else None,
        as_organization=item.get("as_organization"),
    )


def _plain(value: Any) -> Any:
    """Turn a pynamodb MapAttribute into a plain dict; return other values unchanged."""
    as_dict = getattr(value, "as_dict", None)
    return as_dict() if callable(as_dict) else value
