"""Amazon SNS: text messages sent straight to a phone number, and security notifications
published to a topic."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from mfa_core.errors import ConfigurationError, DependencyFailed

logger = Logger(child=True)

# Sender IDs as the SNS guide to publishing SMS defines them: 3 to 11 letters and digits, at
# least one of them a letter.
_SENDER_ID = re.compile(r"(?=[0-9]*[A-Za-z])[A-Za-z0-9]{3,11}")


class SmsSender(Protocol):
    def send(self, *, phone_number: str, message: str) -> str:
        """Send `message` to `phone_number` (E.164); return the provider's message id."""
        ...


class SnsSmsSender:
    """Sender of transactional SMS through SNS Publish.

    `client_factory` returns an SNS client and is called on each send, so the client is built
    only when a code is actually sent. `sender_id` is the alphanumeric sender shown on the
    phone in countries that support one; None leaves the choice to SNS.
    """

    def __init__(self, client_factory: Callable[[], Any], *, sender_id: str | None) -> None:
        if sender_id is not None and not _SENDER_ID.fullmatch(sender_id):
            raise ConfigurationError(
                "the SMS sender id is invalid: use 3 to 11 letters and digits, one or more of "
                "them letters"
            )
        self._client_factory = client_factory
        self._attributes: dict[str, dict[str, str]] = {
            # Transactional: SNS optimizes delivery for reliability rather than for cost.
            "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"},
        }
        if sender_id is not None:
            self._attributes["AWS.SNS.SMS.SenderID"] = {
                "DataType": "String",
                "StringValue": sender_id,
            }

    def send(self, *, phone_number: str, message: str) -> str:
        """Publish `message` to `phone_number`; return SNS's message id.

        Raises DependencyFailed when SNS or the connection to it fails. The message carries a
        one-time code and SNS's InvalidParameter error repeats the number, so only the error
        code is logged and the SNS error is not chained to the raised one.
        """
        try:
            response = self._client_factory().publish(
                PhoneNumber=phone_number,
                Message=message,
                MessageAttributes=self._attributes,
            )
        except ClientError as exc:
            error_code = str(exc.response.get("Error", {}).get("Code") or "unknown")
        except BotoCoreError as exc:
            error_code = type(exc).__name__
        else:
            return str(response["MessageId"])

        logger.error("SMS send failed", extra={"error_code": error_code})
        # Raised after the except blocks, so a traceback logged further up cannot print the
        # SNS error's text.
        raise DependencyFailed("Sending the SMS failed. Retry the request.")


class SecurityNotifier:
    """Publisher of security notifications to the SNS topic that the org's responders read.

    `topic_arn` None (no topic configured) logs the notification's kind only. A failed publish
    is logged and dropped: the notification follows a decision that is already made and
    audited, and must not change the response.
    """

    def __init__(self, client_factory: Callable[[], Any], *, topic_arn: str | None) -> None:
        self._client_factory = client_factory
        self._topic_arn = topic_arn

    def login_blocked(self, *, user: Any, signals: tuple[str, ...], country: str | None) -> None:
        """Tell responders that a login of `user` was blocked for its location."""
        # NOTE: one message per blocked attempt, not throttled: someone who holds the password
        # can send responders many messages.
        self._publish(
            "login.blocked",
            {
                "org_id": user.org_id,
                "user_id": user.user_id,
                "signals": list(signals),
                "country": country,
            },
        )

    def mfa_reset(self, *, org_id: str, user_id: str, reset_id: str) -> None:
        """Tell the user, through the topic's subscribers, that admins reset their MFA."""
        self._publish("mfa.reset", {"org_id": org_id, "user_id": user_id, "reset_id": reset_id})

    def finding(self, summary: dict[str, Any]) -> None:
        """Tell responders about a new finding of the security scan (mfa_core.cso.scan.notify)."""
        self._publish("cso.finding", summary)

    def findings_summary(self, *, org_id: str, severities: dict[str, int]) -> None:
        """Tell responders how many more new findings, by severity, the scan of an org opened
        than it sent messages for."""
        self._publish("cso.findings_summary", {"org_id": org_id, "severities": severities})

    def _publish(self, kind: str, details: dict[str, Any]) -> None:
        if self._topic_arn is None:
            logger.info("No security topic configured; notification not sent", extra={"kind": kind})
            return
        message = json.dumps({"kind": kind, **details})
        try:
            self._client_factory().publish(
                TopicArn=self._topic_arn,
                Subject=f"MFA security notification: {kind}",
                Message=message,
                MessageAttributes={"kind": {"DataType": "String", "StringValue": kind}},
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "Security notification failed", extra={"kind": kind, "error": type(exc).__name__}
            )
