"""Signed tokens: the access token, the mfa_token and the enrollment_token, all ES256 JWTs.

Verification pins the algorithm to ES256, requires a known `kid`, and checks iss, aud, exp and
the token type, with time from the injected clock rather than the host's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from jose import jwk, jwt
from jose.exceptions import JOSEError

from mfa_core.adapters.keys import ALGORITHM, SigningKeys
from mfa_core.clock import Clock
from mfa_core.errors import InvalidToken

ACCESS = "access"
MFA_PENDING = "mfa_pending"
ENROLLMENT = "enrollment"
# Lets a device skip MFA at login for a day where the org's policy re-verifies every 24 hours.
REMEMBER_DEVICE = "remember_device"
TOKEN_TYPES = frozenset({ACCESS, MFA_PENDING, ENROLLMENT, REMEMBER_DEVICE})

_REQUIRED_CLAIMS = ("iss", "aud", "sub", "org", "exp", "iat", "jti", "typ")


@dataclass(frozen=True, kw_only=True)
class Principal:
    """The verified caller of a request."""

    token_type: str
    org_id: str
    user_id: str
    claims: dict[str, Any]

    @property
    def session_id(self) -> str | None:
        value = self.claims.get("sid")
        return value if isinstance(value, str) else None

    @property
    def transaction_id(self) -> str | None:
        value = self.claims.get("txn")
        return value if isinstance(value, str) else None


class TokenService:
    def __init__(self, *, keys: SigningKeys, clock: Clock, issuer: str, audience: str) -> None:
        self._keys = keys
        self._clock = clock
        self._issuer = issuer
        self._audience = audience
        self._signers: dict[str, Any] = {}
        self._verifiers: dict[str, Any] = {}

    def issue(
        self, *, token_type: str, org_id: str, user_id: str, lifetime: int, **claims: Any
    ) -> str:
        """Sign a token of `token_type` for a user, valid for `lifetime` seconds."""
        if token_type not in TOKEN_TYPES:
            raise ValueError(f"unknown token type {token_type!r}")
        now = int(self._clock.now())
        key_set = self._keys.private_keys()
        kid = key_set.active_kid
        signer = self._signers.get(kid)
        if signer is None:
            signer = jwk.construct(key_set.active_jwk, ALGORITHM)
            self._signers[kid] = signer
        body = {
            **claims,
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "org": org_id,
            "typ": token_type,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        token: str = jwt.encode(body, signer, algorithm=ALGORITHM, headers={"kid": kid})
        return token

    def verify(self, token: str, *, accept: frozenset[str]) -> Principal:
        """Verify a bearer token and return its principal; raise InvalidToken otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as exc:
            raise InvalidToken() from exc
        if header.get("alg") != ALGORITHM:
            raise InvalidToken()
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken()
        verifier = self._verifier(kid)

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                verifier,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                # Expiry is checked below against the injected clock.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except JOSEError as exc:
            raise InvalidToken() from exc

        if any(name not in claims for name in _REQUIRED_CLAIMS):
            raise InvalidToken()
        exp = claims["exp"]
        if not isinstance(exp, int) or isinstance(exp, bool) or exp <= self._clock.now():
            raise InvalidToken()
        if claims["typ"] not in accept:
            raise InvalidToken()
        org_id, user_id = claims["org"], claims["sub"]
        if not isinstance(org_id, str) or not isinstance(user_id, str):
            raise InvalidToken()
        return Principal(token_type=claims["typ"], org_id=org_id, user_id=user_id, claims=claims)

    def _verifier(self, kid: str) -> Any:
        # The published set decides which kids are valid, so a key dropped by rotation stops
        # verifying once the cache is read again. The constructed key objects only save time.
        public = self._keys.public_key(kid)
        if public is None:
            raise InvalidToken()
        verifier = self._verifiers.get(kid)
        if verifier is None:
            verifier = jwk.construct(public, ALGORITHM)
            self._verifiers[kid] = verifier
        return verifier
