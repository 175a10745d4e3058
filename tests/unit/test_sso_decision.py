"""When an identity provider's MFA replaces ours: the rules of mfa_core.sso.decision."""

from __future__ import annotations

from typing import Any

import pytest

from mfa_core.policy import SsoTrust
from mfa_core.sso.assertion import IdpAssertion
from mfa_core.sso.decision import assess_idp_mfa

NOW = 1_800_000_000.0
TRUST = SsoTrust(
    trust_idp_mfa=True,
    accepted_amr=("mfa", "hwk"),
    accepted_acr=("phr", "phrh", "urn:example:mfa"),
    max_auth_age_minutes=30,
)


def assertion(**changes: Any) -> IdpAssertion:
    values: dict[str, Any] = {
        "protocol": "oidc",
        "issuer": "https://idp.example.com",
        "subject": "user-1",
        "email": "dev@acme.example",
        "amr": ("pwd", "mfa"),
        "acr": None,
        "auth_time": NOW - 60,
    }
    values.update(changes)
    return IdpAssertion(**values)


CASES = [
    # (trust, assertion changes, accepted, reason, amr, acr)
    (TRUST, {}, True, "idp_mfa_accepted", ("fed", "mfa"), "aal2"),
    (
        TRUST,
        {"amr": (), "acr": "urn:example:mfa"},
        True,
        "idp_mfa_accepted",
        ("fed", "mfa"),
        "aal2",
    ),
    (TRUST, {"amr": ("hwk", "mfa")}, True, "idp_mfa_accepted", ("fed", "mfa", "hwk"), "aal3"),
    (TRUST, {"amr": (), "acr": "phrh"}, True, "idp_mfa_accepted", ("fed", "mfa"), "aal3"),
    (TRUST, {"amr": ("pwd",)}, False, "idp_mfa_not_asserted", (), None),
    (TRUST, {"amr": ("pwd",), "acr": "urn:other"}, False, "idp_mfa_not_asserted", (), None),
    (TRUST, {"auth_time": None}, False, "auth_time_missing", (), None),
    (TRUST, {"auth_time": NOW - 30 * 60}, True, "idp_mfa_accepted", ("fed", "mfa"), "aal2"),
    (TRUST, {"auth_time": NOW - 30 * 60 - 1}, False, "idp_mfa_too_old", (), None),
    (SsoTrust(), {}, False, "idp_mfa_not_trusted", (), None),
]


@pytest.mark.parametrize(("trust", "changes", "accepted", "reason", "amr", "acr"), CASES)
def test_idp_mfa_rules(  # noqa: PLR0917 - one table row per argument
    trust: SsoTrust,
    changes: dict[str, Any],
    accepted: bool,
    reason: str,
    amr: tuple[str, ...],
    acr: str | None,
) -> None:
    result = assess_idp_mfa(trust, assertion(**changes), now=NOW)
    assert result.accepted is accepted
    assert result.reason == reason
    assert result.amr == amr
    assert result.acr == acr


def test_phishing_resistant_acr_needs_acceptance() -> None:
    """A phr acr that the org does not accept gives nothing, however strong it sounds."""
    trust = SsoTrust(trust_idp_mfa=True, accepted_amr=("mfa",), max_auth_age_minutes=30)
    result = assess_idp_mfa(trust, assertion(amr=("pwd",), acr="phr"), now=NOW)
    assert result.accepted is False
    assert result.reason == "idp_mfa_not_asserted"
