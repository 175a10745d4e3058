"""The reference web page in Chromium: loading, password sign-in and TOTP, over the real API."""

from __future__ import annotations

import io
import re

import pyotp
import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Page, expect

from local.static import CONTENT_SECURITY_POLICY
from mfa_core import totp
from tests.api.conftest import add_org
from tests.api.harness import Client, Flow
from tests.browser.mfa_page import MfaPage

pytestmark = pytest.mark.browser


def test_page_loads_and_signs_in(
    mfa_page: MfaPage, page: Page, console_errors: list[str], client: Client
) -> None:
    member = add_org("acme", enforcement="optional")

    response = page.goto(mfa_page.url)
    assert response is not None
    assert response.status == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    mfa_page.expect_view("signin")
    assert page.evaluate("window.isSecureContext") is True
    assert page.evaluate("typeof PublicKeyCredential.parseCreationOptionsFromJSON") == "function"
    assert page.evaluate("typeof PublicKeyCredential.parseRequestOptionsFromJSON") == "function"

    mfa_page.sign_in(member)

    mfa_page.expect_view("account")
    expect(page.locator("#account-name")).to_have_text(
        f"Signed in as {member.email} ({member.org_id})."
    )
    expect(page.locator("#factors-empty")).to_be_visible()
    expect(page.locator("#key-register-button")).to_be_visible()
    expect(page.locator("#password")).to_have_value("")
    assert page.evaluate("window.localStorage.length + window.sessionStorage.length") == 0
    assert console_errors == []


def test_wrong_password_shows_detail(mfa_page: MfaPage, page: Page, client: Client) -> None:
    member = add_org("acme")
    member.password = "not the password at all"
    mfa_page.open()

    mfa_page.sign_in(member)

    expect(page.locator("#status")).to_have_class("error")
    reply = client.post(
        "/v1/auth/login",
        {"org_id": member.org_id, "email": member.email, "password": member.password},
    )
    assert reply.status == 401
    mfa_page.expect_status(reply.body["detail"])
    mfa_page.expect_view("signin")


def _decode_qr(png: bytes) -> list[str]:
    image = Image.open(io.BytesIO(png)).convert("L")
    return [result.text for result in zxingcpp.read_barcodes(image)]


def test_totp_enrolled_and_used(mfa_page: MfaPage, page: Page, flow: Flow) -> None:
    member = add_org("acme")
    mfa_page.open()
    mfa_page.sign_in(member)
    mfa_page.expect_view("account")

    page.fill("#totp-label", "Phone")
    page.click("#totp-enroll-button")
    expect(page.locator("#totp-setup")).to_be_visible()
    qr = page.locator("#totp-qr")
    expect(qr).to_have_attribute("src", re.compile(r"^blob:"))
    page.wait_for_function("document.getElementById('totp-qr').complete")
    assert qr.evaluate("image => image.naturalWidth") > 0
    scanned = _decode_qr(qr.screenshot())
    assert len(scanned) == 1
    app = pyotp.parse_uri(scanned[0])
    assert isinstance(app, pyotp.TOTP)
    assert app.secret == page.locator("#totp-secret").inner_text()

    page.fill("#totp-confirm-code", app.at(int(flow.clock.now())))
    page.click("#totp-confirm-button")
    mfa_page.expect_status("Added Phone.")
    # The first factor brings the backup codes, shown once.
    expect(page.locator("#backup-codes")).to_be_visible()
    expect(page.locator("#backup-codes-list li")).to_have_count(10)
    assert re.fullmatch(
        r"[0-9A-Z]{5}-[0-9A-Z]{5}", page.locator("#backup-codes-list li").first.inner_text()
    )
    expect(page.locator("#totp-setup")).to_be_hidden()
    factor = mfa_page.only_factor()
    assert (factor.type, factor.label, factor.status) == ("totp", "Phone", "active")

    mfa_page.log_out()
    flow.next_step()
    mfa_page.sign_in(member)
    mfa_page.expect_view("mfa")
    expect(page.locator("#mfa-key-button")).to_be_hidden()
    page.fill("#mfa-totp-code", app.at(int(flow.clock.now())))
    page.click("#mfa-totp-button")
    mfa_page.expect_view("account")
    assert mfa_page.only_factor().last_used != "never"


def test_wrong_totp_code_shows_detail(mfa_page: MfaPage, page: Page, flow: Flow) -> None:
    member = add_org("acme")
    token = flow.login_ok(member, "authenticated")["access_token"]
    flow.enroll(member, token)
    flow.next_step()
    mfa_page.open()
    mfa_page.sign_in(member)
    mfa_page.expect_view("mfa")

    assert member.totp_secret is not None
    valid = {flow.code(member.totp_secret, steps_ahead=offset) for offset in (-1, 0, 1)}
    wrong = next(code for code in ("000000", "111111", "222222") if code not in valid)
    page.fill("#mfa-totp-code", wrong)
    page.click("#mfa-totp-button")

    expect(page.locator("#status")).to_have_class("error")
    expect(page.locator("#status")).not_to_be_empty()
    mfa_page.expect_view("mfa")
    page.fill("#mfa-totp-code", flow.code(member.totp_secret))
    page.click("#mfa-totp-button")
    mfa_page.expect_view("account")


def test_enrollment_required_org(mfa_page: MfaPage, page: Page, flow: Flow) -> None:
    member = add_org("acme", enforcement="required")
    mfa_page.open()
    mfa_page.sign_in(member)
    mfa_page.expect_view("enroll")
    expect(page.locator("#add-factor-view")).to_be_visible()
    expect(page.locator("#account-view")).to_be_hidden()

    page.click("#totp-enroll-button")
    secret = page.locator("#totp-secret")
    expect(secret).not_to_be_empty()
    page.fill("#totp-confirm-code", pyotp.TOTP(secret.inner_text()).at(int(flow.clock.now())))
    page.click("#totp-confirm-button")

    mfa_page.expect_view("signin")
    mfa_page.expect_status("Sign in again")
    flow.clock.advance(totp.PERIOD)
    assert flow.login_ok(member, "mfa_required")["factors"][0]["type"] == "totp"


def test_logout_after_access_token_expiry_ends_session(
    mfa_page: MfaPage, page: Page, flow: Flow
) -> None:
    member = add_org("acme")
    mfa_page.open()
    mfa_page.sign_in(member)
    mfa_page.expect_view("account")
    flow.clock.advance(16 * 60)  # past the access token's 15 minutes

    statuses: list[int] = []
    page.on(
        "response",
        lambda response: (
            statuses.append(response.status)
            if response.url.endswith(("/v1/auth/logout", "/v1/auth/refresh"))
            else None
        ),
    )
    page.click("#logout-button")

    mfa_page.expect_view("signin")
    expect(page.locator("#status")).to_have_text("Logged out.")
    # The expired access token is refused, refreshed, and the logout repeated.
    assert statuses == [401, 200, 204]
    access = flow.login_ok(member, "authenticated")["access_token"]
    listed = flow.client.get("/v1/me/sessions", token=access).body["sessions"]
    assert [session["current"] for session in listed] == [True]
