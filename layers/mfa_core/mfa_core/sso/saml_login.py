"""SAML login: the AuthnRequest redirect, and the Response that the IdP posts back to the ACS.

Only SP-initiated logins exist. `start` stores the AuthnRequest's ID in a Challenges item keyed
by the SHA-256 of a random RelayState, which goes to the IdP with the request and comes back
with the Response. The ACS consumes that item once, before it verifies the Response. A
Response is therefore accepted at most once, only for the org and the AuthnRequest that
requested it, and only from the browser that started the login (see mfa_core.sso.binding).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from typing import NoReturn
from urllib.parse import quote

from aws_lambda_powertools import Logger

from mfa_core import audit
from mfa_core.audit import RequestContext
from mfa_core.auth import LoginResult
from mfa_core.errors import ConfigurationError, NotFound, SsoLoginFailed
from mfa_core.identity import normalize_org_id
from mfa_core.runtime import Services
from mfa_core.sso.binding import Redirect, bind, set_cookie, spend_request
from mfa_core.sso.connection import sso_connection
from mfa_core.sso.decision import complete_login, record_failure
from mfa_core.sso.saml import (
    MAX_RESPONSE_BYTES,
    SamlResponseRejected,
    build_authn_request,
    verify_saml_response,
)
from mfa_core.store.models import NO_USER, ChallengeModel

logger = Logger(child=True)

KIND = "sso.saml"
# How long a user has at the IdP between the redirect and the posted Response.
REQUEST_SECONDS = 10 * 60
# The largest ACS form accepted: a Response of MAX_RESPONSE_BYTES, base64 and then
# percent-encoded, with room to spare.
MAX_FORM_BYTES = 3 * MAX_RESPONSE_BYTES
# RelayState is at most 80 bytes in the HTTP-Redirect and HTTP-POST bindings (SAML 2.0
# Bindings, 3.4.3 and 3.5.3); ours is 43.
MAX_RELAY_STATE = 80


def service_urls(svc: Services, org_id: str) -> tuple[str, str]:
    """Return the org's SP entity id and ACS URL, as the IdP is configured with them."""
    base = svc.settings.public_base_url
    if base is None:
        raise ConfigurationError(
            "MFA_PUBLIC_BASE_URL is missing; set it to the URL where browsers reach this API."
        )
    entity_id = f"{base}/v1/sso/saml/{quote(org_id, safe='')}"
    return entity_id, f"{entity_id}/acs"


def start(
    svc: Services, *, org_id: str, cookies: Sequence[str], context: RequestContext
) -> Redirect:
    """Store a new AuthnRequest and return the redirect to the IdP, with the cookie that binds
    the request to this browser (`cookies` are the browser's own)."""
    org_id = normalize_org_id(org_id, field="org")
    connection = sso_connection(svc.store.get_org(org_id))
    if connection is None or connection.protocol != "saml":
        raise NotFound("No SAML connection is configured for this org.")
    assert connection.sso_url is not None and connection.idp_entity_id is not None

    now = svc.clock.now()
    entity_id, acs_url = service_urls(svc, org_id)
    relay_state = secrets.token_urlsafe(32)
    browser, bound_to = bind(cookies)
    request = build_authn_request(
        sp_entity_id=entity_id,
        acs_url=acs_url,
        idp_sso_url=connection.sso_url,
        now=now,
        relay_state=relay_state,
    )
    stored = ChallengeModel(
        _relay_key(relay_state),
        kind=KIND,
        org_id=org_id,
        user_id=NO_USER,
        created_at=now,
        expires_at=int(now) + REQUEST_SECONDS,
        challenge=request.request_id,
        bound_to=bound_to,
    )
    started = audit.event(
        now=now,
        event_type="sso.start",
        outcome="success",
        org_id=org_id,
        context=context,
        details={"protocol": "saml", "idp": connection.idp_entity_id},
    )
    svc.store.save_challenge(stored, [started])
    return Redirect(request.redirect_url, set_cookie(browser, max_age=REQUEST_SECONDS))


def acs(
    svc: Services,
    *,
    org_id: str,
    form: Mapping[str, str],
    cookies: Sequence[str],
    context: RequestContext,
) -> LoginResult:
    """Verify the Response posted to the ACS (`SAMLResponse` and `RelayState`) and decide the
    login's next step.

    Every failure raises SsoLoginFailed with one generic detail, audited with its reason.
    """
    org_id = normalize_org_id(org_id, field="org")
    org = svc.store.get_org(org_id)
    connection = sso_connection(org)
    if org is None or connection is None or connection.protocol != "saml":
        logger.info("SAML response for an org without SAML", extra={"org_id": org_id})
        raise SsoLoginFailed("no_saml_connection")
    assert connection.idp_entity_id is not None and connection.signing_certificate is not None

    def reject(reason: str) -> NoReturn:
        record_failure(
            svc,
            org_id=org_id,
            reason=reason,
            context=context,
            details={"protocol": "saml", "idp": connection.idp_entity_id},
        )
        raise SsoLoginFailed(reason)

    relay_state = form.get("RelayState") or ""
    if not relay_state or len(relay_state) > MAX_RELAY_STATE:
        reject("relay_state_missing")
    saml_response = form.get("SAMLResponse") or ""
    if not saml_response:
        reject("response_missing")
    request = spend_request(
        svc,
        key=_relay_key(relay_state),
        kind=KIND,
        org_id=org_id,
        cookies=cookies,
        name="relay_state",
        context=context,
        details={"protocol": "saml", "idp": connection.idp_entity_id},
        reject=reject,
    )
    assert request.challenge is not None

    entity_id, acs_url = service_urls(svc, org_id)
    try:
        assertion = verify_saml_response(
            saml_response,
            idp_entity_id=connection.idp_entity_id,
            idp_certificate_pem=connection.signing_certificate,
            sp_entity_id=entity_id,
            acs_url=acs_url,
            request_id=request.challenge,
            email_attribute=connection.email_attribute,
            now=svc.clock.now(),
        )
    except SamlResponseRejected as exc:
        reject(exc.reason)
    return complete_login(svc, org=org, connection=connection, assertion=assertion, context=context)


def _relay_key(relay_state: str) -> str:
    return hashlib.sha256(relay_state.encode("utf-8")).hexdigest()
