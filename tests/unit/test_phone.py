"""Phone numbers: strict E.164, number types that can take an SMS, country allow-lists, masking.

Valid and rejected numbers are libphonenumber's own example numbers, so the tables follow the
library's metadata instead of guessing which ranges are assigned.
"""

from __future__ import annotations

import dataclasses
import re

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from mfa_core.errors import InvalidInput
from mfa_core.phone import EXAMPLE, PhoneNumber, mask, normalize, validate_country_list


def example(region: str, number_type: int) -> str:
    number = phonenumbers.example_number_for_type(region, number_type)
    assert number is not None, f"phonenumbers has no example of type {number_type} for {region}"
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def non_geographic(country_code: int) -> str:
    number = phonenumbers.example_number_for_non_geo_entity(country_code)
    assert number is not None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def assert_not_echoed(error: InvalidInput, raw: str) -> None:
    """Assert that no five consecutive submitted digits reach the caller, apart from EXAMPLE.

    The caller's text is also searched with everything but its digits removed, so an echo with
    the caller's own separators ("+1-201-555-0123") is caught as well.
    """
    digits = re.sub(r"[^0-9]", "", raw)
    caller_text = " ".join([error.detail, str(error), repr(error.args)]).replace(EXAMPLE, "")
    caller_digits = re.sub(r"[^0-9]", "", caller_text)
    for start in range(len(digits) - 4):
        assert digits[start : start + 5] not in caller_text
        assert digits[start : start + 5] not in caller_digits
    if len(raw) >= 5:
        assert raw not in caller_text


def in_script(digits: str, *, zero: int) -> str:
    """Write ASCII `digits` with the digits of another script, which str.isdigit also accepts."""
    return digits.translate({ord("0") + value: zero + value for value in range(10)})


MOBILE_REGIONS = ["GB", "DE", "FR", "IN", "JP", "BR", "AU", "NG", "ES", "CH"]


@pytest.mark.parametrize("region", MOBILE_REGIONS)
def test_mobile_number_accepted(region: str) -> None:
    e164 = example(region, PhoneNumberType.MOBILE)
    assert normalize(e164, allowed_countries=None) == PhoneNumber(e164=e164, country=region)


@pytest.mark.parametrize("region", ["US", "CA"])
def test_nanp_fixed_line_or_mobile_accepted(region: str) -> None:
    # NANP numbers do not tell mobile from fixed line, so libphonenumber types them
    # FIXED_LINE_OR_MOBILE. Rejecting that type would reject every US and Canadian phone.
    e164 = example(region, PhoneNumberType.MOBILE)
    assert phonenumbers.number_type(phonenumbers.parse(e164)) == (
        PhoneNumberType.FIXED_LINE_OR_MOBILE
    )
    assert normalize(e164, allowed_countries=None) == PhoneNumber(e164=e164, country=region)


@pytest.mark.parametrize(
    ("region", "number_type"),
    [
        ("GB", PhoneNumberType.FIXED_LINE),
        ("GB", PhoneNumberType.TOLL_FREE),
        ("GB", PhoneNumberType.VOIP),
        ("GB", PhoneNumberType.UAN),
        ("GB", PhoneNumberType.PERSONAL_NUMBER),
    ],
)
def test_other_sms_capable_types_accepted(region: str, number_type: int) -> None:
    e164 = example(region, number_type)
    assert normalize(e164, allowed_countries=None).e164 == e164


def test_message_example_is_valid() -> None:
    assert normalize(EXAMPLE, allowed_countries=None) == PhoneNumber(e164=EXAMPLE, country="US")


