"""The Lambda authorizer of the control plane's APIs, and the same check at /v1/auth/authorize.

API Gateway calls the authorizer (HTTP API, payload format 2.0, simple responses) before each
request to a protected route. It accepts an access token that verifies against the published
keys, whose session is still valid, and that meets the route's requirement in
mfa_core.stepup. A denial can only be API Gateway's bare 403, so clients ask
/v1/auth/authorize, which runs the same `decide`, for the reason.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core import audit, policy, sessions, stepup, telemetry, tokens
from mfa_core.audit import RequestContext
from mfa_core.errors import InvalidInput, InvalidToken, StepUpRequired
from mfa_core.runtime import Services
from mfa_core.stepup import Requirement
from mfa_core.tokens import Principal

logger = Logger(child=True)

ACCESS_ONLY = frozenset({tokens.ACCESS})

# Outcomes of `decide`, as logs and audit events name them.
ALLOWED = "allowed"
TOKEN_REJECTED = "invalid_token"  # noqa: S105 - an outcome name
SESSION_ENDED = "session_ended"
STEP_UP_REQUIRED = "step_up_required"

STEP_UP_EVENT = "authorizer.step_up_required"
# A session denied on one route is audited at most once in this many seconds per process; every
# denial is still logged and counted.
AUDIT_REPEAT_SECONDS = 60
MAX_AUDIT_MEMORY = 2048

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_PATH_LENGTH = 2048


@dataclass(frozen=True)
class Decision:
    """The outcome of checking a token for a route: allowed, or the error that denies it."""

    outcome: str
    route_key: str | None
    requirement: Requirement | None
    principal: Principal | None = None
    error: InvalidToken | StepUpRequired | None = None

    @property
    def allowed(self) -> bool:
        return self.error is None


def decide(
    svc: Services,
    bearer_token: str | None,
    route_key: str | None,
    *,
    org_cap: bool = False,
) -> Decision:
    """Check an access token for the route `route_key`, as the authorizer does.

    The token must verify (ES256, iss, aud, exp, type access). Its session, read through the
    short-lived session cache, must be valid by the rule of sessions.is_valid. And the token
    must meet the route's requirement when the step-up table lists the route. With `org_cap`,
    a route of this service's own is checked as its handler checks it: with the org policy's
    shorter maximum MFA age, and without a requirement for a user who has no factor where the
    handler allows that.
    """
    requirement = stepup.requirement_for(route_key) if route_key else None
    if not bearer_token:
        return Decision(TOKEN_REJECTED, route_key, requirement, error=InvalidToken())
    try:
        principal = svc.tokens.verify(bearer_token, accept=ACCESS_ONLY)
    except InvalidToken as exc:
        return Decision(TOKEN_REJECTED, route_key, requirement, error=exc)
    session_id = principal.session_id
    if session_id is None:
        return Decision(TOKEN_REJECTED, route_key, requirement, principal, InvalidToken())

    session, user = svc.session_cache.get(session_id, principal.org_id, principal.user_id)
    if not sessions.is_current(session, user, principal, svc.clock.now()):
        return Decision(SESSION_ENDED, route_key, requirement, principal, InvalidToken())

    if requirement is not None and org_cap and route_key in stepup.POLICY_CAPPED_ROUTES:
        assert user is not None  # is_current checked it
        if route_key in stepup.FACTORLESS_ROUTES and not user.factor_summaries():
            requirement = None
        else:
            org = svc.store.get_org(principal.org_id)
            requirement = requirement.capped(policy.step_up_cap(org))
    if requirement is not None:
        try:
            stepup.enforce(svc, principal, requirement, action=f"The route {route_key}")
        except StepUpRequired as exc:
            return Decision(STEP_UP_REQUIRED, route_key, requirement, principal, exc)
    return Decision(ALLOWED, route_key, requirement, principal)


# -- the Lambda authorizer ----------------------------------------------------------------------


def authorize(svc: Services, event: dict[str, Any]) -> dict[str, Any]:
    """Decide an API Gateway HTTP API authorizer event (payload 2.0); return a simple response.

    Allowed, the context carries the caller's identity for the backend, which reads it at
    event.requestContext.authorizer.lambda. Denied, API Gateway returns 403 without a body.
    """
    route_key = _listed_route(event)
    headers = event.get("headers")
    header = headers.get("authorization") if isinstance(headers, dict) else None
    decision = decide(svc, bearer_from_header(header), route_key)

    if decision.allowed:
        assert decision.principal is not None
        logger.info("Request authorized", extra={**_ids(decision.principal), "route": route_key})
        return {"isAuthorized": True, "context": _backend_context(decision.principal)}

    _record_denial(svc, decision, _request_context(event))
    return {"isAuthorized": False}


def _listed_route(event: dict[str, Any]) -> str | None:
    """Return the event's route key, or the step-up table's route that its path matches.

    A route key that the table does not list, such as `ANY /v1/agents/{proxy+}` or
    `$default`, still gets the requirement of a listed route whose pattern the path matches.
    """
    route_key = event.get("routeKey")
    route_key = route_key if isinstance(route_key, str) else None
    if route_key is not None and stepup.requirement_for(route_key) is not None:
        return route_key
    request_context = _object(event.get("requestContext"))
    http = _object(request_context.get("http"))
    method, path = http.get("method"), event.get("rawPath")
    if not isinstance(method, str) or not isinstance(path, str):
        return route_key
    # On a named stage, rawPath starts with the stage name, which routes do not include.
    stage = request_context.get("stage")
    if isinstance(stage, str) and stage != "$default" and path.startswith(f"/{stage}/"):
        path = path[len(stage) + 1 :]
    return stepup.match_route(method, path) or route_key


def bearer_from_header(value: Any) -> str | None:
    """Return the token of an `Authorization: Bearer <token>` header value, or None."""
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _backend_context(principal: Principal) -> dict[str, Any]:
    """Describe the caller for the backend: ids, assurance, and roles and amr comma-joined."""
    claims = principal.claims
    context: dict[str, Any] = {
        "sub": principal.user_id,
        "org": principal.org_id,
        "sid": principal.session_id,
        "acr": str(claims.get("acr", "")),
        "amr": ",".join(str(value) for value in claims.get("amr") or []),
        "roles": ",".join(str(value) for value in claims.get("roles") or []),
    }
    mfa_time = claims.get("mfa_time")
    if isinstance(mfa_time, int) and not isinstance(mfa_time, bool):
        context["mfa_time"] = mfa_time
    return context


def _record_denial(svc: Services, decision: Decision, context: RequestContext) -> None:
    """Log and count a denial, and audit a valid session that fails a route's requirement."""
    route = decision.route_key
    principal = decision.principal
    if decision.outcome == TOKEN_REJECTED or principal is None:
        # Nothing in a rejected token can be trusted to name an org or a user.
        telemetry.count(telemetry.AUTHORIZER_TOKEN_REJECTED)
        logger.info("Authorizer rejected the token", extra={"route": route})
        return
    if decision.outcome == SESSION_ENDED:
        telemetry.count(telemetry.AUTHORIZER_SESSION_ENDED)
        logger.warning(
            "Authorizer denied a revoked or ended session",
            extra={**_ids(principal), "route": route},
        )
        return

    error = decision.error
    assert isinstance(error, StepUpRequired)
    telemetry.count(telemetry.AUTHORIZER_STEP_UP_REQUIRED)
    logger.warning(
        "Authorizer denied a route that needs a step-up",
        extra={**_ids(principal), "route": route, "missing": error.missing},
    )
    now = svc.clock.now()
    if not _recent_audits.first_in_window(principal.session_id, route, now):
        return
    svc.store.record(
        audit.event(
            now=now,
            event_type=STEP_UP_EVENT,
            outcome="denied",
            org_id=principal.org_id,
            user_id=principal.user_id,
            session_id=principal.session_id,
            context=context,
            reason=",".join(error.missing),
            details={
                "route": route,
                "required_acr": error.required_acr,
                "max_mfa_age": error.max_mfa_age,
                "acr": principal.claims.get("acr"),
            },
        )
    )


