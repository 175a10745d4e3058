"""Creation of AWS clients that honour the configured endpoint (moto locally, AWS in production)."""

from __future__ import annotations

from typing import Any

import botocore.session
from botocore.config import Config

from mfa_core.settings import Settings

_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})


def client(service: str, settings: Settings) -> Any:
    """Return a botocore client for `service`; botocore alone is lighter to import than boto3."""
    session = botocore.session.get_session()
    return session.create_client(
        service,
        region_name=settings.region,
        endpoint_url=settings.aws_endpoint_url,
        config=_CONFIG,
    )
