"""HTTP API Lambda authorizers in the local gateway, read from a template as AWS reads them.

The backend and its authorizer share one CodeUri, as the session function and the service's
authorizer do. The authorizer decides by the value of its identity source.
"""

from __future__ import annotations

import json
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack
from local.template import IdentitySource, TemplateError, load_template

pytestmark = pytest.mark.api

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31

Resources:
  GuardedApi:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Guard
        Authorizers:
          Guard:
            FunctionArn: !GetAtt GuardFunction.Arn
            AuthorizerPayloadFormatVersion: "2.0"
            EnableSimpleResponses: true
            Identity:
              Headers: [Authorization]
              ReauthorizeEvery: 0
          TicketGuard:
            FunctionArn: !GetAtt GuardFunction.Arn
            AuthorizerPayloadFormatVersion: "2.0"
            EnableSimpleResponses: true
            Identity:
              QueryStrings: [ticket]

  BackendFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/shared/
      Handler: app.lambda_handler
      Events:
        Guarded:
          Type: HttpApi
          Properties: { ApiId: !Ref GuardedApi, Path: "/items/{item_id}", Method: PUT }
        Open:
          Type: HttpApi
          Properties:
            ApiId: !Ref GuardedApi
            Path: /open
            Method: GET
            Auth: { Authorizer: NONE }
        ByTicket:
          Type: HttpApi
          Properties:
            ApiId: !Ref GuardedApi
            Path: /by-ticket
            Method: GET
            Auth: { Authorizer: TicketGuard }

  GuardFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/shared/
      Handler: authorizer.lambda_handler
"""

BACKEND = """\
import json

CALLS = []


def lambda_handler(event, context):
    CALLS.append(event["routeKey"])
    body = {"module": __name__, "calls": len(CALLS), "event": event}
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body)}
"""

AUTHORIZER = """\
def lambda_handler(event, context):
    decision = event["identitySource"][0].removeprefix("Bearer ")
    if decision == "raise":
        raise RuntimeError("authorizer failure for the test")
    if decision == "malformed":
        return {"isAuthorized": "yes"}
    if decision == "context-not-object":
        return {"isAuthorized": True, "context": ["x"]}
    if decision == "deny":
        return {"isAuthorized": False, "context": {"why": "no"}}
    return {
        "isAuthorized": True,
        "context": {"who": "alice", "level": 2, "module": __name__, "event": event},
    }
