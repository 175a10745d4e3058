"""Every state change is audited in the same transaction, and no secret reaches a log."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger
from botocore.client import BaseClient

from local.stack import LocalStack
from mfa_core import runtime
from tests.api.harness import Client, Flow, Member, wrong_code
from tests.authenticator import SoftAuthenticator, with_flipped_signature_bit

WRITE_OPERATIONS = {
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
}


@contextmanager
def dynamodb_calls() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Record every DynamoDB request made in this process (the handlers run in-process)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    original = BaseClient._make_api_call

    def recording(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            calls.append((operation_name, api_params))
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = recording  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


def _run_flow(client: Client, flow: Flow, member: Member) -> dict[str, str]:
    """Drive every state-changing route once, failures included; return what must stay secret."""
    first = flow.login_ok(member, "authenticated")
    access = first["access_token"]
    bad_login = client.post(
        "/v1/auth/login", {"org_id": "acme", "email": member.email, "password": "not the password"}
    )
    assert bad_login.status == 401
    # Before the admin has a factor, which would make this need a fresh MFA.
    created = client.post(
        "/v1/orgs/acme/users", {"email": "new@acme.example", "role": "viewer"}, token=access
    )
    assert created.status == 201
    enroll = client.post("/v1/me/factors/totp", {"label": "Phone"}, token=access)
    secret = enroll.body["secret"]
    member.totp_secret, member.factor_id = secret, enroll.body["factor_id"]
    wrong_confirm = client.post(
        f"/v1/me/factors/totp/{member.factor_id}/confirm",
        {"code": wrong_code(flow, secret)},
        token=access,
    )
    assert wrong_confirm.status == 401
    confirm_code = flow.code(secret)
    client.post(
        f"/v1/me/factors/totp/{member.factor_id}/confirm", {"code": confirm_code}, token=access
    )
    assert client.post("/v1/auth/logout", token=access).status == 204

    flow.next_step()
    mfa_token = flow.mfa_token(member)
    assert flow.verify(member, mfa_token, wrong_code(flow, secret)).status == 401
    login_code = flow.code(secret)
    verified = flow.verify(member, mfa_token, login_code)
    assert verified.status == 200
    assert flow.verify(member, flow.mfa_token(member), login_code).status == 401  # replay
    refreshed = client.post("/v1/auth/refresh", {"refresh_token": verified.body["refresh_token"]})
    assert refreshed.status == 200
    reuse = client.post("/v1/auth/refresh", {"refresh_token": verified.body["refresh_token"]})
    assert reuse.status == 401
    return {
        "password": member.password,
        "generated password": created.body["initial_password"],
        "totp secret": secret,
        "otpauth uri secret parameter": f"secret={secret}",
        "confirmation code": confirm_code,
        "login code": login_code,
        "access token": access,
        "mfa token": mfa_token,
        "refresh token": verified.body["refresh_token"],
        "rotated refresh token": refreshed.body["refresh_token"],
        "refresh token secret": verified.body["refresh_token"].split(".", 1)[1],
        "access token signature": access.rsplit(".", 1)[1],
    }


def _run_key_flow(client: Client, flow: Flow, member: Member) -> dict[str, str]:
    """Register a security key, sign in with it, fail once, step up and remove a factor.

    `member` must have an active TOTP factor; returns what must stay out of the logs.
    """
    assert member.totp_secret is not None
    flow.next_step()
    access = flow.verify(member, flow.mfa_token(member)).body["access_token"]
    key = SoftAuthenticator()
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    registration = key.register(options["options"], origin=flow.origin)
    registered = client.post(
        "/v1/me/factors/webauthn",
        {"challenge_id": options["challenge_id"], "credential": registration},
        token=access,
    )
    assert registered.status == 201, registered.text
    mfa_token = flow.mfa_token(member)
    challenge = flow.key_challenge(mfa_token)
    assertion = key.authenticate(challenge["options"], origin=flow.origin)
    rejected = flow.key_verify(mfa_token, challenge, with_flipped_signature_bit(assertion))
    assert rejected.status == 401
    login = flow.key_verify(mfa_token, challenge, assertion)
    assert login.status == 200, login.text
    key_access = login.body["access_token"]
    flow.clock.advance(301)
    step_up = flow.key_challenge(key_access)
    step_up_assertion = key.authenticate(step_up["options"], origin=flow.origin)
    fresh = flow.key_verify(key_access, step_up, step_up_assertion)
    assert fresh.status == 200, fresh.text
    removed = client.delete(f"/v1/me/factors/{member.factor_id}", token=fresh.body["access_token"])
    assert removed.status == 204, removed.text
    return {
        "registration challenge": options["options"]["challenge"],
        "login challenge": challenge["options"]["challenge"],
        "step-up challenge": step_up["options"]["challenge"],
        "client data": assertion["response"]["clientDataJSON"],
        "attestation object": registration["response"]["attestationObject"],
        "assertion signature": assertion["response"]["signature"],
        "step-up signature": step_up_assertion["response"]["signature"],
        "step-up access token": fresh.body["access_token"],
    }


def test_writes_carry_audit_events(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    audit_table = runtime.services().settings.audit_table
    with dynamodb_calls() as calls:
        _run_flow(client, flow, acme)
        _run_key_flow(client, flow, acme)

    writes = [(name, params) for name, params in calls if name in WRITE_OPERATIONS]
    assert len(writes) >= 20
    for name, params in writes:
        assert name == "TransactWriteItems", f"{name} outside a transaction"
        tables = [next(iter(item.values()))["TableName"] for item in params["TransactItems"]]
        assert audit_table in tables, f"transaction without an audit event: {tables}"


def test_flow_leaves_the_expected_audit_trail(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    _run_flow(client, flow, acme)
    table = boto3.resource("dynamodb", endpoint_url=stack.aws_endpoint_url).Table(
        runtime.services().settings.audit_table
    )
    items = table.query(
        KeyConditionExpression="org_id = :o", ExpressionAttributeValues={":o": "acme"}
    )["Items"]
    seen = {(item["event_type"], item["outcome"], item.get("reason")) for item in items}
    expected = {
        ("org.create", "success", None),
        ("member.create", "success", None),
        ("login", "success", None),
        ("login.password", "failure", "wrong_password"),
        ("factor.enroll", "success", None),
        ("factor.confirm", "failure", "invalid_code"),
        ("factor.activate", "success", None),
        ("session.revoke", "success", "logout"),
        ("login.password", "success", "mfa_required"),
        ("login.mfa", "failure", "invalid_code"),
        ("login.mfa", "success", None),
        ("login.mfa", "denied", "code_replayed"),
        ("session.refresh", "success", None),
        ("session.refresh_reuse", "denied", "token_reuse"),
        ("session.revoke", "success", "token_reuse"),
    }
    assert expected <= seen, expected - seen
    for item in items:
        assert item["actor"]
        assert item["expires_at"] > item["created_at"]
    with_request = [item for item in items if item["actor"] != "operator"]
    assert all(item.get("request_id") for item in with_request)
    assert all(item.get("source_ip") == "127.0.0.1" for item in with_request)


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Capture what production would log: our loggers at every level, the rest at INFO.

    Library DEBUG output (botocore logs whole request and response bodies at DEBUG) is out of
    scope: Lambda runs those loggers at WARNING unless someone turns DEBUG on.
    """
    # Set up the service's Powertools logger first, as a function's cold start would, so that
    # its JSON handler comes first whichever test runs first.
    Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "mfa"))
    stream = io.StringIO()
    ours = logging.getLogger("mfa")
    handler = logging.StreamHandler(stream)
    if ours.handlers and ours.handlers[0].formatter is not None:
        handler.setFormatter(ours.handlers[0].formatter)  # Powertools' JSON formatter
    root_handler = logging.StreamHandler(stream)
    root_handler.setLevel(logging.INFO)
    root = logging.getLogger()
    previous_level = ours.level
    ours.setLevel(logging.DEBUG)
    ours.addHandler(handler)
    root.addHandler(root_handler)
    try:
        yield stream
    finally:
        ours.removeHandler(handler)
        root.removeHandler(root_handler)
        ours.setLevel(previous_level)


