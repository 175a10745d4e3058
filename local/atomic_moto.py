"""Make moto's DynamoDB apply each request atomically, as DynamoDB does.

moto 5 checks a TransactWriteItems' conditions and then applies its writes without a lock, so
two concurrent transactions can both pass a condition that only one of them should. DynamoDB
makes every request atomic and isolated, and the service relies on that for single use and
lockout counting. This module serializes moto's DynamoDB operations behind one lock, in this
process's moto server; it changes nothing else about moto.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

_OPERATIONS = (
    "put_item",
    "get_item",
    "update_item",
    "delete_item",
    "query",
    "scan",
    "transact_write_items",
)
_lock = threading.RLock()
_MARK = "_serialized_by_local_stack"


def serialize_dynamodb() -> None:
    """Wrap moto's DynamoDB backend operations in one reentrant lock; safe to call again."""
    for name in _OPERATIONS:
        original = getattr(DynamoDBBackend, name)
        if getattr(original, _MARK, False):
            continue
        setattr(DynamoDBBackend, name, _serialized(original))


def _serialized(operation: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(operation)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return operation(*args, **kwargs)

    setattr(locked, _MARK, True)
    return locked
