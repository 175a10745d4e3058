"""Security metrics as CloudWatch embedded metric format (EMF) lines, through Powertools Metrics.

Services count outcomes with `count`; each handler calls `flush` once per invocation, which
prints the EMF line only when something was counted. The metrics have no org or user
dimension: those stay in the logs and the audit trail, and would make a metric per tenant.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(child=True)

# template.yaml sets the namespace; the default covers code that imports this module first.
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "AgentConsoleMfa")

LOGIN_SUCCEEDED = "LoginSucceeded"
LOGIN_FAILED = "LoginFailed"
MFA_VERIFIED = "MfaVerified"
MFA_FAILED = "MfaFailed"
MFA_CODE_REPLAYED = "MfaCodeReplayed"
ACCOUNT_LOCKED = "AccountLocked"
FACTOR_ACTIVATED = "FactorActivated"
FACTOR_REMOVED = "FactorRemoved"
STEP_UP_VERIFIED = "StepUpVerified"
WEBAUTHN_CLONE_SUSPECTED = "WebAuthnCloneSuspected"
SMS_SENT = "SmsSent"
SMS_THROTTLED = "SmsThrottled"
REFRESH_TOKEN_REUSED = "RefreshTokenReused"  # noqa: S105 - a metric name
LOGIN_ANOMALY = "LoginAnomaly"
PASSWORD_CHANGE_FAILED = "PasswordChangeFailed"  # noqa: S105 - a metric name
# Lambda authorizer denials, by cause.
AUTHORIZER_TOKEN_REJECTED = "AuthorizerTokenRejected"  # noqa: S105 - a metric name
AUTHORIZER_SESSION_ENDED = "AuthorizerSessionEnded"
AUTHORIZER_STEP_UP_REQUIRED = "AuthorizerStepUpRequired"
SCAN_FINDING_NEW = "ScanFindingNew"


def count(name: str) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def flush() -> None:
    """Print the metrics counted in this invocation, if any, and start a new set.

    A failure here is logged and dropped, so that metrics never turn a response into a 500.
    """
    if not metrics.metric_set:
        return
    try:
        metrics.flush_metrics()
    except Exception:
        logger.exception("Publishing metrics failed")
        metrics.clear_metrics()