def test_no_secret_in_logs_or_tables(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    with captured_logs() as stream:
        secrets = _run_flow(client, flow, acme)
        # The security scan reads the flow's events, past its settle time, into its tables.
        flow.clock.advance(60)
        stack.function("CsoScanFunction").invoke({})
    logs = stream.getvalue()
    assert '"message":"Login failed"' in logs  # the capture works
    for name, value in secrets.items():
        assert not _contains(logs, value), f"{name} found in the logs"

    dynamodb = boto3.client("dynamodb", endpoint_url=stack.aws_endpoint_url)
    for logical_id, table in stack.table_names.items():
        dump = str(dynamodb.scan(TableName=table)["Items"])
        # The flow sends no SMS, so nothing is counted, resets no MFA and seals no hour, and
        # the scan may find nothing in it.
        assert dump != "[]" or logical_id in {
            "CountersTable",
            "MfaResetsTable",
            "AuditDigestsTable",
            "FindingsTable",
        }
        for name, value in secrets.items():
            assert not _contains(dump, value), f"{name} found in {table}"


def test_no_key_ceremony_data_in_logs(
    client: Client, flow: Flow, enrolled: Member, stack: LocalStack
) -> None:
    with captured_logs() as stream:
        secrets = _run_key_flow(client, flow, enrolled)
    logs = stream.getvalue()
    assert '"message":"Security key registered"' in logs  # the capture works
    for name, value in secrets.items():
        assert not _contains(logs, value), f"{name} found in the logs"

    # Challenges are kept server-side by design; what the browser returns is never stored.
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.aws_endpoint_url)
    for table in stack.table_names.values():
        dump = str(dynamodb.scan(TableName=table)["Items"])
        for name in ("client data", "attestation object", "assertion signature"):
            assert not _contains(dump, secrets[name]), f"{name} found in {table}"


def _contains(text: str, secret: str) -> bool:
    """Find `secret` in `text`; a 6-digit code only as a whole token, not inside a number or id."""
    if secret.isdigit():
        return re.search(rf"(?<![0-9A-Za-z]){secret}(?![0-9A-Za-z])", text) is not None
    return secret in text


def test_security_metrics_are_emitted(
    client: Client, flow: Flow, enrolled: Member, capsys: pytest.CaptureFixture[str]
) -> None:
    assert enrolled.totp_secret is not None
    capsys.readouterr()
    mfa_token = flow.mfa_token(enrolled)
    for _ in range(10):
        flow.verify(enrolled, mfa_token, wrong_code(flow, enrolled.totp_secret))

    emitted = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    counts: dict[str, float] = {}
    for document in emitted:
        for definition in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            values = document[definition["Name"]]
            total = sum(values) if isinstance(values, list) else values
            counts[definition["Name"]] = counts.get(definition["Name"], 0) + total
    assert counts["MfaFailed"] == 10
    assert counts["AccountLocked"] == 1
    assert "acme" not in str(emitted)
