"""Scheduled: seal each org's complete hours of audit events with signed digests."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import audit_trail, telemetry
from mfa_core.runtime import services

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        sealed = audit_trail.seal_all(services())
        logger.info("Audit sealing finished", extra={"digests_written": sealed})
        return {"digests_written": sealed}
    finally:
        telemetry.flush()
