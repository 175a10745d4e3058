"""Repositories: the only code that talks to DynamoDB."""

from __future__ import annotations

from typing import Any

from pynamodb.connection import Connection
from pynamodb.models import Model

from mfa_core.settings import Settings
from mfa_core.store import models


def bind(settings: Settings, client: Any) -> Connection:
    """Point every model at its configured table, and all of them at one DynamoDB client.

    Returns the low-level connection used for transactions that span tables.
    """
    for setting_name, model in models.ALL_MODELS.items():
        model.Meta.table_name = getattr(settings, setting_name)
    for model, setting_name in models.SHARED_TABLE_MODELS.items():
        model.Meta.table_name = getattr(settings, setting_name)
    every_model: list[type[Model]] = [*models.ALL_MODELS.values(), *models.SHARED_TABLE_MODELS]
    for model in every_model:
        model.Meta.region = settings.region
        model.Meta.host = settings.aws_endpoint_url
        model._connection = None
        _share_client(model._get_connection().connection, client)
    connection = Connection(region=settings.region, host=settings.aws_endpoint_url)
    _share_client(connection, client)
    return connection


def _share_client(connection: Connection, client: Any) -> None:
    # PynamoDB would otherwise build a botocore session and client for each model on first use,
    # each with its own connection pool: seven clients where one serves every table. It keeps
    # a client it finds in `_client` (PynamoDB 6.1), as long as that client has credentials.
    connection._client = client
