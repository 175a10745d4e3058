"""HTTP server in place of API Gateway: routes each request to the template's function, after
the route's Lambda authorizer, if it has one, allows it."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from local.events import (
    ApiSettings,
    HttpRequest,
    HttpResponse,
    InvalidFunctionResponse,
    build_authorizer_event,
    build_event,
    message_response,
    problem_response,
    response_from_result,
    simple_authorizer_result,
)
from local.functions import LocalFunction
from local.resources import DEFAULT_API_ID, ProvisionedStack
from local.routing import RouteTable, RouteTarget
from local.static import StaticFiles
from local.template import AuthorizerSpec, Template

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"

# API Gateway rejects request bodies over 10 MiB with 413.
# NOTE: Lambda accepts a synchronous event of at most 6 MB. So in AWS a text body over about 6 MB,
# or a binary body over about 4.5 MB (before base64), fails at Lambda. This server passes it on.
MAX_REQUEST_BODY_BYTES = 10 * 1024 * 1024


class ApiGateway:
    """HTTP API on a loopback port. With `port=0` the OS picks a free port, which `url` shows.

    With `static_directory`, a GET or HEAD that matches no route is served from the files
    directly in that directory (see `local.static`), and `/` serves its index.html.

    With `source_ip_header`, a request that carries that header gets its value as the source
    address (`requestContext.http.sourceIp`) in place of the socket's, and the header is not
    passed on. Tests use it to sign in "from" public addresses; API Gateway has no such
    setting, so never set it for a gateway that anyone else can reach.
    """

    def __init__(
        self,
        routes: RouteTable,
        functions: Mapping[str, LocalFunction],
        api: ApiSettings,
        *,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        max_body_bytes: int = MAX_REQUEST_BODY_BYTES,
        static_directory: Path | None = None,
        source_ip_header: str | None = None,
    ) -> None:
        self.routes = routes
        self.source_ip_header = source_ip_header.lower() if source_ip_header else None
        self.functions = functions
        self.api = api
        self.max_body_bytes = max_body_bytes
        self.static_files = StaticFiles(static_directory) if static_directory else None
        self._server = _GatewayServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Serve requests on a background thread."""
        # A short poll interval makes stop() return quickly; the cost is a few idle wake-ups.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="api-gateway",
            daemon=True,
        )
        self._thread.start()
        logger.info("API gateway started", extra={"url": self.url})

    def stop(self) -> None:
        """Stop serving and close the listening socket. Safe to call from any other thread."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        logger.info("API gateway stopped", extra={"url": self.url})

    def handle(self, request: HttpRequest, request_id: str) -> HttpResponse:
        """Route `request`, invoke its function, and return the HTTP response."""
        lookup = self.routes.lookup(request.method, request.raw_path)
        if lookup.match is None:
            if self.static_files is not None:
                static = self.static_files.response(request.method, request.raw_path)
                if static is not None:
                    return static
            if lookup.allowed_methods:
                allowed = ", ".join(lookup.allowed_methods)
                return problem_response(
                    405,
                    "Method Not Allowed",
                    f"{request.method} is not allowed on {request.raw_path}; allowed: {allowed}.",
                    "method_not_allowed",
                    [("Allow", allowed)],
                )
            return problem_response(
                404,
                "Not Found",
                f"No route matches {request.method} {request.raw_path}.",
                "route_not_found",
            )

        target = lookup.match.target
        function = self.functions[target.function_id]
        event = build_event(request, lookup.match, self.api, request_id=request_id)
        authorizer = target.route.authorizer
        if authorizer is not None:
            denied = self._authorize(authorizer, request, event, request_id)
            if denied is not None:
                return denied

        log_ids = {"request_id": request_id, "function": target.function_id}
        try:
            result = function.invoke(event)
        except Exception:
            # Handlers map their own errors to responses, so reaching this is a bug.
            logger.exception("function raised an unhandled exception", extra=log_ids)
            return problem_response(
                500,
                "Internal Server Error",
                "The function raised an unhandled exception.",
                "internal_error",
            )

        try:
            return response_from_result(result)
        except InvalidFunctionResponse as error:
            logger.error(
                "function returned an invalid response", extra={**log_ids, "error": str(error)}
            )
            return problem_response(
                500,
                "Internal Server Error",
                "The function returned an invalid response.",
                "invalid_function_response",
            )

    def _authorize(
        self,
        authorizer: AuthorizerSpec,
        request: HttpRequest,
        event: dict[str, Any],
        request_id: str,
    ) -> HttpResponse | None:
        """Run the route's Lambda authorizer as API Gateway does, and return the response that
        denies the request. When it allows the request, add its context to `event` and return
        None.

        A missing identity source is 401 without invoking the authorizer, a denial 403, and an
        authorizer that raises or returns a malformed result 500, each with API Gateway's body.
        """
        identity = _identity_values(authorizer, event)
        if identity is None:
            return message_response(401, "Unauthorized")

        function = self.functions[authorizer.function_id]
        log_ids = {"request_id": request_id, "authorizer": authorizer.name}
        authorizer_event = build_authorizer_event(
            event,
            identity_source=identity,
            route_arn=self.api.route_arn(request.method, request.raw_path),
        )
        try:
            allowed, context = simple_authorizer_result(function.invoke(authorizer_event))
        except InvalidFunctionResponse as error:
            logger.error(
                "authorizer returned an invalid response", extra={**log_ids, "error": str(error)}
            )
            return message_response(500, "Internal Server Error")
        except Exception:
            logger.exception("authorizer raised an unhandled exception", extra=log_ids)
            return message_response(500, "Internal Server Error")

        if not allowed:
            logger.info("authorizer denied the request", extra=log_ids)
            return message_response(403, "Forbidden")
        event["requestContext"]["authorizer"] = {"lambda": context}
        return None


def _identity_values(authorizer: AuthorizerSpec, event: Mapping[str, Any]) -> list[str] | None:
    """Return the values of the authorizer's identity sources, or None if one is missing."""
    headers = event.get("headers") or {}
    query = event.get("queryStringParameters") or {}
    values = []
    for source in authorizer.identity_sources:
        if source.kind == "header":
            value = headers.get(source.name.lower())
        else:
            value = query.get(source.name)
        if not value or not value.strip():
            return None
        values.append(value)
    return values


