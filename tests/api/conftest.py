"""Fixtures for API tests: one local stack (moto server + HTTP gateway) per test run, with its
data emptied and the clock reset before each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.stack import LocalStack
from mfa_core import members, runtime
from mfa_core.adapters.keys import SigningKeys
from mfa_core.audit import RequestContext
from mfa_core.clock import ManualClock
from tests.api.harness import Client, Flow, Member

# 2027-01-15T08:00:00Z, the first second of a TOTP time step.
START = 1_800_000_000
ADMIN_PASSWORD = "correct horse battery staple"
# Requests with this header come "from" the address it names (see local.gateway.ApiGateway).
SOURCE_IP_HEADER = "X-Test-Source-Ip"


@pytest.fixture(scope="session")
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(scope="session")
def stack(clock: ManualClock) -> Iterator[LocalStack]:
    local_stack = LocalStack(
        source_ip_header=SOURCE_IP_HEADER,
        environment={"MFA_GEOIP_TRUST_CLOUDFRONT": "true"},
    )
    local_stack.start()
    runtime.reset(clock=clock)
    runtime.services().signing_keys.rotate()
    try:
        yield local_stack
    finally:
        local_stack.stop()


@pytest.fixture
def client(stack: LocalStack, clock: ManualClock) -> Client:
    stack.reset_data()
    runtime.services().store.forget_orgs()
    # Test providers on 127.0.0.1 reuse ports, and with them issuer URLs, with new keys.
    runtime.services().sso_metadata.clear()
    clock.set(START)
    return Client(stack.api_url)


@pytest.fixture
def flow(client: Client, clock: ManualClock) -> Flow:
    return Flow(client, clock)


@pytest.fixture
def signing_keys(stack: LocalStack) -> SigningKeys:
    return runtime.services().signing_keys


def add_org(org_id: str, *, enforcement: str = "optional") -> Member:
    """Create an org and its admin in-process, as `mfa-admin org bootstrap` does."""
    email = f"admin@{org_id}.example"
    created = members.bootstrap_org(
        runtime.services(),
        org_id=org_id,
        name=org_id.title(),
        admin_email=email,
        admin_password=ADMIN_PASSWORD,
        enforcement=enforcement,
    )
    return Member(org_id, email, ADMIN_PASSWORD, created.user.user_id)


def add_member(org_id: str, email: str, *, role: str = "operator") -> Member:
    created = members.create_member(
        runtime.services(),
        org_id=org_id,
        email=email,
        role=role,
        password=ADMIN_PASSWORD,
        actor="operator",
        context=RequestContext(source_ip="127.0.0.1", user_agent="tests", request_id="test"),
    )
    return Member(org_id, email, ADMIN_PASSWORD, created.user.user_id)


@pytest.fixture
def acme(client: Client) -> Member:
    return add_org("acme")


@pytest.fixture
def enrolled(acme: Member, flow: Flow) -> Member:
    """The acme admin with an active TOTP factor, and the clock moved past its first code."""
    token = flow.login_ok(acme, "authenticated")["access_token"]
    flow.enroll(acme, token)
    flow.next_step()
    return acme
