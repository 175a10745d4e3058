"""The published test vectors of RFC 4226 (HOTP) and RFC 6238 (TOTP)."""

from __future__ import annotations

import base64

import pytest

from mfa_core import totp

# RFC 4226 Appendix D and RFC 6238 Appendix B both use this ASCII secret for HMAC-SHA1.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode("ascii")

RFC4226_APPENDIX_D = [
    (0, "755224"),
    (1, "287082"),
    (2, "359152"),
    (3, "969429"),
    (4, "338314"),
    (5, "254676"),
    (6, "287922"),
    (7, "162583"),
    (8, "399871"),
    (9, "520489"),
]

# (Unix time, 8-digit TOTP) for the SHA1 rows; the service itself issues 6-digit codes.
RFC6238_APPENDIX_B_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("counter", "expected"), RFC4226_APPENDIX_D)
def test_hotp_matches_rfc4226(counter: int, expected: str) -> None:
    assert totp.hotp(RFC_SECRET, counter) == expected


@pytest.mark.parametrize(("unix_time", "expected"), RFC6238_APPENDIX_B_SHA1)
def test_totp_matches_rfc6238(unix_time: int, expected: str) -> None:
    assert totp.hotp(RFC_SECRET, totp.time_step(unix_time), digits=8) == expected


@pytest.mark.parametrize(("unix_time", "expected"), RFC6238_APPENDIX_B_SHA1)
def test_matching_step_accepts_rfc6238_code(unix_time: int, expected: str) -> None:
    six_digits = expected[-6:]
    assert totp.matching_step(RFC_SECRET, six_digits, now=unix_time) == totp.time_step(unix_time)


def test_matching_step_window_is_one_step() -> None:
    now = 1_111_111_111
    step = totp.time_step(now)
    for offset, accepted in [(-2, False), (-1, True), (0, True), (1, True), (2, False)]:
        code = totp.hotp(RFC_SECRET, step + offset)
        matched = totp.matching_step(RFC_SECRET, code, now=now)
        assert (matched == step + offset) is accepted, offset


@pytest.mark.parametrize(
    "code",
    ["123456", "000000"],
)
def test_code_format_accepts_six_ascii_digits(code: str) -> None:
    assert totp.is_well_formed(code)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "12345",
        "1234567",
        "12345\n",
        " 123456",
        "12 456",
        "\uff11\uff12\uff13\uff14\uff15\uff16",  # full-width digits, which pyotp and int() accept
        "\u0661\u0662\u0663\u0664\u0665\u0666",  # Arabic-Indic digits
        "12345a",
    ],
)
def test_code_format_rejects_everything_else(code: str) -> None:
    assert not totp.is_well_formed(code)


def test_new_secret_is_160_bits_base32() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32
    assert len(base64.b32decode(secret)) == 20
    assert secret != totp.new_secret()
