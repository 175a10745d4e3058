"""Evaluate CloudFormation intrinsic functions against the resources of the local stack."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from local.template import TemplateError

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class PhysicalResource:
    """Results of `!Ref` and `!GetAtt` for one created resource."""

    logical_id: str
    ref: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IntrinsicContext:
    region: str
    account_id: str
    resources: Mapping[str, PhysicalResource]
    parameters: Mapping[str, str]
    partition: str = "aws"
    url_suffix: str = "amazonaws.com"
    stack_name: str = "mfa-local"

    @property
    def pseudo_parameters(self) -> dict[str, str]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}"
                f":stack/{self.stack_name}/local"
            ),
        }

    def ref(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        pseudo = self.pseudo_parameters
        if name in pseudo:
            return pseudo[name]
        if name in self.resources:
            return self.resources[name].ref
        raise TemplateError(f"cannot resolve Ref {name}: no parameter or created resource")

    def get_att(self, logical_id: str, attribute: str) -> str:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(f"cannot resolve GetAtt {logical_id}.{attribute}: no such resource")
        if attribute not in resource.attributes:
            raise TemplateError(
                f"cannot resolve GetAtt {logical_id}.{attribute}: the local stack only knows "
                f"{sorted(resource.attributes)}"
            )
        return resource.attributes[attribute]


def resolve(value: Any, context: IntrinsicContext) -> Any:
    """Return `value` with every supported intrinsic function replaced by its result.

    Supported: Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Select, Fn::Split.
    """
    if isinstance(value, list):
        return [resolve(item, context) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        return {key: resolve(item, context) for key, item in value.items()}

    ((name, argument),) = value.items()
    if name == "Ref":
        return context.ref(str(argument))
    if name == "Fn::GetAtt":
        logical_id, attribute = _get_att_argument(resolve(argument, context))
        return context.get_att(logical_id, attribute)
    if name == "Fn::Sub":
        return _substitute(argument, context)
    if name == "Fn::Join":
        delimiter, items = resolve(argument, context)
        return str(delimiter).join(_to_string(item) for item in items)
    if name == "Fn::Select":
        index, items = resolve(argument, context)
        return items[int(index)]
    if name == "Fn::Split":
        delimiter, text = resolve(argument, context)
        return str(text).split(str(delimiter))
    if name.startswith("Fn::") or name == "Condition":
        raise TemplateError(f"the local stack does not evaluate {name}")
    return {name: resolve(argument, context)}


def resolve_string(value: Any, context: IntrinsicContext) -> str:
    """Resolve `value` to the string that a Lambda environment variable would hold."""
    return _to_string(resolve(value, context))


def _get_att_argument(argument: Any) -> tuple[str, str]:
    if isinstance(argument, str):
        argument = argument.split(".", 1)
    if not isinstance(argument, list) or len(argument) != 2:
        raise TemplateError(f"invalid Fn::GetAtt argument: {argument!r}")
    return str(argument[0]), str(argument[1])


def _substitute(argument: Any, context: IntrinsicContext) -> str:
    if isinstance(argument, list):
        text, variables = argument[0], resolve(argument[1], context)
    else:
        text, variables = argument, {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name.startswith("!"):
            # `${!Literal}` writes `${Literal}` unchanged.
            return "${" + name[1:] + "}"
        if name in variables:
            return _to_string(variables[name])
        if "." in name and not name.startswith("AWS::"):
            logical_id, attribute = name.split(".", 1)
            return context.get_att(logical_id, attribute)
        return context.ref(name)

    return _SUB_VARIABLE.sub(replace, str(text))


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"expected a string after resolving intrinsics, got {value!r}")
