"""Build HTTP API events (payload format 2.0), Lambda authorizer events and their results, and
turn Lambda results into HTTP responses."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from local.routing import RouteMatch

PROBLEM_CONTENT_TYPE = "application/problem+json"

# AWS documents no list of "text" content types for HTTP APIs. The ministack project tested real
# HTTP APIs and reports text bodies for text/* and these types only. Every other body arrives
# base64-encoded, also one without a Content-Type and application/x-www-form-urlencoded.
_TEXT_CONTENT_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Headers that the HTTP server sets itself, so a function's values for them are dropped.
_HOP_BY_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


class InvalidFunctionResponse(ValueError):
    """The function returned something that API Gateway could not turn into an HTTP response."""


@dataclass(frozen=True)
class HttpRequest:
    """A request as received: raw path and query, header lines in order, and the body bytes."""

    method: str
    raw_path: str
    raw_query: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str
    server_port: int
    protocol: str = "HTTP/1.1"


@dataclass(frozen=True)
class ApiSettings:
    account_id: str
    api_id: str
    stage: str = "$default"
    region: str = "us-east-1"

    def route_arn(self, method: str, raw_path: str) -> str:
        """Return the ARN that an authorizer event names a request by, as API Gateway forms it."""
        return (
            f"arn:aws:execute-api:{self.region}:{self.account_id}:{self.api_id}/{self.stage}/"
            f"{method}{raw_path}"
        )


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""


def build_event(
    request: HttpRequest,
    match: RouteMatch,
    api: ApiSettings,
    *,
    request_id: str,
    epoch_ms: int | None = None,
) -> dict[str, Any]:
    """Return the payload 2.0 event that API Gateway sends to the function for `request`."""
    epoch_ms = time.time_ns() // 1_000_000 if epoch_ms is None else epoch_ms
    headers, cookies = _event_headers(request)
    route_key = match.target.route.route_key
    domain_name = _domain_name(headers.get("host", "localhost"))

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    query = _query_parameters(request.raw_query)
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": api.account_id,
        "apiId": api.api_id,
        "domainName": domain_name,
        "domainPrefix": domain_name.split(".", 1)[0],
        "http": {
            "method": request.method,
            "path": request.raw_path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": api.stage,
        "time": _request_time(epoch_ms),
        "timeEpoch": epoch_ms,
    }
    if match.path_parameters:
        event["pathParameters"] = dict(match.path_parameters)

    if request.body:
        content_type = headers.get("content-type", "")
        text = _decode_text_body(request.body, content_type)
        if text is None:
            event["body"] = base64.b64encode(request.body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
            event["isBase64Encoded"] = False
    else:
        event["isBase64Encoded"] = False
    return event


def _event_headers(request: HttpRequest) -> tuple[dict[str, str], list[str]]:
    """Return header names in lower case with repeats comma-joined, and the cookies split out."""
    values: dict[str, list[str]] = {}
    cookies: list[str] = []
    for raw_name, value in request.headers:
        name = raw_name.lower()
        if name == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        values.setdefault(name, []).append(value.strip())

    # API Gateway adds these for the function, appending the client to any X-Forwarded-For.
    forwarded_for = [*values.get("x-forwarded-for", []), request.source_ip]
    values["x-forwarded-for"] = [", ".join(forwarded_for)]
    values["x-forwarded-port"] = [str(request.server_port)]
    values["x-forwarded-proto"] = ["http"]
    values.setdefault("x-amzn-trace-id", [_trace_id()])
    return {name: ",".join(items) for name, items in values.items()}, cookies


def _query_parameters(raw_query: str) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        values.setdefault(name, []).append(value)
    return {name: ",".join(items) for name, items in values.items()}


def _domain_name(host: str) -> str:
    host = host.split(",", 1)[0].strip()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def _request_time(epoch_ms: int) -> str:
    # Built by hand because %b in strftime follows the process locale.
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    month = _MONTHS[moment.month - 1]
    return f"{moment.day:02d}/{month}/{moment.year}:{moment:%H:%M:%S} +0000"


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"


def _decode_text_body(body: bytes, content_type: str) -> str | None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not (media_type.startswith("text/") or media_type in _TEXT_CONTENT_TYPES):
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


# Fields of the integration event that an authorizer event (payload 2.0) also carries.
_AUTHORIZER_EVENT_FIELDS = (
    "routeKey",
    "rawPath",
    "rawQueryString",
    "cookies",
    "headers",
    "queryStringParameters",
    "requestContext",
    "pathParameters",
)


def build_authorizer_event(
    event: Mapping[str, Any], *, identity_source: list[str], route_arn: str
) -> dict[str, Any]:
    """Return the REQUEST event (payload 2.0) for a Lambda authorizer of the request in `event`.

    `event` is the integration event of the same request. The authorizer event has no body.
    """
    authorizer_event: dict[str, Any] = {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": route_arn,
        "identitySource": identity_source,
    }
    for name in _AUTHORIZER_EVENT_FIELDS:
        if name in event:
            authorizer_event[name] = copy.deepcopy(event[name])
    return authorizer_event


def simple_authorizer_result(result: Any) -> tuple[bool, dict[str, Any]]:
    """Read a simple authorizer response: whether it allows the request, and its context.

    Raises InvalidFunctionResponse unless `isAuthorized` is a boolean and `context`, when
    present, is an object. API Gateway returns 500 to the client in both cases.
    """
    result = _marshal(result)
    if not isinstance(result, dict) or not isinstance(result.get("isAuthorized"), bool):
        raise InvalidFunctionResponse("a simple authorizer response needs a boolean isAuthorized")
    context = result.get("context")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise InvalidFunctionResponse("the authorizer's context must be an object")
    return result["isAuthorized"], context


def message_response(status: int, message: str) -> HttpResponse:
    """Return API Gateway's own JSON error, such as 403 {"message": "Forbidden"}."""
    body = json.dumps({"message": message}).encode("utf-8")
    return HttpResponse(status, [("Content-Type", "application/json")], body)


