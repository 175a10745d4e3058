"""Event building and response mapping as pure functions."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from local.events import (
    ApiSettings,
    HttpRequest,
    InvalidFunctionResponse,
    build_event,
    problem_response,
    response_from_result,
)
from local.routing import RouteMatch, RouteTarget
from local.template import HttpRoute

API = ApiSettings(account_id="123456789012", api_id="local")
MATCH = RouteMatch(RouteTarget(HttpRoute("GET", "/v1/x/{id}"), "Fn"), {"id": "7"})


BASE_REQUEST = HttpRequest(
    method="GET",
    raw_path="/v1/x/7",
    raw_query="",
    headers=[("Host", "localhost:3000")],
    body=b"",
    source_ip="127.0.0.1",
    server_port=3000,
)


def test_time_fields_from_epoch() -> None:
    event = build_event(BASE_REQUEST, MATCH, API, request_id="r", epoch_ms=1583348638390)
    context = event["requestContext"]

    assert context["time"] == "04/Mar/2020:19:03:58 +0000"
    assert context["timeEpoch"] == 1583348638390


def test_domain_name_drops_port() -> None:
    event = build_event(BASE_REQUEST, MATCH, API, request_id="r")

    assert event["requestContext"]["domainName"] == "localhost"
    assert event["requestContext"]["domainPrefix"] == "localhost"
    assert event["headers"]["host"] == "localhost:3000"
    assert event["headers"]["x-forwarded-port"] == "3000"
    assert event["pathParameters"] == {"id": "7"}


def test_text_types_stay_text() -> None:
    for content_type in ("text/plain; charset=utf-8", "application/json", "application/xml"):
        request = replace(BASE_REQUEST, headers=[("Content-Type", content_type)], body="é".encode())
        event = build_event(request, MATCH, API, request_id="r")

        assert event["isBase64Encoded"] is False, content_type
        assert event["body"] == "é", content_type


def test_missing_content_type_is_base64() -> None:
    event = build_event(replace(BASE_REQUEST, body=b"abc"), MATCH, API, request_id="r")

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"abc"


def test_invalid_utf8_text_is_base64() -> None:
    request = replace(BASE_REQUEST, headers=[("Content-Type", "text/plain")], body=b"\xff\xfe")
    event = build_event(request, MATCH, API, request_id="r")

    assert event["isBase64Encoded"] is True


def test_structured_result_mapped() -> None:
    response = response_from_result(
        {
            "statusCode": 204,
            "headers": {"X-Count": 3, "Content-Length": "999"},
            "cookies": ["a=1"],
        }
    )

    assert response.status == 204
    assert response.body == b""
    assert ("X-Count", "3") in response.headers
    assert ("Set-Cookie", "a=1") in response.headers
    assert all(name != "Content-Length" for name, _ in response.headers)


@pytest.mark.parametrize("result", [{"a": 1}, ["x"], "text", 5, None])
def test_other_results_become_json(result: object) -> None:
    response = response_from_result(result)

    assert response.status == 200
    assert response.headers == [("Content-Type", "application/json")]
    assert json.loads(response.body) == result


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "200"},
        {"statusCode": True},
        {"statusCode": 700},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "cookies": "a=1"},
        {"statusCode": 200, "body": object()},
    ],
)
def test_invalid_results_rejected(result: object) -> None:
    with pytest.raises(InvalidFunctionResponse):
        response_from_result(result)


def test_problem_response_shape() -> None:
    response = problem_response(
        405, "Method Not Allowed", "nope", "method_not_allowed", [("Allow", "GET")]
    )

    assert response.status == 405
    assert ("Content-Type", "application/problem+json") in response.headers
    assert ("Allow", "GET") in response.headers
    assert json.loads(response.body) == {
        "type": "about:blank",
        "title": "Method Not Allowed",
        "status": 405,
        "detail": "nope",
        "code": "method_not_allowed",
    }
