"""Every AWS call a function makes in the API flows is allowed by its IAM policy in template.yaml.

moto does not check IAM against resource ARNs, so a missing permission would only show in AWS.
This test records each call with the function that made it and turns it into the IAM actions
and resource ARNs that AWS would authorize, one per item of a DynamoDB transaction. It then
matches them against the function's policy statements, resolved with the local stack's names.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient

from local.functions import LocalFunction
from local.intrinsics import resolve
from local.stack import LocalStack
from local.template import parse_yaml
from mfa_core.policy import MfaPolicy
from tests.api.conftest import SOURCE_IP_HEADER, add_member, add_org
from tests.api.harness import Client, Flow, Member
from tests.api.test_audit_and_logs import _run_flow, _run_key_flow
from tests.api.test_policy import fresh_mfa_token, set_policy
from tests.api.test_sms import enroll_phone, last_code
from tests.api.test_sso_oidc import FakeProvider, oidc_document, sso_login
from tests.api.test_sso_saml import login_through_idp
from tests.saml_idp import FakeIdp

Call = tuple[str, str, str, dict[str, Any]]  # function, service, operation, parameters
TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


@pytest.fixture
def calls() -> Iterator[list[Call]]:
    recorded: list[Call] = []
    current = threading.local()
    original_invoke = LocalFunction.invoke
    original_call = BaseClient._make_api_call

    def invoke(self: LocalFunction, event: dict[str, Any], request_id: str | None = None) -> Any:
        current.function = self.spec.logical_id
        try:
            return original_invoke(self, event, request_id)
        finally:
            current.function = None

    def call(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        function = getattr(current, "function", None)
        if function is not None:
            recorded.append((function, self.meta.service_model.service_name, operation, params))
        return original_call(self, operation, params)

    LocalFunction.invoke = invoke  # type: ignore[method-assign]
    BaseClient._make_api_call = call  # type: ignore[method-assign]
    try:
        yield recorded
    finally:
        LocalFunction.invoke = original_invoke  # type: ignore[method-assign]
        BaseClient._make_api_call = original_call  # type: ignore[method-assign]


def _required(stack: LocalStack, service: str, operation: str, params: dict[str, Any]) -> list:
    """Return the (IAM action, resource ARN) pairs that AWS authorizes for one call."""
    region, account = stack.provisioned.region, stack.provisioned.account_id
    if service == "dynamodb":

        def table_arn(name: str, index: str | None = None) -> str:
            arn = f"arn:aws:dynamodb:{region}:{account}:table/{name}"
            return f"{arn}/index/{index}" if index else arn

        if operation in ("TransactWriteItems", "TransactGetItems"):
            pairs = []
            for item in params["TransactItems"]:
                (kind, body) = next(iter(item.items()))
                pairs.append(
                    (
                        f"dynamodb:{TRANSACT_ACTIONS[kind]}",
                        table_arn(body["TableName"]),
                        _attributes(body),
                    )
                )
            return pairs
        if operation in ("BatchGetItem", "BatchWriteItem"):
            return [
                (f"dynamodb:{operation}", table_arn(name), None) for name in params["RequestItems"]
            ]
        return [
            (
                f"dynamodb:{operation}",
                table_arn(params["TableName"], params.get("IndexName")),
                _attributes(params),
            )
        ]
    if service == "kms":
        key = params["KeyId"]
        arn = key if key.startswith("arn:") else f"arn:aws:kms:{region}:{account}:key/{key}"
        return [(f"kms:{operation}", arn, None)]
    if service == "secretsmanager":
        secret = params.get("SecretId") or params["Name"]
        if not secret.startswith("arn:"):
            # A secret named by its name: AWS authorizes its ARN, the name and six characters.
            secret = f"arn:aws:secretsmanager:{region}:{account}:secret:{secret}-AbCdEf"
        return [(f"secretsmanager:{operation}", secret, None)]
    if service == "sns" and operation == "Publish" and "PhoneNumber" in params:
        return [("sns:Publish", "*", None)]  # SMS to a phone number has no resource ARN
    if service == "sns" and operation == "Publish":
        return [("sns:Publish", params["TopicArn"], None)]
    if service == "s3":
        return [(f"s3:{operation}", f"arn:aws:s3:::{params['Bucket']}/{params['Key']}", None)]
    if service == "events" and operation == "PutEvents":
        return [
            ("events:PutEvents", f"arn:aws:events:{region}:{account}:event-bus/{name}", None)
            for name in {entry["EventBusName"] for entry in params["Entries"]}
        ]
    if service == "ssm":
        name = params["Name"] if params["Name"].startswith("/") else "/" + params["Name"]
        return [(f"ssm:{operation}", f"arn:aws:ssm:{region}:{account}:parameter{name}", None)]
    raise AssertionError(f"no IAM mapping for {service}:{operation}")


def _attributes(params: dict[str, Any]) -> frozenset[str]:
    """Return the top-level attributes that a DynamoDB request names: its key and expressions.

    PynamoDB names every attribute of an expression through ExpressionAttributeNames.
    """
    names = set(params.get("Key", {})) | set(params.get("ExpressionAttributeNames", {}).values())
    return frozenset(names)


# The one kind of condition the matcher evaluates: an allow-list of the attributes a request
# may name. Any other condition never covers a call.
ATTRIBUTES_CONDITION = "ForAllValues:StringEquals"


def _statements(stack: LocalStack, function: str) -> list[dict[str, Any]]:
    template = parse_yaml(stack.template.path.read_text(encoding="utf-8"))
    policies = template["Resources"][function]["Properties"]["Policies"]
    statements = []
    for policy in policies:
        for statement in resolve(policy, stack.provisioned.context)["Statement"]:
            # A conditional grant (kms:ViaService) never covers a direct call.
            condition = statement.get("Condition")
            if statement["Effect"] == "Allow" and (
                condition is None or list(condition) == [ATTRIBUTES_CONDITION]
            ):
                statements.append(statement)
    return statements


def _allowed(
    statements: list[dict[str, Any]],
    action: str,
    resource: str,
    attributes: frozenset[str] | None = None,
) -> bool:
    for statement in statements:
        actions = statement["Action"]
        resources = statement["Resource"]
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if not (
            any(fnmatch.fnmatchcase(action, a) for a in actions)
            and any(fnmatch.fnmatchcase(resource, r) for r in resources)
        ):
            continue
        condition = statement.get("Condition")
        if condition is None:
            return True
        allowed = condition[ATTRIBUTES_CONDITION]
        if (
            list(allowed) == ["dynamodb:Attributes"]
            and attributes is not None
            and attributes <= set(allowed["dynamodb:Attributes"])
        ):
            return True
    return False


def _drive_every_route(client: Client, flow: Flow, member: Member) -> None:
    _run_flow(client, flow, member)
    tokens = flow.verify(member, flow.mfa_token(member), None)
    assert tokens.status == 401  # the same step as the flow's last verification: a replay
    flow.next_step()
    fresh = flow.verify(member, flow.mfa_token(member)).body
    access = fresh["access_token"]
    assert client.get("/v1/me/factors", token=access).status == 200
    assert client.get("/v1/me/sessions", token=access).status == 200
    second = client.post("/v1/me/factors/totp", {"label": "Spare"}, token=access)
    assert second.status == 201
    confirm = client.post(
        f"/v1/me/factors/totp/{second.body['factor_id']}/confirm",
        {"code": flow.code(second.body["secret"], steps_ahead=1)},
        token=access,
    )
    assert confirm.status == 200
    other = flow.verify(
        member, flow.mfa_token(member), flow.code(member.totp_secret or "", steps_ahead=1)
    )
    assert other.status == 200
    assert client.delete(f"/v1/me/sessions/{other.body['session_id']}", token=access).status == 204
    assert client.get("/.well-known/jwks.json").status == 200
    member.factor_id, member.totp_secret = second.body["factor_id"], second.body["secret"]
    flow.next_step()  # past the step that confirmed the spare factor
    _run_key_flow(client, flow, member)
    _run_sms_flow(client, flow)
    _run_authorizer_flow(client, flow)
    _run_policy_flow(client, flow)
    _run_reset_flow(client, flow)
    _run_sso_flow(client, flow)


def _run_sso_flow(client: Client, flow: Flow) -> None:
    """Set an org's OIDC connection twice (creating, then replacing the client secret), read
    it, and sign in through the provider as a member that auto-provisioning creates. Then
    switch the org to SAML and sign in through a SAML provider."""
    admin = add_org("wayne")
    flow.enroll(admin, flow.login_ok(admin, "authenticated")["access_token"])
    token = fresh_mfa_token(flow, admin)
    with FakeProvider(flow.clock) as idp:
        for _ in range(2):
            document = oidc_document(idp, auto_provision=True)
            changed = client.request("PUT", "/v1/orgs/wayne/sso", json_body=document, token=token)
            assert changed.status == 200, changed.text
        assert client.get("/v1/orgs/wayne/sso", token=token).status == 200
        login = sso_login(client, idp, "wayne", email="new@wayne.example")
        assert login.status == 200, login.text
    saml_idp = FakeIdp.create()
    document = {
        "protocol": "saml",
        "idp_entity_id": saml_idp.entity_id,
        "sso_url": "https://idp.example.com/sso/saml",
        "signing_certificate": saml_idp.certificate_pem,
    }
    changed = client.request("PUT", "/v1/orgs/wayne/sso", json_body=document, token=token)
    assert changed.status == 200, changed.text
    login = login_through_idp(client, flow.clock, saml_idp, admin)
    assert login.status == 200, login.text


def _run_reset_flow(client: Client, flow: Flow) -> None:
    """Request, approve, cancel and list resets, and sign in once with the recovery code."""
    requester = add_org("initech")
    approver = add_member("initech", "approver@initech.example", role="admin")
    target = add_member("initech", "target@initech.example")
    for member in (requester, approver, target):
        flow.enroll(member, flow.login_ok(member, "authenticated")["access_token"])
    flow.next_step()
    target_login = flow.verify(target, flow.mfa_token(target))
    assert target_login.status == 200, target_login.text
    resets = "/v1/orgs/initech/mfa-resets"
    body = {
        "user_id": target.user_id,
        "reason": "Lost phone",
        "verification": {"method": "id_document", "reference": "r-1", "verified_by": "desk"},
    }
    requester_token = fresh_mfa_token(flow, requester)
    cancelled = client.post(resets, body, token=requester_token).body["reset_id"]
    assert client.post(f"{resets}/{cancelled}/cancel", {}, token=requester_token).status == 200
    reset_id = client.post(resets, body, token=requester_token).body["reset_id"]
    assert client.get(resets, token=requester_token).status == 200
    approved = client.post(
        f"{resets}/{reset_id}/approve", {}, token=fresh_mfa_token(flow, approver)
    )
    assert approved.status == 200, approved.text
    login = {
        "org_id": "initech",
        "email": target.email,
        "password": target.password,
        "recovery_code": approved.body["recovery_code"],
    }
    assert client.post("/v1/auth/login", login).status == 200
    assert client.post("/v1/auth/login", login).status == 401


def _run_policy_flow(client: Client, flow: Flow) -> None:
    """In a new org, change the policy, then sign in under it: grace, session limit,
    remembered device, and a password change."""
    admin = add_org("globex")
    flow.enroll(admin, flow.login_ok(admin, "authenticated")["access_token"])
    flow.next_step()
    access = flow.verify(admin, flow.mfa_token(admin)).body["access_token"]
    assert client.get("/v1/orgs/globex/mfa-policy", token=access).status == 200
    policy = MfaPolicy(grace_days=3, max_sessions=1, reauthentication="every_24h").as_json()
    changed = client.request("PUT", "/v1/orgs/globex/mfa-policy", json_body=policy, token=access)
    assert changed.status == 200, changed.text
    newcomer = add_member("globex", "newcomer@globex.example")
    assert flow.login_ok(newcomer, "authenticated")["mfa_enrollment_deadline"]
    assert client.get("/v1/orgs/globex/users", token=access).status == 200
    assert client.get("/v1/orgs/globex/mfa-status", token=access).status == 200
    changed_role = client.request(
        "PATCH",
        f"/v1/orgs/globex/users/{newcomer.user_id}",
        json_body={"role": "viewer"},
        token=access,
    )
    assert changed_role.status == 200, changed_role.text

    flow.next_step()
    login = client.post(
        "/v1/auth/login",
        {
            "org_id": admin.org_id,
            "email": admin.email,
            "password": admin.password,
            "device_id": "device-0123456789abcdef",
        },
    ).body
    verified = flow.verify(admin, login["mfa_token"])
    assert verified.status == 200, verified.text
    remembered = client.post(
        "/v1/auth/login",
        {
            "org_id": admin.org_id,
            "email": admin.email,
            "password": admin.password,
            "device_id": "device-0123456789abcdef",
            "remember_device_token": verified.body["remember_device_token"],
        },
    )
    assert remembered.body["status"] == "authenticated", remembered.text
    forgotten = client.delete("/v1/me/remembered-devices", token=remembered.body["access_token"])
    assert forgotten.status == 204
    flow.next_step()
    current = flow.verify(admin, flow.mfa_token(admin)).body["access_token"]
    new_password = "a new and longer passphrase"
    changed_password = client.request(
        "PUT",
        "/v1/me/password",
        json_body={"current_password": admin.password, "new_password": new_password},
        token=current,
    )
    assert changed_password.status == 204, changed_password.text
    admin.password = new_password
    _run_blocked_login(client, flow, newcomer)


def _run_blocked_login(client: Client, flow: Flow, member: Member) -> None:
    """Sign in from France, then from Australia two hours later where the org blocks that."""
    set_policy("globex", enforcement="optional", geo_anomaly_action="block")
    body = {"org_id": member.org_id, "email": member.email, "password": member.password}
    france = client.post("/v1/auth/login", body, headers={SOURCE_IP_HEADER: "94.23.0.1"})
    assert france.status == 200, france.text
    flow.clock.advance(2 * 3600)
    australia = client.post("/v1/auth/login", body, headers={SOURCE_IP_HEADER: "203.2.218.214"})
    assert australia.status == 403, australia.text


def _run_authorizer_flow(client: Client, flow: Flow) -> None:
    """Pass and fail the authorizer, with an audited step-up denial, and ask for the reason."""
    member = add_member("acme", "agents@acme.example")
    token = flow.login_ok(member, "authenticated")["access_token"]
    denied = client.request("PUT", "/v1/agents/a1/config", json_body={}, token=token)
    assert denied.status == 403
    reason = client.post(
        "/v1/auth/authorize", {"method": "PUT", "path": "/v1/agents/a1/config"}, token=token
    )
    assert reason.status == 403
    assert reason.body["code"] == "step_up_required"

    flow.enroll(member, token)
    flow.next_step()
    fresh = flow.verify(member, flow.mfa_token(member)).body["access_token"]
    allowed = client.request("PUT", "/v1/agents/a1/config", json_body={}, token=fresh)
    assert allowed.status == 200, allowed.text


def _run_sms_flow(client: Client, flow: Flow) -> None:
    """Enroll a phone after TOTP, and sign in and regenerate backup codes with it."""
    member = add_member("acme", "phone@acme.example")
    flow.clock.advance(60)
    access, factor_id = enroll_phone(flow, member)
    codes = client.get("/v1/me/backup-codes", token=access)
    assert codes.status == 200

    flow.clock.advance(31)
    mfa_token = flow.mfa_token(member)
    challenge = client.post("/v1/auth/mfa/challenge", {"factor_id": factor_id}, token=mfa_token)
    assert challenge.status == 200, challenge.text
    proof = {
        "factor_id": factor_id,
        "code": last_code(),
        "challenge_id": challenge.body["challenge_id"],
    }
    login = client.post("/v1/auth/mfa/verify", proof, token=mfa_token)
    assert login.status == 200, login.text

    regenerated = client.post("/v1/me/backup-codes", {}, token=login.body["access_token"])
    assert regenerated.status == 201, regenerated.text
    code = regenerated.body["backup_codes"][0]
    reply = client.post("/v1/auth/mfa/verify", {"backup_code": code}, token=flow.mfa_token(member))
    assert reply.status == 200, reply.text


def _run_audit_flow(client: Client, flow: Flow, stack: LocalStack) -> None:
    """Export and verify a trail after the sealer has sealed the hours so far."""
    member = add_org("hooli")
    flow.clock.advance(2 * 60 * 60)
    result = stack.function("AuditSealerFunction").invoke({})
    assert result["digests_written"] >= 2
    access = flow.login_ok(member, "authenticated")["access_token"]
    path = f"/v1/orgs/{member.org_id}/audit"
    assert client.get(path, token=access).status == 200
    assert client.get(f"{path}?user_id={member.user_id}", token=access).status == 200
    verified = client.get(f"{path}/verify", token=access)
    assert verified.status == 200, verified.text
    assert verified.body["valid"] is True, verified.body


def _run_scan_flow(client: Client, flow: Flow, stack: LocalStack) -> None:
    """Scan every org twice: new findings notified, then updated and resolved ones, and list
    them."""
    admin = add_org("umbrella")
    set_policy("umbrella", enforcement="required", scope="roles", scope_roles=("operator",))
    member = add_member("umbrella", "ops@umbrella.example")
    flow.clock.advance(60)
    first = stack.function("CsoScanFunction").invoke({})
    assert any(org["new"] for org in first["orgs"])

    flow.enroll(member, flow.login_ok(member, "enrollment_required")["enrollment_token"])
    for _ in range(5):
        flow.login(member)
    flow.clock.advance(60)
    second = stack.function("CsoScanFunction").invoke({"org_id": "umbrella"})
    [umbrella] = second["orgs"]
    assert umbrella["resolved"], umbrella
    access = flow.login_ok(admin, "authenticated")["access_token"]
    assert client.get("/v1/orgs/umbrella/findings?status=open", token=access).status == 200


def test_policies_cover_every_call(
    client: Client,
    flow: Flow,
    acme: Member,
    stack: LocalStack,
    calls: list[Call],
) -> None:
    _drive_every_route(client, flow, acme)
    _run_audit_flow(client, flow, stack)
    _run_scan_flow(client, flow, stack)

    functions = {function for function, *_ in calls}
    # The agents example backend makes no AWS call, so it never appears here.
    assert functions == {
        "SessionFunction",
        "EnrollFunction",
        "VerifyFunction",
        "AdminFunction",
        "AuthorizerFunction",
        "ResetFunction",
        "AuditSealerFunction",
        "CsoScanFunction",
    }
    missing = set()
    for function, service, operation, params in calls:
        statements = _statements(stack, function)
        for action, resource, attributes in _required(stack, service, operation, params):
            if not _allowed(statements, action, resource, attributes):
                missing.add((function, action, resource.rsplit(":", 1)[-1]))
    assert not missing, sorted(missing)


def test_policy_check_catches_a_missing_grant(stack: LocalStack) -> None:
    """The matcher itself: the admin function may not write sessions."""
    statements = _statements(stack, "AdminFunction")
    table = stack.provisioned.table_names["SessionsTable"]
    region, account = stack.provisioned.region, stack.provisioned.account_id
    arn = f"arn:aws:dynamodb:{region}:{account}:table/{table}"
    assert _allowed(statements, "dynamodb:GetItem", arn)
    assert not _allowed(statements, "dynamodb:UpdateItem", arn)


def test_sealer_may_update_only_its_mark(stack: LocalStack) -> None:
    statements = _statements(stack, "AuditSealerFunction")
    table = stack.provisioned.table_names["OrgsTable"]
    region, account = stack.provisioned.region, stack.provisioned.account_id
    arn = f"arn:aws:dynamodb:{region}:{account}:table/{table}"
    mark = frozenset({"org_id", "audit_sealed_through"})
    assert _allowed(statements, "dynamodb:UpdateItem", arn, mark)
    assert not _allowed(statements, "dynamodb:UpdateItem", arn, mark | {"policy"})
    assert not _allowed(statements, "dynamodb:UpdateItem", arn)


# Writes that change or remove an existing item; the trail is append-only.
AUDIT_REWRITES = [
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
]


@pytest.mark.parametrize("table", ["AuditTable", "AuditDigestsTable"])
def test_no_function_may_rewrite_audit(stack: LocalStack, table: str) -> None:
    template = parse_yaml(stack.template.path.read_text(encoding="utf-8"))
    functions = [
        name
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function" and "Policies" in resource["Properties"]
    ]
    region, account = stack.provisioned.region, stack.provisioned.account_id
    arn = f"arn:aws:dynamodb:{region}:{account}:table/{stack.provisioned.table_names[table]}"
    assert "AuditSealerFunction" in functions
    for function in functions:
        statements = _statements(stack, function)
        for action in AUDIT_REWRITES:
            assert not _allowed(statements, action, arn), (function, action)


@pytest.mark.parametrize("table", ["OrgsTable", "UsersTable", "AuditTable", "FactorsTable"])
def test_scan_may_not_write_what_it_reads(stack: LocalStack, table: str) -> None:
    statements = _statements(stack, "CsoScanFunction")
    region, account = stack.provisioned.region, stack.provisioned.account_id
    arn = f"arn:aws:dynamodb:{region}:{account}:table/{stack.provisioned.table_names[table]}"
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        assert not _allowed(statements, action, arn), action
