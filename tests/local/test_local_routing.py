"""Route matching: specificity, path parameters, ANY, $default and allowed methods."""

from __future__ import annotations

import pytest

from local.routing import RouteTable, RouteTarget
from local.template import HttpRoute, TemplateError


def _table(*route_keys: str) -> RouteTable:
    targets = []
    for key in route_keys:
        method, _, path = key.partition(" ")
        route = HttpRoute("ANY", "$default") if key == "$default" else HttpRoute(method, path)
        targets.append(RouteTarget(route, f"fn:{key}"))
    return RouteTable(targets)


def test_literal_beats_path_variable() -> None:
    table = _table("DELETE /items/{id}", "DELETE /items/special")

    special = table.lookup("DELETE", "/items/special").match
    other = table.lookup("DELETE", "/items/42").match

    assert special is not None
    assert special.target.route.path == "/items/special"
    assert special.path_parameters == {}
    assert other is not None
    assert other.path_parameters == {"id": "42"}


def test_variable_beats_greedy_variable() -> None:
    table = _table("GET /{proxy+}", "GET /a/{b}")

    single = table.lookup("GET", "/a/x").match
    deep = table.lookup("GET", "/a/x/y").match

    assert single is not None
    assert single.target.route.path == "/a/{b}"
    assert deep is not None
    assert deep.path_parameters == {"proxy": "a/x/y"}


def test_path_parameters_percent_decoded() -> None:
    match = _table("GET /users/{user_id}").lookup("GET", "/users/a%20b%2Fc").match

    assert match is not None
    assert match.path_parameters == {"user_id": "a b/c"}


def test_specific_method_beats_any() -> None:
    table = _table("ANY /x", "GET /x")

    get = table.lookup("get", "/x").match
    post = table.lookup("POST", "/x").match

    assert get is not None
    assert get.target.route.route_key == "GET /x"
    assert post is not None
    assert post.target.route.route_key == "ANY /x"


def test_other_method_lists_allowed() -> None:
    lookup = _table("POST /x", "DELETE /x", "GET /y").lookup("GET", "/x")

    assert lookup.match is None
    assert lookup.allowed_methods == ("DELETE", "POST")


def test_unknown_path_has_no_methods() -> None:
    lookup = _table("POST /x").lookup("POST", "/nowhere")

    assert lookup.match is None
    assert lookup.allowed_methods == ()


def test_default_route_catches_the_rest() -> None:
    table = _table("POST /x", "$default")

    match = table.lookup("GET", "/x").match

    assert match is not None
    assert match.target.route.route_key == "$default"
    assert table.route_keys == ["POST /x", "$default"]


def test_duplicate_route_rejected() -> None:
    with pytest.raises(TemplateError, match="defined twice"):
        _table("GET /x", "GET /x")
