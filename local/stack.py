"""Start moto, create the template's resources in it, and serve the HTTP API in front of them."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from moto.server import ThreadedMotoServer

from local.atomic_moto import serialize_dynamodb
from local.functions import LocalFunction
from local.gateway import LOOPBACK_HOST, ApiGateway, build_gateway
from local.resources import (
    DEFAULT_NAME_PREFIX,
    DEFAULT_REGION,
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    ProvisionedStack,
    delete_resources,
    empty_tables,
    provision,
)
from local.template import DEFAULT_TEMPLATE_PATH, Template, load_template

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# The reference web page, served by the gateway on the API's own origin.
DEFAULT_WEB_DIRECTORY = Path(__file__).resolve().parent / "web"

# Template parameters that feed the WebAuthn variables, and those variables.
WEBAUTHN_RP_ID_PARAMETER = "WebAuthnRpId"
WEBAUTHN_ORIGINS_PARAMETER = "WebAuthnOrigins"
WEBAUTHN_RP_ID_VARIABLE = "MFA_WEBAUTHN_RP_ID"
WEBAUTHN_ORIGINS_VARIABLE = "MFA_WEBAUTHN_ORIGINS"
# The template parameter and variable of the URL that SSO callbacks start with.
PUBLIC_BASE_URL_PARAMETER = "PublicBaseUrl"
PUBLIC_BASE_URL_VARIABLE = "MFA_PUBLIC_BASE_URL"


class _EnvironmentPatch:
    """Changes to os.environ that `restore` undoes when the stack stops."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            self._saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def remove(self, names: list[str]) -> None:
        for name in names:
            if name in os.environ:
                self._saved.setdefault(name, os.environ.get(name))
                del os.environ[name]

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()


