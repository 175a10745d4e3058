"""Location of a request's source address: country, approximate position and network.

Sources, the first that applies wins:

1. CloudFront's viewer headers, when the settings trust them and the country header is valid.
2. A MaxMind-format database (.mmdb, City or Country) named by the settings.
3. The database embedded in the geoip2fast package: country and AS organization name, built
   from MaxMind's GeoLite2 data. It is loaded on the first lookup that needs it.

An optional MaxMind-format ASN database adds the AS number and organization to the results of
sources 2 and 3. Where a source gives a country without a position, the position is the
country's reference point from country_points.csv, with a radius that stands for the size of
the country. Addresses that are not globally routable are never looked up.

Nothing here logs an address or a location.
"""

from __future__ import annotations

import csv
import ipaddress
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core.errors import ConfigurationError
from mfa_core.settings import Settings

logger = Logger(child=True)

CLOUDFRONT = "cloudfront"
MAXMIND = "maxmind"
EMBEDDED = "embedded"
PRIVATE = "private"
UNKNOWN = "unknown"

# The data file of geoip2fast 1.2.x with countries and AS organizations for IPv4 and IPv6. The
# package also ships smaller files without AS organizations or without IPv6.
EMBEDDED_DATA_FILE = "geoip2fast-asn-ipv6.dat.gz"

_COUNTRY = re.compile(r"[A-Z]{2}")
# Codes that geolocation data uses for a continent rather than a country.
_NOT_COUNTRIES = frozenset({"EU", "AP"})
# Decimal degrees as CloudFront writes them, such as "42.30680", without an exponent, "nan"
# or "inf".
_DEGREES = re.compile(r"-?[0-9]{1,3}(?:\.[0-9]{1,12})?")
_ASN = re.compile(r"[0-9]{1,10}")
MAX_ASN = 2**32 - 1
# AS organization names are stored in login histories, so they are cut to this length.
MAX_ORGANIZATION = 64

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, kw_only=True)
class Location:
    """The place of a source address, as far as `source` can tell.

    `source` is "cloudfront", "maxmind" or "embedded" for the source that located the address,
    "private" for an address that is not globally routable, and "unknown" for one that is not
    an IP address at all. `country` is an ISO 3166-1 alpha-2 code. `accuracy_radius_km` is the
    radius around the position within which the address probably is; None means that the
    source gave no radius.
    """

    source: str
    country: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    accuracy_radius_km: float | None = None
    asn: int | None = None
    as_organization: str | None = None

    @property
    def has_position(self) -> bool:
        return self.latitude is not None and self.longitude is not None


class GeoLocator:
    """Locator of source addresses, built once per process.

    The databases are opened on the first lookup that needs them, or by `preload`. A MaxMind
    database that cannot be opened raises ConfigurationError.
    """

    def __init__(
        self,
        *,
        database: Path | None = None,
        asn_database: Path | None = None,
        trust_cloudfront: bool = False,
    ) -> None:
        self._trust_cloudfront = trust_cloudfront
        self._database = _MaxMindDatabase(database, "MFA_GEOIP_DATABASE") if database else None
        self._asn_database = (
            _MaxMindDatabase(asn_database, "MFA_GEOIP_ASN_DATABASE") if asn_database else None
        )
        self._embedded = _EMBEDDED

    @classmethod
    def from_settings(cls, settings: Settings) -> GeoLocator:
        return cls(
            database=settings.geoip_database,
            asn_database=settings.geoip_asn_database,
            trust_cloudfront=settings.geoip_trust_cloudfront,
        )

    def preload(self) -> None:
        """Open the databases that lookups will use now, such as during a function's init."""
        if self._database is not None:
            self._database.reader()
        else:
            self._embedded.load()
        if self._asn_database is not None:
            self._asn_database.reader()

    def locate(self, ip: str | None, headers: Mapping[str, str]) -> Location:
        """Locate the source address `ip`, or the viewer that CloudFront's `headers` describe.

        The headers are read only when the locator trusts CloudFront, and their names are
        matched in any case. A malformed country sends the lookup on to the databases. A
        malformed latitude or longitude gives the country's reference point instead, and a
        malformed ASN is left out.
        """
        if self._trust_cloudfront:
            located = _from_cloudfront(headers)
            if located is not None:
                return located

        address = _parse_address(ip)
        if address is None:
            return Location(source=UNKNOWN)
        if _is_not_routable(address):
            return Location(source=PRIVATE)

        if self._database is not None:
            location = _from_maxmind_record(self._database.get(address))
        else:
            location = self._embedded.get(address)
        if self._asn_database is not None:
            location = _with_asn(location, self._asn_database.get(address))
        return _with_country_point(location)


