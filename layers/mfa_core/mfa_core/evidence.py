"""Compliance evidence: an org's MFA facts, measured, and the controls of each framework they
support, as JSON and as Markdown for an auditor.

A pack is built from the org's policy, its members (read once, a page at a time), the
deployment's lockout settings, a verification of the last day of the audit trail and the open
findings of the scheduled scan. Each control lists the facts that support it; the pack states
facts and does not claim compliance, which an auditor decides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mfa_core import audit_trail, dashboard, policy
from mfa_core.runtime import Services
from mfa_core.sso.connection import sso_connection
from mfa_core.store.models import OrgModel

FORMAT_VERSION = 1
# The audit trail is verified over the last day, which an hourly run covers 24 times over.
VERIFY_SECONDS = 24 * 3600
SEVERITIES = ("critical", "high", "medium", "low")

# Control -> (framework, title, the facts that support it).
CONTROLS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "SOC2-CC6.1": (
        "SOC 2",
        "CC6.1 Logical access security: MFA protects access to the console",
        ("enforcement", "enrollment", "methods", "sso", "audit_integrity"),
    ),
    "SOC2-CC6.2": (
        "SOC 2",
        "CC6.2 Users are registered and authorized before access is granted",
        ("enrollment", "enforcement", "open_findings"),
    ),
    "ISO27001-A.9.4.2": (
        "ISO/IEC 27001:2013",
        "A.9.4.2 Secure log-on procedures",
        ("enforcement", "lockout", "reauthentication"),
    ),
    "NIST800-63B-AAL2": (
        "NIST SP 800-63B",
        "AAL2: two distinct authentication factors",
        ("enrollment", "methods", "sso"),
    ),
    "NIST800-63B-AAL3": (
        "NIST SP 800-63B",
        "AAL3: a hardware-based, phishing-resistant authenticator",
        ("methods", "security_key_roles"),
    ),
    "PCI-DSS-8.3": (
        "PCI DSS v4.0",
        "8.3 Strong authentication for users, with lockout of repeated failures",
        ("enforcement", "enrollment", "lockout"),
    ),
}


@dataclass(frozen=True)
class EvidencePack:
    org_id: str
    generated_at: float
    facts: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "org_id": self.org_id,
            "generated_at": _iso(self.generated_at),
            "facts": self.facts,
            "controls": [
                {
                    "control": control,
                    "framework": framework,
                    "title": title,
                    "facts": list(fact_names),
                }
                for control, (framework, title, fact_names) in CONTROLS.items()
            ],
        }

    def markdown(self) -> str:
        return render_markdown(self.as_json())


def build_pack(
    svc: Services, org: OrgModel, *, open_findings: Sequence[Mapping[str, Any]]
) -> EvidencePack:
    """Measure the org's MFA facts now; `open_findings` are the scan's open findings."""
    now = svc.clock.now()
    org_policy = policy.mfa_policy(org)
    connection = sso_connection(org)
    summary = dashboard.summarize(svc, org.org_id, org_policy, now)
    members = summary["members"]
    with_key = summary["by_method"].get("webauthn", 0)
    report = audit_trail.verify(
        svc, org.org_id, start=max(float(org.created_at), now - VERIFY_SECONDS), end=now
    )
    by_severity = dict.fromkeys(SEVERITIES, 0)
    for finding in open_findings:
        severity = str(finding.get("severity"))
        by_severity[severity] = by_severity.get(severity, 0) + 1
    facts = {
        "enforcement": {
            "enforcement": org_policy.enforcement,
            "scope": org_policy.scope,
            "scope_roles": list(org_policy.scope_roles),
            "enforce_after": _iso(org_policy.enforce_after),
            "grace_days": org_policy.grace_days,
            "policy_version": org_policy.version,
            "policy_changed_at": _iso(org.policy_changed_at),
        },
        "reauthentication": {
            "reauthentication": org_policy.reauthentication,
            "step_up_max_age_minutes": org_policy.step_up_max_age_minutes,
            "max_sessions": org_policy.max_sessions,
        },
        "enrollment": {
            "members": members,
            "enrollment_rate": summary["enrollment_rate"],
            "by_status": summary["by_status"],
            "by_role": summary["by_role"],
        },
        "methods": {
            "allowed_methods": list(org_policy.allowed_methods),
            "sms_fallback_only": org_policy.sms_fallback_only,
            "members_by_method": summary["by_method"],
            "phishing_resistant_share": round(with_key / members, 4) if members else None,
        },
        "security_key_roles": list(org_policy.security_key_roles),
        # When the identity provider's MFA replaces ours, enrollment here can be low while
        # every login still has MFA, so the pack states the trust next to enrollment.
        "sso": {
            "protocol": connection.protocol if connection is not None else None,
            "trust_idp_mfa": org_policy.sso.trust_idp_mfa,
            "accepted_amr": list(org_policy.sso.accepted_amr),
            "accepted_acr": list(org_policy.sso.accepted_acr),
            "max_auth_age_minutes": org_policy.sso.max_auth_age_minutes,
        },
        "lockout": {
            "failed_attempts": svc.settings.lockout_threshold,
            "lockout_minutes": svc.settings.lockout_seconds // 60,
        },
        "audit_integrity": {
            "window_hours": VERIFY_SECONDS // 3600,
            "hours_sealed_and_checked": report.periods_checked,
            "valid": report.valid,
            "modified": len(report.modified),
            "deleted": len(report.deleted),
            "inserted": len(report.inserted),
            "broken_links": len(report.broken_links),
            "bad_signatures": len(report.bad_signatures),
            "unsealed_from": report.unsealed_from,
            "retention_days": org_policy.audit_retention_days,
        },
        "open_findings": {"total": len(open_findings), "by_severity": by_severity},
    }
    return EvidencePack(org.org_id, now, facts)


def render_markdown(pack: Mapping[str, Any]) -> str:
    """Render a pack's JSON as a Markdown report: the controls, then each fact as a table."""
    facts: Mapping[str, Any] = pack["facts"]
    lines = [
        f"# MFA evidence for org `{pack['org_id']}`",
        "",
        f"Generated {pack['generated_at']}. Each control lists the measured facts that support "
        "it; whether they satisfy the control is for the auditor to decide.",
        "",
        "| Control | Framework | Facts |",
        "| --- | --- | --- |",
    ]
    for control in pack["controls"]:
        names = ", ".join(f"[{name}](#{name.replace('_', '-')})" for name in control["facts"])
        lines.append(f"| {control['title']} | {control['framework']} | {names} |")
    for name, value in facts.items():
        lines += ["", f"## {name}", ""]
        if isinstance(value, Mapping):
            lines += ["| Fact | Value |", "| --- | --- |"]
            lines += [f"| {key} | {_cell(item)} |" for key, item in value.items()]
        else:
            lines.append(_cell(value))
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return str(text).replace("|", "\\|")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
