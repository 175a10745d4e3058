"""Backup code generation and normalization."""

from __future__ import annotations

import math

import pytest

from mfa_core import backup_codes


def test_codes_carry_at_least_fifty_bits() -> None:
    bits = backup_codes.LENGTH * math.log2(len(backup_codes.ALPHABET))
    assert bits >= 50
    assert len(set(backup_codes.ALPHABET)) == 32
    assert not set("ILOU") & set(backup_codes.ALPHABET)


def test_generated_codes_are_grouped_and_distinct() -> None:
    codes = backup_codes.generate()
    assert len(codes) == backup_codes.COUNT
    assert len(set(codes)) == backup_codes.COUNT
    for code in codes:
        left, right = code.split("-")
        assert len(left) == len(right) == 5
        assert set(left + right) <= set(backup_codes.ALPHABET)


@pytest.mark.parametrize(
    ("entered", "canonical"),
    [
        ("ABCDE-FGH23", "ABCDEFGH23"),
        ("abcde fgh23", "ABCDEFGH23"),
        (" abcdefgh23 ", "ABCDEFGH23"),
        ("OBCDE-FGHIL", "0BCDEFGH11"),
    ],
    ids=["grouped", "lower-case-space", "padded", "look-alikes"],
)
def test_normalize_accepts_what_people_type(entered: str, canonical: str) -> None:
    assert backup_codes.normalize(entered) == canonical


@pytest.mark.parametrize(
    "entered",
    ["", "ABCDE", "ABCDE-FGH234", "ABCDE-FGHU3", "ÄBCDE-FGH23"],
    ids=["empty", "short", "long", "letter-u", "non-ascii"],
)
def test_normalize_rejects_malformed_codes(entered: str) -> None:
    assert backup_codes.normalize(entered) is None


def test_find_matches_only_the_keyed_digest() -> None:
    pepper = b"p" * 32
    stored = [backup_codes.digest(pepper, "ABCDEFGH23"), backup_codes.digest(pepper, "ZZZZZZZZZZ")]
    assert backup_codes.find(pepper, "abcde-fgh23", stored) == stored[0]
    assert backup_codes.find(b"q" * 32, "ABCDE-FGH23", stored) is None
    assert backup_codes.find(pepper, "not a code", stored) is None
