"""LocalStack with the real template: environment, reset_data, and clean stop."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from local.resources import aws_session
from local.run import DEFAULT_API_PORT, parse_arguments
from local.stack import LocalStack


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(name_prefix="mfa-test-stack") as running:
        yield running


def test_environment_points_at_moto(stack: LocalStack) -> None:
    assert os.environ["AWS_ENDPOINT_URL"] == stack.aws_endpoint_url
    assert stack.aws_endpoint_url.startswith("http://127.0.0.1:")
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert os.environ["MFA_USERS_TABLE"] == stack.table_names["UsersTable"]


def test_default_clients_reach_moto(stack: LocalStack) -> None:
    """A client built without endpoint or credentials, as handlers build theirs, reaches moto."""
    import boto3  # noqa: PLC0415 - after the stack has set the environment

    tables = boto3.client("dynamodb").list_tables()["TableNames"]

    assert os.environ["MFA_SESSIONS_TABLE"] in tables


def test_api_url_serves_problems(stack: LocalStack) -> None:
    assert stack.api_url.startswith("http://127.0.0.1:")

    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(stack.api_url + "/v1/unknown", timeout=10)  # noqa: S310
    error = raised.value
    with error:
        problem = json.loads(error.read())

    assert error.code == 404
    assert problem["code"] == "route_not_found"


def test_reset_data_empties_tables(stack: LocalStack) -> None:
    dynamodb = aws_session().client("dynamodb", endpoint_url=stack.aws_endpoint_url)
    orgs = stack.table_names["OrgsTable"]
    sessions = stack.table_names["SessionsTable"]
    dynamodb.put_item(TableName=orgs, Item={"org_id": {"S": "demo"}})
    dynamodb.put_item(
        TableName=sessions,
        Item={"session_id": {"S": "s1"}, "user_key": {"S": "u"}, "created_at": {"N": "1"}},
    )

    deleted = stack.reset_data()

    assert deleted == 2
    for table_name in stack.table_names.values():
        assert dynamodb.scan(TableName=table_name)["Count"] == 0, table_name
    assert set(dynamodb.list_tables()["TableNames"]) >= set(stack.table_names.values())


def test_run_arguments_default() -> None:
    arguments = parse_arguments([])

    assert arguments.port == DEFAULT_API_PORT
    assert arguments.host == "127.0.0.1"
    assert arguments.moto_port == 0


def test_webauthn_environment_follows_port(stack: LocalStack) -> None:
    port = urlsplit(stack.api_url).port
    # Loading a handler copies its function's environment into os.environ.
    with urllib.request.urlopen(stack.api_url + "/.well-known/jwks.json", timeout=10) as reply:  # noqa: S310
        assert reply.status == 200

    assert os.environ["MFA_WEBAUTHN_RP_ID"] == "localhost"
    assert os.environ["MFA_WEBAUTHN_ORIGINS"] == f"http://localhost:{port}"
    assert stack.page_url == f"http://localhost:{port}/"


def test_webauthn_overrides_kept() -> None:
    overrides = {"WebAuthnRpId": "console.test", "WebAuthnOrigins": "https://console.test"}
    with LocalStack(name_prefix="mfa-test-webauthn", parameter_overrides=overrides):
        assert os.environ["MFA_WEBAUTHN_RP_ID"] == "console.test"
        assert os.environ["MFA_WEBAUTHN_ORIGINS"] == "https://console.test"


def test_page_served(stack: LocalStack) -> None:
    with urllib.request.urlopen(stack.api_url + "/", timeout=10) as reply:  # noqa: S310
        page = reply.read().decode("utf-8")
        headers = reply.headers

    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<title>Agent Console MFA</title>" in page
    assert '<script src="app.js" defer></script>' in page
    for name in ("app.js", "app.css"):
        with urllib.request.urlopen(f"{stack.api_url}/{name}", timeout=10) as reply:  # noqa: S310
            assert reply.status == 200, name
