"""A small HTTP client and flow helpers for tests that drive the API over a real socket."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pyotp

from mfa_core import totp
from mfa_core.clock import ManualClock
from tests.authenticator import SoftAuthenticator


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def body(self) -> Any:
        return json.loads(self.text) if self.text else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Client:
    """Plain urllib, so that each call is independent and safe to use from many threads.

    `cookies` (name to value) go with every request, as a browser sends the cookies it has.
    Tests that need one, such as an SSO login's, put it there.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        raw: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = raw
        all_headers = {"User-Agent": "mfa-tests/1.0", **(headers or {})}
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        all_headers = {**cookie_header(self), **all_headers}
        # The base URL is always the local gateway on loopback, so S310's scheme check is moot.
        url = self.base_url + path
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return _reply(response.status, response.headers.items(), response.read())
        except urllib.error.HTTPError as error:
            return _reply(error.code, error.headers.items(), error.read())

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, json_body=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Reply:
        return self.request("DELETE", path, **kwargs)


def cookie_header(client: Client) -> dict[str, str]:
    """Return the Cookie header of `client`'s cookies, for a request made without it."""
    if not client.cookies:
        return {}
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}


def keep_cookie(client: Client, set_cookie: str | None) -> None:
    """Store the cookie of a Set-Cookie header in `client`, as a browser would."""
    if set_cookie:
        name, _, value = set_cookie.split(";", 1)[0].partition("=")
        client.cookies[name.strip()] = value.strip()


def _reply(status: int, headers: Any, content: bytes) -> Reply:
    return Reply(status, {k.lower(): v for k, v in headers}, content.decode("utf-8"))


@dataclass
class Member:
    org_id: str
    email: str
    password: str
    user_id: str
    totp_secret: str | None = None
    factor_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Flow:
    """Steps of the login and enrollment flows, asserting that each one succeeds."""

    def __init__(self, client: Client, clock: ManualClock) -> None:
        self.client = client
        self.clock = clock
        # WebAuthn needs a domain name: the stack allows the gateway's port on localhost.
        self.origin = client.base_url.replace("127.0.0.1", "localhost")

    def code(self, secret: str, *, steps_ahead: int = 0) -> str:
        return pyotp.TOTP(secret).at(int(self.clock.now()) + steps_ahead * totp.PERIOD)

    def login(self, member: Member) -> Reply:
        return self.client.post(
            "/v1/auth/login",
            {"org_id": member.org_id, "email": member.email, "password": member.password},
        )

    def login_ok(self, member: Member, expected_status: str) -> dict[str, Any]:
        reply = self.login(member)
        assert reply.status == 200, reply.text
        body: dict[str, Any] = reply.body
        assert body["status"] == expected_status, body
        return body

    def enroll(self, member: Member, token: str) -> str:
        """Enroll and confirm TOTP; returns the factor id and stores the secret on `member`."""
        reply = self.client.post("/v1/me/factors/totp", {"label": "Phone"}, token=token)
        assert reply.status == 201, reply.text
        member.totp_secret = reply.body["secret"]
        member.factor_id = reply.body["factor_id"]
        confirm = self.client.post(
            f"/v1/me/factors/totp/{member.factor_id}/confirm",
            {"code": self.code(reply.body["secret"])},
            token=token,
        )
        assert confirm.status == 200, confirm.text
        assert member.factor_id is not None
        return member.factor_id

    def mfa_token(self, member: Member) -> str:
        token: str = self.login_ok(member, "mfa_required")["mfa_token"]
        return token

    def verify(self, member: Member, mfa_token: str, code: str | None = None) -> Reply:
        assert member.totp_secret is not None
        return self.client.post(
            "/v1/auth/mfa/verify",
            {"factor_id": member.factor_id, "code": code or self.code(member.totp_secret)},
            token=mfa_token,
        )

    def register_key(
        self, token: str, key: SoftAuthenticator, *, label: str = "Key"
    ) -> dict[str, Any]:
        """Register `key` through both ceremony calls; return the new factor."""
        options = self.client.post("/v1/me/factors/webauthn/options", {}, token=token)
        assert options.status == 200, options.text
        credential = key.register(options.body["options"], origin=self.origin)
        reply = self.client.post(
            "/v1/me/factors/webauthn",
            {
                "challenge_id": options.body["challenge_id"],
                "credential": credential,
                "label": label,
            },
            token=token,
        )
        assert reply.status == 201, reply.text
        factor: dict[str, Any] = reply.body
        return factor

    def key_challenge(self, token: str, factor_id: str | None = None) -> dict[str, Any]:
        body = {} if factor_id is None else {"factor_id": factor_id}
        reply = self.client.post("/v1/auth/mfa/challenge", body, token=token)
        assert reply.status == 200, reply.text
        challenge: dict[str, Any] = reply.body
        return challenge

    def key_verify(
        self, token: str, challenge: dict[str, Any], credential: dict[str, Any]
    ) -> Reply:
        return self.client.post(
            "/v1/auth/mfa/verify",
            {"challenge_id": challenge["challenge_id"], "credential": credential},
            token=token,
        )

    def login_with_key(self, member: Member, key: SoftAuthenticator, **kwargs: Any) -> Reply:
        """Sign in with the password, then respond to a key challenge with `key`."""
        mfa_token = self.mfa_token(member)
        challenge = self.key_challenge(mfa_token)
        kwargs.setdefault("origin", self.origin)
        credential = key.authenticate(challenge["options"], **kwargs)
        return self.key_verify(mfa_token, challenge, credential)

    def next_step(self) -> None:
        """Move the clock to the start of the next TOTP time step."""
        now = self.clock.now()
        self.clock.set((int(now) // totp.PERIOD + 1) * totp.PERIOD)


def wrong_code(flow: Flow, secret: str) -> str:
    """Return six digits that are not a valid code for `secret` within the ±1 step window."""
    valid = {flow.code(secret, steps_ahead=offset) for offset in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)
