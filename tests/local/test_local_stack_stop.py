"""Stopping a LocalStack leaves the process as it found it."""

from __future__ import annotations

import os
import sys

from local.stack import LocalStack
from local.template import load_template

PREFIX = "mfa-test-stop"


def test_stop_restores_environment_and_path() -> None:
    layer_paths = {str(layer.python_path) for layer in load_template().layers}
    environment_before = dict(os.environ)
    path_before = list(sys.path)

    with LocalStack(name_prefix=PREFIX) as stack:
        assert os.environ["AWS_ENDPOINT_URL"] == stack.aws_endpoint_url
        assert layer_paths <= set(sys.path)

    assert dict(os.environ) == environment_before
    assert sys.path == path_before


def test_restart_after_stop() -> None:
    """A stop deletes the stack's resources, so the next stack can create them again."""
    with LocalStack(name_prefix=PREFIX) as first:
        first_tables = dict(first.table_names)
    with LocalStack(name_prefix=PREFIX) as second:
        assert second.table_names == first_tables
