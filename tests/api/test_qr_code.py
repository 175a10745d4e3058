"""What an authenticator app does: scan the QR code, then type the code it shows."""

from __future__ import annotations

import io

import pyotp
import resvg_py
import zxingcpp
from PIL import Image

from tests.api.harness import Client, Flow, Member


def _decode_svg(svg: str) -> list[str]:
    png = bytes(resvg_py.svg_to_bytes(svg_string=svg))
    image = Image.open(io.BytesIO(png)).convert("L")
    return [result.text for result in zxingcpp.read_barcodes(image)]


def test_scanned_qr_code_enrolls_a_factor(client: Client, flow: Flow, acme: Member) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    enroll = client.post("/v1/me/factors/totp", {"label": "Phone"}, token=access)
    assert enroll.status == 201

    decoded = _decode_svg(enroll.body["qr_svg"])
    assert decoded == [enroll.body["otpauth_uri"]]

    # Only what the QR code carries from here on, as a phone app would have it.
    app = pyotp.parse_uri(decoded[0])
    assert isinstance(app, pyotp.TOTP)
    code = app.at(int(flow.clock.now()))
    confirm = client.post(
        f"/v1/me/factors/totp/{enroll.body['factor_id']}/confirm", {"code": code}, token=access
    )
    assert confirm.status == 200, confirm.text

    flow.next_step()
    mfa_token = flow.mfa_token(acme)
    verify = client.post(
        "/v1/auth/mfa/verify",
        {"factor_id": enroll.body["factor_id"], "code": app.at(int(flow.clock.now()))},
        token=mfa_token,
    )
    assert verify.status == 200, verify.text


def test_decoder_rejects_a_damaged_qr_code() -> None:
    """A QR code with its finder patterns painted over decodes to nothing."""
    import segno  # noqa: PLC0415

    buffer = io.BytesIO()
    segno.make("otpauth://totp/x?secret=AAAA", error="m").save(
        buffer, kind="svg", scale=4, border=4, light="#fff"
    )
    svg = buffer.getvalue().decode()
    damaged = svg.replace(
        "</svg>", '<rect x="0" y="0" width="2000" height="60" fill="#000"/></svg>'
    )
    assert _decode_svg(svg) == ["otpauth://totp/x?secret=AAAA"]
    assert _decode_svg(damaged) == []
