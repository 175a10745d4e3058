"""Amazon EventBridge: application events on the service's own bus, such as new scan findings."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

logger = Logger(child=True)

# PutEvents accepts at most 10 entries per request.
MAX_ENTRIES = 10


class EventPublisher:
    """Publisher of events with one source to one bus; `bus_name` None logs a count only.

    A failed publish is logged and dropped, like the SNS notifications: the findings are
    stored before they are published, and the findings API lists them either way.
    """

    def __init__(
        self, client_factory: Callable[[], Any], *, bus_name: str | None, source: str
    ) -> None:
        self._client_factory = client_factory
        self._bus_name = bus_name
        self._source = source

    def publish(self, detail_type: str, details: Sequence[dict[str, Any]]) -> int:
        """Put one event per item of `details`; return how many EventBridge accepted."""
        if self._bus_name is None:
            logger.info("No event bus configured; events not sent", extra={"events": len(details)})
            return 0
        accepted = 0
        for start in range(0, len(details), MAX_ENTRIES):
            entries = [
                {
                    "Source": self._source,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": self._bus_name,
                }
                for detail in details[start : start + MAX_ENTRIES]
            ]
            try:
                response = self._client_factory().put_events(Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                logger.warning(
                    "Publishing events failed",
                    extra={"events": len(entries), "error": type(exc).__name__},
                )
                continue
            failed = int(response.get("FailedEntryCount", 0))
            if failed:
                logger.warning("EventBridge rejected events", extra={"events": failed})
            accepted += len(entries) - failed
        return accepted
