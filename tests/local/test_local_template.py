"""Parsing of the SAM template: short tags, functions, routes, resources and parameters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from local.template import (
    DEFAULT_TEMPLATE_PATH,
    HttpRoute,
    TemplateError,
    load_template,
    parse_yaml,
)

TEMPLATE_TEXT = DEFAULT_TEMPLATE_PATH.read_text(encoding="utf-8")


def _routes_in_text(text: str) -> set[str]:
    """Read `Path: ..., Method: ...` pairs straight from the text, independently of the loader."""
    pattern = re.compile(r"Path:\s*(?:\"([^\"]+)\"|([^\s,}]+))\s*,\s*Method:\s*(\w+)")
    return {f"{method.upper()} {quoted or bare}" for quoted, bare, method in pattern.findall(text)}


def _logical_ids_of_type(text: str, resource_type: str) -> set[str]:
    pattern = re.compile(rf"^  (\w+):\n    Type: {re.escape(resource_type)}$", re.MULTILINE)
    return set(pattern.findall(text))


def test_short_tags_become_long_form() -> None:
    document = parse_yaml(
        "a: !Ref Table\n"
        "b: !GetAtt Table.Arn\n"
        'c: !Sub ["${X}-y", {X: !Ref Z}]\n'
        'd: !Join [",", [a, b]]\n'
        'e: !Select [0, !Split [",", "p,q"]]\n'
        "f: !If [Cond, 1, 2]\n"
    )

    assert document["a"] == {"Ref": "Table"}
    assert document["b"] == {"Fn::GetAtt": ["Table", "Arn"]}
    assert document["c"] == {"Fn::Sub": ["${X}-y", {"X": {"Ref": "Z"}}]}
    assert document["d"] == {"Fn::Join": [",", ["a", "b"]]}
    assert document["e"] == {"Fn::Select": [0, {"Fn::Split": [",", "p,q"]}]}
    assert document["f"] == {"Fn::If": ["Cond", 1, 2]}


def test_template_routes_match_text() -> None:
    template = load_template()
    routes = {route.route_key for function in template.functions for route in function.routes}

    expected = _routes_in_text(TEMPLATE_TEXT)
    assert expected, "the text scan found no routes"
    assert routes == expected
    assert "POST /v1/auth/login" in routes
    assert "DELETE /v1/me/sessions/{sid}" in routes


def test_template_tables_match_text() -> None:
    template = load_template()

    expected = _logical_ids_of_type(TEMPLATE_TEXT, "AWS::DynamoDB::Table")
    assert expected, "the text scan found no tables"
    assert {table.logical_id for table in template.tables} == expected


def test_template_other_resources_found() -> None:
    template = load_template()

    for resource_type, found in [
        ("AWS::KMS::Key", template.kms_keys),
        ("AWS::SecretsManager::Secret", template.secrets),
        ("AWS::SSM::Parameter", template.ssm_parameters),
    ]:
        assert {resource.logical_id for resource in found} == _logical_ids_of_type(
            TEMPLATE_TEXT, resource_type
        )


def test_template_functions_merge_globals() -> None:
    template = load_template()
    session = template.function("SessionFunction")

    assert session.code_uri == DEFAULT_TEMPLATE_PATH.parent / "functions" / "session"
    assert session.handler_module == "app"
    assert session.handler_function == "lambda_handler"
    assert session.module_path == session.code_uri / "app.py"
    assert session.environment["MFA_USERS_TABLE"] == {"Ref": "UsersTable"}
    assert session.environment["POWERTOOLS_SERVICE_NAME"] == "mfa"
    assert session.layer_ids == ("MfaCoreLayer",)
    assert session.memory_size_mb == 512
    assert session.timeout_seconds == 10


def test_template_parameters_have_defaults() -> None:
    defaults = load_template().parameter_defaults

    assert defaults["TokenIssuer"] == "https://mfa.example.com"
    assert defaults["LogLevel"] == "INFO"


def test_template_layer_python_path() -> None:
    layers = load_template().layers

    assert [layer.logical_id for layer in layers] == ["MfaCoreLayer"]
    # The layer has a python BuildMethod, so `sam build` puts ContentUri itself on sys.path.
    assert layers[0].python_path == DEFAULT_TEMPLATE_PATH.parent / "layers" / "mfa_core"


def test_function_overrides_global_variable(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Globals:\n"
        "  Function:\n"
        "    Handler: app.handler\n"
        "    Environment: {Variables: {A: global, B: global}}\n"
        "Resources:\n"
        "  Fn:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties:\n"
        "      CodeUri: src/\n"
        "      Environment: {Variables: {B: own}}\n"
        "      Events:\n"
        "        Root: {Type: HttpApi}\n"
        "        Any: {Type: HttpApi, Properties: {Path: /x, Method: any}}\n",
        encoding="utf-8",
    )

    function = load_template(path).function("Fn")

    assert function.environment == {"A": "global", "B": "own"}
    assert function.handler == "app.handler"
    assert function.memory_size_mb == 128
    assert function.timeout_seconds == 3
    assert function.routes == (HttpRoute("ANY", "$default"), HttpRoute("ANY", "/x"))
    assert function.routes[0].route_key == "$default"


def test_payload_version_one_rejected(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n"
        "  Fn:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties:\n"
        "      CodeUri: src/\n"
        "      Handler: app.handler\n"
        "      Events:\n"
        "        Get:\n"
        "          Type: HttpApi\n"
        "          Properties: {Path: /x, Method: GET, PayloadFormatVersion: '1.0'}\n",
        encoding="utf-8",
    )

    with pytest.raises(TemplateError, match=r"payload format version 2\.0"):
        load_template(path)
