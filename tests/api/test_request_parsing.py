"""Request bodies: strict JSON objects of strings, rejected with a 400 problem otherwise."""

from __future__ import annotations

import json

import pytest

from tests.api.harness import Client

LOGIN = '{"org_id": "acme", "email": "a@acme.example", "password": %s}'


def test_deeply_nested_json_is_400(client: Client) -> None:
    reply = client.request("POST", "/v1/auth/refresh", raw=b"[" * 8000 + b"]" * 8000)
    assert reply.status == 400
    assert reply.body["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        ((LOGIN % '"\\ud800"').encode(), "invalid_input", "password"),
        ((LOGIN % '"x", "password": "y"').encode(), "invalid_json", None),
        ((LOGIN % '"x"').encode("utf-16"), "invalid_json", None),
        (b"\xef\xbb\xbf" + (LOGIN % '"x"').encode(), "invalid_json", None),
        ((LOGIN % "1e999").encode(), "invalid_input", "password"),
        ((LOGIN % '{"a": "b"}').encode(), "invalid_input", "password"),
        ((LOGIN % "null").encode(), "invalid_input", "password"),
    ],
    ids=["lone-surrogate", "duplicate-key", "utf-16", "utf-8-bom", "huge-number", "object", "null"],
)
def test_malformed_login_bodies_are_400(
    client: Client, raw: bytes, code: str, field: str | None
) -> None:
    reply = client.request("POST", "/v1/auth/login", raw=raw)
    assert reply.status == 400, reply.text
    assert reply.body["code"] == code
    assert reply.body.get("field") == field


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_body_must_be_declared_json(client: Client, content_type: str) -> None:
    reply = client.request(
        "POST",
        "/v1/auth/login",
        raw=(LOGIN % '"x"').encode(),
        headers={"Content-Type": content_type},
    )
    assert reply.status == 415
    assert reply.body["code"] == "unsupported_media_type"


def test_json_with_charset_is_accepted(client: Client) -> None:
    reply = client.request(
        "POST",
        "/v1/auth/login",
        raw=(LOGIN % '"wrong password!!"').encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert reply.status == 401


def test_odd_unknown_field_name_not_echoed(client: Client) -> None:
    name = "<script>" + "x" * 200
    raw = json.dumps({"refresh_token": "a.b", name: "1"}).encode()
    reply = client.request("POST", "/v1/auth/refresh", raw=raw)
    assert reply.status == 400
    assert "script" not in reply.text
    assert "field" not in reply.body


def test_plain_unknown_field_is_named(client: Client) -> None:
    reply = client.post("/v1/auth/refresh", {"refresh_token": "a.b", "extra": "1"})
    assert reply.status == 400
    assert reply.body["field"] == "extra"