class _RecentAudits:
    """Remembers when each (session, route) denial was last audited, within a bounded memory."""

    def __init__(self, *, window: int, max_entries: int) -> None:
        self._window = window
        self._max_entries = max_entries
        self._last: OrderedDict[tuple[str | None, str | None], float] = OrderedDict()
        self._lock = threading.Lock()

    def first_in_window(self, session_id: str | None, route: str | None, now: float) -> bool:
        """Tell whether this denial is the first of its session and route in the window."""
        key = (session_id, route)
        with self._lock:
            last = self._last.get(key)
            # A time in the future means the clock went back: audit again.
            if last is not None and 0 <= now - last < self._window:
                return False
            self._last[key] = now
            self._last.move_to_end(key)
            while len(self._last) > self._max_entries:
                self._last.popitem(last=False)
            return True


# One per process, like the services: a Lambda process keeps it between invocations.
_recent_audits = _RecentAudits(window=AUDIT_REPEAT_SECONDS, max_entries=MAX_AUDIT_MEMORY)


def _request_context(event: dict[str, Any]) -> RequestContext:
    request = _object(event.get("requestContext"))
    http = _object(request.get("http"))
    return RequestContext(
        source_ip=_string(http.get("sourceIp")),
        user_agent=_string(http.get("userAgent")),
        request_id=_string(request.get("requestId")),
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _ids(principal: Principal) -> dict[str, Any]:
    return {
        "org_id": principal.org_id,
        "user_id": principal.user_id,
        "session_id": principal.session_id,
    }


# -- POST /v1/auth/authorize ----------------------------------------------------------------------


def route_key_for(method: str, path: str) -> str | None:
    """Return the step-up table's route key for a request, or None when no listed route matches.

    Raises InvalidInput for a method that is not an HTTP method in upper case, or a path that
    is not an absolute path without a query.
    """
    if method not in HTTP_METHODS:
        raise InvalidInput(
            f"Field 'method' must be one of {', '.join(sorted(HTTP_METHODS))}.", field="method"
        )
    if (
        not path.startswith("/")
        or len(path) > MAX_PATH_LENGTH
        or not path.isascii()
        or not path.isprintable()
        or any(character in path for character in " ?#")
    ):
        raise InvalidInput(
            "Field 'path' must be the request path, such as /v1/agents/a1/config, without a "
            "query string.",
            field="path",
        )
    return stepup.match_route(method, path)


def check(svc: Services, bearer_token: str | None, route_key: str | None) -> dict[str, Any]:
    """Run the authorizer's check for a route and describe the outcome for the client.

    Raises InvalidToken for a rejected token or an ended session, and StepUpRequired naming
    what is missing when the token does not meet the route's requirement.
    """
    decision = decide(svc, bearer_token, route_key, org_cap=True)
    if decision.error is not None:
        raise decision.error
    assert decision.principal is not None
    logger.info("Authorization checked", extra={**_ids(decision.principal), "route": route_key})
    requirement = decision.requirement
    return {
        "allowed": True,
        "route": route_key,
        "requirement": requirement.as_json() if requirement is not None else None,
    }
