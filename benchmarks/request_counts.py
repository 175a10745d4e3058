"""AWS requests per API operation, counted on the whole stack running in this process.

The local stack (moto for AWS, the HTTP gateway in front of the four functions) starts
in-process, as in the API tests, with a manual clock. An org is bootstrapped with MFA
enforcement "optional", its admin enrolls TOTP and registers an ES256 security key (the
software authenticator of `tests.authenticator`) over HTTP, and one uncounted round of every
operation warms the caches (signing keys, the data key of the TOTP seed, the AWS clients).
Then each operation is sent over HTTP in rounds, and the AWS calls it causes are counted.

How calls are counted: the clients are created in several places and lazily, on first use.
`mfa_core.adapters.aws` creates the KMS, Secrets Manager, SSM and DynamoDB clients, PynamoDB
creates a session and a client for any Connection that has none, and moto and the local stack
create their own. So there is no single client or session to hook before the stack runs.
Instead, `CallCounter.installed()` wraps `botocore.session.Session.create_client` for the
duration of the run and registers handlers on the event system of every client created
meanwhile, whichever session and library create it:

- `before-call.dynamodb.*` counts DynamoDB API calls by operation name;
- `before-send.dynamodb.*` counts the HTTP attempts that carry them (more than the calls only if
  a call was retried);
- `before-call` counts the calls of every other service (KMS, Secrets Manager, SSM...).

The wrapper is installed before the stack starts, so no client escapes it, and calls are
counted only inside a `CallCounter.count` window, so provisioning and set-up are left out.
Every connection is refused unless it goes to a loopback address.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import botocore.session

from local.stack import LocalStack
from mfa_core import members, runtime, totp
from mfa_core.clock import ManualClock
from tests.authenticator import ES256, SoftAuthenticator

T = TypeVar("T")

START = 1_800_000_000  # 2027-01-15T08:00:00Z, the first second of a TOTP time step
ORG_ID = "bench"
ADMIN_EMAIL = "admin@bench.example"
ADMIN_PASSWORD = "correct horse battery staple"
MEASURED_ROUNDS = 3
LOGIN_TIMING_SAMPLES = 15

# Operation key -> the row label in the report.
OPERATIONS: dict[str, str] = {
    "login": "Password login (`POST /v1/auth/login`, returns mfa_required)",
    "verify": "TOTP verify at login (`POST /v1/auth/mfa/verify`)",
    "refresh": "Refresh (`POST /v1/auth/refresh`)",
    "enroll": "TOTP enroll (`POST /v1/me/factors/totp`)",
    "confirm": "TOTP confirm (`POST /v1/me/factors/totp/{id}/confirm`)",
    "logout": "Logout (`POST /v1/auth/logout`)",
    "key_challenge": "Security-key challenge at login (`POST /v1/auth/mfa/challenge`, mfa_token)",
    "key_verify": "Security-key verify at login (`POST /v1/auth/mfa/verify`, assertion)",
    "step_up_challenge": "Security-key challenge for step-up (`POST /v1/auth/mfa/challenge`, "
    "access token)",
    "step_up_verify": "Security-key verify for step-up (`POST /v1/auth/mfa/verify`, access token)",
    "authorizer_miss": "Protected agent route through the Lambda authorizer, session not cached "
    "(`PUT /v1/agents/{agent_id}/config`)",
    "authorizer_hit": "The same route again within the authorizer's session cache time",
}
UNCACHED_LABEL = "TOTP verify, first one for this factor in the process (data key not cached yet)"

TARGET_VERIFY = 2
TARGET_LOGIN_AND_VERIFY = 5
TARGET_KEY_CHALLENGE = 2
TARGET_KEY_VERIFY = 2


@dataclass(frozen=True)
class Tally:
    """The AWS calls made during one operation."""

    dynamodb: dict[str, int] = field(default_factory=dict)
    dynamodb_attempts: int = 0
    other: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.dynamodb.values())


class CallCounter:
    """Counts the AWS calls of every botocore client created while `installed()` is active."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed = False
        self._dynamodb: Counter[str] = Counter()
        self._attempts = 0
        self._other: Counter[str] = Counter()

    @contextlib.contextmanager
    def installed(self) -> Iterator[CallCounter]:
        original = botocore.session.Session.create_client
        counter = self

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            counter._register(client)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            botocore.session.Session.create_client = original  # type: ignore[method-assign]

    def count(self, call: Callable[[], T]) -> tuple[Tally, T]:
        """Run `call` and return the AWS calls that it caused, with its result."""
        with self._lock:
            self._dynamodb.clear()
            self._other.clear()
            self._attempts = 0
            self._armed = True
        try:
            result = call()
        finally:
            with self._lock:
                self._armed = False
        with self._lock:
            tally = Tally(dict(self._dynamodb), self._attempts, dict(self._other))
        return tally, result

    def _register(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-call.dynamodb.*", self._on_dynamodb_call)
        events.register("before-send.dynamodb.*", self._on_dynamodb_send)
        events.register("before-call", self._on_any_call)

    def _on_dynamodb_call(self, model: Any, **_: Any) -> None:
        with self._lock:
            if self._armed:
                self._dynamodb[model.name] += 1

    def _on_dynamodb_send(self, **_: Any) -> None:
        with self._lock:
            if self._armed:
                self._attempts += 1

    def _on_any_call(self, model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        if service == "dynamodb":
            return
        with self._lock:
            if self._armed:
                self._other[f"{service} {model.name}"] += 1


@dataclass(frozen=True)
class LoginTiming:
    """Wall-clock milliseconds of failed and successful logins, over HTTP, by case."""

    samples: dict[str, list[float]]

    def markdown(self) -> str:
        lines = [
            "Login timing over HTTP on the local stack: median and spread of "
            f"{len(next(iter(self.samples.values())))} interleaved logins per case. "
            "An unknown email must cost what a wrong password costs, so that timing does not "
            "reveal which accounts exist.",
            "",
            "| Case | Median ms | Min ms | Max ms |",
            "| --- | ---: | ---: | ---: |",
        ]
        for case, values in self.samples.items():
            lines.append(
                f"| {case} | {statistics.median(values):.1f} | {min(values):.1f} "
                f"| {max(values):.1f} |"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class RequestsResult:
    rounds: list[dict[str, Tally]]
    uncached_verify: Tally
    login_timing: LoginTiming

    def _rows(self) -> list[tuple[str, list[Tally]]]:
        rows = [(label, [r[key] for r in self.rounds]) for key, label in OPERATIONS.items()]
        rows.append((UNCACHED_LABEL, [self.uncached_verify]))
        return rows

    def per_operation(self, key: str) -> int:
        """Return the DynamoDB request count of an operation, the highest if rounds differed."""
        return max(r[key].total for r in self.rounds)

    def markdown(self) -> str:
        rows = self._rows()
        names = sorted({name for _, tallies in rows for t in tallies for name in t.dynamodb})
        lines = [
            f"Warm operations, {len(self.rounds)} rounds each after one warm-up round; "
            "a cell shows one number when every round made the same calls.",
            "",
            "| Operation | " + " | ".join(names) + " | DynamoDB total | HTTP attempts "
            "| Other AWS calls |",
            "| --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: | --- |",
        ]
        for label, tallies in rows:
            cells = [_cell([t.dynamodb.get(name, 0) for t in tallies]) for name in names]
            other = sorted({f"{k} x{v}" for t in tallies for k, v in t.other.items()})
            lines.append(
                f"| {label} | " + " | ".join(cells) + f" | **{_cell([t.total for t in tallies])}** "
                f"| {_cell([t.dynamodb_attempts for t in tallies])} "
                f"| {', '.join(other) if other else '0'} |"
            )
        login = self.per_operation("login")
        verify = self.per_operation("verify")
        both = login + verify
        key_challenge = self.per_operation("key_challenge")
        key_verify = self.per_operation("key_verify")
        challenge_met = "met" if key_challenge <= TARGET_KEY_CHALLENGE else "missed"
        warm_other = {
            OPERATIONS[key]: sorted({k for r in self.rounds for k in r[key].other})
            for key in OPERATIONS
        }
        with_other = {label: calls for label, calls in warm_other.items() if calls}
        lines += [
            "",
            f"- TOTP verify at login: {verify} DynamoDB round trips, target {TARGET_VERIFY} "
            "(one read, one transactional conditional write): "
            f"**{'met' if verify <= TARGET_VERIFY else 'missed'}**.",
            f"- Password login + TOTP verify: {both} round trips, target "
            f"≤ {TARGET_LOGIN_AND_VERIFY}: "
            f"**{'met' if both <= TARGET_LOGIN_AND_VERIFY else 'missed'}**.",
            f"- Security-key challenge at login: {key_challenge} DynamoDB round trips, target "
            f"{TARGET_KEY_CHALLENGE} (one read of the login transaction, user and org, one write "
            f"of the challenge): **{challenge_met}**.",
            f"- Security-key verify at login: {key_verify} DynamoDB round trips, target "
            f"{TARGET_KEY_VERIFY} (one read, one transactional conditional write): "
            f"**{'met' if key_verify <= TARGET_KEY_VERIFY else 'missed'}**.",
            f"- Password login + security-key challenge + verify: "
            f"{login + key_challenge + key_verify} round trips (no target).",
            f"- Step-up with a security key: {self.per_operation('step_up_challenge')} round "
            f"trips for the challenge and {self.per_operation('step_up_verify')} for the verify "
            "(no target).",
            f"- Lambda authorizer: {self.per_operation('authorizer_miss')} DynamoDB round trips "
            f"when the session is not cached, {self.per_operation('authorizer_hit')} when it is "
            "(no target).",
        ]
        if with_other:
            described = "; ".join(f"{label}: {', '.join(c)}" for label, c in with_other.items())
            lines.append(
                f"- Non-DynamoDB AWS calls per warm operation, target 0: **missed** by {described}."
            )
        else:
            lines.append("- Non-DynamoDB AWS calls per warm operation, target 0: **met**.")
        lines += ["", self.login_timing.markdown()]
        return "\n".join(lines)


def _cell(values: list[int]) -> str:
    distinct = sorted(set(values))
    return str(distinct[0]) if len(distinct) == 1 else " / ".join(str(v) for v in values)


class _Discard(io.StringIO):
    """A text stream that drops what is written to it: the functions' logs go here."""

    def write(self, text: str) -> int:
        return len(text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address and not _is_loopback(address[0]):
            raise RuntimeError(f"the benchmark only connects to loopback, not {address!r}")
        return real_connect(sock, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]


@contextlib.contextmanager
def _quiet_moto_server() -> Iterator[None]:
    """Keep moto's server from logging every request it serves to stderr."""
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    try:
        yield
    finally:
        werkzeug.setLevel(level)


class _Api:
    """JSON over HTTP to the local gateway; every reply must have the expected status."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        expect: int = 200,
        method: str = "POST",
    ) -> Any:
        headers = {"User-Agent": "mfa-bench/1.0", "Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body if body is not None else {}).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - the local gateway's http URL
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
                status, text = response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode("utf-8")
        if status != expect:
            raise RuntimeError(f"{method} {path}: expected {expect}, got {status}: {text[:500]}")
        return json.loads(text) if text else None


class _Flow:
    def __init__(self, api: _Api, clock: ManualClock, counter: CallCounter) -> None:
        self.api = api
        self.clock = clock
        self.counter = counter
        self.secret = ""
        self.factor_id = ""
        self.key = SoftAuthenticator(algorithm=ES256)
        # WebAuthn needs a domain name: the local stack allows its gateway's port on localhost.
        self.origin = f"http://localhost:{urlsplit(api.base_url).port}"

    def code(self, secret: str) -> str:
        return totp.hotp(secret, totp.time_step(self.clock.now()))

    def next_step(self) -> None:
        self.clock.set((int(self.clock.now()) // totp.PERIOD + 1) * totp.PERIOD)

    def login(self) -> Any:
        credentials = {"org_id": ORG_ID, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        return self.api.post("/v1/auth/login", credentials)

    def verify(self, mfa_token: str) -> Any:
        body = {"factor_id": self.factor_id, "code": self.code(self.secret)}
        reply = self.api.post("/v1/auth/mfa/verify", body, token=mfa_token)
        _expect_status(reply, "authenticated")
        return reply

    def enroll(self, token: str) -> Any:
        return self.api.post("/v1/me/factors/totp", {"label": "Phone"}, token=token, expect=201)

    def confirm(self, token: str, enrollment: Any) -> Any:
        path = f"/v1/me/factors/totp/{enrollment['factor_id']}/confirm"
        return self.api.post(path, {"code": self.code(enrollment["secret"])}, token=token)

    def first_enrollment(self) -> None:
        """Log in without MFA (none enrolled yet), then enroll and confirm the login factor."""
        reply = self.login()
        _expect_status(reply, "authenticated")
        enrollment = self.enroll(reply["access_token"])
        self.confirm(reply["access_token"], enrollment)
        self.secret, self.factor_id = enrollment["secret"], enrollment["factor_id"]

    def register_key(self) -> None:
        """Log in with TOTP, which adding a further factor requires, and register the key."""
        self.next_step()  # the confirmation used this factor's current step
        started = self.login()
        _expect_status(started, "mfa_required")
        token = self.verify(started["mfa_token"])["access_token"]
        options = self.api.post("/v1/me/factors/webauthn/options", {}, token=token)
        credential = self.key.register(options["options"], origin=self.origin)
        body = {"challenge_id": options["challenge_id"], "credential": credential, "label": "Key"}
        self.api.post("/v1/me/factors/webauthn", body, token=token, expect=201)
        self.api.post("/v1/auth/logout", token=token, expect=204)

    def key_challenge(self, token: str) -> Any:
        return self.api.post("/v1/auth/mfa/challenge", {}, token=token)

    def key_verify(self, token: str, challenge: Any, *, expected_status: str) -> Any:
        credential = self.key.authenticate(challenge["options"], origin=self.origin)
        body = {"challenge_id": challenge["challenge_id"], "credential": credential}
        reply = self.api.post("/v1/auth/mfa/verify", body, token=token)
        _expect_status(reply, expected_status)
        return reply

    def key_round(self) -> dict[str, Tally]:
        """Log in with the security key, then step up with it. Only the key calls are counted."""
        count = self.counter.count
        tallies: dict[str, Tally] = {}
        started = self.login()
        _expect_status(started, "mfa_required")
        mfa_token = started["mfa_token"]
        tallies["key_challenge"], challenge = count(lambda: self.key_challenge(mfa_token))
        tallies["key_verify"], verified = count(
            lambda: self.key_verify(mfa_token, challenge, expected_status="authenticated")
        )
        access = verified["access_token"]
        tallies["step_up_challenge"], step_up = count(lambda: self.key_challenge(access))
        tallies["step_up_verify"], _ = count(
            lambda: self.key_verify(access, step_up, expected_status="verified")
        )
        self.api.post("/v1/auth/logout", token=access, expect=204)
        return tallies

    def round(self) -> dict[str, Tally]:
        """Run every operation once, each counted on its own, in the order a user follows."""
        self.next_step()  # the previous round used this factor's current step
        count = self.counter.count
        tallies: dict[str, Tally] = {}
        tallies["login"], started = count(self.login)
        _expect_status(started, "mfa_required")
        tallies["verify"], verified = count(lambda: self.verify(started["mfa_token"]))
        for key in ("authorizer_miss", "authorizer_hit"):
            tallies[key], _ = count(
                lambda: self.api.post(
                    "/v1/agents/a1/config", {}, token=verified["access_token"], method="PUT"
                )
            )
        refresh_body = {"refresh_token": verified["refresh_token"]}
        tallies["refresh"], refreshed = count(
            lambda: self.api.post("/v1/auth/refresh", refresh_body)
        )
        token = refreshed["access_token"]
        tallies["enroll"], enrollment = count(lambda: self.enroll(token))
        tallies["confirm"], _ = count(lambda: self.confirm(token, enrollment))
        tallies["logout"], _ = count(
            lambda: self.api.post("/v1/auth/logout", token=token, expect=204)
        )
        tallies.update(self.key_round())
        return tallies

    def uncached_verify(self) -> Tally:
        """Count a verification made after the process dropped its data keys (a new container)."""
        self.next_step()
        started = self.login()
        _expect_status(started, "mfa_required")
        vars(runtime.services()).pop("cipher", None)  # rebuilt, with an empty cache, on next use
        tally, _ = self.counter.count(lambda: self.verify(started["mfa_token"]))
        return tally


def _expect_status(reply: Any, status: str) -> None:
    if not isinstance(reply, dict) or reply.get("status") != status:
        raise RuntimeError(f"expected status {status!r}, got {reply!r}")


def measure(rounds: int = MEASURED_ROUNDS) -> RequestsResult:
    # The key registration, each round and the uncached verify move the clock one TOTP step
    # each: 270 s with 6 rounds. All must fit in the signing keys' cache time (300 s), because
    # a round after it would include the periodic reading of the keys.
    if not 1 <= rounds <= 6:
        raise ValueError(f"invalid rounds {rounds}: use 1 to 6")
    counter = CallCounter()
    clock = ManualClock(START)
    with (
        _loopback_only(),
        _quiet_moto_server(),
        counter.installed(),
        contextlib.redirect_stdout(_Discard()),
        LocalStack() as stack,
    ):
        svc = runtime.reset(clock=clock)
        svc.signing_keys.rotate()
        members.bootstrap_org(
            svc,
            org_id=ORG_ID,
            name="Bench",
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            enforcement="optional",
        )
        flow = _Flow(_Api(stack.api_url), clock, counter)
        flow.first_enrollment()
        flow.register_key()
        flow.round()  # warm-up
        measured = [flow.round() for _ in range(rounds)]
        uncached = flow.uncached_verify()
        timing = _login_timing(_Api(stack.api_url))
    return RequestsResult(measured, uncached, timing)


def _login_timing(api: _Api, samples: int = LOGIN_TIMING_SAMPLES) -> LoginTiming:
    cases = {
        "Unknown email (401)": ("nobody@bench.example", "wrong password here", 401),
        "Known email, wrong password (401)": (ADMIN_EMAIL, "wrong password here", 401),
        "Right password (200, mfa_required)": (ADMIN_EMAIL, ADMIN_PASSWORD, 200),
    }
    timings: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(samples):
        for case, (email, password, status) in cases.items():
            body = {"org_id": ORG_ID, "email": email, "password": password}
            started = time.perf_counter()
            api.post("/v1/auth/login", body, expect=status)
            timings[case].append((time.perf_counter() - started) * 1000)
    return LoginTiming(timings)
