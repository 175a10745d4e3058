"""Phone numbers for SMS codes: strict E.164 input, number types that can take an SMS, masking.

Numbers are checked against the metadata of the phonenumbers library (Google's libphonenumber),
so a number in a range that no carrier has been assigned is rejected, and a new range is
accepted only after a library release adds it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from mfa_core.errors import InvalidInput

FIELD = "phone_number"
COUNTRIES_FIELD = "sms_countries"

# E.164: a "+", then the country code and the national number, 15 digits at most. The class is
# `[0-9]` because `\d` also matches the digits of other scripts.
_E164 = re.compile(r"\+[0-9]{1,15}")
MASK_CHARACTER = "*"
# The number that error messages show as an example of the E.164 form.
EXAMPLE = "+14155550123"

# Types that cannot receive a one-time code, or that charge the sender a premium for it.
_REJECTED_TYPES: dict[int, str] = {
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.PAGER: "a pager number",
    PhoneNumberType.VOICEMAIL: "a voicemail access number",
}


@dataclass(frozen=True)
class PhoneNumber:
    e164: str
    # ISO 3166-1 alpha-2 region as phonenumbers assigns it: Jersey is "JE", not "GB".
    country: str


def normalize(raw: str, *, allowed_countries: Collection[str] | None) -> PhoneNumber:
    """Check a phone number given in E.164 form and return it with its country.

    Only the canonical E.164 form is accepted: "+", the country code and the number, ASCII
    digits only, nothing the caller would have to guess at (a national prefix after the
    country code, spaces, punctuation). Raises InvalidInput on field "phone_number":

    - "invalid_phone_number": not E.164, or not in a range that libphonenumber lists as
      assigned (its type would be UNKNOWN).
    - "phone_number_not_allowed": a premium-rate, shared-cost, pager or voicemail access
      number, or a number of a non-geographic service (+800, +881 and the like), which belongs
      to no country. Fixed-line, toll-free, VoIP, UAN and personal numbers are accepted: some
      of them do take SMS, and only a code sent to the number shows whether this one does.
    - "phone_country_not_allowed": `allowed_countries` is given and does not contain the
      number's region. None allows every country; an empty collection allows none.

    No message repeats the number.
    """
    if not _E164.fullmatch(raw):
        raise _invalid()
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise _invalid() from exc
    if not phonenumbers.is_valid_number(number):
        raise _invalid()
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if e164 != raw:
        # parse drops a national prefix written after the country code ("+44 0 20..."). Storing
        # a number other than the one the user typed would surprise them.
        raise _invalid()

    rejected = _REJECTED_TYPES.get(phonenumbers.number_type(number))
    if rejected is not None:
        raise InvalidInput(
            f"Field '{FIELD}' is {rejected}, which is not accepted for verification codes. "
            "Use a mobile phone number.",
            field=FIELD,
            code="phone_number_not_allowed",
        )

    country = phonenumbers.region_code_for_number(number)
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidInput(
            f"Field '{FIELD}' belongs to an international service, not a country. "
            "Use a mobile phone number.",
            field=FIELD,
            code="phone_number_not_allowed",
        )

    if allowed_countries is not None:
        allowed = sorted({code.upper() for code in allowed_countries})
        if country not in allowed:
            listing = ", ".join(allowed) if allowed else "none"
            raise InvalidInput(
                f"Field '{FIELD}' is from a country that your organization does not accept "
                f"for SMS. Use a number from one of these countries: {listing}.",
                field=FIELD,
                code="phone_country_not_allowed",
            )

    return PhoneNumber(e164=e164, country=country)


def mask(e164: str) -> str:
    """Return `e164` with every digit but the last two replaced by "*", e.g. "+*********67".

    The length stays, so the number of digits shows. A value that is not E.164 with at least
    three digits (a stored value that was never normalized, an empty string) comes back with
    every character masked, so a display never raises and never shows more than two digits.
    """
    if not _E164.fullmatch(e164) or len(e164) < 4:
        return MASK_CHARACTER * len(e164)
    return "+" + MASK_CHARACTER * (len(e164) - 3) + e164[-2:]


def validate_country_list(countries: Iterable[str]) -> tuple[str, ...]:
    """Return the region codes of `countries` upper-cased, without repeats, in sorted order.

    Each entry must be a region code in phonenumbers.SUPPORTED_REGIONS, in any case ("de"): the
    ISO 3166-1 alpha-2 codes of places with phone numbers, plus AC (Ascension), TA (Tristan da
    Cunha) and XK (Kosovo).
    Raises InvalidInput on field "sms_countries" naming the position of the first bad entry.
    """
    if isinstance(countries, str | bytes):
        raise InvalidInput(
            f"Field '{COUNTRIES_FIELD}' must be a list of country codes such as US and DE.",
            field=COUNTRIES_FIELD,
        )
    codes: set[str] = set()
    for position, entry in enumerate(countries, start=1):
        code = entry.upper() if isinstance(entry, str) else ""
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise InvalidInput(
                f"Entry {position} of field '{COUNTRIES_FIELD}' is not a known ISO 3166-1 "
                'alpha-2 country code. Use codes such as "US" or "DE".',
                field=COUNTRIES_FIELD,
            )
        codes.add(code)
    return tuple(sorted(codes))


def _invalid() -> InvalidInput:
    return InvalidInput(
        f"Field '{FIELD}' must be a phone number in E.164 form: '+', the country code and the "
        "number, digits only, without spaces, punctuation or a leading 0 after the country "
        f"code, 15 digits at most (for example {EXAMPLE}).",
        field=FIELD,
        code="invalid_phone_number",
    )