def response_from_result(result: Any) -> HttpResponse:
    """Turn a function's return value into the HTTP response that API Gateway sends.

    A dict with statusCode is a structured response. Any other JSON value becomes a 200 response
    with that value as its JSON body, as API Gateway does for payload format 2.0.
    """
    result = _marshal(result)
    if not (isinstance(result, dict) and "statusCode" in result):
        body = json.dumps(result).encode("utf-8")
        return HttpResponse(200, [("Content-Type", "application/json")], body)

    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidFunctionResponse(f"statusCode must be an integer HTTP status, got {status!r}")

    headers = _response_headers(result)
    text = result.get("body")
    if text is None:
        return HttpResponse(status, headers)
    if not isinstance(text, str):
        raise InvalidFunctionResponse(f"body must be a string, got {type(text).__name__}")
    if not result.get("isBase64Encoded"):
        return HttpResponse(status, headers, text.encode("utf-8"))
    try:
        return HttpResponse(status, headers, base64.b64decode(text, validate=True))
    except binascii.Error as error:
        message = f"isBase64Encoded is true but body is not base64: {error}"
        raise InvalidFunctionResponse(message) from error


def _marshal(result: Any) -> Any:
    """Round-trip the result through JSON, as the Lambda runtime does before passing it on."""
    try:
        return json.loads(json.dumps(result))
    except (TypeError, ValueError) as error:
        raise InvalidFunctionResponse(f"the result is not JSON-serializable: {error}") from error


def _response_headers(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    cookies = result.get("cookies") or []
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise InvalidFunctionResponse("headers and multiValueHeaders must be objects")
    if not isinstance(cookies, list):
        raise InvalidFunctionResponse("cookies must be a list of Set-Cookie values")

    for name, value in single.items():
        headers.append((name, _header_value(value)))
    for name, values in multi.items():
        items = values if isinstance(values, list) else [values]
        headers.extend((name, _header_value(value)) for value in items)
    headers.extend(("Set-Cookie", _header_value(cookie)) for cookie in cookies)
    return [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP_HEADERS]


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, dict | list):
        raise InvalidFunctionResponse(f"header values must be strings or numbers, got {value!r}")
    return str(value)


def problem_response(
    status: int,
    title: str,
    detail: str,
    code: str,
    headers: Iterable[tuple[str, str]] = (),
) -> HttpResponse:
    """Return an RFC 9457 problem response in the shape that the service's handlers use."""
    problem = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body = json.dumps(problem).encode("utf-8")
    return HttpResponse(status, [("Content-Type", PROBLEM_CONTENT_TYPE), *headers], body)
