"""What an identity provider asserted about a login, once its token or response is verified.

The OIDC and SAML modules each turn what their protocol delivers into one IdpAssertion. The
decision whether the IdP's MFA replaces ours reads only this, whatever the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, kw_only=True)
class IdpAssertion:
    """A verified statement of the IdP: who signed in, when, and how.

    `amr` contains the authentication methods the IdP names (OIDC `amr`; empty for SAML), `acr`
    the context class (OIDC `acr`, SAML AuthnContextClassRef). `auth_time` is when the IdP
    authenticated the user (OIDC `auth_time`, SAML AuthnInstant), in epoch seconds. `claims`
    keeps the values that drive the decision, for the audit record: never a token, code or
    signature.
    """

    protocol: Literal["oidc", "saml"]
    issuer: str
    subject: str
    email: str | None
    amr: tuple[str, ...] = ()
    acr: str | None = None
    auth_time: float | None = None
    claims: dict[str, Any] = field(default_factory=dict)
