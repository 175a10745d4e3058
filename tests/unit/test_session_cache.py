"""The authorizer's cache of session reads: time to live, the off switch and its size bound."""

from __future__ import annotations

from typing import Any

from mfa_core.clock import ManualClock
from mfa_core.session_cache import SessionCache, SessionRead


class CountingLoader:
    """Stands in for Store.load_session_and_user and counts its reads."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, str, str]] = []

    def __call__(self, session_id: str, org_id: str, user_id: str) -> SessionRead:
        self.reads.append((session_id, org_id, user_id))
        marker: Any = f"read {len(self.reads)}"
        return marker, None


def _cache(ttl: int, **kwargs: Any) -> tuple[SessionCache, CountingLoader, ManualClock]:
    loader, clock = CountingLoader(), ManualClock(1_000)
    return SessionCache(loader, ttl_seconds=ttl, now=clock.now, **kwargs), loader, clock


def test_read_reused_within_ttl() -> None:
    cache, loader, clock = _cache(10)

    first = cache.get("s1", "acme", "u1")
    clock.advance(9.9)
    second = cache.get("s1", "acme", "u1")

    assert first == second == ("read 1", None)
    assert len(loader.reads) == 1


def test_read_again_after_ttl() -> None:
    cache, loader, clock = _cache(10)

    cache.get("s1", "acme", "u1")
    clock.advance(10)
    again = cache.get("s1", "acme", "u1")

    assert again == ("read 2", None)
    assert len(loader.reads) == 2


def test_zero_ttl_reads_every_time() -> None:
    cache, loader, _ = _cache(0)

    cache.get("s1", "acme", "u1")
    cache.get("s1", "acme", "u1")

    assert len(loader.reads) == 2
    assert len(cache) == 0


def test_keys_include_org_and_user() -> None:
    cache, loader, _ = _cache(10)

    cache.get("s1", "acme", "u1")
    cache.get("s1", "globex", "u1")
    cache.get("s1", "acme", "u2")

    assert len(loader.reads) == 3


def test_clock_going_back_reads_again() -> None:
    cache, loader, clock = _cache(10)

    cache.get("s1", "acme", "u1")
    clock.advance(-1)
    cache.get("s1", "acme", "u1")

    assert len(loader.reads) == 2


def test_least_recently_used_dropped() -> None:
    cache, loader, _ = _cache(10, max_entries=2)

    cache.get("s1", "acme", "u1")
    cache.get("s2", "acme", "u1")
    cache.get("s1", "acme", "u1")  # s1 is now the most recently used
    cache.get("s3", "acme", "u1")  # drops s2
    cache.get("s1", "acme", "u1")
    cache.get("s2", "acme", "u1")

    assert len(cache) == 2
    assert [read[0] for read in loader.reads] == ["s1", "s2", "s3", "s2"]
