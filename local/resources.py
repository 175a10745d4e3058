"""Create the template's AWS resources locally and resolve each function's environment."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from local.intrinsics import IntrinsicContext, PhysicalResource, resolve, resolve_string
from local.template import FunctionSpec, ResourceSpec, Template, TemplateError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_kms.client import KMSClient
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_ssm.client import SSMClient

logger = logging.getLogger(__name__)

DEFAULT_NAME_PREFIX = "mfa-local"
DEFAULT_REGION = "us-east-1"
DEFAULT_API_ID = "local"

# moto accepts any credentials. These fixed values never match a real account.
FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - fake, see above

# A placeholder so the secret exists before `mfa-admin signing-key rotate` writes the key set.
PLACEHOLDER_SECRET_STRING = "{}"  # noqa: S105 - an empty JSON object

_NO_VALUE = {"Ref": "AWS::NoValue"}


@dataclass(frozen=True)
class ProvisionedStack:
    """The created resources, their physical names, and each function's resolved environment."""

    context: IntrinsicContext
    table_names: Mapping[str, str]
    environments: Mapping[str, Mapping[str, str]]
    endpoint_url: str
    name_prefix: str

    @property
    def region(self) -> str:
        return self.context.region

    @property
    def account_id(self) -> str:
        return self.context.account_id

    def physical_id(self, logical_id: str) -> str:
        """Return what `!Ref logical_id` resolves to."""
        return self.context.ref(logical_id)


def physical_name(name_prefix: str, logical_id: str) -> str:
    return f"{name_prefix}-{logical_id}"


def aws_session(region: str = DEFAULT_REGION) -> boto3.session.Session:
    """Return a boto3 session with the fake credentials that the local endpoint accepts."""
    return boto3.session.Session(
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
        region_name=region,
    )


def provision(
    template: Template,
    endpoint_url: str,
    *,
    name_prefix: str = DEFAULT_NAME_PREFIX,
    region: str = DEFAULT_REGION,
    parameter_overrides: Mapping[str, str] | None = None,
    api_id: str = DEFAULT_API_ID,
) -> ProvisionedStack:
    """Create the KMS keys, DynamoDB tables, secrets, SSM parameters, SNS topics and EventBridge
    buses of `template`.

    The endpoint must start empty: a resource that already exists makes the create call fail.
    """
    session = aws_session(region)
    identity = session.client("sts", endpoint_url=endpoint_url).get_caller_identity()
    created: dict[str, PhysicalResource] = {}
    context = IntrinsicContext(
        region=region,
        account_id=str(identity["Account"]),
        resources=created,
        parameters=_parameter_values(template, parameter_overrides or {}),
        stack_name=name_prefix,
    )

    # Keys come first because secrets and tables may name them in KmsKeyId.
    kms = session.client("kms", endpoint_url=endpoint_url)
    for resource in template.kms_keys:
        created[resource.logical_id] = _create_kms_key(kms, resource, name_prefix, context)

    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    table_names: dict[str, str] = {}
    for resource in template.tables:
        table = _create_table(dynamodb, resource, name_prefix, context)
        created[resource.logical_id] = table
        table_names[resource.logical_id] = table.ref

    secretsmanager = session.client("secretsmanager", endpoint_url=endpoint_url)
    for resource in template.secrets:
        created[resource.logical_id] = _create_secret(
            secretsmanager, resource, name_prefix, context
        )

    ssm = session.client("ssm", endpoint_url=endpoint_url)
    for resource in template.ssm_parameters:
        created[resource.logical_id] = _create_ssm_parameter(ssm, resource, name_prefix, context)

    sns = session.client("sns", endpoint_url=endpoint_url)
    for resource in template.sns_topics:
        created[resource.logical_id] = _create_sns_topic(sns, resource, name_prefix, context)

    events = session.client("events", endpoint_url=endpoint_url)
    for resource in template.event_buses:
        created[resource.logical_id] = _create_event_bus(events, resource, name_prefix, context)

    s3 = session.client("s3", endpoint_url=endpoint_url)
    for resource in template.s3_buckets:
        created[resource.logical_id] = _create_s3_bucket(s3, resource, name_prefix, context)

    _add_unprovisioned_refs(template, created, name_prefix, context, api_id)
    environments = {
        function.logical_id: resolve_environment(function, context)
        for function in template.functions
    }
    return ProvisionedStack(context, table_names, environments, endpoint_url, name_prefix)


def resolve_environment(function: FunctionSpec, context: IntrinsicContext) -> dict[str, str]:
    return {
        name: resolve_string(value, context)
        for name, value in function.environment.items()
        if value != _NO_VALUE
    }


