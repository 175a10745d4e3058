"""Step-up requirements: the one table of the MFA that each sensitive route needs, and its check.

A route's requirement is an authenticator assurance level (the `acr` claim: aal1, aal2 or
aal3) and an optional maximum age of the MFA behind the access token (the `mfa_time` claim).
The Lambda authorizer applies the table to other control-plane APIs, and this service's own
handlers apply it to their routes. Route keys are API Gateway HTTP API route keys, spelled
exactly as in template.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from mfa_core import tokens
from mfa_core.errors import StepUpRequired
from mfa_core.runtime import Services
from mfa_core.tokens import Principal

# Assurance levels from weakest to strongest.
ACR_LEVELS = ("aal1", "aal2", "aal3")

# Codes of what a token lacks, as the step_up_required problem lists them in `missing`.
MISSING_ACR = "acr"
MISSING_MFA = "mfa"
MISSING_MFA_AGE = "mfa_age"

VERIFY_HINT = "Verify with a factor at /v1/auth/mfa/verify and retry with the new access token."
AAL3_HINT = (
    "Only a device-bound security key used with user verification (a PIN or biometric) gives aal3."
)


@dataclass(frozen=True)
class Requirement:
    """The MFA an operation needs: an assurance level, and a maximum MFA age in seconds.

    `max_mfa_age` None sets no age limit. A requirement above aal1, or with an age limit,
    needs an MFA verification in the session.
    """

    acr: str
    max_mfa_age: int | None

    def __post_init__(self) -> None:
        if self.acr not in ACR_LEVELS:
            raise ValueError(f"unknown assurance level {self.acr!r}; use one of {ACR_LEVELS}")
        if self.max_mfa_age is not None and self.max_mfa_age <= 0:
            raise ValueError("max_mfa_age must be a positive number of seconds or None")

    @property
    def needs_mfa(self) -> bool:
        return self.acr != "aal1" or self.max_mfa_age is not None

    def capped(self, max_age_cap: int | None) -> Requirement:
        """Return this requirement with its age limit lowered to `max_age_cap` when stricter."""
        if max_age_cap is None:
            return self
        if max_age_cap <= 0:
            raise ValueError("max_age_cap must be a positive number of seconds or None")
        if self.max_mfa_age is not None and self.max_mfa_age <= max_age_cap:
            return self
        return Requirement(self.acr, max_age_cap)

    def as_json(self) -> dict[str, Any]:
        return {"acr": self.acr, "max_mfa_age": self.max_mfa_age}


FIVE_MINUTES = 5 * 60
# The maximum MFA age for adding a factor, whatever the route.
FACTOR_CHANGE_MAX_MFA_AGE = FIVE_MINUTES

# Route key -> requirement. A route that is not listed needs a valid access token of a live
# session and nothing more.
ROUTE_REQUIREMENTS: Mapping[str, Requirement] = {
    # The control plane's agent API, behind the Lambda authorizer.
    "PUT /v1/agents/{agent_id}/config": Requirement("aal2", 15 * 60),
    "POST /v1/agents/{agent_id}/credentials": Requirement("aal3", FIVE_MINUTES),
    # This service's own sensitive routes.
    "DELETE /v1/me/factors/{factor_id}": Requirement("aal2", FIVE_MINUTES),
    "POST /v1/me/backup-codes": Requirement("aal2", FIVE_MINUTES),
    "PUT /v1/orgs/{org_id}/mfa-policy": Requirement("aal2", FIVE_MINUTES),
    "PUT /v1/orgs/{org_id}/sso": Requirement("aal2", FIVE_MINUTES),
    "POST /v1/orgs/{org_id}/mfa-resets": Requirement("aal2", FIVE_MINUTES),
    "POST /v1/orgs/{org_id}/mfa-resets/{reset_id}/approve": Requirement("aal2", FIVE_MINUTES),
    "PUT /v1/me/password": Requirement("aal2", FIVE_MINUTES),
    "POST /v1/orgs/{org_id}/users": Requirement("aal2", FIVE_MINUTES),
    "PATCH /v1/orgs/{org_id}/users/{user_id}": Requirement("aal2", FIVE_MINUTES),
}

# This service's own routes that a user without any active factor may use without a step-up,
# because there is nothing to step up with; their handlers skip the requirement for such users.
FACTORLESS_ROUTES = frozenset(
    {
        "DELETE /v1/me/factors/{factor_id}",
        "PUT /v1/me/password",
        "POST /v1/orgs/{org_id}/users",
        "PATCH /v1/orgs/{org_id}/users/{user_id}",
    }
)

# This service's own routes, whose handlers also apply the org policy's shorter maximum MFA
# age (`step_up_max_age_minutes`); the Lambda authorizer applies the table alone.
POLICY_CAPPED_ROUTES = frozenset(
    {
        "DELETE /v1/me/factors/{factor_id}",
        "POST /v1/me/backup-codes",
        "PUT /v1/orgs/{org_id}/mfa-policy",
        "PUT /v1/orgs/{org_id}/sso",
        "POST /v1/orgs/{org_id}/mfa-resets",
        "POST /v1/orgs/{org_id}/mfa-resets/{reset_id}/approve",
        "PUT /v1/me/password",
        "POST /v1/orgs/{org_id}/users",
        "PATCH /v1/orgs/{org_id}/users/{user_id}",
    }
)


@dataclass(frozen=True)
class Shortfall:
    """One thing a token lacks for a requirement: a `code` from the MISSING_* names, and a
    sentence for people."""

    code: str
    detail: str


def missing(claims: Mapping[str, Any], requirement: Requirement, now: float) -> list[Shortfall]:
    """List what the access token `claims` lack for `requirement` at time `now` (epoch seconds).

    An empty list means the token meets the requirement. The checks are the assurance level
    (`acr`), an MFA verification at all (`mfa_time`), and the age of that verification.
    """
    shortfalls: list[Shortfall] = []

    acr = claims.get("acr")
    rank = ACR_LEVELS.index(acr) if acr in ACR_LEVELS else -1
    if rank < ACR_LEVELS.index(requirement.acr):
        has = f"assurance level is {acr}" if rank >= 0 else "carries no assurance level"
        detail = f"The token's {has}; this needs {requirement.acr}."
        if requirement.acr == "aal3":
            detail = f"{detail} {AAL3_HINT}"
        shortfalls.append(Shortfall(MISSING_ACR, detail))

    if not requirement.needs_mfa:
        return shortfalls
    mfa_time = claims.get("mfa_time")
    if not isinstance(mfa_time, int) or isinstance(mfa_time, bool):
        shortfalls.append(Shortfall(MISSING_MFA, "The session has no MFA verification."))
        return shortfalls

    limit = requirement.max_mfa_age
    # A token signed a moment ahead of this clock counts as age 0.
    age = max(0, int(now) - mfa_time)
    if limit is not None and age > limit:
        shortfalls.append(
            Shortfall(
                MISSING_MFA_AGE,
                f"The last MFA verification was {age} seconds ago; the limit is {limit} seconds.",
            )
        )
    return shortfalls


def requirement_for(route_key: str) -> Requirement | None:
    """Return the requirement of an HTTP API route key, or None when the route has none."""
    return ROUTE_REQUIREMENTS.get(route_key)


def require(
    svc: Services,
    principal: Principal,
    route_key: str,
    *,
    action: str = "This operation",
    max_age_cap: int | None = None,
) -> Requirement:
    """Raise StepUpRequired unless the caller's token meets the requirement of `route_key`.

    `max_age_cap`, such as a shorter maximum age that an org sets, replaces the table's age
    limit where it is stricter. Returns the requirement that was applied. A route key missing
    from the table raises KeyError, so that a misspelled key cannot skip the check.
    """
    requirement = ROUTE_REQUIREMENTS[route_key].capped(max_age_cap)
    enforce(svc, principal, requirement, action=action)
    return requirement


def enforce(svc: Services, principal: Principal, requirement: Requirement, *, action: str) -> None:
    """Raise StepUpRequired naming what is missing unless the token meets `requirement`.

    Only an access token can meet a requirement, because the mfa_token and the enrollment_token
    carry no assurance level. `action` begins the problem's detail, as in "Removing a factor".
    """
    claims = principal.claims if principal.token_type == tokens.ACCESS else {}
    shortfalls = missing(claims, requirement, svc.clock.now())
    if not shortfalls:
        return
    sentences = " ".join(shortfall.detail for shortfall in shortfalls)
    raise StepUpRequired(
        f"{action} needs {describe(requirement)}. {sentences} {VERIFY_HINT}",
        max_mfa_age=requirement.max_mfa_age,
        required_acr=requirement.acr,
        missing=[shortfall.code for shortfall in shortfalls],
    )


def describe(requirement: Requirement) -> str:
    """Describe a requirement in words, such as "aal2 with an MFA verification in the last 5
    minutes"."""
    if requirement.max_mfa_age is None:
        return requirement.acr if requirement.acr != "aal1" else "an MFA verification"
    within = _duration(requirement.max_mfa_age)
    return f"{requirement.acr} with an MFA verification in the last {within}"


