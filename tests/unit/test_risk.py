"""Login anomaly signals: new country, impossible travel, new network, and the stored history.

Positions are real city coordinates, and country-level locations use the reference points that
the geolocation adapter gives. Times are fixed: no test reads the clock.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pynamodb.attributes import MapAttribute

from mfa_core import risk
from mfa_core.adapters.geo import CLOUDFRONT, EMBEDDED, PRIVATE, UNKNOWN, Location, country_points
from mfa_core.risk import (
    IMPOSSIBLE_TRAVEL,
    MAX_COUNTRIES,
    MAX_NETWORKS,
    NEW_ASN,
    NEW_COUNTRY,
    LastLogin,
    LoginHistory,
    assess,
    distance_km,
    record,
)

START = 1_800_000_000.0
HOUR = 3600.0

# (country, latitude, longitude, ASN, AS organization) of a login in each city.
CITIES = {
    "paris": ("FR", 48.8566, 2.3522, 3215, "Orange"),
    "lyon": ("FR", 45.7640, 4.8357, 3215, "Orange"),
    "brussels": ("BE", 50.8503, 4.3517, 5432, "Proximus NV"),
    "london": ("GB", 51.5074, -0.1278, 2856, "British Telecommunications PLC"),
    "madrid": ("ES", 40.4168, -3.7038, 3352, "TELEFONICA DE ESPANA S.A.U."),
    "sydney": ("AU", -33.8688, 151.2093, 1221, "Telstra Limited"),
    "new_york": ("US", 40.7128, -74.0060, 7922, "COMCAST-7922"),
}


def city(name: str, *, asn: bool = True, organization: bool = True) -> Location:
    country, latitude, longitude, number, name_of_as = CITIES[name]
    return Location(
        source=CLOUDFRONT,
        country=country,
        latitude=latitude,
        longitude=longitude,
        asn=number if asn else None,
        as_organization=name_of_as if organization else None,
    )


def country_level(country: str, organization: str | None = None) -> Location:
    latitude, longitude, radius = country_points()[country]
    return Location(
        source=EMBEDDED,
        country=country,
        latitude=latitude,
        longitude=longitude,
        accuracy_radius_km=radius,
        as_organization=organization,
    )


def history_after(*logins: tuple[Location, float]) -> risk.LoginHistory:
    history = LoginHistory()
    for location, at in logins:
        history = record(history, location, at)
    return history


# Distances


@pytest.mark.parametrize(
    ("first", "second", "expected_km"),
    [
        # From the spherical law of cosines on the same sphere, another formula for the
        # great-circle distance, rounded to the kilometre.
        ("london", "new_york", 5570),
        ("paris", "sydney", 16961),
        ("london", "madrid", 1263),
        ("paris", "brussels", 264),
    ],
)
def test_distance_between_cities(first: str, second: str, expected_km: float) -> None:
    _, lat1, lon1, _, _ = CITIES[first]
    _, lat2, lon2, _, _ = CITIES[second]
    assert distance_km(lat1, lon1, lat2, lon2) == pytest.approx(expected_km, abs=0.5)
    assert distance_km(lat2, lon2, lat1, lon1) == pytest.approx(expected_km, abs=0.5)


def test_distance_same_and_antipodal_points() -> None:
    assert distance_km(48.8566, 2.3522, 48.8566, 2.3522) == 0.0
    assert distance_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(20015.1, rel=1e-4)
    assert distance_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(20015.1, rel=1e-4)


# Impossible travel


def test_paris_then_sydney_two_hours_later() -> None:
    history = history_after((city("paris"), START))
    signals = assess(history, city("sydney"), START + 2 * HOUR)
    assert IMPOSSIBLE_TRAVEL in signals


def test_paris_then_sydney_thirty_hours_later() -> None:
    history = history_after((city("paris"), START))
    signals = assess(history, city("sydney"), START + 30 * HOUR)
    assert IMPOSSIBLE_TRAVEL not in signals


def test_country_level_paris_sydney_trip() -> None:
    history = history_after((country_level("FR"), START))
    assert IMPOSSIBLE_TRAVEL in assess(history, country_level("AU"), START + 2 * HOUR)
    assert IMPOSSIBLE_TRAVEL not in assess(history, country_level("AU"), START + 30 * HOUR)


@pytest.mark.parametrize(
    ("hours", "expected"),
    [(1.0, True), (1.2, True), (1.3, False), (1.5, False)],
    ids=["1263-kmh", "1053-kmh", "972-kmh", "842-kmh"],
)
def test_london_madrid_speed_threshold(hours: float, expected: bool) -> None:
    history = history_after((city("london"), START))
    signals = assess(history, city("madrid"), START + hours * HOUR)
    assert (IMPOSSIBLE_TRAVEL in signals) is expected


@pytest.mark.parametrize("destination", ["brussels", "lyon", "london"])
def test_nearby_city_minutes_later(destination: str) -> None:
    # 264 to 392 km in five minutes is over 3000 km/h, but below the minimum distance.
    history = history_after((city("paris"), START))
    signals = assess(history, city(destination), START + 300)
    assert IMPOSSIBLE_TRAVEL not in signals


def test_same_instant_far_apart_is_impossible() -> None:
    history = history_after((city("paris"), START))
    assert IMPOSSIBLE_TRAVEL in assess(history, city("new_york"), START)


def test_earlier_than_last_login_far_apart() -> None:
    # Two functions' clocks can differ a little, so a login may look older than the last one.
    history = history_after((city("paris"), START))
    assert IMPOSSIBLE_TRAVEL in assess(history, city("new_york"), START - 1)


def test_same_instant_nearby_is_possible() -> None:
    history = history_after((city("paris"), START))
    assert IMPOSSIBLE_TRAVEL not in assess(history, city("brussels"), START)


def test_neighbouring_large_countries_minutes_apart() -> None:
    # The reference points of the US and Canada are about 2300 km apart, less than the sum of
    # their radii, so crossing the border between two logins is never impossible.
    history = history_after((country_level("US"), START))
    assert IMPOSSIBLE_TRAVEL not in assess(history, country_level("CA"), START + 600)


def test_city_then_own_country_point() -> None:
    # New York is about 2000 km from the US reference point, within the country's radius.
    history = history_after((city("new_york"), START))
    assert IMPOSSIBLE_TRAVEL not in assess(history, country_level("US"), START + 60)


def test_travel_needs_both_positions() -> None:
    history = history_after((city("paris"), START))
    no_position = Location(source=EMBEDDED, country="AU")
    assert IMPOSSIBLE_TRAVEL not in assess(history, no_position, START + 60)

    history = LoginHistory(countries=("FR",), last=LastLogin(at=START, country="FR"))
    assert IMPOSSIBLE_TRAVEL not in assess(history, city("sydney"), START + 60)


# New country and new network


def test_new_country_signalled() -> None:
    history = history_after((city("paris"), START), (city("brussels"), START + HOUR))
    assert NEW_COUNTRY in assess(history, city("london"), START + 48 * HOUR)


def test_known_country_not_signalled() -> None:
    history = history_after((city("paris"), START), (city("brussels"), START + HOUR))
    assert NEW_COUNTRY not in assess(history, city("paris"), START + 48 * HOUR)
    assert NEW_COUNTRY not in assess(history, city("lyon"), START + 48 * HOUR)


def test_new_asn_signalled() -> None:
    history = history_after((city("paris"), START))
    assert assess(history, city("brussels"), START + 48 * HOUR) == [NEW_COUNTRY, NEW_ASN]


def test_known_asn_not_signalled() -> None:
    history = history_after((city("paris"), START))
    assert assess(history, city("lyon"), START + 48 * HOUR) == []


def test_asn_matches_by_number_or_organization() -> None:
    # Recorded with both keys, as a MaxMind ASN database gives them.
    history = history_after((city("paris"), START))
    number_only = city("lyon", organization=False)
    organization_only = city("lyon", asn=False)
    assert NEW_ASN not in assess(history, number_only, START + 48 * HOUR)
    assert NEW_ASN not in assess(history, organization_only, START + 48 * HOUR)


def test_embedded_organization_names_compared() -> None:
    history = history_after((country_level("US", "GOOGLE"), START))
    assert NEW_ASN not in assess(history, country_level("US", "GOOGLE"), START + HOUR)
    assert NEW_ASN in assess(history, country_level("US", "CLOUDFLARENET"), START + HOUR)


def test_all_signals_together() -> None:
    history = history_after((city("paris"), START))
    assert assess(history, city("sydney"), START + HOUR) == [
        NEW_COUNTRY,
        IMPOSSIBLE_TRAVEL,
        NEW_ASN,
    ]


# No signals


def test_first_login_gives_no_signals() -> None:
    assert assess(LoginHistory(), city("sydney"), START) == []


@pytest.mark.parametrize("source", [PRIVATE, UNKNOWN])
def test_unlocated_login_gives_no_signals(source: str) -> None:
    history = history_after((city("paris"), START))
    assert assess(history, Location(source=source), START + 60) == []


def test_location_without_values_gives_no_signals() -> None:
    history = history_after((city("paris"), START))
    assert assess(history, Location(source=EMBEDDED), START + 60) == []


# Recording logins


def test_record_first_login() -> None:
    history = record(LoginHistory(), city("paris"), START)
    assert history == LoginHistory(
        countries=("FR",),
        networks=("AS3215", "org:Orange"),
        last=LastLogin(at=START, country="FR", latitude=48.8566, longitude=2.3522, asn=3215),
    )


def test_record_moves_known_entries_last() -> None:
    history = history_after(
        (city("paris"), START), (city("brussels"), START + HOUR), (city("lyon"), START + 2 * HOUR)
    )
    assert history.countries == ("BE", "FR")
    assert history.networks == ("AS5432", "org:Proximus NV", "AS3215", "org:Orange")
    assert history.last is not None
    assert history.last.latitude == 45.7640
    assert history.last.at == START + 2 * HOUR


@pytest.mark.parametrize("source", [PRIVATE, UNKNOWN])
def test_record_ignores_unlocated_login(source: str) -> None:
    history = history_after((city("paris"), START))
    assert record(history, Location(source=source), START + HOUR) == history


def test_record_keeps_last_position() -> None:
    # A login without a position still adds its country and network, but the next login is
    # compared with the last position known.
    history = history_after((city("paris"), START))
    history = record(history, Location(source=EMBEDDED, country="AU", asn=1221), START + HOUR)
    assert history.countries == ("FR", "AU")
    assert history.networks == ("AS3215", "org:Orange", "AS1221")
    assert history.last == LastLogin(
        at=START, country="FR", latitude=48.8566, longitude=2.3522, asn=3215
    )


def test_record_bounds_countries() -> None:
    countries = sorted(country_points())[: MAX_COUNTRIES + 5]
    history = LoginHistory()
    for offset, country in enumerate(countries):
        history = record(history, country_level(country), START + offset * 48 * HOUR)
    assert history.countries == tuple(countries[-MAX_COUNTRIES:])
    assert NEW_COUNTRY in assess(history, country_level(countries[0]), START + 10_000 * HOUR)


def test_record_bounds_networks() -> None:
    history = LoginHistory()
    for number in range(1, MAX_NETWORKS + 11):
        history = record(history, Location(source=CLOUDFRONT, asn=number), START + number)
    assert len(history.networks) == MAX_NETWORKS
    assert history.networks[0] == "AS11"
    assert history.networks[-1] == f"AS{MAX_NETWORKS + 10}"


def test_record_cuts_long_organization() -> None:
    history = record(LoginHistory(), Location(source=EMBEDDED, as_organization="x" * 64), START)
    assert history.networks == ("org:" + "x" * 64,)
    assert len(history.networks[0]) == risk.MAX_NETWORK_KEY


# Stored form


def test_item_round_trip_through_dynamodb_map() -> None:
    history = history_after(
        (country_level("FR", "Orange"), START), (city("brussels"), START + 30 * HOUR + 0.75)
    )
    item = history.as_item()
    stored = MapAttribute().deserialize(MapAttribute().serialize(item))
    assert stored == json.loads(json.dumps(item))
    assert LoginHistory.from_item(stored) == LoginHistory(
        countries=history.countries,
        networks=history.networks,
        last=LastLogin(
            at=START + 30 * HOUR,
            country="BE",
            latitude=50.8503,
            longitude=4.3517,
            asn=5432,
        ),
    )


def test_item_of_country_level_login() -> None:
    history = history_after((country_level("FR"), START + 0.5))
    latitude, longitude, radius = country_points()["FR"]
    assert history.as_item() == {
        "countries": ["FR"],
        "networks": [],
        "last": {
            "at": int(START),
            "country": "FR",
            "lat": latitude,
            "lon": longitude,
            "radius_km": round(radius),
        },
    }


def test_item_of_empty_history() -> None:
    assert LoginHistory().as_item() == {"countries": [], "networks": []}
    assert LoginHistory.from_item(None) == LoginHistory()
    assert LoginHistory.from_item({}) == LoginHistory()
    assert LoginHistory.from_item(LoginHistory().as_item()).is_empty


def test_item_with_decimal_numbers() -> None:
    # boto3's resource interface reads DynamoDB numbers as Decimal.
    item = {
        "countries": ["FR"],
        "networks": ["AS3215"],
        "last": {"at": Decimal(1_800_000_000), "lat": Decimal("48.8566"), "lon": Decimal("2.3522")},
    }
    history = LoginHistory.from_item(item)
    assert history.last == LastLogin(at=START, latitude=48.8566, longitude=2.3522)


def test_damaged_item_entries_skipped() -> None:
    item = {
        "countries": ["FR", "fr", 7, None, "FRA", "DE"],
        "networks": ["AS3215", "", 3215, "x" * 100],
        "last": {
            "at": 1_800_000_000,
            "country": "France",
            "lat": 91.0,
            "lon": 2.35,
            "radius_km": -5,
            "asn": True,
        },
    }
    history = LoginHistory.from_item(item)
    assert history.countries == ("FR", "DE")
    assert history.networks == ("AS3215",)
    assert history.last == LastLogin(at=START)


@pytest.mark.parametrize(
    "item",
    [
        {"countries": "FR"},
        {"networks": {"AS1": 1}},
        {"last": {"lat": 1.0, "lon": 2.0}},
        {"last": {"at": "1800000000"}},
        {"last": {"at": float("nan")}},
        {"last": {"at": Decimal("sNaN")}},
        {"last": [1_800_000_000]},
    ],
)
def test_malformed_item_gives_empty_history(item: dict[str, object]) -> None:
    assert LoginHistory.from_item(item).is_empty


def test_from_item_keeps_most_recent_entries() -> None:
    countries = sorted(country_points())[: MAX_COUNTRIES + 3]
    networks = [f"AS{number}" for number in range(1, MAX_NETWORKS + 4)]
    history = LoginHistory.from_item({"countries": countries, "networks": networks})
    assert history.countries == tuple(countries[-MAX_COUNTRIES:])
    assert history.networks == tuple(networks[-MAX_NETWORKS:])
