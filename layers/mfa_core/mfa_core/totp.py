"""TOTP (RFC 6238) with the parameters every common authenticator app honours: HMAC-SHA1,
6 digits, 30-second steps.
"""

from __future__ import annotations

import base64
import hmac
import io
import re
import secrets
from urllib.parse import quote, urlencode

import pyotp

SECRET_BYTES = 20  # 160 bits, the HMAC-SHA1 output size that RFC 4226 §4 recommends
TYPE = "totp"
DIGITS = 6
PERIOD = 30
# Accept the previous and next step as well, for clock drift (RFC 6238 §5.2).
WINDOW = 1

# \Z, unlike $, does not match before a trailing newline; [0-9] is ASCII only, unlike \d or int().
CODE_PATTERN = re.compile(r"[0-9]{6}\Z")


def new_secret() -> str:
    """Return a fresh random secret, base32-encoded without padding (32 characters)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def is_well_formed(code: str) -> bool:
    """Tell whether `code` is exactly six ASCII digits; check this before anything else."""
    return CODE_PATTERN.match(code) is not None


def time_step(now: float) -> int:
    return int(now) // PERIOD


def hotp(secret: str, counter: int, *, digits: int = DIGITS) -> str:
    """Return the RFC 4226 HOTP value of a base32 secret for `counter`."""
    return pyotp.HOTP(secret, digits=digits).at(counter)


def matching_step(secret: str, code: str, *, now: float) -> int | None:
    """Return the time step within ±WINDOW of `now` whose code equals `code`, else None.

    Every candidate is compared, each in constant time, so timing does not tell which step
    matched. The caller rejects a step at or below the factor's last accepted step (replay).
    """
    current = time_step(now)
    generator = pyotp.HOTP(secret, digits=DIGITS)
    matched: int | None = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        if hmac.compare_digest(generator.at(step), code):
            matched = step
    return matched


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """Return the otpauth:// URI of Google Authenticator's Key Uri Format.

    The label is "issuer:account" and the issuer is repeated as a parameter; algorithm, digits
    and period are spelt out even though they are the defaults.
    """
    label = quote(f"{issuer}:{account}", safe=":@")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": PERIOD,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def qr_svg(uri: str) -> str:
    """Render `uri` as a QR code in SVG, dark modules on a white background."""
    import segno  # noqa: PLC0415 - only the enrollment route needs it

    buffer = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(
        buffer, kind="svg", scale=4, border=4, dark="#000", light="#fff", xmldecl=False
    )
    return buffer.getvalue().decode("utf-8")
