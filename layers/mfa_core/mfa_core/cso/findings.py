"""The scan's findings for org admins: filtered and paged."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mfa_core import members
from mfa_core.cso import rules
from mfa_core.cso.scan import summary
from mfa_core.errors import InvalidInput
from mfa_core.runtime import Services
from mfa_core.store.models import FindingModel
from mfa_core.tokens import Principal

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR = 512
PARAMETERS = frozenset({"status", "severity", "rule", "limit", "next"})


@dataclass(frozen=True, kw_only=True)
class FindingsQuery:
    status: str | None = None
    severity: str | None = None
    rule: str | None = None
    limit: int = DEFAULT_LIMIT
    after: str | None = None  # the last finding_id of the previous page


def parse_query(params: Mapping[str, str]) -> FindingsQuery:
    """Validate the query string; a bad parameter raises InvalidInput naming it."""
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise InvalidInput(
            f"Unknown query parameter `{unknown[0]}`; use {', '.join(sorted(PARAMETERS))}.",
            field=unknown[0],
        )
    for name, allowed in (
        ("status", rules.STATUSES),
        ("severity", rules.SEVERITIES),
        ("rule", rules.RULES),
    ):
        if name in params and params[name] not in allowed:
            raise InvalidInput(f"Use a {name} of: {', '.join(allowed)}.", field=name)

    limit = DEFAULT_LIMIT
    if "limit" in params:
        text = params["limit"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
            raise InvalidInput(f"Use a limit from 1 to {MAX_LIMIT}.", field="limit")
        limit = int(text)

    rule = params.get("rule")
    return FindingsQuery(
        status=params.get("status"),
        severity=params.get("severity"),
        rule=rule,
        limit=limit,
        after=_decode_cursor(params["next"], rule=rule) if "next" in params else None,
    )


def list_findings(
    svc: Services, principal: Principal, org_id: str, params: Mapping[str, str]
) -> dict[str, Any]:
    """Return one page of the org's findings in finding-id order, for one of its admins.

    The caller is checked before the query string, so that a caller from another org or
    without the admin role learns nothing from the validation of its parameters.
    """
    members.require_admin(svc, principal, org_id)
    query = parse_query(params)
    items, following = svc.scan_store.list_findings(
        org_id,
        rule=query.rule,
        status=query.status,
        severity=query.severity,
        after=query.after,
        limit=query.limit,
    )
    return {
        "findings": [finding_json(item) for item in items],
        "next": _encode_cursor(following) if following is not None else None,
    }


def finding_json(finding: FindingModel) -> dict[str, Any]:
    return {
        **summary(finding),
        "resolved_at": None if finding.resolved_at is None else float(finding.resolved_at),
    }


def _encode_cursor(finding_id: str) -> str:
    document = json.dumps({"after": finding_id}).encode()
    return base64.urlsafe_b64encode(document).decode().rstrip("=")


def _decode_cursor(cursor: str, *, rule: str | None) -> str:
    """Return the finding id that a `next` cursor names.

    The id must be of a known rule, and of the `rule` filter when there is one. DynamoDB
    rejects a start key outside the query's key range, so such a cursor would otherwise end
    in a 503 instead of a 400 that names it.
    """
    invalid = InvalidInput("Use the `next` value of the previous page unchanged.", field="next")
    if len(cursor) > MAX_CURSOR:
        raise invalid
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        finding_id = document["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError) as exc:
        raise invalid from exc
    if not isinstance(finding_id, str) or not (finding_id.isascii() and finding_id.isprintable()):
        raise invalid
    finding_rule = finding_id.split("#", 1)[0]
    if finding_rule not in rules.RULES or (rule is not None and finding_rule != rule):
        raise invalid
    return finding_id
