"""OIDC SSO through the local gateway, against a fake identity provider on 127.0.0.1.

The provider serves discovery, its JWKS and a token endpoint that redeems each code once and
checks the PKCE verifier. Its /authorize endpoint returns the request's parameters as JSON
instead of a login page, and each test then calls the callback as the browser would.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

from local.stack import LocalStack
from mfa_core import runtime
from mfa_core.clock import ManualClock
from mfa_core.policy import SsoTrust
from mfa_core.sso.connection import SsoConnection
from mfa_core.store.models import AuditModel, UserModel
from tests.api.conftest import SOURCE_IP_HEADER, add_member, add_org
from tests.api.harness import Client, Flow, Member, cookie_header, keep_cookie
from tests.api.test_audit_and_logs import captured_logs
from tests.api.test_policy import fresh_mfa_token, set_policy

CLIENT_ID = "console-client"
CLIENT_SECRET = "s3cr3t-0f-the-oidc-client-" + "x" * 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class Grant:
    claims: dict[str, Any]
    code_challenge: str
    redirect_uri: str
    sign: dict[str, Any] = field(default_factory=dict)


class FakeProvider:
    """An OIDC provider: discovery, JWKS, and a token endpoint that signs ID tokens."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.grants: dict[str, Grant] = {}
        self.token_requests: list[dict[str, Any]] = []
        self.auth_methods = ["client_secret_basic"]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "HS256", "none"],
            "token_endpoint_auth_methods_supported": self.auth_methods,
        }

    def jwks(self) -> dict[str, Any]:
        rsa_pem = self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        ec_pem = self.ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "keys": [
                {**jwk.construct(rsa_pem, "RS256").to_dict(), "kid": "rsa-1", "use": "sig"},
                {**jwk.construct(ec_pem, "ES256").to_dict(), "kid": "ec-1", "use": "sig"},
            ]
        }

    def grant(
        self, request: dict[str, str], *, sign: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        """Issue a code for an authorization request; `claims` override the defaults (None
        removes one) and `sign` the signing: alg, kid, or key="other"."""
        now = int(self.clock.now())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": "idp-user-1",
            "email": "admin@acme.example",
            "email_verified": True,
            "amr": ["pwd", "mfa"],
            "auth_time": now - 60,
            "iat": now,
            "exp": now + 300,
            "nonce": request["nonce"],
        }
        for name, value in claims.items():
            if value is None:
                base.pop(name, None)
            else:
                base[name] = value
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(
            claims=base,
            code_challenge=request["code_challenge"],
            redirect_uri=request["redirect_uri"],
            sign=sign or {},
        )
        return code

    def id_token(self, grant: Grant) -> str:
        alg = grant.sign.get("alg", "RS256")
        headers = {"kid": grant.sign.get("kid", "ec-1" if alg == "ES256" else "rsa-1")}
        if alg == "none":
            header = _b64(json.dumps({"alg": "none", **headers}).encode())
            return f"{header}.{_b64(json.dumps(grant.claims).encode())}."
        if alg == "HS256":
            # The classic confusion: the public key used as an HMAC secret.
            secret = json.dumps(self.jwks()["keys"][0])
            return jwt.encode(grant.claims, secret, algorithm="HS256", headers=headers)
        key: Any = self.ec_key if alg == "ES256" else self.rsa_key
        if grant.sign.get("key") == "other":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return jwt.encode(grant.claims, pem.decode(), algorithm=alg, headers=headers)

    def redeem(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.token_requests.append({"form": form, "authorization": authorization})
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        basic_ok = authorization == f"Basic {expected}"
        post_ok = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
        if not (basic_ok or post_ok):
            return 401, {"error": "invalid_client"}
        grant = self.grants.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        if (
            grant is None
            or form.get("grant_type") != "authorization_code"
            or form.get("redirect_uri") != grant.redirect_uri
            or _b64(hashlib.sha256(verifier.encode()).digest()) != grant.code_challenge
        ):
            return 400, {"error": "invalid_grant"}
        return 200, {"access_token": "at", "token_type": "Bearer", "id_token": self.id_token(grant)}


def _handler(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = urlsplit(self.path)
            if path.path == "/.well-known/openid-configuration":
                self._send(200, provider.discovery())
            elif path.path == "/jwks":
                self._send(200, provider.jwks())
            elif path.path == "/authorize":
                self._send(200, {k: v[0] for k, v in parse_qs(path.query).items()})
            else:
                self._send(404, {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            self._send(*provider.redeem(form, self.headers.get("Authorization")))

    return Handler


@pytest.fixture
def idp(clock: ManualClock) -> Iterator[FakeProvider]:
    with FakeProvider(clock) as provider:
        yield provider


def connect(org_id: str, provider: FakeProvider, **settings: Any) -> None:
    """Give an org an OIDC connection to `provider` in-process, as an admin's PUT would."""
    svc = runtime.services()
    connection = SsoConnection(
        protocol="oidc",
        issuer=provider.issuer,
        client_id=CLIENT_ID,
        scopes=("openid", "email"),
        client_secret_set=True,
        **settings,
    )
    svc.store.set_sso_connection(org_id, connection.as_item(), [])
    svc.sso_secrets.put(org_id, CLIENT_SECRET)


def trust(org_id: str, *, enabled: bool = True, max_age: int = 60, **policy: Any) -> None:
    set_policy(
        org_id,
        enforcement=policy.pop("enforcement", "optional"),
        sso=SsoTrust(
            trust_idp_mfa=enabled,
            accepted_amr=("mfa",) if enabled else (),
            accepted_acr=("phr",) if enabled else (),
            max_auth_age_minutes=max_age,
        ),
        **policy,
    )


def start(client: Client, org_id: str = "acme") -> tuple[http.client.HTTPResponse, dict[str, str]]:
    """Call the start route without following its redirect; return it and the request's
    parameters as the provider receives them."""
    url = urlsplit(client.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    connection.request("GET", f"/v1/sso/oidc/{org_id}/start", headers=cookie_header(client))
    response = connection.getresponse()
    response.read()
    keep_cookie(client, response.getheader("Set-Cookie"))
    location = response.getheader("Location") or ""
    return response, {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def callback(client: Client, org_id: str = "acme", **parameters: str) -> Any:
    return client.get(f"/v1/sso/oidc/{org_id}/callback?{urlencode(parameters)}")


def sso_login(client: Client, provider: FakeProvider, org_id: str = "acme", **claims: Any) -> Any:
    _, request = start(client, org_id)
    code = provider.grant(request, **claims)
    return callback(client, org_id, code=code, state=request["state"])


def sso_events(org_id: str = "acme") -> list[AuditModel]:
    return [item for item in AuditModel.query(org_id) if item.event_type == "sso.login"]


def failure_reasons(org_id: str = "acme") -> list[str | None]:
    """The reasons of the org's failed SSO logins, sorted: events of one instant of the test
    clock have no order."""
    return sorted(e.reason for e in sso_events(org_id) if e.outcome == "failure")


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.get_unverified_claims(token)
    return claims


# -- Login -----------------------------------------------------------------------------------


def test_start_redirects_with_pkce_and_nonce(
    client: Client, acme: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    response, request = start(client)
    assert response.status == 302
    assert response.getheader("Location", "").startswith(idp.issuer + "/authorize?")
    assert request["response_type"] == "code"
    assert request["client_id"] == CLIENT_ID
    assert request["redirect_uri"].endswith("/v1/sso/oidc/acme/callback")
    assert request["scope"] == "openid email"
    assert request["code_challenge_method"] == "S256"
    assert len(request["code_challenge"]) == 43
    assert len(request["state"]) >= 43
    assert len(request["nonce"]) >= 43
    assert request["max_age"] == "3600"


def test_trusted_idp_mfa_gives_session_without_prompt(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "authenticated"
    claims = claims_of(reply.body["access_token"])
    assert claims["amr"] == ["fed", "mfa"]
    assert claims["acr"] == "aal2"
    assert claims["sub"] == enrolled.user_id
    assert claims["mfa_time"] == int(idp.clock.now()) - 60
    [event] = [e for e in sso_events() if e.outcome == "success"]
    assert event.reason == "idp_mfa_accepted"
    assert event.details["idp_mfa"] == "idp_mfa_accepted"
    assert event.details["iss"] == idp.issuer
    assert event.details["sub"] == "idp-user-1"
    assert event.details["amr"] == ["pwd", "mfa"]
    # Basic client authentication with the stored secret, and the PKCE verifier.
    [token_request] = idp.token_requests
    assert token_request["authorization"].startswith("Basic ")
    assert "client_secret" not in token_request["form"]


def test_phishing_resistant_idp_mfa_gives_aal3(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, amr=["hwk", "mfa"])
    assert reply.status == 200, reply.text
    claims = claims_of(reply.body["access_token"])
    assert claims["acr"] == "aal3"
    assert claims["amr"] == ["fed", "mfa", "hwk"]


def test_accepted_acr_alone_counts(client: Client, enrolled: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, amr=None, acr="phr")
    assert reply.status == 200, reply.text
    assert claims_of(reply.body["access_token"])["acr"] == "aal3"


def test_unusual_place_needs_our_mfa_after_idp_mfa(
    client: Client, clock: ManualClock, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme", geo_anomaly_action="step_up")

    def login_from(address: str) -> Any:
        _, request = start(client)
        code = idp.grant(request)
        query = urlencode({"code": code, "state": request["state"]})
        path = f"/v1/sso/oidc/acme/callback?{query}"
        return client.get(path, headers={SOURCE_IP_HEADER: address})

    usual = login_from("94.23.0.1")  # France
    clock.advance(2 * 3600)
    unusual = login_from("203.2.218.214")  # Australia, too far away in two hours

    assert usual.status == 200, usual.text
    assert usual.body["status"] == "authenticated"
    assert unusual.status == 200, unusual.text
    assert unusual.body["status"] == "mfa_required"
    assert unusual.body["reason"] == "unusual_sign_in"


def test_amr_without_mfa_prompts_our_mfa(
    client: Client, flow: Flow, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, amr=["pwd"])
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "mfa_required"
    assert "access_token" not in reply.body
    [event] = sso_events()
    assert event.details["idp_mfa"] == "idp_mfa_not_asserted"

    verified = flow.verify(enrolled, reply.body["mfa_token"])
    assert verified.status == 200, verified.text
    claims = claims_of(verified.body["access_token"])
    assert claims["amr"] == ["fed", "otp", "mfa"]
    assert claims["acr"] == "aal2"


def test_stale_auth_time_prompts(client: Client, enrolled: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme", max_age=30)
    reply = sso_login(client, idp, auth_time=int(idp.clock.now()) - 31 * 60)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "mfa_required"
    [event] = sso_events()
    assert event.details["idp_mfa"] == "idp_mfa_too_old"


def test_trust_off_prompts(client: Client, enrolled: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme", enabled=False)
    _, request = start(client)
    assert "max_age" not in request
    code = idp.grant(request, auth_time=None)
    reply = callback(client, code=code, state=request["state"])
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "mfa_required"
    [event] = sso_events()
    assert event.details["idp_mfa"] == "idp_mfa_not_trusted"


def test_trust_off_without_factor_gives_fed_aal1(
    client: Client, acme: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme", enabled=False)
    reply = sso_login(client, idp)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "authenticated"
    claims = claims_of(reply.body["access_token"])
    assert claims["amr"] == ["fed"]
    assert claims["acr"] == "aal1"


def test_required_enrollment_after_sso(client: Client, acme: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme", enabled=False, enforcement="required")
    reply = sso_login(client, idp)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "enrollment_required"


def test_client_secret_post_when_basic_is_not_offered(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    idp.auth_methods = ["client_secret_post"]
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp)
    assert reply.status == 200, reply.text
    [token_request] = idp.token_requests
    assert token_request["authorization"] is None
    assert token_request["form"]["client_secret"] == CLIENT_SECRET


def test_es256_id_token_accepted(client: Client, enrolled: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, sign={"alg": "ES256"})
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "authenticated"


# -- Rejections --------------------------------------------------------------------------------


REJECTIONS = [
    ("wrong_nonce", {"nonce": "not-the-nonce"}),
    ("wrong_audience", {"aud": "another-client"}),
    ("wrong_authorized_party", {"aud": [CLIENT_ID, "another-client"]}),
    ("wrong_issuer", {"iss": "https://evil.example"}),
    ("invalid_signature", {"sign": {"key": "other"}}),
    ("algorithm_not_allowed", {"sign": {"alg": "none"}}),
    ("algorithm_not_allowed", {"sign": {"alg": "HS256"}}),
    ("unknown_signing_key", {"sign": {"kid": "rotated-away"}}),
    ("token_expired", {"exp": 1_800_000_000 - 120}),
    ("times_missing", {"exp": None}),
    ("auth_time_missing", {"auth_time": None}),
    ("email_not_verified", {"email_verified": False}),
]


@pytest.mark.parametrize(
    ("reason", "claims"), REJECTIONS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(REJECTIONS)]
)
def test_bad_id_token_rejected_and_audited(
    client: Client, enrolled: Member, idp: FakeProvider, reason: str, claims: dict[str, Any]
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, **claims)
    assert reply.status == 401, reply.text
    assert reply.body["code"] == "sso_failed"
    assert "access_token" not in reply.text
    [event] = [e for e in sso_events() if e.outcome == "failure"]
    assert event.reason == reason


def test_wrong_state_rejected(client: Client, enrolled: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme")
    _, request = start(client)
    code = idp.grant(request)
    reply = callback(client, code=code, state="not-a-state-we-issued")
    assert reply.status == 401, reply.text
    assert failure_reasons() == ["state_unknown"]
    assert idp.token_requests == []


def test_replayed_state_rejected(client: Client, enrolled: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme")
    _, request = start(client)
    first = callback(client, code=idp.grant(request), state=request["state"])
    assert first.status == 200, first.text
    again = callback(client, code=idp.grant(request), state=request["state"])
    assert again.status == 401, again.text
    assert failure_reasons() == ["state_replayed"]
    assert len(idp.token_requests) == 1


def test_replayed_code_rejected(client: Client, enrolled: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    trust("acme")
    _, request = start(client)
    code = idp.grant(request)
    assert callback(client, code=code, state=request["state"]).status == 200
    # A new login's state with the spent code: the provider refuses it.
    _, second = start(client)
    reply = callback(client, code=code, state=second["state"])
    assert reply.status == 401, reply.text
    assert failure_reasons() == ["token_request_failed_http_400"]


def test_expired_state_rejected(
    client: Client, enrolled: Member, idp: FakeProvider, clock: ManualClock
) -> None:
    connect("acme", idp)
    trust("acme")
    _, request = start(client)
    code = idp.grant(request)
    clock.advance(11 * 60)
    reply = callback(client, code=code, state=request["state"])
    assert reply.status == 401, reply.text
    assert failure_reasons() == ["state_expired"]


def test_state_from_another_browser_rejected(
    client: Client, enrolled: Member, idp: FakeProvider, stack: LocalStack
) -> None:
    connect("acme", idp)
    trust("acme")
    response, request = start(client)
    cookie = response.getheader("Set-Cookie") or ""
    code = idp.grant(request)
    # The victim's browser, which never started this login, is made to follow its callback.
    victim = Client(stack.api_url)

    forced = callback(victim, code=code, state=request["state"])
    own = callback(client, code=code, state=request["state"])

    assert cookie.startswith("__Host-mfa-sso=")
    for attribute in ("Path=/", "Secure", "HttpOnly", "SameSite=None", "Max-Age=600"):
        assert attribute in cookie
    assert forced.status == 401
    assert failure_reasons() == ["browser_mismatch"]
    # The state was not spent, so the browser that started the login still finishes it.
    assert own.status == 200, own.text
    assert own.body["status"] == "authenticated"


def test_two_logins_in_one_browser_both_finish(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    first_response, first = start(client)
    second_response, second = start(client)

    first_reply = callback(client, code=idp.grant(first), state=first["state"])
    second_reply = callback(client, code=idp.grant(second), state=second["state"])

    # The second start kept the browser's cookie value instead of replacing it.
    assert first_response.getheader("Set-Cookie") == second_response.getheader("Set-Cookie")
    assert first_reply.status == 200, first_reply.text
    assert second_reply.status == 200, second_reply.text


def test_state_of_another_org_rejected(client: Client, acme: Member, idp: FakeProvider) -> None:
    add_org("globex")
    connect("acme", idp)
    connect("globex", idp)
    _, request = start(client, "globex")
    code = idp.grant(request, email="admin@globex.example")
    reply = callback(client, "acme", code=code, state=request["state"])
    assert reply.status == 401, reply.text
    assert failure_reasons("acme") == ["state_of_another_org"]
    assert idp.token_requests == []
    # The state stays usable for the org it was issued for.
    own = callback(client, "globex", code=code, state=request["state"])
    assert own.status == 200, own.text
    assert own.body["status"] == "authenticated"


def test_provider_error_rejected(client: Client, acme: Member, idp: FakeProvider) -> None:
    connect("acme", idp)
    _, request = start(client)
    reply = callback(client, error="access_denied", state=request["state"])
    assert reply.status == 401, reply.text
    [event] = sso_events()
    assert event.reason == "provider_error"
    assert event.details["provider_error"] == "access_denied"


def test_unknown_email_rejected_without_enumeration(
    client: Client, acme: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    unknown = sso_login(client, idp, email="nobody@acme.example")
    bad_nonce = sso_login(client, idp, nonce="x")
    assert unknown.status == bad_nonce.status == 401
    assert unknown.body == bad_nonce.body
    assert failure_reasons() == ["unknown_email", "wrong_nonce"]
    assert [u for u in UserModel.query("acme") if u.email == "nobody@acme.example"] == []


def test_disabled_member_rejected(client: Client, acme: Member, idp: FakeProvider) -> None:
    member = add_member("acme", "ops@acme.example")
    user = runtime.services().store.get_user("acme", member.user_id)
    assert user is not None
    user.update(actions=[UserModel.status.set("disabled")])
    connect("acme", idp)
    reply = sso_login(client, idp, email="OPS@acme.example")
    assert reply.status == 401, reply.text
    assert failure_reasons() == ["member_disabled"]


def test_auto_provision_creates_member(client: Client, acme: Member, idp: FakeProvider) -> None:
    connect("acme", idp, auto_provision=True, provision_role="operator")
    trust("acme")
    reply = sso_login(client, idp, email="New.Person@acme.example")
    assert reply.status == 200, reply.text
    created = [u for u in UserModel.query("acme") if u.email == "new.person@acme.example"]
    assert len(created) == 1
    assert created[0].role == "operator"
    assert claims_of(reply.body["access_token"])["sub"] == created[0].user_id
    [creation] = [
        e
        for e in AuditModel.query("acme")
        if e.event_type == "member.create" and e.user_id == created[0].user_id
    ]
    assert creation.actor == "sso"
    assert creation.details["role"] == "operator"


def test_email_match_is_case_insensitive(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    reply = sso_login(client, idp, email="Admin@ACME.example")
    assert reply.status == 200, reply.text
    assert claims_of(reply.body["access_token"])["sub"] == enrolled.user_id


def test_org_without_connection_has_no_start(client: Client, acme: Member) -> None:
    response, _ = start(client)
    assert response.status == 404


# -- Settings API ------------------------------------------------------------------------------


SSO_PATH = "/v1/orgs/acme/sso"


def oidc_document(provider: FakeProvider, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "protocol": "oidc",
        "issuer": provider.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": ["openid", "email", "profile"],
        "email_attribute": "email",
        "auto_provision": False,
    }
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def put(client: Client, token: str, body: dict[str, Any], path: str = SSO_PATH) -> Any:
    return client.request("PUT", path, json_body=body, token=token)


def test_admin_sets_and_reads_connection(
    client: Client,
    flow: Flow,
    enrolled: Member,
    idp: FakeProvider,
    stack: LocalStack,
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    with captured_logs() as logs:
        reply = put(client, token, oidc_document(idp))
        assert reply.status == 200, reply.text
        read = client.get(SSO_PATH, token=token)
    assert read.status == 200
    assert read.body["sso"]["client_secret_set"] is True
    assert read.body["sso"]["issuer"] == idp.issuer
    assert read.body["sso"]["scopes"] == ["openid", "email", "profile"]
    for text in (reply.text, read.text, logs.getvalue()):
        assert CLIENT_SECRET not in text
    events = [e for e in AuditModel.query("acme") if e.event_type == "sso.connection"]
    assert len(events) == 1
    assert events[0].details["client_secret_changed"] is True
    assert events[0].details["after"]["client_id"] == CLIENT_ID
    for item in AuditModel.query("acme"):
        assert CLIENT_SECRET not in json.dumps(item.serialize(), default=str)
    stored = runtime.services().sso_secrets.get("acme")
    assert stored == CLIENT_SECRET

    # The secret may be left out when the client stays the same, and the login uses it.
    kept = put(client, token, oidc_document(idp, client_secret=None, auto_provision=True))
    assert kept.status == 200, kept.text
    assert sso_login(client, idp).status == 200


def test_settings_need_a_fresh_mfa(
    client: Client, flow: Flow, enrolled: Member, idp: FakeProvider, clock: ManualClock
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    clock.advance(6 * 60)
    reply = put(client, token, oidc_document(idp))
    assert reply.status == 403, reply.text
    assert reply.body["code"] == "step_up_required"


def test_settings_forbidden_to_non_admins(client: Client, acme: Member, flow: Flow) -> None:
    member = add_member("acme", "ops@acme.example")
    token = flow.login_ok(member, "authenticated")["access_token"]
    assert client.get(SSO_PATH, token=token).status == 403
    assert put(client, token, {"protocol": "oidc"}).status == 403


def test_settings_of_another_org_not_found(
    client: Client, flow: Flow, enrolled: Member, idp: FakeProvider
) -> None:
    add_org("globex")
    token = fresh_mfa_token(flow, enrolled)
    assert client.get("/v1/orgs/globex/sso", token=token).status == 404
    assert put(client, token, oidc_document(idp), "/v1/orgs/globex/sso").status == 404


BAD_FIELDS = [
    ({"protocol": "ldap"}, "protocol"),
    ({"issuer": "http://idp.example.com"}, "issuer"),
    ({"issuer": "https://idp.example.com/?q=1"}, "issuer"),
    ({"client_id": ""}, "client_id"),
    ({"client_secret": None, "client_id": "new-client"}, "client_secret"),
    ({"scopes": ["email"]}, "scopes"),
    ({"scopes": "openid"}, "scopes"),
    ({"email_attribute": "e mail"}, "email_attribute"),
    ({"auto_provision": "yes"}, "auto_provision"),
    ({"provision_role": "admin"}, "provision_role"),
    ({"sso_url": "https://idp.example.com/sso"}, "sso_url"),
]


@pytest.mark.parametrize(("changes", "field_name"), BAD_FIELDS)
def test_bad_settings_name_the_field(  # noqa: PLR0917 - fixtures
    client: Client,
    flow: Flow,
    enrolled: Member,
    idp: FakeProvider,
    changes: dict[str, Any],
    field_name: str,
) -> None:
    token = fresh_mfa_token(flow, enrolled)
    reply = put(client, token, oidc_document(idp, **changes))
    assert reply.status == 400, reply.text
    assert reply.header("content-type") == "application/problem+json"
    assert reply.body["field"] == field_name


def test_saml_certificate_is_validated(client: Client, flow: Flow, enrolled: Member) -> None:
    token = fresh_mfa_token(flow, enrolled)
    body = {
        "protocol": "saml",
        "idp_entity_id": "https://idp.example.com/entity",
        "sso_url": "https://idp.example.com/sso",
        "signing_certificate": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----",
    }
    reply = put(client, token, body)
    assert reply.status == 400, reply.text
    assert reply.body["field"] == "signing_certificate"


def test_concurrent_callbacks_spend_state_once(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    _, request = start(client)
    codes = [idp.grant(request) for _ in range(10)]
    replies: list[Any] = [None] * len(codes)

    def run(index: int) -> None:
        replies[index] = callback(client, code=codes[index], state=request["state"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(codes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [200] + [401] * 9
    assert failure_reasons() == ["state_replayed"] * 9
    assert len(idp.token_requests) == 1


def test_sso_login_leaves_no_secret_behind(
    client: Client, enrolled: Member, idp: FakeProvider
) -> None:
    connect("acme", idp)
    trust("acme")
    with captured_logs() as logs:
        _, request = start(client)
        code = idp.grant(request)
        reply = callback(client, code=code, state=request["state"])
        assert reply.status == 200, reply.text
        replay = callback(client, code=code, state=request["state"])
        assert replay.status == 401
    [token_request] = idp.token_requests
    verifier = token_request["form"]["code_verifier"]
    stored = json.dumps([item.serialize() for item in AuditModel.query("acme")])
    for secret in (CLIENT_SECRET, code, request["state"], request["nonce"], verifier):
        assert secret not in logs.getvalue()
        assert secret not in stored
    assert reply.body["access_token"] not in logs.getvalue()
