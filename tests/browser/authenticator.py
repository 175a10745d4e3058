"""A virtual WebAuthn authenticator in Chromium, driven over the Chrome DevTools Protocol.

CDP's WebAuthn domain sends binary fields (credential ids, user handles, private keys) in
standard base64. The WebAuthn JSON that pages and servers exchange uses base64url without
padding instead, and `to_base64url` and `to_cdp_base64` convert between the two.
"""

from __future__ import annotations

import base64
from typing import Any

from playwright.sync_api import BrowserContext, CDPSession, Page


def to_base64url(cdp_value: str) -> str:
    """Convert CDP's standard base64 to unpadded base64url, as in credential.toJSON()."""
    return base64.urlsafe_b64encode(base64.b64decode(cdp_value)).rstrip(b"=").decode("ascii")


def to_cdp_base64(base64url_value: str) -> str:
    """Convert unpadded base64url, as in credential.toJSON(), to CDP's standard base64."""
    padded = base64url_value + "=" * (-len(base64url_value) % 4)
    return base64.b64encode(base64.urlsafe_b64decode(padded)).decode("ascii")


class VirtualAuthenticator:
    """One CTAP2 USB authenticator attached to one page, with presence always confirmed.

    Without user verification (`user_verification=False`), Chromium 150 itself rejects a
    ceremony whose options set userVerification "required" with NotAllowedError, and goes on
    without it for "preferred" and "discouraged".
    """

    def __init__(
        self, context: BrowserContext, page: Page, *, user_verification: bool = True
    ) -> None:
        self.session: CDPSession = context.new_cdp_session(page)
        # A page whose target never received WebAuthn.enable hangs in navigator.credentials
        # calls in headless mode, so enable it before any ceremony.
        self.session.send("WebAuthn.enable", {"enableUI": False})
        options = {
            "protocol": "ctap2",
            "transport": "usb",
            "hasResidentKey": True,
            "hasUserVerification": user_verification,
            "isUserVerified": user_verification,
            "automaticPresenceSimulation": True,
        }
        added = self.session.send("WebAuthn.addVirtualAuthenticator", {"options": options})
        self.authenticator_id: str = added["authenticatorId"]

    def credentials(self) -> list[dict[str, Any]]:
        """Return the authenticator's credentials as CDP describes them (ids in base64)."""
        result = self.session.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id}
        )
        credentials: list[dict[str, Any]] = result["credentials"]
        return credentials

    def only_credential(self) -> dict[str, Any]:
        credentials = self.credentials()
        assert len(credentials) == 1, f"expected one credential, found {len(credentials)}"
        return credentials[0]

    def remove_credential(self, credential_id: str) -> None:
        """Remove a credential; `credential_id` is in CDP's standard base64."""
        self.session.send(
            "WebAuthn.removeCredential",
            {"authenticatorId": self.authenticator_id, "credentialId": credential_id},
        )

    def add_credential(self, credential: dict[str, Any]) -> None:
        """Add a credential as `credentials()` returns it: credentialId, isResidentCredential,
        rpId, privateKey (PKCS#8), userHandle and signCount, the binary ones in base64.
        """
        self.session.send(
            "WebAuthn.addCredential",
            {"authenticatorId": self.authenticator_id, "credential": credential},
        )

    def set_user_verified(self, verified: bool) -> None:
        self.session.send(
            "WebAuthn.setUserVerified",
            {"authenticatorId": self.authenticator_id, "isUserVerified": verified},
        )

    def remove(self) -> None:
        self.session.send(
            "WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.authenticator_id}
        )
        self.session.detach()
