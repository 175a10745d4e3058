"""Evaluation of Ref, GetAtt, Sub, Join, Select and Split."""

from __future__ import annotations

import pytest

from local.intrinsics import IntrinsicContext, PhysicalResource, resolve, resolve_string
from local.template import TemplateError

CONTEXT = IntrinsicContext(
    region="eu-west-1",
    account_id="111122223333",
    resources={
        "UsersTable": PhysicalResource(
            "UsersTable",
            "mfa-local-UsersTable",
            {"Arn": "arn:aws:dynamodb:eu-west-1:111122223333:table/mfa-local-UsersTable"},
        ),
        "JwksParameter": PhysicalResource("JwksParameter", "/mfa/jwks"),
    },
    parameters={"Stage": "dev"},
)


def test_ref_resolves_resources_and_parameters() -> None:
    assert resolve({"Ref": "UsersTable"}, CONTEXT) == "mfa-local-UsersTable"
    assert resolve({"Ref": "Stage"}, CONTEXT) == "dev"
    assert resolve({"Ref": "AWS::Region"}, CONTEXT) == "eu-west-1"
    assert resolve({"Ref": "AWS::AccountId"}, CONTEXT) == "111122223333"
    assert resolve({"Ref": "AWS::Partition"}, CONTEXT) == "aws"


def test_get_att_resolves_arn() -> None:
    expected = "arn:aws:dynamodb:eu-west-1:111122223333:table/mfa-local-UsersTable"

    assert resolve({"Fn::GetAtt": ["UsersTable", "Arn"]}, CONTEXT) == expected
    assert resolve({"Fn::GetAtt": "UsersTable.Arn"}, CONTEXT) == expected


def test_sub_replaces_every_variable_form() -> None:
    text = (
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${JwksParameter}"
        " ${UsersTable.Arn}/index/x ${Stage} ${!Literal} ${Extra}"
    )

    resolved = resolve({"Fn::Sub": [text, {"Extra": {"Ref": "Stage"}}]}, CONTEXT)

    assert resolved == (
        "arn:aws:ssm:eu-west-1:111122223333:parameter/mfa/jwks"
        " arn:aws:dynamodb:eu-west-1:111122223333:table/mfa-local-UsersTable/index/x"
        " dev ${Literal} dev"
    )


def test_join_select_split() -> None:
    joined = {"Fn::Join": ["-", [{"Ref": "Stage"}, "x", 3]]}
    selected = {"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]}

    assert resolve(joined, CONTEXT) == "dev-x-3"
    assert resolve(selected, CONTEXT) == "b"


def test_resolve_string_converts_scalars() -> None:
    assert resolve_string(True, CONTEXT) == "true"
    assert resolve_string(10, CONTEXT) == "10"
    assert resolve_string("plain", CONTEXT) == "plain"


def test_unknown_names_raise() -> None:
    with pytest.raises(TemplateError, match="Ref Missing"):
        resolve({"Ref": "Missing"}, CONTEXT)
    with pytest.raises(TemplateError, match=r"GetAtt UsersTable\.StreamArn"):
        resolve({"Fn::GetAtt": ["UsersTable", "StreamArn"]}, CONTEXT)
    with pytest.raises(TemplateError, match="Fn::If"):
        resolve({"Fn::If": ["Cond", "a", "b"]}, CONTEXT)