def _parse_address(ip: str | None) -> Address | None:
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket: the databases list it by its IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_not_routable(address: Address) -> bool:
    """Return whether `address` cannot be the source of a request from the internet.

    `is_global` is False for the private, shared, loopback, link-local, documentation and
    reserved ranges that the ipaddress module lists, a list that varies a little between Python
    releases. It is True for multicast and IPv6 site-local addresses, so those are checked too.
    """
    if not address.is_global or address.is_multicast:
        return True
    return isinstance(address, ipaddress.IPv6Address) and address.is_site_local


def _from_cloudfront(headers: Mapping[str, str]) -> Location | None:
    """Read CloudFront-Viewer-Country, -Latitude, -Longitude and -ASN, or None without a country.

    API Gateway HTTP APIs pass header names in lower case, and join repeated headers with
    commas, which no valid value contains.
    """
    values = {name.lower(): value for name, value in headers.items()}
    country = _country(values.get("cloudfront-viewer-country"))
    if country is None:
        return None
    asn = _asn(values.get("cloudfront-viewer-asn"))
    latitude = _degrees(values.get("cloudfront-viewer-latitude"), limit=90)
    longitude = _degrees(values.get("cloudfront-viewer-longitude"), limit=180)
    if latitude is None or longitude is None:
        # A position needs both values. Without them, the country's reference point is used.
        return _with_country_point(Location(source=CLOUDFRONT, country=country, asn=asn))
    return Location(
        source=CLOUDFRONT, country=country, latitude=latitude, longitude=longitude, asn=asn
    )


def _country(value: object) -> str | None:
    if not isinstance(value, str) or not _COUNTRY.fullmatch(value):
        return None
    return None if value in _NOT_COUNTRIES else value


def _degrees(value: str | None, *, limit: int) -> float | None:
    if value is None or not _DEGREES.fullmatch(value):
        return None
    degrees = float(value)
    return degrees if -limit <= degrees <= limit else None


def _asn(value: object) -> int | None:
    if isinstance(value, str) and _ASN.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    # AS 0 marks address space that must not be routed (RFC 7607).
    return value if 0 < value <= MAX_ASN else None


def _organization(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:MAX_ORGANIZATION]


def _from_maxmind_record(record: Any) -> Location:
    """Read a GeoIP2 or GeoLite2 City or Country record. Fields that are absent stay None."""
    if not isinstance(record, Mapping):
        return Location(source=MAXMIND)
    country = record.get("country")
    position = record.get("location")
    traits = record.get("traits")
    location = Location(
        source=MAXMIND,
        country=_country(country.get("iso_code")) if isinstance(country, Mapping) else None,
    )
    if isinstance(traits, Mapping):
        location = _with_asn(location, traits)
    if not isinstance(position, Mapping):
        return location

    latitude = _number(position.get("latitude"))
    longitude = _number(position.get("longitude"))
    if latitude is None or longitude is None:
        return location
    return Location(
        source=MAXMIND,
        country=location.country,
        latitude=latitude,
        longitude=longitude,
        accuracy_radius_km=_number(position.get("accuracy_radius")),
        asn=location.asn,
        as_organization=location.as_organization,
    )


