"""The step-up table and its evaluation: what a token lacks for each kind of requirement."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from local.template import load_template
from mfa_core import stepup, tokens
from mfa_core.clock import ManualClock
from mfa_core.errors import StepUpRequired
from mfa_core.stepup import Requirement
from mfa_core.tokens import Principal

NOW = 1_800_000_000
AAL2_5_MIN = Requirement("aal2", 300)
AAL3_5_MIN = Requirement("aal3", 300)
AAL2_ANY_AGE = Requirement("aal2", None)
AAL1_5_MIN = Requirement("aal1", 300)
AAL1_ANY_AGE = Requirement("aal1", None)

PASSWORD_ONLY = {"acr": "aal1"}
TOTP_NOW = {"acr": "aal2", "mfa_time": NOW}
KEY_NOW = {"acr": "aal3", "mfa_time": NOW}


@pytest.mark.parametrize(
    ("claims", "requirement", "expected"),
    [
        (TOTP_NOW, AAL2_5_MIN, []),
        (KEY_NOW, AAL2_5_MIN, []),
        (KEY_NOW, AAL3_5_MIN, []),
        ({"acr": "aal2", "mfa_time": NOW - 300}, AAL2_5_MIN, []),
        ({"acr": "aal2", "mfa_time": NOW - 301}, AAL2_5_MIN, ["mfa_age"]),
        ({"acr": "aal2", "mfa_time": NOW - 86_400}, AAL2_ANY_AGE, []),
        (TOTP_NOW, AAL3_5_MIN, ["acr"]),
        ({"acr": "aal2", "mfa_time": NOW - 301}, AAL3_5_MIN, ["acr", "mfa_age"]),
        (PASSWORD_ONLY, AAL2_5_MIN, ["acr", "mfa"]),
        (PASSWORD_ONLY, AAL2_ANY_AGE, ["acr", "mfa"]),
        (PASSWORD_ONLY, AAL1_5_MIN, ["mfa"]),
        (PASSWORD_ONLY, AAL1_ANY_AGE, []),
        ({}, AAL1_ANY_AGE, ["acr"]),
        ({}, AAL2_5_MIN, ["acr", "mfa"]),
        ({"acr": "aal9", "mfa_time": NOW}, AAL2_5_MIN, ["acr"]),
        ({"acr": "aal2", "mfa_time": "1800000000"}, AAL2_5_MIN, ["mfa"]),
        ({"acr": "aal2", "mfa_time": True}, AAL2_5_MIN, ["mfa"]),
        ({"acr": "aal2", "mfa_time": NOW + 30}, AAL2_5_MIN, []),
    ],
    ids=[
        "totp-meets-aal2",
        "key-meets-aal2",
        "key-meets-aal3",
        "age-at-limit",
        "age-one-second-over",
        "no-age-limit",
        "aal2-below-aal3",
        "aal2-old-below-aal3",
        "password-only-for-aal2",
        "password-only-no-age-limit",
        "password-only-aal1-with-age",
        "password-only-aal1",
        "no-acr-claim",
        "no-claims-for-aal2",
        "unknown-acr",
        "mfa-time-as-string",
        "mfa-time-as-boolean",
        "mfa-time-slightly-ahead",
    ],
)
def test_missing_table(
    claims: dict[str, Any], requirement: Requirement, expected: list[str]
) -> None:
    assert [s.code for s in stepup.missing(claims, requirement, NOW)] == expected


def test_missing_states_values() -> None:
    shortfalls = stepup.missing({"acr": "aal2", "mfa_time": NOW - 1000}, AAL3_5_MIN, NOW)
    acr, age = shortfalls

    assert "aal2" in acr.detail
    assert "needs aal3" in acr.detail
    assert "user verification" in acr.detail
    assert "1000 seconds ago" in age.detail
    assert "limit is 300 seconds" in age.detail


@pytest.mark.parametrize(
    ("requirement", "cap", "expected"),
    [
        (Requirement("aal2", 900), 300, Requirement("aal2", 300)),
        (Requirement("aal2", 300), 900, Requirement("aal2", 300)),
        (Requirement("aal3", None), 600, Requirement("aal3", 600)),
        (Requirement("aal2", 300), None, Requirement("aal2", 300)),
    ],
    ids=["cap-stricter", "table-stricter", "cap-adds-limit", "no-cap"],
)
def test_cap_takes_the_stricter_age(
    requirement: Requirement, cap: int | None, expected: Requirement
) -> None:
    assert requirement.capped(cap) == expected


@pytest.mark.parametrize(("acr", "age"), [("aal4", 300), ("AAL2", 300), ("aal2", 0), ("aal2", -5)])
def test_invalid_requirement_rejected(acr: str, age: int) -> None:
    with pytest.raises(ValueError, match=r"assurance level|max_mfa_age"):
        Requirement(acr, age)


def _principal(claims: dict[str, Any], token_type: str = tokens.ACCESS) -> Principal:
    return Principal(token_type=token_type, org_id="acme", user_id="u1", claims=claims)


def _services() -> Any:
    return SimpleNamespace(clock=ManualClock(NOW))


def test_require_names_what_is_missing() -> None:
    with pytest.raises(StepUpRequired) as raised:
        stepup.require(
            _services(),
            _principal({"acr": "aal2", "mfa_time": NOW - 600}),
            "POST /v1/agents/{agent_id}/credentials",
        )

    error = raised.value
    assert error.required_acr == "aal3"
    assert error.max_mfa_age == 300
    assert error.missing == ["acr", "mfa_age"]
    assert error.detail.startswith("This operation needs aal3 with an MFA verification")
    assert "/v1/auth/mfa/verify" in error.detail


def test_require_applies_the_cap() -> None:
    principal = _principal({"acr": "aal2", "mfa_time": NOW - 400})
    route = "PUT /v1/agents/{agent_id}/config"
    assert stepup.require(_services(), principal, route) == Requirement("aal2", 900)

    with pytest.raises(StepUpRequired) as raised:
        stepup.require(_services(), principal, route, max_age_cap=300)

    assert raised.value.max_mfa_age == 300
    assert raised.value.missing == ["mfa_age"]


def test_require_rejects_unknown_route_key() -> None:
    with pytest.raises(KeyError):
        stepup.require(_services(), _principal(KEY_NOW), "DELETE /v1/me/factors/{id}")


def test_only_access_tokens_meet_a_requirement() -> None:
    enrollment = _principal(TOTP_NOW, token_type=tokens.ENROLLMENT)
    with pytest.raises(StepUpRequired) as raised:
        stepup.enforce(_services(), enrollment, AAL2_5_MIN, action="Changing factors")

    assert raised.value.missing == ["acr", "mfa"]
    assert raised.value.detail.startswith("Changing factors needs aal2")


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PUT", "/v1/agents/a1/config", "PUT /v1/agents/{agent_id}/config"),
        ("POST", "/v1/agents/a%2F1/credentials", "POST /v1/agents/{agent_id}/credentials"),
        ("DELETE", "/v1/me/factors/f_1", "DELETE /v1/me/factors/{factor_id}"),
        ("POST", "/v1/me/backup-codes", "POST /v1/me/backup-codes"),
        (
            "POST",
            "/v1/orgs/acme/mfa-resets/r1/approve",
            "POST /v1/orgs/{org_id}/mfa-resets/{reset_id}/approve",
        ),
        ("GET", "/v1/agents/a1/config", None),
        # Spellings that a framework behind a catch-all route would route alike.
        ("PUT", "/v1/agents/a1/config/", "PUT /v1/agents/{agent_id}/config"),
        ("POST", "/v1/agents/a1//credentials", "POST /v1/agents/{agent_id}/credentials"),
        ("POST", "/v1//agents/a1/credentials", "POST /v1/agents/{agent_id}/credentials"),
        ("POST", "/v1/agents/a1/%63redentials", "POST /v1/agents/{agent_id}/credentials"),
        ("POST", "/v1/agents/a1/Credentials", "POST /v1/agents/{agent_id}/credentials"),
        ("POST", "/v1/agents/a1/x/../credentials", "POST /v1/agents/{agent_id}/credentials"),
        ("post", "/v1/agents/a1/credentials", "POST /v1/agents/{agent_id}/credentials"),
        ("POST", "/v1/agents%2Fa1%2Fcredentials", "POST /v1/agents/{agent_id}/credentials"),
        ("POST", "/v1/agents/a1%2Fcredentials", "POST /v1/agents/{agent_id}/credentials"),
        ("POST", "/v1/agents/a1/credentials;x=1", "POST /v1/agents/{agent_id}/credentials"),
        ("PUT", "/v1/agents//config", None),
        ("PUT", "/v1/agents/a/b/config", None),
        ("GET", "/v1/me/backup-codes", None),
    ],
)
def test_match_route(method: str, path: str, expected: str | None) -> None:
    assert stepup.match_route(method, path) == expected


def _shape(route_key: str) -> str:
    """Replace each {variable} with {} so that spellings of the same route compare equal."""
    return re.sub(r"\{[^{}]+\}", "{}", route_key)


def test_table_spells_template_routes_identically() -> None:
    template_routes = {
        route.route_key for function in load_template().functions for route in function.routes
    }
    by_shape = {_shape(key): key for key in template_routes}

    defined = [key for key in stepup.ROUTE_REQUIREMENTS if _shape(key) in by_shape]
    for key in defined:
        assert by_shape[_shape(key)] == key
    # The check covers the routes that template.yaml defines today, at least these.
    assert {
        "PUT /v1/agents/{agent_id}/config",
        "POST /v1/agents/{agent_id}/credentials",
        "DELETE /v1/me/factors/{factor_id}",
        "POST /v1/me/backup-codes",
    } <= set(defined)
