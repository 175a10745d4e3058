"""Scheduled and on demand: the security scan of every org, or of the org the event names."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import telemetry
from mfa_core.cso import scan
from mfa_core.errors import InvalidInput
from mfa_core.identity import normalize_org_id
from mfa_core.runtime import services

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Scan every org, or only `org_id` when a direct invocation's event names one.

    The EventBridge schedule's event has no `org_id`.
    """
    try:
        org_id = event.get("org_id") if isinstance(event, dict) else None
        if org_id is not None and not isinstance(org_id, str):
            raise InvalidInput("Use a string org_id.", field="org_id")
        results = scan.scan_all(
            services(), org_id=normalize_org_id(org_id) if org_id is not None else None
        )
        new = sum(len(result.new) for result in results)
        logger.info("Security scan finished", extra={"orgs": len(results), "new_findings": new})
        return {"orgs": [result.as_json() for result in results]}
    finally:
        telemetry.flush()