def delete_resources(template: Template, provisioned: ProvisionedStack) -> None:
    """Delete what `provision` created, so a later stack in this process can reuse the names.

    A failed deletion is logged and skipped. KMS keys cannot be deleted at once, so each key is
    scheduled for deletion after the minimum of 7 days, and its alias is deleted.
    """
    session = aws_session(provisioned.region)
    endpoint_url = provisioned.endpoint_url
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    secretsmanager = session.client("secretsmanager", endpoint_url=endpoint_url)
    ssm = session.client("ssm", endpoint_url=endpoint_url)
    kms = session.client("kms", endpoint_url=endpoint_url)

    deletions: list[tuple[str, Callable[[], object]]] = []
    for table in template.tables:
        name = provisioned.physical_id(table.logical_id)
        deletions.append((table.logical_id, partial(dynamodb.delete_table, TableName=name)))
    for secret in template.secrets:
        arn = provisioned.physical_id(secret.logical_id)
        delete_secret = partial(
            secretsmanager.delete_secret, SecretId=arn, ForceDeleteWithoutRecovery=True
        )
        deletions.append((secret.logical_id, delete_secret))
    for parameter in template.ssm_parameters:
        name = provisioned.physical_id(parameter.logical_id)
        deletions.append((parameter.logical_id, partial(ssm.delete_parameter, Name=name)))
    sns = session.client("sns", endpoint_url=endpoint_url)
    for topic in template.sns_topics:
        arn = provisioned.physical_id(topic.logical_id)
        deletions.append((topic.logical_id, partial(sns.delete_topic, TopicArn=arn)))
    events = session.client("events", endpoint_url=endpoint_url)
    for bus in template.event_buses:
        name = provisioned.physical_id(bus.logical_id)
        deletions.append((bus.logical_id, partial(events.delete_event_bus, Name=name)))

    s3 = session.client("s3", endpoint_url=endpoint_url)
    for bucket in template.s3_buckets:
        name = provisioned.physical_id(bucket.logical_id)
        deletions.append((bucket.logical_id, partial(_delete_bucket, s3, name)))
    for key in template.kms_keys:
        alias = f"alias/{physical_name(provisioned.name_prefix, key.logical_id)}"
        key_id = provisioned.physical_id(key.logical_id)
        deletions.append((key.logical_id, partial(kms.delete_alias, AliasName=alias)))
        schedule = partial(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
        deletions.append((key.logical_id, schedule))

    for logical_id, delete in deletions:
        try:
            delete()
        except (BotoCoreError, ClientError) as error:
            logger.warning(
                "failed to delete resource",
                extra={"logical_id": logical_id, "error": str(error)},
            )


def empty_tables(endpoint_url: str, table_names: Mapping[str, str], region: str) -> int:
    """Delete every item of the given tables and return how many items were deleted."""
    dynamodb = aws_session(region).client("dynamodb", endpoint_url=endpoint_url)
    deleted = 0
    for table_name in table_names.values():
        key_names = [
            element["AttributeName"]
            for element in dynamodb.describe_table(TableName=table_name)["Table"]["KeySchema"]
        ]
        projection = ", ".join(f"#k{index}" for index in range(len(key_names)))
        names = {f"#k{index}": key_name for index, key_name in enumerate(key_names)}
        paginator = dynamodb.get_paginator("scan")
        pages = paginator.paginate(
            TableName=table_name,
            ProjectionExpression=projection,
            ExpressionAttributeNames=names,
        )
        for page in pages:
            for item in page.get("Items", []):
                dynamodb.delete_item(TableName=table_name, Key=item)
                deleted += 1
    return deleted


def _parameter_values(template: Template, overrides: Mapping[str, str]) -> dict[str, str]:
    defaults = template.parameter_defaults
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise TemplateError(f"unknown parameters in parameter_overrides: {unknown}")

    values: dict[str, str] = {}
    for name, default in defaults.items():
        value = overrides.get(name, default)
        if value is None:
            raise TemplateError(
                f"parameter {name} has no Default, so pass it in parameter_overrides"
            )
        values[name] = value
    return values


def _create_kms_key(
    kms: KMSClient, resource: ResourceSpec, name_prefix: str, context: IntrinsicContext
) -> PhysicalResource:
    properties = resolve(dict(resource.properties), context)
    arguments: dict[str, Any] = {
        "KeyUsage": properties.get("KeyUsage", "ENCRYPT_DECRYPT"),
        "KeySpec": properties.get("KeySpec", "SYMMETRIC_DEFAULT"),
    }
    if "Description" in properties:
        arguments["Description"] = properties["Description"]
    if "KeyPolicy" in properties:
        arguments["Policy"] = json.dumps(properties["KeyPolicy"])
    metadata = kms.create_key(**arguments)["KeyMetadata"]
    key_id = str(metadata["KeyId"])

    if properties.get("EnableKeyRotation"):
        kms.enable_key_rotation(KeyId=key_id)
    # CloudFormation gives the key no alias. This one only helps a reader find the key locally.
    kms.create_alias(
        AliasName=f"alias/{physical_name(name_prefix, resource.logical_id)}", TargetKeyId=key_id
    )
    logger.info("created KMS key", extra={"logical_id": resource.logical_id, "key_id": key_id})
    return PhysicalResource(
        resource.logical_id, key_id, {"Arn": str(metadata["Arn"]), "KeyId": key_id}
    )


def _create_table(
    dynamodb: DynamoDBClient, resource: ResourceSpec, name_prefix: str, context: IntrinsicContext
) -> PhysicalResource:
    properties = resolve(dict(resource.properties), context)
    table_name = str(properties.get("TableName") or physical_name(name_prefix, resource.logical_id))
    description = dynamodb.create_table(**_table_arguments(table_name, properties))[
        "TableDescription"
    ]

    ttl = properties.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )
    recovery = properties.get("PointInTimeRecoverySpecification")
    if recovery and recovery.get("PointInTimeRecoveryEnabled"):
        dynamodb.update_continuous_backups(
            TableName=table_name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )

    logger.info("created table", extra={"logical_id": resource.logical_id, "table": table_name})
    attributes = {"Arn": str(description["TableArn"])}
    if "LatestStreamArn" in description:
        attributes["StreamArn"] = str(description["LatestStreamArn"])
    return PhysicalResource(resource.logical_id, table_name, attributes)