def _with_asn(location: Location, record: Any) -> Location:
    """Return `location` with the AS number and organization of a GeoLite2 ASN record."""
    if not isinstance(record, Mapping):
        return location
    asn = _asn(record.get("autonomous_system_number"))
    organization = _organization(record.get("autonomous_system_organization"))
    return Location(
        source=location.source,
        country=location.country,
        latitude=location.latitude,
        longitude=location.longitude,
        accuracy_radius_km=location.accuracy_radius_km,
        asn=asn if asn is not None else location.asn,
        as_organization=organization if organization is not None else location.as_organization,
    )


def _with_country_point(location: Location) -> Location:
    """Give a location with a country but no position the country's reference point."""
    if location.has_position or location.country is None:
        return location
    point = country_points().get(location.country)
    if point is None:
        return location
    latitude, longitude, radius = point
    return Location(
        source=location.source,
        country=location.country,
        latitude=latitude,
        longitude=longitude,
        accuracy_radius_km=radius,
        asn=location.asn,
        as_organization=location.as_organization,
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@cache
def country_points() -> dict[str, tuple[float, float, float]]:
    """Return the reference latitude, longitude and radius in km of each country code.

    country_points.csv states its source. Lines that start with "#" are comments.
    """
    text = Path(__file__).with_name("country_points.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {
        row["country"]: (float(row["latitude"]), float(row["longitude"]), float(row["radius_km"]))
        for row in rows
    }


class _MaxMindDatabase:
    """A MaxMind-format database file, opened once on first use."""

    def __init__(self, path: Path, variable: str) -> None:
        self._path = path
        self._variable = variable
        self._reader: Any = None
        self._lock = threading.Lock()

    def reader(self) -> Any:
        with self._lock:
            if self._reader is None:
                import maxminddb  # noqa: PLC0415 - only deployments that configure a database

                try:
                    self._reader = maxminddb.open_database(str(self._path))
                except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                    raise ConfigurationError(
                        f"the file {self._path} that {self._variable} names cannot be read as "
                        "a MaxMind DB database: replace it or unset the variable"
                    ) from exc
            return self._reader

    def get(self, address: Address) -> Any:
        """Return the record of `address`, or None when the database has none.

        An IPv6 address in an IPv4-only database has no record.
        """
        reader = self.reader()
        if address.version == 6 and reader.metadata().ip_version == 4:
            return None
        return reader.get(address)


class _EmbeddedDatabase:
    """geoip2fast's database, loaded on first use.

    geoip2fast keeps its data in module globals, so a process has one database, which all
    locators share.
    """

    def __init__(self) -> None:
        self._database: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            if self._database is None:
                self._database = _load_geoip2fast()
            return self._database

    def get(self, address: Address) -> Location:
        result = self.load().lookup(str(address))
        # geoip2fast returns "--" for a network it does not know, "" for an invalid address.
        return Location(
            source=EMBEDDED,
            country=_country(result.country_code),
            as_organization=_organization(result.asn_name),
        )


_EMBEDDED = _EmbeddedDatabase()


def _load_geoip2fast() -> Any:
    started = time.perf_counter()
    # Importing geoip2fast 1.2.2 sets PYTHONWARNINGS and PYTHONIOENCODING in os.environ, which
    # child processes would inherit, so the previous values are put back.
    saved = {name: os.environ.get(name) for name in ("PYTHONWARNINGS", "PYTHONIOENCODING")}
    try:
        import geoip2fast  # noqa: PLC0415 - large; loaded on first use
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # The file is a pickle, so only the one inside the installed package is ever loaded. A
    # bare file name would also be searched for in the working directory.
    # NOTE: geoip2fast 1.2.2 runs `ps` twice while loading, to report its memory use.
    data_file = Path(geoip2fast.__file__).with_name(EMBEDDED_DATA_FILE)
    database = geoip2fast.GeoIP2Fast(geoip2fast_data_file=str(data_file))
    logger.info(
        "Embedded geolocation database loaded",
        extra={
            "data_source": database.source_info,
            "load_ms": round((time.perf_counter() - started) * 1000),
        },
    )
    return database
