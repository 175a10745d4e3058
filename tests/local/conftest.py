"""Fixtures for the local stack's tests: a moto server per test module, and a tiny SAM project.

moto keeps one state for the whole process, which other test packages' stacks may share. So each
stack here uses its own name prefix, and never the default one.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from local.resources import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from local.stack import LocalStack

# Build every log record of the local stack, so that a bad `extra=` key fails a test.
logging.getLogger("local").setLevel(logging.DEBUG)

ECHO_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31

Parameters:
  Greeting:
    Type: String
    Default: hello

Globals:
  Function:
    Timeout: 5
    MemorySize: 256
    Environment:
      Variables:
        ECHO_TABLE: !Ref ItemsTable
        ECHO_GREETING: !Ref Greeting

Resources:
  EchoApi:
    Type: AWS::Serverless::HttpApi

  ItemsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - { AttributeName: pk, AttributeType: S }
      KeySchema:
        - { AttributeName: pk, KeyType: HASH }

  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/echo/
      Handler: app.lambda_handler
      Environment:
        Variables:
          ECHO_TABLE_ARN: !GetAtt ItemsTable.Arn
      Events:
        EchoPost:
          Type: HttpApi
          Properties: { ApiId: !Ref EchoApi, Path: /echo, Method: POST }
        EchoGet:
          Type: HttpApi
          Properties: { ApiId: !Ref EchoApi, Path: /echo, Method: GET }
        DeleteItem:
          Type: HttpApi
          Properties: { ApiId: !Ref EchoApi, Path: "/items/{item_id}", Method: DELETE }
        DeleteSpecialItem:
          Type: HttpApi
          Properties: { ApiId: !Ref EchoApi, Path: /items/special, Method: DELETE }
        Files:
          Type: HttpApi
          Properties: { ApiId: !Ref EchoApi, Path: "/files/{path+}", Method: ANY }
"""

# The handler picks its behavior from the `mode` query parameter and otherwise echoes the event.
ECHO_HANDLER = """\
import base64
import json
import os
import uuid

IMPORT_ID = uuid.uuid4().hex
TABLE_AT_IMPORT = os.environ["ECHO_TABLE"]


def lambda_handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode", "echo")
    if mode == "raise":
        raise RuntimeError("handler failure for the test")
    if mode == "plain":
        return {"hello": "world"}
    if mode == "invalid":
        return {"statusCode": "abc"}
    if mode == "size":
        body = event.get("body") or ""
        size = len(base64.b64decode(body)) if event["isBase64Encoded"] else len(body)
        return {"statusCode": 200, "body": str(size)}
    if mode == "binary":
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/octet-stream"},
            "body": base64.b64encode(bytes([0, 1, 255])).decode("ascii"),
            "isBase64Encoded": True,
        }
    if mode == "headers":
        return {
            "statusCode": 201,
            "headers": {"X-Single": "one", "Content-Type": "text/plain"},
            "multiValueHeaders": {"X-Multi": ["a", "b"]},
            "cookies": ["first=1; Path=/; HttpOnly", "second=2"],
            "body": "created",
        }
    payload = {
        "event": event,
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
        "import_id": IMPORT_ID,
        "table_at_import": TABLE_AT_IMPORT,
        "environment": {name: os.environ.get(name) for name in ("ECHO_TABLE_ARN", "ECHO_GREETING")},
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(payload),
    }
"""


def write_echo_project(root: Path, extra_events: str = "") -> Path:
    """Write the echo function and its template under `root` and return the template's path.

    `extra_events` is YAML appended to the function's Events, indented by eight spaces.
    """
    function_dir = root / "functions" / "echo"
    function_dir.mkdir(parents=True)
    (function_dir / "app.py").write_text(ECHO_HANDLER, encoding="utf-8")
    template_path = root / "template.yaml"
    template_path.write_text(textwrap.dedent(ECHO_TEMPLATE) + extra_events, encoding="utf-8")
    return template_path


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """Start one moto server for the test module and return its URL."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
        patch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
            if server._server is not None:
                server._server.server_close()


@pytest.fixture(scope="module")
def echo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_echo_project(tmp_path_factory.mktemp("echo-project"))


ECHO_PREFIX = "mfa-test-echo"


@pytest.fixture(scope="module")
def echo_stack(echo_template: Path) -> Iterator[LocalStack]:
    with LocalStack(echo_template, name_prefix=ECHO_PREFIX) as stack:
        yield stack
