"""Geolocation of source addresses: CloudFront headers, MaxMind databases, the embedded database.

The embedded lookups use geoip2fast's own data file (GeoLite2 of 2024-06-18) with real public
addresses, so the expected countries and AS organizations are what that file contains. It has
AS organization names but no AS numbers. The MaxMind databases are written by each test with
mmdb-writer and read through maxminddb.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from mfa_core.adapters import geo
from mfa_core.adapters.geo import (
    CLOUDFRONT,
    EMBEDDED,
    MAXMIND,
    PRIVATE,
    UNKNOWN,
    GeoLocator,
    Location,
    country_points,
)
from mfa_core.errors import ConfigurationError
from mfa_core.settings import Settings
from tests.unit.test_settings import BASE

EMBEDDED_LOOKUPS = [
    ("8.8.8.8", "US", "GOOGLE"),
    ("1.1.1.1", "AU", "CLOUDFLARENET"),
    ("9.9.9.9", "US", "QUAD9-AS-1"),
    ("81.2.69.142", "GB", "Andrews & Arnold Ltd"),
    ("193.0.6.139", "NL", "Reseaux IP Europeens Network Coordination Centre (RIPE NCC)"),
    ("133.242.0.3", "JP", "SAKURA Internet Inc."),
    ("200.160.2.3", "BR", "Nucleo de Inf. e Coord. do Ponto BR - NIC."),
    ("77.88.55.242", "RU", "YANDEX LLC"),
    ("41.203.18.1", "ZA", "xneelo"),
    ("2001:4860:4860::8888", "US", "GOOGLE"),
    ("2606:4700:4700::1111", "US", "CLOUDFLARENET"),
    ("2a00:1450:4001:80b::200e", "DE", "GOOGLE"),
]

NOT_ROUTABLE = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "169.254.169.254",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "0.0.0.0",  # noqa: S104 - an address to locate, not to bind to
    "255.255.255.255",
    "224.0.0.1",
    "240.0.0.1",
    "192.0.2.1",  # documentation
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "fec0::1",  # site-local
    "2001:db8::1",  # documentation
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
]

MALFORMED = ["", "garbage", "256.1.1.1", "1.2.3", " 8.8.8.8", "8.8.8.8/32", "::ffff:999.1.1.1"]

PARIS = {"latitude": 48.8566, "longitude": 2.3522, "accuracy_radius": 20}
NEW_YORK = {"latitude": 40.7128, "longitude": -74.006, "accuracy_radius": 50}
FULL_CLOUDFRONT = {
    "cloudfront-viewer-country": "FR",
    "cloudfront-viewer-latitude": "48.85670",
    "cloudfront-viewer-longitude": "2.35146",
    "cloudfront-viewer-asn": "3215",
}


@pytest.fixture(scope="module")
def locator() -> GeoLocator:
    located = GeoLocator()
    located.preload()
    return located


@pytest.fixture
def cloudfront() -> GeoLocator:
    return GeoLocator(trust_cloudfront=True)


def write_database(
    path: Path, records: Mapping[str, Any], *, ip_version: int = 6, database_type: str
) -> Path:
    writer = MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en"],
        description="test database",
    )
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def city_database(tmp_path: Path) -> Path:
    # Deliberately not where the embedded database puts these addresses (8.8.8.8 is in the US
    # there), so each result shows which source located it.
    return write_database(
        tmp_path / "city.mmdb",
        {
            "8.8.8.0/24": {"country": {"iso_code": "FR"}, "location": PARIS},
            "81.2.69.0/24": {"country": {"iso_code": "GB"}},
            "2001:4860::/32": {
                "country": {"iso_code": "US"},
                "location": NEW_YORK,
                "traits": {"autonomous_system_number": 15169},
            },
        },
        database_type="GeoLite2-City",
    )


@pytest.fixture
def asn_database(tmp_path: Path) -> Path:
    return write_database(
        tmp_path / "asn.mmdb",
        {
            "8.8.8.0/24": {
                "autonomous_system_number": 15169,
                "autonomous_system_organization": "GOOGLE",
            },
            "2001:4860::/32": {
                "autonomous_system_number": 15169,
                "autonomous_system_organization": "GOOGLE",
            },
        },
        database_type="GeoLite2-ASN",
    )


def country_point(country: str) -> Location:
    latitude, longitude, radius = country_points()[country]
    return Location(
        source=EMBEDDED,
        country=country,
        latitude=latitude,
        longitude=longitude,
        accuracy_radius_km=radius,
    )


# Embedded database


@pytest.mark.parametrize(("ip", "country", "organization"), EMBEDDED_LOOKUPS)
def test_embedded_lookup_of_public_address(
    locator: GeoLocator, ip: str, country: str, organization: str
) -> None:
    location = locator.locate(ip, {})
    assert location.source == EMBEDDED
    assert location.country == country
    assert location.as_organization == organization
    assert location.asn is None


@pytest.mark.parametrize(("ip", "country", "organization"), EMBEDDED_LOOKUPS[:3])
def test_embedded_position_is_country_point(
    locator: GeoLocator, ip: str, country: str, organization: str
) -> None:
    location = locator.locate(ip, {})
    point = country_point(country)
    assert location.has_position
    assert location.latitude == point.latitude
    assert location.longitude == point.longitude
    assert location.accuracy_radius_km == point.accuracy_radius_km


def test_ipv4_mapped_address_located_as_ipv4(locator: GeoLocator) -> None:
    # geoip2fast alone puts ::ffff:8.8.8.8 in a reserved range.
    assert locator.locate("::ffff:8.8.8.8", {}) == locator.locate("8.8.8.8", {})


def test_country_points_cover_embedded_countries() -> None:
    points = country_points()
    for _, country, _ in EMBEDDED_LOOKUPS:
        assert country in points
    # Territories that Natural Earth draws as part of France have their own points.
    for territory in ("GF", "GP", "MQ", "RE", "YT"):
        assert territory in points
    assert all(-90 <= lat <= 90 and -180 <= lon <= 180 for lat, lon, _ in points.values())


# Addresses that are never looked up


@pytest.mark.parametrize("ip", NOT_ROUTABLE)
def test_not_routable_address_is_private(locator: GeoLocator, ip: str) -> None:
    assert locator.locate(ip, {}) == Location(source=PRIVATE)


@pytest.mark.parametrize("ip", [*MALFORMED, None])
def test_malformed_address_is_unknown(locator: GeoLocator, ip: str | None) -> None:
    assert locator.locate(ip, {}) == Location(source=UNKNOWN)


# CloudFront headers


def test_cloudfront_headers_preferred(cloudfront: GeoLocator) -> None:
    assert cloudfront.locate("8.8.8.8", FULL_CLOUDFRONT) == Location(
        source=CLOUDFRONT, country="FR", latitude=48.8567, longitude=2.35146, asn=3215
    )


def test_cloudfront_header_names_any_case(cloudfront: GeoLocator) -> None:
    headers = {name.title(): value for name, value in FULL_CLOUDFRONT.items()}
    assert headers.keys() != FULL_CLOUDFRONT.keys()
    assert cloudfront.locate("8.8.8.8", headers) == cloudfront.locate("8.8.8.8", FULL_CLOUDFRONT)


def test_cloudfront_headers_used_for_private_address(cloudfront: GeoLocator) -> None:
    assert cloudfront.locate("10.0.0.1", FULL_CLOUDFRONT).source == CLOUDFRONT


def test_cloudfront_headers_ignored_unless_trusted(locator: GeoLocator) -> None:
    location = locator.locate("8.8.8.8", FULL_CLOUDFRONT)
    assert location.source == EMBEDDED
    assert location.country == "US"


@pytest.mark.parametrize("country", ["fr", "FRA", "F", "", "FR,US", "F1", "EU", " FR"])
def test_cloudfront_malformed_country_falls_through(cloudfront: GeoLocator, country: str) -> None:
    location = cloudfront.locate(
        "8.8.8.8", {**FULL_CLOUDFRONT, "cloudfront-viewer-country": country}
    )
    assert location.source == EMBEDDED
    assert location.country == "US"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cloudfront-viewer-latitude", "90.5"),
        ("cloudfront-viewer-latitude", "-91"),
        ("cloudfront-viewer-longitude", "180.01"),
        ("cloudfront-viewer-latitude", "nan"),
        ("cloudfront-viewer-longitude", "inf"),
        ("cloudfront-viewer-latitude", "4e1"),
        ("cloudfront-viewer-latitude", ""),
        ("cloudfront-viewer-latitude", "48,85670"),
        ("cloudfront-viewer-longitude", "2.35146,2.35146"),
    ],
)
def test_cloudfront_malformed_coordinate_gives_country_point(
    cloudfront: GeoLocator, name: str, value: str
) -> None:
    location = cloudfront.locate("8.8.8.8", {**FULL_CLOUDFRONT, name: value})
    point = country_point("FR")
    assert location.source == CLOUDFRONT
    assert location.country == "FR"
    assert location.latitude == point.latitude
    assert location.longitude == point.longitude
    assert location.accuracy_radius_km == point.accuracy_radius_km
    assert location.asn == 3215


def test_cloudfront_country_alone(cloudfront: GeoLocator) -> None:
    location = cloudfront.locate("8.8.8.8", {"cloudfront-viewer-country": "DE"})
    assert location == Location(
        source=CLOUDFRONT,
        country="DE",
        latitude=country_point("DE").latitude,
        longitude=country_point("DE").longitude,
        accuracy_radius_km=country_point("DE").accuracy_radius_km,
    )


@pytest.mark.parametrize("asn", ["0", "-1", "AS3215", "4294967296", "", "12,13", "3215.0"])
def test_cloudfront_malformed_asn_left_out(cloudfront: GeoLocator, asn: str) -> None:
    location = cloudfront.locate("8.8.8.8", {**FULL_CLOUDFRONT, "cloudfront-viewer-asn": asn})
    assert location.source == CLOUDFRONT
    assert location.asn is None
    assert location.latitude == 48.8567


def test_cloudfront_edge_values_accepted(cloudfront: GeoLocator) -> None:
    headers = {
        "cloudfront-viewer-country": "AQ",
        "cloudfront-viewer-latitude": "-90",
        "cloudfront-viewer-longitude": "180.0",
        "cloudfront-viewer-asn": "4294967295",
    }
    assert cloudfront.locate("8.8.8.8", headers) == Location(
        source=CLOUDFRONT, country="AQ", latitude=-90.0, longitude=180.0, asn=4294967295
    )


# MaxMind-format databases


def test_maxmind_city_preferred_over_embedded(city_database: Path) -> None:
    location = GeoLocator(database=city_database).locate("8.8.8.8", {})
    assert location == Location(
        source=MAXMIND, country="FR", latitude=48.8566, longitude=2.3522, accuracy_radius_km=20.0
    )


def test_maxmind_ipv6_with_traits_asn(city_database: Path) -> None:
    location = GeoLocator(database=city_database).locate("2001:4860:4860::8888", {})
    assert location == Location(
        source=MAXMIND,
        country="US",
        latitude=40.7128,
        longitude=-74.006,
        accuracy_radius_km=50.0,
        asn=15169,
    )


def test_maxmind_country_record_gets_point(city_database: Path) -> None:
    location = GeoLocator(database=city_database).locate("81.2.69.142", {})
    point = country_point("GB")
    assert location.source == MAXMIND
    assert location.country == "GB"
    assert location.latitude == point.latitude
    assert location.accuracy_radius_km == point.accuracy_radius_km


def test_maxmind_missing_network_not_embedded(city_database: Path) -> None:
    assert GeoLocator(database=city_database).locate("1.1.1.1", {}) == Location(source=MAXMIND)


def test_maxmind_ipv4_database_ipv6_address(tmp_path: Path) -> None:
    database = write_database(
        tmp_path / "country-v4.mmdb",
        {"8.8.8.0/24": {"country": {"iso_code": "US"}}},
        ip_version=4,
        database_type="GeoLite2-Country",
    )
    locator = GeoLocator(database=database)
    assert locator.locate("2001:4860:4860::8888", {}) == Location(source=MAXMIND)
    assert locator.locate("8.8.8.8", {}).country == "US"


def test_maxmind_asn_database_adds_number(city_database: Path, asn_database: Path) -> None:
    location = GeoLocator(database=city_database, asn_database=asn_database).locate("8.8.8.8", {})
    assert location.source == MAXMIND
    assert location.country == "FR"
    assert location.asn == 15169
    assert location.as_organization == "GOOGLE"


def test_asn_database_with_embedded_countries(asn_database: Path) -> None:
    location = GeoLocator(asn_database=asn_database).locate("8.8.8.8", {})
    assert location.source == EMBEDDED
    assert location.country == "US"
    assert location.asn == 15169
    assert location.as_organization == "GOOGLE"


def test_maxmind_invalid_file_is_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.mmdb"
    path.write_bytes(b"not a MaxMind database" * 100)
    locator = GeoLocator(database=path)
    with pytest.raises(ConfigurationError, match="MFA_GEOIP_DATABASE"):
        locator.locate("8.8.8.8", {})


def test_cloudfront_preferred_over_maxmind(city_database: Path) -> None:
    locator = GeoLocator(database=city_database, trust_cloudfront=True)
    headers = {"cloudfront-viewer-country": "JP"}
    location = locator.locate("8.8.8.8", headers)
    assert location.source == CLOUDFRONT
    assert location.country == "JP"


# Logging and side effects


def test_locate_logs_nothing(
    locator: GeoLocator, city_database: Path, caplog: pytest.LogCaptureFixture
) -> None:
    maxmind = GeoLocator(database=city_database, trust_cloudfront=True)
    maxmind.preload()

    with caplog.at_level(logging.DEBUG):
        for ip in ("8.8.8.8", "2001:4860:4860::8888", "10.0.0.1", "garbage"):
            locator.locate(ip, {})
            maxmind.locate(ip, {})
            maxmind.locate(ip, FULL_CLOUDFRONT)

    assert caplog.records == []


def test_embedded_load_logs_no_address(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        geo._load_geoip2fast()

    assert [record.getMessage() for record in caplog.records] == [
        "Embedded geolocation database loaded"
    ]
    record = caplog.records[0]
    assert record.levelno == logging.INFO
    assert record.data_source == "MAXMIND:GeoLite2-CountryASN-IPv4IPv6-en-20240618"
    assert record.load_ms >= 0


def test_embedded_load_keeps_environment() -> None:
    # geoip2fast sets these variables when first imported, so a fresh interpreter is needed.
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONWARNINGS", "PYTHONIOENCODING"}
    }
    script = (
        "import os\n"
        "from mfa_core.adapters.geo import GeoLocator\n"
        "assert GeoLocator().locate('8.8.8.8', {}).country == 'US'\n"
        "print(os.environ.get('PYTHONWARNINGS'), os.environ.get('PYTHONIOENCODING'))\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "None None"


# Settings


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MFA_WEBAUTHN_ORIGINS", "https://console.example.com")
    for name in ("MFA_GEOIP_DATABASE", "MFA_GEOIP_ASN_DATABASE", "MFA_GEOIP_TRUST_CLOUDFRONT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_without_geoip_variables(environment: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert settings.geoip_database is None
    assert settings.geoip_asn_database is None
    assert settings.geoip_trust_cloudfront is False


def test_settings_read_geoip_variables(
    environment: pytest.MonkeyPatch, city_database: Path, asn_database: Path
) -> None:
    environment.setenv("MFA_GEOIP_DATABASE", str(city_database))
    environment.setenv("MFA_GEOIP_ASN_DATABASE", str(asn_database))
    environment.setenv("MFA_GEOIP_TRUST_CLOUDFRONT", "true")
    settings = Settings.from_env()
    assert settings.geoip_database == city_database
    assert settings.geoip_asn_database == asn_database
    assert settings.geoip_trust_cloudfront is True
    location = GeoLocator.from_settings(settings).locate("8.8.8.8", {})
    assert location.source == MAXMIND
    assert location.asn == 15169


@pytest.mark.parametrize("variable", ["MFA_GEOIP_DATABASE", "MFA_GEOIP_ASN_DATABASE"])
def test_settings_missing_database_file(
    environment: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    environment.setenv(variable, str(tmp_path / "absent.mmdb"))
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env()


def test_settings_database_path_is_directory(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environment.setenv("MFA_GEOIP_DATABASE", str(tmp_path))
    with pytest.raises(ConfigurationError, match="MFA_GEOIP_DATABASE"):
        Settings.from_env()


def test_settings_invalid_trust_value(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MFA_GEOIP_TRUST_CLOUDFRONT", "maybe")
    with pytest.raises(ConfigurationError, match="MFA_GEOIP_TRUST_CLOUDFRONT"):
        Settings.from_env()
