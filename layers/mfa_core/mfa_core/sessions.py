"""Sessions: access tokens, rotating refresh tokens, logout and session listing.

A refresh token is "<session id>.<256 random bits>", opaque to clients. Only its SHA-256 is
stored. Every refresh replaces it. Presenting a replaced token is a reuse, and only a stolen copy
would still be in circulation, so a reuse revokes the whole session (the token family).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core import audit, telemetry, tokens
from mfa_core.audit import RequestContext
from mfa_core.errors import InvalidToken, NotFound, SessionLimitReached
from mfa_core.runtime import Services
from mfa_core.store.models import SessionModel, UserModel, user_key
from mfa_core.store.repository import SESSIONS_PER_TRANSACTION, ConditionFailed
from mfa_core.tokens import Principal

logger = Logger(child=True)

# How many replaced refresh-token hashes a session keeps for reuse detection.
ROTATED_HASHES_KEPT = 100


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "session_id": self.session_id,
        }


def _hash(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode("utf-8")).hexdigest()


def new_refresh_token(session_id: str) -> str:
    return f"{session_id}.{secrets.token_urlsafe(32)}"


def new_session(
    svc: Services,
    *,
    user: UserModel,
    amr: list[str],
    acr: str,
    auth_time: float,
    mfa_time: float | None,
    context: RequestContext,
) -> tuple[SessionModel, TokenPair]:
    """Build a session and its first token pair; the caller stores the session."""
    now = svc.clock.now()
    session_id = secrets.token_urlsafe(16)
    refresh_token = new_refresh_token(session_id)
    session = SessionModel(
        session_id,
        user_key=user_key(user.org_id, user.user_id),
        org_id=user.org_id,
        user_id=user.user_id,
        status="active",
        created_at=now,
        expires_at=int(now) + svc.settings.session_seconds,
        refresh_hash=_hash(refresh_token),
        rotated_hashes=[],
        amr=amr,
        acr=acr,
        auth_time=auth_time,
        mfa_time=mfa_time,
        source_ip=context.source_ip,
        user_agent=context.short_user_agent,
    )
    return session, TokenPair(
        access_token=access_token(svc, session=session, role=user.role),
        refresh_token=refresh_token,
        expires_in=svc.settings.access_token_seconds,
        session_id=session_id,
    )


def access_token(svc: Services, *, session: SessionModel, role: str) -> str:
    claims: dict[str, Any] = {
        "sid": session.session_id,
        "roles": [role],
        "amr": list(session.amr),
        "acr": session.acr,
        "auth_time": int(session.auth_time),
    }
    if session.mfa_time is not None:
        claims["mfa_time"] = int(session.mfa_time)
    return svc.tokens.issue(
        token_type=tokens.ACCESS,
        org_id=session.org_id,
        user_id=session.user_id,
        lifetime=svc.settings.access_token_seconds,
        **claims,
    )


def authenticate(svc: Services, bearer_token: str | None, *, accept: frozenset[str]) -> Principal:
    """Verify a bearer token of an accepted type; an access token's session must be active."""
    if not bearer_token:
        raise InvalidToken()
    principal = svc.tokens.verify(bearer_token, accept=accept)
    if principal.token_type == tokens.ACCESS:
        session_id = principal.session_id
        if session_id is None:
            raise InvalidToken()
        session, user = svc.store.load_session_and_user(
            session_id, principal.org_id, principal.user_id
        )
        if not is_current(session, user, principal, svc.clock.now()):
            raise InvalidToken()
    return principal


def is_current(
    session: SessionModel | None, user: UserModel | None, principal: Principal, now: float
) -> bool:
    """Tell whether an access token's session, read with its user, may still be used."""
    if session is None or user is None or not is_valid(session, user, now):
        return False
    return session.org_id == principal.org_id and session.user_id == principal.user_id


def is_valid(session: SessionModel, user: UserModel, now: float) -> bool:
    """Tell whether a session may still be used: live, of an active user, and not ended by a
    change of the user's factors (unless it is the session that made the change)."""
    if not is_live(session, now) or user.status != "active":
        return False
    cutoff = user.sessions_valid_after
    if cutoff is None or session.created_at >= cutoff:
        return True
    return session.confirmed_at is not None and session.confirmed_at >= cutoff


