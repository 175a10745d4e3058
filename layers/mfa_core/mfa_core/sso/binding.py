"""The cookie that ties an SSO login to the browser that started it, and the single use of the
stored login request.

Without it, an attacker could start a login with their own account at the identity provider
and have a victim's browser finish it, signing the victim in as the attacker (login CSRF, RFC
6749 section 10.12). `start` sets a random value in the cookie and stores only its SHA-256
with the login request. The callback or ACS then accepts the request only from a browser that
sends the value back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from mfa_core import audit
from mfa_core.audit import RequestContext
from mfa_core.runtime import Services
from mfa_core.store.models import ChallengeModel
from mfa_core.store.repository import ConditionFailed

COOKIE_NAME = "__Host-mfa-sso"
PREFIX = "browser:"
# The values that `bind` makes: 32 random bytes in base64url.
VALUE_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}\Z")


@dataclass(frozen=True)
class Redirect:
    """The redirect of a `start`: the provider URL (`location`) and the cookie sent with it."""

    location: str
    cookie: Cookie


def bind(cookies: Iterable[str]) -> tuple[str, str]:
    """Return the cookie value for a new login and what its request stores in `bound_to`.

    A browser that already has a well-formed cookie keeps its value, so that two logins started
    in two tabs can both finish. Otherwise the value is new.
    """
    value = _presented(cookies)
    if value is None or not VALUE_PATTERN.match(value):
        value = secrets.token_urlsafe(32)
    return value, PREFIX + _digest(value)


def set_cookie(value: str, *, max_age: int) -> Cookie:
    """Return the cookie that carries `value`.

    SameSite=None, because the SAML Response arrives as a cross-site POST from the provider's
    page. Secure and the __Host- prefix keep it to this host over TLS (browsers also accept it
    on http://localhost, where the local stack runs).
    """
    return Cookie(
        name=COOKIE_NAME,
        value=value,
        path="/",
        secure=True,
        http_only=True,
        max_age=max_age,
        same_site=SameSite.NONE_MODE,
    )


def matches(cookies: Iterable[str], bound_to: str | None) -> bool:
    """Tell whether one of `cookies` ("name=value" strings) carries the value that `bound_to`
    stores."""
    if not bound_to or not bound_to.startswith(PREFIX):
        return False
    value = _presented(cookies)
    return value is not None and hmac.compare_digest(_digest(value), bound_to.removeprefix(PREFIX))


def _presented(cookies: Iterable[str]) -> str | None:
    for cookie in cookies:
        name, _, value = cookie.strip().partition("=")
        if name == COOKIE_NAME:
            return value
    return None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", errors="surrogatepass")).hexdigest()


def spend_request(
    svc: Services,
    *,
    key: str,
    kind: str,
    org_id: str,
    cookies: Sequence[str],
    name: str,
    context: RequestContext,
    details: dict[str, Any],
    reject: Callable[[str], NoReturn],
) -> ChallengeModel:
    """Spend the stored SSO login request `key` once, with its audit event in the same write.

    `name` is what carries the request's key in the protocol ("state" or "relay_state"), and it
    starts the reasons passed to `reject`: unknown, of another org, replayed or expired. A
    request from another browser is rejected as "browser_mismatch" and left unspent, so that
    the browser that started the login can still finish it.
    """
    now = svc.clock.now()
    request = svc.store.get_challenge(key)
    if request is None or not request.kind.startswith("sso."):
        reject(f"{name}_unknown")
    if request.kind != kind or request.org_id != org_id:
        reject(f"{name}_of_another_org")
    if request.consumed_at is not None:
        reject(f"{name}_replayed")
    if request.expires_at <= now:
        reject(f"{name}_expired")
    if not matches(cookies, request.bound_to):
        reject("browser_mismatch")
    accepted = audit.event(
        now=now,
        event_type="sso.callback",
        outcome="success",
        org_id=org_id,
        context=context,
        reason=f"{name}_accepted",
        details=details,
    )
    try:
        svc.store.consume_sso_request(
            request.challenge_id, kind=kind, org_id=org_id, now=now, events=[accepted]
        )
    except ConditionFailed:
        # A concurrent callback with the same request won.
        reject(f"{name}_replayed")
    return request
