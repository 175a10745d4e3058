"""Login anomaly signals: a new country, impossible travel, a new network.

Each user has a LoginHistory, stored on the user item as a small map: the countries and
networks of their recent successful logins, and where and when the last of them with a known
position was. `assess` compares a login's location with it, and `record` adds a successful
login to it. Both are pure functions of their arguments, with the time passed in as seconds
since the Unix epoch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mfa_core.adapters.geo import MAX_ORGANIZATION, PRIVATE, UNKNOWN, Location

NEW_COUNTRY = "new_country"
IMPOSSIBLE_TRAVEL = "impossible_travel"
NEW_ASN = "new_asn"

# The history keeps the most recent countries and network keys, up to these counts.
MAX_COUNTRIES = 20
MAX_NETWORKS = 50
# Above the cruising speed of airliners, about 900 km/h. Time at airports makes a trip from one
# login to the next slower still.
MAX_SPEED_KMH = 1000.0
# Shorter distances never count as impossible travel, because IP geolocation can place one
# city's addresses in another city or at a region's centre. The value is an estimate of that
# error, not a measurement.
MIN_TRAVEL_KM = 500.0
# The mean radius of the Earth (IUGG).
EARTH_RADIUS_KM = 6371.0088
SECONDS_PER_HOUR = 3600

_COUNTRY = re.compile(r"[A-Z]{2}")
_ORGANIZATION_PREFIX = "org:"
MAX_NETWORK_KEY = len(_ORGANIZATION_PREFIX) + MAX_ORGANIZATION


@dataclass(frozen=True, kw_only=True)
class LastLogin:
    """The place and time of a user's last successful login with a known position.

    `at` is in seconds since the Unix epoch, `accuracy_radius_km` as in Location.
    """

    at: float
    country: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    accuracy_radius_km: float | None = None
    asn: int | None = None


@dataclass(frozen=True, kw_only=True)
class LoginHistory:
    """The countries and networks of a user's recent successful logins, oldest first, and
    the last of those logins with a known position.

    A network is known by one or two keys: "AS" and its number, such as "AS15169", and "org:"
    and its AS organization name, such as "org:GOOGLE". Sources that give only one of them
    still match a login recorded with both.
    """

    countries: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    last: LastLogin | None = None

    @property
    def is_empty(self) -> bool:
        return not self.countries and not self.networks and self.last is None

    @classmethod
    def from_item(cls, item: Mapping[str, Any] | None) -> LoginHistory:
        """Read a history stored by `as_item`; None gives an empty history.

        Entries of the wrong type or form are skipped, so a damaged map weakens the signals
        instead of raising.
        """
        if not isinstance(item, Mapping):
            return cls()
        countries = [c for c in _strings(item.get("countries")) if _COUNTRY.fullmatch(c)]
        networks = [
            key for key in _strings(item.get("networks")) if 0 < len(key) <= MAX_NETWORK_KEY
        ]
        return cls(
            countries=tuple(countries[-MAX_COUNTRIES:]),
            networks=tuple(networks[-MAX_NETWORKS:]),
            last=_last_login(item.get("last")),
        )

    def as_item(self) -> dict[str, Any]:
        """Return the history as a map of lists, strings and numbers, for DynamoDB.

        Values that are None are left out. Coordinates are rounded to 4 decimal places (about
        11 m), the radius to whole kilometres and the time to whole seconds.
        """
        item: dict[str, Any] = {
            "countries": list(self.countries),
            "networks": list(self.networks),
        }
        if self.last is None:
            return item

        last: dict[str, Any] = {"at": int(self.last.at)}
        if self.last.country is not None:
            last["country"] = self.last.country
        if self.last.latitude is not None and self.last.longitude is not None:
            last["lat"] = round(self.last.latitude, 4)
            last["lon"] = round(self.last.longitude, 4)
        if self.last.accuracy_radius_km is not None:
            last["radius_km"] = round(self.last.accuracy_radius_km)
        if self.last.asn is not None:
            last["asn"] = self.last.asn
        item["last"] = last
        return item


def assess(history: LoginHistory, location: Location, now: float) -> list[str]:
    """Return the anomaly signals of a login from `location` at `now`, in a fixed order.

    - "new_country": the login's country is not among the history's countries.
    - "impossible_travel": reaching the login's position from the last login's in the time
      between them needs more than MAX_SPEED_KMH. The distance is the great-circle distance
      less the accuracy radii of both positions, and below MIN_TRAVEL_KM it never counts. With
      no time between them, or a login earlier than the last one, any such distance counts.
    - "new_asn": none of the login's network keys is in the history.

    A signal needs the values it compares on both sides. So the first login (an empty
    history) gives none, and neither does a location whose source is "private" or "unknown",
    which has no country, position or network.
    """
    if history.is_empty or location.source in {PRIVATE, UNKNOWN}:
        return []

    signals = []
    if location.country and history.countries and location.country not in history.countries:
        signals.append(NEW_COUNTRY)

    if history.last is not None and _is_impossible_travel(history.last, location, now):
        signals.append(IMPOSSIBLE_TRAVEL)

    keys = network_keys(location)
    if keys and history.networks and not set(keys) & set(history.networks):
        signals.append(NEW_ASN)
    return signals


def record(history: LoginHistory, location: Location, now: float) -> LoginHistory:
    """Return `history` with a successful login from `location` at `now` added.

    The login's country and network keys move to the end of their lists, and the oldest
    entries beyond MAX_COUNTRIES and MAX_NETWORKS are dropped. The login becomes the last login
    only when its position is known, so that the next login is still compared with a position.
    A "private" or "unknown" location leaves the history unchanged.
    """
    if location.source in {PRIVATE, UNKNOWN}:
        return history

    countries = history.countries
    if location.country is not None:
        countries = _most_recent_last(countries, [location.country], MAX_COUNTRIES)
    networks = _most_recent_last(history.networks, network_keys(location), MAX_NETWORKS)
    last = history.last
    if location.has_position:
        last = LastLogin(
            at=now,
            country=location.country,
            latitude=location.latitude,
            longitude=location.longitude,
            accuracy_radius_km=location.accuracy_radius_km,
            asn=location.asn,
        )
    return LoginHistory(countries=countries, networks=networks, last=last)


def network_keys(location: Location) -> tuple[str, ...]:
    """Return the keys under which a history stores the network of `location`."""
    keys = []
    if location.asn is not None:
        keys.append(f"AS{location.asn}")
    if location.as_organization:
        keys.append(f"{_ORGANIZATION_PREFIX}{location.as_organization}"[:MAX_NETWORK_KEY])
    return tuple(keys)


def distance_km(latitude1: float, longitude1: float, latitude2: float, longitude2: float) -> float:
    """Return the great-circle distance between two points in degrees, by the haversine formula.

    The Earth is taken as a sphere of radius EARTH_RADIUS_KM, which is within about 0.5% of
    the distance on the ellipsoid.
    """
    phi1 = math.radians(latitude1)
    phi2 = math.radians(latitude2)
    delta_phi = phi2 - phi1
    delta_lambda = math.radians(longitude2 - longitude1)
    haversine = (
        math.sin(delta_phi / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(delta_lambda / 2) ** 2
    )
    # min() keeps rounding from taking asin out of its domain for antipodal points.
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(haversine)))


def _is_impossible_travel(last: LastLogin, location: Location, now: float) -> bool:
    if (
        last.latitude is None
        or last.longitude is None
        or location.latitude is None
        or location.longitude is None
    ):
        return False

    distance = distance_km(last.latitude, last.longitude, location.latitude, location.longitude)
    distance -= (last.accuracy_radius_km or 0.0) + (location.accuracy_radius_km or 0.0)
    if distance < MIN_TRAVEL_KM:
        return False

    hours = (now - last.at) / SECONDS_PER_HOUR
    if hours <= 0:
        return True
    return distance / hours > MAX_SPEED_KMH


def _most_recent_last(
    entries: tuple[str, ...], recent: Iterable[str], limit: int
) -> tuple[str, ...]:
    recent = list(recent)
    kept = [entry for entry in entries if entry not in recent]
    return tuple([*kept, *recent][-limit:])


def _strings(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        return []
    return [entry for entry in value if isinstance(entry, str)]


def _number(value: object) -> float | None:
    """Return an int, float or Decimal (as boto3 reads DynamoDB numbers) as a finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    try:
        number = float(value)
    except ValueError:  # a signalling NaN Decimal
        return None
    return number if math.isfinite(number) else None


def _last_login(value: object) -> LastLogin | None:
    if not isinstance(value, Mapping):
        return None
    at = _number(value.get("at"))
    if at is None:
        return None

    country = value.get("country")
    latitude = _number(value.get("lat"))
    longitude = _number(value.get("lon"))
    if latitude is None or longitude is None or abs(latitude) > 90 or abs(longitude) > 180:
        latitude = longitude = None
    radius = _number(value.get("radius_km"))
    asn = _number(value.get("asn"))
    return LastLogin(
        at=at,
        country=country if isinstance(country, str) and _COUNTRY.fullmatch(country) else None,
        latitude=latitude,
        longitude=longitude,
        accuracy_radius_km=radius if radius is not None and radius >= 0 else None,
        asn=int(asn) if asn is not None and asn.is_integer() and asn > 0 else None,
    )