def build_gateway(
    template: Template,
    provisioned: ProvisionedStack,
    *,
    host: str = LOOPBACK_HOST,
    port: int = 0,
    max_body_bytes: int = MAX_REQUEST_BODY_BYTES,
    static_directory: Path | None = None,
    source_ip_header: str | None = None,
) -> ApiGateway:
    """Create a gateway for every HttpApi route of `template`, with the provisioned environments."""
    functions: dict[str, LocalFunction] = {}
    targets: list[RouteTarget] = []
    for spec in template.functions:
        functions[spec.logical_id] = LocalFunction(
            spec=spec,
            name=provisioned.physical_id(spec.logical_id),
            arn=provisioned.context.get_att(spec.logical_id, "Arn"),
            environment=provisioned.environments[spec.logical_id],
        )
        targets.extend(RouteTarget(route, spec.logical_id) for route in spec.routes)

    apis = template.http_apis
    api_id = provisioned.physical_id(apis[0].logical_id) if len(apis) == 1 else DEFAULT_API_ID
    settings = ApiSettings(
        account_id=provisioned.account_id, api_id=api_id, region=provisioned.region
    )
    return ApiGateway(
        RouteTable(targets),
        functions,
        settings,
        host=host,
        port=port,
        max_body_bytes=max_body_bytes,
        static_directory=static_directory,
        source_ip_header=source_ip_header,
    )


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog: socketserver's default of 5 resets connections under concurrent tests.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], gateway: ApiGateway) -> None:
        self.gateway = gateway
        super().__init__(address, _RequestHandler)


class _BodyTooLarge(Exception):
    pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _GatewayServer

    def handle_expect_100(self) -> bool:
        # Reject an announced oversized body before the client sends it.
        if self._declared_length() > self.server.gateway.max_body_bytes:
            self.close_connection = True
            self._send(self._too_large(), str(uuid.uuid4()))
            return False
        return super().handle_expect_100()

    def dispatch(self) -> None:
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        gateway = self.server.gateway
        try:
            body = self._read_body(gateway.max_body_bytes)
        except _BodyTooLarge:
            self.close_connection = True
            response = self._too_large()
        except ValueError as error:
            self.close_connection = True
            response = problem_response(400, "Bad Request", str(error), "invalid_request")
        else:
            response = gateway.handle(self._request(body), request_id)

        self._send(response, request_id)
        logger.info(
            "request completed",
            extra={
                "request_id": request_id,
                "method": self.command,
                "path": self.path,
                "status": response.status,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = dispatch

    def _request(self, body: bytes) -> HttpRequest:
        if self.path.startswith("/"):
            raw_path, _, raw_query = self.path.partition("?")
        else:
            # An absolute-form request target, e.g. "http://localhost:3000/v1/x?y=1".
            parts = urlsplit(self.path)
            raw_path, raw_query = parts.path or "/", parts.query
        headers = list(self.headers.items())
        source_ip = str(self.client_address[0])
        override = self.server.gateway.source_ip_header
        if override is not None:
            given = [value.strip() for name, value in headers if name.lower() == override]
            headers = [(name, value) for name, value in headers if name.lower() != override]
            source_ip = given[-1] if given else source_ip
        return HttpRequest(
            method=self.command,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=headers,
            body=body,
            source_ip=source_ip,
            server_port=self.server.gateway.port,
            protocol=self.request_version,
        )

    def _declared_length(self) -> int:
        value = self.headers.get("Content-Length")
        if value is None or not value.strip().isdigit():
            return 0
        return int(value)

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body(limit)
        value = self.headers.get("Content-Length")
        if value is None:
            return b""
        if not value.strip().isdigit():
            raise ValueError(f"Content-Length must be a non-negative integer, got {value!r}.")
        length = int(value)
        if length > limit:
            raise _BodyTooLarge
        return self.rfile.read(length)

    def _read_chunked_body(self, limit: int) -> bytes:
        body = bytearray()
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ValueError(f"invalid chunk size line: {size_line!r}.") from None
            if size == 0:
                break
            if len(body) + size > limit:
                raise _BodyTooLarge
            body += self.rfile.read(size)
            self.rfile.readline(1024)  # the CRLF that ends each chunk

        # Skip any trailer fields up to the blank line that ends the message.
        while self.rfile.readline(8192).strip():
            pass
        return bytes(body)

    def _too_large(self) -> HttpResponse:
        limit = self.server.gateway.max_body_bytes
        return problem_response(
            413,
            "Content Too Large",
            f"The request body is larger than the limit of {limit} bytes.",
            "payload_too_large",
        )

    def _send(self, response: HttpResponse, request_id: str) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Apigw-Requestid", request_id)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """Skip http.server's access line; `dispatch` logs each request as JSON instead."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.warning(format % args, extra={"client": self.client_address[0]})
