"""The Lambda authorizer of the control plane's HTTP APIs (payload format 2.0, simple responses)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import authorizer, telemetry
from mfa_core.runtime import services

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return authorizer.authorize(services(), event)
    except Exception:
        # API Gateway returns 500 to the client when the authorizer raises, and calls no backend.
        logger.exception("Authorizer failed")
        raise
    finally:
        telemetry.flush()