def _table_arguments(table_name: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    billing_mode = properties.get("BillingMode", "PROVISIONED")
    arguments: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": billing_mode,
    }
    if billing_mode == "PROVISIONED":
        arguments["ProvisionedThroughput"] = _throughput(properties.get("ProvisionedThroughput"))

    indexes = []
    for index in properties.get("GlobalSecondaryIndexes") or []:
        index_arguments = {
            "IndexName": index["IndexName"],
            "KeySchema": index["KeySchema"],
            "Projection": index["Projection"],
        }
        if billing_mode == "PROVISIONED":
            index_arguments["ProvisionedThroughput"] = _throughput(
                index.get("ProvisionedThroughput")
            )
        indexes.append(index_arguments)
    if indexes:
        arguments["GlobalSecondaryIndexes"] = indexes

    local_indexes = properties.get("LocalSecondaryIndexes")
    if local_indexes:
        arguments["LocalSecondaryIndexes"] = local_indexes

    sse = properties.get("SSESpecification")
    if sse:
        arguments["SSESpecification"] = _sse_arguments(sse)

    stream = properties.get("StreamSpecification")
    if stream:
        arguments["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": stream["StreamViewType"],
        }
    return arguments


def _throughput(throughput: Mapping[str, Any] | None) -> dict[str, int]:
    if not throughput:
        raise TemplateError("a PROVISIONED table or index needs ProvisionedThroughput")
    return {
        "ReadCapacityUnits": int(throughput["ReadCapacityUnits"]),
        "WriteCapacityUnits": int(throughput["WriteCapacityUnits"]),
    }


def _sse_arguments(sse: Mapping[str, Any]) -> dict[str, Any]:
    # CloudFormation spells the flag SSEEnabled, but the CreateTable API spells it Enabled.
    arguments: dict[str, Any] = {"Enabled": bool(sse.get("SSEEnabled"))}
    if "SSEType" in sse:
        arguments["SSEType"] = sse["SSEType"]
    if "KMSMasterKeyId" in sse:
        arguments["KMSMasterKeyId"] = sse["KMSMasterKeyId"]
    return arguments


def _create_secret(
    secretsmanager: SecretsManagerClient,
    resource: ResourceSpec,
    name_prefix: str,
    context: IntrinsicContext,
) -> PhysicalResource:
    properties = resolve(dict(resource.properties), context)
    secret_string = properties.get("SecretString", PLACEHOLDER_SECRET_STRING)
    generate = properties.get("GenerateSecretString")
    if isinstance(generate, dict):
        # CloudFormation generates the value, so a random one of the requested length replaces it.
        length = int(generate.get("PasswordLength", 32))
        secret_string = secrets.token_urlsafe(length)[:length]
    arguments: dict[str, Any] = {
        "Name": str(properties.get("Name") or physical_name(name_prefix, resource.logical_id)),
        "SecretString": secret_string,
    }
    for name in ("Description", "KmsKeyId"):
        if name in properties:
            arguments[name] = properties[name]
    arn = str(secretsmanager.create_secret(**arguments)["ARN"])
    logger.info("created secret", extra={"logical_id": resource.logical_id, "secret_arn": arn})
    # !Ref of a secret is its ARN, and so is its Id attribute.
    return PhysicalResource(resource.logical_id, arn, {"Id": arn})


