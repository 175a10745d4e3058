"""Creation of AWS clients that honour the configured endpoint (moto locally, AWS in production).

All clients of a process come from one botocore session, so the endpoint, partition and retry
data that botocore loads for the first client is reused by the others. botocore alone is also
lighter to import than boto3.
"""

from __future__ import annotations

import threading
from typing import Any

import botocore.session
from botocore.config import Config

from mfa_core.settings import Settings

_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"total_max_attempts": 3, "mode": "standard"},
    # Validation only repeats checks that the services make anyway, at a CPU cost per call.
    parameter_validation=False,
)
# SNS publishes are not idempotent: a retried publish whose first attempt was delivered after
# all would send the code twice, and count it once.
_SINGLE_ATTEMPT = _CONFIG.merge(Config(retries={"total_max_attempts": 1, "mode": "standard"}))
_lock = threading.Lock()
_session: botocore.session.Session | None = None


def client(service: str, settings: Settings, *, retry: bool = True) -> Any:
    """Return a new botocore client for `service` from the process-wide session.

    With `retry` False, a failed request is not sent again.
    """
    global _session  # noqa: PLW0603 - one botocore session per process, by design
    # Creating clients from one session is not thread-safe in botocore.
    with _lock:
        if _session is None:
            _session = botocore.session.get_session()
        return _session.create_client(
            service,
            region_name=settings.region,
            endpoint_url=settings.aws_endpoint_url,
            config=_CONFIG if retry else _SINGLE_ATTEMPT,
        )