class LocalStack:
    """The whole service on this machine: moto for AWS, an HTTP server for API Gateway.

    Use it as a context manager, or call `start()` and `stop()`. While it runs, os.environ contains
    fake credentials, AWS_ENDPOINT_URL pointing at moto, and every function's resolved
    environment, so boto3 clients created in this process reach moto and nothing else.

    The gateway also serves the files of `web_directory` (None turns that off). Unless
    `parameter_overrides` sets WebAuthnRpId or WebAuthnOrigins, the functions get the RP ID
    `localhost` and the origin `http://localhost:<api port>`. So a browser must open the page on
    `localhost` (see `page_url`), because WebAuthn does not accept an IP address as RP ID.
    Unless it sets PublicBaseUrl, SSO callbacks go to `http://localhost:<api port>` as well.

    `environment` adds variables for every function, over the template's. `source_ip_header`
    is passed to the gateway (see `ApiGateway`), for tests that sign in from public addresses.

    moto keeps its state per process, not per server, so all stacks in one process share it.
    `stop()` deletes this stack's resources, so a later stack can reuse the names. Stacks that
    run at the same time in one process need distinct `name_prefix` values.
    """

    def __init__(
        self,
        template_path: Path = DEFAULT_TEMPLATE_PATH,
        *,
        api_port: int = 0,
        moto_port: int = 0,
        name_prefix: str = DEFAULT_NAME_PREFIX,
        region: str = DEFAULT_REGION,
        parameter_overrides: Mapping[str, str] | None = None,
        web_directory: Path | None = DEFAULT_WEB_DIRECTORY,
        source_ip_header: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.template_path = template_path
        self.source_ip_header = source_ip_header
        self.extra_environment = dict(environment or {})
        self.api_port = api_port
        self.moto_port = moto_port
        self.name_prefix = name_prefix
        self.region = region
        self.parameter_overrides = dict(parameter_overrides or {})
        self.web_directory = web_directory
        self._environment = _EnvironmentPatch()
        self._added_sys_paths: list[str] = []
        self._moto: ThreadedMotoServer | None = None
        self._gateway: ApiGateway | None = None
        self._template: Template | None = None
        self._provisioned: ProvisionedStack | None = None
        self._aws_endpoint_url: str | None = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        return self._require(self._gateway, "gateway").url

    @property
    def page_url(self) -> str:
        """URL of the web page on the host name that WebAuthn accepts, e.g. http://localhost:3000/."""
        return f"http://localhost:{self._require(self._gateway, 'gateway').port}/"

    @property
    def aws_endpoint_url(self) -> str:
        return self._require(self._aws_endpoint_url, "moto server")

    @property
    def template(self) -> Template:
        return self._require(self._template, "template")

    @property
    def provisioned(self) -> ProvisionedStack:
        return self._require(self._provisioned, "resources")

    @property
    def table_names(self) -> Mapping[str, str]:
        """Physical table name by logical id, e.g. {"UsersTable": "mfa-local-UsersTable"}."""
        return self.provisioned.table_names

    def function(self, logical_id: str) -> LocalFunction:
        """Return one of the template's functions, to invoke it as a schedule would."""
        return self._require(self._gateway, "gateway").functions[logical_id]

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self.web_directory is not None and not self.web_directory.is_dir():
            raise NotADirectoryError(f"static directory not found: {self.web_directory}")
        self._template = load_template(self.template_path)
        self._isolate_aws_configuration()

        serialize_dynamodb()
        self._moto = ThreadedMotoServer(
            ip_address=LOOPBACK_HOST, port=self.moto_port, verbose=False
        )
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self._aws_endpoint_url = f"http://{host}:{port}"
        self._environment.set({"AWS_ENDPOINT_URL": self._aws_endpoint_url})
        logger.info("moto server started", extra={"url": self._aws_endpoint_url})

        self._provisioned = provision(
            self._template,
            self._aws_endpoint_url,
            name_prefix=self.name_prefix,
            region=self.region,
            parameter_overrides=self.parameter_overrides,
        )
        self._apply_function_environment(self._provisioned)
        self._add_layer_paths(self._template)

        self._gateway = build_gateway(
            self._template,
            self._provisioned,
            port=self.api_port,
            static_directory=self.web_directory,
            source_ip_header=self.source_ip_header,
        )
        # build_gateway has bound the port, so the origin is set before the first request.
        self._apply_webauthn_environment(self._gateway)
        self._gateway.start()

    def stop(self) -> None:
        """Stop the gateway and moto and undo the changes to os.environ and sys.path."""
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        if self._moto is not None:
            if self._template is not None and self._provisioned is not None:
                delete_resources(self._template, self._provisioned)
            self._moto.stop()
            # moto 5.2's stop() shuts the server down but leaves its listening socket open.
            if self._moto._server is not None:
                self._moto._server.server_close()
            self._moto = None
            logger.info("moto server stopped", extra={"url": self._aws_endpoint_url})
        for path in self._added_sys_paths:
            if path in sys.path:
                sys.path.remove(path)
        self._added_sys_paths.clear()
        self._environment.restore()

    def reset_data(self) -> int:
        """Delete every item in every table, keeping the tables, keys, secret and parameter.

        Returns the number of deleted items.
        """
        return empty_tables(self.aws_endpoint_url, self.table_names, self.region)

    def _isolate_aws_configuration(self) -> None:
        # Fake credentials, and no shared config or credentials files, so that no real account's
        # settings can reach a client that this process creates.
        self._environment.remove(
            [
                name
                for name in os.environ
                if name.startswith("AWS_ENDPOINT_URL_")
                or name in {"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"}
            ]
        )
        self._environment.set(
            {
                "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            }
        )

    def _apply_function_environment(self, provisioned: ProvisionedStack) -> None:
        # All functions share this process, so their variables share one os.environ.
        merged: dict[str, str] = {}
        for function_id, environment in provisioned.environments.items():
            for name, value in environment.items():
                if name in merged and merged[name] != value:
                    logger.warning(
                        "functions set different values for one variable, and the last one wins",
                        extra={"variable": name, "function": function_id},
                    )
                merged[name] = value
        merged.update(self.extra_environment)
        self._environment.set(merged)

    def _apply_webauthn_environment(self, gateway: ApiGateway) -> None:
        values: dict[str, str] = {}
        if WEBAUTHN_RP_ID_PARAMETER not in self.parameter_overrides:
            values[WEBAUTHN_RP_ID_VARIABLE] = "localhost"
        if WEBAUTHN_ORIGINS_PARAMETER not in self.parameter_overrides:
            values[WEBAUTHN_ORIGINS_VARIABLE] = f"http://localhost:{gateway.port}"
        if PUBLIC_BASE_URL_PARAMETER not in self.parameter_overrides:
            values[PUBLIC_BASE_URL_VARIABLE] = f"http://localhost:{gateway.port}"
        if not values:
            return
        self._environment.set(values)
        # A function copies its environment into os.environ when its module is first loaded,
        # so its own copy must carry the same values.
        for function in gateway.functions.values():
            function.environment = {**function.environment, **values}

    def _add_layer_paths(self, template: Template) -> None:
        for layer in template.layers:
            path = str(layer.python_path)
            if path not in sys.path:
                sys.path.insert(0, path)
                self._added_sys_paths.append(path)

    @staticmethod
    def _require(value: _T | None, name: str) -> _T:
        if value is None:
            raise RuntimeError(f"the local stack is not running: no {name}")
        return value
