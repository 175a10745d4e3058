"""The HTTP edge shared by every function: request parsing and RFC 9457 problem responses.

`install` registers the one mapping from the error hierarchy to HTTP status codes. Request
bodies are parsed into frozen dataclasses by a small strict parser rather than pydantic, whose
import alone costs about 45 ms of every cold start. Validation errors name the field and the fix
but never echo the submitted value, which may be a code or a password.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import typing
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from mfa_core.audit import RequestContext
from mfa_core.errors import (
    AuthenticationFailed,
    ConfigurationError,
    Conflict,
    DependencyFailed,
    Forbidden,
    InvalidCode,
    InvalidCredential,
    InvalidInput,
    InvalidToken,
    LockedOut,
    MfaError,
    NotFound,
    PreconditionFailed,
    StepUpRequired,
    Throttled,
    UnsupportedMediaType,
)
from mfa_core.settings import settings

logger = Logger(child=True)

PROBLEM_JSON = "application/problem+json"
# Problem types are URNs, one per error code; docs/api.md lists them.
PROBLEM_TYPE_BASE = "urn:agent-console:mfa:problem:"

# Error class -> (HTTP status, title). Subclasses not listed here take their base's entry.
STATUS: dict[type[MfaError], tuple[int, str]] = {
    UnsupportedMediaType: (415, "Unsupported media type"),
    InvalidInput: (400, "Invalid request"),
    AuthenticationFailed: (401, "Authentication failed"),
    InvalidToken: (401, "Invalid token"),
    InvalidCode: (401, "Invalid code"),
    InvalidCredential: (401, "Invalid credential"),
    Forbidden: (403, "Forbidden"),
    NotFound: (404, "Not found"),
    Conflict: (409, "Conflict"),
    PreconditionFailed: (412, "Precondition failed"),
    LockedOut: (429, "Too many attempts"),
    Throttled: (429, "Too many requests"),
    DependencyFailed: (503, "Service unavailable"),
    ConfigurationError: (500, "Internal error"),
    MfaError: (500, "Internal error"),
}

Body = TypeVar("Body")
# Unknown field names are echoed back only when they look like field names.
FIELD_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def limits(*, min_length: int = 0, max_length: int) -> dict[str, int]:
    """Return dataclass field metadata that bounds a string field's length."""
    return {"min_length": min_length, "max_length": max_length}


def status_of(error: MfaError) -> tuple[int, str]:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return STATUS[MfaError]


def problem(error: MfaError) -> Response[str]:
    status, title = status_of(error)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + error.code,
        "title": title,
        "status": status,
        "detail": error.detail,
        "code": error.code,
    }
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    if isinstance(error, InvalidInput) and error.field is not None:
        body["field"] = error.field
    if isinstance(error, LockedOut | Throttled):
        body["retry_after"] = error.retry_after
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Throttled):
        body["limit"] = error.limit
    if isinstance(error, StepUpRequired):
        body["required_acr"] = error.required_acr
        body["max_mfa_age"] = error.max_mfa_age
        body["missing"] = error.missing
    if isinstance(error, InvalidToken | AuthenticationFailed | InvalidCredential):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return Response(
        status_code=status, content_type=PROBLEM_JSON, body=json.dumps(body), headers=headers
    )


def json_response(body: Any, *, status: int = 200) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body),
        headers={"Cache-Control": "no-store"},
    )


def install(app: APIGatewayHttpResolver) -> None:
    """Register the error mapping on a resolver."""

    @app.exception_handler(MfaError)
    def _mfa_error(error: MfaError) -> Response[str]:
        status, _ = status_of(error)
        if status >= 500:
            logger.exception("Request failed", extra={"code": error.code})
        else:
            # The code only: the detail may repeat a field name, and nothing else is logged.
            logger.info("Request rejected", extra={"status": status, "code": error.code})
        return problem(error)

    @app.exception_handler(PynamoDBException)
    def _dynamodb_error(error: PynamoDBException) -> Response[str]:
        logger.exception("DynamoDB request failed")
        return problem(DependencyFailed())

    @app.exception_handler(BotoCoreError)
    def _aws_error(error: BotoCoreError) -> Response[str]:
        logger.exception("AWS request failed")
        return problem(DependencyFailed())

    @app.exception_handler(ClientError)
    def _aws_client_error(error: ClientError) -> Response[str]:
        logger.exception("AWS request failed")
        return problem(DependencyFailed())

    @app.not_found
    def _route_not_found(_: Exception) -> Response[str]:
        return problem(NotFound("No such route."))

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response[str]:
        logger.exception("Unhandled error")
        return problem(MfaError("The request failed unexpectedly."))


def parse_body(app: APIGatewayHttpResolver, model: type[Body]) -> Body:
    """Parse the JSON body into `model`, or raise InvalidInput naming the offending field."""
    return _build(model, parse_object(app))


