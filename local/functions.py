"""Load a function's handler module on first use and invoke it with a Lambda-like context."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from local.template import FunctionSpec

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]

# Importing a module changes sys.path and sys.modules, which all threads share.
_IMPORT_LOCK = threading.Lock()


@dataclass
class LambdaContext:
    """The attributes and method of the context object that the Python Lambda runtime passes."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_monotonic: float
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline_monotonic - time.monotonic()) * 1000))


@dataclass
class LocalFunction:
    """One function of the template, with its physical name and resolved environment."""

    spec: FunctionSpec
    name: str
    arn: str
    environment: Mapping[str, str]
    _handler: Handler | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # Lambda names a log stream after the day its execution environment started.
    log_stream_name: str = field(
        default_factory=lambda: f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}",
        init=False,
    )

    @property
    def module_name(self) -> str:
        """Unique name in sys.modules, e.g. `mfa_fn_session_app` for functions/session/app.py."""
        raw = f"mfa_fn_{self.spec.code_uri.name}_{self.spec.handler_module}"
        return re.sub(r"\W", "_", raw)

    def handler(self) -> Handler:
        """Return the handler, importing its module on the first call only."""
        with self._lock:
            if self._handler is None:
                self._handler = self._load_handler()
            return self._handler

    def invoke(self, event: dict[str, Any], request_id: str | None = None) -> Any:
        handler = self.handler()
        return handler(event, self.new_context(request_id or str(uuid.uuid4())))

    def new_context(self, request_id: str) -> LambdaContext:
        # NOTE: the deadline is only reported. A handler that runs past Timeout is not stopped.
        deadline = time.monotonic() + self.spec.timeout_seconds
        return LambdaContext(
            function_name=self.name,
            function_version="$LATEST",
            invoked_function_arn=self.arn,
            memory_limit_in_mb=self.spec.memory_size_mb,
            aws_request_id=request_id,
            log_group_name=f"/aws/lambda/{self.name}",
            log_stream_name=self.log_stream_name,
            deadline_monotonic=deadline,
        )

    def _load_handler(self) -> Handler:
        path = self.spec.module_path
        if not path.is_file():
            raise FileNotFoundError(f"handler module of {self.spec.logical_id} not found: {path}")

        # Module-level code reads its settings from the environment, as it does in Lambda.
        os.environ.update(self.environment)
        module_spec = importlib.util.spec_from_file_location(self.module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)

        with _IMPORT_LOCK:
            sys.modules[self.module_name] = module
            code_dir = str(self.spec.code_uri)
            # Lambda puts the code folder first on sys.path, so the handler can import its siblings.
            # NOTE: such sibling modules land in sys.modules under their plain names, so two
            # functions with a sibling module of the same name would share the first one loaded.
            sys.path.insert(0, code_dir)
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[self.module_name]
                raise
            finally:
                sys.path.remove(code_dir)

        handler = getattr(module, self.spec.handler_function, None)
        if not callable(handler):
            raise AttributeError(f"{path} has no function {self.spec.handler_function}")
        logger.info(
            "loaded function",
            extra={"function": self.spec.logical_id, "module_name": self.module_name},
        )
        return cast(Handler, handler)
