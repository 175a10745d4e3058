"""OIDC login: the authorization code flow with PKCE, and verification of the ID token.

The flow follows OpenID Connect Core 1.0 §3.1 with RFC 7636 PKCE (S256). The state, nonce and
code verifier stay server-side in the Challenges table, keyed by the SHA-256 of the state, and
a callback consumes them once with a conditional write. The provider's discovery document and
signing keys are fetched over https (http only on loopback hosts) with a timeout and a size
limit, and cached for the life of the function.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import quote, urlencode, urlsplit

from aws_lambda_powertools import Logger
from jose import jws
from jose.exceptions import JOSEError

from mfa_core import audit, policy
from mfa_core.audit import RequestContext
from mfa_core.auth import LoginResult
from mfa_core.errors import ConfigurationError, NotFound, SsoLoginFailed
from mfa_core.identity import normalize_org_id
from mfa_core.runtime import Services
from mfa_core.sso.assertion import IdpAssertion
from mfa_core.sso.binding import Redirect, bind, set_cookie, spend_request
from mfa_core.sso.connection import SsoConnection, is_allowed_url, sso_connection
from mfa_core.sso.decision import complete_login, record_failure
from mfa_core.store.models import NO_USER, ChallengeModel, OrgModel

logger = Logger(child=True)

KIND = "sso.oidc"
# Signature algorithms accepted for ID tokens, whatever the provider offers: never "none",
# never a shared-secret HMAC.
ALLOWED_ALGORITHMS = ("RS256", "ES256")
KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}
# Seconds a login may take at the identity provider before its state expires.
REQUEST_SECONDS = 10 * 60
# Seconds of clock difference tolerated between the provider and this service.
CLOCK_SKEW = 60
DISCOVERY_CACHE_SECONDS = 60 * 60
JWKS_CACHE_SECONDS = 60 * 60
# At most one fetch of a provider's keys this often when a token names an unknown key.
JWKS_REFETCH_SECONDS = 30
FETCH_TIMEOUT_SECONDS = 5
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_PARAMETER = 2048
ERROR_CODE_PATTERN = re.compile(r"[a-z_]{1,64}\Z")


class ProviderError(Exception):
    """A request to the identity provider failed, or it sent something unusable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def fetch_json(
    url: str,
    *,
    allow_loopback: bool,
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """GET `url`, or POST `data` form-encoded, and return the JSON object in the response.

    Only URLs that `is_allowed_url` accepts with `allow_loopback` are fetched, redirects are
    not followed, and the response must arrive within FETCH_TIMEOUT_SECONDS and fit in
    MAX_DOCUMENT_BYTES. Raises ProviderError.
    """
    if not is_allowed_url(url, allow_loopback=allow_loopback):
        raise ProviderError("url_not_https")
    body = urlencode(data).encode("ascii") if data is not None else None
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        data=body,
        method="POST" if body is not None else "GET",
        headers={"Accept": "application/json", **(headers or {})},
    )
    if body is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with _OPENER.open(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
            content = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ProviderError(f"http_{exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ProviderError("unreachable") from exc
    if len(content) > MAX_DOCUMENT_BYTES:
        raise ProviderError("response_too_large")
    try:
        document = json.loads(content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProviderError("invalid_json") from exc
    if not isinstance(document, dict):
        raise ProviderError("invalid_json")
    return document


@dataclass(frozen=True)
class ProviderMetadata:
    """The checked contents of a discovery document: every endpoint is an allowed URL."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    # The provider's ID token algorithms that ALLOWED_ALGORITHMS also contains.
    algorithms: tuple[str, ...]
    token_auth_methods: tuple[str, ...]


def parse_metadata(
    issuer: str, document: Mapping[str, Any], *, allow_loopback: bool
) -> ProviderMetadata:
    """Check a discovery document (OpenID Connect Discovery 1.0 §3 and §4.3). Its endpoints
    must pass `is_allowed_url` with `allow_loopback`."""
    # §4.3: the issuer in the document must equal the one it was fetched for.
    if document.get("issuer") != issuer:
        raise ProviderError("issuer_mismatch")
    endpoints = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = document.get(name)
        if (
            not isinstance(value, str)
            or len(value) > MAX_PARAMETER
            or not is_allowed_url(value, allow_loopback=allow_loopback)
        ):
            raise ProviderError(f"{name}_invalid")
        endpoints[name] = value
    # RS256 is the default that every provider must support (Discovery §3).
    offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = tuple(alg for alg in ALLOWED_ALGORITHMS if alg in offered)
    if not algorithms:
        raise ProviderError("no_allowed_algorithm")
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return ProviderMetadata(
        issuer=issuer,
        algorithms=algorithms,
        token_auth_methods=tuple(str(m) for m in methods if isinstance(m, str)),
        **endpoints,
    )


class ProviderCache:
    """Discovery documents and key sets of identity providers, cached in memory.

    A token signed by a key that the cached set lacks makes one new fetch of the set, at most
    every JWKS_REFETCH_SECONDS per provider, so forged key ids cannot make it fetch in a loop.
    `allow_loopback` is passed to `is_allowed_url` for every URL fetched.
    """

    def __init__(
        self,
        *,
        now: Callable[[], float],
        allow_loopback: bool,
        fetch: Callable[..., dict[str, Any]] = fetch_json,
    ) -> None:
        self._now = now
        self.allow_loopback = allow_loopback
        self._fetch = fetch
        self._lock = threading.Lock()
        self._metadata: dict[str, tuple[float, ProviderMetadata]] = {}
        self._keys: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def clear(self) -> None:
        """Forget every cached document and key set, as a new process starts."""
        with self._lock:
            self._metadata.clear()
            self._keys.clear()

    def metadata(self, issuer: str) -> ProviderMetadata:
        now = self._now()
        with self._lock:
            cached = self._metadata.get(issuer)
        if cached is not None and now - cached[0] < DISCOVERY_CACHE_SECONDS:
            return cached[1]
        document = self._fetch(
            issuer + "/.well-known/openid-configuration", allow_loopback=self.allow_loopback
        )
        metadata = parse_metadata(issuer, document, allow_loopback=self.allow_loopback)
        with self._lock:
            self._metadata[issuer] = (now, metadata)
        return metadata

    def signing_key(self, jwks_uri: str, *, kid: str | None, alg: str) -> dict[str, Any] | None:
        """Return the JWK that verifies a token with header `kid` and `alg`, or None."""
        now = self._now()
        with self._lock:
            cached = self._keys.get(jwks_uri)
        if cached is None or now - cached[0] >= JWKS_CACHE_SECONDS:
            cached = self._refresh(jwks_uri, now)
        key = _select_key(cached[1], kid=kid, alg=alg)
        if key is None and now - cached[0] >= JWKS_REFETCH_SECONDS:
            key = _select_key(self._refresh(jwks_uri, now)[1], kid=kid, alg=alg)
        return key

    def _refresh(self, jwks_uri: str, now: float) -> tuple[float, list[dict[str, Any]]]:
        keys = self._fetch(jwks_uri, allow_loopback=self.allow_loopback).get("keys")
        if not isinstance(keys, list):
            raise ProviderError("jwks_invalid")
        entry = (now, [key for key in keys if isinstance(key, dict)])
        with self._lock:
            self._keys[jwks_uri] = entry
        return entry


def _select_key(keys: list[dict[str, Any]], *, kid: str | None, alg: str) -> dict[str, Any] | None:
    usable = [
        key
        for key in keys
        if key.get("kty") == KEY_TYPES[alg]
        and key.get("use", "sig") == "sig"
        and key.get("alg", alg) == alg
    ]
    if kid is not None:
        return next((key for key in usable if key.get("kid") == kid), None)
    # A token without a kid is accepted only when one key could have signed it.
    return usable[0] if len(usable) == 1 else None


def redirect_uri(svc: Services, org_id: str) -> str:
    base = svc.settings.public_base_url
    if base is None:
        raise ConfigurationError(
            "MFA_PUBLIC_BASE_URL is missing; set it to the URL where browsers reach this API."
        )
    return f"{base}/v1/sso/oidc/{quote(org_id, safe='')}/callback"


def _state_key(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def _code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _oidc_connection(org: OrgModel | None) -> SsoConnection:
    connection = sso_connection(org)
    if connection is None or connection.protocol != "oidc":
        raise NotFound("No OIDC connection is configured for this org.")
    return connection


def start(
    svc: Services, *, org_id: str, cookies: Sequence[str], context: RequestContext
) -> Redirect:
    """Store a new login request and return the redirect to the provider's authorization URL,
    with the cookie that binds the request to this browser (`cookies` are the browser's own).

    When the org trusts the provider's MFA, the request carries max_age, so that the provider
    reports auth_time and re-authenticates a user whose login is older.
    """
    org_id = normalize_org_id(org_id, field="org")
    org = svc.store.get_org(org_id)
    connection = _oidc_connection(org)
    assert connection.issuer is not None and connection.client_id is not None
    try:
        metadata = svc.sso_metadata.metadata(connection.issuer)
    except ProviderError as exc:
        logger.warning("OIDC discovery failed", extra={"org_id": org_id, "reason": exc.reason})
        raise SsoLoginFailed(exc.reason) from exc

    now = svc.clock.now()
    state = secrets.token_urlsafe(32)
    browser, bound_to = bind(cookies)
    nonce = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(48)
    request = ChallengeModel(
        _state_key(state),
        kind=KIND,
        org_id=org_id,
        user_id=NO_USER,
        created_at=now,
        expires_at=int(now) + REQUEST_SECONDS,
        nonce=nonce,
        code_verifier=verifier,
        bound_to=bound_to,
    )
    started = audit.event(
        now=now,
        event_type="sso.start",
        outcome="success",
        org_id=org_id,
        context=context,
        details={"protocol": "oidc", "iss": connection.issuer},
    )
    svc.store.save_challenge(request, [started])

    parameters = {
        "response_type": "code",
        "client_id": connection.client_id,
        "redirect_uri": redirect_uri(svc, org_id),
        "scope": " ".join(connection.scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": _code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    trust = policy.mfa_policy(org).sso
    if trust.trust_idp_mfa:
        parameters["max_age"] = str(trust.max_auth_age_minutes * 60)
    separator = "&" if urlsplit(metadata.authorization_endpoint).query else "?"
    location = metadata.authorization_endpoint + separator + urlencode(parameters)
    return Redirect(location, set_cookie(browser, max_age=REQUEST_SECONDS))


def callback(
    svc: Services,
    *,
    org_id: str,
    parameters: Mapping[str, str],
    cookies: Sequence[str],
    context: RequestContext,
) -> LoginResult:
    """Finish a login from the provider's redirect (`code` and `state`) and decide the next step.

    `cookies` are the request's cookies ("name=value"), which must include the one that
    `start` set in this browser. Every failure raises SsoLoginFailed with one generic detail,
    audited with its reason.
    """
    org_id = normalize_org_id(org_id, field="org")
    org = svc.store.get_org(org_id)
    connection = sso_connection(org)
    if org is None or connection is None or connection.protocol != "oidc":
        logger.info("SSO callback for an org without OIDC", extra={"org_id": org_id})
        raise SsoLoginFailed("no_oidc_connection")
    assert connection.issuer is not None and connection.client_id is not None
    failure = _Failure(svc, org_id=org_id, issuer=connection.issuer, context=context)

    state = parameters.get("state") or ""
    if not state or len(state) > MAX_PARAMETER:
        failure.reject("state_missing")
    request = spend_request(
        svc,
        key=_state_key(state),
        kind=KIND,
        org_id=org_id,
        cookies=cookies,
        name="state",
        context=context,
        details={"protocol": "oidc"},
        reject=failure.reject,
    )
    if "error" in parameters:
        # RFC 6749 §4.1.2.1 error codes; anything else is not copied into the audit trail.
        error = parameters["error"]
        code_name = error if ERROR_CODE_PATTERN.match(error) else "other"
        failure.reject("provider_error", provider_error=code_name)
    code = parameters.get("code") or ""
    if not code or len(code) > MAX_PARAMETER:
        failure.reject("code_missing")
    assert request.nonce is not None and request.code_verifier is not None

    trust = policy.mfa_policy(org).sso
    try:
        metadata = svc.sso_metadata.metadata(connection.issuer)
        client_secret = svc.sso_secrets.get(org_id)
        if client_secret is None:
            failure.reject("client_secret_missing")
        tokens = _exchange(
            metadata,
            connection,
            client_secret=client_secret,
            code=code,
            code_verifier=request.code_verifier,
            redirect_uri=redirect_uri(svc, org_id),
            allow_loopback=svc.sso_metadata.allow_loopback,
        )
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            failure.reject("id_token_missing")
        claims = verify_id_token(
            id_token,
            metadata=metadata,
            keys=svc.sso_metadata,
            client_id=connection.client_id,
            nonce=request.nonce,
            requested_at=request.created_at,
            now=svc.clock.now(),
            require_auth_time=trust.trust_idp_mfa,
        )
    except ProviderError as exc:
        failure.reject(exc.reason)
    return complete_login(
        svc,
        org=org,
        connection=connection,
        assertion=assertion_from_claims(claims, connection, failure),
        context=context,
    )


def _exchange(
    metadata: ProviderMetadata,
    connection: SsoConnection,
    *,
    client_secret: str,
    code: str,
    code_verifier: str,
    redirect_uri: str,
    allow_loopback: bool,
) -> dict[str, Any]:
    """Redeem the authorization code at the token endpoint (OIDC Core §3.1.3)."""
    assert connection.client_id is not None
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
        "client_id": connection.client_id,
    }
    headers: dict[str, str] = {}
    if "client_secret_basic" in metadata.token_auth_methods:
        # RFC 6749 §2.3.1: both parts are form-encoded before they are joined.
        pair = f"{quote(connection.client_id, safe='')}:{quote(client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    elif "client_secret_post" in metadata.token_auth_methods:
        form["client_secret"] = client_secret
    else:
        raise ProviderError("no_supported_client_authentication")
    try:
        return fetch_json(
            metadata.token_endpoint, allow_loopback=allow_loopback, data=form, headers=headers
        )
    except ProviderError as exc:
        raise ProviderError(f"token_request_failed_{exc.reason}") from exc


class IdTokenRejected(ProviderError):
    """The ID token failed one of the checks of OIDC Core §3.1.3.7; `reason` names it."""


def verify_id_token(
    token: str,
    *,
    metadata: ProviderMetadata,
    keys: ProviderCache,
    client_id: str,
    nonce: str,
    requested_at: float,
    now: float,
    require_auth_time: bool,
) -> dict[str, Any]:
    """Verify an ID token's signature and claims, and return the claims.

    The algorithm must be one the provider announced and ALLOWED_ALGORITHMS contains. Times
    are compared with `now`, allowing CLOCK_SKEW seconds. Raises IdTokenRejected.
    """
    claims = _verified_payload(token, metadata=metadata, keys=keys)
    _check_claims(
        claims,
        issuer=metadata.issuer,
        client_id=client_id,
        nonce=nonce,
        requested_at=requested_at,
        now=now,
        require_auth_time=require_auth_time,
    )
    return claims


def _verified_payload(
    token: str, *, metadata: ProviderMetadata, keys: ProviderCache
) -> dict[str, Any]:
    try:
        header = jws.get_unverified_header(token)
    except JOSEError as exc:
        raise IdTokenRejected("malformed_token") from exc
    alg = header.get("alg")
    if alg not in metadata.algorithms:
        raise IdTokenRejected("algorithm_not_allowed")
    kid = header.get("kid")
    key = keys.signing_key(metadata.jwks_uri, kid=kid if isinstance(kid, str) else None, alg=alg)
    if key is None:
        raise IdTokenRejected("unknown_signing_key")
    try:
        payload = jws.verify(token, key, algorithms=[alg])
        claims = json.loads(payload)
    except (JOSEError, ValueError) as exc:
        raise IdTokenRejected("invalid_signature") from exc
    if not isinstance(claims, dict):
        raise IdTokenRejected("malformed_token")
    return claims


def _check_claims(
    claims: dict[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    requested_at: float,
    now: float,
    require_auth_time: bool,
) -> None:
    # §3.1.3.7 step 2: the issuer must be the configured one, exactly.
    if claims.get("iss") != issuer:
        raise IdTokenRejected("wrong_issuer")

    # Steps 3 to 5: this client must be an audience, and the authorized party (azp) when there
    # are several.
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise IdTokenRejected("wrong_audience")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise IdTokenRejected("wrong_authorized_party")

    # Steps 9 and 10: unexpired, and issued for this login, not before it started.
    if not _is_time(claims.get("exp")) or not _is_time(claims.get("iat")):
        raise IdTokenRejected("times_missing")
    exp, iat = float(claims["exp"]), float(claims["iat"])
    if now >= exp + CLOCK_SKEW:
        raise IdTokenRejected("token_expired")
    if iat > now + CLOCK_SKEW or iat < requested_at - CLOCK_SKEW:
        raise IdTokenRejected("issued_at_out_of_range")

    # Step 11: the nonce of this login's request.
    received = claims.get("nonce")
    if not isinstance(received, str) or not hmac.compare_digest(
        received.encode("utf-8"), nonce.encode("utf-8")
    ):
        raise IdTokenRejected("wrong_nonce")

    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= 255:
        raise IdTokenRejected("subject_missing")

    # Step 13: auth_time must be present when max_age was requested.
    auth_time = claims.get("auth_time")
    if auth_time is None and require_auth_time:
        raise IdTokenRejected("auth_time_missing")
    if auth_time is not None and (not _is_time(auth_time) or float(auth_time) > now + CLOCK_SKEW):
        raise IdTokenRejected("auth_time_invalid")


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def assertion_from_claims(
    claims: Mapping[str, Any], connection: SsoConnection, failure: _Failure
) -> IdpAssertion:
    """Turn verified ID token claims into the protocol-neutral assertion."""
    email = claims.get(connection.email_attribute)
    # An email the provider marks unverified could be anyone's: it must not match a member.
    # Some providers send the claim as the string "true" or "false", so any value other than
    # true, in either form, counts as unverified.
    # NOTE: a token without email_verified is accepted, because some providers (Microsoft
    # Entra ID among them) never send it. Their email claim is then trusted as it is.
    if "email_verified" in claims and not _is_true(claims["email_verified"]):
        failure.reject("email_not_verified", sub=claims.get("sub"))
    amr = claims.get("amr")
    amr_values = tuple(v for v in amr if isinstance(v, str))[:20] if isinstance(amr, list) else ()
    acr = claims.get("acr")
    auth_time = claims.get("auth_time")
    return IdpAssertion(
        protocol="oidc",
        issuer=str(claims["iss"]),
        subject=str(claims["sub"]),
        email=email if isinstance(email, str) else None,
        amr=amr_values,
        acr=acr[:256] if isinstance(acr, str) else None,
        auth_time=float(auth_time) if auth_time is not None else None,
        claims={
            "iss": claims["iss"],
            "sub": claims["sub"],
            "amr": list(amr_values),
            "acr": acr if isinstance(acr, str) else None,
            "auth_time": auth_time,
        },
    )


class _Failure:
    """The failure path of one callback: it audits and logs the reason, then raises the generic
    SsoLoginFailed."""

    def __init__(self, svc: Services, *, org_id: str, issuer: str, context: RequestContext) -> None:
        self.svc, self.org_id, self.issuer, self.context = svc, org_id, issuer, context

    def reject(self, reason: str, **details: Any) -> NoReturn:
        record_failure(
            self.svc,
            org_id=self.org_id,
            reason=reason,
            context=self.context,
            details={"protocol": "oidc", "iss": self.issuer, **details},
        )
        raise SsoLoginFailed(reason)
