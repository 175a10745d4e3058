"""Cost of the embedded geolocation database: loading it, the memory it takes, one lookup.

Every sample is a fresh interpreter (`python -c`), given the addresses to look up on standard
input, that first imports mfa_core.adapters.geo,
untimed, as a function's app module would. It then times `import geoip2fast`, then
`GeoLocator().preload()`, which loads the data file, and reads the process's resident set size
(VmRSS in /proc/self/status) before and after both. Last, with the database loaded, it times
lookups of a fixed list of public IPv4 and IPv6 addresses, drawn at random with a fixed seed.
Each address is timed twice with `time.perf_counter_ns`: through `GeoLocator.locate`, which
also parses the address and adds the country's reference point, and through geoip2fast's own
`lookup` alone.

One untimed sample goes first, so the file cache is warm. The installed size is that of the
geoip2fast package folder, data files included.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER_PATH = ROOT / "layers" / "mfa_core"
DEFAULT_SAMPLES = 5
DEFAULT_LOOKUPS = 10_000
SEED = 20_240_618

_SAMPLE_SCRIPT = """\
import json, sys, time
from mfa_core.adapters import geo

def rss_kib():
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

addresses = json.load(sys.stdin)
rss_before = rss_kib()
started = time.perf_counter_ns()
import geoip2fast
imported = time.perf_counter_ns()
locator = geo.GeoLocator()
locator.preload()
loaded = time.perf_counter_ns()
rss_after = rss_kib()

database = geo._EMBEDDED.load()
locate_ns, lookup_ns = [], []
for address in addresses:
    before = time.perf_counter_ns()
    location = locator.locate(address, {})
    after = time.perf_counter_ns()
    database.lookup(address)
    locate_ns.append(after - before)
    lookup_ns.append(time.perf_counter_ns() - after)
    assert location.source in ("embedded", "private"), location
print(json.dumps({
    "import_ns": imported - started,
    "load_ns": loaded - imported,
    "rss_kib": rss_after - rss_before,
    "locate_ns": locate_ns,
    "lookup_ns": lookup_ns,
}))
"""


@dataclass(frozen=True)
class GeoSample:
    import_ns: int
    load_ns: int
    rss_kib: int
    locate_ns: list[int]
    lookup_ns: list[int]


@dataclass(frozen=True)
class GeoResult:
    samples: list[GeoSample]
    lookups: int
    installed_bytes: int
    data_file: str

    def markdown(self) -> str:
        count = len(self.samples)
        import_ms = statistics.median(s.import_ns for s in self.samples) / 1e6
        load_ms = statistics.median(s.load_ns for s in self.samples) / 1e6
        rss_mib = statistics.median(s.rss_kib for s in self.samples) / 1024
        locate = [ns for s in self.samples for ns in s.locate_ns]
        lookup = [ns for s in self.samples for ns in s.lookup_ns]
        lines = [
            f"The embedded database (geoip2fast's `{self.data_file}`), median of {count} fresh "
            f"processes; lookups are {self.lookups} public addresses per process, half IPv4 "
            "and half IPv6.",
            "",
            "| What is measured | Value |",
            "| --- | ---: |",
            f"| `import geoip2fast` | {import_ms:.1f} ms |",
            f"| Loading the data file (`GeoLocator.preload`) | {load_ms:.1f} ms |",
            f"| Resident memory added by import and load | {rss_mib:.1f} MiB |",
            f"| Installed size of the geoip2fast package | "
            f"{self.installed_bytes / 1024 / 1024:.1f} MiB |",
            "",
            "| Per lookup, database loaded | Mean µs | Median µs | p95 µs |",
            "| --- | ---: | ---: | ---: |",
            _timing_row("`GeoLocator.locate`", locate),
            _timing_row("geoip2fast `lookup` alone", lookup),
        ]
        return "\n".join(lines)


def _timing_row(label: str, samples_ns: list[int]) -> str:
    mean = statistics.fmean(samples_ns) / 1000
    median = statistics.median(samples_ns) / 1000
    p95 = statistics.quantiles(samples_ns, n=20)[-1] / 1000
    return f"| {label} | {mean:.1f} | {median:.1f} | {p95:.1f} |"


def public_addresses(count: int, seed: int = SEED) -> list[str]:
    """Return `count` random globally routable addresses, alternating IPv4 and IPv6."""
    generator = random.Random(seed)
    addresses: list[str] = []
    while len(addresses) < count:
        if len(addresses) % 2 == 0:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                generator.getrandbits(32)
            )
        else:
            # 2000::/3 is the IPv6 global unicast space.
            address = ipaddress.IPv6Address((0x2 << 125) | generator.getrandbits(125))
        if address.is_global and not address.is_multicast:
            addresses.append(str(address))
    return addresses


def _installed_bytes() -> int:
    import geoip2fast  # noqa: PLC0415 - only its location is needed

    folder = Path(geoip2fast.__file__).parent
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _environment() -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "MFA_", "POWERTOOLS_", "PYTHON"))
    }
    environment.update(
        {
            "PYTHONPATH": str(LAYER_PATH),
            "PYTHONDONTWRITEBYTECODE": "1",
            # The load's log line would mix with the sample's output.
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    return environment


def _sample(addresses: list[str]) -> GeoSample:
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _SAMPLE_SCRIPT],
        input=json.dumps(addresses),
        env=_environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"the geolocation benchmark process failed with exit code {result.returncode}:\n"
            f"{result.stderr[-2000:]}"
        )
    values = json.loads(result.stdout.splitlines()[-1])
    return GeoSample(
        import_ns=int(values["import_ns"]),
        load_ns=int(values["load_ns"]),
        rss_kib=int(values["rss_kib"]),
        locate_ns=[int(ns) for ns in values["locate_ns"]],
        lookup_ns=[int(ns) for ns in values["lookup_ns"]],
    )


def measure(samples: int = DEFAULT_SAMPLES, lookups: int = DEFAULT_LOOKUPS) -> GeoResult:
    if samples < 1:
        raise ValueError(f"invalid samples {samples}: use 1 or more")
    if lookups < 2:
        raise ValueError(f"invalid lookups {lookups}: use 2 or more")
    from mfa_core.adapters.geo import EMBEDDED_DATA_FILE  # noqa: PLC0415

    addresses = public_addresses(lookups)
    _sample(addresses)  # untimed: warms the file cache
    return GeoResult(
        samples=[_sample(addresses) for _ in range(samples)],
        lookups=lookups,
        installed_bytes=_installed_bytes(),
        data_file=EMBEDDED_DATA_FILE,
    )


if __name__ == "__main__":
    print(measure().markdown())