def refresh(svc: Services, *, refresh_token: str, context: RequestContext) -> TokenPair:
    """Rotate a refresh token and return a new pair; a reused token revokes its session."""
    now = svc.clock.now()
    session_id, _, secret_part = refresh_token.partition(".")
    if not session_id or not secret_part:
        raise InvalidToken("The refresh token is invalid or expired.")
    session = svc.store.get_session(session_id)
    if session is None:
        raise InvalidToken("The refresh token is invalid or expired.")

    presented = _hash(refresh_token)
    if session.status == "active" and hmac.compare_digest(presented, session.refresh_hash):
        if session.expires_at <= now:
            raise InvalidToken("The refresh token is invalid or expired.")
        return _rotate(svc, session=session, presented=presented, now=now, context=context)
    if any(hmac.compare_digest(presented, old) for old in session.rotated_hashes):
        _revoke_family(svc, session=session, now=now, context=context)
    else:
        svc.store.record(
            _event(svc, session, "session.refresh", "failure", context, reason="unknown_token")
        )
    raise InvalidToken("The refresh token is invalid or expired.")


def _rotate(
    svc: Services, *, session: SessionModel, presented: str, now: float, context: RequestContext
) -> TokenPair:
    user_role = _role_from_session(svc, session, context)
    replacement = new_refresh_token(session.session_id)
    rotated = [*session.rotated_hashes, presented][-ROTATED_HASHES_KEPT:]
    try:
        svc.store.rotate_refresh_token(
            session,
            presented_hash=presented,
            new_hash=_hash(replacement),
            rotated_hashes=rotated,
            now=now,
            events=[_event(svc, session, "session.refresh", "success", context)],
        )
    except ConditionFailed as exc:
        # A concurrent refresh with the same token won: this one is a reuse.
        current = svc.store.get_session(session.session_id)
        if current is not None:
            _revoke_family(svc, session=current, now=now, context=context)
        raise InvalidToken("The refresh token is invalid or expired.") from exc

    return TokenPair(
        access_token=access_token(svc, session=session, role=user_role),
        refresh_token=replacement,
        expires_in=svc.settings.access_token_seconds,
        session_id=session.session_id,
    )


def _role_from_session(svc: Services, session: SessionModel, context: RequestContext) -> str:
    """Return the user's role, or raise InvalidToken (audited) if the session has ended."""
    user = svc.store.get_user(session.org_id, session.user_id)
    if user is None or not is_valid(session, user, svc.clock.now()):
        svc.store.record(
            _event(svc, session, "session.refresh", "failure", context, reason="session_ended")
        )
        raise InvalidToken("The refresh token is invalid or expired.")
    return user.role


def _revoke_family(
    svc: Services, *, session: SessionModel, now: float, context: RequestContext
) -> None:
    telemetry.count(telemetry.REFRESH_TOKEN_REUSED)
    logger.warning(
        "Refresh token reuse; session revoked",
        extra={
            "org_id": session.org_id,
            "user_id": session.user_id,
            "session_id": session.session_id,
        },
    )
    reuse = _event(svc, session, "session.refresh_reuse", "denied", context, reason="token_reuse")
    if session.status != "active":
        svc.store.record(reuse)
        return
    revoked = _event(svc, session, "session.revoke", "success", context, reason="token_reuse")
    try:
        svc.store.revoke_session(session, reason="token_reuse", now=now, events=[reuse, revoked])
    except ConditionFailed:
        svc.store.record(reuse)


def make_room(
    svc: Services,
    *,
    user: UserModel,
    max_sessions: int,
    action: str,
    context: RequestContext,
) -> list[tuple[SessionModel, audit.AuditEvent]]:
    """Apply the org's concurrent-session limit before a new session of `user` opens.

    Returns the oldest live sessions to revoke with the new session's write ("revoke_oldest"),
    or raises SessionLimitReached, audited, when the org rejects new sessions at the limit.
    A limit of 0 means none, and costs no read.
    """
    if max_sessions <= 0:
        return []
    now = svc.clock.now()
    # NOTE: two logins at the same moment can both see room for one more session, so the
    # limit can be exceeded by the number of concurrent logins until the next login.
    live = sorted(
        (s for s in svc.store.list_sessions(user.org_id, user.user_id) if is_valid(s, user, now)),
        key=lambda s: s.created_at,
    )
    excess = len(live) - max_sessions + 1
    if excess <= 0:
        return []
    if action == "reject":
        svc.store.record(
            audit.event(
                now=now,
                event_type="session.limit",
                outcome="denied",
                org_id=user.org_id,
                user_id=user.user_id,
                context=context,
                reason="session_limit",
                details={"live_sessions": len(live), "max_sessions": max_sessions},
            )
        )
        logger.info(
            "Login rejected at the session limit",
            extra={"org_id": user.org_id, "user_id": user.user_id, "max_sessions": max_sessions},
        )
        raise SessionLimitReached(
            f"You have {len(live)} active sessions and your org allows {max_sessions}; sign out "
            "of one (GET and DELETE /v1/me/sessions from a signed-in device) and try again."
        )
    # NOTE: at most SESSIONS_PER_TRANSACTION sessions end per login; an org that lowers its
    # limit far below a user's session count has the rest ended on later logins.
    oldest = live[: min(excess, SESSIONS_PER_TRANSACTION)]
    return revocations(svc, oldest, reason="session_limit", context=context)


