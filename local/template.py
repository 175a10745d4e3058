"""Typed view of the SAM template: functions, their HTTP routes and authorizers, and the
resources they use."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE_PATH = PROJECT_ROOT / "template.yaml"

FUNCTION_TYPE = "AWS::Serverless::Function"
LAYER_TYPE = "AWS::Serverless::LayerVersion"
HTTP_API_TYPE = "AWS::Serverless::HttpApi"
TABLE_TYPE = "AWS::DynamoDB::Table"
KMS_KEY_TYPE = "AWS::KMS::Key"
SECRET_TYPE = "AWS::SecretsManager::Secret"  # noqa: S105 - a resource type
SSM_PARAMETER_TYPE = "AWS::SSM::Parameter"
SNS_TOPIC_TYPE = "AWS::SNS::Topic"
EVENT_BUS_TYPE = "AWS::Events::EventBus"
S3_BUCKET_TYPE = "AWS::S3::Bucket"

DEFAULT_ROUTE_KEY = "$default"
ANY_METHOD = "ANY"

# SAM defaults for AWS::Serverless::Function when neither the function nor Globals set them.
DEFAULT_MEMORY_SIZE_MB = 128
DEFAULT_TIMEOUT_SECONDS = 3

# CloudFormation short tags and the long form that each one is short for.
_SHORT_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    "GetAtt": "Fn::GetAtt",
    "Sub": "Fn::Sub",
    "Join": "Fn::Join",
    "Select": "Fn::Select",
    "Split": "Fn::Split",
    "If": "Fn::If",
    "Equals": "Fn::Equals",
    "And": "Fn::And",
    "Or": "Fn::Or",
    "Not": "Fn::Not",
    "FindInMap": "Fn::FindInMap",
    "Base64": "Fn::Base64",
    "Cidr": "Fn::Cidr",
    "GetAZs": "Fn::GetAZs",
    "ImportValue": "Fn::ImportValue",
    "Transform": "Fn::Transform",
    "Length": "Fn::Length",
    "ToJsonString": "Fn::ToJsonString",
}


class TemplateError(ValueError):
    """The template has a shape that the local stack cannot run."""


class CloudFormationLoader(yaml.SafeLoader):
    """YAML loader that turns short tags such as `!Ref X` into their long form `{"Ref": "X"}`."""


def _construct_short_tag(long_name: str, loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise TemplateError(f"unsupported YAML node for {long_name}: {node!r}")

    # `!GetAtt Resource.Attribute` is the short form of `Fn::GetAtt: [Resource, Attribute]`.
    if long_name == "Fn::GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {long_name: value}


for _short_name, _long_name in _SHORT_TAGS.items():
    CloudFormationLoader.add_constructor(
        f"!{_short_name}", functools.partial(_construct_short_tag, _long_name)
    )


@dataclass(frozen=True)
class IdentitySource:
    """A request value that a Lambda authorizer needs: a header or a query string parameter."""

    kind: str  # "header" or "querystring"
    name: str

    @property
    def expression(self) -> str:
        """Return the selection expression, such as `$request.header.Authorization`."""
        return f"$request.{self.kind}.{self.name}"


@dataclass(frozen=True)
class AuthorizerSpec:
    """A Lambda authorizer of an HTTP API, in payload format 2.0 with simple responses."""

    name: str
    function_id: str
    identity_sources: tuple[IdentitySource, ...]
    # API Gateway's cache time for results; the local gateway invokes the authorizer every time.
    reauthorize_every: int | None


@dataclass(frozen=True)
class HttpRoute:
    """One route of the HTTP API: a method (or ANY) and a path template such as `/v1/x/{id}`,
    and the Lambda authorizer that guards it, if any."""

    method: str
    path: str
    authorizer: AuthorizerSpec | None = None

    @property
    def route_key(self) -> str:
        if self.path == DEFAULT_ROUTE_KEY:
            return DEFAULT_ROUTE_KEY
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class FunctionSpec:
    """An AWS::Serverless::Function with Globals already merged in."""

    logical_id: str
    code_uri: Path
    handler: str
    environment: Mapping[str, Any]
    routes: tuple[HttpRoute, ...]
    layer_ids: tuple[str, ...]
    memory_size_mb: int
    timeout_seconds: int

    @property
    def handler_module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def handler_function(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    @property
    def module_path(self) -> Path:
        """Source file of the handler module, e.g. `functions/session/app.py`."""
        return self.code_uri.joinpath(*self.handler_module.split(".")).with_suffix(".py")


@dataclass(frozen=True)
class LayerSpec:
    """An AWS::Serverless::LayerVersion and the folder that Lambda puts on sys.path for it."""

    logical_id: str
    content_uri: Path
    python_path: Path


@dataclass(frozen=True)
class ResourceSpec:
    logical_id: str
    type: str
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: str | None


@dataclass(frozen=True)
class Template:
    path: Path
    parameters: tuple[ParameterSpec, ...]
    functions: tuple[FunctionSpec, ...]
    layers: tuple[LayerSpec, ...]
    resources: tuple[ResourceSpec, ...]

    def resources_of_type(self, resource_type: str) -> tuple[ResourceSpec, ...]:
        return tuple(resource for resource in self.resources if resource.type == resource_type)

    @property
    def tables(self) -> tuple[ResourceSpec, ...]:
        return self.resources_of_type(TABLE_TYPE)

    @property
    def kms_keys(self) -> tuple[ResourceSpec, ...]:
        return self.resources_of_type(KMS_KEY_TYPE)

    @property
    def secrets(self) -> tuple[ResourceSpec, ...]:
        return self.resources_of_type(SECRET_TYPE)

    @property
    def ssm_parameters(self) -> tuple[ResourceSpec, ...]:
        return self.resources_of_type(SSM_PARAMETER_TYPE)

    @property
    def sns_topics(self) -> tuple[ResourceSpec, ...]:
        return self.resources_of_type(SNS_TOPIC_TYPE)

    @property
    def event_buses(self) -> tuple[ResourceSpec, ...]:
        return self.resources_of_type(EVENT_BUS_TYPE)

    @property
    def s3_buckets(self) -> tuple[ResourceSpec, ...]:
        return self.resources_of_type(S3_BUCKET_TYPE)

    @property
    def http_apis(self) -> tuple[ResourceSpec, ...]:
        return self.resources_of_type(HTTP_API_TYPE)

    @property
    def parameter_defaults(self) -> dict[str, str | None]:
        return {parameter.name: parameter.default for parameter in self.parameters}

    def function(self, logical_id: str) -> FunctionSpec:
        for function in self.functions:
            if function.logical_id == logical_id:
                return function
        raise KeyError(logical_id)


def parse_yaml(text: str) -> dict[str, Any]:
    document = yaml.load(text, Loader=CloudFormationLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict):
        raise TemplateError("the template is not a YAML mapping")
    return document


def load_template(path: Path = DEFAULT_TEMPLATE_PATH) -> Template:
    """Read a SAM template and return its functions, layers, resources and parameters.

    Relative CodeUri and ContentUri paths resolve against the template's folder.
    """
    path = path.resolve()
    document = parse_yaml(path.read_text(encoding="utf-8"))
    base_dir = path.parent

    globals_section = document.get("Globals") or {}
    function_globals: Mapping[str, Any] = globals_section.get("Function") or {}
    raw_resources: Mapping[str, Any] = document.get("Resources") or {}

    api_auth = {
        logical_id: _parse_api_auth(logical_id, resource.get("Properties") or {})
        for logical_id, resource in raw_resources.items()
        if resource.get("Type") == HTTP_API_TYPE
    }
    functions: list[FunctionSpec] = []
    layers: list[LayerSpec] = []
    resources: list[ResourceSpec] = []
    for logical_id, resource in raw_resources.items():
        resource_type = resource.get("Type")
        properties = resource.get("Properties") or {}
        if resource_type == FUNCTION_TYPE:
            functions.append(
                _parse_function(logical_id, properties, function_globals, base_dir, api_auth)
            )
        elif resource_type == LAYER_TYPE:
            build_method = (resource.get("Metadata") or {}).get("BuildMethod")
            layers.append(_parse_layer(logical_id, properties, build_method, base_dir))
        else:
            resources.append(ResourceSpec(logical_id, str(resource_type), properties))

    function_ids = {function.logical_id for function in functions}
    for auth in api_auth.values():
        for authorizer in auth.authorizers.values():
            if authorizer.function_id not in function_ids:
                raise TemplateError(
                    f"authorizer {authorizer.name}: FunctionArn names {authorizer.function_id}, "
                    "which is not a function of this template"
                )

    return Template(
        path=path,
        parameters=_parse_parameters(document.get("Parameters") or {}),
        functions=tuple(functions),
        layers=tuple(layers),
        resources=tuple(resources),
    )


def _parse_parameters(raw: Mapping[str, Any]) -> tuple[ParameterSpec, ...]:
    parameters = []
    for name, spec in raw.items():
        default = spec.get("Default")
        if isinstance(default, list):
            # A CommaDelimitedList default may be written as a YAML list.
            default = ",".join(str(item) for item in default)
        parameters.append(ParameterSpec(name, None if default is None else str(default)))
    return tuple(parameters)


def _parse_function(
    logical_id: str,
    properties: Mapping[str, Any],
    function_globals: Mapping[str, Any],
    base_dir: Path,
    api_auth: Mapping[str, ApiAuth],
) -> FunctionSpec:
    def setting(name: str, default: Any = None) -> Any:
        return properties.get(name, function_globals.get(name, default))

    code_uri = setting("CodeUri")
    handler = setting("Handler")
    if not isinstance(code_uri, str) or not isinstance(handler, str) or "." not in handler:
        raise TemplateError(
            f"{logical_id}: the local stack needs a CodeUri folder and a Handler "
            f"of the form module.function (CodeUri={code_uri!r}, Handler={handler!r})"
        )

    environment = {
        **((function_globals.get("Environment") or {}).get("Variables") or {}),
        **((properties.get("Environment") or {}).get("Variables") or {}),
    }
    # SAM appends a function's own Layers to the ones in Globals.
    layer_refs = [*(function_globals.get("Layers") or []), *(properties.get("Layers") or [])]
    layer_ids = tuple(ref["Ref"] for ref in layer_refs if isinstance(ref, dict) and "Ref" in ref)

    return FunctionSpec(
        logical_id=logical_id,
        code_uri=(base_dir / code_uri).resolve(),
        handler=handler,
        environment=environment,
        routes=_parse_routes(logical_id, properties.get("Events") or {}, api_auth),
        layer_ids=layer_ids,
        memory_size_mb=int(setting("MemorySize", DEFAULT_MEMORY_SIZE_MB)),
        timeout_seconds=int(setting("Timeout", DEFAULT_TIMEOUT_SECONDS)),
    )


def _parse_routes(
    logical_id: str, events: Mapping[str, Any], api_auth: Mapping[str, ApiAuth]
) -> tuple[HttpRoute, ...]:
    routes = []
    for event_name, event in events.items():
        if event.get("Type") != "HttpApi":
            continue
        properties = event.get("Properties") or {}
        payload_version = str(properties.get("PayloadFormatVersion", "2.0"))
        if payload_version != "2.0":
            raise TemplateError(
                f"{logical_id}.{event_name}: only payload format version 2.0 is supported, "
                f"got {payload_version}"
            )
        path = properties.get("Path")
        method = properties.get("Method")
        authorizer = _route_authorizer(f"{logical_id}.{event_name}", properties, api_auth)
        if path is None and method is None:
            # An HttpApi event without Path and Method is the API's $default route.
            routes.append(HttpRoute(ANY_METHOD, DEFAULT_ROUTE_KEY, authorizer))
            continue
        if path is None or method is None:
            raise TemplateError(f"{logical_id}.{event_name}: set both Path and Method, or neither")
        routes.append(HttpRoute(_normalize_method(str(method)), str(path), authorizer))
    return tuple(routes)


@dataclass(frozen=True)
class ApiAuth:
    """The Lambda authorizers of one HTTP API, and the one its routes use by default."""

    authorizers: Mapping[str, AuthorizerSpec]
    default: str | None


# The authorizer name with which a route opts out of the API's default authorizer.
NO_AUTHORIZER = "NONE"


def _parse_api_auth(logical_id: str, properties: Mapping[str, Any]) -> ApiAuth:
    auth = properties.get("Auth") or {}
    authorizers = {
        name: _parse_authorizer(f"{logical_id}.Auth.Authorizers.{name}", name, spec or {})
        for name, spec in (auth.get("Authorizers") or {}).items()
    }
    default = auth.get("DefaultAuthorizer")
    if default is not None and default not in authorizers:
        raise TemplateError(f"{logical_id}: DefaultAuthorizer {default} is not in Authorizers")
    return ApiAuth(authorizers, default)


def _parse_authorizer(where: str, name: str, spec: Mapping[str, Any]) -> AuthorizerSpec:
    function_arn = spec.get("FunctionArn")
    target = function_arn.get("Fn::GetAtt") if isinstance(function_arn, dict) else None
    if not (isinstance(target, list) and len(target) == 2 and target[1] == "Arn"):
        raise TemplateError(
            f"{where}: the local stack runs Lambda authorizers only, with FunctionArn given as "
            "!GetAtt <function>.Arn"
        )
    version = str(spec.get("AuthorizerPayloadFormatVersion", ""))
    if version not in {"2.0", "2"}:
        raise TemplateError(f"{where}: only AuthorizerPayloadFormatVersion 2.0 is supported")
    if spec.get("EnableSimpleResponses") is not True:
        raise TemplateError(
            f"{where}: only simple responses are supported; set EnableSimpleResponses: true"
        )

    identity = spec.get("Identity") or {}
    unsupported = sorted(set(identity) - {"Headers", "QueryStrings", "ReauthorizeEvery"})
    if unsupported:
        raise TemplateError(f"{where}: Identity {', '.join(unsupported)} is not supported locally")
    sources = [IdentitySource("header", str(h)) for h in identity.get("Headers") or []]
    sources += [IdentitySource("querystring", str(q)) for q in identity.get("QueryStrings") or []]
    reauthorize_every = identity.get("ReauthorizeEvery")
    return AuthorizerSpec(
        name=name,
        function_id=str(target[0]),
        identity_sources=tuple(sources),
        reauthorize_every=None if reauthorize_every is None else int(reauthorize_every),
    )


def _route_authorizer(
    where: str, properties: Mapping[str, Any], api_auth: Mapping[str, ApiAuth]
) -> AuthorizerSpec | None:
    """Return the authorizer of an HttpApi event: its own Auth.Authorizer, or its API's default."""
    api_ref = properties.get("ApiId")
    api_id = api_ref.get("Ref") if isinstance(api_ref, dict) else None
    auth = api_auth.get(api_id) if isinstance(api_id, str) else None
    name = (properties.get("Auth") or {}).get("Authorizer")
    if name is None:
        name = auth.default if auth is not None else None
    if name is None or name == NO_AUTHORIZER:
        return None
    if auth is None or name not in auth.authorizers:
        raise TemplateError(f"{where}: authorizer {name} is not defined on the route's HttpApi")
    return auth.authorizers[name]


def _normalize_method(method: str) -> str:
    method = method.upper()
    return ANY_METHOD if method in {"*", "X-AMAZON-APIGATEWAY-ANY-METHOD"} else method


def _parse_layer(
    logical_id: str, properties: Mapping[str, Any], build_method: Any, base_dir: Path
) -> LayerSpec:
    content_uri = properties.get("ContentUri")
    if not isinstance(content_uri, str):
        raise TemplateError(f"{logical_id}: the local stack needs ContentUri as a local folder")
    folder = (base_dir / content_uri).resolve()
    # `sam build` copies a layer with a python BuildMethod into python/, which Lambda puts on
    # sys.path; the makefile build of this project's layer does the same. A layer without a
    # BuildMethod is shipped as is and must contain python/ itself.
    built = isinstance(build_method, str) and (
        build_method.startswith("python") or build_method == "makefile"
    )
    return LayerSpec(logical_id, folder, folder if built else folder / "python")