def parse_object(app: APIGatewayHttpResolver) -> dict[str, Any]:
    """Return the body as a JSON object, or raise InvalidInput (never echoing the body)."""
    # Requiring JSON keeps browsers from sending these requests cross-site without a CORS
    # preflight, as they may with text/plain or form bodies.
    if _media_type(app) != "application/json":
        raise UnsupportedMediaType()
    data = _body_bytes(app, settings().max_body_bytes)
    if not data.strip():
        raise InvalidInput("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        # UTF-8 only (RFC 8259 §8.1): json.loads would also guess UTF-16 and UTF-32 from bytes.
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: thousands of nested brackets fit in the size limit.
        raise InvalidInput("The request body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(document, dict):
        raise InvalidInput("The request body must be a JSON object.", code="invalid_json")
    return document


def parse_form(
    app: APIGatewayHttpResolver, *, fields: tuple[str, ...], limit: int
) -> dict[str, str]:
    """Return the named fields of an application/x-www-form-urlencoded body of at most `limit`
    bytes, as an HTML form posts them. Other fields are ignored, and a field sent twice or a
    body that is not such a form raises InvalidInput."""
    if _media_type(app) != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType()
    data = _body_bytes(app, limit)
    try:
        pairs = parse_qsl(
            data.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(data),
            max_num_fields=len(fields) + 8,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("The request body is not a valid form.", code="invalid_body") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in fields:
            continue
        if name in form:
            raise InvalidInput(f"Send the form field {name} once.", field=name)
        form[name] = value
    return form


def _media_type(app: APIGatewayHttpResolver) -> str:
    content_type = app.current_event.headers.get("content-type") or ""
    return content_type.split(";", 1)[0].strip().lower()


def _body_bytes(app: APIGatewayHttpResolver, limit: int) -> bytes:
    """Return the request body, decoded from base64 where API Gateway encoded it, or raise
    InvalidInput when it is larger than `limit` bytes."""
    event = app.current_event
    raw = event.body or ""
    if event.is_base64_encoded:
        # Base64 inflates by 4/3; checking the encoded size first avoids decoding a huge body.
        if len(raw) > limit * 4 // 3 + 4:
            raise _too_large(limit)
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(
                "The request body is not valid base64.", code="invalid_body"
            ) from exc
    else:
        data = raw.encode("utf-8", errors="surrogatepass")
    if len(data) > limit:
        raise _too_large(limit)
    return data


class _DuplicateKeyError(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            # Two parsers reading the same body differently is how requests get smuggled.
            raise _DuplicateKeyError("duplicate key")
        document[key] = value
    return document


def _is_encodable(value: str) -> bool:
    """Tell whether `value` has no lone surrogates, which JSON escapes such as \\ud800 allow."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_large(limit: int) -> InvalidInput:
    return InvalidInput(f"The request body is larger than {limit} bytes.", code="body_too_large")


def _build(model: type[Body], document: dict[str, Any]) -> Body:
    """Build a request dataclass from a JSON object with strict types.

    Every field is a string (`str`, or `str | None` for an optional one), or a JSON object
    where the field is declared as a dict. Unknown fields are rejected. Errors name the field
    but never echo its value, which may be a code or a password.
    """
    declared = {f.name: f for f in dataclasses.fields(model)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(model)
    for name in document:
        if name not in declared:
            if FIELD_NAME_PATTERN.match(name):
                raise InvalidInput(f"Field '{name}' is not a known field; remove it.", field=name)
            raise InvalidInput("The body contains a field that is not known; remove it.")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        optional = type(None) in typing.get_args(hints[name])
        value = document.get(name)
        if value is None:
            if not optional:
                raise InvalidInput(f"Field '{name}' is required.", field=name)
            continue
        if _is_object_field(hints[name]):
            if not isinstance(value, dict):
                raise InvalidInput(f"Field '{name}' must be a JSON object.", field=name)
            values[name] = value
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"Field '{name}' must be a string.", field=name)
        if not _is_encodable(value):
            raise InvalidInput(f"Field '{name}' is not valid Unicode text.", field=name)
        bounds = spec.metadata
        if len(value) < bounds.get("min_length", 0):
            raise InvalidInput(f"Field '{name}' is too short.", field=name)
        if "max_length" in bounds and len(value) > bounds["max_length"]:
            raise InvalidInput(
                f"Field '{name}' is too long; the limit is {bounds['max_length']} characters.",
                field=name,
            )
        values[name] = value
    return model(**values)


def _is_object_field(hint: Any) -> bool:
    return any(typing.get_origin(arg) is dict for arg in (hint, *typing.get_args(hint)))


def bearer_token(app: APIGatewayHttpResolver) -> str | None:
    header = app.current_event.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def request_context(app: APIGatewayHttpResolver) -> RequestContext:
    http = app.current_event.request_context.http
    headers = app.current_event.headers or {}
    return RequestContext(
        source_ip=http.source_ip,
        user_agent=http.user_agent,
        request_id=app.current_event.request_context.request_id,
        viewer_headers=tuple(
            (name.lower(), value)
            for name, value in headers.items()
            if name.lower().startswith("cloudfront-viewer-")
        ),
    )


def totp_code(value: str) -> str:
    """Return `value` if it is six ASCII digits; otherwise raise InvalidInput on "code"."""
    from mfa_core.totp import is_well_formed  # noqa: PLC0415 - keeps pyotp out of other routes

    if not is_well_formed(value):
        raise InvalidInput(
            "Field 'code' must be exactly 6 ASCII digits (0-9).",
            field="code",
            code="invalid_code_format",
        )
    return value


DEFAULT_PAGE = 100


def page_parameters(app: APIGatewayHttpResolver, *, maximum: int) -> tuple[int, str | None]:
    """Read `limit` (1 to `maximum`, default 100) and `next` from the query string."""
    query = app.current_event.query_string_parameters or {}
    raw_limit = query.get("limit")
    limit = DEFAULT_PAGE
    if raw_limit is not None:
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= maximum:
            raise InvalidInput(f"Use a limit from 1 to {maximum}.", field="limit")
        limit = int(raw_limit)
    after = query.get("next") or None
    if after is not None and len(after) > 64:
        raise InvalidInput("Use the 'next' value of the previous page.", field="next")
    return limit, after
