"""SSO logins in Chromium: the start route's cookie binds the login to the browser, and the
provider's redirect back to the callback, or the IdP's posted form, finishes it only there.

The fake provider of the API tests returns JSON from /authorize. Here its /authorize redirects
at once to the callback with a code and the state, as a provider does after its login page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from local.stack import LocalStack
from mfa_core.clock import ManualClock
from mfa_core.sso.binding import COOKIE_NAME
from tests.api.conftest import add_org
from tests.api.test_sso_oidc import FakeProvider, connect, failure_reasons, trust
from tests.api.test_sso_saml import connect as connect_saml
from tests.api.test_sso_saml import trust as trust_saml
from tests.browser.conftest import STEP_TIMEOUT_MS
from tests.saml_idp import FakeIdp, SamlIdpServer

pytestmark = pytest.mark.browser


class RedirectingProvider(FakeProvider):
    """A FakeProvider whose /authorize grants a code and redirects back to redirect_uri.

    With `redirect` False, /authorize returns the callback URL as JSON instead, so that a test
    can stop before the callback, as an attacker would.
    """

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.redirect = True
        provider = self
        base: type[BaseHTTPRequestHandler] = self.server.RequestHandlerClass  # type: ignore[assignment]

        class Handler(base):  # type: ignore[valid-type, misc]
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/authorize":
                    super().do_GET()
                    return
                request = {k: v[0] for k, v in parse_qs(url.query).items()}
                code = provider.grant(request)
                query = urlencode({"code": code, "state": request["state"]})
                location = f"{request['redirect_uri']}?{query}"
                if not provider.redirect:
                    self._send(200, {"callback": location})
                    return
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server.RequestHandlerClass = Handler


@pytest.fixture
def idp(clock: ManualClock) -> Iterator[RedirectingProvider]:
    with RedirectingProvider(clock) as provider:
        yield provider


def body_of(page: Page) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(page.locator("body").inner_text())
    return document


def test_oidc_login_sets_cookie_and_finishes(
    page: Page, context: BrowserContext, stack: LocalStack, idp: RedirectingProvider
) -> None:
    add_org("acme")
    connect("acme", idp)
    trust("acme")
    base = stack.page_url.rstrip("/")

    response = page.goto(f"{base}/v1/sso/oidc/acme/start")

    assert response is not None
    assert response.status == 200, response.text()
    assert response.url.startswith(f"{base}/v1/sso/oidc/acme/callback?")
    assert body_of(page)["status"] == "authenticated"
    [cookie] = [c for c in context.cookies() if c["name"] == COOKIE_NAME]
    assert cookie["domain"] == "localhost"
    assert cookie["path"] == "/"
    assert cookie["secure"] is True
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "None"
    assert len(idp.token_requests) == 1


def test_oidc_callback_in_other_browser_rejected(
    browser: Browser, page: Page, stack: LocalStack, idp: RedirectingProvider
) -> None:
    add_org("acme")
    connect("acme", idp)
    trust("acme")
    base = stack.page_url.rstrip("/")
    # The attacker's browser starts a login and stops at the callback URL, which a victim's
    # browser is then made to open. The attacker's own browser can still finish it.
    idp.redirect = False
    page.goto(f"{base}/v1/sso/oidc/acme/start")
    callback_url = body_of(page)["callback"]
    victim = browser.new_context()
    victim.set_default_timeout(STEP_TIMEOUT_MS)

    try:
        forced = victim.new_page().goto(callback_url)
        assert forced is not None
        assert forced.status == 401
        assert [c for c in victim.cookies() if c["name"] == COOKIE_NAME] == []
    finally:
        victim.close()
    own = page.goto(callback_url)

    assert own is not None
    assert own.status == 200, own.text()
    assert body_of(page)["status"] == "authenticated"


def test_saml_cross_site_post_finishes(page: Page, stack: LocalStack, clock: ManualClock) -> None:
    member = add_org("acme")
    saml_idp = FakeIdp.create()
    base = stack.page_url.rstrip("/")

    # The IdP's page is on 127.0.0.1 and the ACS on localhost, which are two sites. The cookie
    # reaches the ACS with the page's cross-site POST only because it is SameSite=None.
    with SamlIdpServer(saml_idp, clock, email=member.email) as server:
        connect_saml("acme", saml_idp, sso_url=server.sso_url)
        trust_saml("acme")
        with page.expect_response(f"{base}/v1/sso/saml/acme/acs") as posted:
            page.goto(f"{base}/v1/sso/saml/acme/start")

    reply = posted.value
    assert reply.request.method == "POST"
    assert reply.status == 200, reply.text()
    assert reply.json()["status"] == "authenticated"
    assert COOKIE_NAME in (reply.request.header_value("cookie") or "")


def test_start_on_other_host_fails_closed(
    page: Page, stack: LocalStack, idp: RedirectingProvider
) -> None:
    add_org("acme")
    connect("acme", idp)
    trust("acme")

    # The gateway also serves 127.0.0.1, but PublicBaseUrl, and so the callback, is on
    # localhost. The cookie set for 127.0.0.1 does not go to localhost.
    response = page.goto(f"{stack.api_url.rstrip('/')}/v1/sso/oidc/acme/start")

    assert response is not None
    assert response.url.startswith(f"{stack.page_url.rstrip('/')}/v1/sso/oidc/acme/callback?")
    assert response.status == 401
    assert failure_reasons() == ["browser_mismatch"]
