"""Lazy loading of handler modules and the context object, without any server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.functions import LocalFunction
from local.template import FunctionSpec


@pytest.fixture
def function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFunction]:
    code_dir = tmp_path / "functions" / "probe"
    code_dir.mkdir(parents=True)
    (code_dir / "helpers_for_probe.py").write_text("SUFFIX = '!'\n", encoding="utf-8")
    (code_dir / "app.py").write_text(
        "import os\n"
        "from helpers_for_probe import SUFFIX\n"
        "GREETING = os.environ['PROBE_GREETING'] + SUFFIX\n"
        "def handler(event, context):\n"
        "    return {'greeting': GREETING, 'name': context.function_name, 'event': event}\n",
        encoding="utf-8",
    )
    monkeypatch.delenv("PROBE_GREETING", raising=False)
    spec = FunctionSpec(
        logical_id="ProbeFunction",
        code_uri=code_dir,
        handler="app.handler",
        environment={},
        routes=(),
        layer_ids=(),
        memory_size_mb=128,
        timeout_seconds=3,
    )
    local_function = LocalFunction(
        spec=spec,
        name="mfa-local-ProbeFunction",
        arn="arn:aws:lambda:us-east-1:123456789012:function:mfa-local-ProbeFunction",
        environment={"PROBE_GREETING": "hi"},
    )
    yield local_function
    sys.modules.pop(local_function.module_name, None)
    sys.modules.pop("helpers_for_probe", None)
    os.environ.pop("PROBE_GREETING", None)


def test_module_name_is_unique_per_folder(function: LocalFunction) -> None:
    assert function.module_name == "mfa_fn_probe_app"


def test_module_loads_lazily_once(function: LocalFunction) -> None:
    assert function.module_name not in sys.modules

    first = function.handler()
    second = function.handler()

    assert first is second
    assert function.module_name in sys.modules


def test_environment_applied_before_import(function: LocalFunction) -> None:
    result = function.invoke({"k": "v"})

    assert result == {"greeting": "hi!", "name": "mfa-local-ProbeFunction", "event": {"k": "v"}}
    assert os.environ["PROBE_GREETING"] == "hi"


def test_code_folder_not_left_on_path(function: LocalFunction) -> None:
    function.handler()

    assert str(function.spec.code_uri) not in sys.path


def test_context_counts_down(function: LocalFunction) -> None:
    context = function.new_context("request-1")

    assert context.aws_request_id == "request-1"
    assert context.memory_limit_in_mb == 128
    assert 0 < context.get_remaining_time_in_millis() <= 3000
    assert context.log_group_name == "/aws/lambda/mfa-local-ProbeFunction"


def test_missing_module_raises(function: LocalFunction) -> None:
    (function.spec.code_uri / "app.py").unlink()

    with pytest.raises(FileNotFoundError, match="ProbeFunction"):
        function.handler()