"""


def _write_project(root: Path, template: str = TEMPLATE) -> Path:
    code = root / "functions" / "shared"
    code.mkdir(parents=True)
    (code / "app.py").write_text(BACKEND, encoding="utf-8")
    (code / "authorizer.py").write_text(AUTHORIZER, encoding="utf-8")
    path = root / "template.yaml"
    path.write_text(textwrap.dedent(template), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def guarded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    template = _write_project(tmp_path_factory.mktemp("guarded-project"))
    with LocalStack(template, name_prefix="mfa-test-guarded", web_directory=None) as stack:
        yield stack


def _request(
    stack: LocalStack, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Message, Any]:
    request = urllib.request.Request(  # noqa: S310 - the URL is the loopback gateway
        stack.api_url + path, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, json.loads(error.read())


def _bearer(decision: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {decision}"}


def test_allowed_request_gets_context(guarded_stack: LocalStack) -> None:
    status, _, body = _request(guarded_stack, "PUT", "/items/a1?x=1", _bearer("allow"))

    assert status == 200, body
    event = body["event"]
    context = event["requestContext"]["authorizer"]["lambda"]
    assert context["who"] == "alice"
    assert context["level"] == 2
    assert event["routeKey"] == "PUT /items/{item_id}"
    assert event["pathParameters"] == {"item_id": "a1"}


def test_authorizer_event_has_v2_request_shape(guarded_stack: LocalStack) -> None:
    status, _, body = _request(guarded_stack, "PUT", "/items/a1?x=1", _bearer("allow"))

    assert status == 200, body
    seen = body["event"]["requestContext"]["authorizer"]["lambda"]["event"]
    provisioned = guarded_stack.provisioned
    assert seen["version"] == "2.0"
    assert seen["type"] == "REQUEST"
    assert seen["identitySource"] == ["Bearer allow"]
    assert seen["routeKey"] == "PUT /items/{item_id}"
    assert seen["rawPath"] == "/items/a1"
    assert seen["rawQueryString"] == "x=1"
    assert seen["queryStringParameters"] == {"x": "1"}
    assert seen["pathParameters"] == {"item_id": "a1"}
    assert seen["headers"]["authorization"] == "Bearer allow"
    assert seen["requestContext"]["http"]["method"] == "PUT"
    assert seen["requestContext"]["requestId"] == body["event"]["requestContext"]["requestId"]
    assert seen["routeArn"] == (
        f"arn:aws:execute-api:{provisioned.region}:{provisioned.account_id}:local/$default/"
        "PUT/items/a1"
    )
    assert "body" not in seen
    assert "authorizer" not in seen["requestContext"]


def test_missing_identity_is_401_without_invoking(guarded_stack: LocalStack) -> None:
    before = _request(guarded_stack, "GET", "/open")[2]["calls"]

    for headers in [{}, {"Authorization": "  "}]:
        status, response_headers, body = _request(guarded_stack, "PUT", "/items/a1", headers)
        assert status == 401
        assert body == {"message": "Unauthorized"}
        assert response_headers["Content-Type"] == "application/json"

    after = _request(guarded_stack, "GET", "/open")[2]["calls"]
    assert after == before + 1  # the backend ran only for the second /open


def test_denied_request_is_403(guarded_stack: LocalStack) -> None:
    status, _, body = _request(guarded_stack, "PUT", "/items/a1", _bearer("deny"))

    assert status == 403
    assert body == {"message": "Forbidden"}


@pytest.mark.parametrize("decision", ["raise", "malformed", "context-not-object"])
def test_failing_authorizer_is_500(
    guarded_stack: LocalStack, decision: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, body = _request(guarded_stack, "PUT", "/items/a1", _bearer(decision))

    assert status == 500
    assert body == {"message": "Internal Server Error"}
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("authorizer ") for message in messages), messages


def test_route_opts_out_of_default(guarded_stack: LocalStack) -> None:
    status, _, body = _request(guarded_stack, "GET", "/open")

    assert status == 200
    assert "authorizer" not in body["event"]["requestContext"]


def test_query_string_identity_source(guarded_stack: LocalStack) -> None:
    missing = _request(guarded_stack, "GET", "/by-ticket")
    denied = _request(guarded_stack, "GET", "/by-ticket?ticket=deny")
    allowed = _request(guarded_stack, "GET", "/by-ticket?ticket=allow")

    assert missing[0] == 401
    assert denied[0] == 403
    assert allowed[0] == 200
    seen = allowed[2]["event"]["requestContext"]["authorizer"]["lambda"]["event"]
    assert seen["identitySource"] == ["allow"]


def test_shared_code_uri_loads_both_modules(guarded_stack: LocalStack) -> None:
    status, _, body = _request(guarded_stack, "PUT", "/items/a1", _bearer("allow"))

    assert status == 200
    assert body["module"] == "mfa_fn_shared_app"
    assert body["event"]["requestContext"]["authorizer"]["lambda"]["module"] == (
        "mfa_fn_shared_authorizer"
    )


def test_template_routes_carry_authorizers(tmp_path: Path) -> None:
    template = load_template(_write_project(tmp_path))
    routes = {route.route_key: route for route in template.function("BackendFunction").routes}

    guarded = routes["PUT /items/{item_id}"].authorizer
    ticket = routes["GET /by-ticket"].authorizer
    assert guarded is not None
    assert guarded.name == "Guard"
    assert guarded.function_id == "GuardFunction"
    assert guarded.identity_sources == (IdentitySource("header", "Authorization"),)
    assert guarded.identity_sources[0].expression == "$request.header.Authorization"
    assert guarded.reauthorize_every == 0
    assert ticket is not None
    assert ticket.identity_sources == (IdentitySource("querystring", "ticket"),)
    assert routes["GET /open"].authorizer is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("EnableSimpleResponses: true", "EnableSimpleResponses: false"), "simple responses"),
        (('AuthorizerPayloadFormatVersion: "2.0"', 'AuthorizerPayloadFormatVersion: "1.0"'), "2.0"),
        (("!GetAtt GuardFunction.Arn", "arn:aws:lambda:us-east-1:1:function:x"), "GetAtt"),
        (("!GetAtt GuardFunction.Arn", "!GetAtt GuardedApi.Arn"), "not a function"),
        (("DefaultAuthorizer: Guard", "DefaultAuthorizer: Nobody"), "DefaultAuthorizer"),
        (("{ Authorizer: TicketGuard }", "{ Authorizer: Nobody }"), "authorizer Nobody"),
        (("QueryStrings: [ticket]", "Context: [routeKey]"), "Context"),
    ],
    ids=[
        "iam-policy-responses",
        "payload-1.0",
        "arn-string",
        "not-a-function",
        "unknown-default",
        "unknown-route-authorizer",
        "context-identity",
    ],
)
def test_unsupported_authorizers_rejected(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in TEMPLATE
    path = _write_project(tmp_path, TEMPLATE.replace(old, new, 1))

    with pytest.raises(TemplateError, match=message):
        load_template(path)
