"""Repositories: the only code that talks to DynamoDB."""

from __future__ import annotations

from pynamodb.connection import Connection
from pynamodb.models import Model

from mfa_core.settings import Settings
from mfa_core.store import models


def bind(settings: Settings) -> Connection:
    """Point every model at its configured table, region and endpoint.

    Returns the low-level connection used for transactions that span tables.
    """
    for setting_name, model in models.ALL_MODELS.items():
        model.Meta.table_name = getattr(settings, setting_name)
    models.EmailClaimModel.Meta.table_name = settings.users_table
    every_model: list[type[Model]] = [*models.ALL_MODELS.values(), models.EmailClaimModel]
    for model in every_model:
        model.Meta.region = settings.region
        model.Meta.host = settings.aws_endpoint_url
        model._connection = None
    return Connection(region=settings.region, host=settings.aws_endpoint_url, max_retry_attempts=2)
