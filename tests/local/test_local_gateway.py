"""The gateway over a real socket, with the echo function from conftest behind it."""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.gateway import MAX_REQUEST_BODY_BYTES
from local.stack import LocalStack

pytestmark = pytest.mark.api


def _request(
    stack: LocalStack,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(  # noqa: S310 - the URL is the loopback gateway
        stack.api_url + path, data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def _echo(stack: LocalStack, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, _, body = _request(stack, method, path, **kwargs)
    assert status == 200, body
    payload: dict[str, Any] = json.loads(body)
    return payload


def _raw_connection(stack: LocalStack) -> http.client.HTTPConnection:
    address = urlsplit(stack.api_url)
    assert address.hostname is not None
    assert address.port is not None
    return http.client.HTTPConnection(address.hostname, address.port, timeout=10)


def test_event_has_v2_shape(echo_stack: LocalStack) -> None:
    payload = _echo(
        echo_stack,
        "POST",
        "/echo?b=2&a=1&a=3&empty=",
        body=b'{"x": 1}',
        headers={
            "Content-Type": "application/json",
            "User-Agent": "local-test/1.0",
            "X-Custom": "value",
            "Cookie": "session=abc; theme=dark",
        },
    )
    event = payload["event"]
    context = event["requestContext"]

    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /echo"
    assert event["rawPath"] == "/echo"
    assert event["rawQueryString"] == "b=2&a=1&a=3&empty="
    assert event["queryStringParameters"] == {"a": "1,3", "b": "2", "empty": ""}
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-custom"] == "value"
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert event["body"] == '{"x": 1}'
    assert event["isBase64Encoded"] is False
    assert "pathParameters" not in event

    assert context["accountId"] == echo_stack.provisioned.account_id
    assert context["apiId"] == "local"
    assert context["domainName"] == "127.0.0.1"
    assert context["domainPrefix"] == "127"
    assert context["http"] == {
        "method": "POST",
        "path": "/echo",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "local-test/1.0",
    }
    assert context["routeKey"] == "POST /echo"
    assert context["stage"] == "$default"
    assert re.fullmatch(r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000", context["time"])
    assert isinstance(context["timeEpoch"], int)


def test_request_ids_are_fresh(echo_stack: LocalStack) -> None:
    first = _echo(echo_stack, "GET", "/echo")
    second = _echo(echo_stack, "GET", "/echo")

    assert (
        first["event"]["requestContext"]["requestId"]
        != (second["event"]["requestContext"]["requestId"])
    )
    assert first["context"]["aws_request_id"] != second["context"]["aws_request_id"]


def test_get_without_body_or_query(echo_stack: LocalStack) -> None:
    event = _echo(echo_stack, "GET", "/echo")["event"]

    assert "body" not in event
    assert event["isBase64Encoded"] is False
    assert event["rawQueryString"] == ""
    assert "queryStringParameters" not in event
    assert "cookies" not in event


def test_repeated_headers_comma_joined(echo_stack: LocalStack) -> None:
    connection = _raw_connection(echo_stack)
    connection.putrequest("GET", "/echo")
    connection.putheader("X-Repeated", "one")
    connection.putheader("X-Repeated", "two")
    connection.endheaders()
    response = connection.getresponse()
    event = json.loads(response.read())["event"]
    connection.close()

    assert event["headers"]["x-repeated"] == "one,two"


def test_binary_body_base64_encoded(echo_stack: LocalStack) -> None:
    data = bytes([0, 1, 2, 255])

    event = _echo(
        echo_stack,
        "POST",
        "/echo",
        body=data,
        headers={"Content-Type": "application/octet-stream"},
    )["event"]

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == data


def test_form_body_base64_encoded(echo_stack: LocalStack) -> None:
    event = _echo(
        echo_stack,
        "POST",
        "/echo",
        body=b"a=1&b=2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )["event"]

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"a=1&b=2"


def test_chunked_body_read(echo_stack: LocalStack) -> None:
    connection = _raw_connection(echo_stack)
    connection.request(
        "POST",
        "/echo",
        body=iter([b"hello ", b"world"]),
        headers={"Content-Type": "text/plain"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    event = json.loads(response.read())["event"]
    connection.close()

    assert event["body"] == "hello world"
    assert event["isBase64Encoded"] is False


def test_path_parameters_extracted(echo_stack: LocalStack) -> None:
    item = _echo(echo_stack, "DELETE", "/items/abc-123")["event"]
    special = _echo(echo_stack, "DELETE", "/items/special")["event"]
    files = _echo(echo_stack, "PUT", "/files/a/b%20c.txt")["event"]

    assert item["routeKey"] == "DELETE /items/{item_id}"
    assert item["pathParameters"] == {"item_id": "abc-123"}
    assert special["routeKey"] == "DELETE /items/special"
    assert "pathParameters" not in special
    assert files["routeKey"] == "ANY /files/{path+}"
    assert files["pathParameters"] == {"path": "a/b c.txt"}
    assert files["rawPath"] == "/files/a/b%20c.txt"


def test_context_and_environment(echo_stack: LocalStack) -> None:
    payload = _echo(echo_stack, "GET", "/echo")
    context = payload["context"]
    table_name = echo_stack.table_names["ItemsTable"]

    assert context["function_name"] == "mfa-test-echo-EchoFunction"
    assert context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"].endswith(":function:mfa-test-echo-EchoFunction")
    assert context["memory_limit_in_mb"] == 256
    assert context["log_group_name"] == "/aws/lambda/mfa-test-echo-EchoFunction"
    assert "[$LATEST]" in context["log_stream_name"]
    assert 0 < context["remaining_ms"] <= 5000
    assert payload["table_at_import"] == table_name
    assert payload["environment"]["ECHO_GREETING"] == "hello"
    assert payload["environment"]["ECHO_TABLE_ARN"].endswith(f":table/{table_name}")


def test_module_loaded_once(echo_stack: LocalStack) -> None:
    first = _echo(echo_stack, "GET", "/echo")["import_id"]
    second = _echo(echo_stack, "POST", "/echo")["import_id"]

    assert first == second


def test_response_headers_and_cookies(echo_stack: LocalStack) -> None:
    status, headers, body = _request(echo_stack, "GET", "/echo?mode=headers")

    assert status == 201
    assert body == b"created"
    assert headers["X-Single"] == "one"
    assert headers["Content-Type"] == "text/plain"
    assert headers.get_all("X-Multi") == ["a", "b"]
    assert headers.get_all("Set-Cookie") == ["first=1; Path=/; HttpOnly", "second=2"]
    assert headers["Apigw-Requestid"]


def test_base64_response_decoded(echo_stack: LocalStack) -> None:
    status, headers, body = _request(echo_stack, "GET", "/echo?mode=binary")

    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert body == bytes([0, 1, 255])


def test_plain_result_becomes_json(echo_stack: LocalStack) -> None:
    status, headers, body = _request(echo_stack, "GET", "/echo?mode=plain")

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"hello": "world"}


def _assert_problem(
    status: int, headers: Message, body: bytes, expected_status: int, code: str
) -> dict[str, Any]:
    assert status == expected_status
    assert headers["Content-Type"] == "application/problem+json"
    problem: dict[str, Any] = json.loads(body)
    assert problem["type"] == "about:blank"
    assert problem["status"] == expected_status
    assert problem["code"] == code
    assert problem["detail"]
    return problem


def test_unknown_route_is_404(echo_stack: LocalStack) -> None:
    problem = _assert_problem(
        *_request(echo_stack, "GET", "/no/such/route"), 404, "route_not_found"
    )

    assert problem["title"] == "Not Found"


def test_wrong_method_is_405(echo_stack: LocalStack) -> None:
    status, headers, body = _request(echo_stack, "DELETE", "/echo")

    problem = _assert_problem(status, headers, body, 405, "method_not_allowed")
    assert problem["title"] == "Method Not Allowed"
    assert headers["Allow"] == "GET, POST"


def test_handler_exception_is_500(echo_stack: LocalStack, caplog: pytest.LogCaptureFixture) -> None:
    problem = _assert_problem(
        *_request(echo_stack, "GET", "/echo?mode=raise"), 500, "internal_error"
    )

    assert problem["title"] == "Internal Server Error"
    logged = [record.exc_info for record in caplog.records if record.exc_info is not None]
    assert logged, "the traceback was not logged"
    assert "handler failure for the test" in str(logged[-1][1])


def test_invalid_result_is_500(echo_stack: LocalStack) -> None:
    _assert_problem(
        *_request(echo_stack, "GET", "/echo?mode=invalid"), 500, "invalid_function_response"
    )


def test_body_over_limit_is_413(echo_stack: LocalStack) -> None:
    connection = _raw_connection(echo_stack)
    connection.putrequest("POST", "/echo?mode=size")
    connection.putheader("Content-Type", "application/octet-stream")
    connection.putheader("Content-Length", str(MAX_REQUEST_BODY_BYTES + 1))
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()

    _assert_problem(response.status, response.headers, body, 413, "payload_too_large")


def test_expect_continue_over_limit_is_413(echo_stack: LocalStack) -> None:
    connection = _raw_connection(echo_stack)
    connection.putrequest("POST", "/echo?mode=size")
    connection.putheader("Content-Length", str(MAX_REQUEST_BODY_BYTES + 1))
    connection.putheader("Expect", "100-continue")
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()

    _assert_problem(response.status, response.headers, body, 413, "payload_too_large")


def test_body_at_limit_accepted(echo_stack: LocalStack) -> None:
    status, _, body = _request(
        echo_stack,
        "POST",
        "/echo?mode=size",
        body=b"\x00" * MAX_REQUEST_BODY_BYTES,
        headers={"Content-Type": "application/octet-stream"},
    )

    assert status == 200
    assert int(body) == MAX_REQUEST_BODY_BYTES


def test_source_ip_header_overrides_the_socket_address(echo_template: Path) -> None:
    with LocalStack(
        echo_template, name_prefix="source-ip", source_ip_header="X-Test-Source-Ip"
    ) as stack:
        payload = _echo(stack, "GET", "/echo", headers={"X-Test-Source-Ip": "203.0.113.7"})
        event = payload["event"]
        assert event["requestContext"]["http"]["sourceIp"] == "203.0.113.7"
        assert "x-test-source-ip" not in event["headers"]
        plain = _echo(stack, "GET", "/echo")
        assert plain["event"]["requestContext"]["http"]["sourceIp"] == "127.0.0.1"


def test_source_ip_header_is_ignored_unless_configured(echo_stack: LocalStack) -> None:
    payload = _echo(echo_stack, "GET", "/echo", headers={"X-Test-Source-Ip": "203.0.113.7"})
    assert payload["event"]["requestContext"]["http"]["sourceIp"] == "127.0.0.1"
    assert payload["event"]["headers"]["x-test-source-ip"] == "203.0.113.7"
