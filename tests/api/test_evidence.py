"""Compliance evidence packs: each figure checked against the data it measures, stored in S3."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from botocore.exceptions import EndpointConnectionError
from pynamodb.exceptions import PynamoDBException

from mfa_core import audit_trail, cli, evidence, policy, runtime
from mfa_core.clock import ManualClock
from mfa_core.errors import DependencyFailed
from mfa_core.policy import SsoTrust
from mfa_core.sso.connection import SsoConnection
from mfa_core.store.models import AuditModel, UserModel
from tests.api.conftest import START, add_member
from tests.api.harness import Flow, Member
from tests.api.test_policy import set_policy

HOUR = 3600
DAY = 24 * HOUR


def _org_with_members(flow: Flow, acme: Member, clock: ManualClock) -> None:
    """acme: an admin with TOTP, an operator with TOTP, two viewers without a factor."""
    flow.enroll(acme, flow.login_ok(acme, "authenticated")["access_token"])
    operator = add_member("acme", "operator@acme.example", role="operator")
    flow.enroll(operator, flow.login_ok(operator, "authenticated")["access_token"])
    add_member("acme", "viewer1@acme.example", role="viewer")
    add_member("acme", "viewer2@acme.example", role="viewer")
    clock.set(START + 2 * HOUR)
    set_policy("acme", enforcement="required", grace_days=14, security_key_roles=("admin",))
    clock.set(START + 3 * HOUR + 300)
    audit_trail.seal_all(runtime.services())


def test_pack_figures_match_the_data(flow: Flow, acme: Member, clock: ManualClock) -> None:
    _org_with_members(flow, acme, clock)
    svc = runtime.services()
    org = svc.store.get_org("acme")
    assert org is not None
    findings = [{"severity": "high"}, {"severity": "low"}, {"severity": "low"}]

    pack = evidence.build_pack(svc, org, open_findings=findings).as_json()

    facts = pack["facts"]
    enrollment = facts["enrollment"]
    assert enrollment["members"] == 4
    # The admin has TOTP only, which does not count as enrolled in a security-key role.
    assert enrollment["by_role"]["operator"] == {
        "members": 1,
        "enrolled": 1,
        "enrollment_rate": 1.0,
    }
    assert enrollment["by_role"]["viewer"]["enrolled"] == 0
    assert enrollment["enrollment_rate"] == 0.25
    assert facts["methods"]["members_by_method"] == {"totp": 2}
    assert facts["methods"]["phishing_resistant_share"] == 0.0
    assert facts["security_key_roles"] == ["admin"]
    assert facts["enforcement"]["enforcement"] == "required"
    assert facts["enforcement"]["grace_days"] == 14
    assert facts["enforcement"]["policy_changed_at"] == "2027-01-15T10:00:00Z"
    assert facts["lockout"] == {
        "failed_attempts": svc.settings.lockout_threshold,
        "lockout_minutes": svc.settings.lockout_seconds // 60,
    }
    assert facts["audit_integrity"]["valid"] is True
    assert facts["audit_integrity"]["window_hours"] == 24
    assert facts["audit_integrity"]["hours_sealed_and_checked"] == 3
    assert facts["open_findings"] == {
        "total": 3,
        "by_severity": {"critical": 0, "high": 1, "medium": 0, "low": 2},
    }
    assert {control["control"] for control in pack["controls"]} == set(evidence.CONTROLS)


def test_pack_states_trust_in_idp_mfa(flow: Flow, acme: Member, clock: ManualClock) -> None:
    svc = runtime.services()
    before = svc.store.get_org("acme")
    assert before is not None
    without = evidence.build_pack(svc, before, open_findings=[]).as_json()["facts"]["sso"]
    connection = SsoConnection(
        protocol="oidc", issuer="https://idp.example.com", client_id="console"
    )
    svc.store.set_sso_connection("acme", connection.as_item(), [])
    set_policy(
        "acme",
        enforcement="required",
        sso=SsoTrust(trust_idp_mfa=True, accepted_amr=("mfa",), max_auth_age_minutes=30),
    )
    after = svc.store.get_org("acme")
    assert after is not None

    pack = evidence.build_pack(svc, after, open_findings=[]).as_json()

    assert without["protocol"] is None
    assert without["trust_idp_mfa"] is False
    assert pack["facts"]["sso"] == {
        "protocol": "oidc",
        "trust_idp_mfa": True,
        "accepted_amr": ["mfa"],
        "accepted_acr": [],
        "max_auth_age_minutes": 30,
    }
    [aal2] = [c for c in pack["controls"] if c["control"] == "NIST800-63B-AAL2"]
    assert "sso" in aal2["facts"]


def test_pack_dates_sms_and_key_rule_changes(acme: Member, clock: ManualClock) -> None:
    svc = runtime.services()
    clock.advance(3600)
    policy.set_sms_policy(svc, org_id="acme", daily_cap=5)
    sms_changed = clock.now()
    clock.advance(3600)
    policy.set_webauthn_policy(svc, org_id="acme", user_verification="required")
    key_rule_changed = clock.now()
    org = svc.store.get_org("acme")
    assert org is not None

    facts = evidence.build_pack(svc, org, open_findings=[]).as_json()["facts"]

    assert key_rule_changed > sms_changed
    changed_at = datetime.fromtimestamp(key_rule_changed, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert facts["enforcement"]["policy_changed_at"] == changed_at
    assert facts["enforcement"]["policy_version"] == 2


def test_pack_leaves_out_blocked_keys(flow: Flow, acme: Member, clock: ManualClock) -> None:
    _org_with_members(flow, acme, clock)
    svc = runtime.services()
    # The admin's security key was flagged as a suspected clone, which blocks it.
    UserModel(acme.org_id, acme.user_id).update(
        actions=[
            UserModel.active_factors["f_cloned"].set(
                {"type": "webauthn", "label": "Key", "blocked": True}
            )
        ]
    )
    org = svc.store.get_org("acme")
    assert org is not None

    facts = evidence.build_pack(svc, org, open_findings=[]).as_json()["facts"]

    assert facts["methods"]["members_by_method"] == {"totp": 2}
    assert facts["methods"]["phishing_resistant_share"] == 0.0
    assert facts["enrollment"]["by_role"]["admin"]["enrolled"] == 0
    assert facts["enrollment"]["by_status"]["grace"] == 3


def test_pack_reports_tampered_trail(flow: Flow, acme: Member, clock: ManualClock) -> None:
    _org_with_members(flow, acme, clock)
    svc = runtime.services()
    [first, *_] = list(AuditModel.query("acme"))
    first.delete()
    org = svc.store.get_org("acme")
    assert org is not None

    integrity = evidence.build_pack(svc, org, open_findings=[]).as_json()["facts"][
        "audit_integrity"
    ]

    assert integrity["valid"] is False
    assert integrity["deleted"] == 1


def test_pack_round_trips_through_s3(flow: Flow, acme: Member, clock: ManualClock) -> None:
    _org_with_members(flow, acme, clock)
    svc = runtime.services()
    org = svc.store.get_org("acme")
    assert org is not None
    pack = evidence.build_pack(svc, org, open_findings=[])

    key = svc.evidence_store.put("acme", "2027-01-15T11-05-00Z", pack.as_json(), pack.markdown())

    assert key == "acme/2027-01-15T11-05-00Z.json"
    assert json.loads(svc.evidence_store.latest("acme", "json")) == pack.as_json()
    markdown = svc.evidence_store.latest("acme", "md").decode()
    assert markdown.startswith("# MFA evidence for org `acme`")
    for _framework, title, _facts in evidence.CONTROLS.values():
        assert title in markdown


def test_scan_writes_a_pack_daily(
    flow: Flow, acme: Member, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    from mfa_core.cso import scan  # noqa: PLC0415 - as the CLI imports it

    _org_with_members(flow, acme, clock)
    svc = runtime.services()

    [first] = scan.scan_all(svc, org_id="acme")
    clock.advance(HOUR)
    [same_day] = scan.scan_all(svc, org_id="acme")
    clock.advance(DAY)
    [next_day] = scan.scan_all(svc, org_id="acme")

    assert first.evidence_key is not None
    assert same_day.evidence_key is None
    assert next_day.evidence_key is not None
    capsys.readouterr()  # the scan's logs
    assert cli.main(["cso", "evidence", "--org-id", "acme"]) == 0
    pack = json.loads(capsys.readouterr().out)
    assert pack["generated_at"] == "2027-01-16T12:05:00Z"
    assert pack["facts"]["open_findings"]["total"] >= 2  # the two viewers are not enrolled
    assert cli.main(["cso", "evidence", "--org-id", "acme", "--format", "md", "--new"]) == 0
    assert "# MFA evidence for org `acme`" in capsys.readouterr().out
    assert cli.main(["cso", "evidence", "--org-id", "nobody"]) == 2


# The errors a pack's reads and writes can raise: ours, DynamoDB's through pynamodb (a query
# of the audit trail that timed out, say) and boto3's.
PACK_FAILURES = [
    DependencyFailed("Storing the evidence pack failed."),
    PynamoDBException("Read timed out."),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
]


@pytest.mark.parametrize("failure", PACK_FAILURES, ids=lambda error: type(error).__name__)
def test_failed_pack_does_not_stop_scan(
    flow: Flow,
    acme: Member,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    from mfa_core.cso import scan  # noqa: PLC0415 - as the CLI imports it

    _org_with_members(flow, acme, clock)
    svc = runtime.services()

    def unavailable(*args: object, **kwargs: object) -> str:
        raise failure

    monkeypatch.setattr(svc.evidence_store, "put", unavailable)
    [first] = scan.scan_all(svc, org_id="acme")
    clock.advance(HOUR)
    [second] = scan.scan_all(svc, org_id="acme")

    assert first.evidence_key is None
    assert first.events_read > 0
    # The first run's position was saved, so its events are not read again.
    assert second.events_read == 0
