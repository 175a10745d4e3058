"""Fixtures for browser tests: Chromium, driven by Playwright, uses the reference web page of one
local stack, with virtual WebAuthn authenticators over the Chrome DevTools Protocol.

The stack runs on a ManualClock, as in the API tests: the page needs no real time, because
Chromium checks neither token expiry nor TOTP codes, and tests can move past the 5-minute MFA
age of a step-up at once. Chromium must be installed (`make test` installs it); when it is
missing, every browser test fails instead of being skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from local.stack import LocalStack
from mfa_core import runtime
from mfa_core.clock import ManualClock
from tests.api.conftest import START
from tests.api.harness import Client, Flow
from tests.browser.authenticator import VirtualAuthenticator
from tests.browser.mfa_page import MfaPage

# --host-resolver-rules keeps Chromium from resolving any other host, so no request leaves
# loopback, neither Chromium's own at start-up nor one that a page makes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]

# Maximum milliseconds that one Playwright step waits, for example for a WebAuthn ceremony to
# end. Ceremonies take well under a second here, and a page that hangs fails its test at once
# instead of at pytest's 300 s timeout.
STEP_TIMEOUT_MS = 10_000

# Distinct from the API tests' stack, which may still run in the same process.
NAME_PREFIX = "mfa-browser"


@pytest.fixture(scope="session")
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(scope="session")
def stack(clock: ManualClock) -> Iterator[LocalStack]:
    local_stack = LocalStack(name_prefix=NAME_PREFIX)
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


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Chromium is not installed, so the browser tests cannot run. Install it with "
            "`apt-get install -y chromium` (`make test` does this), or deselect them with "
            "`-m 'not browser'`.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(
        executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
    )
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    browser_context = browser.new_context()
    browser_context.set_default_timeout(STEP_TIMEOUT_MS)
    try:
        yield browser_context
    finally:
        browser_context.close()


@pytest.fixture
def console_errors() -> list[str]:
    """Console messages of type error, such as failed loads. Some tests expect none."""
    return []


@pytest.fixture
def page(context: BrowserContext, console_errors: list[str], client: Client) -> Iterator[Page]:
    """A fresh tab, on a stack whose tables are empty and whose clock is back at START.

    An uncaught exception or unhandled rejection in the page fails the test at teardown.
    """
    tab = context.new_page()
    uncaught: list[Error] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    def on_page_error(error: Error) -> None:
        uncaught.append(error)

    tab.on("console", on_console)
    tab.on("pageerror", on_page_error)
    yield tab
    assert not uncaught, f"uncaught errors in the page: {uncaught}"


@pytest.fixture
def mfa_page(page: Page, stack: LocalStack) -> MfaPage:
    return MfaPage(page, stack.page_url)


@pytest.fixture
def add_authenticator(
    context: BrowserContext, page: Page
) -> Iterator[Callable[..., VirtualAuthenticator]]:
    """Return a function that attaches a virtual authenticator to the page. Teardown removes
    every authenticator it attached.
    """
    added: list[VirtualAuthenticator] = []

    def add(*, user_verification: bool = True) -> VirtualAuthenticator:
        authenticator = VirtualAuthenticator(context, page, user_verification=user_verification)
        added.append(authenticator)
        return authenticator

    yield add
    for authenticator in added:
        authenticator.remove()


@pytest.fixture
def authenticator(add_authenticator: Callable[..., VirtualAuthenticator]) -> VirtualAuthenticator:
    """A virtual authenticator with user verification, attached to the page."""
    return add_authenticator()
