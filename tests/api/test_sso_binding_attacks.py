"""Attacks on the cookie that binds an SSO login to its browser, and on the ACS form parser,
through the local gateway.

Each request here sets its Cookie header by hand, so that the test controls its exact bytes:
repeated names, whitespace, quotes and values that only resemble the cookie.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from mfa_core.clock import ManualClock
from mfa_core.sso.binding import COOKIE_NAME, VALUE_PATTERN
from mfa_core.store.models import AuditModel
from tests.api.harness import Client, Member, Reply
from tests.api.test_audit_and_logs import captured_logs
from tests.api.test_sso_oidc import FakeProvider, connect, failure_reasons, idp, trust
from tests.api.test_sso_saml import FORM, post_acs, response_fields, signed_response
from tests.api.test_sso_saml import connect as connect_saml
from tests.api.test_sso_saml import start as start_saml
from tests.api.test_sso_saml import trust as trust_saml
from tests.saml_idp import FakeIdp, encode

__all__ = ["idp"]  # the fake OIDC provider's fixture

# A value of the form that `bind` makes, and another one.
VALUE = "A" * 43
OTHER = "B" * 43


def send(
    client: Client,
    method: str,
    path: str,
    *,
    cookie: str | None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[Reply, str | None, str | None]:
    """Send one request with `cookie` as its raw Cookie header. Return the reply, its Location
    and its Set-Cookie."""
    url = urlsplit(client.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    all_headers = dict(headers or {})
    if cookie is not None:
        all_headers["Cookie"] = cookie
    connection.request(method, path, body=body, headers=all_headers)
    response = connection.getresponse()
    text = response.read().decode("utf-8")
    reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
    return reply, response.getheader("Location"), response.getheader("Set-Cookie")


def start_with(client: Client, cookie: str | None) -> tuple[str, dict[str, str]]:
    """Start an OIDC login for acme. Return the cookie value set and the provider's request."""
    reply, location, set_cookie = send(client, "GET", "/v1/sso/oidc/acme/start", cookie=cookie)
    assert reply.status == 302, reply.text
    assert set_cookie is not None
    name, _, value = set_cookie.split(";", 1)[0].partition("=")
    assert name == COOKIE_NAME
    request = {k: v[0] for k, v in parse_qs(urlsplit(location or "").query).items()}
    return value, request


def callback_with(client: Client, cookie: str | None, **parameters: str) -> Reply:
    path = f"/v1/sso/oidc/acme/callback?{urlencode(parameters)}"
    reply, _, _ = send(client, "GET", path, cookie=cookie)
    return reply


@pytest.fixture
def oidc(acme: Member, idp: FakeProvider) -> FakeProvider:
    connect("acme", idp)
    trust("acme")
    return idp


@pytest.mark.parametrize(
    "sent",
    [
        VALUE[:-1],
        VALUE + "A",
        f'"{VALUE}"',
        VALUE[:-1] + "=",
        VALUE[:-1] + "+",
        VALUE[:-1] + "%",
        VALUE[:-1] + "\u00e9",
        VALUE[:21] + " " + VALUE[22:],
        "",
    ],
    ids=["short", "long", "quoted", "equals", "plus", "percent", "non_ascii", "space", "empty"],
)
def test_malformed_cookie_value_replaced(client: Client, oidc: FakeProvider, sent: str) -> None:
    value, _ = start_with(client, f"{COOKIE_NAME}={sent}")

    assert value != sent
    assert VALUE_PATTERN.match(value)


def test_well_formed_cookie_value_kept(client: Client, oidc: FakeProvider) -> None:
    value, _ = start_with(client, f"other=1; {COOKIE_NAME}={VALUE}; last=2")

    assert value == VALUE


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        f'{COOKIE_NAME}="{VALUE}"',
        f"{COOKIE_NAME}={VALUE}=",
        f"{COOKIE_NAME}={VALUE[:-1]}",
        f"{COOKIE_NAME.lower()}={VALUE}",
        f"__Secure-mfa-sso={VALUE}",
        f"mfa-sso={VALUE}",
        VALUE,
        f"={VALUE}",
        f"x{COOKIE_NAME}={VALUE}",
        f"{COOKIE_NAME}={OTHER}; {COOKIE_NAME}={VALUE}",
        f"{COOKIE_NAME}=; {COOKIE_NAME}={VALUE}",
    ],
    ids=[
        "none",
        "quoted",
        "trailing_equals",
        "truncated",
        "lower_case_name",
        "secure_prefix",
        "no_prefix",
        "nameless",
        "empty_name",
        "longer_name",
        "other_value_first",
        "empty_value_first",
    ],
)
def test_near_miss_cookie_rejected_unspent(
    client: Client, oidc: FakeProvider, cookie: str | None
) -> None:
    _, request = start_with(client, f"{COOKIE_NAME}={VALUE}")
    code = oidc.grant(request)

    forced = callback_with(client, cookie, code=code, state=request["state"])
    own = callback_with(client, f"{COOKIE_NAME}={VALUE}", code=code, state=request["state"])

    assert forced.status == 401, forced.text
    assert failure_reasons() == ["browser_mismatch"]
    assert own.status == 200, own.text
    assert len(oidc.token_requests) == 1