def _duration(seconds: int) -> str:
    if seconds % 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


# -- matching a request to a route key ----------------------------------------------------------

_VARIABLE_SEGMENT = re.compile(r"^\{[^{}+]+\}$")
# Specificity rank of a segment, as API Gateway orders routes: a literal beats a {variable}.
_LITERAL, _VARIABLE = 0, 1


@dataclass(frozen=True)
class _RoutePattern:
    route_key: str
    method: str
    regex: re.Pattern[str]
    specificity: tuple[int, ...]


def _compile(route_key: str) -> _RoutePattern:
    method, _, path = route_key.partition(" ")
    parts, ranks = [], []
    for segment in path.strip("/").split("/"):
        if _VARIABLE_SEGMENT.match(segment):
            parts.append("[^/]+")
            ranks.append(_VARIABLE)
        else:
            parts.append(re.escape(segment))
            ranks.append(_LITERAL)
    regex = re.compile("^/" + "/".join(parts) + "$", re.IGNORECASE)
    return _RoutePattern(route_key, method, regex, (*ranks, _VARIABLE + 1))


_PATTERNS = sorted(
    (_compile(route_key) for route_key in ROUTE_REQUIREMENTS), key=lambda p: p.specificity
)


def match_route(method: str, path: str) -> str | None:
    """Return the table's route key for a request method and path, or None if none matches.

    Paths match segment by segment, a literal segment before a {variable} one, after the
    normalizations that web frameworks apply before routing: empty segments (`//`, a trailing
    `/`) are dropped, `;` parameters are cut from segments, percent-encoding is decoded, `.`
    and `..` are resolved, and literal segments match in any case. Some frameworks decode an
    encoded `/` (%2F) before routing and some do not, so the path matches if either reading
    does. `/v1/agents/a1/%63redentials/` thus needs what `/v1/agents/a1/credentials` needs.
    """
    method = method.upper()
    for decode_slash in (False, True):
        normalized = normalize_path(path, decode_slash=decode_slash)
        for pattern in _PATTERNS:
            if pattern.method == method and pattern.regex.match(normalized):
                return pattern.route_key
    return None


def normalize_path(path: str, *, decode_slash: bool = False) -> str:
    """Normalize a request path for matching (see match_route).

    With `decode_slash` False, a `/` encoded as %2F stays inside its segment; with True, it
    separates segments.
    """
    raw_segments = unquote(path).split("/") if decode_slash else path.split("/")
    segments: list[str] = []
    for raw in raw_segments:
        segment = raw.split(";", 1)[0] if decode_slash else unquote(raw.split(";", 1)[0])
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment.replace("/", "%2F"))
    return "/" + "/".join(segments)
