"""Match a request method and path to an HTTP API route, most specific route first."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from local.template import ANY_METHOD, DEFAULT_ROUTE_KEY, HttpRoute, TemplateError

_VARIABLE = re.compile(r"^\{([^{}+]+)(\+?)\}$")

# Specificity rank of a path segment: a literal beats {name}, which beats a greedy {name+}.
_LITERAL, _VARIABLE_SEGMENT, _GREEDY = 0, 1, 2


@dataclass(frozen=True)
class RouteTarget:
    route: HttpRoute
    function_id: str


@dataclass(frozen=True)
class RouteMatch:
    target: RouteTarget
    path_parameters: Mapping[str, str]


@dataclass(frozen=True)
class RouteLookup:
    """A matched route, or else the methods allowed on the path (empty when no route has it)."""

    match: RouteMatch | None
    allowed_methods: tuple[str, ...] = ()


class _PathPattern:
    def __init__(self, path: str) -> None:
        if not path.startswith("/"):
            raise TemplateError(f"route path must start with '/': {path!r}")
        self.path = path
        self.names: list[str] = []
        ranks: list[int] = []
        parts: list[str] = []
        segments = path.strip("/").split("/") if path != "/" else []
        for position, segment in enumerate(segments):
            variable = _VARIABLE.match(segment)
            if variable is None:
                parts.append(re.escape(segment))
                ranks.append(_LITERAL)
                continue
            name, greedy = variable.groups()
            self.names.append(name)
            if greedy:
                if position != len(segments) - 1:
                    raise TemplateError(f"a greedy path variable must be last: {path!r}")
                parts.append("(.+)")
                ranks.append(_GREEDY)
            else:
                parts.append("([^/]+)")
                ranks.append(_VARIABLE_SEGMENT)
        self._regex = re.compile("^/" + "/".join(parts) + "$")
        # Sorting by this key puts the most specific pattern first, comparing from the left.
        self.specificity = (*ranks, _GREEDY + 1)

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self._regex.match(raw_path)
        if found is None:
            return None
        # NOTE: values are percent-decoded. Whether AWS decodes them alike is not verified.
        return {
            name: unquote(value) for name, value in zip(self.names, found.groups(), strict=True)
        }


class RouteTable:
    """Routes of one HTTP API, built once and then shared by all request threads."""

    def __init__(self, targets: Iterable[RouteTarget]) -> None:
        self._default: RouteTarget | None = None
        by_path: dict[str, dict[str, RouteTarget]] = {}
        for target in targets:
            route = target.route
            if route.path == DEFAULT_ROUTE_KEY:
                self._default = target
                continue
            methods = by_path.setdefault(route.path, {})
            if route.method in methods:
                raise TemplateError(f"route {route.route_key} is defined twice")
            methods[route.method] = target

        patterns = [(_PathPattern(path), methods) for path, methods in by_path.items()]
        patterns.sort(key=lambda entry: entry[0].specificity)
        self._patterns = patterns

    @property
    def route_keys(self) -> list[str]:
        keys = [
            target.route.route_key for _, methods in self._patterns for target in methods.values()
        ]
        if self._default is not None:
            keys.append(DEFAULT_ROUTE_KEY)
        return keys

    def lookup(self, method: str, raw_path: str) -> RouteLookup:
        """Find the route for `method` and the still percent-encoded `raw_path`."""
        method = method.upper()
        allowed: set[str] = set()
        for pattern, methods in self._patterns:
            parameters = pattern.match(raw_path)
            if parameters is None:
                continue
            target = methods.get(method) or methods.get(ANY_METHOD)
            if target is not None:
                return RouteLookup(RouteMatch(target, parameters))
            allowed.update(methods)

        if self._default is not None:
            return RouteLookup(RouteMatch(self._default, {}))
        return RouteLookup(None, tuple(sorted(allowed)))
