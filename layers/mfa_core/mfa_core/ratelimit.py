"""Limits on sending SMS codes, against cost and SMS pumping.

Each send counts against every limit in one DynamoDB transaction, so concurrent functions can
never send more than a limit allows, and a send over any limit counts against none. A send that
then fails gives its uses back.

NOTE: the hourly and daily limits count per clock hour and per UTC day (fixed windows), so a
burst that straddles a window boundary can reach twice a limit within one hour or day.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from mfa_core.errors import Throttled
from mfa_core.runtime import Services
from mfa_core.store.repository import ConditionFailed, CounterLimit

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@dataclass(frozen=True, kw_only=True)
class SmsLimits:
    """How many SMS may be sent, per user, phone number, source IP and org."""

    user_cooldown: int = 30
    user_per_hour: int = 5
    phone_per_day: int = 10
    ip_per_hour: int = 20
    org_per_day: int = 1000


def sms_limits(
    limits: SmsLimits,
    *,
    org_id: str,
    user_id: str,
    phone_key: str,
    source_ip: str | None,
    now: float,
) -> list[CounterLimit]:
    """Return the counters that one SMS for this user counts against.

    `phone_key` identifies the phone number without containing it, such as a keyed digest.
    """
    counters = [
        CounterLimit(
            name="user_cooldown",
            key=f"sms#user#{org_id}#{user_id}#cooldown",
            limit=1,
            window=limits.user_cooldown,
            window_end=now + limits.user_cooldown,
            cooldown=True,
        ),
        _window("user_per_hour", f"sms#user#{org_id}#{user_id}", limits.user_per_hour, HOUR, now),
        _window("phone_per_day", f"sms#phone#{phone_key}", limits.phone_per_day, DAY, now),
        _window("org_per_day", f"sms#org#{org_id}", limits.org_per_day, DAY, now),
    ]
    if source_ip:
        counters.append(
            _window("ip_per_hour", f"sms#ip#{_network(source_ip)}", limits.ip_per_hour, HOUR, now)
        )
    return counters


def _network(source_ip: str) -> str:
    """Return the unit an IP limit counts: the address, or for IPv6 its /64 network.

    One IPv6 subscriber usually gets a whole /64, so counting addresses would give them
    billions of separate limits.
    """
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return source_ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def reserve(svc: Services, counters: list[CounterLimit], *, now: float) -> None:
    """Count one send against every counter, or raise Throttled naming the limit reached."""
    try:
        svc.store.reserve_counters(counters, now=now)
    except ConditionFailed as exc:
        # Of several limits reached, the one that lasts longest sets when to retry.
        waits = {c.name: _retry_after(svc, c, now) for c in counters if c.name in exc.failed}
        reached = max(waits, key=lambda name: waits[name])
        raise Throttled(
            "Too many codes were sent; wait before asking for another.",
            retry_after=waits[reached],
            limit=reached,
        ) from exc


def release(svc: Services, counters: list[CounterLimit]) -> None:
    """Give back the uses of a send that did not happen."""
    svc.store.release_counters(counters)


def _window(name: str, key: str, limit: int, size: int, now: float) -> CounterLimit:
    start = math.floor(now / size) * size
    return CounterLimit(
        name=name, key=f"{key}#{size}#{start}", limit=limit, window=size, window_end=start + size
    )


def _retry_after(svc: Services, counter: CounterLimit, now: float) -> int:
    if not counter.cooldown:
        return math.ceil(counter.window_end - now)
    item = svc.store.get_counter(counter.key)
    until = item.until if item is not None and item.until is not None else now + counter.window
    return math.ceil(until - now)