def logout(svc: Services, principal: Principal, *, context: RequestContext) -> None:
    """Revoke the caller's session, which `authenticate` has just read and found live."""
    session_id = principal.session_id
    if session_id is None:
        raise InvalidToken()
    # The conditional update needs only the key; the ids are for the audit event.
    session = SessionModel(session_id, org_id=principal.org_id, user_id=principal.user_id)
    _revoke(svc, session, reason="logout", context=context)


def list_sessions(svc: Services, principal: Principal) -> list[dict[str, Any]]:
    now = svc.clock.now()
    user = svc.store.get_user(principal.org_id, principal.user_id)
    if user is None:
        raise InvalidToken()
    sessions = svc.store.list_sessions(principal.org_id, principal.user_id)
    live = [s for s in sessions if is_valid(s, user, now)]
    live.sort(key=lambda s: s.created_at, reverse=True)
    return [
        {
            "session_id": s.session_id,
            "current": s.session_id == principal.session_id,
            "created_at": int(s.created_at),
            "last_refreshed_at": int(s.refreshed_at) if s.refreshed_at else None,
            "expires_at": int(s.expires_at),
            "acr": s.acr,
            "amr": list(s.amr),
            "source_ip": s.source_ip,
            "user_agent": s.user_agent,
        }
        for s in live
    ]


def revoke_own_session(
    svc: Services, principal: Principal, session_id: str, *, context: RequestContext
) -> None:
    """Revoke one of the caller's sessions; another user's or an unknown session is not found."""
    session = svc.store.get_session(session_id)
    if (
        session is None
        or session.org_id != principal.org_id
        or session.user_id != principal.user_id
        or not is_live(session, svc.clock.now())
    ):
        raise NotFound("No active session with this id.")
    _revoke(svc, session, reason="user_revoked", context=context)


def _revoke(svc: Services, session: SessionModel, *, reason: str, context: RequestContext) -> None:
    event = _event(svc, session, "session.revoke", "success", context, reason=reason)
    try:
        svc.store.revoke_session(session, reason=reason, now=svc.clock.now(), events=[event])
    except ConditionFailed as exc:
        raise NotFound("No active session with this id.") from exc
    logger.info(
        "Session revoked",
        extra={"org_id": session.org_id, "user_id": session.user_id, "reason": reason},
    )


def revocations(
    svc: Services,
    sessions: list[SessionModel],
    *,
    reason: str,
    context: RequestContext,
    actor: str | None = None,
) -> list[tuple[SessionModel, audit.AuditEvent]]:
    """Pair each session to revoke with the audit event that records its revocation.

    The actor defaults to the sessions' user; pass the admin who caused the revocation.
    """
    return [
        (
            session,
            _event(svc, session, "session.revoke", "success", context, reason=reason, actor=actor),
        )
        for session in sessions
    ]


def is_live(session: SessionModel, now: float) -> bool:
    return session.status == "active" and session.expires_at > now


def _event(
    svc: Services,
    session: SessionModel,
    event_type: str,
    outcome: str,
    context: RequestContext,
    *,
    reason: str | None = None,
    actor: str | None = None,
) -> audit.AuditEvent:
    return audit.event(
        now=svc.clock.now(),
        event_type=event_type,
        outcome=outcome,
        org_id=session.org_id,
        user_id=session.user_id,
        actor=actor,
        session_id=session.session_id,
        context=context,
        reason=reason,
    )