@pytest.mark.parametrize(
    "cookie",
    [
        f"  {COOKIE_NAME}={VALUE}  ",
        f"a=1;{COOKIE_NAME}={VALUE};b=2",
        f"{COOKIE_NAME}={VALUE}; {COOKIE_NAME}={OTHER}",
        f"a=b=c; {COOKIE_NAME}={VALUE}",
        "; ".join(f"filler{i}={'x' * 60}" for i in range(100)) + f"; {COOKIE_NAME}={VALUE}",
    ],
    ids=["whitespace", "no_spaces", "own_value_first", "equals_in_other", "long_header"],
)
def test_own_cookie_found_among_others(client: Client, oidc: FakeProvider, cookie: str) -> None:
    _, request = start_with(client, f"{COOKIE_NAME}={VALUE}")
    code = oidc.grant(request)

    reply = callback_with(client, cookie, code=code, state=request["state"])

    assert reply.status == 200, reply.text
    assert reply.body["status"] == "authenticated"


def test_mismatch_with_provider_error_leaves_request(client: Client, oidc: FakeProvider) -> None:
    _, request = start_with(client, f"{COOKIE_NAME}={VALUE}")
    code = oidc.grant(request)

    forced = callback_with(client, None, error="access_denied", state=request["state"])
    own = callback_with(client, f"{COOKIE_NAME}={VALUE}", code=code, state=request["state"])

    assert forced.status == 401
    assert failure_reasons() == ["browser_mismatch"]
    assert own.status == 200, own.text


def test_binding_cookie_not_logged_or_audited(client: Client, oidc: FakeProvider) -> None:
    with captured_logs() as logs:
        first_value, first = start_with(client, None)
        kept, second = start_with(client, f"{COOKIE_NAME}={first_value}")
        forced = callback_with(
            client, f"{COOKIE_NAME}={OTHER}", code=oidc.grant(first), state=first["state"]
        )
        own = callback_with(
            client, f"{COOKIE_NAME}={kept}", code=oidc.grant(second), state=second["state"]
        )
    stored = json.dumps([item.serialize() for item in AuditModel.query("acme")])

    assert forced.status == 401
    assert own.status == 200, own.text
    assert kept == first_value
    for secret in (first_value, OTHER, first["state"], second["state"]):
        assert secret not in logs.getvalue()
        assert secret not in stored


# -- the ACS form ----------------------------------------------------------------------------


def post_form(client: Client, body: bytes, content_type: str = FORM["Content-Type"]) -> Reply:
    reply, _, _ = send(
        client,
        "POST",
        "/v1/sso/saml/acme/acs",
        cookie=f"{COOKIE_NAME}={VALUE}",
        body=body,
        headers={"Content-Type": content_type},
    )
    return reply


@pytest.fixture
def saml(acme: Member) -> None:
    connect_saml("acme", FakeIdp.create())


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 401),
        (b"=", 401),
        (b"RelayState", 400),
        (b"RelayState&SAMLResponse", 400),
        (b"RelayState=a&&SAMLResponse=b", 400),
        (b"RelayState=a&SAMLResponse=b&", 400),
        (b"RelayState=a;SAMLResponse=b", 401),
        (b"RelayState=%ZZ&SAMLResponse=b", 401),
        (b"RelayState=\xc3\xa9&SAMLResponse=b", 400),
        (b"&".join(b"f%d=1" % i for i in range(11)), 400),
        (b"RelayState=" + b"a" * 81 + b"&SAMLResponse=b", 401),
    ],
    ids=[
        "empty",
        "bare_equals",
        "bare_key",
        "bare_keys",
        "empty_field",
        "trailing_separator",
        "semicolon",
        "bad_percent",
        "raw_non_ascii",
        "too_many_fields",
        "long_relay_state",
    ],
)
def test_odd_acs_body_handled(client: Client, saml: None, body: bytes, status: int) -> None:
    reply = post_form(client, body)

    assert reply.status == status, reply.text


def test_acs_form_with_charset_parsed(client: Client, saml: None) -> None:
    reply = post_form(
        client,
        b"RelayState=unknown&SAMLResponse=PHNhbWw%2B",
        content_type="application/x-www-form-urlencoded; charset=UTF-8",
    )

    assert reply.status == 401, reply.text
    assert reply.body["code"] == "sso_failed"


def test_saml_login_leaves_no_secret_behind(
    client: Client, clock: ManualClock, enrolled: Member
) -> None:
    saml_idp = FakeIdp.create()
    connect_saml("acme", saml_idp)
    trust_saml("acme")
    with captured_logs() as logs:
        _, _, relay_state, request = start_saml(client)
        fields = response_fields(clock, saml_idp, request.get("ID", ""), email=enrolled.email)
        form = {
            "SAMLResponse": encode(signed_response(saml_idp, fields)),
            "RelayState": relay_state,
        }
        body = urlencode(form).encode("ascii")
        forced, _, _ = send(
            client,
            "POST",
            "/v1/sso/saml/acme/acs",
            cookie=f"{COOKIE_NAME}={OTHER}",
            body=body,
            headers=FORM,
        )
        own = post_acs(client, form)
    stored = json.dumps([item.serialize() for item in AuditModel.query("acme")])
    value = client.cookies[COOKIE_NAME]

    assert forced.status == 401
    assert own.status == 200, own.text
    for secret in (value, OTHER, relay_state, form["SAMLResponse"][:64]):
        assert secret not in logs.getvalue()
        assert secret not in stored
