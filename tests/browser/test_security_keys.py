"""Security keys end to end: the reference page in Chromium, a virtual authenticator, the API.

The authenticator's counter is set through CDP by removing the credential and adding it back
with the same id, private key, RP ID and user handle but another signCount, which is what a
copy of the key's secret would do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from playwright.sync_api import Page, Response, Route, expect

from local.stack import LocalStack
from mfa_core import audit, policy, runtime
from tests.api.conftest import add_org
from tests.api.harness import Flow, Member
from tests.browser.authenticator import VirtualAuthenticator, to_base64url, to_cdp_base64
from tests.browser.mfa_page import FactorRow, MfaPage

pytestmark = pytest.mark.browser

# Seconds after which an MFA is too old for factor changes, as the API documents it.
MAX_MFA_AGE = 5 * 60


def _register_key(mfa_page: MfaPage, label: str) -> FactorRow:
    """Register a key from the signed-in page and return its row in the factor table."""
    rows_before = len(mfa_page.factor_rows())
    mfa_page.register_key(label)
    mfa_page.expect_status(f"Added {label}.")
    expect(mfa_page.page.locator("#factors-body tr")).to_have_count(rows_before + 1)
    return next(row for row in mfa_page.factor_rows() if row.type == "webauthn")


def _key_row(mfa_page: MfaPage) -> FactorRow:
    return next(row for row in mfa_page.factor_rows() if row.type == "webauthn")


def _replace_credential(
    authenticator: VirtualAuthenticator, original: dict[str, Any], sign_count: int
) -> None:
    """Replace the only credential with a copy of `original` whose counter is `sign_count`.

    `original` is the credential as read right after registration, because Chromium 150
    leaves out rpId, userHandle and userName when it returns a credential added through CDP.
    """
    authenticator.remove_credential(original["credentialId"])
    authenticator.add_credential({**original, "signCount": sign_count})
    assert authenticator.only_credential()["signCount"] == sign_count


def _audit_items(stack: LocalStack, org_id: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb", endpoint_url=stack.aws_endpoint_url).Table(
        runtime.services().settings.audit_table
    )
    items: list[dict[str, Any]] = table.query(
        KeyConditionExpression="org_id = :o", ExpressionAttributeValues={":o": org_id}
    )["Items"]
    return items


def _sign_in_with_totp(mfa_page: MfaPage, flow: Flow, member: Member) -> None:
    _sign_in_with_totp_to(mfa_page, flow, member, view="account")


def _sign_in_with_totp_to(mfa_page: MfaPage, flow: Flow, member: Member, *, view: str) -> None:
    """Sign in with the password and a TOTP code, and expect the page to show `view`."""
    assert member.totp_secret is not None
    flow.next_step()
    mfa_page.sign_in(member)
    mfa_page.expect_view("mfa")
    mfa_page.page.fill("#mfa-totp-code", flow.code(member.totp_secret))
    mfa_page.page.click("#mfa-totp-button")
    mfa_page.expect_view(view)


def test_key_registered_and_used(
    mfa_page: MfaPage, page: Page, authenticator: VirtualAuthenticator, flow: Flow
) -> None:
    member = add_org("acme")
    mfa_page.open()
    mfa_page.sign_in(member)
    mfa_page.expect_view("account")

    registered = _register_key(mfa_page, "YubiKey")

    assert (registered.label, registered.status) == ("YubiKey", "active")
    assert registered.last_used == "never"
    credential = authenticator.only_credential()
    assert credential["rpId"] == "localhost"
    assert to_cdp_base64(to_base64url(credential["credentialId"])) == credential["credentialId"]
    registered_count = int(registered.sign_count)
    assert registered_count == credential["signCount"]

    mfa_page.log_out()
    mfa_page.sign_in_with_key(member)

    mfa_page.expect_view("account")
    used = _key_row(mfa_page)
    used_count = int(used.sign_count)
    assert used_count > registered_count
    assert used_count == authenticator.only_credential()["signCount"]
    assert used.last_used != "never"
    assert not used.clone_warning
    login = flow.login_ok(member, "mfa_required")
    assert [factor["type"] for factor in login["factors"]] == ["webauthn"]


def test_cloned_key_rejected(
    mfa_page: MfaPage,
    page: Page,
    authenticator: VirtualAuthenticator,
    flow: Flow,
    stack: LocalStack,
) -> None:
    member = add_org("acme")
    # A TOTP factor too, so that the user can still sign in once the key is suspect.
    flow.enroll(member, flow.login_ok(member, "authenticated")["access_token"])
    mfa_page.open()
    _sign_in_with_totp(mfa_page, flow, member)
    _register_key(mfa_page, "YubiKey")
    original = authenticator.only_credential()
    assert original["rpId"] == "localhost"

    # Counters may jump forward: the server accepts 11 and stores it.
    _replace_credential(authenticator, original, 10)
    mfa_page.log_out()
    mfa_page.sign_in_with_key(member)
    mfa_page.expect_view("account")
    assert _key_row(mfa_page).sign_count == "11"

    # The copy's counter is behind the server's, although its signature is valid.
    mfa_page.log_out()
    _replace_credential(authenticator, original, 3)
    with page.expect_response("**/v1/auth/mfa/verify") as verify:
        mfa_page.sign_in_with_key(member)

    assert verify.value.status == 401
    expect(page.locator("#status")).to_have_class("error")
    mfa_page.expect_status(verify.value.json()["detail"])
    mfa_page.expect_view("mfa")
    assert authenticator.only_credential()["signCount"] == 4
    suspected = [
        item
        for item in _audit_items(stack, "acme")
        if item["event_type"] == "webauthn.clone_suspected"
    ]
    assert len(suspected) == 1
    assert suspected[0]["outcome"] == "denied"
    assert suspected[0]["user_id"] == member.user_id

    page.click("#mfa-cancel")
    _sign_in_with_totp(mfa_page, flow, member)
    key = _key_row(mfa_page)
    assert key.clone_warning
    assert key.sign_count == "11"
    expect(mfa_page.factor_row(key.factor_id).locator(".clone-warning")).to_be_visible()


def _downgrade_user_verification(route: Route) -> None:
    """Act as a client that ignores the server's userVerification requirement."""
    response = route.fetch()
    body = response.json()
    body["options"]["userVerification"] = "discouraged"
    route.fulfill(response=response, body=json.dumps(body))


