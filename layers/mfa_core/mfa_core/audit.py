"""Audit events: the event, its subject, its actor and the request origin, never a secret or a code.

Services build an AuditEvent for each state change and each failed attempt. The store writes it
in the same DynamoDB transaction as the change it records.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

MAX_USER_AGENT = 256


@dataclass(frozen=True, kw_only=True)
class RequestContext:
    """The origin of a request, as API Gateway reports it."""

    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    # CloudFront's viewer location headers (lower-case names), for geolocation only.
    viewer_headers: tuple[tuple[str, str], ...] = ()

    @property
    def short_user_agent(self) -> str | None:
        if self.user_agent is None:
            return None
        return self.user_agent[:MAX_USER_AGENT]


SYSTEM = RequestContext()


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    event_id: str
    event_type: str
    outcome: str  # success | failure | denied
    org_id: str
    actor: str  # "user:<id>", "operator" or "anonymous"
    created_at: float
    context: RequestContext
    user_id: str | None = None
    factor_id: str | None = None
    session_id: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


OUTCOMES = frozenset({"success", "failure", "denied"})


def new_event_id(now: float) -> str:
    """Return a time-ordered event id: zero-padded epoch milliseconds, then 64 random bits."""
    return f"{int(now * 1000):015d}-{secrets.token_hex(8)}"


def event(
    *,
    now: float,
    event_type: str,
    outcome: str,
    org_id: str,
    context: RequestContext,
    user_id: str | None = None,
    actor: str | None = None,
    factor_id: str | None = None,
    session_id: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Build an audit event; the actor defaults to the user the event is about."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    if actor is None:
        actor = f"user:{user_id}" if user_id else "anonymous"
    return AuditEvent(
        event_id=new_event_id(now),
        event_type=event_type,
        outcome=outcome,
        org_id=org_id,
        actor=actor,
        created_at=now,
        context=context,
        user_id=user_id,
        factor_id=factor_id,
        session_id=session_id,
        reason=reason,
        details=details or {},
    )
