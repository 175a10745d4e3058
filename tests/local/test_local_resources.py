"""Creation of the real template's resources in moto, and the environment that refers to them."""

from __future__ import annotations

import json

import pytest

from local.resources import (
    PLACEHOLDER_SECRET_STRING,
    ProvisionedStack,
    aws_session,
    empty_tables,
    provision,
)
from local.template import Template, TemplateError, load_template

PREFIX = "mfa-test-resources"


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def provisioned(template: Template, moto_endpoint: str) -> ProvisionedStack:
    return provision(
        template, moto_endpoint, name_prefix=PREFIX, parameter_overrides={"LogLevel": "DEBUG"}
    )


def test_every_table_created(
    template: Template, provisioned: ProvisionedStack, moto_endpoint: str
) -> None:
    dynamodb = aws_session().client("dynamodb", endpoint_url=moto_endpoint)
    existing = set(dynamodb.list_tables()["TableNames"])

    for table in template.tables:
        assert provisioned.table_names[table.logical_id] == f"{PREFIX}-{table.logical_id}"
        assert provisioned.table_names[table.logical_id] in existing


def test_table_schema_matches_template(provisioned: ProvisionedStack, moto_endpoint: str) -> None:
    dynamodb = aws_session().client("dynamodb", endpoint_url=moto_endpoint)
    table_name = provisioned.table_names["SessionsTable"]

    table = dynamodb.describe_table(TableName=table_name)["Table"]
    ttl = dynamodb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]

    assert table["KeySchema"] == [{"AttributeName": "session_id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["user-index"]
    assert table["GlobalSecondaryIndexes"][0]["KeySchema"] == [
        {"AttributeName": "user_key", "KeyType": "HASH"},
        {"AttributeName": "created_at", "KeyType": "RANGE"},
    ]
    assert table["SSEDescription"]["Status"] == "ENABLED"
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_environment_names_real_tables(provisioned: ProvisionedStack, moto_endpoint: str) -> None:
    dynamodb = aws_session().client("dynamodb", endpoint_url=moto_endpoint)
    existing = set(dynamodb.list_tables()["TableNames"])

    for function_id, environment in provisioned.environments.items():
        assert environment["MFA_USERS_TABLE"] in existing, function_id
        assert environment["MFA_USERS_TABLE"] == f"{PREFIX}-UsersTable"
        assert environment["MFA_AUDIT_TABLE"] == f"{PREFIX}-AuditTable"


def test_environment_kms_key_encrypts(provisioned: ProvisionedStack, moto_endpoint: str) -> None:
    kms = aws_session().client("kms", endpoint_url=moto_endpoint)
    key_id = provisioned.environments["EnrollFunction"]["MFA_KMS_KEY_ID"]

    ciphertext = kms.encrypt(KeyId=key_id, Plaintext=b"seed")["CiphertextBlob"]

    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"seed"
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True


def test_environment_secret_is_arn(provisioned: ProvisionedStack, moto_endpoint: str) -> None:
    secretsmanager = aws_session().client("secretsmanager", endpoint_url=moto_endpoint)
    secret_arn = provisioned.environments["SessionFunction"]["MFA_SIGNING_KEY_SECRET"]

    secret = secretsmanager.describe_secret(SecretId=secret_arn)
    value = secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"]

    assert secret_arn.startswith("arn:aws:secretsmanager:us-east-1:")
    assert secret["Name"] == f"{PREFIX}-SigningKeySecret"
    assert secret["KmsKeyId"] == provisioned.physical_id("MfaKey")
    assert value == PLACEHOLDER_SECRET_STRING


def test_environment_ssm_parameter_name(provisioned: ProvisionedStack, moto_endpoint: str) -> None:
    ssm = aws_session().client("ssm", endpoint_url=moto_endpoint)
    name = provisioned.environments["VerifyFunction"]["MFA_JWKS_PARAMETER"]

    parameter = ssm.get_parameter(Name=name)["Parameter"]

    assert name == f"{PREFIX}-JwksParameter"
    assert json.loads(parameter["Value"]) == {"keys": []}


def test_environment_event_bus_name(provisioned: ProvisionedStack, moto_endpoint: str) -> None:
    events = aws_session().client("events", endpoint_url=moto_endpoint)
    name = provisioned.environments["CsoScanFunction"]["MFA_FINDINGS_BUS_NAME"]

    bus = events.describe_event_bus(Name=name)

    assert name == f"{PREFIX}-findings"
    assert bus["Arn"] == provisioned.context.get_att("FindingsEventBus", "Arn")


def test_environment_parameters_resolved(provisioned: ProvisionedStack) -> None:
    environment = provisioned.environments["AdminFunction"]

    assert environment["MFA_TOKEN_ISSUER"] == "https://mfa.example.com"
    assert environment["MFA_TOTP_ISSUER"] == "Agent Console"
    assert environment["POWERTOOLS_LOG_LEVEL"] == "DEBUG"
    assert environment["POWERTOOLS_LOGGER_LOG_EVENT"] == "false"


def test_empty_tables_deletes_items(provisioned: ProvisionedStack, moto_endpoint: str) -> None:
    dynamodb = aws_session().client("dynamodb", endpoint_url=moto_endpoint)
    users = provisioned.table_names["UsersTable"]
    for index in range(3):
        dynamodb.put_item(
            TableName=users,
            Item={"org_id": {"S": "o"}, "user_id": {"S": f"u{index}"}, "email_key": {"S": "e"}},
        )

    deleted = empty_tables(moto_endpoint, provisioned.table_names, provisioned.region)

    assert deleted == 3
    assert dynamodb.scan(TableName=users)["Count"] == 0


def test_unknown_parameter_override_rejected(template: Template, moto_endpoint: str) -> None:
    with pytest.raises(TemplateError, match="NoSuchParameter"):
        provision(
            template,
            moto_endpoint,
            name_prefix=f"{PREFIX}-rejected",
            parameter_overrides={"NoSuchParameter": "x"},
        )