def test_required_user_verification_enforced(
    mfa_page: MfaPage,
    page: Page,
    add_authenticator: Callable[..., VirtualAuthenticator],
    stack: LocalStack,
) -> None:
    member = add_org("acme")
    services = runtime.services()
    policy.set_webauthn_policy(services, org_id="acme", user_verification="discouraged")
    authenticator = add_authenticator(user_verification=False)
    mfa_page.open()
    mfa_page.sign_in(member)
    mfa_page.expect_view("account")
    _register_key(mfa_page, "Basic key")
    mfa_page.log_out()
    mfa_page.sign_in_with_key(member)
    mfa_page.expect_view("account")
    mfa_page.log_out()
    count_before = authenticator.only_credential()["signCount"]

    policy.set_webauthn_policy(services, org_id="acme", user_verification="required")
    # Chromium itself rejects the ceremony, because the options require user verification and
    # the key has none. The page shows why.
    verifications: list[int] = []

    def record_verification(response: Response) -> None:
        if response.url.endswith("/v1/auth/mfa/verify"):
            verifications.append(response.status)

    page.on("response", record_verification)
    mfa_page.sign_in_with_key(member)
    mfa_page.expect_status("The security key operation was cancelled, timed out or not allowed.")
    assert verifications == []
    assert authenticator.only_credential()["signCount"] == count_before
    page.click("#mfa-cancel")

    # A client that drops the requirement reaches the server's own check.
    page.route("**/v1/auth/mfa/challenge", _downgrade_user_verification)
    with page.expect_response("**/v1/auth/mfa/verify") as verify:
        mfa_page.sign_in_with_key(member)

    assert verify.value.status == 401
    assert verify.value.json()["code"] == "invalid_credential"
    mfa_page.expect_status(verify.value.json()["detail"])
    mfa_page.expect_view("mfa")
    assert authenticator.only_credential()["signCount"] == count_before + 1
    failures = [
        item
        for item in _audit_items(stack, "acme")
        if item.get("reason") == "user_verification_missing"
    ]
    assert len(failures) == 1
    assert failures[0]["outcome"] == "failure"
    assert failures[0]["user_id"] == member.user_id


