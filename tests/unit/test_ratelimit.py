"""The units that SMS limits count."""

from __future__ import annotations

from mfa_core import ratelimit


def _ip_key(source_ip: str) -> str:
    counters = ratelimit.sms_limits(
        ratelimit.SmsLimits(),
        org_id="acme",
        user_id="u_1",
        phone_key="p",
        source_ip=source_ip,
        now=1_800_000_000,
    )
    return next(c.key for c in counters if c.name == "ip_per_hour")


def test_ipv6_addresses_of_one_network_share_a_limit() -> None:
    assert _ip_key("2001:db8:1:2::1") == _ip_key("2001:db8:1:2:ffff::9")
    assert _ip_key("2001:db8:1:2::1") != _ip_key("2001:db8:1:3::1")


def test_ipv4_addresses_count_each() -> None:
    assert _ip_key("192.0.2.1") != _ip_key("192.0.2.2")
