"""The security scan's pure rules: policy weakening, and finding ids and evidence."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mfa_core.cso import rules
from mfa_core.cso.rules import Event
from mfa_core.policy import MfaPolicy, SsoTrust

REQUIRED = MfaPolicy(enforcement="required").as_json()


def trust(**changes: Any) -> SsoTrust:
    return dataclasses.replace(TRUST_MFA, **changes)


TRUST_MFA = SsoTrust(trust_idp_mfa=True, accepted_amr=("mfa",), max_auth_age_minutes=60)


def policy(**changes: Any) -> dict[str, Any]:
    return MfaPolicy(**changes).as_json()


@pytest.mark.parametrize(
    ("before", "after", "reasons"),
    [
        (REQUIRED, policy(enforcement="off"), ["enforcement_lowered"]),
        (REQUIRED, policy(enforcement="optional"), ["enforcement_lowered"]),
        (policy(enforcement="optional"), policy(enforcement="off"), ["enforcement_lowered"]),
        (REQUIRED, policy(scope="roles", scope_roles=("admin",)), ["scope_narrowed"]),
        (
            policy(scope="roles", scope_roles=("admin", "operator")),
            policy(scope="roles", scope_roles=("admin",)),
            ["scope_narrowed"],
        ),
        (REQUIRED, policy(enforce_after=1_900_000_000), ["enforcement_postponed"]),
        # Stricter or equal policies are no weakening.
        (policy(enforcement="optional"), policy(scope="roles", scope_roles=("admin",)), []),
        (policy(enforcement="off"), REQUIRED, []),
        (policy(scope="roles", scope_roles=("admin",)), REQUIRED, []),
        (REQUIRED, policy(grace_days=5), []),
        (REQUIRED, REQUIRED, []),
        # The identity provider's MFA standing in for ours in more logins.
        (REQUIRED, policy(sso=TRUST_MFA), ["idp_mfa_trusted"]),
        (
            policy(sso=TRUST_MFA),
            policy(sso=trust(accepted_amr=("mfa", "otp"))),
            ["idp_mfa_trusted"],
        ),
        (policy(sso=TRUST_MFA), policy(sso=trust(accepted_acr=("phr",))), ["idp_mfa_trusted"]),
        (policy(sso=TRUST_MFA), policy(sso=trust(max_auth_age_minutes=120)), ["idp_mfa_trusted"]),
        (
            policy(sso=TRUST_MFA),
            policy(enforcement="optional", sso=trust(max_auth_age_minutes=120)),
            ["enforcement_lowered", "idp_mfa_trusted"],
        ),
        # Trusting it in fewer logins, or no longer, is no weakening.
        (policy(sso=TRUST_MFA), policy(sso=trust(max_auth_age_minutes=30)), []),
        (policy(sso=trust(accepted_amr=("mfa", "hwk"))), policy(sso=TRUST_MFA), []),
        (policy(sso=TRUST_MFA), REQUIRED, []),
        (policy(sso=TRUST_MFA), policy(sso=TRUST_MFA), []),
    ],
)
def test_weakening_table(before: dict[str, Any], after: dict[str, Any], reasons: list[str]) -> None:
    assert rules.weakening(before, after) == reasons


# 2027-01-15T08:00:00Z, the time of the policy change in the tests below.
CHANGED_AT = 1_800_000_000


@pytest.mark.parametrize(
    ("before", "after", "reasons"),
    [
        (REQUIRED, policy(enforce_after=CHANGED_AT + 86_400), ["enforcement_postponed"]),
        # A start date already past when the policy changes requires MFA at once.
        (REQUIRED, policy(enforce_after=CHANGED_AT - 86_400), []),
        (REQUIRED, policy(enforce_after=CHANGED_AT), []),
        (
            policy(enforce_after=CHANGED_AT - 2 * 86_400),
            policy(enforce_after=CHANGED_AT - 86_400),
            [],
        ),
        (
            policy(enforce_after=CHANGED_AT - 86_400),
            policy(enforce_after=CHANGED_AT + 86_400),
            ["enforcement_postponed"],
        ),
    ],
)
def test_postponed_at_change_time(
    before: dict[str, Any], after: dict[str, Any], reasons: list[str]
) -> None:
    assert rules.weakening(before, after, at=CHANGED_AT) == reasons


def test_past_start_date_is_no_finding() -> None:
    event = Event(
        event_id="001800000000000-02",
        event_type="policy.mfa",
        outcome="success",
        created_at=CHANGED_AT,
        details={"before": REQUIRED, "after": policy(enforce_after=CHANGED_AT - 86_400)},
    )

    assert rules.enforcement_weakened(event) is None


def test_switched_off_is_high() -> None:
    event = Event(
        event_id="001800000000000-00",
        event_type="policy.mfa",
        outcome="success",
        created_at=1_800_000_000,
        details={"before": REQUIRED, "after": policy(enforcement="off")},
    )

    detection = rules.enforcement_weakened(event)

    assert detection is not None
    assert detection.severity == "high"
    assert detection.finding_id == "mfa_enforcement_weakened#org#2027-01-15T08"


def test_evidence_is_capped_at_the_newest() -> None:
    ids = [f"{n:015d}-{n:016x}" for n in range(rules.MAX_EVIDENCE + 10)]

    merged = rules.merge_evidence(ids[:30], ids[20:])

    assert len(merged) == rules.MAX_EVIDENCE
    assert merged == ids[-rules.MAX_EVIDENCE :]


def test_blocked_login_is_no_finding() -> None:
    event = Event(
        event_id="001800000000000-01",
        event_type="login.anomaly",
        outcome="denied",
        created_at=1_800_000_000,
        user_id="u_1",
        details={"signals": ["new_country"], "action": "block"},
    )

    detections, resolved = rules.detect([event])

    assert detections == []
    assert resolved == set()


def test_changes_of_one_millisecond_merge_by_version() -> None:
    optional = policy(enforcement="optional")
    off = policy(enforcement="off")
    # The second change has the lower id, as random id suffixes can give.
    changes = [
        Event(
            event_id="001800000000000-ff",
            event_type="policy.mfa",
            outcome="success",
            created_at=CHANGED_AT,
            details={"before": REQUIRED, "after": optional, "version": 2},
        ),
        Event(
            event_id="001800000000000-00",
            event_type="policy.mfa",
            outcome="success",
            created_at=CHANGED_AT,
            details={"before": optional, "after": off, "version": 3},
        ),
    ]

    detections, _ = rules.detect(changes)
    merged = detections[0]
    for detection in detections[1:]:
        merged.merge(detection)

    assert merged.details["before"]["enforcement"] == "required"
    assert merged.details["after"]["enforcement"] == "off"
    assert merged.details["reasons"] == ["enforcement_lowered"]


def test_key_suspected_then_removed_is_resolved() -> None:
    suspected = Event(
        event_id="001800000000000-00",
        event_type="webauthn.clone_suspected",
        outcome="denied",
        created_at=CHANGED_AT,
        user_id="u_1",
        factor_id="f_1",
    )
    removed = Event(
        event_id="001800000001000-00",
        event_type="factor.remove",
        outcome="success",
        created_at=CHANGED_AT + 1,
        user_id="u_1",
        factor_id="f_1",
    )
    clone_id = rules.finding_id(rules.CLONED_KEY, "user:u_1", "factor:f_1")

    detected, resolved = rules.detect([suspected, removed])
    assert [detection.finding_id for detection in detected] == [clone_id]
    assert resolved == {clone_id}

    # A detection after the resolution leaves the finding open.
    later = dataclasses.replace(suspected, event_id="001800000002000-00")
    _, resolved = rules.detect([suspected, removed, later])
    assert resolved == set()