def test_key_removal_asks_for_step_up(
    mfa_page: MfaPage, page: Page, authenticator: VirtualAuthenticator, flow: Flow
) -> None:
    member = add_org("acme")
    deletions: list[int] = []

    def record_deletion(response: Response) -> None:
        if response.request.method == "DELETE":
            deletions.append(response.status)

    page.on("response", record_deletion)
    mfa_page.open()
    mfa_page.sign_in(member)
    mfa_page.expect_view("account")
    key = _register_key(mfa_page, "YubiKey")
    mfa_page.log_out()
    mfa_page.sign_in_with_key(member)
    mfa_page.expect_view("account")
    count_after_login = authenticator.only_credential()["signCount"]

    flow.clock.advance(MAX_MFA_AGE + 1)
    page.click(f"#remove-{key.factor_id}")

    expect(page.locator("#stepup-view")).to_be_visible()
    expect(page.locator("#stepup-key-button")).to_be_visible()
    expect(page.locator("#stepup-totp-form")).to_be_hidden()
    expect(page.locator("#status")).to_have_class("error")
    assert deletions == [403]
    assert len(mfa_page.factor_rows()) == 1

    page.click("#stepup-key-button")

    expect(page.locator("#stepup-view")).to_be_hidden()
    mfa_page.expect_status("Removed YubiKey.")
    expect(page.locator("#factors-body tr")).to_have_count(0)
    expect(page.locator("#factors-empty")).to_be_visible()
    assert deletions == [403, 204]
    assert authenticator.only_credential()["signCount"] == count_after_login + 1
    assert flow.login_ok(member, "authenticated")["status"] == "authenticated"


def test_step_up_cancel_keeps_key(
    mfa_page: MfaPage, page: Page, authenticator: VirtualAuthenticator, flow: Flow
) -> None:
    member = add_org("acme")
    mfa_page.open()
    mfa_page.sign_in(member)
    mfa_page.expect_view("account")
    key = _register_key(mfa_page, "YubiKey")
    mfa_page.log_out()
    mfa_page.sign_in_with_key(member)
    mfa_page.expect_view("account")

    flow.clock.advance(MAX_MFA_AGE + 1)
    page.click(f"#remove-{key.factor_id}")
    expect(page.locator("#stepup-view")).to_be_visible()
    page.click("#stepup-cancel")

    expect(page.locator("#stepup-view")).to_be_hidden()
    mfa_page.expect_status("Step-up cancelled")
    assert [row.factor_id for row in mfa_page.factor_rows()] == [key.factor_id]
    expect(page.locator(f"#remove-{key.factor_id}")).to_be_enabled()


def test_registration_steps_up_with_totp(
    mfa_page: MfaPage, page: Page, authenticator: VirtualAuthenticator, flow: Flow
) -> None:
    member = add_org("acme")
    flow.enroll(member, flow.login_ok(member, "authenticated")["access_token"])
    mfa_page.open()
    _sign_in_with_totp(mfa_page, flow, member)

    flow.clock.advance(MAX_MFA_AGE + 1)
    mfa_page.register_key("YubiKey")

    expect(page.locator("#stepup-view")).to_be_visible()
    expect(page.locator("#stepup-totp-form")).to_be_visible()
    expect(page.locator("#stepup-key-button")).to_be_hidden()
    assert authenticator.credentials() == []
    assert member.totp_secret is not None
    page.fill("#stepup-totp-code", flow.code(member.totp_secret))
    page.click("#stepup-totp-button")

    expect(page.locator("#stepup-view")).to_be_hidden()
    mfa_page.expect_status("Added YubiKey.")
    expect(page.locator("#factors-body tr")).to_have_count(2)
    assert _key_row(mfa_page).label == "YubiKey"
    assert len(authenticator.credentials()) == 1


def test_key_role_registers_a_key_after_totp(
    mfa_page: MfaPage, page: Page, authenticator: VirtualAuthenticator, flow: Flow
) -> None:
    member = add_org("acme")
    flow.enroll(member, flow.login_ok(member, "authenticated")["access_token"])
    policy.set_mfa_policy(
        runtime.services(),
        org_id="acme",
        policy=policy.MfaPolicy(security_key_roles=("admin",)),
        expected_version=None,
        actor="operator",
        context=audit.SYSTEM,
    )
    mfa_page.open()
    _sign_in_with_totp_to(mfa_page, flow, member, view="enroll")
    expect(page.locator("#enroll-key-required")).to_be_visible()
    expect(page.locator("#totp-enroll-form")).to_be_hidden()

    mfa_page.register_key("YubiKey")
    mfa_page.expect_view("signin")
    mfa_page.expect_status("Sign in again")
    mfa_page.sign_in(member)
    mfa_page.expect_view("mfa")
    expect(page.locator("#mfa-totp-form")).to_be_hidden()
    page.click("#mfa-key-button")
    mfa_page.expect_view("account")
    assert authenticator.only_credential()["signCount"] > 0