def _create_ssm_parameter(
    ssm: SSMClient, resource: ResourceSpec, name_prefix: str, context: IntrinsicContext
) -> PhysicalResource:
    properties = resolve(dict(resource.properties), context)
    name = str(properties.get("Name") or physical_name(name_prefix, resource.logical_id))
    arguments: dict[str, Any] = {
        "Name": name,
        "Type": properties["Type"],
        "Value": str(properties["Value"]),
    }
    for optional in ("Description", "Tier"):
        if optional in properties:
            arguments[optional] = properties[optional]
    ssm.put_parameter(**arguments)
    logger.info(
        "created SSM parameter", extra={"logical_id": resource.logical_id, "parameter": name}
    )
    return PhysicalResource(
        resource.logical_id, name, {"Type": str(properties["Type"]), "Value": arguments["Value"]}
    )


def _create_sns_topic(
    sns: Any, resource: ResourceSpec, name_prefix: str, context: IntrinsicContext
) -> PhysicalResource:
    properties = resolve(dict(resource.properties), context)
    name = str(properties.get("TopicName") or physical_name(name_prefix, resource.logical_id))
    attributes = {}
    if "KmsMasterKeyId" in properties:
        attributes["KmsMasterKeyId"] = str(properties["KmsMasterKeyId"])
    arn = str(sns.create_topic(Name=name, Attributes=attributes)["TopicArn"])
    logger.info("created SNS topic", extra={"logical_id": resource.logical_id, "topic_arn": arn})
    # !Ref of a topic is its ARN; its TopicName attribute is the name.
    return PhysicalResource(resource.logical_id, arn, {"TopicArn": arn, "TopicName": name})


def _create_event_bus(
    events: Any, resource: ResourceSpec, name_prefix: str, context: IntrinsicContext
) -> PhysicalResource:
    properties = resolve(dict(resource.properties), context)
    name = str(properties.get("Name") or physical_name(name_prefix, resource.logical_id))
    arn = str(events.create_event_bus(Name=name)["EventBusArn"])
    logger.info("created event bus", extra={"logical_id": resource.logical_id, "bus_arn": arn})
    # !Ref of a bus is its name; its Arn and Name attributes are the ARN and the name.
    return PhysicalResource(resource.logical_id, name, {"Arn": arn, "Name": name})


def _create_s3_bucket(
    s3: Any, resource: ResourceSpec, name_prefix: str, context: IntrinsicContext
) -> PhysicalResource:
    properties = resolve(dict(resource.properties), context)
    # Bucket names are lower-case.
    name = str(
        properties.get("BucketName") or physical_name(name_prefix, resource.logical_id).lower()
    )
    s3.create_bucket(Bucket=name)
    versioning = properties.get("VersioningConfiguration")
    if versioning:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": versioning["Status"]}
        )
    logger.info("created S3 bucket", extra={"logical_id": resource.logical_id, "bucket": name})
    arn = f"arn:{context.partition}:s3:::{name}"
    # !Ref of a bucket is its name.
    return PhysicalResource(resource.logical_id, name, {"Arn": arn})


def _delete_bucket(s3: Any, name: str) -> None:
    """Delete every version of every object, then the bucket."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        for version in (*page.get("Versions", []), *page.get("DeleteMarkers", [])):
            s3.delete_object(Bucket=name, Key=version["Key"], VersionId=version["VersionId"])
    s3.delete_bucket(Bucket=name)


def _add_unprovisioned_refs(
    template: Template,
    created: dict[str, PhysicalResource],
    name_prefix: str,
    context: IntrinsicContext,
    api_id: str,
) -> None:
    """Give functions and HTTP APIs the names that `!Ref` returns, though nothing is created."""
    for function in template.functions:
        name = physical_name(name_prefix, function.logical_id)
        arn = (
            f"arn:{context.partition}:lambda:{context.region}:{context.account_id}:function:{name}"
        )
        created[function.logical_id] = PhysicalResource(function.logical_id, name, {"Arn": arn})
    for api in template.http_apis:
        created[api.logical_id] = PhysicalResource(api.logical_id, api_id)