def test_phone_number_is_immutable() -> None:
    number = normalize(example("DE", PhoneNumberType.MOBILE), allowed_countries=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        number.country = "US"  # type: ignore[misc]


NOT_E164 = {
    "empty": "",
    "plus only": "+",
    "national format": "07400123456",
    "digits without plus": "447400123456",
    "international prefix 00": "00447400123456",
    "spaces": "+44 7400 123456",
    "dashes": "+1-201-555-0123",
    "parentheses": "+1 (201) 555-0123",
    "letters": "+1201555CALL",
    "leading space": " +447400123456",
    "trailing newline": "+447400123456\n",
    "16 digits": "+4474001234567890",
    "arabic-indic digits": "+" + in_script("447400123456", zero=0x0660),
    "fullwidth digits": "+" + in_script("447400123456", zero=0xFF10),
    "two plus signs": "++447400123456",
    "national prefix after country code": "+4407400123456",
    "no such country code": "+999123456789",
    "country code 0": "+0123456789",
    "too short for its country": "+1201555012",
    "unassigned range": "+15555550123",
}


@pytest.mark.parametrize("raw", NOT_E164.values(), ids=NOT_E164.keys())
def test_non_e164_input_rejected(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize(raw, allowed_countries=None)
    assert caught.value.code == "invalid_phone_number"
    assert caught.value.field == "phone_number"
    assert "E.164" in caught.value.detail
    assert_not_echoed(caught.value, raw)


REJECTED = {
    "GB premium rate": example("GB", PhoneNumberType.PREMIUM_RATE),
    "FR premium rate": example("FR", PhoneNumberType.PREMIUM_RATE),
    "DE premium rate": example("DE", PhoneNumberType.PREMIUM_RATE),
    "US premium rate": example("US", PhoneNumberType.PREMIUM_RATE),
    "FR shared cost": example("FR", PhoneNumberType.SHARED_COST),
    "DE shared cost": example("DE", PhoneNumberType.SHARED_COST),
    "ES shared cost": example("ES", PhoneNumberType.SHARED_COST),
    "GB pager": example("GB", PhoneNumberType.PAGER),
    "DE voicemail": example("DE", PhoneNumberType.VOICEMAIL),
    "international freephone +800": non_geographic(800),
    "satellite +881": non_geographic(881),
}


@pytest.mark.parametrize("raw", REJECTED.values(), ids=REJECTED.keys())
def test_costly_or_unreachable_type_rejected(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize(raw, allowed_countries=None)
    assert caught.value.code == "phone_number_not_allowed"
    assert caught.value.field == "phone_number"
    assert "mobile" in caught.value.detail
    assert_not_echoed(caught.value, raw)


def test_type_checked_before_country() -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize(example("GB", PhoneNumberType.PREMIUM_RATE), allowed_countries={"US"})
    assert caught.value.code == "phone_number_not_allowed"


@pytest.mark.parametrize(
    ("region", "allowed"),
    [
        ("DE", {"DE", "US"}),
        ("US", {"DE", "US"}),
        ("DE", {"de"}),
        ("GB", ["GB"]),
        ("FR", ("FR", "FR")),
    ],
)
def test_allowed_country_accepted(region: str, allowed: set[str]) -> None:
    e164 = example(region, PhoneNumberType.MOBILE)
    assert normalize(e164, allowed_countries=allowed).country == region


@pytest.mark.parametrize(
    ("region", "allowed", "listed"),
    [
        ("FR", {"US", "DE"}, "DE, US"),
        ("CA", {"US"}, "US"),
        # Jersey shares +44 with the UK but is its own region.
        ("JE", {"GB"}, "GB"),
        ("DE", set(), "none"),
    ],
)
def test_other_country_rejected_listing_allowed(
    region: str, allowed: set[str], listed: str
) -> None:
    e164 = example(region, PhoneNumberType.MOBILE)
    with pytest.raises(InvalidInput) as caught:
        normalize(e164, allowed_countries=allowed)
    assert caught.value.code == "phone_country_not_allowed"
    assert caught.value.field == "phone_number"
    assert caught.value.detail.endswith(f"one of these countries: {listed}.")
    assert_not_echoed(caught.value, e164)


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+12015550123", "+*********23"),
        ("+447400123456", "+**********56"),
        ("+4915123456789", "+***********89"),
        ("+123", "+*23"),
    ],
)
def test_mask_keeps_last_two_digits(e164: str, masked: str) -> None:
    assert mask(e164) == masked
    assert len(mask(e164)) == len(e164)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("", ""),
        ("+", "*"),
        ("+12", "***"),
        ("12015550123", "***********"),
        ("+1 201 555 0123", "***************"),
        ("+1201x", "******"),
    ],
)
def test_mask_hides_non_e164_whole(value: str, masked: str) -> None:
    assert mask(value) == masked


@pytest.mark.parametrize(
    ("countries", "expected"),
    [
        (["US", "DE"], ("DE", "US")),
        (["us", "De"], ("DE", "US")),
        (["US", "us", "US"], ("US",)),
        (("JE", "GB"), ("GB", "JE")),
        (iter(["FR"]), ("FR",)),
        ([], ()),
    ],
)
def test_country_list_normalized(countries: list[str], expected: tuple[str, ...]) -> None:
    assert validate_country_list(countries) == expected


@pytest.mark.parametrize(
    ("countries", "position"),
    [
        (["USA"], 1),
        (["US", "ZZ"], 2),
        (["US", "DE", "UK"], 3),
        (["001"], 1),
        ([""], 1),
        (["U S"], 1),
        ([" US"], 1),
        (["US", 1], 2),
        (["US", None], 2),
    ],
)
def test_unknown_country_rejected_by_position(countries: list[str], position: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_country_list(countries)
    assert caught.value.field == "sms_countries"
    assert caught.value.detail.startswith(f"Entry {position} of field 'sms_countries'")


def test_country_list_string_rejected() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_country_list("US")
    assert caught.value.field == "sms_countries"
    assert "list" in caught.value.detail
